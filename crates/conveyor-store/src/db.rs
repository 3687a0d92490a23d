//! Opening the database, appending to the chain, verifying it, rebuilding the read models.

use std::path::Path;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions as _, Row as _, SqlitePool};

use crate::event::Event;
use crate::log::EventLog;
use crate::projection;

/// The embedded schema migrations, applied in order on open.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_deployments.sql")),
    (3, include_str!("../migrations/0003_commit_time.sql")),
    (4, include_str!("../migrations/0004_judgements.sql")),
    (5, include_str!("../migrations/0005_flags.sql")),
    (6, include_str!("../migrations/0006_fix_forward.sql")),
];

const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("event {seq} cannot be decoded: {error}")]
    Decode { seq: i64, error: String },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A read model holds a status this version does not know.
    #[error("the store holds an {0}")]
    Status(#[from] conveyor_api::UnknownStatus),
}

/// Which counter an appended event allocates an id from.
#[derive(Debug, Clone, Copy)]
pub enum IdKind {
    Run,
    Release,
    Deployment,
    FlagSchedule,
}

/// One way the log fails verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditProblem {
    Missing { after: i64, next: i64 },
    BrokenLink { seq: i64 },
    Edited { seq: i64 },
    Truncated { head: i64, last: i64 },
}

impl std::fmt::Display for AuditProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditProblem::Missing { after, next } => write!(
                f,
                "events {}..={} are missing: rows were deleted after event {after}",
                after + 1,
                next - 1
            ),
            AuditProblem::BrokenLink { seq } => write!(
                f,
                "event {seq}: prev_hash does not match the hash of the event before it"
            ),
            AuditProblem::Edited { seq } => write!(
                f,
                "event {seq}: stored hash does not match its content: the row was edited"
            ),
            AuditProblem::Truncated { head, last } => write!(
                f,
                "the chain head records event {head} but the log ends at event {last}: the newest events were deleted"
            ),
        }
    }
}

/// The reading side of the store (read models, the log, secrets); every write goes through its
/// `EventLog`.
pub struct Store {
    pub(crate) pool: SqlitePool,
    log: EventLog,
}

pub(crate) type Tx<'a> = sqlx::Transaction<'a, sqlx::Sqlite>;

/// The newest event's sequence number and hash (genesis for an empty log).
pub(crate) async fn chain_head(tx: &mut Tx<'_>) -> Result<(i64, String), StoreError> {
    let head = sqlx::query("SELECT seq, hash FROM chain_head WHERE id = 1")
        .fetch_optional(&mut **tx)
        .await?;
    Ok(match head {
        Some(row) => (row.get::<i64, _>(0), row.get::<String, _>(1)),
        None => (0, GENESIS_HASH.to_string()),
    })
}

/// Records the new head of the chain; once per transaction, after its appends.
pub(crate) async fn save_head(tx: &mut Tx<'_>, head: &(i64, String)) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO chain_head (id, seq, hash) VALUES (1, $1, $2)
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )
    .bind(head.0)
    .bind(&head.1)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Chains one event after `head`, folds it into the read models and moves `head` to it;
