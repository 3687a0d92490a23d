//! The latency test: a request is an event when it is slower than a threshold read off the
//! baseline's own latency distribution (its quantile, from looks before the current one, so the
//! threshold is predictable); the canary's threshold is the baseline's widened by the margin. If
//! the canary's latency is no worse than the baseline's widened by the margin, a slow request is
//! no likelier on the canary, and the rate test applies with a margin of zero on the slow share.
//!
//! Both thresholds are bucket boundaries of the latency sketches (1% apart), where the sketches
//! count exactly: the comparison is exact for the thresholds it states, which are within 1% of
//! the quantile and of the margin asked for.

use conveyor_sketch::{LatencySketch, boundary_at_or_above};
use serde::Serialize;

use super::{Counts, Decision, Margin, RateEvidence, RateTest, TestConfig};

/// The anytime-valid one-sided latency test: is the canary's latency at a quantile worse than
/// the baseline's by more than the margin?
#[derive(Debug, Clone)]
pub struct LatencyTest {
    quantile: f64,
    /// How much slower the canary may be: relative, and absolute in seconds.
    margin: Margin,
    rate: RateTest,
    /// The baseline's latencies over every look so far, for the threshold.
    baseline_seen: LatencySketch,
    /// The thresholds of the latest look (baseline, canary), seconds.
    thresholds: Option<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyEvidence {
    pub quantile: f64,
    /// How much slower than the baseline's the canary's latency may be (absolute in seconds).
    pub margin: Margin,
    /// A baseline request slower than this was an event in the latest look (seconds): its
    /// quantile so far, up to the sketch's next boundary.
    pub baseline_threshold: Option<f64>,
    /// The canary's threshold: the baseline's widened by the margin, up to the next boundary.
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
            baseline_seen: LatencySketch::default(),
            thresholds: None,
        }
    }

    /// Takes one look: the latencies of the requests served since the previous look.
    pub fn observe(&mut self, canary: &LatencySketch, baseline: &LatencySketch) {
        let thresholds = self.baseline_seen.quantile(self.quantile).map(|q| {
            let base = boundary_at_or_above(q);
            (base, boundary_at_or_above(self.margin.allowance(base)))
        });
        match thresholds {
            Some((base, widened)) => {
                self.thresholds = thresholds;
                self.rate.observe(
                    Counts::new(canary.count(), canary.count_above(widened)),
                    Counts::new(baseline.count(), baseline.count_above(base)),
                );
            }
            // No threshold yet: the requests count, the events cannot.
            None => self
                .rate
                .observe(Counts::new(canary.count(), 0), Counts::new(baseline.count(), 0)),
        }
        self.baseline_seen += baseline;
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
    use std::time::Duration;

    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, LogNormal, Poisson};

    /// One look's latencies: log-normal around `median` (σ = 0.5), and `tail` of the requests
    /// `extra` seconds slower on top.
    fn look(rng: &mut StdRng, requests: f64, median: f64, tail: f64, extra: f64) -> LatencySketch {
        let latency = LogNormal::new(median.ln(), 0.5).unwrap();
        let n = Poisson::new(requests).unwrap().sample(rng) as u64;
        let mut sketch = LatencySketch::default();
        for i in 0..n {
            let slow = (i as f64) < tail * n as f64;
            let seconds = latency.sample(rng) + if slow { extra } else { 0.0 };
            sketch.record(Duration::from_secs_f64(seconds));
        }
        sketch
    }

    fn config(relative: f64) -> TestConfig {
        TestConfig {
            margin: Margin {
                relative,
                absolute: 0.0,
            },
            ..TestConfig::default()
        }
    }

    /// Looks every second at 200 requests/s, 10% on the canary, for up to `seconds`; returns
    /// the decision at the end (looking after every look for a failure) and when it came.
    fn run(seed: u64, relative: f64, canary: (f64, f64, f64), seconds: usize) -> (Decision, usize) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut test = LatencyTest::new(0.99, config(relative));
        for second in 1..=seconds {
            let (median, tail, extra) = canary;
            test.observe(
                &look(&mut rng, 20.0, median, tail, extra),
                &look(&mut rng, 180.0, 0.05, 0.0, 0.0),
            );
            match test.decision(true) {
                Decision::Pass | Decision::Fail => return (test.decision(true), second),
                Decision::NoData | Decision::Continue => {}
            }
        }
        (test.decision(true), seconds)
    }

    #[test]
    fn identical_latencies_rarely_fail_and_pass_on_evidence() {
        let runs = 100;
        let outcomes: Vec<_> = (0..runs)
            .map(|seed| run(seed, 0.25, (0.05, 0.0, 0.0), 600))
            .collect();
        let alarms = outcomes.iter().filter(|(d, _)| *d == Decision::Fail).count();
        let passes = outcomes.iter().filter(|(d, _)| *d == Decision::Pass).count();
        assert!(alarms <= 3, "{alarms} of {runs}");
        assert!(passes >= 90, "{passes} of {runs} shown within 25% at p99");
    }

    #[test]
    fn shifts_beyond_the_margin_fail_at_the_median_the_tail_and_the_p99() {
        let table = [
            // (quantile, relative margin, canary median, tail share, tail extra seconds)
            (0.99, 0.25, 0.075, 0.0, 0.0),  // the whole shape +50%: p99 +50%
            (0.99, 0.25, 0.0625, 0.0, 0.0), // +25% — exactly the margin — is not passed
            (0.5, 0.25, 0.075, 0.0, 0.0),   // the median +50%
            (0.99, 0.25, 0.05, 0.03, 0.2),  // tail only: 3% of requests 200 ms slower
        ];
        for (i, (quantile, relative, median, tail, extra)) in table.into_iter().enumerate() {
            let mut rng = StdRng::seed_from_u64(20 + i as u64);
            let mut test = LatencyTest::new(quantile, config(relative));
            let mut passed = false;
            for _ in 0..600 {
                test.observe(
                    &look(&mut rng, 20.0, median, tail, extra),
                    &look(&mut rng, 180.0, 0.05, 0.0, 0.0),
                );
                passed |= test.decision(true) == Decision::Pass;
            }
            assert!(!passed, "case {i} passed");
            if i != 1 {
                assert_eq!(
                    test.decision(true),
                    Decision::Fail,
                    "case {i}: {:?}",
                    test.evidence()
                );
            }
        }
    }

    #[test]
    fn the_thresholds_are_the_baselines_quantile_and_the_widened_one_on_sketch_boundaries() {
        let mut test = LatencyTest::new(0.5, config(0.5));
        let mut baseline = LatencySketch::default();
        for ms in 1..=100 {
            baseline.record(Duration::from_millis(ms));
        }
        test.observe(&LatencySketch::default(), &baseline);
        test.observe(&baseline, &baseline);
        let e = test.evidence();
        let (base, canary) = (e.baseline_threshold.unwrap(), e.canary_threshold.unwrap());
        assert!((base / 0.050 - 1.0).abs() < 0.02, "{base}");
        assert!((canary / base / 1.5 - 1.0).abs() < 0.02, "{canary}");
        assert_eq!(boundary_at_or_above(base), base);
        // Half the baseline is slower than its median; a quarter of the same latencies are
        // slower than 1.5 × it (76..=100 ms, give or take the boundary's 1%).
        assert_eq!(e.rate.baseline.events, 50);
        assert!((24..=25).contains(&e.rate.canary.events), "{e:?}");
    }
}
