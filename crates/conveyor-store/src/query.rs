//! Reads of the read models. The views the API sends as they are live in `conveyor-api`.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sqlx::Row as _;

use crate::backend::{Query, Row, time};
use crate::db::{Store, StoreError};
use crate::event::{Event, InstanceRef};
use conveyor_api::{InstanceId, UnknownStatus};

pub use conveyor_api::{
    ArtifactRef, DeploymentView, JobView, JudgementView, Project, Release, RunView, StepView,
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    pub seq: i64,
    pub at: String,
    pub event: Event,
}

/// A status column, read through its enum's one `FromStr`.
pub(crate) fn status<T, I>(row: &Row, column: I) -> Result<T, StoreError>
where
    T: std::str::FromStr<Err = UnknownStatus>,
    I: sqlx::ColumnIndex<Row>,
{
    Ok(row.try_get::<&str, _>(column)?.parse()?)
}

fn judgement_from_row(row: &Row) -> Result<JudgementView, StoreError> {
    Ok(JudgementView {
        metric: row.try_get("metric")?,
        verdict: status(row, "verdict")?,
        traffic: u32::try_from(row.try_get::<i64, _>("traffic")?).unwrap_or(0),
        summary: row.try_get("summary")?,
        evidence: serde_json::from_str(row.try_get("evidence")?).unwrap_or_default(),
        at: time(row, "at")?,
    })
}

// === Picking parents and their children ===

/// A value a `Pick` binds.
#[derive(Debug, Clone, Copy)]
enum Bind<'a> {
    Text(Option<&'a str>),
    Int(i64),
}

/// Which rows of a parent table (`deployments`, `releases`) a read wants: a condition over its
/// columns with the order and limit, and the binds of its `$1`, `$2`, … Reading the parents and
/// each child table with the same pick takes one query per table, however many parents.
struct Pick<'a> {
    table: &'static str,
    condition: &'static str,
    binds: Vec<Bind<'a>>,
}

impl<'a> Pick<'a> {
    fn one(table: &'static str, id: i64) -> Self {
        Pick {
            table,
            condition: "id = $1",
            binds: vec![Bind::Int(id)],
        }
    }

    fn bind<'q>(&self, mut query: Query<'q>) -> Query<'q>
    where
        'a: 'q,
    {
        for bind in &self.binds {
            query = match *bind {
                Bind::Text(text) => query.bind(text),
                Bind::Int(int) => query.bind(int),
            };
        }
        query
    }

    /// The picked parents' rows of `columns`, in the pick's order.
    async fn parents(&self, store: &Store, columns: &str) -> Result<Vec<Row>, StoreError> {
        let sql = format!("SELECT {columns} FROM {} WHERE {}", self.table, self.condition);
        Ok(self.bind(sqlx::query(&sql)).fetch_all(&store.pool).await?)
    }

    /// The rows of `select` (whose first column is `key`, the parent's id) that belong to the
    /// picked parents, each read by `read`, by parent id, in `order` within a parent.
    async fn children<T>(
        &self,
        store: &Store,
        select: &str,
        key: &str,
        order: &str,
        read: impl Fn(&Row) -> Result<T, StoreError>,
    ) -> Result<HashMap<i64, Vec<T>>, StoreError> {
        let sql = format!(
            "{select} WHERE {key} IN (SELECT id FROM {} WHERE {}) ORDER BY {key}, {order}",
            self.table, self.condition
        );
        let mut children: HashMap<i64, Vec<T>> = HashMap::new();
        for row in self.bind(sqlx::query(&sql)).fetch_all(&store.pool).await? {
            children.entry(row.try_get(0)?).or_default().push(read(&row)?);
        }
        Ok(children)
    }
}

/// A one-column list of each picked deployment (`deployment_id, idx, {column}`).
async fn deployment_lists(
    store: &Store,
    pick: &Pick<'_>,
    table: &str,
    column: &str,
) -> Result<HashMap<i64, Vec<String>>, StoreError> {
    let select = format!("SELECT deployment_id, {column} FROM {table}");
    pick.children(store, &select, "deployment_id", "idx", |row| Ok(row.try_get(1)?))
        .await
}

// === Deployments ===

const DEPLOYMENT_COLUMNS: &str = "id, project, environment, release_id, status, requested_by, author, rollback_of, \
    phase_index, phase, traffic, reason, created_at, finished_at, fixed_by";

