//! Anytime-valid sequential tests: canary vs baseline, looked at as often as one likes.
//!
//! **Rate metrics** (errors over requests). Each look brings, per version, the requests served
//! since the previous look and how many of them were "events" (errors, or slow requests for the
//! latency test). Conditioned on the events of a look, the share that fell on the canary is
//! Binomial with `θ(r) = r·n_c / (r·n_c + n_b)`, where `n_c`, `n_b` are the look's requests and
//! `r` is the ratio of the canary's event rate to the baseline's (the Poisson approximation,
//! exact enough for rates of a few percent; hypergeometric truth only makes the test more
//! conservative). The null hypothesis is `r ≤ r₀ = 1 + tolerance`; the alternatives are a fixed
//! grid of ratios above `r₀`. For each alternative the product of per-look likelihood ratios
//! against `r₀` is a nonnegative supermartingale under the null, whatever the traffic split of
//! each look — weights may change between canary steps — and so is their average (the e-process
//! `E`). Ville's inequality bounds `P(sup E ≥ 1/α) ≤ α`: failing as soon as `E ≥ 1/α` keeps the
//! false-alarm rate under `α` however often one looks. The always-valid p-value is
//! `min(1, 1 / sup E)`. Only "worse" can fail: a better canary drives `E` towards 0.
//!
//! This is the discrete-mixture form of the sequential multinomial test of Lindon & Malek
//! ("Anytime-valid inference for multinomial count data", NeurIPS 2022) for two arms; the grid
//! replaces their Dirichlet prior because a changing split makes the conjugate update inexact.
//!
//! **Latency** reuses it: a request is an event when it is slower than a threshold read off
//! the baseline's own latency histogram (the bucket bound at its chosen quantile, from looks
//! before the current one, so the threshold is predictable). If the canary's latency is no
//! worse than the baseline's scaled by `1 + tolerance`, a slow request is no likelier on the
//! canary, and the rate test applies unchanged.

use serde::Serialize;

/// Alternatives, as multiples of the null ratio `r₀`: from a small regression (×1.5, the power
/// target) to a gross one (×10), equally weighted. Measured in `docs/benchmarks.md`: within a few
/// seconds of an oracle test that knew the regression's size.
const ALTERNATIVE_RATIOS: [f64; 5] = [1.5, 2.0, 3.0, 5.0, 10.0];

/// What a look at the evidence concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The canary is worse than the baseline beyond the tolerance, at false-alarm rate `α`.
    Fail,
    /// The horizon is reached with enough samples and no regression was found.
    Pass,
    /// The horizon is reached without enough samples to say.
    NoData,
    /// Keep looking.
    Continue,
}

/// Requests served by one version since the previous look, and how many were events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub requests: u64,
    pub events: u64,
}

impl Counts {
    pub fn new(requests: u64, events: u64) -> Self {
        Self {
            requests,
            events: events.min(requests),
        }
    }

    fn add(&mut self, other: Counts) {
        self.requests += other.requests;
        self.events += other.events;
    }

    /// The observed event rate, `None` before any request.
    pub fn rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.events as f64 / self.requests as f64)
    }
}

/// The parameters every sequential test shares.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TestConfig {
    /// The false-alarm bound.
    pub alpha: f64,
    /// How much worse the canary may be before it fails: `0.1` tolerates a 10% higher rate
    /// (or 10% slower requests for latency).
    pub tolerance: f64,
    /// Canary requests needed before the horizon may pass.
    pub min_samples: u64,
}

impl Default for TestConfig {
    fn default() -> Self {
        Self {
            alpha: 0.01,
            tolerance: 0.0,
            min_samples: 100,
        }
    }
}

/// The anytime-valid one-sided test for an event rate, canary vs baseline.
#[derive(Debug, Clone)]
pub struct RateTest {
    config: TestConfig,
    null_ratio: f64,
    /// Per alternative: the log likelihood ratio against the null so far.
    log_ratios: [f64; ALTERNATIVE_RATIOS.len()],
    max_e_value: f64,
    canary: Counts,
    baseline: Counts,
    looks: u64,
}

/// A test's state at a look, recorded as the evidence of a judgement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateEvidence {
    pub canary: Counts,
    pub baseline: Counts,
    pub canary_rate: Option<f64>,
    pub baseline_rate: Option<f64>,
    /// The e-process now; the test fails when it reaches `threshold`.
    pub e_value: f64,
    pub threshold: f64,
    /// `min(1, 1 / sup e)`: valid at any look.
    pub p_value: f64,
    pub alpha: f64,
    pub tolerance: f64,
    pub looks: u64,
}

impl RateTest {
    pub fn new(config: TestConfig) -> Self {
        Self {
            config,
            null_ratio: 1.0 + config.tolerance.max(0.0),
            log_ratios: [0.0; ALTERNATIVE_RATIOS.len()],
            max_e_value: 1.0,
            canary: Counts::default(),
            baseline: Counts::default(),
            looks: 0,
        }
    }

