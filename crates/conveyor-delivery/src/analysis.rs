//! Canary analysis at runtime: looks at each metric's source every `interval`, feeds the pure
//! tests of `conveyor-analysis`, and turns their state into judgements with evidence.

mod prometheus;

use std::time::Duration;

use conveyor_analysis::judge::{
    Classification, Direction as JudgeDirection, MetricConfig, MetricResult, classify,
};
use conveyor_analysis::sequential::{Counts, Decision, Histogram, LatencyTest, RateTest, TestConfig};
use conveyor_router::VersionMetrics;
use conveyor_spec::delivery::{Analysis as AnalysisSpec, Metric, MetricSource, NoData};
use conveyor_store::Verdict;
use serde_json::{Value, json};

use prometheus::{QueryError, fill_placeholders, query_value};

/// What a metric concluded, to be recorded as a `deployment_judged` event.
#[derive(Debug, Clone)]
pub(crate) struct Judgement {
    pub metric: String,
    pub verdict: Verdict,
    pub summary: String,
    pub evidence: Value,
}

/// Which versions are compared, for the router's counters and the query placeholders.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    pub project: String,
    pub environment: String,
    pub canary: String,
    pub baseline: String,
}

enum State {
    Rate(RateTest),
    Latency(LatencyTest),
    Threshold {
        query: String,
        samples: u64,
        last: Option<f64>,
        /// The latest value out of range, if any: the metric failed then.
        breach: Option<f64>,
    },
    /// A query run for both versions at every look, judged by Kayenta's NetflixACAJudge at the
    /// end of each step (NaN where a look had no value).
    Compare {
        canary_query: String,
        baseline_query: String,
        canary: Vec<f64>,
        baseline: Vec<f64>,
    },
    /// Webhooks and commands run at the end of each step; the runner reports their outcome.
    Check {
        runs: u64,
    },
}

struct Tracked {
    spec: Metric,
    state: State,
    /// Judged `fail` already: it stays failed and is not judged again.
    failed: bool,
}

pub(crate) struct Analysis {
    spec: AnalysisSpec,
    subjects: Subjects,
    metrics: Vec<Tracked>,
    /// The router's counters at the previous look, `(baseline, canary)`.
    previous: Option<(VersionMetrics, VersionMetrics)>,
    http: reqwest::Client,
}

/// How a step ends, once its pause is over.
pub(crate) enum StepEnd {
    /// Every metric has what it needs (judgements to record, possibly warnings).
    Pass(Vec<Judgement>),
    /// Some metric still lacks samples: look again before concluding.
    NeedMoreData,
    /// A critical metric failed (including `no_data: fail`).
    Fail(Vec<Judgement>),
    /// Some metric has no data and its policy says inconclusive.
    Inconclusive(Vec<Judgement>),
}

impl Analysis {
    /// `start`: the router's counters of `(baseline, canary)` now, which every look counts from.
    pub(crate) fn new(
        spec: AnalysisSpec,
        subjects: Subjects,
        start: Option<(VersionMetrics, VersionMetrics)>,
    ) -> Self {
        let config = |tolerance: f64, min_samples: u64| TestConfig {
            alpha: spec.alpha,
            tolerance,
            min_samples,
        };
        let metrics = spec
            .metrics
            .iter()
            .map(|m| {
                let state = match &m.source {
                    MetricSource::ErrorRate { tolerance } => {
                        State::Rate(RateTest::new(config(*tolerance, m.min_samples)))
                    }
                    MetricSource::Latency { quantile, tolerance } => {
                        State::Latency(LatencyTest::new(*quantile, config(*tolerance, m.min_samples)))
                    }
                    MetricSource::Prometheus(q) if q.compare.is_some() => State::Compare {
                        canary_query: fill_placeholders(&q.query, &subjects),
                        baseline_query: fill_placeholders(
                            &q.query,
                            &Subjects {
                                canary: subjects.baseline.clone(),
                                ..subjects.clone()
                            },
                        ),
                        canary: Vec::new(),
                        baseline: Vec::new(),
                    },
                    MetricSource::Prometheus(q) => State::Threshold {
                        query: fill_placeholders(&q.query, &subjects),
                        samples: 0,
                        last: None,
                        breach: None,
                    },
                    MetricSource::Webhook { .. } | MetricSource::Command { .. } => State::Check { runs: 0 },
                };
                Tracked {
                    spec: m.clone(),
                    state,
                    failed: false,
                }
            })
            .collect();
        Self {
            spec,
            subjects,
            metrics,
            previous: start,
            http: reqwest::Client::new(),
        }
    }

