//! `conveyor-deploy` owns where releases run. The `Target` trait is the seam; `LocalTarget` (the
//! embedded default) runs each instance of a version as a supervised local process on its own
//! port: started with `$PORT`, health-checked, restarted with backoff when it dies, stopped
//! gracefully (signal, grace period, SIGKILL), its output kept in a capped log, what its
//! processes use read from `/proc` (`resources`). SSH, Docker and Kubernetes targets go beside it. `plan` turns a strategy into the phases of a deployment and
//! evaluates its gates (approvals, freeze windows), purely. Moving traffic is the router's job.

pub mod health;
mod local;
pub mod plan;
mod resources;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use local::{LocalTarget, LocalVersion};

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Where versions run. `LocalTarget` is the embedded default. Instances outlive the server
/// process (so traffic survives its restart); a target tags each with its version's
/// `VersionSpec::identity` and alone knows how to find, check and reap them afterwards.
pub trait Target: Send + Sync {
    /// Lays the version's files out (from `VersionSpec::files`, by digest), starts every instance
    /// and returns once all are healthy (or fails, leaving nothing running).
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

    /// Where this target keeps a slot's files on this machine, if it does: hooks and checks run
    /// there.
    fn local_dir(&self, slot: &str) -> Option<PathBuf>;
}

/// Where, in a version's local directory, each instance's output goes (`N.log`, instance N).
pub const INSTANCE_LOG_DIR: &str = ".conveyor-logs";

/// An instance as a deployment recorded it: where it listened, and the target's own name for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedInstance {
    pub addr: SocketAddr,
    pub id: Option<InstanceId>,
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

    /// What each instance uses now, one sample per instance in index order, for the canary
    /// analysis to compare versions by. Cheap enough to call every second.
    fn resources(&self) -> Vec<InstanceResources>;
}

/// One instance's resources at a moment, summed over its whole process tree (what its command
/// runs and every process that forks). Memory and descriptors are gauges; CPU time is a counter
/// that starts again from zero when the instance is restarted, which `restarts` tells.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InstanceResources {
    pub index: u32,
    /// The instance sampled; `None` while it is not running (between restarts).
    pub id: Option<InstanceId>,
    /// Live processes in its tree; 0 when it was not running at the sample, and then every
    /// figure below but `restarts` is 0 too.
    pub processes: u32,
    /// Resident memory, summed over the processes.
    pub rss_bytes: u64,
    /// User and system CPU time, including the descendants that already exited and were waited
    /// for inside the tree.
    pub cpu_seconds: f64,
    pub open_fds: u64,
    /// Times the instance was restarted so far (as in `InstanceStatus`).
    pub restarts: u32,
}

/// Where a target reads a release's files from: the CAS, by digest.
pub trait Blobs: Send + Sync {
    /// A readable local file holding blob `digest`, if the store has it.
    fn path(&self, digest: &str) -> Option<PathBuf>;
}

/// One file of a release: where it goes, relative to the version's directory, and its blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseFile {
    pub path: String,
    pub digest: String,
}

/// One version of a release to run in one environment.
#[derive(Debug, Clone)]
pub struct VersionSpec {
    /// What identifies the version (the release id, e.g. `r12`).
    pub version: String,
    /// Tells this version's instances apart from every other process, across restarts of the
    /// server and among several servers on one machine (e.g. `<data dir>/shop/prod/r12`).
    pub identity: String,
    /// Names this laying-out of the release, unique per deployment (a relative path such as
    /// `shop/prod/r12-d7`); a target keeps the files there, and instances start there.
    pub slot: String,
    /// The release's files, by digest: the target lays them out itself.
    pub files: Vec<ReleaseFile>,
    /// `release.run`; it gets `$PORT`.
    pub command: String,
    /// The instances' whole environment, `PORT` excepted.
    pub env: Vec<(String, String)>,
    pub instances: u32,
    pub health: conveyor_spec::delivery::Health,
    pub stop_signal: conveyor_spec::delivery::StopSignal,
    pub stop_grace: std::time::Duration,
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
    #[error("release file {path} ({digest}) is missing from the store")]
    MissingFile { path: String, digest: String },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// The state of one instance, for status displays and the controller: the API's own type.
pub use conveyor_api::{InstanceId, InstanceStatus};
