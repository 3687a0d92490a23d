//! Environments, deployments, canary analysis, rollbacks and tokens.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::status::{DeploymentStatus, Verdict, VersionRole};

// === read models ===

/// How the target running an instance names it; opaque to everything but that target (the local
/// target's is the instance's process id, an SSH target's could be `host:pid`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, example = "48213")]
pub struct InstanceId(pub String);

/// Logs written before instance ids were opaque recorded a local pid as a number.
impl<'de> Deserialize<'de> for InstanceId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Pid(u64),
        }
        Ok(match Written::deserialize(deserializer)? {
            Written::Text(text) => InstanceId(text),
            Written::Pid(pid) => InstanceId(pid.to_string()),
        })
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One running instance of a deployed version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstanceRef {
    #[schema(value_type = String, example = "127.0.0.1:41234")]
    pub addr: SocketAddr,
    /// `pid` in logs written before ids were opaque.
    #[serde(alias = "pid")]
    pub id: Option<InstanceId>,
}

/// A deployment as the read model has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentView {
    pub id: i64,
    pub project: String,
    pub environment: String,
    pub release_id: i64,
    pub status: DeploymentStatus,
    pub requested_by: String,
    /// Who asked for it (the name of old: see `authors`).
    pub author: String,
    /// The people who wrote its commits (users, matched by email; an email no user has stays
    /// as it is) and whoever asked for it: none of them counts as a not-author approval.
    #[serde(default)]
    pub authors: Vec<String>,
    pub rollback_of: Option<i64>,
    /// The deployment that fixed this one forward (DORA: a change failure).
    pub fixed_by: Option<i64>,
    pub phases: Vec<String>,
    pub phase_index: Option<u32>,
    pub phase: Option<String>,
    /// The new version's share of traffic, in percent.
    pub traffic: u32,
    pub gates: Vec<String>,
    pub approvals: Vec<String>,
    /// Instances of each version this deployment started, by version.
    pub instances: BTreeMap<String, Vec<InstanceRef>>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One judgement of a canary analysis, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JudgementView {
    pub metric: String,
    pub verdict: Verdict,
    /// The new version's share of traffic when judged, in percent.
    pub traffic: u32,
    pub summary: String,
    /// The filled-in query or test, the values per version, the statistic, the threshold.
    pub evidence: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// An environment as it runs now: its router and the versions behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentStatus {
    pub project: String,
    pub environment: String,
    /// Where the environment's router listens.
    pub url: Option<String>,
    pub versions: Vec<VersionStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VersionStatus {
    pub version: String,
    pub release_id: i64,
    pub role: VersionRole,
    /// Share of the traffic, in percent.
    pub traffic: u32,
    pub instances: Vec<InstanceStatus>,
}

/// The state of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstanceStatus {
    pub index: u32,
    #[schema(value_type = String, example = "127.0.0.1:41234")]
    pub addr: SocketAddr,
    /// `None` while the instance is not running (between restarts).
    pub id: Option<InstanceId>,
    pub healthy: bool,
    pub restarts: u32,
}

// === requests ===

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    pub environment: String,
    /// A deployment of this environment that this one fixes forward (DORA: a change failure).
    #[serde(default)]
    pub fixes: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The release to go back to; default: the one before the current.
    #[serde(default)]
    pub to: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    /// Skip the remaining steps: all traffic to the new version.
    #[serde(default)]
    pub full: bool,
}

/// `?limit=` of histories.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// 1-1000 (values outside are clamped), default 50.
    pub limit: Option<i64>,
}

impl LimitQuery {
    /// The `limit` asked for, 50 by default, within 1..=1000.
    pub fn get(&self) -> i64 {
        self.limit.unwrap_or(50).clamp(1, 1000)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DoraQuery {
    pub project: Option<String>,
    /// Default `production`.
    pub environment: Option<String>,
    /// 1-3650, default 90.
    pub window_days: Option<u64>,
}

// === responses ===

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeploymentCreated {
    pub deployment_id: i64,
}

/// An environment's status and its newest deployment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentView {
    #[serde(flatten)]
    pub status: EnvironmentStatus,
    pub deployment: Option<DeploymentView>,
}

/// A flag change on an environment's timeline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FlagChangeEntry {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub by: String,
    pub changes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeploymentHistory {
    pub deployments: Vec<DeploymentView>,
    pub flag_changes: Vec<FlagChangeEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AnalysisReport {
    pub deployment_id: i64,
    pub status: DeploymentStatus,
    pub reason: Option<String>,
    pub judgements: Vec<JudgementView>,
    /// While the canary analysis runs: where each metric stands at the latest look.
    #[serde(default)]
    pub live: Vec<MetricStanding>,
}

/// Where one metric of a running canary analysis stands: not a judgement yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricStanding {
    pub metric: String,
    /// `passing` (shown within its margin), `failing`, `undecided` (the step waits for more
    /// evidence) or `too_few_samples`.
    pub standing: String,
    /// The interval, the margin, the decision rule and what a decision still needs.
    pub summary: String,
    pub evidence: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Approved {
    pub deployment_id: i64,
    pub approved_by: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Pausing {
    pub deployment_id: i64,
    pub pausing: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Resuming {
    pub deployment_id: i64,
    pub resuming: bool,
    pub full: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Aborting {
    pub deployment_id: i64,
    pub aborting: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_recorded_with_a_pid_before_ids_were_opaque_still_reads() {
        let old: InstanceRef = serde_json::from_str(r#"{"addr":"127.0.0.1:9001","pid":42}"#).unwrap();
        let new: InstanceRef = serde_json::from_str(r#"{"addr":"127.0.0.1:9001","id":"42"}"#).unwrap();
        assert_eq!(old, new);
        assert_eq!(old.id, Some(InstanceId("42".into())));
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"addr":"127.0.0.1:9001","id":"42"}"#
        );
        let gone: InstanceRef = serde_json::from_str(r#"{"addr":"127.0.0.1:9001","pid":null}"#).unwrap();
        assert_eq!(gone.id, None);
    }
}

/// The rules an environment of a project has on the server, whatever a release's `conveyor.yml`
/// says: a release may add stricter rules, never weaker ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentProtection {
    /// Approvals a deployment needs before it starts (0: none).
    #[serde(default)]
    pub required_approvals: u32,
    /// Who may approve (user names); empty: any deployer of the environment.
    #[serde(default)]
    pub reviewers: Vec<String>,
    /// Nobody who wrote the change, nor who asked for its deployment, may approve it.
    #[serde(default)]
    pub not_author: bool,
    /// Windows in which nothing is deployed.
    #[serde(default)]
    pub freeze: Vec<FreezeRule>,
    /// An environment a release must have succeeded in first.
    #[serde(default)]
    pub after: Option<String>,
}

/// A freeze window: from each `start` (cron) to the next `end` (cron), in `timezone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeRule {
    pub start: String,
    pub end: String,
    /// IANA name; default UTC.
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}
