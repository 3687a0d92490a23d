//! The job runner seam: one attempt of one job, run somewhere. The engine resolves everything
//! first (each step's script and environment, secrets filled in), then hands the attempt over:
//! the source snapshot's digest and the upstream artifacts go in; step events and output lines
//! come back through an `AttemptReport` as they happen, and the job's artifacts as digests in
//! the CAS at the end. `LocalRunner`, the embedded default, runs the attempt in a fresh workspace
//! on this machine through the executor; a remote build agent goes beside it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor_exec::{BoxFuture, CancellationToken, Executor, LineSink, StepOutcome, StepSpec};
use conveyor_store::{ArtifactRef, Cas, JobStatus, StepStatus};

use crate::workspace;

/// One attempt of one job, resolved by the server.
#[derive(Debug, Clone)]
pub struct AttemptSpec {
    pub run_id: i64,
    pub job: String,
    pub attempt: u32,
    /// The source tree, one tar in the CAS.
    pub source_digest: String,
    /// The artifacts of the jobs it needs, placed in its workspace at their paths.
    pub inputs: Vec<ArtifactRef>,
    pub steps: Vec<PreparedStep>,
    /// The job's own limit, across its steps.
    pub timeout: Option<Duration>,
    /// Glob patterns of the files it produces, collected into the CAS when every step passed.
    pub artifacts: Vec<String>,
}

/// A step ready to run: nothing left to resolve but `CONVEYOR_WORKSPACE`, which the runner adds.
#[derive(Debug, Clone)]
pub struct PreparedStep {
    pub name: String,
    pub script: String,
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    pub continue_on_error: bool,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub status: JobStatus,
    /// Why it did not succeed, as a sentence.
    pub reason: Option<String>,
    pub artifacts: Vec<ArtifactRef>,
}

impl AttemptOutcome {
    pub fn failed(reason: impl std::fmt::Display) -> Self {
        AttemptOutcome {
            status: JobStatus::Failed,
            reason: Some(reason.to_string()),
            artifacts: Vec::new(),
        }
    }

    fn cancelled() -> Self {
        AttemptOutcome {
            status: JobStatus::Cancelled,
            reason: Some("the run was cancelled".into()),
            artifacts: Vec::new(),
        }
    }
}

/// Where an attempt's progress goes as it happens. Implementations must not block: a step
/// never waits for the database.
pub trait AttemptReport: Send + Sync {
    fn step_started(&self, step: u32, name: &str);
    fn step_finished(&self, step: u32, status: StepStatus, exit_code: Option<i32>);
    /// Receives step `step`'s output, a line at a time (masked and capped by the report).
    fn output(&self, step: u32) -> LineSink;
    /// A line from Conveyor itself about step `step`: why it failed, that the job goes on.
    fn notice(&self, step: u32, text: String);
}

/// Runs job attempts. `run_attempt` returns once the attempt ended (or `cancel` fired and its
/// processes are gone); everything it reported was reported before it returns.
pub trait JobRunner: Send + Sync {
    fn run_attempt<'a>(
        &'a self,
        spec: AttemptSpec,
        report: &'a dyn AttemptReport,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, AttemptOutcome>;

    /// Kills whatever an attempt left running when a previous server process died under it;
    /// returns how many processes it killed.
    fn reap(&self, run_id: i64, job: &str, attempt: u32) -> usize;

    /// Drops what the run's attempts left behind (workspaces) once the run has ended.
    fn run_finished(&self, run_id: i64);
}

// === impl LocalRunner ===

/// Runs attempts on this machine: a fresh workspace under `work`, steps through `executor`,
/// artifacts into `cas`.
pub struct LocalRunner {
    work: PathBuf,
    cas: Cas,
    executor: Arc<dyn Executor>,
}

impl LocalRunner {
    pub fn new(work: PathBuf, cas: Cas, executor: Arc<dyn Executor>) -> Self {
        LocalRunner { work, cas, executor }
    }

    fn run_dir(&self, run_id: i64) -> PathBuf {
        self.work.join(format!("run-{run_id}"))
    }

    /// Where one attempt of one job runs (its steps get it as `CONVEYOR_WORKSPACE`).
    fn workspace(&self, run_id: i64, job: &str, attempt: u32) -> PathBuf {
        self.run_dir(run_id).join(format!("{job}-{attempt}"))
    }

    fn marker(workspace: &std::path::Path) -> String {
        format!("CONVEYOR_WORKSPACE={}", workspace.display())
    }

    async fn attempt(
        &self,
        spec: AttemptSpec,
        report: &dyn AttemptReport,
        cancel: CancellationToken,
    ) -> AttemptOutcome {
        let dir = self.workspace(spec.run_id, &spec.job, spec.attempt);
        let outcome = self.attempt_in(&dir, spec, report, cancel).await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        outcome.unwrap_or_else(AttemptOutcome::failed)
    }

