//! One job of a run: attempts, each in a fresh workspace, its steps in order through the executor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor_exec::{CancellationToken, StepOutcome, StepSpec};
use conveyor_spec::expr::Vocabulary;
use conveyor_spec::{Job, Pipeline};
use conveyor_store::logs::RunLog;
use conveyor_store::{ArtifactRef, Event, JobStatus, RunView, StepStatus};

use crate::output::{Masker, StepLog};
use crate::{Engine, command, workspace};

pub(crate) struct JobTask {
    pub engine: Arc<Engine>,
    pub run: Arc<RunView>,
    pub pipeline: Arc<Pipeline>,
    pub job: String,
    pub first_attempt: u32,
    pub inputs: Vec<ArtifactRef>,
    pub cancel: CancellationToken,
    pub log: Arc<RunLog>,
}

/// How one attempt ended.
struct Attempt {
    status: JobStatus,
    reason: Option<String>,
    artifacts: Vec<ArtifactRef>,
}

impl Attempt {
    fn failed(reason: String) -> Self {
        Attempt {
            status: JobStatus::Failed,
            reason: Some(reason),
            artifacts: vec![],
        }
    }
}

impl JobTask {
    /// Runs attempts until one succeeds, the run is cancelled, or retries are used up.
    pub async fn run(self) -> (JobStatus, Vec<ArtifactRef>) {
        let job = self
            .pipeline
            .job(&self.job)
            .expect("scheduled jobs exist in the pipeline")
            .clone();
        let _slot = tokio::select! {
            permit = self.engine.slots.clone().acquire_owned() => permit.ok(),
            () = self.cancel.cancelled() => None,
        };
        let last = job.retries + 1;
        let mut attempt = self.first_attempt.max(1);
        loop {
            let outcome = if self.cancel.is_cancelled() {
                Attempt {
                    status: JobStatus::Cancelled,
                    reason: Some("the run was cancelled".into()),
                    artifacts: vec![],
                }
            } else {
                match self
                    .engine
                    .events()
                    .append(Event::JobStarted {
                        run_id: self.run.id,
                        job: job.id.clone(),
                        attempt,
                    })
                    .await
                {
                    Ok(_) => self.attempt(&job, attempt).await,
                    Err(e) => Attempt::failed(format!("cannot record the job start: {e}")),
                }
            };
            let finished = Event::JobFinished {
                run_id: self.run.id,
                job: job.id.clone(),
                attempt,
                status: outcome.status,
                reason: outcome.reason.clone(),
                artifacts: outcome.artifacts.clone(),
            };
            if let Err(error) = self.engine.events().append(finished).await {
                tracing::error!(run = self.run.id, job = %job.id, %error, "cannot record the job's end");
            }
            if outcome.status != JobStatus::Failed || attempt >= last {
                return (outcome.status, outcome.artifacts);
            }
            tracing::info!(run = self.run.id, job = %job.id, attempt, "job failed; retrying");
            attempt += 1;
        }
    }

    async fn attempt(&self, job: &Job, attempt: u32) -> Attempt {
        let engine = &self.engine;
        let dir = engine.data.workspace(self.run.id, &job.id, attempt);
        let result = self.attempt_in(job, attempt, &dir).await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        result.unwrap_or_else(Attempt::failed)
    }

