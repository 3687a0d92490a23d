//! `conveyor-deploy` owns where releases run. The `Target` trait is the seam; `LocalTarget` (the
//! embedded default) runs each instance of a version as a supervised local process on its own
//! port: started with `$PORT`, health-checked, restarted with backoff when it dies, stopped
//! gracefully (signal, grace period, SIGKILL), its output kept in a capped log. SSH, Docker and
//! Kubernetes targets go beside it. `plan` turns a strategy into the phases of a deployment and
//! evaluates its gates (approvals, freeze windows), purely. Moving traffic is the router's job.

pub mod health;
mod local;
pub mod plan;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use local::{LocalTarget, LocalVersion};

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Where versions run. `LocalTarget` is the embedded default. Instances outlive the server
/// process (so traffic survives its restart); a target tags each with its version's
/// `VersionSpec::identity` and alone knows how to find, check and reap them afterwards.
pub trait Target: Send + Sync {
    /// Starts every instance of a version and returns once all are healthy (or fails, leaving
    /// nothing running).
    fn start<'a>(&'a self, spec: VersionSpec) -> BoxFuture<'a, Result<Box<dyn RunningVersion>, DeployError>>;

    /// Brings back a version that a previous server process started, from the instances it
    /// recorded: taken over as they are when every one is still alive and carries
    /// `spec.identity` (crashed ones are then restarted in place), otherwise whatever is left of
    /// them is stopped and the version starts afresh. `spec.dir` already holds the release's
    /// files. Returns once all instances are healthy.
    fn recover<'a>(
        &'a self,
        spec: VersionSpec,
        recorded: Vec<RecordedInstance>,
    ) -> BoxFuture<'a, Result<Box<dyn RunningVersion>, DeployError>>;

    /// Stops every instance tagged `identity` that a previous server process left running;
    /// returns how many it stopped.
    fn reap(&self, identity: &str) -> usize;
}

/// An instance as a deployment recorded it: where it listened, and the process it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedInstance {
    pub addr: SocketAddr,
    pub pid: Option<u32>,
}

/// A version's instances, running on a target.
pub trait RunningVersion: Send + Sync {
    fn version(&self) -> &str;
    fn status(&self) -> Vec<InstanceStatus>;
    /// The addresses the router should send this version's traffic to now.
    fn healthy_addrs(&self) -> Vec<SocketAddr>;
    /// Stops every instance gracefully and waits for them.
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()>;

    /// Adds instances up to `to`, returning once they are healthy (rolling deployments).
    fn grow<'a>(&'a mut self, to: u32) -> BoxFuture<'a, Result<(), DeployError>>;

    /// Removes the instances beyond `to` from the version at once and returns what stops them:
    /// the caller moves traffic off them in between.
    fn shrink(&mut self, to: u32) -> BoxFuture<'static, ()>;
}

/// Lays `files` (relative path, source file) out under `dir`, the versioned directory a release
/// runs from. Paths that are absolute or climb out with `..` are refused.
pub fn lay_out(dir: &std::path::Path, files: &[(String, PathBuf)]) -> Result<(), DeployError> {
    use std::path::Component;
    std::fs::create_dir_all(dir)?;
    for (relative, source) in files {
        let path = std::path::Path::new(relative);
        if !path.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(DeployError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("release file '{relative}' is not a plain relative path"),
            )));
        }
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(source, &target)?;
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    Ok(())
}

/// One version of a release to run in one environment.
#[derive(Debug, Clone)]
pub struct VersionSpec {
    /// What identifies the version (the release id, e.g. `r12`).
    pub version: String,
    /// Tells this version's instances apart from every other process, across restarts of the
    /// server and among several servers on one machine (e.g. `<data dir>/shop/prod/r12`).
    pub identity: String,
    /// The directory holding the release's files; instances start there.
    pub dir: PathBuf,
    /// `release.run`; it gets `$PORT`.
    pub command: String,
    /// The instances' whole environment, `PORT` excepted.
    pub env: Vec<(String, String)>,
    pub instances: u32,
    pub health: conveyor_spec::delivery::Health,
    pub stop_signal: conveyor_spec::delivery::StopSignal,
    pub stop_grace: std::time::Duration,
    /// Where each instance's output goes: `<log_dir>/<index>.log`.
    pub log_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("instance {index} of {version} did not become healthy within {seconds}s: {last}")]
    Unhealthy {
        version: String,
        index: u32,
        seconds: u64,
        last: String,
    },
    #[error("cannot start instance {index} of {version}: {error}")]
    Start {
        version: String,
        index: u32,
        error: std::io::Error,
    },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// The state of one instance, for status displays and the controller: the API's own type.
pub use conveyor_api::InstanceStatus;
