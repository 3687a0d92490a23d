//! The post-promotion gate (`verify:`): the new version, with all the traffic, watched through the
//! router for a while — an error-budget burn rate checked every second, then Keptn-style SLOs
//! evaluated against the window and earlier releases' results.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use conveyor_analysis::slo::{
    self, AlertState, BurnRateAlert, PreviousEvaluation, Severity, SloEvaluation, SloSpec, WindowCounts,
};
use conveyor_router::VersionMetrics;
use conveyor_spec::delivery::ErrorBudget;
use conveyor_store::Verdict;
use serde_json::{Value, json};

use super::analysis::since;

/// A burn rate needs some traffic to mean anything: one error in three requests is not a fire.
const MIN_REQUESTS_LONG_WINDOW: u64 = 50;
const MIN_REQUESTS_SHORT_WINDOW: u64 = 10;
/// The short window is this fraction of the time watched so far (the workbook's 5 m of 1 h),
/// and at least `MIN_SHORT_WINDOW`.
const SHORT_WINDOW_DIVISOR: u32 = 12;
const MIN_SHORT_WINDOW: Duration = Duration::from_secs(5);

/// A verdict with the evidence to record.
pub(crate) struct Outcome {
    pub metric: &'static str,
    pub verdict: Verdict,
    pub summary: String,
    pub evidence: Value,
}

impl From<Outcome> for super::analysis::Judgement {
    fn from(outcome: Outcome) -> Self {
        Self {
            metric: outcome.metric.to_string(),
            verdict: outcome.verdict,
            summary: outcome.summary,
            evidence: outcome.evidence,
        }
    }
}

/// The router's counters of the new version, one snapshot a second since the verify began.
pub(crate) struct Watch {
    started: VersionMetrics,
    snapshots: VecDeque<(Duration, VersionMetrics)>,
}

impl Watch {
    pub(crate) fn new(started: VersionMetrics) -> Self {
        Self {
            started,
            snapshots: VecDeque::new(),
        }
    }

    /// Adds the snapshot taken `elapsed` after the start.
    pub(crate) fn record(&mut self, elapsed: Duration, now: VersionMetrics) {
        self.snapshots.push_back((elapsed, now));
    }

    /// Checks the burn rate over everything watched and over its last twelfth; `Some` when it
    /// fires (both windows burn faster than allowed, each with enough requests).
    pub(crate) fn burning(&mut self, budget: &ErrorBudget) -> Option<Outcome> {
        let (elapsed, now) = self.snapshots.back()?.clone();
        let short = (elapsed / SHORT_WINDOW_DIVISOR)
            .max(MIN_SHORT_WINDOW)
            .min(elapsed);
        // Snapshots older than the short window are only needed for the long one (the start).
        while self.snapshots.len() > 1 && self.snapshots[1].0 <= elapsed.saturating_sub(short) {
            self.snapshots.pop_front();
        }
        let short_start = &self.snapshots.front()?.1;
        let long = window(elapsed, &now, &self.started);
        let short = window(short, &now, short_start);
        if long.total < MIN_REQUESTS_LONG_WINDOW || short.total < MIN_REQUESTS_SHORT_WINDOW {
            return None;
        }
        let alert = BurnRateAlert {
            severity: Severity::Page,
            long_window_secs: long.window_secs,
            short_window_secs: short.window_secs,
            burn_rate: budget.max_burn_rate,
        };
        let counts = if long.window_secs == short.window_secs {
            vec![long]
        } else {
            vec![long, short]
        };
        let report = slo::evaluate_burn_rates(budget.target, &[alert], &counts).ok()?;
        let fired = report.alerts.first()?;
        if fired.state != AlertState::Firing {
            return None;
        }
        let burn = |b: Option<f64>| b.map_or("-".into(), |b| format!("{b:.1}"));
        Some(Outcome {
            metric: "error_budget",
            verdict: Verdict::Fail,
            summary: format!(
                "error_budget: burning {}× over {}s and {}× over the last {}s (SLO {}, at most {}×)",
                burn(fired.long.burn_rate),
                fired.long.window_secs,
                burn(fired.short.burn_rate),
                fired.short.window_secs,
                budget.target,
                budget.max_burn_rate
            ),
            evidence: json!({ "test": "multi-window burn rate", "report": report }),
        })
    }

    /// The router's SLIs of the new version over the whole watch.
    pub(crate) fn slis(&self, watched: Duration) -> BTreeMap<String, f64> {
        let Some((_, now)) = self.snapshots.back() else {
            return BTreeMap::new();
        };
        let watched_counts = since(now, &self.started);
        let (requests, errors) = (watched_counts.requests, watched_counts.errors_5xx);
        let mut slis = BTreeMap::new();
        // No request: no error rate and no latency (the objectives using them fail, as missing).
        if requests > 0 {
            slis.insert("error_rate".to_string(), errors as f64 / requests as f64);
        }
        slis.insert(
            "requests_per_second".to_string(),
            requests as f64 / watched.as_secs_f64().max(1.0),
        );
        for (name, q) in [
            ("latency_p50", 0.5),
            ("latency_p90", 0.9),
            ("latency_p95", 0.95),
            ("latency_p99", 0.99),
        ] {
            if let Some(value) = watched_counts.latency_sketch.quantile(q) {
                slis.insert(name.to_string(), value);
            }
        }
        slis
    }
}

fn window(length: Duration, now: &VersionMetrics, then: &VersionMetrics) -> WindowCounts {
    let total = now.requests.saturating_sub(then.requests);
    let bad = now.errors_5xx.saturating_sub(then.errors_5xx).min(total);
    WindowCounts {
        window_secs: length.as_secs().max(1),
        good: total - bad,
        total,
    }
}