fn deployment_from_row(row: &Row) -> Result<DeploymentView, StoreError> {
    Ok(DeploymentView {
        id: row.get(0),
        project: row.get(1),
        environment: row.get(2),
        release_id: row.get(3),
        status: status(row, 4)?,
        requested_by: row.get(5),
        author: row.get(6),
        rollback_of: row.get(7),
        phases: Vec::new(),
        phase_index: row.get::<Option<i64>, _>(8).map(|i| i as u32),
        phase: row.get(9),
        traffic: row.get::<i64, _>(10) as u32,
        gates: Vec::new(),
        approvals: Vec::new(),
        authors: Vec::new(),
        instances: BTreeMap::new(),
        reason: row.get(11),
        created_at: time(row, 12)?,
        finished_at: time(row, 13)?,
        fixed_by: row.get(14),
    })
}

/// The picked deployments with their phases, gates, approvals and instances.
async fn deployments_of(store: &Store, pick: Pick<'_>) -> Result<Vec<DeploymentView>, StoreError> {
    let rows = pick.parents(store, DEPLOYMENT_COLUMNS).await?;
    let mut phases = deployment_lists(store, &pick, "deployment_phases", "phase").await?;
    let mut gates = deployment_lists(store, &pick, "deployment_gates", "gate").await?;
    let mut approvals = deployment_lists(store, &pick, "deployment_approvals", "approver").await?;
    let mut authors = deployment_lists(store, &pick, "deployment_authors", "author").await?;
    // Every version started, with its instances (none is a version without instances).
    let mut instances = pick
        .children(
            store,
            "SELECT v.deployment_id, v.version, i.addr, i.instance_id FROM deployment_versions v
             LEFT JOIN deployment_instances i ON i.deployment_id = v.deployment_id AND i.version = v.version",
            "v.deployment_id",
            "v.version, i.idx",
            |row| {
                let version: String = row.try_get(1)?;
                let Some(addr) = row.try_get::<Option<&str>, _>(2)? else {
                    return Ok((version, None));
                };
                let addr = addr
                    .parse()
                    .map_err(|e: std::net::AddrParseError| StoreError::Corrupt {
                        table: "deployment_instances",
                        id: row.get(0),
                        error: format!("address {addr:?}: {e}"),
                    })?;
                let id = row.try_get::<Option<String>, _>(3)?.map(InstanceId);
                Ok((version, Some(InstanceRef { addr, id })))
            },
        )
        .await?;
    rows.iter()
        .map(|row| {
            let mut view = deployment_from_row(row)?;
            view.phases = phases.remove(&view.id).unwrap_or_default();
            view.gates = gates.remove(&view.id).unwrap_or_default();
            view.approvals = approvals.remove(&view.id).unwrap_or_default();
            view.authors = authors.remove(&view.id).unwrap_or_default();
            for (version, instance) in instances.remove(&view.id).unwrap_or_default() {
                let of_version = view.instances.entry(version).or_default();
                of_version.extend(instance);
            }
            Ok(view)
        })
        .collect()
}

/// A finished deployment as DORA's keys read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentOutcome {
    pub id: i64,
    pub status: conveyor_api::DeploymentStatus,
    /// The phase it reached; None if it never started.
    pub phase_index: Option<u32>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: chrono::DateTime<chrono::Utc>,
    pub rollback_of: Option<i64>,
    pub fixed_by: Option<i64>,
    /// When its release's commit was made, if known.
    pub committed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The release a project environment runs, since its deployment finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentRelease {
    pub project: String,
    pub environment: String,
    pub release_id: i64,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
}

/// Which runs [`Store::runs_where`] reads; `None` is any.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFilter<'a> {
    pub project: Option<&'a str>,
    pub status: Option<&'a str>,
    pub branch: Option<&'a str>,
    /// Runs older than this one.
    pub before: Option<i64>,
}

const RUN_COLUMNS: &str = "id, project, source_uri, commit_sha, branch, event, status, created_at, finished_at, pipeline, source_digest, committed_at";

fn run_from_row(row: &Row) -> Result<RunView, StoreError> {
    Ok(RunView {
        id: row.get(0),
        project: row.get(1),
        source_uri: row.get(2),
        commit: row.get(3),
        branch: row.get(4),
        event: row.get(5),
        status: status(row, 6)?,
        created_at: time(row, 7)?,
        finished_at: time(row, 8)?,
        pipeline: row.get(9),
        source_digest: row.get(10),
        committed_at: time(row, 11)?,
        jobs: Vec::new(),
    })
}

// === Releases ===