    async fn attempt_in(&self, job: &Job, attempt: u32, dir: &std::path::Path) -> Result<Attempt, String> {
        let engine = &self.engine;
        {
            let (cas, dir, digest, inputs) = (
                engine.data.cas.clone(),
                dir.to_path_buf(),
                self.run.source_digest.clone(),
                self.inputs.clone(),
            );
            tokio::task::spawn_blocking(move || workspace::prepare(&cas, &dir, &digest, &inputs))
                .await
                .map_err(|e| format!("workspace preparation panicked: {e}"))??;
        }
        let secrets: BTreeMap<String, String> = engine
            .data
            .store
            .secrets(&self.run.project)
            .await
            .map_err(|e| format!("cannot read secrets: {e}"))?
            .into_iter()
            .collect();
        let masker = Arc::new(Masker::new(secrets.values().map(String::as_str)));
        let vocabulary = Vocabulary {
            project: &self.run.project,
            branch: &self.run.branch,
            sha: &self.run.commit,
            run_id: self.run.id,
            event: &self.run.event,
            job: &job.id,
            secrets: &secrets,
        };
        let interpolate = |text: &str| command::fill(&vocabulary, text).map_err(|e| e.to_string());
        let env = command::environment(
            engine.base_env(),
            [
                ("CI", "true".to_string()),
                ("CONVEYOR", "true".to_string()),
                ("CONVEYOR_RUN_ID", self.run.id.to_string()),
                ("CONVEYOR_PROJECT", self.run.project.clone()),
                ("CONVEYOR_COMMIT_SHA", self.run.commit.clone()),
                ("CONVEYOR_BRANCH", self.run.branch.clone()),
                ("CONVEYOR_EVENT", self.run.event.clone()),
                ("CONVEYOR_JOB", job.id.clone()),
                ("CONVEYOR_ATTEMPT", attempt.to_string()),
                ("CONVEYOR_WORKSPACE", dir.display().to_string()),
            ],
            [&self.pipeline.env, &job.env],
            &vocabulary,
        )
        .map_err(|e| e.to_string())?;

        // Resolve every step first: a missing secret fails the job before anything runs.
        let mut prepared = Vec::with_capacity(job.steps.len());
        for step in &job.steps {
            let mut step_env = env.clone();
            for (k, v) in &step.env {
                step_env.insert(k.clone(), interpolate(v)?);
            }
            prepared.push((interpolate(&step.run)?, step_env));
        }

        let deadline = job.timeout.map(|t| (Instant::now() + t, t));
        let step_events = StepEvents::start(engine.clone());
        for (index, (step, (script, step_env))) in job.steps.iter().zip(prepared).enumerate() {
            let index = index as u32;
            let remaining = deadline.map(|(at, _)| at.saturating_duration_since(Instant::now()));
            let timeout = match (step.timeout, remaining) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let job_timed_out_first = remaining.is_some_and(|r| step.timeout.is_none_or(|s| r < s));
            let step_log = || {
                StepLog::new(
                    self.log.clone(),
                    masker.clone(),
                    engine.observers(),
                    job.id.clone(),
                    attempt,
                    index,
                    engine.config.step_log_limit,
                )
            };
            let spec = StepSpec {
                script,
                env: step_env.into_iter().collect(),
                workdir: dir.to_path_buf(),
                timeout,
            };
            step_events.push(Event::StepStarted {
                run_id: self.run.id,
                job: job.id.clone(),
                attempt,
                step: index,
                name: step.name.clone(),
            });
            let outcome = engine
                .executor
                .run_step(spec, step_log().sink(), self.cancel.clone())
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
                        (true, Some((_, t))) => format!("job timed out after {}", human(t)),
                        _ => format!(
                            "step '{}' timed out after {}",
                            step.name,
                            human(timeout.unwrap_or_default())
                        ),
                    }),
                ),
                StepOutcome::Cancelled => (StepStatus::Cancelled, None, Some("the run was cancelled".into())),
            };
            let problem = start_error.or(problem);
            if let Some(problem) = &problem {
                step_log().notice(problem.clone());
            }
            let finished = Event::StepFinished {
                run_id: self.run.id,
                job: job.id.clone(),
                attempt,
                step: index,
                outcome: status,
                exit_code,
            };
            let ends_job = match (status, &problem) {
                (StepStatus::Cancelled, reason) => Some(Attempt {
                    status: JobStatus::Cancelled,
                    reason: reason.clone(),
                    artifacts: vec![],
                }),
                (_, Some(_))
                    if step.continue_on_error && !(status == StepStatus::TimedOut && job_timed_out_first) =>
                {
                    step_log().notice(format!("continuing: step '{}' has continue_on_error", step.name));
                    None
                }
                (_, Some(reason)) => Some(Attempt::failed(reason.clone())),
                (_, None) => None,
            };
            step_events.push(finished);
            if let Some(end) = ends_job {
                step_events.finish().await?;
                return Ok(end);
            }
        }
        step_events.finish().await?;

        let patterns = job.artifacts.clone();
        let root = dir.to_path_buf();
        let found = tokio::task::spawn_blocking(move || workspace::find_artifacts(&root, &patterns))
            .await
            .map_err(|e| format!("artifact search panicked: {e}"))??;
        let artifacts = workspace::store_artifacts(&engine.data.cas, found).await?;
        Ok(Attempt {
            status: JobStatus::Success,
            reason: None,
            artifacts,
        })
    }
}

/// Writes one job attempt's step events in the background, in order, batching whatever queued
/// up meanwhile into one transaction, so a step never waits for the database
/// (docs/benchmarks.md). A crash before a batch is written leaves the job `running` in the log,
/// which recovery treats as interrupted: conservative, never silent.
struct StepEvents {
    queue: tokio::sync::mpsc::UnboundedSender<Event>,
    writer: tokio::task::JoinHandle<Result<(), String>>,
}

/// How long the writer gathers events before a transaction, and how many at most.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
const MAX_BATCH: usize = 256;

impl StepEvents {
    fn start(engine: Arc<Engine>) -> Self {
        let (queue, mut pending) = tokio::sync::mpsc::unbounded_channel();
        let writer = tokio::spawn(async move {
            while let Some(first) = pending.recv().await {
                // Gather for a moment: fewer, larger transactions cost the steps less CPU.
                let until = tokio::time::Instant::now() + BATCH_WINDOW;
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match tokio::time::timeout_at(until, pending.recv()).await {
                        Ok(Some(more)) => batch.push(more),
                        Ok(None) | Err(_) => break,
                    }
                }
                engine
                    .events()
                    .append_all(batch)
                    .await
                    .map_err(|e| format!("cannot record event: {e}"))?;
            }
            Ok(())
        });
        StepEvents { queue, writer }
    }

    fn push(&self, event: Event) {
        // A writer that stopped has failed; `finish` reports why.
        let _ = self.queue.send(event);
    }

    /// Waits until every pushed event is in the log.
    async fn finish(self) -> Result<(), String> {
        drop(self.queue);
        self.writer
            .await
            .map_err(|e| format!("the event writer panicked: {e}"))?
    }
}

/// `90s`, `10m`, `1h30m`, `500ms`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_durations() {
        use std::time::Duration;
        let cases = [
            (0, "0ms"),
            (500, "500ms"),
            (90_000, "1m30s"),
            (3_600_000, "1h"),
            (5_400_000, "1h30m"),
        ];
        for (ms, want) in cases {
            assert_eq!(super::human(Duration::from_millis(ms)), want);
        }
    }
}