/// Earlier results, newest first, read back from their judgements' evidence.
pub(crate) fn previous_results(evidence: &[Value]) -> Vec<PreviousEvaluation> {
    evidence
        .iter()
        .filter_map(|e| serde_json::from_value(e.clone()).ok())
        .collect()
}

/// Evaluates the SLO over `slis` against earlier results.
pub(crate) fn evaluate(
    spec: &SloSpec,
    slis: &BTreeMap<String, f64>,
    previous: &[PreviousEvaluation],
) -> Outcome {
    let evaluation: SloEvaluation = slo::evaluate(spec, slis, previous);
    let verdict = match evaluation.verdict {
        slo::Verdict::Pass => Verdict::Pass,
        slo::Verdict::Warning => Verdict::Warning,
        slo::Verdict::Fail => Verdict::Fail,
    };
    let objectives: Vec<String> = evaluation
        .objectives
        .iter()
        .map(|o| {
            let value = o.value.map_or("no value".into(), |v| format!("{v:.4}"));
            format!("{} {value} {:?}", o.sli, o.status).to_lowercase()
        })
        .collect();
    let key_failed = if evaluation.key_sli_failed {
        ", a key SLI failed"
    } else {
        ""
    };
    Outcome {
        metric: "slo",
        verdict,
        summary: format!(
            "slo: score {:.0}% (pass at {}%{key_failed}; compared with {} earlier result(s)): {}",
            evaluation.score,
            spec.total_score.pass.0,
            evaluation.compared_evaluations,
            objectives.join(", ")
        ),
        // `verdict` and `values` at the top: what later evaluations read back.
        evidence: json!({
            "test": "SLO (Keptn model)",
            "verdict": evaluation.verdict,
            "values": slis,
            "evaluation": evaluation,
        }),
    }
}

#[cfg(test)]
mod tests {
    use conveyor_router::LatencyHistogram;
    use conveyor_sketch::LatencySketch;

    use super::*;

    /// Half the requests took 100 ms, the other half 200 ms.
    fn metrics(requests: u64, errors: u64) -> VersionMetrics {
        let mut latency_sketch = LatencySketch::default();
        for i in 0..requests {
            latency_sketch.record(Duration::from_millis(if i < requests / 2 { 100 } else { 200 }));
        }
        VersionMetrics {
            version: "r2".into(),
            requests,
            errors_5xx: errors,
            pinned: 0,
            latency: LatencyHistogram {
                buckets: vec![(0.1, requests / 2), (0.2, requests), (f64::INFINITY, requests)],
                sum_seconds: 0.0,
                count: requests,
            },
            latency_sketch,
        }
    }

    const BUDGET: ErrorBudget = ErrorBudget {
        target: 0.99,
        max_burn_rate: 10.0,
    };

    #[test]
    fn a_burn_rate_fires_only_with_enough_traffic_in_both_windows() {
        let mut watch = Watch::new(metrics(1000, 0));
        // 20 requests, 10 failing: burning 50×, but too few requests to say.
        watch.record(Duration::from_secs(1), metrics(1020, 10));
        assert!(watch.burning(&BUDGET).is_none());
        // 100 requests a second, 20% failing: 20× the budget in both windows.
        for second in 2..=30 {
            watch.record(
                Duration::from_secs(second),
                metrics(1020 + 100 * (second - 1), 10 + 20 * (second - 1)),
            );
        }
        let fired = watch.burning(&BUDGET).expect("fires");
        assert_eq!(fired.verdict, Verdict::Fail);
        assert!(
            fired.summary.starts_with("error_budget: burning 20."),
            "{}",
            fired.summary
        );
        // Old snapshots are dropped: only the short window's start is kept, plus the newest.
        assert!(watch.snapshots.len() <= 7, "{}", watch.snapshots.len());
    }

    #[test]
    fn a_healthy_version_does_not_burn() {
        let mut watch = Watch::new(metrics(0, 0));
        for second in 1..=60 {
            watch.record(Duration::from_secs(second), metrics(100 * second, second / 10));
        }
        assert!(watch.burning(&BUDGET).is_none());
        let slis = watch.slis(Duration::from_secs(60));
        assert_eq!(slis["requests_per_second"], 100.0);
        assert!((slis["error_rate"] - 6.0 / 6000.0).abs() < 1e-12);
        // Read off the latency sketch: within its 1%.
        assert!((slis["latency_p50"] / 0.1 - 1.0).abs() <= 0.01, "{slis:?}");
        assert!((slis["latency_p99"] / 0.2 - 1.0).abs() <= 0.01, "{slis:?}");
    }

    #[test]
    fn slo_results_are_read_back_as_earlier_results() {
        let spec: SloSpec = serde_json::from_value(json!({
            "objectives": [{ "sli": "latency_p99", "pass": [{ "criteria": ["<=+10%"] }] }],
            "total_score": { "pass": "90%" }
        }))
        .unwrap();
        let first = evaluate(&spec, &BTreeMap::from([("latency_p99".into(), 0.1)]), &[]);
        assert_eq!(first.verdict, Verdict::Pass);
        let previous = previous_results(&[first.evidence]);
        assert_eq!(previous.len(), 1);
        let slower = evaluate(&spec, &BTreeMap::from([("latency_p99".into(), 0.2)]), &previous);
        assert_eq!(slower.verdict, Verdict::Fail, "{}", slower.summary);
        assert!(
            slower.summary.contains("compared with 1 earlier result"),
            "{}",
            slower.summary
        );
    }
}