/// returns its sequence number and time.
pub(crate) async fn append_in(
    tx: &mut Tx<'_>,
    head: &mut (i64, String),
    event: &Event,
) -> Result<(i64, String), StoreError> {
    let seq = head.0 + 1;
    let at = crate::now_rfc3339();
    let kind = event.kind();
    let data = serde_json::to_string(event).expect("events always serialize");
    let hash = chain_hash(&head.1, seq, &at, kind, &data);
    sqlx::query("INSERT INTO events (seq, at, kind, data, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(seq)
        .bind(&at)
        .bind(kind)
        .bind(&data)
        .bind(&head.1)
        .bind(&hash)
        .execute(&mut **tx)
        .await?;
    projection::apply(tx, event, &at).await?;
    *head = (seq, hash);
    Ok((seq, at))
}

pub(crate) fn chain_hash(prev: &str, seq: i64, at: &str, kind: &str, data: &str) -> String {
    let mut h = Sha256::new();
    for part in [prev, &seq.to_string(), at, kind, data] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Applies the embedded migrations not applied yet, each in its own transaction.
async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
        .execute(pool)
        .await?;
    for (version, sql) in MIGRATIONS {
        let applied = sqlx::query("SELECT 1 FROM schema_migrations WHERE version = $1")
            .bind(version)
            .fetch_optional(pool)
            .await?
            .is_some();
        if applied {
            continue;
        }
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and applies migrations.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Per-statement logging costs more than the statement on the step path.
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(4)
            .min_connections(1)
            .connect_with(options)
            .await?;
        migrate(&pool).await?;
        let head = sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(seq), 0) FROM events")
            .fetch_one(&pool)
            .await?;
        Ok(Store {
            log: EventLog::new(pool.clone(), head),
            pool,
        })
    }

    /// The one way to write.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// Walks the whole chain; an empty result means the log is intact.
    pub async fn audit(&self) -> Result<(usize, Vec<AuditProblem>), StoreError> {
        let rows = sqlx::query("SELECT seq, at, kind, data, prev_hash, hash FROM events ORDER BY seq")
            .fetch_all(&self.pool)
            .await?;
        let mut problems = Vec::new();
        let mut expected_prev = GENESIS_HASH.to_string();
        let mut last_seq = 0;
        for row in &rows {
            let seq: i64 = row.get(0);
            let (at, kind, data): (String, String, String) = (row.get(1), row.get(2), row.get(3));
            let (prev, hash): (String, String) = (row.get(4), row.get(5));
            if seq != last_seq + 1 {
                problems.push(AuditProblem::Missing {
                    after: last_seq,
                    next: seq,
                });
            } else if prev != expected_prev {
                problems.push(AuditProblem::BrokenLink { seq });
            }
            if chain_hash(&prev, seq, &at, &kind, &data) != hash {
                problems.push(AuditProblem::Edited { seq });
            }
            expected_prev = hash;
            last_seq = seq;
        }
        let head: Option<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM chain_head WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        if let Some((head_seq, head_hash)) = head {
            if head_seq != last_seq {
                problems.push(AuditProblem::Truncated {
                    head: head_seq,
                    last: last_seq,
                });
            } else if head_hash != expected_prev {
                problems.push(AuditProblem::Edited { seq: last_seq });
            }
        }
        Ok((rows.len(), problems))
    }

    pub async fn secrets(&self, project: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT name, value FROM secrets WHERE project = $1 ORDER BY name")
                .bind(project)
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ArtifactRef, JobStatus, RunStatus, StepStatus};

    fn run_events(run_id: i64) -> Vec<Event> {
        let job = |j: &str| j.to_string();
        vec![
            Event::JobStarted {
                run_id,
                job: job("build"),
                attempt: 1,
            },
            Event::StepStarted {
                run_id,
                job: job("build"),
                attempt: 1,
                step: 0,
                name: "make".into(),
            },
            Event::StepFinished {
                run_id,
                job: job("build"),
                attempt: 1,
                step: 0,
                outcome: StepStatus::Success,
                exit_code: Some(0),
            },
            Event::JobFinished {
                run_id,
                job: job("build"),
                attempt: 1,
                status: JobStatus::Success,
                reason: None,
                artifacts: vec![ArtifactRef {
                    path: "dist/a".into(),
                    digest: "ab".repeat(32),
                    size: 3,
                }],
            },
            Event::JobSkipped {
                run_id,
                job: job("deploy"),
                reason: "if: branch == 'main' is false".into(),
            },
            Event::RunFinished {
                run_id,
                status: RunStatus::Success,
            },
        ]
    }

    async fn store_with_a_run() -> (tempfile::TempDir, Store, i64) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).await.unwrap();
        let run_id = store
            .log()
            .append_new(IdKind::Run, |run_id| Event::RunCreated {
                run_id,
                project: "p".into(),
                source_uri: "/src".into(),
                commit: "c0ffee".into(),
                branch: "main".into(),
                event: "push".into(),
                pipeline: "name: p".into(),
                source_digest: "00".repeat(32),
                committed_at: None,
                jobs: vec!["build".into(), "deploy".into()],
            })
            .await
            .unwrap();
        store.log().append_all(run_events(run_id)).await.unwrap();
        (dir, store, run_id)
    }

    #[tokio::test]
    async fn read_models_rebuild_to_exactly_what_the_log_says() {
        let (_dir, store, run_id) = store_with_a_run().await;
        let before = store.run(run_id).await.unwrap().unwrap();
        assert_eq!(before.status, RunStatus::Success);
        assert_eq!(before.jobs[0].artifacts.len(), 1);
        assert_eq!(before.jobs[1].status, JobStatus::Skipped);
        assert_eq!(store.log().rebuild_read_models().await.unwrap(), 7);
        assert_eq!(store.run(run_id).await.unwrap().unwrap(), before);
    }

    #[tokio::test]
    async fn audit_finds_edits_gaps_and_truncation() {
        let (_dir, store, _) = store_with_a_run().await;
        assert_eq!(store.audit().await.unwrap(), (7, vec![]));
        for sql in [
            "DROP TRIGGER events_no_update",
            "DROP TRIGGER events_no_delete",
            "UPDATE events SET data = replace(data, 'make', 'mak3') WHERE seq = 3",
            "DELETE FROM events WHERE seq = 5",
            "DELETE FROM events WHERE seq = 7",
        ] {
            sqlx::query(sql).execute(&store.pool).await.unwrap();
        }
        let (_, problems) = store.audit().await.unwrap();
        assert_eq!(
            problems,
            vec![
                AuditProblem::Edited { seq: 3 },
                AuditProblem::Missing { after: 4, next: 6 },
                AuditProblem::Truncated { head: 7, last: 6 },
            ]
        );
    }

    #[tokio::test]
    async fn a_batch_is_all_or_nothing() {
        let (_dir, store, run_id) = store_with_a_run().await;
        // A second RunCreated with the same id violates the runs primary key: nothing of the batch lands.
        let (count, _) = store.audit().await.unwrap();
        let duplicate = Event::RunCreated {
            run_id,
            project: "p".into(),
            source_uri: "/src".into(),
            commit: "c".into(),
            branch: "main".into(),
            event: "push".into(),
            pipeline: String::new(),
            source_digest: String::new(),
            committed_at: None,
            jobs: vec![],
        };
        let batch = [
            Event::RunCancelRequested {
                run_id,
                reason: "x".into(),
            },
            duplicate,
        ];
        assert!(store.log().append_all(batch.to_vec()).await.is_err());
        assert_eq!(store.audit().await.unwrap(), (count, vec![]));
    }

    #[tokio::test]
    async fn a_deployment_folds_into_its_read_model_and_rebuilds() {
        use crate::event::{DeploymentStatus, InstanceRef};
        let (_dir, store, _) = store_with_a_run().await;
        let id = store
            .log()
            .append_new(IdKind::Deployment, |deployment_id| Event::DeploymentRequested {
                deployment_id,
                project: "p".into(),
                environment: "production".into(),
                release_id: 1,
                requested_by: "alice".into(),
                author: "alice".into(),
                rollback_of: None,
                phases: vec!["start 1 instance".into(), "shift 100%".into()],
            })
            .await
            .unwrap();
        let addr = "127.0.0.1:9000".parse().unwrap();
        store
            .log()
            .append_all(vec![
                Event::DeploymentGated {
                    deployment_id: id,
                    gates: vec!["needs 1 approval".into()],
                },
                Event::DeploymentApproved {
                    deployment_id: id,
                    by: "bob".into(),
                },
                Event::DeploymentPhase {
                    deployment_id: id,
                    index: 0,
                    phase: "start 1 instance".into(),
                    traffic: 0,
                },
                Event::DeploymentInstances {
                    deployment_id: id,
                    version: "r1".into(),
                    instances: vec![InstanceRef { addr, pid: Some(42) }],
                },
                Event::DeploymentPhase {
                    deployment_id: id,
                    index: 1,
                    phase: "shift 100%".into(),
                    traffic: 100,
                },
                Event::DeploymentFinished {
                    deployment_id: id,
                    status: DeploymentStatus::Succeeded,
                    reason: None,
                },
            ])
            .await
            .unwrap();
        let view = store.deployment(id).await.unwrap().unwrap();
        assert_eq!(
            (view.status.as_str(), view.traffic, view.phase_index),
            ("succeeded", 100, Some(1))
        );
        assert_eq!(view.approvals, vec!["bob"]);
        assert!(view.gates.is_empty());
        assert_eq!(view.instances["r1"], vec![InstanceRef { addr, pid: Some(42) }]);
        assert_eq!(store.current_release("p", "production").await.unwrap(), Some(1));
        store.log().rebuild_read_models().await.unwrap();
        assert_eq!(store.deployment(id).await.unwrap().unwrap(), view);
        assert!(store.unfinished_deployments().await.unwrap().is_empty());
    }
}
