//! The delivery half of a pipeline: how a release runs (`release:`) and where it goes
//! (`environments:`), with the pure rules that need a time: freeze windows.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr as _;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// `release:` — how one instance of a release runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseSpec {
    /// Jobs whose artifacts make up what is deployed; empty means every job's.
    pub from: Vec<String>,
    /// Command starting one instance; it gets `$PORT`.
    pub run: String,
    pub health: Health,
    pub instances: u32,
    pub stop_signal: StopSignal,
    /// Time between the stop signal and SIGKILL.
    pub stop_grace: Duration,
    pub env: BTreeMap<String, String>,
}

/// How an instance is known to be ready: an HTTP `GET path` answering 2xx, or, without a path,
/// its port accepting connections.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub path: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes before an instance counts as healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures before a healthy instance counts as unhealthy.
    pub unhealthy_threshold: u32,
    /// How long a starting instance may take to become healthy.
    pub start_timeout: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            path: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            healthy_threshold: 1,
            unhealthy_threshold: 3,
            start_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Term,
    Int,
    Quit,
    Hup,
    Usr1,
    Usr2,
    Kill,
}

impl StopSignal {
    pub const NAMES: &'static [&'static str] = &["TERM", "INT", "QUIT", "HUP", "USR1", "USR2", "KILL"];

    pub fn parse(text: &str) -> Option<StopSignal> {
        let name = text.trim().trim_start_matches("SIG").to_ascii_uppercase();
        Some(match name.as_str() {
            "TERM" => StopSignal::Term,
            "INT" => StopSignal::Int,
            "QUIT" => StopSignal::Quit,
            "HUP" => StopSignal::Hup,
            "USR1" => StopSignal::Usr1,
            "USR2" => StopSignal::Usr2,
            "KILL" => StopSignal::Kill,
            _ => return None,
        })
    }
}

/// One environment, in promotion order.
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub name: String,
    /// The environment a release must have passed first.
    pub after: Option<String>,
    pub target: Target,
    pub strategy: Strategy,
    /// `None`: no approval needed.
    pub approval: Option<Approval>,
    pub production: bool,
    /// Continuous deployment: every release that passed `after` (or every release, for the
    /// first environment) is deployed without being asked.
    pub auto: bool,
    pub freeze: Vec<FreezeWindow>,
    pub pre_deploy: Vec<Command>,
    pub post_deploy: Vec<Command>,
    pub checks: Vec<Check>,
    /// Where the environment's router listens; `None`: chosen by the server.
    pub listen: Option<SocketAddr>,
    /// How long the router waits for an instance's response head before it answers 504 (an
    /// error for the analysis): an instance that accepts and never answers is cut off.
    /// `None`: the router's default (30 s).
    pub response_timeout: Option<Duration>,
    /// How a user keeps seeing one version while two share the traffic.
    pub sticky: Sticky,
    pub env: BTreeMap<String, String>,
    /// The post-promotion gate: held once the new version has all the traffic, before it
    /// becomes stable.
    pub verify: Option<Verify>,
}

/// The SLIs the router measures for a version over the `verify` window: 5xx share, requests per
/// second, and latency quantiles in seconds.
pub const ROUTER_SLIS: &[&str] = &[
    "error_rate",
    "requests_per_second",
    "latency_p50",
    "latency_p90",
    "latency_p95",
    "latency_p99",
];

/// `verify:` — what the new version is held to once it has all the traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct Verify {
    /// How long the new version is watched before it becomes stable.
    pub duration: Duration,
    /// Keptn-style objectives over the router's SLIs, evaluated at the end of `duration`.
    pub slo: Option<conveyor_analysis::slo::SloSpec>,
    /// A burn-rate gate, checked throughout.
    pub error_budget: Option<ErrorBudget>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorBudget {
    /// The SLO: the share of requests that must succeed, e.g. 0.999.
    pub target: f64,
    /// The verify fails once both the whole window and its last twelfth burn the error budget
    /// faster than this (14.4 = the SRE workbook's paging threshold).
    pub max_burn_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    /// The router remembers each user's version in a cookie (the default).
    Cookie,
    /// A hash of this request header (e.g. `x-user-id`) chooses the version.
    Header(String),
    /// Every request is weighed on its own.
    None,
}

