//! One pipeline run: creation, then scheduling its jobs as their `needs` complete.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use conveyor_exec::CancellationToken;
use conveyor_spec::expr::EvalContext;
use conveyor_spec::{Pipeline, expr};
use conveyor_store::logs::LogOf;
use conveyor_store::{ArtifactRef, Event, IdKind, JobStatus, RunStatus, RunView, StepStatus};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::{Engine, EngineError};

/// What starts a run.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub project: String,
    pub source_uri: String,
    pub commit: String,
    pub branch: String,
    /// `push`, `manual`, `schedule` or `local`.
    pub event: String,
    /// The `conveyor.yml` text.
    pub pipeline: String,
    pub source_digest: String,
    /// When the commit was made (RFC 3339), if known.
    pub committed_at: Option<String>,
}

/// How the scheduler sees a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    Pending { first_attempt: u32 },
    Running,
    Done(JobStatus),
}

impl Engine {
    /// Validates the pipeline and records the run; returns its id. Start it with `spawn_run`.
    pub async fn create_run(&self, new: NewRun) -> Result<i64, EngineError> {
        let pipeline = conveyor_spec::parse("conveyor.yml", &new.pipeline)?;
        let jobs: Vec<String> = pipeline.jobs.iter().map(|j| j.id.clone()).collect();
        Ok(self
            .events()
            .append_new(IdKind::Run, |run_id| Event::RunCreated {
                run_id,
                project: new.project,
                source_uri: new.source_uri,
                commit: new.commit,
                branch: new.branch,
                event: new.event,
                pipeline: new.pipeline,
                source_digest: new.source_digest,
                committed_at: new.committed_at,
                jobs,
            })
            .await?)
    }

    /// Drives a run to its end and returns how it ended.
    pub async fn execute_run(self: &Arc<Self>, run_id: i64) -> Result<RunStatus, EngineError> {
        self.execute(run_id)
            .instrument(tracing::info_span!("run", id = run_id))
            .await
    }

