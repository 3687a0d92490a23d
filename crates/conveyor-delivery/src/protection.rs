//! The server's rules for an environment (set per project environment through the API, audited)
//! laid over the ones a release's `conveyor.yml` gives it: a commit may make its environment
//! stricter, never weaker. Pure: the rules and the environment are passed in.

use conveyor_api::EnvironmentProtection;
use conveyor_spec::delivery::{Approval, Environment, FreezeWindow};

/// The freeze windows of `protection`, checked like `conveyor.yml`'s (the API refuses a
/// protection whose windows do not parse).
pub fn freeze_windows(protection: &EnvironmentProtection) -> Result<Vec<FreezeWindow>, String> {
    protection
        .freeze
        .iter()
        .map(|w| {
            FreezeWindow::from_parts(&w.start, &w.end, w.timezone.as_deref(), w.reason.clone())
                .map_err(|e| format!("freeze window {}..{}: {e}", w.start, w.end))
        })
        .collect()
}

/// Reviewers both lists allow (either alone when the other allows anyone). Lists with nobody in
/// common keep the server's: an empty list means "any deployer", so a commit naming only
/// strangers must not open the gate to everyone.
fn stricter_reviewers(release: Vec<String>, server: &[String]) -> Vec<String> {
    match (release.is_empty(), server.is_empty()) {
        (_, true) => release,
        (true, false) => server.to_vec(),
        (false, false) => {
            let both: Vec<String> = release.into_iter().filter(|r| server.contains(r)).collect();
            if both.is_empty() { server.to_vec() } else { both }
        }
    }
}

/// `env` as it is guarded: more approvals of the two, only reviewers both allow, not-author if
/// either asks, every freeze window of both. Returns the environments a release must have
/// succeeded in first (the release's `after` and the server's).
pub fn protect(env: &mut Environment, protection: &EnvironmentProtection) -> Vec<String> {
    let server_gate = protection.required_approvals > 0;
    env.approval = match env.approval.take() {
        Some(release) => Some(Approval {
            required: release.required.max(protection.required_approvals),
            reviewers: stricter_reviewers(release.reviewers, &protection.reviewers),
            not_author: release.not_author || protection.not_author,
        }),
        None if server_gate => Some(Approval {
            required: protection.required_approvals,
            reviewers: protection.reviewers.clone(),
            not_author: protection.not_author,
        }),
        None => None,
    };
    env.freeze.extend(freeze_windows(protection).unwrap_or_default());
    let mut after: Vec<String> = env.after.iter().chain(&protection.after).cloned().collect();
    after.dedup();
    after
}

#[cfg(test)]
mod tests {
    use conveyor_api::FreezeRule;

    use super::*;

    fn env(yaml: &str) -> Environment {
        let source = format!(
            "name: x\njobs:\n  b:\n    steps: [make]\nrelease: {{ run: ./app }}\nenvironments:\n  staging:\n  e:\n{yaml}"
        );
        conveyor_spec::parse("conveyor.yml", &source)
            .unwrap()
            .environment("e")
            .unwrap()
            .clone()
    }

    /// Required approvals, reviewers, not-author.
    type Rules<'a> = Option<(u32, Vec<&'a str>, bool)>;

    fn approval(e: &Environment) -> Rules<'_> {
        e.approval.as_ref().map(|a| {
            (
                a.required,
                a.reviewers.iter().map(String::as_str).collect(),
                a.not_author,
            )
        })
    }

    #[test]
    fn the_stricter_rule_of_the_two_wins() {
        let server = EnvironmentProtection {
            required_approvals: 2,
            reviewers: vec!["alice".into(), "bob".into()],
            not_author: true,
            freeze: vec![FreezeRule {
                start: "0 18 * * FRI".into(),
                end: "0 8 * * MON".into(),
                timezone: Some("Europe/Paris".into()),
                reason: Some("weekend".into()),
            }],
            after: Some("staging".into()),
        };
        let cases: &[(&str, Rules<'_>)] = &[
            // A commit that removed its approval gate still gets the server's.
            (
                "    approval: { required: 0 }\n",
                Some((2, vec!["alice", "bob"], true)),
            ),
            (
                "    approval: { required: 3, not_author: false }\n",
                Some((3, vec!["alice", "bob"], true)),
            ),
            (
                "    approval: { reviewers: [bob, carol] }\n",
                Some((2, vec!["bob"], true)),
            ),
            // Nobody in common: the server's reviewers, never "anyone".
            (
                "    approval: { reviewers: [mallory] }\n",
                Some((2, vec!["alice", "bob"], true)),
            ),
        ];
        for (yaml, expected) in cases {
            let mut e = env(yaml);
            let after = protect(&mut e, &server);
            assert_eq!(&approval(&e), expected, "{yaml}");
            assert_eq!(after, ["staging"]);
            assert_eq!(e.freeze.len(), 1);
        }
    }

    #[test]
    fn rules_the_server_leaves_out_are_the_release_s() {
        let none = EnvironmentProtection::default();
        let mut e = env("    after: staging\n    approval: { required: 1, reviewers: [carol] }\n");
        assert_eq!(protect(&mut e, &none), ["staging"]);
        assert_eq!(approval(&e), Some((1, vec!["carol"], true)));
        let mut e = env("    auto: true\n");
        assert!(protect(&mut e, &none).is_empty());
        assert_eq!(approval(&e), None);
        // not-author from the server applies to the release's own gate.
        let four_eyes = EnvironmentProtection {
            not_author: true,
            ..EnvironmentProtection::default()
        };
        let mut e = env("    approval: { required: 1, not_author: false }\n");
        protect(&mut e, &four_eyes);
        assert_eq!(approval(&e), Some((1, vec![], true)));
    }

    #[test]
    fn freeze_windows_are_checked() {
        let bad = EnvironmentProtection {
            freeze: vec![FreezeRule {
                start: "nope".into(),
                end: "0 8 * * MON".into(),
                timezone: None,
                reason: None,
            }],
            ..EnvironmentProtection::default()
        };
        let err = freeze_windows(&bad).unwrap_err();
        assert!(
            err.starts_with("freeze window nope..0 8 * * MON: invalid cron expression"),
            "{err}"
        );
    }
}
