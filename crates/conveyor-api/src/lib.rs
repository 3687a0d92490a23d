//! `conveyor-api` owns the shape of the HTTP API under `/api/v1`: every request body, query and
//! response (the read models the store returns included), the `{code, message}` error body, and
//! the status and role enums with their one `as_str`/`FromStr` pair. Types only, with their
//! OpenAPI schemas (utoipa): no I/O here, and no dependency on the store, engine or server.

pub mod access;
pub mod delivery;
pub mod dora;
pub mod error;
pub mod flags;
mod health;
mod human;
pub mod runs;
pub mod status;

pub use access::*;
pub use delivery::*;
pub use error::{ErrorBody, ErrorDetails};
pub use flags::*;
pub use health::Readiness;
pub use human::human_duration;
pub use runs::*;
pub use status::{
    DeploymentStatus, JobStatus, Role, RunStatus, StepStatus, UnknownStatus, UserKind, Verdict, VersionRole,
};