fn release_from_row(row: &Row) -> Result<Release, StoreError> {
    let id: i64 = row.get(0);
    Ok(Release {
        id,
        run_id: row.get(1),
        project: row.get(2),
        commit: row.get(3),
        branch: row.get(4),
        artifacts: Vec::new(),
        envelope: serde_json::from_str(row.get::<&str, _>(5)).map_err(|e| StoreError::Decode {
            seq: id,
            error: e.to_string(),
        })?,
        created_at: time(row, 6)?,
    })
}

const RELEASE_COLUMNS: &str = "id, run_id, project, commit_sha, branch, envelope, created_at";

/// The picked releases with their artifacts.
async fn releases_of(store: &Store, pick: Pick<'_>) -> Result<Vec<Release>, StoreError> {
    let rows = pick.parents(store, RELEASE_COLUMNS).await?;
    let mut artifacts = pick
        .children(
            store,
            "SELECT release_id, path, digest, size FROM release_artifacts",
            "release_id",
            "idx",
            |row| {
                Ok(ArtifactRef {
                    path: row.try_get(1)?,
                    digest: row.try_get(2)?,
                    size: row.try_get::<i64, _>(3)? as u64,
                })
            },
        )
        .await?;
    rows.iter()
        .map(|row| {
            let mut release = release_from_row(row)?;
            release.artifacts = artifacts.remove(&release.id).unwrap_or_default();
            Ok(release)
        })
        .collect()
}

impl Store {
    pub async fn projects(&self) -> Result<Vec<Project>, StoreError> {
        let rows =
            sqlx::query("SELECT name, source_uri, poll_seconds, created_at FROM projects ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        let mut heads: HashMap<String, BTreeMap<String, String>> = HashMap::new();
        for row in sqlx::query("SELECT project, branch, sha FROM project_heads")
            .fetch_all(&self.pool)
            .await?
        {
            heads
                .entry(row.try_get(0)?)
                .or_default()
                .insert(row.try_get(1)?, row.try_get(2)?);
        }
        rows.iter()
            .map(|r| {
                Ok(Project {
                    name: r.try_get(0)?,
                    source_uri: r.try_get(1)?,
                    poll_seconds: r.try_get::<i64, _>(2)? as u64,
                    heads: heads.remove(r.try_get::<&str, _>(0)?).unwrap_or_default(),
                    created_at: time(r, 3)?,
                })
            })
            .collect()
    }

    pub async fn project(&self, name: &str) -> Result<Option<Project>, StoreError> {
        Ok(self.projects().await?.into_iter().find(|p| p.name == name))
    }

    /// Newest first, without jobs.
    pub async fn runs(&self, project: Option<&str>, limit: i64) -> Result<Vec<RunView>, StoreError> {
        self.runs_where(
            &RunFilter {
                project,
                ..RunFilter::default()
            },
            limit,
        )
        .await
    }

    /// Newest first, without jobs: a project's (or every project's) runs with `status` and on
    /// `branch` when given, older than run `before` when given.
    pub async fn runs_where(&self, filter: &RunFilter<'_>, limit: i64) -> Result<Vec<RunView>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE ($1 IS NULL OR project = $1) AND ($2 IS NULL OR status = $2)
             AND ($3 IS NULL OR branch = $3) AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
        ))
        .bind(filter.project)
        .bind(filter.status)
        .bind(filter.branch)
        .bind(filter.before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// The ids of the runs not finished yet, oldest first (to resume after a crash, or take over
    /// from a server that died).
    pub async fn unfinished_run_ids(&self) -> Result<Vec<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM runs WHERE status = 'running' ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// One run with its jobs, their steps and artifacts.
    pub async fn run(&self, id: i64) -> Result<Option<RunView>, StoreError> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut run = run_from_row(&row)?;
        run.jobs = self.jobs_of(id).await?;
        Ok(Some(run))
    }