    /// Takes one look's counts. A look where either version served nothing carries no evidence
    /// about the ratio and only adds to the totals.
    pub fn observe(&mut self, canary: Counts, baseline: Counts) {
        self.looks += 1;
        self.canary.add(canary);
        self.baseline.add(baseline);
        let events = canary.events + baseline.events;
        if canary.requests == 0 || baseline.requests == 0 || events == 0 {
            return;
        }
        let (n_c, n_b) = (canary.requests as f64, baseline.requests as f64);
        let (x_c, x_b) = (canary.events as f64, baseline.events as f64);
        let share = |ratio: f64| ratio * n_c / (ratio * n_c + n_b);
        let null_share = share(self.null_ratio);
        for (log_ratio, multiple) in self.log_ratios.iter_mut().zip(ALTERNATIVE_RATIOS) {
            let alternative_share = share(self.null_ratio * multiple);
            *log_ratio += x_c * (alternative_share / null_share).ln()
                + x_b * ((1.0 - alternative_share) / (1.0 - null_share)).ln();
        }
        self.max_e_value = self.max_e_value.max(self.e_value());
    }

    /// The e-process: the average likelihood ratio over the alternatives.
    pub fn e_value(&self) -> f64 {
        let sum: f64 = self.log_ratios.iter().map(|l| l.exp()).sum();
        sum / self.log_ratios.len() as f64
    }

    pub fn p_value(&self) -> f64 {
        (1.0 / self.max_e_value).min(1.0)
    }

    /// Fails as soon as the evidence allows; at the horizon, passes with enough canary requests.
    pub fn decision(&self, horizon_reached: bool) -> Decision {
        if self.max_e_value >= 1.0 / self.config.alpha {
            Decision::Fail
        } else if !horizon_reached {
            Decision::Continue
        } else if self.canary.requests >= self.config.min_samples {
            Decision::Pass
        } else {
            Decision::NoData
        }
    }

    pub fn evidence(&self) -> RateEvidence {
        RateEvidence {
            canary: self.canary,
            baseline: self.baseline,
            canary_rate: self.canary.rate(),
            baseline_rate: self.baseline.rate(),
            e_value: self.e_value(),
            threshold: 1.0 / self.config.alpha,
            p_value: self.p_value(),
            alpha: self.config.alpha,
            tolerance: self.config.tolerance,
            looks: self.looks,
        }
    }
}

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
    tolerance: f64,
    rate: RateTest,
    /// The baseline's histogram over every look so far, for the threshold.
    baseline_seen: Option<Histogram>,
    /// The thresholds of the latest look (baseline, canary), seconds.
    thresholds: Option<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyEvidence {
    pub quantile: f64,
    /// A baseline request slower than this was an event in the latest look (seconds).
    pub baseline_threshold: Option<f64>,
    /// The canary's threshold: the baseline's, scaled by `1 + tolerance`, up to a bucket bound.
    pub canary_threshold: Option<f64>,
    /// Requests and slow requests per version.
    #[serde(flatten)]
    pub rate: RateEvidence,
}

