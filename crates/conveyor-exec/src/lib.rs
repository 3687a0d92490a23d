//! `conveyor-exec` runs one step's script somewhere and reports its output line by line and its
//! outcome. The `Executor` trait is the seam: the local process executor is the embedded default;
//! SSH, Docker, Kubernetes and remote agents go beside it. Executors know nothing of pipelines,
//! logs or secrets: masking and capping happen in the caller's sink. `sandbox` isolates what the
//! local executor (and the local deploy target) start from the server itself.

mod lines;
mod local;
pub mod process;
pub mod sandbox;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

pub use local::LocalExecutor;
pub use tokio_util::sync::CancellationToken;

/// What to run for one step.
#[derive(Debug, Clone)]
pub struct StepSpec {
    /// Shell script, run by `sh -e` (given in the environment, never in argv).
    pub script: String,
    /// The complete environment of the step (nothing is inherited).
    pub env: Vec<(String, String)>,
    pub workdir: PathBuf,
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    Succeeded,
    /// Exited non-zero (`exit_code`) or was killed by a signal (`None`).
    Failed {
        exit_code: Option<i32>,
    },
    TimedOut,
    Cancelled,
}

impl StepOutcome {
    /// What went wrong, as a sentence about `what` (e.g. `step 'build'`); `None` on success.
    pub fn failure(self, what: &str) -> Option<String> {
        match self {
            StepOutcome::Succeeded => None,
            StepOutcome::Failed {
                exit_code: Some(code),
            } => Some(format!("{what} failed with exit code {code}")),
            StepOutcome::Failed { exit_code: None } => Some(format!("{what} was killed by a signal")),
            StepOutcome::TimedOut => Some(format!("{what} timed out")),
            StepOutcome::Cancelled => Some(format!("{what} was cancelled")),
        }
    }
}

/// Receives each output line as it is produced (without its trailing newline).
pub type LineSink = Box<dyn FnMut(Stream, String) + Send>;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs steps. Implementations must kill everything the step started when it times out or
/// `cancel` fires, and must keep draining output so a chatty step never blocks.
pub trait Executor: Send + Sync {
    fn run_step<'a>(
        &'a self,
        step: StepSpec,
        sink: LineSink,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, std::io::Result<StepOutcome>>;

    /// Kills whatever a previous Conveyor process left running for steps whose environment had
    /// `marker` (`NAME=VALUE`), e.g. after it was killed with SIGKILL. Returns how many it killed.
    fn kill_leftovers(&self, marker: &str) -> usize;
}
