//! Canary analysis at runtime: looks at each metric's source every `interval`, feeds the pure
//! tests of `conveyor-analysis`, and turns their state into judgements with evidence.

mod prometheus;

use std::time::Duration;

use conveyor_analysis::judge::{
    Classification, Direction as JudgeDirection, MetricConfig, MetricResult, classify,
};
use conveyor_analysis::resources::{
    GrowthConfig, GrowthTest, Look as ResourceLook, RestartTest, Usage, VersionLook,
};
use conveyor_analysis::sequential::{
    Counts, Decision, Interval, LatencyTest, Margin, RateEvidence, RateTest, TestConfig,
};
use conveyor_deploy::InstanceResources;
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
    /// Memory, CPU or descriptors per request, from what the target samples of the instances.
    Growth(GrowthTest),
    Restarts(RestartTest),
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
    /// The canary's requests per second lately (a moving average over looks), to turn the
    /// requests a decision needs into time.
    canary_rate: Option<f64>,
    /// When the analysis started: the resource tests' clock.
    started: tokio::time::Instant,
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
        let metrics = spec
            .metrics
            .iter()
            .map(|m| {
                let state = match &m.source {
                    MetricSource::ErrorRate { .. } => State::Rate(RateTest::new(test_config(&spec, m))),
                    MetricSource::Latency { quantile, .. } => {
                        State::Latency(LatencyTest::new(*quantile, test_config(&spec, m)))
                    }
                    MetricSource::Resource {
                        quantity,
                        tolerance,
                        absolute,
                    } => State::Growth(GrowthTest::new(
                        *quantity,
                        GrowthConfig {
                            ratio: 1.0 + tolerance,
                            absolute: *absolute,
                            ..GrowthConfig::defaults(*quantity, test_config(&spec, m).alpha)
                        },
                    )),
                    MetricSource::Restarts { tolerance } => State::Restarts(RestartTest::new(*tolerance)),
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
            canary_rate: None,
            started: tokio::time::Instant::now(),
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
    /// `resources`: what the target sampled of `(baseline, canary)` now.
    pub(crate) async fn look(
        &mut self,
        router: Option<(VersionMetrics, VersionMetrics)>,
        resources: Option<(Vec<InstanceResources>, Vec<InstanceResources>)>,
    ) -> Vec<Judgement> {
        let increments = match (&self.previous, &router) {
            (Some((base_then, canary_then)), Some((base_now, canary_now))) => {
                Some((since(base_now, base_then), since(canary_now, canary_then)))
            }
            _ => None,
        };
        if router.is_some() {
            self.previous = router;
        }
        if let Some((_, canary)) = &increments {
            let now = canary.requests as f64 / self.spec.interval.as_secs_f64().max(1e-3);
            // About the last 30 looks.
            self.canary_rate = Some(self.canary_rate.map_or(now, |rate| rate + (now - rate) / 30.0));
        }
        let resource_look = match (&increments, &resources) {
            (Some((base, canary)), Some((base_samples, canary_samples))) => Some(ResourceLook {
                at: self.started.elapsed().as_secs_f64(),
                canary: version_look(canary.requests, canary_samples),
                baseline: version_look(base.requests, base_samples),
            }),
            _ => None,
        };
        let mut failed = Vec::new();
        for index in 0..self.metrics.len() {
            if self.metrics[index].failed {
                continue;
            }
            if let Some(look) = &resource_look {
                match &mut self.metrics[index].state {
                    State::Growth(test) => test.observe(look),
                    State::Restarts(test) => test.observe(look),
                    _ => {}
                }
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
                    State::Latency(test) => test.observe(&canary.latency_sketch, &base.latency_sketch),
                    State::Growth(_)
                    | State::Restarts(_)
                    | State::Threshold { .. }
                    | State::Compare { .. }
                    | State::Check { .. } => {}
                }
            }
            let tracked = &mut self.metrics[index];
            if standing(tracked, false) == Standing::Decided(Verdict::Fail) {
                tracked.failed = true;
                failed.push(self.judge(index, Verdict::Fail));
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
        let index = self.metrics.iter().position(|t| t.spec.name == name)?;
        let tracked = &mut self.metrics[index];
        let State::Check { runs } = &mut tracked.state else {
            return None;
        };
        *runs += 1;
        let error = outcome.err()?.to_string();
        tracked.failed = true;
        let mut judgement = self.judge(index, Verdict::Fail);
        judgement.summary = format!("{name}: {error}");
        judgement.evidence["error"] = json!(error);
        Some(judgement)
    }

    /// Concludes a step whose pause is over; `out_of_time` once it has waited `max_duration`
    /// for data, so missing data follows each metric's `no_data`.
    pub(crate) fn end_step(&self, out_of_time: bool) -> StepEnd {
        let mut judgements = Vec::new();
        let (mut fail, mut inconclusive) = (false, false);
        for (index, tracked) in self.metrics.iter().enumerate() {
            if tracked.failed {
                fail |= tracked.spec.critical;
                continue;
            }
            let (verdict, no_data) = match standing(tracked, true) {
                Standing::Decided(verdict) => (verdict, false),
                Standing::Undecided | Standing::NoData if !out_of_time => return StepEnd::NeedMoreData,
                // Neither harm nor its absence shown within `max_duration`.
                Standing::Undecided => (Verdict::Inconclusive, false),
                Standing::NoData => match tracked.spec.no_data {
                    NoData::Pass => (Verdict::Pass, true),
                    NoData::Fail => (Verdict::Fail, true),
                    NoData::Inconclusive => (Verdict::Inconclusive, true),
                },
            };
            let mut judgement = self.judge(index, verdict);
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

/// A sequential metric's test parameters. The deployment's false-alarm bound is shared by its
/// sequential tests, so plain `analysis:` with two metrics still alarms at most `alpha` of the
/// time, not twice it.
fn test_config(spec: &AnalysisSpec, metric: &Metric) -> TestConfig {
    let sequential = spec.metrics.iter().filter(|m| spends_alpha(&m.source)).count();
    let (relative, absolute) = match &metric.source {
        MetricSource::ErrorRate { tolerance, absolute } => (*tolerance, *absolute),
        MetricSource::Latency {
            tolerance, absolute, ..
        } => (*tolerance, absolute.as_secs_f64()),
        _ => (0.0, 0.0),
    };
    TestConfig {
        alpha: spec.alpha / sequential.max(1) as f64,
        confidence: spec.confidence,
        margin: Margin { relative, absolute },
        min_samples: metric.min_samples,
    }
}

/// The metrics whose tests spend the deployment's `alpha`.
fn spends_alpha(source: &MetricSource) -> bool {
    matches!(
        source,
        MetricSource::ErrorRate { .. } | MetricSource::Latency { .. } | MetricSource::Resource { .. }
    )
}

/// One version at a look, from its instances' samples: `usage` only when every instance was
/// running.
fn version_look(requests: u64, samples: &[InstanceResources]) -> VersionLook {
    let complete = !samples.is_empty() && samples.iter().all(|s| s.processes > 0);
    VersionLook {
        requests,
        instances: samples.len() as u32,
        restarts: samples.iter().map(|s| u64::from(s.restarts)).sum(),
        usage: complete.then(|| Usage {
            rss_bytes: samples.iter().map(|s| s.rss_bytes).sum(),
            cpu_seconds: samples.iter().map(|s| s.cpu_seconds).sum(),
            open_fds: samples.iter().map(|s| s.open_fds).sum(),
        }),
    }
}

/// What `conveyor validate` warns about an environment's analysis: steps that cannot pass on
/// the traffic they will get. For each router metric, the fewest canary requests a step needs
/// even when the canary never fails (or is never slow), and the service traffic that takes for
/// the first step to decide within its pause, and within `max_duration` past it.
pub fn evidence_warnings(environment: &conveyor_spec::delivery::Environment) -> Vec<String> {
    let conveyor_spec::delivery::Strategy::Canary(canary) = &environment.strategy else {
        return Vec::new();
    };
    let (Some(spec), Some(first)) = (&canary.analysis, canary.steps.first()) else {
        return Vec::new();
    };
    let pause = match first.pause {
        conveyor_spec::delivery::Pause::For(d) => d,
        conveyor_spec::delivery::Pause::UntilPromoted => Duration::ZERO,
    };
    let share = f64::from(first.weight) / 100.0;
    let mut warnings = Vec::new();
    let router_metric = |m: &&Metric| {
        matches!(
            m.source,
            MetricSource::ErrorRate { .. } | MetricSource::Latency { .. }
        )
    };
    for metric in spec.metrics.iter().filter(router_metric) {
        let config = test_config(spec, metric);
        // Latency: the baseline's slow share is what the canary's is held to.
        let baseline_rate = match metric.source {
            MetricSource::Latency { quantile, .. } => 1.0 - quantile,
            _ => 0.0,
        };
        let name = format!("environment '{}', metric '{}'", environment.name, metric.name);
        let Some(needed) = conveyor_analysis::sequential::requests_to_pass(config, baseline_rate) else {
            warnings.push(format!(
                "{name}: a zero margin can never be shown, so no step can pass; give the metric a tolerance or an absolute margin"
            ));
            continue;
        };
        if first.weight >= 100 || needed <= metric.min_samples.saturating_mul(2) {
            continue;
        }
        let per_second = |seconds: f64| needed as f64 / share / seconds.max(1.0);
        warnings.push(format!(
            "{name}: a step needs at least {needed} canary requests to pass (min_samples is {}); the first step ({}% of traffic) decides within its {} pause only from ≈ {:.0} requests/s of service traffic, and within max_duration ({}) from ≈ {:.1}/s",
            metric.min_samples,
            first.weight,
            conveyor_api::human_duration(pause),
            per_second(pause.as_secs_f64()),
            conveyor_api::human_duration(spec.max_duration),
            per_second((pause + spec.max_duration).as_secs_f64()),
        ));
    }
    warnings
}

/// Where a metric stands on its data alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Decided(Verdict),
    /// Samples enough, evidence not yet: the step is extended (before the horizon: look on).
    Undecided,
    /// Short of `min_samples` at the horizon.
    NoData,
}

fn standing(tracked: &Tracked, horizon: bool) -> Standing {
    let decision = match &tracked.state {
        State::Rate(test) => test.decision(horizon),
        State::Latency(test) => test.decision(horizon),
        State::Growth(test) => test.decision(horizon),
        State::Restarts(test) => test.decision(horizon),
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
        Decision::Fail => Standing::Decided(Verdict::Fail),
        Decision::Pass => Standing::Decided(Verdict::Pass),
        Decision::Continue => Standing::Undecided,
        Decision::NoData => Standing::NoData,
    }
}

impl Analysis {
    fn judge(&self, index: usize, verdict: Verdict) -> Judgement {
        let tracked = &self.metrics[index];
        let (summary, evidence) = describe(tracked, &self.subjects, self.canary_rate);
        Judgement {
            metric: tracked.spec.name.clone(),
            // A non-critical metric that fails is a warning: recorded, the rollout goes on.
            verdict: match verdict {
                Verdict::Fail if !tracked.spec.critical => Verdict::Warning,
                other => other,
            },
            summary,
            evidence,
        }
    }

    /// Where each metric stands now, for `conveyor status` and the analysis endpoint while
    /// the deployment runs: its summary (interval, margin, what a decision needs) and evidence.
    pub(crate) fn standings(&self) -> Vec<conveyor_api::MetricStanding> {
        self.metrics
            .iter()
            .map(|tracked| {
                let (summary, evidence) = describe(tracked, &self.subjects, self.canary_rate);
                let standing = match (tracked.failed, standing(tracked, true)) {
                    (true, _) | (_, Standing::Decided(Verdict::Fail)) => "failing",
                    (_, Standing::Decided(_)) => "passing",
                    (_, Standing::Undecided) => "undecided",
                    (_, Standing::NoData) => "too_few_samples",
                };
                conveyor_api::MetricStanding {
                    metric: tracked.spec.name.clone(),
                    standing: standing.to_string(),
                    summary,
                    evidence,
                }
            })
            .collect()
    }
}

/// A metric's summary line and evidence as it stands.
fn describe(tracked: &Tracked, subjects: &Subjects, canary_rate: Option<f64>) -> (String, Value) {
    let name = &tracked.spec.name;
    let versions = json!({ "canary": subjects.canary, "baseline": subjects.baseline });
    let (summary, mut evidence) = match &tracked.state {
        State::Rate(test) => {
            let e = test.evidence();
            (
                format!(
                    "{name}: canary {} of {} requests failed ({}) vs baseline {} ({}); {}",
                    e.canary.events,
                    e.canary.requests,
                    percent(e.canary_rate),
                    e.baseline.events,
                    percent(e.baseline_rate),
                    rule(&e, "", canary_rate),
                ),
                json!({ "test": "anytime-valid rate test (5xx / requests)", "statistic": e }),
            )
        }
        State::Latency(test) => {
            let e = test.evidence();
            (
                format!(
                    "{name}: p{} — canary {} of {} requests slower than {} ({}) vs baseline {} slower than {} ({}); {}",
                    e.quantile * 100.0,
                    e.rate.canary.events,
                    e.rate.canary.requests,
                    millis(e.canary_threshold),
                    percent(e.rate.canary_rate),
                    e.rate.baseline.events,
                    millis(e.baseline_threshold),
                    percent(e.rate.baseline_rate),
                    rule(&e.rate, "slow-share ", canary_rate),
                ),
                json!({ "test": "anytime-valid latency test (share of slow requests)", "statistic": e }),
            )
        }
        State::Growth(test) => {
            let e = test.evidence();
            let value = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.4}"));
            (
                format!(
                    "{name}: canary {}..{} vs baseline {}..{} {} ({} and {} blocks); fails above {}, passes at most {} ({}× or +{}, false alarms ≤ {}%){}",
                    value(e.canary.lower),
                    value(e.canary.upper),
                    value(e.baseline.lower),
                    value(e.baseline.upper),
                    e.unit,
                    e.canary.blocks,
                    e.baseline.blocks,
                    value(e.fail_above),
                    value(e.pass_at_most),
                    e.ratio,
                    e.absolute,
                    e.alpha * 100.0,
                    match test.looks_needed() {
                        Some(0) => String::new(),
                        Some(looks) => format!("; ≈ {looks} more looks"),
                        None => "; no decision in sight yet".to_string(),
                    }
                ),
                json!({ "test": "anytime-valid growth per request (median of block slopes)", "statistic": e }),
            )
        }
        State::Restarts(test) => {
            let e = test.evidence();
            (
                format!(
                    "{name}: canary restarted {} times ({} instances) vs baseline {} ({}); fails above {} and more often than the baseline",
                    e.canary.during, e.canary.instances, e.baseline.during, e.baseline.instances, e.tolerance
                ),
                json!({ "test": "restarts during the analysis", "statistic": e }),
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
    (summary, evidence)
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or("-".to_string(), |r| format!("{:.2}%", r * 100.0))
}

fn millis(seconds: Option<f64>) -> String {
    seconds.map_or("-".to_string(), |s| format!("{} ms", (s * 1e6).round() / 1e3))
}

/// The interval, the decision rule and, while undecided, what a decision needs: "difference
/// −0.40..+0.90 pp, ratio 0.00..2.10; passes when difference ≤ +1.00 pp or ratio ≤ 1.50 (95%
/// confidence), fails when both are exceeded (false alarms ≤ 0.5%); ≈ 1,200 more canary
/// requests (≈ 3m at 6.1/s)".
fn rule(e: &RateEvidence, what: &str, canary_rate: Option<f64>) -> String {
    let points = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{:+.2}", v * 100.0));
    let ratio = |v: Option<f64>| v.map_or("∞".to_string(), |v| format!("{v:.2}"));
    let Interval { lower, upper } = e.difference;
    let mut text = format!(
        "{what}difference {}..{} pp, ratio {}..{}; passes when difference ≤ {} pp or ratio ≤ {:.2} ({}% confidence), fails when both are exceeded (false alarms ≤ {}%)",
        points(lower),
        points(upper),
        ratio(e.ratio.lower),
        ratio(e.ratio.upper),
        points(Some(e.margin.absolute)),
        1.0 + e.margin.relative,
        e.confidence * 100.0,
        e.alpha * 100.0,
    );
    match (e.needed, canary_rate) {
        (Some(0), _) => {}
        (Some(requests), Some(rate)) if rate > 0.0 => {
            let seconds = requests as f64 / rate;
            text.push_str(&format!(
                "; ≈ {requests} more canary requests (≈ {} at {rate:.1}/s)",
                conveyor_api::human_duration(Duration::from_secs(seconds.ceil() as u64))
            ));
        }
        (Some(requests), _) => text.push_str(&format!("; ≈ {requests} more canary requests")),
        (None, _) => text.push_str("; no decision in sight at the current rates"),
    }
    text
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
        latency_sketch: now.latency_sketch.since(&then.latency_sketch),
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
