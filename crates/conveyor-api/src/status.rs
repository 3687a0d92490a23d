//! Statuses, verdicts and roles: enums everywhere, text only at the edge (JSON, SQL) through one
//! `as_str`/`FromStr` pair each.

use serde::{Deserialize, Serialize};

/// A status text that names no variant of the enum it was parsed as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} '{text}'")]
pub struct UnknownStatus {
    pub kind: &'static str,
    pub text: String,
}

macro_rules! status_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownStatus;
            fn from_str(s: &str) -> Result<Self, UnknownStatus> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownStatus { kind: stringify!($name), text: other.to_string() }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_enum!(
    /// How a step ended. `Interrupted`: the server died while it ran.
    StepStatus {
        Running => "running",
        Success => "success",
        Failed => "failed",
        TimedOut => "timed_out",
        Cancelled => "cancelled",
        Interrupted => "interrupted",
    }
);

status_enum!(JobStatus {
    Pending => "pending",
    Running => "running",
    Success => "success",
    Failed => "failed",
    Skipped => "skipped",
    Cancelled => "cancelled",
});

status_enum!(
    /// Where a deployment is. `Pending`: waiting on its gates.
    DeploymentStatus {
        Pending => "pending",
        Running => "running",
        Paused => "paused",
        Succeeded => "succeeded",
        Failed => "failed",
        Aborted => "aborted",
    }
);

status_enum!(
    /// What a canary analysis concluded about one metric. `Warning`: a non-critical metric
    /// failed, the rollout goes on; `Inconclusive`: not enough evidence either way.
    Verdict {
        Pass => "pass",
        Fail => "fail",
        Warning => "warning",
        Inconclusive => "inconclusive",
    }
);

status_enum!(RunStatus {
    Running => "running",
    Success => "success",
    Failed => "failed",
    Cancelled => "cancelled",
});

status_enum!(
    /// What a version does in its environment: `stable` serves, `canary` is being deployed,
    /// `baseline` is a fresh copy of stable beside the canary for its analysis, `warm` is the
    /// previous version kept for an instant rollback.
    VersionRole {
        Stable => "stable",
        Canary => "canary",
        Baseline => "baseline",
        Warm => "warm",
    }
);

status_enum!(
    /// What a user may do, each role including the ones before it: `viewer` reads, `deployer`
    /// also runs pipelines and ships (promote, approve, pause/resume/abort, rollback, flags),
    /// `maintainer` also manages the project (secrets, members, its automation tokens), `admin`
    /// everything (projects, users).
    Role {
        Viewer => "viewer",
        Deployer => "deployer",
        Maintainer => "maintainer",
        Admin => "admin",
    }
);

status_enum!(
    /// A user is a person (whose email maps commit authors to them) or automation (a CI job,
    /// a bot: tokens only).
    UserKind {
        Person => "person",
        Automation => "automation",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        for s in [StepStatus::Running, StepStatus::TimedOut, StepStatus::Interrupted] {
            assert_eq!(s.as_str().parse::<StepStatus>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!("warm".parse::<VersionRole>(), Ok(VersionRole::Warm));
        assert_eq!(
            "gone".parse::<RunStatus>().unwrap_err().to_string(),
            "unknown RunStatus 'gone'"
        );
    }
}