    pub(crate) fn interval(&self) -> Duration {
        self.spec.interval
    }

    pub(crate) fn max_duration(&self) -> Duration {
        self.spec.max_duration
    }

    pub(crate) fn inconclusive_rolls_back(&self) -> bool {
        self.spec.inconclusive == conveyor_spec::delivery::Inconclusive::Rollback
    }

    /// One look at every continuous source. Returns the judgements of metrics that failed at
    /// this look (each metric fails once).
    pub(crate) async fn look(&mut self, router: Option<(VersionMetrics, VersionMetrics)>) -> Vec<Judgement> {
        let increments = match (&self.previous, &router) {
            (Some((base_then, canary_then)), Some((base_now, canary_now))) => {
                Some((since(base_now, base_then), since(canary_now, canary_then)))
            }
            _ => None,
        };
        if router.is_some() {
            self.previous = router;
        }
        let mut failed = Vec::new();
        for index in 0..self.metrics.len() {
            if self.metrics[index].failed {
                continue;
            }
            if matches!(
                self.metrics[index].state,
                State::Threshold { .. } | State::Compare { .. }
            ) {
                self.query_prometheus(index).await;
            } else if let Some((base, canary)) = &increments {
                match &mut self.metrics[index].state {
                    State::Rate(test) => test.observe(
                        Counts::new(canary.requests, canary.errors_5xx),
                        Counts::new(base.requests, base.errors_5xx),
                    ),
                    State::Latency(test) => test.observe(&histogram(canary), &histogram(base)),
                    State::Threshold { .. } | State::Compare { .. } | State::Check { .. } => {}
                }
            }
            let tracked = &mut self.metrics[index];
            if continuous_verdict(tracked, false) == Some(Verdict::Fail) {
                tracked.failed = true;
                failed.push(judge(tracked, Verdict::Fail, &self.subjects));
            }
        }
        failed
    }

    async fn query_prometheus(&mut self, index: usize) {
        let MetricSource::Prometheus(spec) = self.metrics[index].spec.source.clone() else {
            return;
        };
        let timeout = self.spec.interval.max(Duration::from_secs(5));
        let name = self.metrics[index].spec.name.clone();
        let logged = |result: Result<Option<f64>, QueryError>| {
            result
                .map_err(|error| tracing::warn!(metric = %name, %error, "prometheus query failed"))
                .ok()
        };
        match &mut self.metrics[index].state {
            State::Threshold {
                query,
                samples,
                last,
                breach,
            } => {
                // No value (empty result or NaN) counts toward nothing: `no_data` decides.
                let Some(Some(value)) = logged(query_value(&self.http, &spec, query, timeout).await) else {
                    return;
                };
                *samples += 1;
                *last = Some(value);
                let below = spec.min.is_some_and(|min| value < min);
                let above = spec.max.is_some_and(|max| value > max);
                if below || above {
                    *breach = Some(value);
                }
            }
            State::Compare {
                canary_query,
                baseline_query,
                canary,
                baseline,
            } => {
                let (c, b) = tokio::join!(
                    query_value(&self.http, &spec, canary_query, timeout),
                    query_value(&self.http, &spec, baseline_query, timeout)
                );
                // A failed query drops the look for both versions, so the samples stay paired.
                if let (Some(c), Some(b)) = (logged(c), logged(b)) {
                    canary.push(c.unwrap_or(f64::NAN));
                    baseline.push(b.unwrap_or(f64::NAN));
                }
            }
            _ => {}
        }
    }

