//! The events of the log. Each is one fact; read models are folded from them (projection.rs).
//! The status enums they carry are the API's (`conveyor-api`), re-exported here.

use serde::{Deserialize, Serialize};

pub use conveyor_api::{
    ArtifactRef, DeploymentStatus, InstanceRef, JobStatus, Role, RunStatus, StepStatus, UnknownStatus,
    UserKind, Verdict,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    ProjectAdded {
        project: String,
        /// Without credentials (those are kept apart, see `EventLog::set_source_credentials`).
        source_uri: String,
        poll_seconds: u64,
        /// Branch heads at registration: only commits after these start runs.
        heads: std::collections::BTreeMap<String, String>,
    },
    /// A secret's value changed; the value itself is never in the log.
    SecretSet {
        project: String,
        name: String,
    },
    /// The release signing key was replaced; `previous` is kept (retired) so that what it signed
    /// still verifies.
    SigningKeyRotated {
        key_id: String,
        previous: String,
    },
    /// Plaintext secret values left by a version that did not seal them were sealed under key
    /// `key_id` (once, when the store was first opened with a key).
    SecretsSealed {
        key_id: String,
        secrets: u64,
    },
    /// Every secret value was re-sealed under key `key_id`; `previous` are the keys they were
    /// sealed under before, retired.
    SecretsKeyRotated {
        key_id: String,
        previous: Vec<String>,
        secrets: u64,
    },
    /// A token for `user` (absent in logs from before users: the token's name is its user).
    /// Created again under the same name, it replaces the old one (rotation).
    TokenCreated {
        name: String,
        /// Hex SHA-256 of the token. Never shown by the events API.
        hash: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        /// RFC 3339; absent: never (the admin's bootstrap token).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    TokenRevoked {
        name: String,
        by: String,
    },
    UserAdded {
        user: String,
        kind: UserKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
        by: String,
    },
    /// The user is gone: their grants with them, their tokens revoked.
    UserRemoved {
        user: String,
        by: String,
    },
    /// `role` on every project (`project` absent), one project, or one of its environments;
    /// replaces the user's role on exactly that scope.
    RoleGranted {
        user: String,
        role: Role,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        environment: Option<String>,
        by: String,
    },
    RoleRevoked {
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        environment: Option<String>,
        by: String,
    },
    RunCreated {
        run_id: i64,
        project: String,
        source_uri: String,
        commit: String,
        /// The branch the commit was run as part of; empty for a manual run of a commit alone.
        branch: String,
        /// `push`, `manual`, `schedule` or `local`.
        event: String,
        /// The exact `conveyor.yml` text the run follows.
        pipeline: String,
        /// CAS digest of the source tree snapshot (a tar) every job starts from.
        source_digest: String,
        /// When the commit was made (RFC 3339), for lead time; absent when unknown.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        committed_at: Option<String>,
        /// The pipeline's job ids, in file order.
        jobs: Vec<String>,
    },
    JobStarted {
        run_id: i64,
        job: String,
        attempt: u32,
    },
    StepStarted {
        run_id: i64,
        job: String,
        attempt: u32,
        step: u32,
        name: String,
    },
    StepFinished {
        run_id: i64,
        job: String,
        attempt: u32,
        step: u32,
        outcome: StepStatus,
        exit_code: Option<i32>,
    },
    JobFinished {
        run_id: i64,
        job: String,
        attempt: u32,
        status: JobStatus,
        reason: Option<String>,
        artifacts: Vec<ArtifactRef>,
    },
    JobSkipped {
        run_id: i64,
        job: String,
        reason: String,
    },
    RunCancelRequested {
        run_id: i64,
        reason: String,
    },
    RunFinished {
        run_id: i64,
        status: RunStatus,
    },
    /// The server's rules for a project environment changed (None: it has none any more).
    EnvironmentProtected {
        project: String,
        environment: String,
        protection: Option<conveyor_api::EnvironmentProtection>,
        by: String,
    },
    /// A release is to go into an environment (by `promote`, `rollback` or continuous deployment).
    DeploymentRequested {
        deployment_id: i64,
        project: String,
        environment: String,
        release_id: i64,
        /// Who asked (a user, or `auto`).
        requested_by: String,
        /// Who asked, again (the one author logs from before `authors` knew).
        author: String,
        /// Who wrote the change's commits (users, or emails no user has) and who asked:
        /// not-author approval excludes them all.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        authors: Vec<String>,
        /// Set when this deployment rolls back to an earlier release.
        rollback_of: Option<i64>,
        /// The plan, one line per phase.
        phases: Vec<String>,
    },
    /// The deployment waits: approvals missing, or a freeze window.
    DeploymentGated {
        deployment_id: i64,
        gates: Vec<String>,
    },
    DeploymentApproved {
        deployment_id: i64,
        by: String,
    },
    /// The deployment entered phase `index` of its plan; `traffic` is the new version's share now.
    DeploymentPhase {
        deployment_id: i64,
        index: u32,
        phase: String,
        traffic: u32,
    },
    /// Where a version's instances run, so a restarted server can find them again.
    DeploymentInstances {
        deployment_id: i64,
        version: String,
        instances: Vec<InstanceRef>,
    },
    DeploymentPaused {
        deployment_id: i64,
        by: String,
    },
    DeploymentResumed {
        deployment_id: i64,
        by: String,
        /// `promote --full`: skip the remaining steps.
        full: bool,
    },
    DeploymentFinished {
        deployment_id: i64,
        status: DeploymentStatus,
        reason: Option<String>,
    },
    /// Deployment `deployment_id` caused a failure that deployment `fixed_by` repairs (a fix
    /// forward): DORA counts it as a change failure.
    DeploymentFixedForward {
        deployment_id: i64,
        fixed_by: i64,
        by: String,
    },
    /// Canary analysis judged one metric: at the end of a step, or as soon as it failed.
    DeploymentJudged {
        deployment_id: i64,
        metric: String,
        verdict: Verdict,
        /// The new version's share of traffic when judged, in percent.
        traffic: u32,
        /// One line a person reads first.
        summary: String,
        /// What was measured: the filled-in query, the values per version, the statistic, the
        /// threshold.
        evidence: serde_json::Value,
    },
    /// A project environment's feature flags changed: the whole new definition (flagd JSON)
    /// and, for people, what changed.
    FlagsChanged {
        project: String,
        environment: String,
        /// Token name, or `schedule <id>` for a scheduled change.
        by: String,
        definition: serde_json::Value,
        /// One line per change, e.g. `flag 'x': state ENABLED → DISABLED`.
        changes: Vec<String>,
        /// Flags added or changed.
        touched: Vec<String>,
        removed: Vec<String>,
    },
    /// An evaluation API key for one project environment; only its SHA-256 is kept.
    FlagKeyCreated {
        project: String,
        environment: String,
        name: String,
        hash: String,
        by: String,
    },
    /// A change to one flag, to be applied at `due_at` (RFC 3339).
    FlagChangeScheduled {
        schedule_id: i64,
        project: String,
        environment: String,
        flag: String,
        due_at: String,
        /// The change (`conveyor_flags::FlagPatch` as JSON).
        patch: serde_json::Value,
        by: String,
    },
    /// A scheduled change was applied, failed (e.g. the flag was deleted) or cancelled.
    FlagScheduleFinished {
        schedule_id: i64,
        project: String,
        environment: String,
        /// `applied`, `failed` or `cancelled`.
        status: String,
        outcome: String,
    },
    ReleaseCreated {
        release_id: i64,
        run_id: i64,
        project: String,
        commit: String,
        branch: String,
        artifacts: Vec<ArtifactRef>,
        /// The DSSE envelope carrying the SLSA provenance statement, as JSON.
        envelope: serde_json::Value,
    },
}

