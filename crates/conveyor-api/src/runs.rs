//! Projects, pipeline runs (jobs, steps, logs), releases, the audit trail and events.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::status::{JobStatus, RunStatus, StepStatus};

// === read models ===

/// An artifact produced by a job, as stored in the content-addressed store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactRef {
    /// Path relative to the job's workspace, `/`-separated.
    pub path: String,
    /// Hex SHA-256.
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Project {
    pub name: String,
    pub source_uri: String,
    pub poll_seconds: u64,
    /// Branch heads when the project was registered.
    pub heads: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    pub id: i64,
    pub project: String,
    pub source_uri: String,
    pub commit: String,
    /// Empty for a manual run of a commit alone.
    pub branch: String,
    /// What started it: `push`, `manual`, `schedule` or `local`.
    pub event: String,
    pub status: RunStatus,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When the commit was made, if known.
    pub committed_at: Option<DateTime<Utc>>,
    /// The `conveyor.yml` text the run follows (not sent).
    #[serde(skip)]
    pub pipeline: String,
    /// CAS digest of the source snapshot (not sent).
    #[serde(skip)]
    pub source_digest: String,
    /// Left out of lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub job: String,
    pub status: JobStatus,
    pub attempt: u32,
    pub reason: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub steps: Vec<StepView>,
    pub artifacts: Vec<ArtifactRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepView {
    pub attempt: u32,
    pub index: u32,
    pub name: String,
    pub status: StepStatus,
    pub exit_code: Option<i32>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Release {
    pub id: i64,
    pub run_id: i64,
    pub project: String,
    pub commit: String,
    pub branch: String,
    pub artifacts: Vec<ArtifactRef>,
    /// The DSSE envelope carrying the SLSA v1 provenance statement.
    pub envelope: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// One line of a run's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    /// RFC 3339 time the line was read.
    pub t: String,
    pub job: String,
    pub attempt: u32,
    pub step: u32,
    /// `stdout`, `stderr` or `conveyor` (notices from Conveyor itself).
    pub stream: String,
    pub line: String,
}

// === requests ===

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddProject {
    pub name: String,
    /// Git URL or local path.
    pub source: String,
    /// How often to poll for new commits (1-86400, default 60).
    #[serde(default)]
    pub poll_seconds: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRun {
    /// Default: the repository's default branch, unless a commit is given: a commit alone is
    /// run as no branch (its provenance claims none).
    #[serde(default)]
    pub branch: Option<String>,
    /// Default: the branch's head. With a branch, it must be on it (an ancestor of its head).
    #[serde(default)]
    pub commit: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSecret {
    pub value: String,
}

/// `?project=&limit=` of run and release lists.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    pub project: Option<String>,
    /// 1-1000 (values outside are clamped), default 50.
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Byte offset to read from: the `next` of an earlier page.
    #[serde(default)]
    pub after: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Events with a sequence number above this one.
    #[serde(default)]
    pub after: i64,
    /// 1-1000 (values outside are clamped), default 100.
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventStreamQuery {
    /// Replay the events after this sequence number first (default: only new ones).
    pub after: Option<i64>,
}

// === responses ===

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectList {
    pub projects: Vec<Project>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunStarted {
    pub run_id: i64,
    pub commit: String,
    /// Empty for a run of a commit alone.
    pub branch: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunView>,
}

/// A run with its jobs, and the release it produced.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunView,
    pub release_id: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunCancelled {
    pub run_id: i64,
    /// False when the run had no job running to stop.
    pub cancelling: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// The offset to ask for next.
    pub next: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReleaseList {
    pub releases: Vec<Release>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SigningKey {
    pub key_id: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// Hex.
    pub public_key: String,
    /// Keys rotations retired (hex): what they signed still verifies.
    #[serde(default)]
    pub retired: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditReport {
    /// Events checked.
    pub events: u64,
    /// Signed checkpoints of the database checked.
    pub checkpoints: u64,
    /// Checkpoints of the exported file (`checkpoints.jsonl`) checked.
    pub exported: u64,
    pub intact: bool,
    pub problems: Vec<String>,
}

/// A lease (`GET /api/v1/leases`): which server drives a run (`run:ID`) or does a singleton's
/// work (`singleton:poller`, `singleton:cron`, `singleton:flag-schedules`), until when.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseView {
    pub name: String,
    /// The server: `host/pid/nonce`.
    pub holder: String,
    pub expires_at: DateTime<Utc>,
    /// Whether it is still held; an expired lease is free for another server to take.
    pub live: bool,
}

/// One event of the log: `event` is tagged by its `type` (`run_created`, `deployment_phase`, …).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventRecord {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub event: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Validation {
    pub valid: bool,
    /// `file:line:col: message`, one per problem.
    pub errors: Vec<String>,
}

/// The last event of a run's log stream (`event: end`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StreamEnd {
    pub status: RunStatus,
}
