//! The latency test: a request is an event when it is slower than a threshold read off the
//! baseline's own latency distribution (at its chosen quantile, from looks before the current
//! one, so the threshold is predictable); the canary's threshold is the baseline's widened by
//! the margin. If the canary's latency is no worse than the baseline's widened by the margin, a
//! slow request is no likelier on the canary, and the rate test applies with a margin of zero
//! on the slow share.

use serde::Serialize;

use super::{Counts, Decision, Margin, RateEvidence, RateTest, TestConfig};

/// Cumulative request counts at a set of latency bucket bounds (seconds, ascending; the last
/// bound may be `+Inf`), as Prometheus histograms carry them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    /// `cumulative[i]`: requests that took at most `bounds[i]`.
    pub cumulative: Vec<u64>,
    /// All requests (the `+Inf` count).
    pub total: u64,
}

impl Histogram {
    /// Requests slower than `bounds[bucket]`.
    fn slower_than(&self, bucket: usize) -> u64 {
        self.total.saturating_sub(self.cumulative[bucket])
    }

    /// The counts added between `earlier` and `self` (same bounds), saturating at zero when a
    /// counter went backwards (a restarted process).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            bounds: self.bounds.clone(),
            cumulative: self
                .cumulative
                .iter()
                .zip(&earlier.cumulative)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            total: self.total.saturating_sub(earlier.total),
        }
    }

    /// The `q`-quantile estimated as Prometheus's `histogram_quantile` does: linear within the
    /// bucket that holds it (from 0 for the first), the highest finite bound when it falls in
    /// `+Inf`. `None` without requests.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.total as f64;
        let bucket = self.cumulative.iter().position(|&c| c as f64 >= rank)?;
        let upper = self.bounds[bucket];
        if upper.is_infinite() {
            return self.bounds.iter().rev().find(|b| b.is_finite()).copied();
        }
        let (lower, below) = match bucket {
            0 => (0.0, 0),
            i => (self.bounds[i - 1], self.cumulative[i - 1]),
        };
        let inside = (self.cumulative[bucket] - below) as f64;
        if inside == 0.0 {
            return Some(upper);
        }
        Some(lower + (upper - lower) * (rank - below as f64) / inside)
    }

    /// The index of the largest finite bound with at least `1 − quantile` of the requests slower
    /// than it: so the baseline's slow share is at least the quantile's tail.
    fn threshold_bucket(&self, quantile: f64) -> Option<usize> {
        if self.total == 0 {
            return None;
        }
        let tail = (1.0 - quantile) * self.total as f64;
        (0..self.bounds.len())
            .filter(|&i| self.bounds[i].is_finite())
            .rfind(|&i| self.slower_than(i) as f64 >= tail)
    }
}

/// The anytime-valid one-sided latency test: is the canary's latency at a quantile worse than
/// the baseline's by more than the tolerance?
#[derive(Debug, Clone)]
pub struct LatencyTest {
    quantile: f64,
    /// How much slower the canary may be: relative, and absolute in seconds.
    margin: Margin,
    rate: RateTest,
    /// The baseline's histogram over every look so far, for the threshold.
    baseline_seen: Option<Histogram>,
    /// The thresholds of the latest look (baseline, canary), seconds.
    thresholds: Option<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyEvidence {
    pub quantile: f64,
    /// How much slower than the baseline's the canary's latency may be (absolute in seconds).
    pub margin: Margin,
    /// A baseline request slower than this was an event in the latest look (seconds).
    pub baseline_threshold: Option<f64>,
    /// The canary's threshold: the baseline's widened by the margin, up to a bucket bound.
    pub canary_threshold: Option<f64>,
    /// Requests and slow requests per version.
    #[serde(flatten)]
    pub rate: RateEvidence,
}

impl LatencyTest {
    /// `quantile` in `(0, 1)`, e.g. `0.99`; `config.margin` is how much slower the canary may
    /// be at it (relative, and absolute in seconds).
    pub fn new(quantile: f64, config: TestConfig) -> Self {
        Self {
            quantile,
            margin: config.margin,
            rate: RateTest::new(TestConfig {
                margin: Margin::default(),
                ..config
            }),
            baseline_seen: None,
            thresholds: None,
        }
    }

    /// Takes one look: the histograms of the requests served since the previous look.
    pub fn observe(&mut self, canary: &Histogram, baseline: &Histogram) {
        let buckets = self.baseline_seen.as_ref().and_then(|seen| {
            let base = seen.threshold_bucket(self.quantile)?;
            let scaled = self.margin.allowance(seen.bounds[base]);
            let canary_bucket = canary.bounds.iter().position(|&b| b >= scaled)?;
            Some((base, canary_bucket))
        });
        match buckets {
            Some((base, canary_bucket)) if base < baseline.cumulative.len() => {
                self.thresholds = Some((baseline.bounds[base], canary.bounds[canary_bucket]));
                self.rate.observe(
                    Counts::new(canary.total, canary.slower_than(canary_bucket)),
                    Counts::new(baseline.total, baseline.slower_than(base)),
                );
            }
            // No threshold yet: the requests count, the events cannot.
            _ => self
                .rate
                .observe(Counts::new(canary.total, 0), Counts::new(baseline.total, 0)),
        }
        match &mut self.baseline_seen {
            Some(seen) => {
                seen.total += baseline.total;
                for (sum, add) in seen.cumulative.iter_mut().zip(&baseline.cumulative) {
                    *sum += add;
                }
            }
            None => self.baseline_seen = Some(baseline.clone()),
        }
    }