    /// The webhooks and commands to run at the end of this step, by metric name.
    pub(crate) fn checks(&self) -> Vec<(String, MetricSource)> {
        self.metrics
            .iter()
            .filter(|t| !t.failed && matches!(t.state, State::Check { .. }))
            .map(|t| (t.spec.name.clone(), t.spec.source.clone()))
            .collect()
    }

    /// Runs a webhook check: GET, 2xx passes, with retries. `Err` says why the last try failed.
    pub(crate) async fn webhook(
        &self,
        url: &str,
        timeout: Duration,
        retries: u32,
    ) -> Result<(), CheckFailed> {
        let mut last = None;
        for attempt in 0..=retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let failed = match self.http.get(url).timeout(timeout).send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => CheckFailed::Answered(response.status()),
                Err(e) if e.is_timeout() => CheckFailed::TimedOut(timeout),
                Err(e) => CheckFailed::Unreachable(e),
            };
            last = Some(failed);
        }
        Err(last.expect("at least one try"))
    }

    /// Records the outcome of a check run at the end of a step; a failure is judged at once.
    pub(crate) fn check_ran(&mut self, name: &str, outcome: Result<(), CheckFailed>) -> Option<Judgement> {
        let tracked = self.metrics.iter_mut().find(|t| t.spec.name == name)?;
        let State::Check { runs } = &mut tracked.state else {
            return None;
        };
        *runs += 1;
        let error = outcome.err()?.to_string();
        tracked.failed = true;
        let mut judgement = judge(tracked, Verdict::Fail, &self.subjects);
        judgement.summary = format!("{}: {error}", tracked.spec.name);
        judgement.evidence["error"] = json!(error);
        Some(judgement)
    }

    /// Concludes a step whose pause is over; `out_of_time` once it has waited `max_duration`
    /// for data, so missing data follows each metric's `no_data`.
    pub(crate) fn end_step(&self, out_of_time: bool) -> StepEnd {
        let mut judgements = Vec::new();
        let (mut fail, mut inconclusive) = (false, false);
        for tracked in &self.metrics {
            if tracked.failed {
                fail |= tracked.spec.critical;
                continue;
            }
            let (verdict, no_data) = match continuous_verdict(tracked, true) {
                Some(verdict) => (verdict, false),
                None if !out_of_time => return StepEnd::NeedMoreData,
                None => match tracked.spec.no_data {
                    NoData::Pass => (Verdict::Pass, true),
                    NoData::Fail => (Verdict::Fail, true),
                    NoData::Inconclusive => (Verdict::Inconclusive, true),
                },
            };
            let mut judgement = judge(tracked, verdict, &self.subjects);
            fail |= judgement.verdict == Verdict::Fail;
            inconclusive |= judgement.verdict == Verdict::Inconclusive;
            if no_data {
                judgement.summary = format!(
                    "{} — no data: {} samples needed within {}s (no_data: {})",
                    judgement.summary,
                    tracked.spec.min_samples,
                    self.spec.max_duration.as_secs(),
                    verdict.as_str()
                );
                judgement.evidence["no_data"] = json!(true);
            }
            judgements.push(judgement);
        }
        if fail {
            StepEnd::Fail(judgements)
        } else if inconclusive {
            StepEnd::Inconclusive(judgements)
        } else {
            StepEnd::Pass(judgements)
        }
    }
}

