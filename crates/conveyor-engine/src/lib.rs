//! `conveyor-engine` drives pipeline runs. A run is a state machine over the event log: jobs start
//! when their `needs` are met (up to a parallelism limit), each in a fresh workspace holding the
//! run's source snapshot plus the artifacts of the jobs it needs; steps go through an `Executor`;
//! every transition is appended to the log before anything depends on it. A run whose jobs all
//! succeed becomes a signed release. After a crash, `recover` resumes every unfinished run from
//! the log.

mod checkpoint;
pub mod command;
mod data_dir;
mod job;
pub mod lease;
mod output;
mod release;
mod run;
pub mod runner;
pub mod source;
mod workspace;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use conveyor_exec::{CancellationToken, Executor};
use conveyor_store::logs::LogLine;
use conveyor_store::{Event, EventLog, Store};

use crate::runner::{JobRunner, LocalRunner};

pub use checkpoint::CheckpointPolicy;
pub use data_dir::DataDir;
pub use output::Masker;
pub use release::{verify_release, verify_stored};
pub use run::NewRun;

/// Default cap on what one step may write to its log.
pub const DEFAULT_STEP_LOG_LIMIT: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How many jobs run at once (default: the number of cores).
    pub parallelism: usize,
    /// Bytes of output kept per step; the rest is dropped with a notice.
    pub step_log_limit: u64,
    /// The environment every step starts from (PATH, HOME, …), read once at start-up by the binary.
    pub base_env: Vec<(String, String)>,
    /// SLSA `builder.id`.
    pub builder_id: String,
    /// How this server's local processes are isolated from it: the executor's sandbox (the
    /// binary builds both from one probe), the local deploy target's, and what `/readyz` says.
    pub sandbox: conveyor_exec::sandbox::Sandbox,
}

impl EngineConfig {
    pub fn new(base_env: Vec<(String, String)>) -> Self {
        EngineConfig {
            parallelism: std::thread::available_parallelism().map_or(2, |n| n.get()),
            step_log_limit: DEFAULT_STEP_LOG_LIMIT,
            base_env,
            builder_id: "https://conveyor.dev/builders/conveyor".into(),
            sandbox: conveyor_exec::sandbox::Sandbox::none("not configured"),
        }
    }
}

/// Watches the output of steps as it is written (the CLI prints it). Events are not lines:
/// they come from `EventLog::subscribe`.
pub trait Observer: Send + Sync {
    fn line(&self, line: &LogLine);
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] conveyor_store::StoreError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Fetching or reading the project's source failed.
    #[error(transparent)]
    Source(#[from] source::SourceError),
    /// A key is unreadable, cannot be created, or cannot be rotated now.
    #[error("keys: {0}")]
    Key(#[from] data_dir::KeyError),
    #[error("run {0} does not exist")]
    NoSuchRun(i64),
    #[error("{0}")]
    Pipeline(#[from] conveyor_spec::SpecErrors),
}

pub struct Engine {
    pub(crate) data: DataDir,
    pub(crate) config: EngineConfig,
    pub(crate) executor: Arc<dyn Executor>,
    /// Runs job attempts: `LocalRunner` on this machine by default.
    pub(crate) runner: Arc<dyn JobRunner>,
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    /// Runs in flight: their cancel token and concurrency group.
    pub(crate) active: Mutex<HashMap<i64, (CancellationToken, Option<String>)>>,
    pub(crate) groups: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub(crate) observers: Mutex<Vec<Arc<dyn Observer>>>,
    /// What this server holds among those sharing the database.
    pub(crate) leases: lease::Leases,
}

impl Engine {
    pub fn new(data: DataDir, config: EngineConfig, executor: Arc<dyn Executor>) -> Arc<Self> {
        Arc::new(Engine {
            slots: Arc::new(tokio::sync::Semaphore::new(config.parallelism.max(1))),
            runner: Arc::new(LocalRunner::new(
                data.work_dir(),
                data.cas.clone(),
                executor.clone(),
            )),
            data,
            config,
            executor,
            active: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            observers: Mutex::new(Vec::new()),
            leases: lease::Leases::new(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.data.store
    }

    /// The one way to write: every transition of a run, release or deployment is appended here.
    pub fn events(&self) -> &EventLog {
        self.data.store.log()
    }

    pub fn data(&self) -> &DataDir {
        &self.data
    }

    /// How steps, hooks and instances are isolated from the server.
    pub fn sandbox(&self) -> &conveyor_exec::sandbox::Sandbox {
        &self.config.sandbox
    }

    pub fn observe(&self, observer: Arc<dyn Observer>) {
        self.observers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(observer);
    }

    fn observers(&self) -> Vec<Arc<dyn Observer>> {
        self.observers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Asks a running run to stop: its steps are killed and its remaining jobs cancelled.
    pub async fn cancel(&self, run_id: i64, reason: &str) -> Result<bool, EngineError> {
        let token = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&run_id)
            .map(|active| active.0.clone());
        match token {
            Some(token) => {
                self.events()
                    .append(Event::RunCancelRequested {
                        run_id,
                        reason: reason.to_string(),
                    })
                    .await?;
                token.cancel();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Resumes every run the log shows unfinished that no other server drives (after a crash
    /// or restart): the leases of this server's predecessors are freed first. Steps that were
    /// running are recorded as interrupted; their jobs are retried when they allow it.
    pub async fn recover(self: &Arc<Self>) -> Result<Vec<tokio::task::JoinHandle<()>>, EngineError> {
        self.free_predecessors_leases().await?;
        Ok(self
            .data
            .store
            .unfinished_run_ids()
            .await?
            .into_iter()
            .map(|id| self.spawn_run(id))
            .collect())
    }

    /// Runs `run_id` to completion in the background, unless another server (or this one
    /// already) drives it: the run's lease decides.
    pub fn spawn_run(self: &Arc<Self>, run_id: i64) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            if !engine.claim_run(run_id).await {
                return;
            }
            if let Err(error) = engine.execute_run(run_id).await {
                tracing::error!(run = run_id, %error, "run failed to execute");
            }
            engine.release_run(run_id).await;
        })
    }
}
