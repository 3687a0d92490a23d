//! `LatencySketch`: counts per bucket of the shared layout, and what can be read from them.

use std::fmt;
use std::ops::AddAssign;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::mapping::{self, BUCKETS};

/// Latencies counted per bucket of the shared logarithmic layout (`boundary_at_or_above`).
///
/// Its JSON form is sparse: `{"buckets": [[index, count], …]}`, the non-zero buckets by increasing
/// index (an index names the same bucket in every sketch).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySketch {
    #[serde(rename = "buckets", with = "sparse")]
    counts: Box<[u64; BUCKETS]>,
}

impl Default for LatencySketch {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
        }
    }
}

// === impl LatencySketch ===

impl LatencySketch {
    /// An empty sketch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one latency.
    pub fn record(&mut self, latency: Duration) {
        let count = &mut self.counts[mapping::index(latency.as_secs_f64())];
        *count = count.saturating_add(1);
    }

    /// The counts as they are, bucket by bucket (`AtomicSketch::snapshot`).
    pub(crate) fn from_counts(counts: Box<[u64; BUCKETS]>) -> Self {
        Self { counts }
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0, |sum, &c| sum.saturating_add(c))
    }

    /// The `q`-quantile in seconds, `q` in `[0, 1]`, or `None` when the sketch is empty or `q` is
    /// out of range.
    ///
    /// It stands for the lower sample quantile — the recorded value of rank `⌊q·(n−1)⌋` (from 0)
    /// in increasing order — and is within 1% (`RELATIVE_ACCURACY`) of it whenever that value lies
    /// between 1 µs and 1000 s. Below, it reads ≈1 µs; above, ≈1000 s.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = (q * (n - 1) as f64).floor() as u64;
        let mut seen = 0u64;
        self.counts
            .iter()
            .position(|&c| {
                seen = seen.saturating_add(c);
                seen > rank
            })
            .map(mapping::value)
    }

    /// How many recorded latencies lie in buckets entirely above `seconds`.
    ///
    /// That is exactly the number of latencies greater than `boundary_at_or_above(seconds)`. So
    /// for a boundary (a value `boundary_at_or_above` returned) it is exact: the latencies greater
    /// than it, no estimate. For any other `seconds` it leaves out the bucket `seconds` falls in,
    /// so it never exceeds the true count above `seconds`.
    pub fn count_above(&self, seconds: f64) -> u64 {
        // Every bucket, the lowest (which starts at 0) included, is entirely above a negative value.
        let first = if seconds < 0.0 {
            0
        } else {
            mapping::index(seconds) + 1
        };
        self.counts[first.min(BUCKETS)..]
            .iter()
            .fold(0, |sum, &c| sum.saturating_add(c))
    }

    /// The latencies recorded since `earlier`, a previous look at the same recorder: each bucket's
    /// count minus `earlier`'s, saturating at zero (a recorder that started again has fewer).
    pub fn since(&self, earlier: &LatencySketch) -> LatencySketch {
        let mut counts = self.counts.clone();
        for (count, then) in counts.iter_mut().zip(earlier.counts.iter()) {
            *count = count.saturating_sub(*then);
        }
        Self { counts }
    }

    /// Adds `other`'s latencies to these (the sketch of both sets of requests).
    pub fn merge(&mut self, other: &LatencySketch) {
        for (count, add) in self.counts.iter_mut().zip(other.counts.iter()) {
            *count = count.saturating_add(*add);
        }
    }
}

/// The non-zero buckets of `counts`: `(index, count)` by increasing index.
fn nonzero(counts: &[u64; BUCKETS]) -> impl Iterator<Item = (usize, u64)> + '_ {
    counts
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c > 0)
        .map(|(k, &c)| (k, c))
}

impl AddAssign<&LatencySketch> for LatencySketch {
    fn add_assign(&mut self, other: &LatencySketch) {
        self.merge(other);
    }
}

/// Sparse, like the JSON form: a dense dump would be a thousand zeros.
impl fmt::Debug for LatencySketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencySketch")
            .field("count", &self.count())
            .field("buckets", &DebugBuckets(self))
            .finish()
    }
}

struct DebugBuckets<'a>(&'a LatencySketch);

impl fmt::Debug for DebugBuckets<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(nonzero(&self.0.counts)).finish()
    }
}

/// The sparse serde form of the counts: `[[index, count], …]`, increasing indices.
mod sparse {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{BUCKETS, nonzero};