/// A metric's verdict from its data alone; `None` when it lacks samples at the horizon.
fn continuous_verdict(tracked: &Tracked, horizon: bool) -> Option<Verdict> {
    let decision = match &tracked.state {
        State::Rate(test) => test.decision(horizon),
        State::Latency(test) => test.decision(horizon),
        State::Threshold { samples, breach, .. } => match (breach, horizon) {
            (Some(_), _) => Decision::Fail,
            (None, false) => Decision::Continue,
            (None, true) if *samples >= tracked.spec.min_samples => Decision::Pass,
            (None, true) => Decision::NoData,
        },
        State::Compare { .. } if !horizon => Decision::Continue,
        State::Compare { canary, baseline, .. } => {
            let paired = canary
                .iter()
                .zip(baseline)
                .filter(|(c, b)| !c.is_nan() && !b.is_nan())
                .count() as u64;
            if paired < tracked.spec.min_samples {
                Decision::NoData
            } else {
                match kayenta(tracked).map(|r| r.classification) {
                    Some(Classification::High | Classification::Low) => Decision::Fail,
                    _ => Decision::Pass,
                }
            }
        }
        State::Check { runs } => match horizon {
            false => Decision::Continue,
            true if *runs >= tracked.spec.min_samples => Decision::Pass,
            true => Decision::NoData,
        },
    };
    match decision {
        Decision::Fail => Some(Verdict::Fail),
        Decision::Pass => Some(Verdict::Pass),
        Decision::Continue => Some(Verdict::Inconclusive).filter(|_| horizon),
        Decision::NoData => None,
    }
}

fn judge(tracked: &Tracked, verdict: Verdict, subjects: &Subjects) -> Judgement {
    let name = &tracked.spec.name;
    let versions = json!({ "canary": subjects.canary, "baseline": subjects.baseline });
    let percent = |rate: Option<f64>| rate.map_or("-".to_string(), |r| format!("{:.2}%", r * 100.0));
    let (summary, mut evidence) = match &tracked.state {
        State::Rate(test) => {
            let e = test.evidence();
            (
                format!(
                    "{name}: canary {} of {} requests failed ({}) vs baseline {} ({}); e = {:.3} (fails at {}), p = {:.4}",
                    e.canary.events,
                    e.canary.requests,
                    percent(e.canary_rate),
                    e.baseline.events,
                    percent(e.baseline_rate),
                    e.e_value,
                    e.threshold,
                    e.p_value
                ),
                json!({ "test": "anytime-valid rate test (5xx / requests)", "statistic": e }),
            )
        }
        State::Latency(test) => {
            let e = test.evidence();
            let ms =
                |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{} ms", (s * 1e6).round() / 1e3));
            (
                format!(
                    "{name}: p{} — canary {} of {} requests slower than {} ({}) vs baseline {} slower than {} ({}); e = {:.3} (fails at {}), p = {:.4}",
                    e.quantile * 100.0,
                    e.rate.canary.events,
                    e.rate.canary.requests,
                    ms(e.canary_threshold),
                    percent(e.rate.canary_rate),
                    e.rate.baseline.events,
                    ms(e.baseline_threshold),
                    percent(e.rate.baseline_rate),
                    e.rate.e_value,
                    e.rate.threshold,
                    e.rate.p_value
                ),
                json!({ "test": "anytime-valid latency test (share of slow requests)", "statistic": e }),
            )
        }
        State::Threshold {
            query,
            samples,
            last,
            breach,
        } => {
            let MetricSource::Prometheus(spec) = &tracked.spec.source else {
                unreachable!("a threshold state comes from a prometheus metric")
            };
            let shown = breach
                .or(*last)
                .map_or("no value".to_string(), |v| format!("{v}"));
            (
                format!(
                    "{name}: canary value {shown} (range {}..{}, {samples} samples)",
                    spec.min.map_or(String::new(), |v| v.to_string()),
                    spec.max.map_or(String::new(), |v| v.to_string()),
                ),
                json!({
                    "test": "prometheus threshold",
                    "address": spec.address,
                    "query": query,
                    "value": breach.or(*last),
                    "min": spec.min,
                    "max": spec.max,
                    "samples": samples,
                }),
            )
        }
        State::Compare {
            canary_query,
            baseline_query,
            canary,
            baseline,
        } => {
            let result = kayenta(tracked);
            let mean = |s: Option<f64>| s.map_or("-".to_string(), |m| format!("{m:.4}"));
            let summary = match &result {
                Some(r) => format!(
                    "{name}: {:?} — canary mean {} vs baseline mean {} over {} looks{}",
                    r.classification,
                    mean(Some(r.experiment.mean)),
                    mean(Some(r.control.mean)),
                    canary.len(),
                    r.reason
                        .as_ref()
                        .map(|why| format!(" ({why})"))
                        .unwrap_or_default()
                ),
                None => format!("{name}: no comparison yet ({} looks)", canary.len()),
            };
            (
                summary,
                json!({
                    "test": "Kayenta NetflixACAJudge (Mann–Whitney, 98% confidence)",
                    "canary_query": canary_query,
                    "baseline_query": baseline_query,
                    "canary_values": canary,
                    "baseline_values": baseline,
                    "result": result,
                }),
            )
        }
        State::Check { runs } => (
            format!("{name}: {runs} run(s) passed"),
            json!({ "test": "check", "runs": runs }),
        ),
    };
    evidence["versions"] = versions;
    evidence["critical"] = json!(tracked.spec.critical);
    evidence["min_samples"] = json!(tracked.spec.min_samples);
    Judgement {
        metric: name.clone(),
        // A non-critical metric that fails is a warning: recorded, the rollout goes on.
        verdict: match verdict {
            Verdict::Fail if !tracked.spec.critical => Verdict::Warning,
            other => other,
        },
        summary,
        evidence,
    }
}

