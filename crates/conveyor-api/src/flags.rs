//! Feature flags as managed data: definitions, changes, history, stale reports, evaluation keys
//! and scheduled changes. (OFREP's evaluation bodies are the protocol's own, not these.)

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use conveyor_flags::{FlagPatch, FlagState};

// === read models ===

/// An evaluation key (only its SHA-256 is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FlagKeyRow {
    /// Hex SHA-256 of the key.
    pub hash: String,
    pub name: String,
    pub project: String,
    pub environment: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// A scheduled change of one flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlagScheduleView {
    pub id: i64,
    pub project: String,
    pub environment: String,
    pub flag: String,
    /// RFC 3339.
    pub due_at: String,
    /// The change (a flag patch).
    pub patch: serde_json::Value,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// `pending`, `applied`, `failed` or `cancelled`.
    pub status: String,
    pub outcome: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

// === requests ===

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StaleQuery {
    /// Flags unchanged or not evaluated for longer than this are reported too (default 30).
    pub idle_days: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    /// RFC 3339, e.g. `2030-01-31T09:00:00Z`.
    pub at: String,
    pub change: FlagPatch,
}

// === responses ===

/// A flag's kind and expected lifetime, from its metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlagLifecycle {
    /// `release`, `experiment`, `operational`, `kill-switch` or `permission`.
    pub kind: Option<String>,
    /// `null`: permanent.
    pub expected_lifetime_days: Option<u32>,
}

/// One flag as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlagSummary {
    pub key: String,
    pub state: FlagState,
    #[serde(rename = "defaultVariant")]
    pub default_variant: Option<String>,
    pub variants: Vec<String>,
    /// The variants' type: `boolean`, `string`, `number` or `object`.
    #[serde(rename = "type")]
    pub variant_type: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub lifecycle: Option<FlagLifecycle>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FlagList {
    pub project: String,
    pub environment: String,
    pub version: i64,
    /// Hex digest of the definition.
    pub etag: String,
    pub flags: Vec<FlagSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FlagDetail {
    #[serde(flatten)]
    pub flag: FlagSummary,
    /// The flag in flagd's format.
    pub definition: serde_json::Value,
    pub version: i64,
}

/// The outcome of a change: the definition's new version and what changed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FlagsChanged {
    pub version: i64,
    pub changes: Vec<String>,
}

/// One entry of an environment's flag history, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FlagHistoryEntry {
    FlagsChanged {
        seq: i64,
        at: DateTime<Utc>,
        project: String,
        environment: String,
        by: String,
        changes: Vec<String>,
        touched: Vec<String>,
        removed: Vec<String>,
    },
    FlagKeyCreated {
        seq: i64,
        at: DateTime<Utc>,
        project: String,
        environment: String,
        name: String,
        by: String,
    },
    FlagChangeScheduled {
        seq: i64,
        at: DateTime<Utc>,
        schedule_id: i64,
        project: String,
        environment: String,
        flag: String,
        due_at: String,
        patch: serde_json::Value,
        by: String,
    },
    FlagScheduleFinished {
        seq: i64,
        at: DateTime<Utc>,
        schedule_id: i64,
        project: String,
        environment: String,
        status: String,
        outcome: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FlagHistory {
    pub history: Vec<FlagHistoryEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StaleFlag {
    pub key: String,
    /// The lifecycle kind, if the metadata names one.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub expected_lifetime_days: Option<u32>,
    pub age_days: u32,
    pub idle_days: u32,
    pub last_evaluated: Option<DateTime<Utc>>,
    pub state: FlagState,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StaleReport {
    pub idle_days: u32,
    pub stale: Vec<StaleFlag>,
}

/// A new evaluation key, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyCreated {
    pub name: String,
    pub project: String,
    pub environment: String,
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FlagKeyList {
    pub keys: Vec<FlagKeyRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleCreated {
    pub schedule_id: i64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<FlagScheduleView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleCancelled {
    pub schedule_id: i64,
    pub cancelled: bool,
}
