//! The typed pipeline: what `parse` returns once a file is valid.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::expr::Condition;

/// A validated `conveyor.yml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub name: String,
    pub on: Triggers,
    /// Top-level `env`, inherited by every job and step (job and step `env` override it).
    pub env: BTreeMap<String, String>,
    pub concurrency: Option<Concurrency>,
    /// Jobs in the order they appear in the file.
    pub jobs: Vec<Job>,
    /// `release:` — how an instance of a release runs; `None` when the pipeline only builds.
    pub release: Option<crate::delivery::ReleaseSpec>,
    /// `environments:` in promotion order.
    pub environments: Vec<crate::delivery::Environment>,
}

/// `on:` — what starts a run. When `on` is absent: push on every branch, and manual.
#[derive(Debug, Clone, PartialEq)]
pub struct Triggers {
    pub push: Option<PushTrigger>,
    pub manual: bool,
    /// Cron expressions (5 or 6 fields), validated at parse time.
    pub schedule: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PushTrigger {
    /// Branch name patterns (`main`, `release/*`); empty means every branch.
    pub branches: Vec<String>,
}

/// `concurrency:` — at most one active run per group.
#[derive(Debug, Clone, PartialEq)]
pub struct Concurrency {
    /// Template; `${{ branch }}` and `${{ project }}` are substituted.
    pub group: String,
    pub cancel_in_progress: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub needs: Vec<String>,
    /// `if:`; `None` means `success()`.
    pub condition: Option<Condition>,
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    /// Extra attempts after a failed one.
    pub retries: u32,
    pub steps: Vec<Step>,
    /// Glob patterns relative to the workspace root.
    pub artifacts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Given name, or the first line of `run`.
    pub name: String,
    pub run: String,
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    pub continue_on_error: bool,
}

impl Pipeline {
    pub fn environment(&self, name: &str) -> Option<&crate::delivery::Environment> {
        self.environments.iter().find(|e| e.name == name)
    }

    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }

    /// Every job `id` depends on, directly or transitively.
    pub fn ancestors(&self, id: &str) -> std::collections::BTreeSet<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut stack: Vec<&str> = vec![id];
        while let Some(cur) = stack.pop() {
            if let Some(job) = self.job(cur) {
                for need in &job.needs {
                    if seen.insert(need.clone()) {
                        stack.push(need);
                    }
                }
            }
        }
        seen
    }

    /// Names of every secret referenced as `${{ secrets.NAME }}` anywhere in the file.
    pub fn secret_refs(&self) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut texts: Vec<&str> = self.env.values().map(String::as_str).collect();
        for job in &self.jobs {
            texts.extend(job.env.values().map(String::as_str));
            for step in &job.steps {
                texts.push(&step.run);
                texts.extend(step.env.values().map(String::as_str));
            }
        }
        for text in texts {
            for reference in crate::expr::template_refs(text) {
                if let Some(name) = reference.strip_prefix("secrets.") {
                    out.insert(name.to_string());
                }
            }
        }
        out
    }
}

impl Triggers {
    /// Whether a push to `branch` starts a run.
    pub fn watches_branch(&self, branch: &str) -> bool {
        match &self.push {
            None => false,
            Some(push) if push.branches.is_empty() => true,
            Some(push) => push.branches.iter().any(|pattern| {
                globset::Glob::new(pattern)
                    .map(|g| g.compile_matcher().is_match(branch))
                    .unwrap_or(false)
            }),
        }
    }
}
