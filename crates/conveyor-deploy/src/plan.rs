//! Pure rollout planning: a strategy becomes the list of phases a deployment walks through, and
//! the gates in front of it are evaluated from data. No clock, no I/O: time is passed in.

use std::time::Duration;

use chrono::{DateTime, Utc};
use conveyor_spec::delivery::{Approval, CheckWhen, Environment, Pause, Strategy};

/// One phase of a deployment. The controller records each as an event as it enters it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Run the environment's `pre_deploy` hooks.
    PreDeployHooks,
    /// Stop every instance of the stable version (recreate only: there is downtime).
    StopStable,
    /// Start `instances` instances of the new version, next to the stable one.
    StartNew { instances: u32 },
    /// Stop instances of the stable version until `remaining` are left (rolling).
    ScaleStable { remaining: u32 },
    /// Run checks with `$URL` of the new version alone, before it has any traffic.
    ChecksBeforeTraffic,
    /// Send `percent` of the traffic to the new version.
    Shift { percent: u32 },
    /// Wait, then go on by itself.
    Wait(Duration),
    /// Wait for `conveyor promote` (or `resume`).
    AwaitPromotion,
    /// Run checks through the router, once the new version has all the traffic.
    ChecksAfterTraffic,
    /// Hold the new version, with all the traffic, to the environment's `verify` gate.
    Verify(Duration),
    /// Run the environment's `post_deploy` hooks.
    PostDeployHooks,
    /// The new version is stable; the old one stays warm for a rollback window, then stops.
    Complete,
}

/// The plan of a deployment. A rollback is always blue-green without hooks: it restores a
/// known-good version as fast as safely possible.
pub fn plan(env: &Environment, instances: u32, has_stable: bool, rollback: bool) -> Vec<Phase> {
    if rollback {
        let mut env = env.clone();
        env.strategy = Strategy::BlueGreen;
        env.pre_deploy.clear();
        env.post_deploy.clear();
        return phases(&env, instances, has_stable);
    }
    phases(env, instances, has_stable)
}

/// The phases of deploying a new version with `instances` instances into `env`; `has_stable`
/// says whether a version is already running there.
pub fn phases(env: &Environment, instances: u32, has_stable: bool) -> Vec<Phase> {
    let mut out = Vec::new();
    if !env.pre_deploy.is_empty() {
        out.push(Phase::PreDeployHooks);
    }
    let before = env.checks.iter().any(|c| c.when != CheckWhen::AfterTraffic);
    let after = env.checks.iter().any(|c| c.when != CheckWhen::BeforeTraffic);
    let first_deploy = !has_stable;
    match &env.strategy {
        // Nothing to protect on a first deploy: every strategy starts the version and moves on.
        _ if first_deploy => {
            out.push(Phase::StartNew { instances });
            if before {
                out.push(Phase::ChecksBeforeTraffic);
            }
            out.push(Phase::Shift { percent: 100 });
        }
        Strategy::Recreate => {
            out.push(Phase::StopStable);
            out.push(Phase::StartNew { instances });
            if before {
                out.push(Phase::ChecksBeforeTraffic);
            }
            out.push(Phase::Shift { percent: 100 });
        }
        Strategy::BlueGreen => {
            out.push(Phase::StartNew { instances });
            if before {
                out.push(Phase::ChecksBeforeTraffic);
            }
            out.push(Phase::Shift { percent: 100 });
        }
        Strategy::Rolling { max_surge } => {
            let surge = (*max_surge).max(1);
            let mut started = 0;
            while started < instances {
                let batch = surge.min(instances - started);
                started += batch;
                out.push(Phase::StartNew { instances: started });
                if started == batch && before {
                    out.push(Phase::ChecksBeforeTraffic);
                }
                // Traffic follows the instance count: k new of n instances take k/n of it.
                out.push(Phase::Shift {
                    percent: started * 100 / instances,
                });
                out.push(Phase::ScaleStable {
                    remaining: instances - started,
                });
            }
        }
        Strategy::Canary(canary) => {
            out.push(Phase::StartNew { instances });
            if before {
                out.push(Phase::ChecksBeforeTraffic);
            }
            for step in &canary.steps {
                out.push(Phase::Shift { percent: step.weight });
                if step.weight < 100 {
                    match step.pause {
                        Pause::For(d) if d.is_zero() => {}
                        Pause::For(d) => out.push(Phase::Wait(d)),
                        Pause::UntilPromoted => out.push(Phase::AwaitPromotion),
                    }
                }
            }
        }
    }
    if after {
        out.push(Phase::ChecksAfterTraffic);
    }
    // Only while the previous version still runs can a failed verify give it the traffic back.
    let keeps_previous = matches!(env.strategy, Strategy::BlueGreen | Strategy::Canary(_));
    if let Some(verify) = &env.verify
        && keeps_previous
        && !first_deploy
    {
        out.push(Phase::Verify(verify.duration));
    }
    if !env.post_deploy.is_empty() {
        out.push(Phase::PostDeployHooks);
    }
    out.push(Phase::Complete);
    out
}