    async fn jobs_of(&self, run_id: i64) -> Result<Vec<JobView>, StoreError> {
        let rows = sqlx::query(
            "SELECT job, status, attempt, reason, started_at, finished_at FROM jobs WHERE run_id = $1 ORDER BY idx",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        let steps = sqlx::query(
            "SELECT job, attempt, idx, name, status, exit_code, started_at, finished_at FROM steps
             WHERE run_id = $1 ORDER BY job, attempt, idx",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        let mut jobs: Vec<JobView> = rows
            .iter()
            .map(|r| {
                Ok(JobView {
                    job: r.get(0),
                    status: status(r, 1)?,
                    attempt: r.get::<i64, _>(2) as u32,
                    reason: r.get(3),
                    started_at: time(r, 4)?,
                    finished_at: time(r, 5)?,
                    steps: Vec::new(),
                    artifacts: Vec::new(),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        for s in &steps {
            let job: String = s.get(0);
            if let Some(j) = jobs.iter_mut().find(|j| j.job == job) {
                j.steps.push(StepView {
                    attempt: s.get::<i64, _>(1) as u32,
                    index: s.get::<i64, _>(2) as u32,
                    name: s.get(3),
                    status: status(s, 4)?,
                    exit_code: s.get(5),
                    started_at: time(s, 6)?,
                    finished_at: time(s, 7)?,
                });
            }
        }
        for j in &mut jobs {
            j.artifacts = self.artifacts_of(run_id, &j.job).await?;
        }
        Ok(jobs)
    }

    pub async fn artifacts_of(&self, run_id: i64, job: &str) -> Result<Vec<ArtifactRef>, StoreError> {
        let rows = sqlx::query(
            "SELECT path, digest, size FROM artifacts WHERE run_id = $1 AND job = $2 ORDER BY path",
        )
        .bind(run_id)
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| ArtifactRef {
                path: r.get(0),
                digest: r.get(1),
                size: r.get::<i64, _>(2) as u64,
            })
            .collect())
    }

    /// The newest commit a run was created for on this branch (by any trigger), if any.
    pub async fn last_commit(&self, project: &str, branch: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT commit_sha FROM runs WHERE project = $1 AND branch = $2 ORDER BY id DESC LIMIT 1",
        )
        .bind(project)
        .bind(branch)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn releases(&self, project: Option<&str>, limit: i64) -> Result<Vec<Release>, StoreError> {
        let pick = Pick {
            table: "releases",
            condition: "($1 IS NULL OR project = $1) ORDER BY id DESC LIMIT $2",
            binds: vec![Bind::Text(project), Bind::Int(limit)],
        };
        releases_of(self, pick).await
    }

    pub async fn release(&self, id: i64) -> Result<Option<Release>, StoreError> {
        Ok(releases_of(self, Pick::one("releases", id)).await?.pop())
    }

    pub async fn release_of_run(&self, run_id: i64) -> Result<Option<Release>, StoreError> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM releases WHERE run_id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        match id {
            Some(id) => self.release(id).await,
            None => Ok(None),
        }
    }

    /// Newest first; filtered by project and environment when given.
    pub async fn deployments(
        &self,
        project: Option<&str>,
        environment: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeploymentView>, StoreError> {
        let pick = Pick {
            table: "deployments",
            condition: "($1 IS NULL OR project = $1) AND ($2 IS NULL OR environment = $2) ORDER BY id DESC LIMIT $3",
            binds: vec![Bind::Text(project), Bind::Text(environment), Bind::Int(limit)],
        };
        deployments_of(self, pick).await
    }

    /// Each project environment's newest deployment (of `project`, or of every project), by
    /// project and then in the order the environments were first deployed to.
    pub async fn latest_deployments(&self, project: Option<&str>) -> Result<Vec<DeploymentView>, StoreError> {
        let pick = Pick {
            table: "deployments",
            condition: "id IN (SELECT MAX(id) FROM deployments WHERE ($1 IS NULL OR project = $1) GROUP BY project, environment)
                ORDER BY project, (SELECT MIN(f.id) FROM deployments f WHERE f.project = deployments.project AND f.environment = deployments.environment)",
            binds: vec![Bind::Text(project)],
        };
        deployments_of(self, pick).await
    }

    /// What each project environment runs: its newest succeeded deployment's release.
    pub async fn current_releases(&self) -> Result<Vec<CurrentRelease>, StoreError> {
        let rows = sqlx::query(
            "SELECT project, environment, release_id, finished_at FROM deployments WHERE id IN
             (SELECT MAX(id) FROM deployments WHERE status = 'succeeded' GROUP BY project, environment)",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CurrentRelease {
                    project: r.try_get(0)?,
                    environment: r.try_get(1)?,
                    release_id: r.try_get(2)?,
                    since: time(r, 3)?,
                })
            })
            .collect()
    }

    /// What DORA's keys need of each finished deployment into `environment` (of `project`, or of
    /// every project), oldest first: one query, no child tables.
    pub async fn deployment_outcomes(
        &self,
        project: Option<&str>,
        environment: &str,
    ) -> Result<Vec<DeploymentOutcome>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.status, d.phase_index, d.created_at, d.finished_at, d.rollback_of, d.fixed_by,
                    runs.committed_at
             FROM deployments d
             LEFT JOIN releases ON releases.id = d.release_id
             LEFT JOIN runs ON runs.id = releases.run_id
             WHERE ($1 IS NULL OR d.project = $1) AND d.environment = $2 AND d.finished_at IS NOT NULL
             ORDER BY d.id",
        )
        .bind(project)
        .bind(environment)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeploymentOutcome {
                    id: r.try_get(0)?,
                    status: status(r, 1)?,
                    phase_index: r.try_get::<Option<i64>, _>(2)?.map(|i| i as u32),
                    created_at: time(r, 3)?,
                    finished_at: time(r, 4)?,
                    rollback_of: r.try_get(5)?,
                    fixed_by: r.try_get(6)?,
                    committed_at: time(r, 7)?,
                })
            })
            .collect()
    }

    /// A release's deployments, newest first.
    pub async fn deployments_of_release(&self, release: i64) -> Result<Vec<DeploymentView>, StoreError> {
        let pick = Pick {
            table: "deployments",
            condition: "release_id = $1 ORDER BY id DESC LIMIT 1000",
            binds: vec![Bind::Int(release)],
        };
        deployments_of(self, pick).await
    }

    pub async fn deployment(&self, id: i64) -> Result<Option<DeploymentView>, StoreError> {
        Ok(deployments_of(self, Pick::one("deployments", id)).await?.pop())
    }

    /// The judgements of a deployment's canary analysis, oldest first.
    pub async fn judgements(&self, deployment: i64) -> Result<Vec<JudgementView>, StoreError> {
        let rows = sqlx::query(
            "SELECT metric, verdict, traffic, summary, evidence, at FROM judgements
             WHERE deployment_id = $1 ORDER BY seq",
        )
        .bind(deployment)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(judgement_from_row).collect()
    }

    /// The newest `limit` judgements of `metric` in an environment, newest first (earlier
    /// releases' results, for SLO criteria relative to them).
    pub async fn environment_judgements(
        &self,
        project: &str,
        environment: &str,
        metric: &str,
        limit: u32,
    ) -> Result<Vec<JudgementView>, StoreError> {
        let rows = sqlx::query(
            "SELECT j.metric, j.verdict, j.traffic, j.summary, j.evidence, j.at FROM judgements j
             JOIN deployments d ON d.id = j.deployment_id
             WHERE d.project = $1 AND d.environment = $2 AND j.metric = $3
             ORDER BY j.seq DESC LIMIT $4",
        )
        .bind(project)
        .bind(environment)
        .bind(metric)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(judgement_from_row).collect()
    }

    /// Deployments not finished (pending, running or paused), oldest first.
    pub async fn unfinished_deployments(&self) -> Result<Vec<DeploymentView>, StoreError> {
        let pick = Pick {
            table: "deployments",
            condition: "finished_at IS NULL ORDER BY id",
            binds: Vec::new(),
        };
        deployments_of(self, pick).await
    }

    /// The release an environment runs: that of its newest succeeded deployment.
    pub async fn current_release(&self, project: &str, environment: &str) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT release_id FROM deployments WHERE project = $1 AND environment = $2 AND status = 'succeeded'
             ORDER BY id DESC LIMIT 1",
        )
        .bind(project)
        .bind(environment)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The server's rules for a project environment, if it has any.
    pub async fn protection(
        &self,
        project: &str,
        environment: &str,
    ) -> Result<Option<conveyor_api::EnvironmentProtection>, StoreError> {
        let text: Option<String> = sqlx::query_scalar(
            "SELECT protection FROM environment_protections WHERE project = $1 AND environment = $2",
        )
        .bind(project)
        .bind(environment)
        .fetch_optional(&self.pool)
        .await?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
                table: "environment_protections",
                id: 0,
                error: e.to_string(),
            })
        })
        .transpose()
    }

    /// Events before `before` (or the newest), of `kind` when given, newest first.
    pub async fn events_before(
        &self,
        before: Option<i64>,
        kind: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, data FROM events WHERE ($1 IS NULL OR seq < $1) AND ($2 IS NULL OR kind = $2)
             ORDER BY seq DESC LIMIT $3",
        )
        .bind(before)
        .bind(kind)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_event).collect()
    }

    /// Events after `after`, oldest first.
    pub async fn events(&self, after: i64, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query("SELECT seq, at, data FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(stored_event).collect()
    }
}

/// A `seq, at, data` row of `events`, decoded.
pub(crate) fn stored_event(row: &Row) -> Result<StoredEvent, StoreError> {
    let seq: i64 = row.get(0);
    let event = serde_json::from_str(row.get::<&str, _>(2)).map_err(|e| StoreError::Decode {
        seq,
        error: e.to_string(),
    })?;
    Ok(StoredEvent {
        seq,
        at: row.get(1),
        event,
    })
}