    pub(super) fn serialize<S: Serializer>(
        counts: &[u64; BUCKETS],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(nonzero(counts))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Box<[u64; BUCKETS]>, D::Error> {
        let pairs = Vec::<(usize, u64)>::deserialize(deserializer)?;
        let mut counts = Box::new([0; BUCKETS]);
        let mut previous = None;
        for (index, count) in pairs {
            if index >= BUCKETS {
                return Err(D::Error::custom(format!(
                    "bucket index {index} is out of range: a latency sketch has {BUCKETS} buckets (0..={})",
                    BUCKETS - 1
                )));
            }
            if let Some(previous) = previous
                && index <= previous
            {
                return Err(D::Error::custom(format!(
                    "bucket index {index} comes after {previous}: indices must increase"
                )));
            }
            previous = Some(index);
            counts[index] = count;
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::{MIN_SECONDS, RELATIVE_ACCURACY, boundary_at_or_above};

    fn sketch_of(latencies: &[Duration]) -> LatencySketch {
        let mut sketch = LatencySketch::new();
        for &latency in latencies {
            sketch.record(latency);
        }
        sketch
    }

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    /// Latencies spread evenly on a log scale over the sketch's range, 1 µs to 1000 s.
    fn random_latencies(rng: &mut StdRng, n: usize) -> Vec<Duration> {
        let (low, high) = (MIN_SECONDS.ln(), 1000f64.ln());
        (0..n)
            .map(|_| Duration::from_secs_f64(rng.random_range(low..high).exp()))
            .collect()
    }

    /// The lower sample quantile `quantile` stands for: rank ⌊q·(n−1)⌋ of the sorted values.
    fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    fn relative_error(estimate: f64, exact: f64) -> f64 {
        (estimate - exact).abs() / exact
    }

    /// α, plus room for floating-point rounding at a bucket's very edge.
    const TOLERANCE: f64 = RELATIVE_ACCURACY * (1.0 + 1e-9);

    #[test]
    fn quantile_table() {
        // (name, latencies in ms, q, expected quantile in ms)
        let cases: [(&str, &[u64], f64, f64); 8] = [
            ("single value, median", &[100], 0.5, 100.0),
            ("single value, min", &[100], 0.0, 100.0),
            ("single value, max", &[100], 1.0, 100.0),
            ("median of odd count", &[10, 20, 30], 0.5, 20.0),
            ("lower median of even count", &[10, 20, 30, 40], 0.5, 20.0),
            ("p99 of 100 values", &[5; 100], 0.99, 5.0),
            ("max", &[1, 2, 3, 1000], 1.0, 1000.0),
            ("min", &[7, 2, 3, 1000], 0.0, 2.0),
        ];
        for (name, latencies, q, expected) in cases {
            let estimate = sketch_of(&ms(latencies)).quantile(q).expect("non-empty") * 1e3;
            assert!(
                relative_error(estimate, expected) <= TOLERANCE,
                "{name}: {estimate} ms, expected {expected} ms"
            );
        }
        let sketch = sketch_of(&ms(&[1, 2]));
        for (name, q) in [("q below 0", -0.1), ("q above 1", 1.1), ("q NaN", f64::NAN)] {
            assert_eq!(sketch.quantile(q), None, "{name}");
        }
        assert_eq!(LatencySketch::new().quantile(0.5), None, "empty");
    }

    #[test]
    fn a_quarter_slower_is_told_apart_at_every_quantile() {
        // What the canary analysis needs: ×1.25 is many buckets apart (≈11), not one bucket.
        let base = sketch_of(&ms(&[160; 50]));
        let slower = sketch_of(&ms(&[200; 50]));
        for q in [0.5, 0.9, 0.99] {
            let (b, s) = (base.quantile(q).expect("b"), slower.quantile(q).expect("s"));
            assert!(s / b > 1.2 && s / b < 1.3, "q {q}: {b} vs {s}");
        }
        let threshold = boundary_at_or_above(0.160 * 1.1);
        assert_eq!(
            (base.count_above(threshold), slower.count_above(threshold)),
            (0, 50)
        );
    }

    #[test]
    fn out_of_range_values_land_in_the_end_buckets() {
        let sketch = sketch_of(&[
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_secs(86_400),
        ]);
        assert_eq!(sketch.count(), 3);
        let low = sketch.quantile(0.0).expect("min");
        assert!(relative_error(low, MIN_SECONDS) <= TOLERANCE, "{low}");
        let high = sketch.quantile(1.0).expect("max");
        assert!(high > 1000.0 && high < 1020.0, "{high}");
        assert_eq!(
            sketch.count_above(1000.0),
            0,
            "the highest bucket has no boundary above"
        );
        assert_eq!(sketch.count_above(999.0), 0);
        assert_eq!(sketch.count_above(-1.0), 3);
        assert_eq!(sketch.count_above(0.0), 1);
    }

    #[test]
    fn property_quantiles_are_within_one_percent_of_the_exact_sample_quantile() {
        let mut rng = StdRng::seed_from_u64(1);
        for trial in 0..300 {
            let n = rng.random_range(1..2000);
            let latencies = random_latencies(&mut rng, n);
            let sketch = sketch_of(&latencies);
            assert_eq!(sketch.count(), n as u64);
            let mut sorted: Vec<f64> = latencies.iter().map(Duration::as_secs_f64).collect();
            sorted.sort_by(f64::total_cmp);
            let random_q: f64 = rng.random();
            for q in [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0, random_q] {
                let exact = exact_quantile(&sorted, q);
                let estimate = sketch.quantile(q).expect("non-empty");
                assert!(
                    relative_error(estimate, exact) <= TOLERANCE,
                    "trial {trial}, n {n}, q {q}: {estimate} vs exact {exact}"
                );
            }
        }
    }

    #[test]
    fn property_counts_above_a_boundary_are_exact() {
        let mut rng = StdRng::seed_from_u64(2);
        for trial in 0..200 {
            let n = rng.random_range(1..500);
            let latencies = random_latencies(&mut rng, n);
            let sketch = sketch_of(&latencies);
            let seconds: Vec<f64> = latencies.iter().map(Duration::as_secs_f64).collect();
            let above = |b: f64| seconds.iter().filter(|&&s| s > b).count() as u64;
            // A boundary from an arbitrary value, from a recorded value itself, and a quantile's.
            let picked = seconds[rng.random_range(0..n)];
            let arbitrary = rng.random_range(MIN_SECONDS.ln()..1000f64.ln()).exp();
            let p99 = sketch.quantile(0.99).expect("non-empty");
            for x in [arbitrary, picked, p99] {
                let boundary = boundary_at_or_above(x);
                assert!(boundary >= x);
                assert_eq!(
                    sketch.count_above(boundary),
                    above(boundary),
                    "trial {trial}, {x}"
                );
                // Not a boundary: what lies entirely above, never more than the truth.
                assert_eq!(sketch.count_above(x), sketch.count_above(boundary));
                assert!(sketch.count_above(x) <= above(x));
            }
        }
    }

    #[test]
    fn property_merge_adds_and_since_subtracts() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..50 {
            let (n, m) = (rng.random_range(0..300), rng.random_range(0..300));
            let (first, second) = (random_latencies(&mut rng, n), random_latencies(&mut rng, m));
            let both: Vec<Duration> = first.iter().chain(&second).copied().collect();
            let (a, b) = (sketch_of(&first), sketch_of(&second));
            let mut merged = a.clone();
            merged.merge(&b);
            assert_eq!(merged, sketch_of(&both));
            let mut added = b.clone();
            added += &a;
            assert_eq!(added, merged, "merging is commutative");
            assert_eq!(merged.since(&a), b, "the increment between two looks");
            assert_eq!(a.since(&merged), LatencySketch::new(), "saturates at zero");
        }
    }

    #[test]
    fn json_form_is_sparse_and_checked() {
        let sketch = sketch_of(&[Duration::ZERO, Duration::from_millis(1), Duration::from_millis(1)]);
        let json = serde_json::to_string(&sketch).expect("serializes");
        assert_eq!(json, r#"{"buckets":[[0,1],[346,2]]}"#);
        assert_eq!(
            serde_json::from_str::<LatencySketch>(&json).expect("parses"),
            sketch
        );
        assert_eq!(
            serde_json::to_string(&LatencySketch::new()).expect("serializes"),
            r#"{"buckets":[]}"#
        );
        let refused = [
            (r#"{"buckets":[[1038,1]]}"#, "out of range"),
            (r#"{"buckets":[[5,1],[5,2]]}"#, "indices must increase"),
            (r#"{"buckets":[[6,1],[5,2]]}"#, "indices must increase"),
            (r#"{"buckets":[],"sum":1}"#, "unknown field"),
            (r#"{"buckets":[[1,-1]]}"#, "invalid value"),
        ];
        for (json, message) in refused {
            let error = serde_json::from_str::<LatencySketch>(json)
                .expect_err(json)
                .to_string();
            assert!(error.contains(message), "{json}: {error}");
        }
    }

    #[test]
    fn debug_lists_only_non_zero_buckets() {
        let sketch = sketch_of(&ms(&[1, 1]));
        assert_eq!(
            format!("{sketch:?}"),
            "LatencySketch { count: 2, buckets: {346: 2} }"
        );
    }
}
