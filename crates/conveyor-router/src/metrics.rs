//! Per-version counters, latency histograms and latency sketches. The request path only does
//! relaxed atomic adds on a version's own `VersionStats`; the registry of versions is locked only
//! when the config changes or when a snapshot / Prometheus text is taken.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conveyor_sketch::{AtomicSketch, LatencySketch};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;

/// Upper bounds of the latency buckets, in microseconds. Neighbours are at most ×2 apart (×1.5
/// from 2 ms to 10 s), so a canary's latency test can set its threshold near the quantile it
/// judges (the p99 of a 160 ms service falls between 150 and 200 ms, not 100 and 250 ms).
const BUCKET_MICROS: [u64; 25] = [
    250, 500, 1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000, 50_000, 75_000, 100_000,
    150_000, 200_000, 300_000, 500_000, 750_000, 1_000_000, 1_500_000, 2_000_000, 3_000_000, 5_000_000,
    10_000_000,
];

/// Upper bounds of the latency buckets, in seconds; the last is `+Inf`.
pub const LATENCY_BUCKETS: [f64; BUCKET_MICROS.len() + 1] = {
    let mut bounds = [f64::INFINITY; BUCKET_MICROS.len() + 1];
    let mut i = 0;
    while i < BUCKET_MICROS.len() {
        bounds[i] = BUCKET_MICROS[i] as f64 / 1e6;
        i += 1;
    }
    bounds
};

/// One version's counters, shared by every config that lists the version.
#[derive(Debug, Default)]
pub(crate) struct VersionStats {
    /// Requests forwarded and not answered yet, so a version is stopped only once drained.
    in_flight: AtomicU64,
    errors_5xx: AtomicU64,
    /// Requests routed by the pin header: counted apart, never in the statistics.
    pinned: AtomicU64,
    sum_nanos: AtomicU64,
    /// Non-cumulative counts per bucket; the last is `+Inf`. Their total is the request count.
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    /// The same latencies at 1% relative accuracy.
    sketch: AtomicSketch,
}

/// One request on its way to a version: counted in flight until dropped (answered, failed or
/// abandoned by the client).
pub(crate) struct InFlight<'a>(&'a VersionStats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl VersionStats {
    pub(crate) fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Records one finished request: its status and the time to the response head.
    pub(crate) fn record(&self, status: u16, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let micros = nanos.div_ceil(1_000);
        let bucket = BUCKET_MICROS.partition_point(|&bound| bound < micros);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.sketch.record(elapsed);
        if status >= 500 {
            self.errors_5xx.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records one finished request that the pin header routed: a tester's traffic reaches the
    /// version but is no evidence about it (anyone could flood a canary with pinned requests to
    /// force or prevent a rollback).
    pub(crate) fn record_pinned(&self) {
        self.pinned.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self, version: &str) -> VersionMetrics {
        let mut cumulative = 0;
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&bound, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (bound, cumulative)
            })
            .collect();
        VersionMetrics {
            version: version.to_owned(),
            requests: cumulative,
            errors_5xx: self.errors_5xx.load(Ordering::Relaxed),
            pinned: self.pinned.load(Ordering::Relaxed),
            latency: LatencyHistogram {
                buckets,
                sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
                count: cumulative,
            },
            latency_sketch: self.sketch.snapshot(),
        }
    }
}

/// What the router has counted for one version since it started.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionMetrics {
    pub version: String,
    /// Requests answered (by the upstream or by the router on the version's behalf).
    pub requests: u64,
    /// Of those, answers with status 500..=599, including the router's own 502, 503 and 504 answers.
    pub errors_5xx: u64,
    /// Requests the pin header routed here, answered but left out of `requests`, `errors_5xx`
    /// and `latency`: what the canary analysis judges is the traffic the weights sent.
    pub pinned: u64,
    /// Time from receiving the request to sending the response head.
    pub latency: LatencyHistogram,
    /// The same latencies in a sketch with 1% relative accuracy (quantiles and exact counts above
    /// a boundary, `conveyor_sketch`); `latency_sketch.count()` is `requests`, give or take the
    /// requests answered while the snapshot was taken.
    pub latency_sketch: LatencySketch,
}

/// A Prometheus-style histogram: cumulative counts per upper bound (seconds; the last is `+Inf`).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyHistogram {
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

/// Every version the router has served, in the order first seen. Versions stay after they leave
/// the config so that counters never go backwards.
#[derive(Debug, Default)]
pub(crate) struct MetricsRegistry {
    versions: Mutex<Vec<(String, Arc<VersionStats>)>>,
}

impl MetricsRegistry {
    /// The stats of `version`, created on first use. Called when a config is installed.
    pub(crate) fn stats(&self, version: &str) -> Arc<VersionStats> {
        let mut versions = self
            .versions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, stats)) = versions.iter().find(|(name, _)| name == version) {
            return stats.clone();
        }
        let stats = Arc::new(VersionStats::default());
        versions.push((version.to_owned(), stats.clone()));
        stats
    }

    /// Requests of `version` not answered yet.
    pub(crate) fn in_flight(&self, version: &str) -> u64 {
        let versions = self
            .versions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        versions
            .iter()
            .find(|(name, _)| name == version)
            .map_or(0, |(_, stats)| stats.in_flight.load(Ordering::Relaxed))
    }

    pub(crate) fn snapshot(&self) -> Vec<VersionMetrics> {
        let versions = self
            .versions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        versions
            .iter()
            .map(|(version, stats)| stats.snapshot(version))
            .collect()
    }
}