/// The NetflixACAJudge's classification of a compared metric (baseline = control).
fn kayenta(tracked: &Tracked) -> Option<MetricResult> {
    let (State::Compare { canary, baseline, .. }, MetricSource::Prometheus(spec)) =
        (&tracked.state, &tracked.spec.source)
    else {
        return None;
    };
    let direction = match spec.compare? {
        conveyor_spec::delivery::Direction::Increase => JudgeDirection::Increase,
        conveyor_spec::delivery::Direction::Decrease => JudgeDirection::Decrease,
        conveyor_spec::delivery::Direction::Either => JudgeDirection::Either,
    };
    let config = MetricConfig {
        direction,
        critical: tracked.spec.critical,
        ..MetricConfig::new(tracked.spec.name.clone(), &[])
    };
    Some(classify(&config, baseline, canary))
}

/// The counters added between `then` and `now` (saturating: a counter never goes backwards).
pub(crate) fn since(now: &VersionMetrics, then: &VersionMetrics) -> VersionMetrics {
    VersionMetrics {
        version: now.version.clone(),
        requests: now.requests.saturating_sub(then.requests),
        errors_5xx: now.errors_5xx.saturating_sub(then.errors_5xx),
        pinned: now.pinned.saturating_sub(then.pinned),
        latency: conveyor_router::LatencyHistogram {
            buckets: now
                .latency
                .buckets
                .iter()
                .zip(&then.latency.buckets)
                .map(|((bound, n), (_, t))| (*bound, n.saturating_sub(*t)))
                .collect(),
            sum_seconds: (now.latency.sum_seconds - then.latency.sum_seconds).max(0.0),
            count: now.latency.count.saturating_sub(then.latency.count),
        },
    }
}

pub(crate) fn histogram(m: &VersionMetrics) -> Histogram {
    Histogram {
        bounds: m.latency.buckets.iter().map(|(b, _)| *b).collect(),
        cumulative: m.latency.buckets.iter().map(|(_, c)| *c).collect(),
        total: m.latency.count,
    }
}

/// Why a webhook or command check failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckFailed {
    #[error("answered {0}")]
    Answered(reqwest::StatusCode),
    #[error("timed out after {}s", .0.as_secs_f64())]
    TimedOut(Duration),
    #[error("unreachable: {0}")]
    Unreachable(reqwest::Error),
    /// A command check: how the command ended.
    #[error("{0}")]
    Command(String),
}