/// How a phase reads in the deployment's history.
impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phase::PreDeployHooks => f.write_str("run the pre_deploy hooks"),
            Phase::StopStable => f.write_str("stop the stable version"),
            Phase::StartNew { instances } => write!(f, "start {instances} instance(s) of the new version"),
            Phase::ScaleStable { remaining } => {
                write!(f, "scale the stable version down to {remaining} instance(s)")
            }
            Phase::ChecksBeforeTraffic => f.write_str("check the new version before it gets traffic"),
            Phase::Shift { percent } => write!(f, "shift {percent}% of the traffic to the new version"),
            Phase::Wait(d) => write!(f, "wait {}s", d.as_secs()),
            Phase::AwaitPromotion => f.write_str("wait for promotion"),
            Phase::ChecksAfterTraffic => f.write_str("check the new version through the router"),
            Phase::Verify(d) => write!(f, "verify the new version for {}s", d.as_secs()),
            Phase::PostDeployHooks => f.write_str("run the post_deploy hooks"),
            Phase::Complete => f.write_str("make the new version stable"),
        }
    }
}

/// Why a deployment may not start yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Inside a freeze window until then.
    Frozen {
        until: DateTime<Utc>,
        reason: Option<String>,
    },
    /// More approvals needed.
    AwaitingApproval { have: u32, need: u32 },
}