/// Labels put before `version` on every series (e.g. the project and environment a router serves).
pub type ExtraLabels = Vec<(String, String)>;

/// A counter series of the exposition: its name, its help, and its value in a snapshot.
type Counter = (&'static str, &'static str, fn(&VersionMetrics) -> u64);

/// Adapts a snapshot to prometheus-client's `Collector`, so the exposition format is the crate's.
#[derive(Debug)]
struct SnapshotCollector(Vec<(ExtraLabels, VersionMetrics)>);

fn labels_of(extra: &ExtraLabels, m: &VersionMetrics) -> Vec<(String, String)> {
    let mut labels = extra.clone();
    labels.push(("version".to_owned(), m.version.clone()));
    labels
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let counters: [Counter; 3] = [
            (
                "conveyor_router_requests",
                "Requests answered, per version (pinned ones apart).",
                |m| m.requests,
            ),
            (
                "conveyor_router_responses_5xx",
                "Responses with a 5xx status (including the router's own 502, 503 and 504 answers), per version.",
                |m| m.errors_5xx,
            ),
            (
                "conveyor_router_pinned_requests",
                "Requests routed by the pin header, per version: not in the other series.",
                |m| m.pinned,
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (extra, m) in &self.0 {
                ConstCounter::new(value(m)).encode(family.encode_family(&labels_of(extra, m))?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "conveyor_router_request_duration_seconds",
            "Time from receiving a request to sending the response head, per version.",
            None,
            MetricType::Histogram,
        )?;
        for (extra, m) in &self.0 {
            let labels = labels_of(extra, m);
            family
                .encode_family(&labels)?
                .encode_histogram::<[(&str, &str); 1]>(
                    m.latency.sum_seconds,
                    m.latency.count,
                    &m.latency.buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

/// The Prometheus (OpenMetrics) text exposition of the given snapshot.
pub(crate) fn encode_text(snapshot: Vec<VersionMetrics>) -> String {
    encode_labeled(snapshot.into_iter().map(|m| (Vec::new(), m)).collect())
}

/// The exposition of several routers' snapshots in one text, each series carrying its extra
/// labels before `version` (one `/metrics` page for every environment).
pub fn encode_labeled(snapshots: Vec<(ExtraLabels, VersionMetrics)>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(snapshots)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_buckets_sum_and_errors() {
        let registry = MetricsRegistry::default();
        let blue = registry.stats("blue");
        blue.record(200, Duration::from_micros(500));
        blue.record(200, Duration::from_millis(1));
        blue.record(503, Duration::from_millis(30));
        blue.record(502, Duration::from_secs(60));
        assert!(Arc::ptr_eq(&blue, &registry.stats("blue")));
        registry.stats("green");
        let snapshot = registry.snapshot();
        assert_eq!(snapshot.len(), 2);
        let b = &snapshot[0];
        assert_eq!((b.version.as_str(), b.requests, b.errors_5xx), ("blue", 4, 2));
        assert_eq!(b.latency.count, 4);
        assert!((b.latency.sum_seconds - 60.0315).abs() < 1e-9);
        let cumulative: Vec<u64> = b.latency.buckets.iter().map(|&(_, c)| c).collect();
        // 0.5 ms and 1 ms are in their bounds' buckets; 30 ms is the 11th bound; 60 s is +Inf.
        let mut expected = vec![0u64, 1];
        expected.extend([2; 8]);
        expected.extend([3; 15]);
        expected.push(4);
        assert_eq!(cumulative, expected);
        assert_eq!(LATENCY_BUCKETS[10], 0.03);
        assert_eq!(LATENCY_BUCKETS[..2], [0.00025, 0.0005]);
        assert!(
            LATENCY_BUCKETS
                .windows(2)
                .all(|w| w[0] < w[1] && w[1] <= w[0] * 2.0 || w[1].is_infinite())
        );
        assert_eq!(snapshot[1].requests, 0);
    }

    #[test]
    fn prometheus_text_names_and_labels() {
        let registry = MetricsRegistry::default();
        registry.stats("r12").record(200, Duration::from_millis(2));
        registry.stats("r13").record(500, Duration::from_millis(2));
        let text = encode_text(registry.snapshot());
        for line in [
            "# TYPE conveyor_router_requests counter",
            "conveyor_router_requests_total{version=\"r12\"} 1",
            "conveyor_router_responses_5xx_total{version=\"r12\"} 0",
            "conveyor_router_responses_5xx_total{version=\"r13\"} 1",
            "# TYPE conveyor_router_request_duration_seconds histogram",
            "conveyor_router_request_duration_seconds_bucket{le=\"0.002\",version=\"r12\"} 1",
            "conveyor_router_request_duration_seconds_count{version=\"r13\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