    async fn attempt_in(
        &self,
        dir: &std::path::Path,
        spec: AttemptSpec,
        report: &dyn AttemptReport,
        cancel: CancellationToken,
    ) -> Result<AttemptOutcome, RunnerError> {
        {
            let (cas, dir, digest, inputs) = (
                self.cas.clone(),
                dir.to_path_buf(),
                spec.source_digest,
                spec.inputs,
            );
            tokio::task::spawn_blocking(move || workspace::prepare(&cas, &dir, &digest, &inputs)).await??;
        }
        let deadline = spec.timeout.map(|t| (Instant::now() + t, t));
        for (index, step) in spec.steps.into_iter().enumerate() {
            let index = index as u32;
            let remaining = deadline.map(|(at, _)| at.saturating_duration_since(Instant::now()));
            let timeout = match (step.timeout, remaining) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let job_timed_out_first = remaining.is_some_and(|r| step.timeout.is_none_or(|s| r < s));
            let mut env = step.env;
            env.insert("CONVEYOR_WORKSPACE".into(), dir.display().to_string());
            let step_spec = StepSpec {
                script: step.script,
                env: env.into_iter().collect(),
                workdir: dir.to_path_buf(),
                timeout,
            };
            report.step_started(index, &step.name);
            let outcome = self
                .executor
                .run_step(step_spec, report.output(index), cancel.clone())
                .await;
            let (outcome, start_error) = match outcome {
                Ok(outcome) => (outcome, None),
                Err(e) => (
                    StepOutcome::Failed { exit_code: None },
                    Some(format!("cannot start step '{}': {e}", step.name)),
                ),
            };
            let (status, exit_code, problem) = match outcome {
                StepOutcome::Succeeded => (StepStatus::Success, Some(0), None),
                StepOutcome::Failed { exit_code } => (
                    StepStatus::Failed,
                    exit_code,
                    outcome.failure(&format!("step '{}'", step.name)),
                ),
                StepOutcome::TimedOut => (
                    StepStatus::TimedOut,
                    None,
                    Some(match (job_timed_out_first, deadline) {
                        (true, Some((_, t))) => {
                            format!("job timed out after {}", conveyor_api::human_duration(t))
                        }
                        _ => format!(
                            "step '{}' timed out after {}",
                            step.name,
                            conveyor_api::human_duration(timeout.unwrap_or_default())
                        ),
                    }),
                ),
                StepOutcome::Cancelled => (StepStatus::Cancelled, None, Some("the run was cancelled".into())),
            };
            let problem = start_error.or(problem);
            if let Some(problem) = &problem {
                report.notice(index, problem.clone());
            }
            let ends_job = match (status, &problem) {
                (StepStatus::Cancelled, _) => Some(AttemptOutcome::cancelled()),
                (_, Some(_))
                    if step.continue_on_error && !(status == StepStatus::TimedOut && job_timed_out_first) =>
                {
                    report.notice(
                        index,
                        format!("continuing: step '{}' has continue_on_error", step.name),
                    );
                    None
                }
                (_, Some(reason)) => Some(AttemptOutcome::failed(reason)),
                (_, None) => None,
            };
            report.step_finished(index, status, exit_code);
            if let Some(end) = ends_job {
                return Ok(end);
            }
        }
        let (patterns, root) = (spec.artifacts, dir.to_path_buf());
        let found =
            tokio::task::spawn_blocking(move || workspace::find_artifacts(&root, &patterns)).await??;
        let artifacts = workspace::store_artifacts(&self.cas, found).await?;
        Ok(AttemptOutcome {
            status: JobStatus::Success,
            reason: None,
            artifacts,
        })
    }
}

impl JobRunner for LocalRunner {
    fn run_attempt<'a>(
        &'a self,
        spec: AttemptSpec,
        report: &'a dyn AttemptReport,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, AttemptOutcome> {
        Box::pin(self.attempt(spec, report, cancel))
    }

    fn reap(&self, run_id: i64, job: &str, attempt: u32) -> usize {
        let workspace = self.workspace(run_id, job, attempt);
        self.executor.kill_leftovers(&Self::marker(&workspace))
    }

    fn run_finished(&self, run_id: i64) {
        let _ = std::fs::remove_dir_all(self.run_dir(run_id));
    }
}

/// Why a local attempt could not run at all.
#[derive(Debug, thiserror::Error)]
enum RunnerError {
    #[error(transparent)]
    Workspace(#[from] workspace::WorkspaceError),
    #[error("the workspace task panicked: {0}")]
    Panicked(#[from] tokio::task::JoinError),
}
