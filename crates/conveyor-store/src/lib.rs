//! `conveyor-store` owns persistence. The append-only, hash-chained event log is the one source
//! of truth; the read models (projects, runs, jobs, steps, releases) are folded from it in the same
//! transaction and can be rebuilt from it at any time; signed checkpoints make a rewrite of it
//! evident, and secret values are sealed under keys the store is given. Beside the database: the
//! content-addressed artifact store and the step logs. SQLite (WAL) is the embedded default and
//! PostgreSQL the shared one, behind the `backend` boundary; the SQL everywhere else is portable.

mod access;
mod audit;
mod backend;
pub mod cas;
mod copy;
mod db;
mod event;
mod flags;
mod lease;
mod log;
pub mod logs;
mod projection;
mod query;
mod secrets;

pub use access::TokenOwner;
pub use audit::{Audit, AuditProblem};
pub use backend::{Database, UnknownDatabase};
pub use cas::Cas;
pub use copy::Copied;
pub use db::{IdKind, Store, StoreError};
pub use event::{
    ArtifactRef, DeploymentStatus, Event, InstanceRef, JobStatus, Role, RunStatus, StepStatus, UnknownStatus,
    UserKind, Verdict,
};
pub use flags::{FlagAge, FlagKeyRow, FlagScheduleView, FlagSetRow};
pub use lease::Lease;
pub use log::{EventLog, Subscription};
pub use query::{
    CurrentRelease, DeploymentOutcome, DeploymentView, JobView, JudgementView, Project, Release, RunFilter,
    RunView, StepView, StoredEvent,
};
pub use secrets::{KEY_LEN, Keyring, SecretError, SecretKey};

/// Now, as the RFC 3339 text every timestamp in the store uses (UTC, milliseconds).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