impl Event {
    /// The event as the API shows it: token and key hashes left out (a hash of a weak token
    /// given by hand can be guessed offline).
    pub fn shown(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("events serialize");
        if matches!(self, Event::TokenCreated { .. } | Event::FlagKeyCreated { .. })
            && let Some(fields) = value.as_object_mut()
        {
            fields.remove("hash");
        }
        value
    }

    /// The `type` tag, stored in its own column for filtering.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ProjectAdded { .. } => "project_added",
            Event::SecretSet { .. } => "secret_set",
            Event::SecretsSealed { .. } => "secrets_sealed",
            Event::SecretsKeyRotated { .. } => "secrets_key_rotated",
            Event::SigningKeyRotated { .. } => "signing_key_rotated",
            Event::TokenCreated { .. } => "token_created",
            Event::TokenRevoked { .. } => "token_revoked",
            Event::UserAdded { .. } => "user_added",
            Event::UserRemoved { .. } => "user_removed",
            Event::RoleGranted { .. } => "role_granted",
            Event::RoleRevoked { .. } => "role_revoked",
            Event::RunCreated { .. } => "run_created",
            Event::JobStarted { .. } => "job_started",
            Event::StepStarted { .. } => "step_started",
            Event::StepFinished { .. } => "step_finished",
            Event::JobFinished { .. } => "job_finished",
            Event::JobSkipped { .. } => "job_skipped",
            Event::RunCancelRequested { .. } => "run_cancel_requested",
            Event::RunFinished { .. } => "run_finished",
            Event::ReleaseCreated { .. } => "release_created",
            Event::EnvironmentProtected { .. } => "environment_protected",
            Event::DeploymentRequested { .. } => "deployment_requested",
            Event::DeploymentGated { .. } => "deployment_gated",
            Event::DeploymentApproved { .. } => "deployment_approved",
            Event::DeploymentPhase { .. } => "deployment_phase",
            Event::DeploymentInstances { .. } => "deployment_instances",
            Event::DeploymentPaused { .. } => "deployment_paused",
            Event::DeploymentResumed { .. } => "deployment_resumed",
            Event::DeploymentFinished { .. } => "deployment_finished",
            Event::DeploymentJudged { .. } => "deployment_judged",
            Event::DeploymentFixedForward { .. } => "deployment_fixed_forward",
            Event::FlagsChanged { .. } => "flags_changed",
            Event::FlagKeyCreated { .. } => "flag_key_created",
            Event::FlagChangeScheduled { .. } => "flag_change_scheduled",
            Event::FlagScheduleFinished { .. } => "flag_schedule_finished",
        }
    }
}