impl LatencyTest {
    /// `quantile` in `(0, 1)`, e.g. `0.99`.
    pub fn new(quantile: f64, config: TestConfig) -> Self {
        Self {
            quantile,
            tolerance: config.tolerance.max(0.0),
            rate: RateTest::new(TestConfig {
                tolerance: 0.0,
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
            let scaled = seen.bounds[base] * (1.0 + self.tolerance);
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
        let mut rate = self.rate.evidence();
        rate.tolerance = self.tolerance;
        LatencyEvidence {
            quantile: self.quantile,
            baseline_threshold: self.thresholds.map(|t| t.0),
            canary_threshold: self.thresholds.map(|t| t.1),
            rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use rand_distr::{Binomial, Distribution, LogNormal, Poisson};

    fn look(rng: &mut StdRng, requests_per_look: f64, rate: f64) -> Counts {
        let requests = Poisson::new(requests_per_look).unwrap().sample(rng) as u64;
        let events = Binomial::new(requests, rate).unwrap().sample(rng);
        Counts::new(requests, events)
    }

    /// Looks after every handful of requests (each assigned to the canary at random), so
    /// nearly every error is its own look; returns whether the test ever failed.
    fn aa_run_looking_at_every_error(rng: &mut StdRng, rate: f64, canary_share: f64) -> bool {
        let mut test = RateTest::new(TestConfig::default());
        for _ in 0..2000 {
            let (mut canary, mut baseline) = (Counts::default(), Counts::default());
            for _ in 0..10 {
                let event = u64::from(rng.random_bool(rate));
                let arm = if rng.random_bool(canary_share) {
                    &mut canary
                } else {
                    &mut baseline
                };
                arm.add(Counts::new(1, event));
            }
            test.observe(canary, baseline);
            if test.decision(false) == Decision::Fail {
                return true;
            }
        }
        false
    }

    #[test]
    fn identical_versions_fail_at_most_alpha_of_the_time_looking_every_second() {
        let mut rng = StdRng::seed_from_u64(1);
        let runs = 2000;
        let mut false_alarms = 0;
        for run in 0..runs {
            let mut test = RateTest::new(TestConfig::default());
            // The split changes between steps, as in a canary: 5% → 25% → 50%.
            for second in 0..600 {
                let share = [0.05, 0.25, 0.5][second / 200];
                let rate = if run % 2 == 0 { 0.01 } else { 0.05 };
                test.observe(
                    look(&mut rng, 200.0 * share, rate),
                    look(&mut rng, 200.0 * (1.0 - share), rate),
                );
                if test.decision(false) == Decision::Fail {
                    false_alarms += 1;
                    break;
                }
            }
        }
        let rate = false_alarms as f64 / runs as f64;
        // α = 1%; with 2,000 runs the binomial standard error at 1% is 0.22%.
        assert!(rate <= 0.01 + 3.0 * 0.0022, "false alarms {rate}");
    }

    #[test]
    fn identical_versions_fail_at_most_alpha_of_the_time_looking_after_every_error() {
        let mut rng = StdRng::seed_from_u64(2);
        let runs = 2000;
        let alarms = (0..runs)
            .filter(|_| aa_run_looking_at_every_error(&mut rng, 0.05, 0.2))
            .count();
        let rate = alarms as f64 / runs as f64;
        assert!(rate <= 0.01 + 3.0 * 0.0022, "false alarms {rate}");
    }

    #[test]
    fn a_better_canary_never_fails_and_a_tripled_error_rate_does() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut better = RateTest::new(TestConfig::default());
        let mut worse = RateTest::new(TestConfig::default());
        let mut failed_at = None;
        for second in 0..600 {
            better.observe(look(&mut rng, 20.0, 0.005), look(&mut rng, 180.0, 0.01));
            worse.observe(look(&mut rng, 20.0, 0.03), look(&mut rng, 180.0, 0.01));
            if failed_at.is_none() && worse.decision(false) == Decision::Fail {
                failed_at = Some(second);
            }
        }
        assert_eq!(better.decision(true), Decision::Pass);
        assert!(better.e_value() < 1.0);
        assert!(failed_at.is_some_and(|s| s < 200), "{failed_at:?}");
        let evidence = worse.evidence();
        assert!(evidence.p_value <= 0.01);
        assert_eq!(evidence.threshold, 100.0);
    }

    #[test]
    fn tolerance_allows_a_slightly_worse_canary() {
        let mut rng = StdRng::seed_from_u64(4);
        let config = TestConfig {
            tolerance: 0.5,
            ..TestConfig::default()
        };
        let mut alarms = 0;
        for _ in 0..200 {
            let mut test = RateTest::new(config);
            for _ in 0..600 {
                // 1.2× worse, inside the 1.5× tolerance.
                test.observe(look(&mut rng, 50.0, 0.012), look(&mut rng, 150.0, 0.01));
            }
            alarms += usize::from(test.decision(true) == Decision::Fail);
        }
        assert!(alarms <= 4, "{alarms}");
    }

    #[test]
    fn decisions_follow_the_horizon_and_the_sample_size() {
        let table = [
            // (canary requests, horizon reached, expected)
            (0, false, Decision::Continue),
            (0, true, Decision::NoData),
            (99, true, Decision::NoData),
            (100, true, Decision::Pass),
            (100, false, Decision::Continue),
        ];
        for (requests, horizon, expected) in table {
            let mut test = RateTest::new(TestConfig::default());
            test.observe(Counts::new(requests, 0), Counts::new(1000, 0));
            assert_eq!(test.decision(horizon), expected, "{requests} {horizon}");
        }
    }

    #[test]
    fn a_canary_with_errors_where_the_baseline_has_none_fails_within_a_few_errors() {
        let mut test = RateTest::new(TestConfig::default());
        let mut looks = 0;
        while test.decision(false) != Decision::Fail {
            test.observe(Counts::new(10, 1), Counts::new(90, 0));
            looks += 1;
        }
        // With a 10% split each canary error carries at most ln 10 of evidence.
        assert!((3..=8).contains(&looks), "{looks}");
    }

    #[test]
    fn a_look_without_traffic_on_one_side_carries_no_evidence() {
        let mut test = RateTest::new(TestConfig::default());
        test.observe(Counts::new(0, 0), Counts::new(100, 50));
        test.observe(Counts::new(100, 50), Counts::new(0, 0));
        assert_eq!(test.e_value(), 1.0);
        assert_eq!(test.evidence().canary, Counts::new(100, 50));
        assert_eq!(test.evidence().looks, 2);
    }

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
                tolerance: 0.5,
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
