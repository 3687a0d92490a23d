//! Opening the database, appending to the chain, rebuilding the read models.

use sha2::{Digest as _, Sha256};
use sqlx::Row as _;

use crate::backend::{self, Backend, Database, Pool, Tx};
use crate::event::Event;
use crate::log::EventLog;
use crate::projection;
use crate::secrets::Keyring;

pub(crate) const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("event {seq} cannot be decoded: {error}")]
    Decode { seq: i64, error: String },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    /// A read model holds a value this version cannot read.
    #[error("read model {table} holds a value of {id} that cannot be read: {error}")]
    Corrupt {
        table: &'static str,
        id: i64,
        error: String,
    },
    /// `Store::copy` was asked to copy onto a store that already has a history.
    #[error("the target database already holds {events} events: copy only into an empty one")]
    NotEmpty { events: i64 },
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

/// The reading side of the store (read models, the log, secrets, its audit); every write goes through its
/// `EventLog`.
pub struct Store {
    pub(crate) pool: Pool,
    log: EventLog,
}

/// The newest event's sequence number and hash (genesis for an empty log).
/// Read under `backend`'s row lock, so it holds until the transaction ends.
pub(crate) async fn chain_head(tx: &mut Tx<'_>, backend: Backend) -> Result<(i64, String), StoreError> {
    let head = sqlx::query(&format!(
        "SELECT seq, hash FROM chain_head WHERE id = 1{}",
        backend.hold_row()
    ))
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
    projection::apply(tx, seq, event, &at).await?;
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

/// Applies the backend's migrations not applied yet, all in one transaction; when one of them
/// reshaped read models, folds the log into them again before the commit, so an existing data
/// directory comes up with the same views (or, on failure, unchanged).
async fn migrate(pool: &Pool, backend: Backend) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    if let Some(lock) = backend.migration_lock() {
        sqlx::query(lock).execute(&mut *tx).await?;
    }
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
        .execute(&mut *tx)
        .await?;
    let mut rebuild = false;
    for migration in backend.migrations() {
        let applied = sqlx::query("SELECT 1 FROM schema_migrations WHERE version = $1")
            .bind(migration.version)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if applied {
            continue;
        }
        sqlx::raw_sql(migration.sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
            .bind(migration.version)
            .execute(&mut *tx)
            .await?;
        rebuild |= migration.rebuilds;
    }
    // The head's row always exists, so that holding it (`Backend::hold_row`) serialises even
    // the first appends of servers sharing the database.
    sqlx::query("INSERT INTO chain_head (id, seq, hash) VALUES (1, 0, $1) ON CONFLICT (id) DO NOTHING")
        .bind(GENESIS_HASH)
        .execute(&mut *tx)
        .await?;
    if rebuild {
        let events = projection::rebuild(&mut tx).await?;
        tracing::info!(events, "read models rebuilt from the log after a schema change");
    }
    tx.commit().await?;
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store in `database` and applies migrations (rebuilding
    /// the read models when one reshaped them). Secret values are sealed and opened with `keyring`
    /// only: an empty one (to audit a copy of a database) reads and writes none, and leaves
    /// plaintext values from an older version as they are; otherwise those are sealed now.
    pub async fn open(database: &Database, keyring: Keyring) -> Result<Store, StoreError> {
        let (pool, backend) = backend::connect(database).await?;
        migrate(&pool, backend).await?;
        let head = sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(seq), 0) FROM events")
            .fetch_one(&pool)
            .await?;
        let checkpointed = sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(seq), 0) FROM checkpoints")
            .fetch_one(&pool)
            .await?;
        let store = Store {
            log: EventLog::new(pool.clone(), backend, head, checkpointed, keyring),
            pool,
        };
        if let Database::Postgres(url) = database {
            store.log.follow(url);
        }
        let sealed = store.log.seal_plaintext_secrets().await?;
        if sealed > 0
            && let Some(forget) = backend.forget_overwritten()
        {
            sqlx::query(forget).execute(&store.pool).await?;
        }
        if sealed > 0 {
            tracing::info!(secrets = sealed, "plaintext secret values sealed at rest");
        }
        Ok(store)
    }

    /// The one way to write.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// Whether other servers may share this store's database (PostgreSQL), so that what only
    /// one may do is leased; a SQLite file has one server.
    pub fn shared(&self) -> bool {
        self.log.backend == Backend::Postgres
    }

    /// The credentials of a project's source URL (`user:token`), if it has any.
    pub async fn source_credentials(&self, project: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .sealed_values(project)
            .await?
            .into_iter()
            .find_map(|(name, value)| (name == crate::secrets::SOURCE_CREDENTIALS).then_some(value)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::AuditProblem;
    pub(crate) use crate::backend::scratch::Scratch;
    use crate::event::{ArtifactRef, JobStatus, RunStatus, StepStatus};
    use crate::secrets::SecretKey;

    /// The key tests seal secrets with.
    pub(crate) fn keyring() -> Keyring {
        Keyring::new(vec![SecretKey::from_bytes([5; 32])])
    }

    /// The store in `scratch`, opened with the tests' keyring.
    pub(crate) async fn open(scratch: &Scratch) -> Store {
        Store::open(&scratch.database, keyring()).await.unwrap()
    }

    /// Runs `statements` on the database behind the store's back, as someone who can write it
    /// would; `DROP TRIGGER t` in the backend's words.
    pub(crate) async fn tamper(store: &Store, statements: &[&str]) {
        for statement in statements {
            let statement = match statement.strip_prefix("DROP TRIGGER ") {
                Some(trigger) => store.log().backend.drop_trigger(trigger),
                None => statement.to_string(),
            };
            sqlx::query(&statement).execute(&store.pool).await.unwrap();
        }
    }

    /// Events checked and problems found, with no checkpoint signed.
    pub(crate) async fn audit(store: &Store) -> (u64, Vec<AuditProblem>) {
        let key = [conveyor_attest::KeyPair::from_seed([6; 32]).public()];
        let audit = store.audit(&key, None).await.unwrap();
        (audit.events, audit.problems)
    }

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

    /// Run `run_id` of `project` created, with `jobs` in that order.
    pub(crate) fn run_created(run_id: i64, project: &str, jobs: &[&str]) -> Event {
        Event::RunCreated {
            run_id,
            project: project.into(),
            source_uri: "/src".into(),
            commit: "c0ffee".into(),
            branch: "main".into(),
            event: "push".into(),
            pipeline: "name: p".into(),
            source_digest: "00".repeat(32),
            committed_at: None,
            jobs: jobs.iter().map(|j| j.to_string()).collect(),
        }
    }

    pub(crate) async fn store_with_a_run() -> (Scratch, Store, i64) {
        let scratch = Scratch::new();
        let store = open(&scratch).await;
        let run_id = store
            .log()
            // Not in name order: a run's jobs keep the pipeline's order.
            .append_new(IdKind::Run, |run_id| {
                run_created(run_id, "p", &["build", "deploy", "audit"])
            })
            .await
            .unwrap();
        store.log().append_all(run_events(run_id)).await.unwrap();
        (scratch, store, run_id)
    }

    #[tokio::test]
    async fn read_models_rebuild_to_exactly_what_the_log_says() {
        let (_dir, store, run_id) = store_with_a_run().await;
        let before = store.run(run_id).await.unwrap().unwrap();
        assert_eq!(before.status, RunStatus::Success);
        assert_eq!(before.jobs[0].artifacts.len(), 1);
        assert_eq!(before.jobs[1].status, JobStatus::Skipped);
        assert_eq!(
            before.jobs.iter().map(|j| j.job.as_str()).collect::<Vec<_>>(),
            ["build", "deploy", "audit"]
        );
        assert_eq!(store.log().rebuild_read_models().await.unwrap(), 7);
        assert_eq!(store.run(run_id).await.unwrap().unwrap(), before);
    }

    #[tokio::test]
    async fn audit_finds_edits_gaps_and_truncation() {
        let (_dir, store, _) = store_with_a_run().await;
        assert_eq!(audit(&store).await, (7, vec![]));
        tamper(
            &store,
            &[
                "DROP TRIGGER events_no_update",
                "DROP TRIGGER events_no_delete",
                "UPDATE events SET data = replace(data, 'make', 'mak3') WHERE seq = 3",
                "DELETE FROM events WHERE seq = 5",
                "DELETE FROM events WHERE seq = 7",
            ],
        )
        .await;
        let (_, problems) = audit(&store).await;
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
        let (count, _) = audit(&store).await;
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
        assert_eq!(audit(&store).await, (count, vec![]));
    }

    /// A store whose log holds a bit of everything a read model folds: a project with heads, the
    /// run, a release, a finished deployment (approvals, phases, instances of two versions and a
    /// version without any) and a gated one, flag changes.
    async fn store_with_history() -> (Scratch, Store, Vec<i64>) {
        use crate::event::{DeploymentStatus, InstanceRef};
        let (dir, store, run_id) = store_with_a_run().await;
        let log = store.log();
        log.append(Event::ProjectAdded {
            project: "p".into(),
            source_uri: "/src".into(),
            poll_seconds: 60,
            heads: [("main".into(), "c0ffee".into()), ("dev".into(), "beef".into())].into(),
        })
        .await
        .unwrap();
        let artifact = |path: &str, digest: &str| ArtifactRef {
            path: path.into(),
            digest: digest.repeat(32),
            size: 3,
        };
        log.append_new(IdKind::Release, |release_id| Event::ReleaseCreated {
            release_id,
            run_id,
            project: "p".into(),
            commit: "c0ffee".into(),
            branch: "main".into(),
            // Not in path order: the release's order is kept.
            artifacts: vec![artifact("dist/z", "ab"), artifact("dist/a", "cd")],
            envelope: serde_json::json!({"payloadType": "application/vnd.in-toto+json", "signatures": []}),
        })
        .await
        .unwrap();
        let requested = |deployment_id| Event::DeploymentRequested {
            deployment_id,
            project: "p".into(),
            environment: "production".into(),
            release_id: 1,
            requested_by: "alice".into(),
            author: "alice".into(),
            authors: vec!["alice".into(), "bob@example.com".into()],
            rollback_of: None,
            phases: vec!["start 2 instances".into(), "shift 100%".into()],
        };
        let first = log.append_new(IdKind::Deployment, requested).await.unwrap();
        let at = |addr: &str, pid: Option<u32>| InstanceRef {
            addr: addr.parse().unwrap(),
            id: pid.map(|pid| conveyor_api::InstanceId(pid.to_string())),
        };
        log.append_all(vec![
            Event::DeploymentGated {
                deployment_id: first,
                gates: vec!["needs 2 approvals".into(), "frozen until 10:00".into()],
            },
            Event::DeploymentApproved {
                deployment_id: first,
                by: "carol".into(),
            },
            Event::DeploymentApproved {
                deployment_id: first,
                by: "bob".into(),
            },
            Event::DeploymentPhase {
                deployment_id: first,
                index: 0,
                phase: "start 2 instances".into(),
                traffic: 0,
            },
            Event::DeploymentInstances {
                deployment_id: first,
                version: "r1".into(),
                instances: vec![at("127.0.0.1:9001", Some(42)), at("[::1]:9000", None)],
            },
            Event::DeploymentInstances {
                deployment_id: first,
                version: "r0".into(),
                instances: vec![at("127.0.0.1:9002", Some(7))],
            },
            // Recorded again: the newest list replaces the one before.
            Event::DeploymentInstances {
                deployment_id: first,
                version: "r0".into(),
                instances: vec![at("127.0.0.1:9003", Some(8))],
            },
            Event::DeploymentInstances {
                deployment_id: first,
                version: "r-empty".into(),
                instances: vec![],
            },
            Event::DeploymentPhase {
                deployment_id: first,
                index: 1,
                phase: "shift 100%".into(),
                traffic: 100,
            },
            Event::DeploymentFinished {
                deployment_id: first,
                status: DeploymentStatus::Succeeded,
                reason: None,
            },
        ])
        .await
        .unwrap();
        let second = log.append_new(IdKind::Deployment, requested).await.unwrap();
        log.append(Event::DeploymentGated {
            deployment_id: second,
            gates: vec!["needs 1 approval".into()],
        })
        .await
        .unwrap();
        for (environment, key) in [("production", "web"), ("staging", "app")] {
            log.append(Event::FlagsChanged {
                project: "p".into(),
                environment: environment.into(),
                by: "alice".into(),
                definition: serde_json::json!({"flags": {}}),
                changes: vec![],
                touched: vec![],
                removed: vec![],
            })
            .await
            .unwrap();
            log.append(Event::FlagKeyCreated {
                project: "p".into(),
                environment: environment.into(),
                name: key.into(),
                hash: key.repeat(20),
                by: "admin".into(),
            })
            .await
            .unwrap();
        }
        (dir, store, vec![run_id, first, second])
    }

    /// Everything the read models answer about `store_with_history`, as the API would send it.
    async fn views(store: &Store, ids: &[i64]) -> serde_json::Value {
        let mut deployments = Vec::new();
        for id in &ids[1..] {
            deployments.push(store.deployment(*id).await.unwrap());
        }
        serde_json::json!({
            "projects": store.projects().await.unwrap(),
            "run": store.run(ids[0]).await.unwrap(),
            "releases": store.releases(None, 10).await.unwrap(),
            "release_of_run": store.release_of_run(ids[0]).await.unwrap(),
            "deployments": store.deployments(None, None, 10).await.unwrap(),
            "deployments_in_production": store.deployments(Some("p"), Some("production"), 1).await.unwrap(),
            "deployment": deployments,
            "unfinished": store.unfinished_deployments().await.unwrap(),
            "flag_history": store.flag_history("p", "production", 10).await.unwrap(),
            "flag_sets": store.flag_sets().await.unwrap(),
            "flag_keys": store.flag_keys().await.unwrap(),
        })
    }

    #[tokio::test]
    async fn deployments_fold_into_their_read_model_and_rebuild() {
        let (_dir, store, ids) = store_with_history().await;
        let (first, second) = (ids[1], ids[2]);
        let view = store.deployment(first).await.unwrap().unwrap();
        assert_eq!(
            (view.status.as_str(), view.traffic, view.phase_index),
            ("succeeded", 100, Some(1))
        );
        assert_eq!(view.phases, ["start 2 instances", "shift 100%"]);
        assert_eq!(view.approvals, ["carol", "bob"]);
        assert!(view.gates.is_empty());
        let addrs = |version: &str| {
            view.instances[version]
                .iter()
                .map(|i| (i.addr.to_string(), i.id.as_ref().map(|id| id.0.clone())))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            addrs("r1"),
            [
                ("127.0.0.1:9001".to_string(), Some("42".to_string())),
                ("[::1]:9000".to_string(), None)
            ]
        );
        assert_eq!(
            addrs("r0"),
            [("127.0.0.1:9003".to_string(), Some("8".to_string()))]
        );
        assert_eq!(view.instances.keys().collect::<Vec<_>>(), ["r-empty", "r0", "r1"]);
        let gated = store.deployment(second).await.unwrap().unwrap();
        assert_eq!(gated.gates, ["needs 1 approval"]);
        assert_eq!(store.unfinished_deployments().await.unwrap(), [gated]);
        assert_eq!(store.current_release("p", "production").await.unwrap(), Some(1));
        let release = store.release(1).await.unwrap().unwrap();
        assert_eq!(
            release
                .artifacts
                .iter()
                .map(|a| a.path.as_str())
                .collect::<Vec<_>>(),
            ["dist/z", "dist/a"]
        );
        let project = store.project("p").await.unwrap().unwrap();
        assert_eq!(project.heads.keys().collect::<Vec<_>>(), ["dev", "main"]);
        assert_eq!(store.flag_history("p", "production", 10).await.unwrap().len(), 2);

        let before = views(&store, &ids).await;
        store.log().rebuild_read_models().await.unwrap();
        assert_eq!(views(&store, &ids).await, before);
    }

    #[tokio::test]
    async fn a_data_directory_of_the_old_schema_comes_up_with_the_same_views_and_sealed_secrets() {
        const PLAINTEXT: &str = "plaintext-from-an-old-version-4711";
        let (_scratch, store, ids) = store_with_history().await;
        let want = views(&store, &ids).await;

        // The same log in a database of schema 6, its read models written the old way (JSON
        // columns), as an existing data directory has it.
        let old = Scratch::new();
        let (pool, backend) = backend::connect(&old.database).await.unwrap();
        sqlx::query("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        for migration in &backend.migrations()[..6] {
            sqlx::raw_sql(migration.sql).execute(&pool).await.unwrap();
            sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
                .bind(migration.version)
                .execute(&pool)
                .await
                .unwrap();
        }
        let events: Vec<(i64, String, String, String, String, String)> =
            sqlx::query_as("SELECT seq, at, kind, data, prev_hash, hash FROM events ORDER BY seq")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        for (seq, at, kind, data, prev_hash, hash) in &events {
            sqlx::query(
                "INSERT INTO events (seq, at, kind, data, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(seq)
            .bind(at)
            .bind(kind)
            .bind(data)
            .bind(prev_hash)
            .bind(hash)
            .execute(&pool)
            .await
            .unwrap();
        }
        let (seq, _, _, _, _, hash) = events.last().unwrap();
        for sql in [
            format!("INSERT INTO chain_head (id, seq, hash) VALUES (1, {seq}, '{hash}')"),
            "INSERT INTO projects (name, source_uri, poll_seconds, heads, created_at)
             VALUES ('p', '/src', 60, '{\"main\":\"c0ffee\"}', '2024-01-01T00:00:00.000Z')"
                .into(),
            "INSERT INTO releases (id, run_id, project, commit_sha, branch, artifacts, envelope, created_at)
             VALUES (1, 1, 'p', 'c0ffee', 'main', '[]', '{}', '2024-01-01T00:00:00.000Z')"
                .into(),
            "INSERT INTO deployments (id, project, environment, release_id, status, requested_by, author, phases,
                traffic, gates, approvals, instances, created_at)
             VALUES (1, 'p', 'production', 1, 'running', 'alice', 'alice', '[\"old\"]', 0, '[]', '[\"bob\"]',
                '{\"r1\":[{\"addr\":\"127.0.0.1:1\",\"pid\":1}]}', '2024-01-01T00:00:00.000Z')"
                .into(),
            format!("INSERT INTO secrets (project, name, value) VALUES ('p', 'TOKEN', '{PLAINTEXT}')"),
        ] {
            sqlx::query(&sql).execute(&pool).await.unwrap();
        }
        pool.close().await;

        let reopened = open(&old).await;
        assert_eq!(views(&reopened, &ids).await, want);
        // Its plaintext secret was sealed, and the log says so.
        assert_eq!(audit(&reopened).await, (events.len() as u64 + 1, vec![]));
        let sealed = reopened.events(events.len() as i64, 10).await.unwrap();
        assert!(
            matches!(&sealed[0].event, Event::SecretsSealed { secrets: 1, key_id } if key_id == keyring().current().unwrap().id()),
            "{sealed:?}"
        );
        assert_eq!(
            reopened.secrets("p").await.unwrap(),
            [("TOKEN".to_string(), PLAINTEXT.to_string())]
        );
        // Opened again, nothing is migrated, sealed or rebuilt twice.
        reopened.pool.close().await;
        let again = open(&old).await;
        assert_eq!(views(&again, &ids).await, want);
        assert_eq!(audit(&again).await.0, events.len() as u64 + 1);
        again.pool.close().await;
        // Nothing of the plaintext is left in the database (on SQLite: zeroed in the file, not
        // left in a free page).
        assert!(!old.holds(PLAINTEXT));
    }
}