/// Where instances run. Only the local target exists so far; SSH, Docker and Kubernetes go here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Local,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Stop the old version, then start the new one.
    Recreate,
    /// Replace instances `max_surge` at a time, behind the router.
    Rolling { max_surge: u32 },
    /// Start the new version beside the old one, check it, then flip all traffic at once.
    BlueGreen,
    /// Shift traffic to the new version step by step.
    Canary(Canary),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    /// Ends with a step at 100%.
    pub steps: Vec<CanaryStep>,
    /// Judges each step before the next; `None`: steps advance on time alone.
    pub analysis: Option<Analysis>,
}

/// `canary.analysis:` — evidence each step needs before the next, checked throughout.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Time between two looks at the metrics.
    pub interval: Duration,
    /// The false-alarm bound of a whole deployment: divided among its sequential tests.
    pub alpha: f64,
    /// A step passes only once every sequential test shows the canary within its margin at
    /// this confidence.
    pub confidence: f64,
    /// How long a step may wait past its pause for enough data before the metric's `no_data`.
    pub max_duration: Duration,
    /// What an inconclusive judgement does.
    pub inconclusive: Inconclusive,
    /// What the canary is compared with.
    pub baseline: Baseline,
    pub metrics: Vec<Metric>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// The stable version, with the rest of the traffic.
    Stable,
    /// A fresh copy of the stable version, started with the canary and given the same share of
    /// traffic, so warm against cold instances (and unequal load) do not bias the comparison.
    Fresh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inconclusive {
    /// Hold the rollout until someone promotes, resumes or aborts it.
    Pause,
    /// Send traffic back to the stable version and fail the deployment.
    Rollback,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub source: MetricSource,
    /// A failing critical metric rolls back; a failing other one is recorded as a warning.
    pub critical: bool,
    /// Samples needed before a step may pass: canary requests for the router's metrics,
    /// looks with a value for Prometheus, runs for webhooks and commands.
    pub min_samples: u64,
    pub no_data: NoData,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MetricSource {
    /// The router's 5xx share, canary vs stable, by the anytime-valid rate test: the canary
    /// may fail up to `tolerance` more (relative) or `absolute` more (a share), whichever
    /// allows more.
    ErrorRate { tolerance: f64, absolute: f64 },
    /// The router's latency at `quantile`, canary vs stable, by the anytime-valid latency test:
    /// the canary may be `tolerance` slower (relative) or `absolute` slower, whichever allows
    /// more.
    Latency {
        quantile: f64,
        tolerance: f64,
        absolute: Duration,
    },
    /// What the canary's instances use per request (memory growth, CPU time, descriptor
    /// growth) against the baseline's, read by the target that supervises them: the canary may
    /// use `tolerance` more (relative) and `absolute` more per request (in the quantity's unit:
    /// bytes, CPU seconds, descriptors) before it fails.
    Resource {
        quantity: conveyor_analysis::resources::Quantity,
        tolerance: f64,
        absolute: f64,
    },
    /// Restarts of the canary's instances during the analysis: more than `tolerance`, and more
    /// often per instance than the baseline's, fails.
    Restarts { tolerance: u64 },
    /// A PromQL query, run at every look: the canary's value checked against a range, or the
    /// canary's values compared with the baseline's (Kayenta's judge) at the end of each step.
    Prometheus(PrometheusQuery),
    /// An HTTP GET at the end of each step: 2xx passes.
    Webhook {
        url: String,
        timeout: Duration,
        retries: u32,
    },
    /// A command at the end of each step (gets `$URL` of the new version): exit 0 passes.
    Command {
        run: String,
        timeout: Duration,
        retries: u32,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusQuery {
    /// Base URL of the Prometheus HTTP API, e.g. `http://127.0.0.1:9090`.
    pub address: String,
    /// PromQL with `{{version}}`, `{{baseline}}`, `{{project}}`, `{{environment}}` filled in.
    pub query: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Compare with the baseline instead of a range: the same query with `{{version}}` set to
    /// the baseline, judged by the NetflixACAJudge (Mann–Whitney at 98%).
    pub compare: Option<Direction>,
}

/// Replaces each `{{ name }}` in a query (spaces inside the braces allowed) by `value(name)`;
/// one without a value is kept as written. Also how the names are listed, for validation.
pub fn fill_placeholders(query: &str, mut value: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(&rest[..start]);
        match value(after[..end].trim()) {
            Some(filled) => out.push_str(&filled),
            None => out.push_str(&rest[start..start + end + 4]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Which change of a compared metric fails it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Increase,
    Decrease,
    Either,
}

/// What a metric without enough samples at the end of a step counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoData {
    Pass,
    Fail,
    Inconclusive,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CanaryStep {
    /// Percent of traffic on the new version, 1..=100.
    pub weight: u32,
    pub pause: Pause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    For(Duration),
    /// Until someone runs `conveyor promote` (or `resume`).
    UntilPromoted,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    /// Approvals needed.
    pub required: u32,
    /// Who may approve; empty means anyone with a token.
    pub reviewers: Vec<String>,
    /// Four-eyes: the author of the change cannot approve its deployment.
    pub not_author: bool,
}

/// A command run around a deployment (`hooks`).
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub name: String,
    pub run: String,
    pub timeout: Option<Duration>,
}

/// A smoke or acceptance check: gets `$URL` of the new version.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub command: Command,
    pub when: CheckWhen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckWhen {
    /// Against the new version only, before it gets any traffic.
    BeforeTraffic,
    /// Through the router, once the new version has all the traffic.
    AfterTraffic,
    Both,
}

/// No deployment starts between an occurrence of `start` and the next occurrence of `end`.
#[derive(Debug, Clone, PartialEq)]
pub struct FreezeWindow {
    pub start: String,
    pub end: String,
    pub timezone: chrono_tz::Tz,
    pub reason: Option<String>,
}

impl FreezeWindow {
    /// A window from its parts (as the API gives them), checked like `conveyor.yml`'s.
    pub fn from_parts(
        start: &str,
        end: &str,
        timezone: Option<&str>,
        reason: Option<String>,
    ) -> Result<FreezeWindow, String> {
        crate::parse::check_cron(start).map_err(|e| e.to_string())?;
        crate::parse::check_cron(end).map_err(|e| e.to_string())?;
        let timezone = match timezone {
            None => chrono_tz::UTC,
            Some(name) => name.parse().map_err(|_| {
                format!("unknown timezone '{name}' — use an IANA name such as Europe/Paris or UTC")
            })?,
        };
        Ok(FreezeWindow {
            start: start.to_string(),
            end: end.to_string(),
            timezone,
            reason,
        })
    }

    /// When the freeze that holds at `now` ends; `None` when `now` is outside every window.
    pub fn frozen_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Both were validated at parse time.
        let start = croner::Cron::from_str(&self.start).ok()?;
        let end = croner::Cron::from_str(&self.end).ok()?;
        let local = now.with_timezone(&self.timezone);
        let opened = start.find_previous_occurrence(&local, true).ok()?;
        let closes = end.find_next_occurrence(&opened, false).ok()?;
        (local < closes).then(|| closes.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn freeze_windows_follow_their_timezone() {
        // Friday 18:00 to Monday 08:00, Paris time (UTC+1 in November).
        let weekend = FreezeWindow {
            start: "0 18 * * FRI".into(),
            end: "0 8 * * MON".into(),
            timezone: chrono_tz::Europe::Paris,
            reason: None,
        };
        let cases = [
            ("2026-11-20T16:59:00Z", None),                         // Fri 17:59 Paris
            ("2026-11-20T17:00:00Z", Some("2026-11-23T07:00:00Z")), // Fri 18:00 Paris
            ("2026-11-22T12:00:00Z", Some("2026-11-23T07:00:00Z")), // Sunday
            ("2026-11-23T06:59:59Z", Some("2026-11-23T07:00:00Z")), // Mon 07:59:59 Paris
            ("2026-11-23T07:00:00Z", None),                         // Mon 08:00 Paris
            ("2026-11-25T12:00:00Z", None),                         // Wednesday
        ];
        for (now, want) in cases {
            assert_eq!(weekend.frozen_until(at(now)), want.map(at), "{now}");
        }
    }

    #[test]
    fn stop_signals_parse_with_or_without_sig() {
        assert_eq!(StopSignal::parse("SIGTERM"), Some(StopSignal::Term));
        assert_eq!(StopSignal::parse("int"), Some(StopSignal::Int));
        assert_eq!(StopSignal::parse("STOP"), None);
    }
}