    pub fn decision(&self, horizon_reached: bool) -> Decision {
        self.rate.decision(horizon_reached)
    }

    pub fn evidence(&self) -> LatencyEvidence {
        LatencyEvidence {
            quantile: self.quantile,
            margin: self.margin,
            baseline_threshold: self.thresholds.map(|t| t.0),
            canary_threshold: self.thresholds.map(|t| t.1),
            rate: self.rate.evidence(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, LogNormal, Poisson};

    const BOUNDS: [f64; 8] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, f64::INFINITY];

    fn histogram(rng: &mut StdRng, requests: f64, median: f64) -> Histogram {
        let latency = LogNormal::new(median.ln(), 0.5).unwrap();
        let n = Poisson::new(requests).unwrap().sample(rng) as u64;
        let mut cumulative = vec![0; BOUNDS.len()];
        for _ in 0..n {
            let seconds = latency.sample(rng);
            for (count, bound) in cumulative.iter_mut().zip(BOUNDS) {
                *count += u64::from(seconds <= bound);
            }
        }
        Histogram {
            bounds: BOUNDS.to_vec(),
            cumulative,
            total: n,
        }
    }

    #[test]
    fn the_latency_threshold_is_the_largest_bound_with_the_quantiles_tail_above_it() {
        let h = Histogram {
            bounds: BOUNDS.to_vec(),
            cumulative: vec![10, 500, 900, 980, 995, 1000, 1000, 1000],
            total: 1000,
        };
        // 20 requests above 0.1 s (2%), 5 above 0.2 s (0.5%): p99's bucket bound is 0.1 s.
        assert_eq!(h.threshold_bucket(0.99), Some(3));
        assert_eq!(h.threshold_bucket(0.9), Some(2));
        assert_eq!(h.threshold_bucket(0.999), Some(4));
        let empty = Histogram {
            total: 0,
            cumulative: vec![0; 8],
            bounds: BOUNDS.to_vec(),
        };
        assert_eq!(empty.threshold_bucket(0.99), None);
        assert_eq!(empty.quantile(0.5), None);
        // Prometheus's histogram_quantile over the same buckets.
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-12);
        assert!(close(h.quantile(0.5), 0.02), "{:?}", h.quantile(0.5)); // rank 500: top of (0.01, 0.02]
        assert!(close(h.quantile(0.7), 0.035), "{:?}", h.quantile(0.7)); // rank 700: half-way in (0.02, 0.05]
        assert!(close(h.quantile(0.005), 0.005), "{:?}", h.quantile(0.005)); // rank 5: half of (0, 0.01]
        assert!(close(h.quantile(0.999), 0.44), "{:?}", h.quantile(0.999)); // rank 999: 4 of 5 into (0.2, 0.5]
        assert_eq!(h.since(&h).total, 0);
    }

    #[test]
    fn identical_latencies_rarely_fail_and_a_slower_canary_does() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut alarms = 0;
        for _ in 0..300 {
            let mut test = LatencyTest::new(0.99, TestConfig::default());
            for _ in 0..120 {
                test.observe(
                    &histogram(&mut rng, 20.0, 0.05),
                    &histogram(&mut rng, 180.0, 0.05),
                );
            }
            alarms += usize::from(test.decision(true) == Decision::Fail);
        }
        assert!(alarms <= 6, "{alarms} of 300");

        let mut slower = LatencyTest::new(0.99, TestConfig::default());
        for _ in 0..120 {
            slower.observe(
                &histogram(&mut rng, 20.0, 0.075),
                &histogram(&mut rng, 180.0, 0.05),
            );
        }
        assert_eq!(slower.decision(true), Decision::Fail);
        let evidence = slower.evidence();
        assert_eq!(evidence.baseline_threshold, Some(0.1));
        assert_eq!(evidence.canary_threshold, Some(0.1));
    }

    #[test]
    fn latency_tolerance_moves_the_canarys_threshold_up_a_bucket() {
        let mut rng = StdRng::seed_from_u64(6);
        let mut test = LatencyTest::new(
            0.99,
            TestConfig {
                margin: Margin {
                    relative: 0.5,
                    absolute: 0.0,
                },
                ..TestConfig::default()
            },
        );
        for _ in 0..120 {
            test.observe(
                &histogram(&mut rng, 20.0, 0.06),
                &histogram(&mut rng, 180.0, 0.05),
            );
        }
        let evidence = test.evidence();
        assert_eq!(evidence.canary_threshold, Some(0.2));
        assert_ne!(test.decision(true), Decision::Fail);
    }
}
