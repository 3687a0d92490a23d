//! One job of a run: its attempts (retried as it allows), each resolved here and run by the
//! engine's `JobRunner`, its progress written to the log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use conveyor_exec::{CancellationToken, LineSink};
use conveyor_spec::expr::Vocabulary;
use conveyor_spec::{Job, Pipeline};
use conveyor_store::logs::RunLog;
use conveyor_store::{ArtifactRef, Event, JobStatus, RunView, StepStatus};

use crate::output::{Masker, StepLog};
use crate::runner::{AttemptOutcome, AttemptReport, AttemptSpec, PreparedStep};
use crate::{Engine, command};

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
                AttemptOutcome {
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
                    Err(e) => AttemptOutcome::failed(format!("cannot record the job start: {e}")),
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
                tracing::error!(%error, "cannot record the job's end");
            }
            if outcome.status != JobStatus::Failed || attempt >= last {
                return (outcome.status, outcome.artifacts);
            }
            tracing::info!(attempt, "job failed; retrying");
            attempt += 1;
        }
    }

    /// Resolves the attempt, hands it to the runner, and waits until everything it reported
    /// is in the log.
    async fn attempt(&self, job: &Job, attempt: u32) -> AttemptOutcome {
        let engine = &self.engine;
        let secrets: BTreeMap<String, String> = match engine.data.store.secrets(&self.run.project).await {
            Ok(secrets) => secrets.into_iter().collect(),
            Err(e) => return AttemptOutcome::failed(format!("cannot read secrets: {e}")),
        };
        let spec = match self.resolve(job, attempt, &secrets) {
            Ok(spec) => spec,
            Err(error) => return AttemptOutcome::failed(error),
        };
        let report = Report {
            events: StepEvents::start(engine.clone()),
            log: self.log.clone(),
            masker: Arc::new(Masker::new(secrets.values().map(String::as_str))),
            observers: engine.observers(),
            run_id: self.run.id,
            job: job.id.clone(),
            attempt,
            limit: engine.config.step_log_limit,
        };
        let outcome = engine
            .runner
            .run_attempt(spec, &report, self.cancel.clone())
            .await;
        match report.events.finish().await {
            Ok(()) => outcome,
            Err(error) => AttemptOutcome::failed(error),
        }
    }

    /// Every step's script and environment, `${{ }}` filled in: a missing secret fails the
    /// job before anything runs.
    fn resolve(
        &self,
        job: &Job,
        attempt: u32,
        secrets: &BTreeMap<String, String>,
    ) -> Result<AttemptSpec, command::TemplateError> {
        let vocabulary = Vocabulary {
            project: &self.run.project,
            branch: &self.run.branch,
            sha: &self.run.commit,
            run_id: self.run.id,
            event: &self.run.event,
            job: &job.id,
            secrets,
        };
        let env = command::environment(
            self.engine.base_env(),
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
            ],
            [&self.pipeline.env, &job.env],
            &vocabulary,
        )?;
        let mut steps = Vec::with_capacity(job.steps.len());
        for step in &job.steps {
            let mut step_env = env.clone();
            for (k, v) in &step.env {
                step_env.insert(k.clone(), command::fill(&vocabulary, v)?);
            }
            steps.push(PreparedStep {
                name: step.name.clone(),
                // Secrets filled in here stay out of `ps`: the executor hands the script to the
                // shell in its environment, never in argv.
                script: command::fill(&vocabulary, &step.run)?,
                env: step_env,
                timeout: step.timeout,
                continue_on_error: step.continue_on_error,
            });
        }
        Ok(AttemptSpec {
            run_id: self.run.id,
            job: job.id.clone(),
            attempt,
            source_digest: self.run.source_digest.clone(),
            inputs: self.inputs.clone(),
            steps,
            timeout: job.timeout,
            artifacts: job.artifacts.clone(),
        })
    }
}

/// An attempt's progress into the log: step events through the batching writer, output lines
/// masked and capped into the run's log file (and to observers).
struct Report {
    events: StepEvents,
    log: Arc<RunLog>,
    masker: Arc<Masker>,
    observers: Vec<Arc<dyn crate::Observer>>,
    run_id: i64,
    job: String,
    attempt: u32,
    limit: u64,
}

impl Report {
    fn step_log(&self, step: u32) -> StepLog {
        StepLog::new(
            self.log.clone(),
            self.masker.clone(),
            self.observers.clone(),
            self.job.clone(),
            self.attempt,
            step,
            self.limit,
        )
    }
}

impl AttemptReport for Report {
    fn step_started(&self, step: u32, name: &str) {
        self.events.push(Event::StepStarted {
            run_id: self.run_id,
            job: self.job.clone(),
            attempt: self.attempt,
            step,
            name: name.to_string(),
        });
    }

    fn step_finished(&self, step: u32, status: StepStatus, exit_code: Option<i32>) {
        self.events.push(Event::StepFinished {
            run_id: self.run_id,
            job: self.job.clone(),
            attempt: self.attempt,
            step,
            outcome: status,
            exit_code,
        });
    }

    fn output(&self, step: u32) -> LineSink {
        self.step_log(step).sink()
    }

    fn notice(&self, step: u32, text: String) {
        self.step_log(step).notice(text);
    }
}

/// Writes one job attempt's step events in the background, in order, batching whatever queued
/// up meanwhile into one transaction, so a step never waits for the database
/// (docs/benchmarks.md). A crash before a batch is written leaves the job `running` in the log,
/// which recovery treats as interrupted: conservative, never silent.
struct StepEvents {
    queue: tokio::sync::mpsc::UnboundedSender<Event>,
    writer: tokio::task::JoinHandle<Result<(), conveyor_store::StoreError>>,
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
                engine.events().append_all(batch).await?;
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
    async fn finish(self) -> Result<(), StepEventsError> {
        drop(self.queue);
        Ok(self.writer.await??)
    }
}

/// Why an attempt's step events did not all reach the log: the attempt fails with it.
#[derive(Debug, thiserror::Error)]
enum StepEventsError {
    #[error("cannot record event: {0}")]
    Store(#[from] conveyor_store::StoreError),
    #[error("the event writer panicked: {0}")]
    Panicked(#[from] tokio::task::JoinError),
}