    async fn execute(self: &Arc<Self>, run_id: i64) -> Result<RunStatus, EngineError> {
        let run = self
            .data
            .store
            .run(run_id)
            .await?
            .ok_or(EngineError::NoSuchRun(run_id))?;
        if run.status != RunStatus::Running {
            return Ok(run.status);
        }
        let pipeline = Arc::new(conveyor_spec::parse("conveyor.yml", &run.pipeline)?);
        let cancel = CancellationToken::new();
        let group = pipeline.concurrency.as_ref().map(|c| {
            let group = expr::interpolate(&c.group, |r| match r {
                "branch" => Some(run.branch.clone()),
                "project" => Some(run.project.clone()),
                _ => Some(String::new()),
            })
            .unwrap_or_else(|_| c.group.clone());
            (format!("{}/{group}", run.project), c.cancel_in_progress)
        });
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id, (cancel.clone(), group.as_ref().map(|g| g.0.clone())));
        let result = self.execute_in_group(&run, pipeline, cancel, group).await;
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run_id);
        result
    }

    async fn execute_in_group(
        self: &Arc<Self>,
        run: &RunView,
        pipeline: Arc<Pipeline>,
        cancel: CancellationToken,
        group: Option<(String, bool)>,
    ) -> Result<RunStatus, EngineError> {
        let _turn = match group {
            None => None,
            Some((name, cancel_in_progress)) => {
                let lock = self
                    .groups
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(name.clone())
                    .or_default()
                    .clone();
                if cancel_in_progress {
                    self.cancel_older_in_group(run.id, &name).await?;
                }
                tokio::select! {
                    guard = lock.lock_owned() => Some(guard),
                    () = cancel.cancelled() => None,
                }
            }
        };
        self.schedule(run, pipeline, cancel).await
    }

    /// Cancels the runs holding or waiting on this concurrency group that started before `run_id`.
    async fn cancel_older_in_group(&self, run_id: i64, group: &str) -> Result<(), EngineError> {
        let older: Vec<i64> = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(id, active)| **id < run_id && active.1.as_deref() == Some(group))
            .map(|(id, _)| *id)
            .collect();
        for id in older {
            self.cancel(
                id,
                &format!("superseded by run {run_id} (concurrency: cancel_in_progress)"),
            )
            .await?;
        }
        Ok(())
    }

    async fn schedule(
        self: &Arc<Self>,
        run: &RunView,
        pipeline: Arc<Pipeline>,
        cancel: CancellationToken,
    ) -> Result<RunStatus, EngineError> {
        let run = Arc::new(run.clone());
        let log = Arc::new(self.data.logs.open(LogOf::Run(run.id))?);
        let mut states: HashMap<String, JobState> = HashMap::new();
        let mut outputs: HashMap<String, Vec<ArtifactRef>> = HashMap::new();
        for job in &pipeline.jobs {
            let view = run.jobs.iter().find(|j| j.job == job.id);
            let state = match view.map(|v| (v.status, v)) {
                None | Some((JobStatus::Pending, _)) => JobState::Pending { first_attempt: 1 },
                Some((JobStatus::Running, view)) => self.interrupted(&run, job, view).await?,
                Some((status, view)) => {
                    outputs.insert(job.id.clone(), view.artifacts.clone());
                    JobState::Done(status)
                }
            };
            states.insert(job.id.clone(), state);
        }

        let mut running: JoinSet<(String, JobStatus, Vec<ArtifactRef>)> = JoinSet::new();
        loop {
            for job in &pipeline.jobs {
                let JobState::Pending { first_attempt } = states[&job.id] else {
                    continue;
                };
                let needs_done = job
                    .needs
                    .iter()
                    .all(|n| matches!(states.get(n), Some(JobState::Done(_))));
                if !needs_done {
                    continue;
                }
                let status_of = |id: &str| match states.get(id) {
                    Some(JobState::Done(s)) => Some(*s),
                    _ => None,
                };
                if cancel.is_cancelled() {
                    self.events()
                        .append(Event::JobFinished {
                            run_id: run.id,
                            job: job.id.clone(),
                            attempt: first_attempt - 1,
                            status: JobStatus::Cancelled,
                            reason: Some("the run was cancelled".into()),
                            artifacts: vec![],
                        })
                        .await?;
                    states.insert(job.id.clone(), JobState::Done(JobStatus::Cancelled));
                    continue;
                }
                let not_succeeded: Vec<&str> = job
                    .needs
                    .iter()
                    .filter(|n| status_of(n) != Some(JobStatus::Success))
                    .map(String::as_str)
                    .collect();
                let ctx = EvalContext {
                    branch: &run.branch,
                    event: &run.event,
                    needs_succeeded: not_succeeded.is_empty(),
                    ancestor_failed: pipeline
                        .ancestors(&job.id)
                        .iter()
                        .any(|a| matches!(status_of(a), Some(JobStatus::Failed | JobStatus::Cancelled))),
                    cancelled: false,
                };
                let go = match &job.condition {
                    Some(condition) => condition.eval(&ctx),
                    None => ctx.needs_succeeded,
                };
                if !go {
                    let reason = match &job.condition {
                        Some(c)
                            if not_succeeded.is_empty()
                                || c.eval(&EvalContext {
                                    needs_succeeded: true,
                                    ..ctx.clone()
                                }) =>
                        {
                            format!("if: {} is false", c.source())
                        }
                        _ => format!("needed job(s) did not succeed: {}", not_succeeded.join(", ")),
                    };
                    self.events()
                        .append(Event::JobSkipped {
                            run_id: run.id,
                            job: job.id.clone(),
                            reason,
                        })
                        .await?;
                    states.insert(job.id.clone(), JobState::Done(JobStatus::Skipped));
                    continue;
                }
                // Like GitLab and GoCD: a job sees the artifacts of every job upstream of it.
                let inputs: Vec<ArtifactRef> = pipeline
                    .ancestors(&job.id)
                    .iter()
                    .flat_map(|n| outputs.get(n).cloned().unwrap_or_default())
                    .collect();
                let task = crate::job::JobTask {
                    engine: self.clone(),
                    run: run.clone(),
                    pipeline: pipeline.clone(),
                    job: job.id.clone(),
                    first_attempt,
                    inputs,
                    cancel: cancel.clone(),
                    log: log.clone(),
                };
                let id = job.id.clone();
                let span = tracing::info_span!("job", id = %id);
                running.spawn(
                    async move {
                        let (status, artifacts) = task.run().await;
                        (id, status, artifacts)
                    }
                    .instrument(span),
                );
                states.insert(job.id.clone(), JobState::Running);
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            match done {
                Ok((job, status, artifacts)) => {
                    outputs.insert(job.clone(), artifacts);
                    states.insert(job, JobState::Done(status));
                }
                Err(error) => {
                    // A panicking job task is a bug; fail the run rather than hang it.
                    tracing::error!(%error, "job task panicked");
                    cancel.cancel();
                }
            }
        }

        let statuses: Vec<JobStatus> = states
            .values()
            .map(|s| match s {
                JobState::Done(s) => *s,
                _ => JobStatus::Failed,
            })
            .collect();
        let status = if cancel.is_cancelled() {
            RunStatus::Cancelled
        } else if statuses
            .iter()
            .any(|s| matches!(s, JobStatus::Failed | JobStatus::Cancelled))
        {
            RunStatus::Failed
        } else {
            RunStatus::Success
        };
        if status == RunStatus::Success && self.data.store.release_of_run(run.id).await?.is_none() {
            let mut artifacts: BTreeMap<String, ArtifactRef> = BTreeMap::new();
            for job in &pipeline.jobs {
                for artifact in outputs.remove(&job.id).unwrap_or_default() {
                    artifacts.entry(artifact.path.clone()).or_insert(artifact);
                }
            }
            self.create_release(&run, artifacts.into_values().collect())
                .await?;
        }
        self.events()
            .append(Event::RunFinished {
                run_id: run.id,
                status,
            })
            .await?;
        self.runner.run_finished(run.id);
        Ok(status)
    }

    /// A job the log shows running when its run is resumed: the server died under it. Its running
    /// steps are recorded as interrupted; the job runs again when retries allow, else fails.
    async fn interrupted(
        &self,
        run: &RunView,
        job: &conveyor_spec::Job,
        view: &conveyor_store::JobView,
    ) -> Result<JobState, EngineError> {
        let killed = self.runner.reap(run.id, &job.id, view.attempt);
        if killed > 0 {
            tracing::warn!(job = %job.id, killed, "killed processes left by the interrupted job");
        }
        for step in view
            .steps
            .iter()
            .filter(|s| s.attempt == view.attempt && s.status == StepStatus::Running)
        {
            self.events()
                .append(Event::StepFinished {
                    run_id: run.id,
                    job: job.id.clone(),
                    attempt: view.attempt,
                    step: step.index,
                    outcome: StepStatus::Interrupted,
                    exit_code: None,
                })
                .await?;
        }
        if view.attempt <= job.retries {
            tracing::warn!(job = %job.id, attempt = view.attempt, "job interrupted by a restart; retrying");
            return Ok(JobState::Pending {
                first_attempt: view.attempt + 1,
            });
        }
        self.events()
            .append(Event::JobFinished {
                run_id: run.id,
                job: job.id.clone(),
                attempt: view.attempt,
                status: JobStatus::Failed,
                reason: Some("interrupted: the server stopped while this job ran".into()),
                artifacts: vec![],
            })
            .await?;
        Ok(JobState::Done(JobStatus::Failed))
    }
}