/// How a gate reads in the deployment's history.
impl std::fmt::Display for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gate::AwaitingApproval { have, need } => write!(f, "waiting for approval ({have} of {need})"),
            Gate::Frozen { until, reason } => {
                write!(
                    f,
                    "frozen until {}",
                    until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )?;
                match reason {
                    Some(reason) => write!(f, " ({reason})"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Why someone may not approve a deployment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalRefused {
    #[error("{who} wrote or asked for this change and cannot approve its deployment (four-eyes rule)")]
    Author { who: String },
    #[error("{who} is not one of the reviewers: {}", reviewers.join(", "))]
    NotAReviewer { who: String, reviewers: Vec<String> },
    #[error("{who} has already approved this deployment")]
    AlreadyApproved { who: String },
}

/// Whether someone may approve a deployment, and if not why.
pub fn may_approve(
    approval: &Approval,
    who: &str,
    authors: &[String],
    already: &[String],
) -> Result<(), ApprovalRefused> {
    let who = who.to_string();
    if approval.not_author && authors.contains(&who) {
        return Err(ApprovalRefused::Author { who });
    }
    if !approval.reviewers.is_empty() && !approval.reviewers.contains(&who) {
        return Err(ApprovalRefused::NotAReviewer {
            who,
            reviewers: approval.reviewers.clone(),
        });
    }
    if already.contains(&who) {
        return Err(ApprovalRefused::AlreadyApproved { who });
    }
    Ok(())
}

/// The gates still closed for a deployment into `env` at `now`, given the approvals it has.
pub fn closed_gates(env: &Environment, approvals: u32, now: DateTime<Utc>) -> Vec<Gate> {
    let mut gates = Vec::new();
    if let Some(approval) = &env.approval
        && approvals < approval.required
    {
        gates.push(Gate::AwaitingApproval {
            have: approvals,
            need: approval.required,
        });
    }
    let frozen = env
        .freeze
        .iter()
        .filter_map(|w| w.frozen_until(now).map(|until| (until, w.reason.clone())))
        .max_by_key(|(until, _)| *until);
    if let Some((until, reason)) = frozen {
        gates.push(Gate::Frozen { until, reason });
    }
    gates
}

#[cfg(test)]
mod tests {
    use conveyor_spec::parse;

    use super::*;

    fn env(yaml: &str) -> Environment {
        let source = format!(
            "name: x\njobs:\n  b:\n    steps: [make]\nrelease: {{ run: ./app }}\nenvironments:\n  e:\n{yaml}"
        );
        let pipeline = parse("conveyor.yml", &source).unwrap_or_else(|e| panic!("{e}"));
        pipeline.environments.into_iter().next().unwrap()
    }

    use Phase::*;

    #[test]
    fn strategies_become_phases() {
        let s = Duration::from_secs;
        let cases: Vec<(&str, u32, bool, Vec<Phase>)> = vec![
            (
                "    strategy: recreate\n",
                2,
                true,
                vec![
                    StopStable,
                    StartNew { instances: 2 },
                    Shift { percent: 100 },
                    Complete,
                ],
            ),
            (
                "    strategy: blue-green\n    checks: [./smoke.sh]\n",
                2,
                true,
                vec![
                    StartNew { instances: 2 },
                    ChecksBeforeTraffic,
                    Shift { percent: 100 },
                    ChecksAfterTraffic,
                    Complete,
                ],
            ),
            (
                "    strategy: { rolling: { max_surge: 2 } }\n",
                3,
                true,
                vec![
                    StartNew { instances: 2 },
                    Shift { percent: 66 },
                    ScaleStable { remaining: 1 },
                    StartNew { instances: 3 },
                    Shift { percent: 100 },
                    ScaleStable { remaining: 0 },
                    Complete,
                ],
            ),
            (
                "    strategy: { canary: { steps: [10, { weight: 50, pause: manual }], interval: 30s } }\n    hooks: { pre_deploy: [./migrate.sh], post_deploy: [./notify.sh] }\n    checks: [{ run: ./smoke.sh, when: before_traffic }]\n",
                1,
                true,
                vec![
                    PreDeployHooks,
                    StartNew { instances: 1 },
                    ChecksBeforeTraffic,
                    Shift { percent: 10 },
                    Wait(s(30)),
                    Shift { percent: 50 },
                    AwaitPromotion,
                    Shift { percent: 100 },
                    PostDeployHooks,
                    Complete,
                ],
            ),
            (
                "    strategy: blue-green\n    checks: [./smoke.sh]\n    verify: { duration: 2m, error_budget: { target: 0.99 } }\n",
                2,
                true,
                vec![
                    StartNew { instances: 2 },
                    ChecksBeforeTraffic,
                    Shift { percent: 100 },
                    ChecksAfterTraffic,
                    Verify(s(120)),
                    Complete,
                ],
            ),
            (
                "    strategy: canary\n    verify: { error_budget: { target: 0.99 } }\n",
                1,
                false,
                vec![StartNew { instances: 1 }, Shift { percent: 100 }, Complete],
            ),
        ];
        for (yaml, instances, has_stable, want) in cases {
            assert_eq!(phases(&env(yaml), instances, has_stable), want, "{yaml}");
        }
    }

    #[test]
    fn gates_and_phases_read_as_sentences() {
        let until = "2026-11-23T08:00:00Z".parse().unwrap();
        let cases = [
            (
                Gate::AwaitingApproval { have: 1, need: 2 },
                "waiting for approval (1 of 2)",
            ),
            (
                Gate::Frozen { until, reason: None },
                "frozen until 2026-11-23T08:00:00Z",
            ),
            (
                Gate::Frozen {
                    until,
                    reason: Some("weekend".into()),
                },
                "frozen until 2026-11-23T08:00:00Z (weekend)",
            ),
        ];
        for (gate, want) in cases {
            assert_eq!(gate.to_string(), want);
        }
        assert_eq!(
            Phase::Shift { percent: 25 }.to_string(),
            "shift 25% of the traffic to the new version"
        );
        assert_eq!(Phase::Wait(Duration::from_secs(30)).to_string(), "wait 30s");
    }

    #[test]
    fn a_rollback_is_blue_green_without_hooks() {
        let canary = env(
            "    strategy: { canary: { steps: [50] } }\n    hooks: { pre_deploy: [./warm.sh], post_deploy: [./tell.sh] }\n",
        );
        let blue_green = plan(&env("    strategy: blue-green\n"), 2, true, false);
        assert_eq!(plan(&canary, 2, true, true), blue_green);
        assert_ne!(plan(&canary, 2, true, false), blue_green);
    }

    #[test]
    fn approval_rules() {
        let alice = ["alice".to_string()];
        let approval = Approval {
            required: 2,
            reviewers: vec![],
            not_author: true,
        };
        assert!(may_approve(&approval, "bob", &alice, &[]).is_ok());
        assert!(
            may_approve(&approval, "alice", &alice, &[])
                .unwrap_err()
                .to_string()
                .contains("four-eyes")
        );
        let co_authored = ["alice".to_string(), "carol".to_string()];
        assert!(may_approve(&approval, "carol", &co_authored, &[]).is_err());
        assert!(
            may_approve(&approval, "bob", &alice, &["bob".into()])
                .unwrap_err()
                .to_string()
                .contains("already")
        );
        let listed = Approval {
            required: 1,
            reviewers: vec!["carol".into()],
            not_author: false,
        };
        assert!(
            may_approve(&listed, "bob", &alice, &[])
                .unwrap_err()
                .to_string()
                .contains("not one of the reviewers: carol")
        );
        assert!(
            may_approve(&listed, "carol", &["carol".to_string()], &[]).is_ok(),
            "not_author: false"
        );
    }

    #[test]
    fn gates_from_approvals_and_freeze_windows() {
        let prod = env(
            "    production: true\n    freeze: [{ start: '0 18 * * FRI', end: '0 8 * * MON', timezone: UTC, reason: weekend }]\n",
        );
        let friday_night: DateTime<Utc> = "2026-11-20T20:00:00Z".parse().unwrap();
        let tuesday: DateTime<Utc> = "2026-11-24T10:00:00Z".parse().unwrap();
        assert_eq!(
            closed_gates(&prod, 0, friday_night),
            vec![
                Gate::AwaitingApproval { have: 0, need: 1 },
                Gate::Frozen {
                    until: "2026-11-23T08:00:00Z".parse().unwrap(),
                    reason: Some("weekend".into())
                },
            ]
        );
        assert_eq!(closed_gates(&prod, 1, tuesday), vec![]);
    }
}
