//! Anytime-valid sequential tests: canary vs baseline, looked at as often as one likes, passing
//! only on evidence that the canary is not worse and failing only on evidence that it is.
//!
//! **The margin.** A canary is acceptable when its event rate (errors, or slow requests for
//! latency) is at most `max(p_b·(1 + relative), p_b + absolute)`, `p_b` being the baseline's: a
//! relative margin alone says nothing when neither version fails, an absolute one alone is too
//! loose for a busy service, so the larger allowance counts. The acceptable region is the union
//! of "ratio `r = p_c/p_b ≤ 1 + relative`" and "difference `d = p_c − p_b ≤ absolute`".
//!
//! **The ratio.** Each look brings, per version, the requests served since the previous look
//! and how many were events. Conditioned on the events of a look, the share that fell on the
//! canary is Binomial with `θ(r) = r·n_c / (r·n_c + n_b)` (the Poisson approximation, exact
//! enough for rates of a few percent). For a null ratio `r₀`, the product over looks of the
//! likelihood ratios of an alternative against `r₀` is a nonnegative supermartingale under the
//! null whatever the split of each look — weights change between canary steps — and so is the
//! average over a grid of alternatives (an e-process). Ville's inequality bounds the chance that
//! it ever reaches `1/α` by `α`. Alternatives above `r₀` test "harm" (`r ≤ r₀` is the null);
//! alternatives below test "safety" (`r ≥ r₀` is the null). This is the discrete-mixture form of
//! Lindon & Malek's sequential multinomial test ("Anytime-valid inference for multinomial count
//! data", NeurIPS 2022) for two arms; inverting it over `r₀` gives a confidence sequence.
//!
//! **The difference.** Each version's own rate has an anytime-valid confidence sequence
//! ([`bernoulli`]); `d` lies between the canary's lower bound minus the baseline's upper bound
//! and the canary's upper bound minus the baseline's lower bound.
//!
//! **Decisions.** *Fail* once both the ratio's lower bound exceeds `1 + relative` (harm e-process
//! at `α`) and the difference's lower bound exceeds `absolute` (each version's bound at `α/2`):
//! when the canary is acceptable one of the two is a false rejection, so the false-alarm rate
//! stays at most `α` however often one looks. *Pass* (once the horizon is reached and
//! `min_samples` are in) when either the ratio's upper bound is at most `1 + relative` (safety
//! e-process at `β/2`, `β = 1 − confidence`) or the difference's upper bound is at most
//! `absolute` (each version's bound at `β/4`): a canary worse than the margin passes with
//! probability at most `β`. Otherwise *continue*: the step is extended.

mod bernoulli;
mod latency;
#[cfg(test)]
mod tests;

use serde::Serialize;

use bernoulli::Tally;
pub use latency::{LatencyEvidence, LatencyTest};

/// Alternatives, as multiples (harm) or fractions (safety) of the null ratio `r₀`: from a small
/// change (×1.1: a canary a little inside the margin must still be shown inside it) to a gross
/// one (×10), equally weighted. Measured in `docs/benchmarks.md`: within a few seconds of an
/// oracle test that knew the change's size.
const ALTERNATIVE_RATIOS: [f64; 7] = [1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0];
/// The ratios searched when inverting the tests into an interval.
const RATIO_RANGE: (f64, f64) = (1e-3, 1e3);
/// Canary requests beyond which a projection stops: a decision that far away is "never".
const PROJECTION_LIMIT: u64 = 1_000_000_000;

/// What a look at the evidence concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The canary is worse than the baseline beyond the margin, at false-alarm rate `α`.
    Fail,
    /// The horizon is reached and the canary is shown within the margin at the confidence.
    Pass,
    /// The horizon is reached with fewer canary requests than `min_samples`.
    NoData,
    /// Keep looking: before the horizon, or at it while the evidence shows neither harm nor
    /// its absence (the step is extended).
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

    fn tally(&self) -> Tally {
        Tally {
            events: self.events as f64,
            requests: self.requests as f64,
        }
    }
}

/// How much worse than the baseline the canary may be; the larger allowance counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Margin {
    /// `0.5`: up to 50% more events than the baseline.
    pub relative: f64,
    /// `0.005`: up to 0.5 percentage points more events than the baseline.
    pub absolute: f64,
}

impl Margin {
    /// The highest acceptable canary rate next to a baseline rate.
    pub fn allowance(&self, baseline_rate: f64) -> f64 {
        (baseline_rate * (1.0 + self.relative)).max(baseline_rate + self.absolute)
    }
}

/// The parameters every sequential test shares.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TestConfig {
    /// The false-alarm bound of this test (a deployment's bound divided among its tests).
    pub alpha: f64,
    /// A pass needs the canary shown within the margin at this confidence.
    pub confidence: f64,
    pub margin: Margin,
    /// Canary requests needed before the horizon may pass.
    pub min_samples: u64,
}

impl Default for TestConfig {
    fn default() -> Self {
        Self {
            alpha: 0.01,
            confidence: 0.95,
            margin: Margin::default(),
            min_samples: 100,
        }
    }
}

impl TestConfig {
    fn beta(&self) -> f64 {
        1.0 - self.confidence
    }
    fn null_ratio(&self) -> f64 {
        1.0 + self.margin.relative.max(0.0)
    }
    fn harm_threshold(&self) -> f64 {
        1.0 / self.alpha
    }
    fn safety_threshold(&self) -> f64 {
        2.0 / self.beta()
    }
}

/// A bound of `None` is unbounded on that side.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// The bound a failure needs above the margin (at the false-alarm level).
    pub lower: Option<f64>,
    /// The bound a pass needs within the margin (at the confidence).
    pub upper: Option<f64>,
}

/// One look's counts on both sides, as reals (projections add expected counts).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Look {
    canary: Tally,
    baseline: Tally,
}

impl Look {
    /// The log likelihood ratio of ratio `alternative` against `null`, conditioned on the
    /// look's events.
    fn log_ratio(&self, null: f64, alternative: f64) -> f64 {
        let (n_c, n_b) = (self.canary.requests, self.baseline.requests);
        let share = |ratio: f64| ratio * n_c / (ratio * n_c + n_b);
        let (null_share, alternative_share) = (share(null), share(alternative));
        self.canary.events * (alternative_share / null_share).ln()
            + self.baseline.events * ((1.0 - alternative_share) / (1.0 - null_share)).ln()
    }

    /// Whether the look says anything about the ratio: requests on both sides, some event.
    fn informative(&self) -> bool {
        self.canary.requests > 0.0
            && self.baseline.requests > 0.0
            && self.canary.events + self.baseline.events > 0.0
    }
}

/// Log likelihood ratios of the harm alternatives (`r₀·m`) and the safety ones (`r₀/m`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Mixtures {
    harm: [f64; ALTERNATIVE_RATIOS.len()],
    safety: [f64; ALTERNATIVE_RATIOS.len()],
}

impl Mixtures {
    fn add(&mut self, look: &Look, null: f64) {
        for (i, m) in ALTERNATIVE_RATIOS.iter().enumerate() {
            self.harm[i] += look.log_ratio(null, null * m);
            self.safety[i] += look.log_ratio(null, null / m);
        }
    }
    fn harm(&self) -> f64 {
        mean_exp(&self.harm)
    }
    fn safety(&self) -> f64 {
        mean_exp(&self.safety)
    }
}

fn mean_exp(logs: &[f64]) -> f64 {
    logs.iter().map(|l| l.exp()).sum::<f64>() / logs.len() as f64
}

/// The anytime-valid one-sided test for an event rate, canary vs baseline.
#[derive(Debug, Clone)]
pub struct RateTest {
    config: TestConfig,
    /// The e-processes at the margin's ratio, updated at every look.
    at_margin: Mixtures,
    max_harm: f64,
    /// Looks that carry evidence about the ratio, kept to invert the test into an interval.
    informative: Vec<Look>,
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
    pub margin: Margin,
    /// Canary rate − baseline rate.
    pub difference: Interval,
    /// Canary rate / baseline rate.
    pub ratio: Interval,
    /// The harm e-process at the margin's ratio now; the ratio's side of a failure needs
    /// `threshold`.
    pub e_value: f64,
    pub threshold: f64,
    /// The safety e-process at the margin's ratio; the ratio's side of a pass needs
    /// `safety_threshold`.
    pub safety_e_value: f64,
    pub safety_threshold: f64,
    /// `min(1, 1 / sup harm e)`: valid at any look.
    pub p_value: f64,
    pub alpha: f64,
    pub confidence: f64,
    /// More canary requests a decision needs if the rates stay as observed; `None` when none
    /// is in sight (the canary sits on the margin, or nothing was served yet).
    pub needed: Option<u64>,
    pub looks: u64,
}

impl RateTest {
    pub fn new(config: TestConfig) -> Self {
        Self {
            config,
            at_margin: Mixtures::default(),
            max_harm: 1.0,
            informative: Vec::new(),
            canary: Counts::default(),
            baseline: Counts::default(),
            looks: 0,
        }
    }

    /// Takes one look's counts. A look where either version served nothing, or nothing was an
    /// event, says nothing about the ratio; its requests still count toward each version's own
    /// bounds.
    pub fn observe(&mut self, canary: Counts, baseline: Counts) {
        self.looks += 1;
        self.canary.add(canary);
        self.baseline.add(baseline);
        let look = Look {
            canary: canary.tally(),
            baseline: baseline.tally(),
        };
        if look.informative() {
            self.at_margin.add(&look, self.config.null_ratio());
            self.max_harm = self.max_harm.max(self.at_margin.harm());
            self.informative.push(look);
        }
    }

    /// The harm e-process now.
    pub fn e_value(&self) -> f64 {
        self.at_margin.harm()
    }

    pub fn p_value(&self) -> f64 {
        (1.0 / self.max_harm).min(1.0)
    }

    /// Fails as soon as the evidence allows; at the horizon, passes on evidence of
    /// non-inferiority, with `min_samples` canary requests.
    pub fn decision(&self, horizon_reached: bool) -> Decision {
        let (canary, baseline) = (self.canary.tally(), self.baseline.tally());
        if self.fails(self.max_harm, canary, baseline) {
            Decision::Fail
        } else if !horizon_reached {
            Decision::Continue
        } else if self.canary.requests < self.config.min_samples {
            Decision::NoData
        } else if self.passes(self.at_margin.safety(), canary, baseline) {
            Decision::Pass
        } else {
            Decision::Continue
        }
    }

    fn fails(&self, harm: f64, canary: Tally, baseline: Tally) -> bool {
        let config = &self.config;
        harm >= config.harm_threshold()
            && difference_lower(canary, baseline, config.alpha) > config.margin.absolute
    }

    fn passes(&self, safety: f64, canary: Tally, baseline: Tally) -> bool {
        let config = &self.config;
        safety >= config.safety_threshold()
            || difference_upper(canary, baseline, config.beta()) <= config.margin.absolute
    }

    /// The ratio interval: every `r₀` that neither the harm nor the safety test rejects.
    fn ratio_interval(&self) -> Interval {
        let mixtures = |null: f64| {
            let mut m = Mixtures::default();
            for look in &self.informative {
                m.add(look, null);
            }
            m
        };
        let (floor, ceiling) = RATIO_RANGE;
        let harm_rejects = |r: f64| mixtures(r).harm() >= self.config.harm_threshold();
        let safety_rejects = |r: f64| mixtures(r).safety() >= self.config.safety_threshold();
        // The harm e-value falls as r₀ grows, the safety one rises.
        let lower = if !harm_rejects(floor) {
            0.0
        } else if harm_rejects(ceiling) {
            ceiling
        } else {
            bisect_log(floor, ceiling, 1e-4, |r| !harm_rejects(r))
        };
        let upper = if !safety_rejects(ceiling) {
            None
        } else if safety_rejects(floor) {
            Some(floor)
        } else {
            Some(bisect_log(floor, ceiling, 1e-4, safety_rejects))
        };
        Interval {
            lower: Some(lower),
            upper,
        }
    }

    /// Canary requests to add, at the observed rates and split, until pass or fail.
    fn needed(&self) -> Option<u64> {
        if self.canary.requests == 0 || self.baseline.requests == 0 {
            return None;
        }
        let (canary, baseline) = (self.canary.tally(), self.baseline.tally());
        let decided = |extra: f64| {
            let split = baseline.requests / canary.requests;
            let look = Look {
                canary: Tally {
                    requests: extra,
                    events: extra * canary.events / canary.requests,
                },
                baseline: Tally {
                    requests: extra * split,
                    events: extra * split * baseline.events / baseline.requests,
                },
            };
            let mut mixtures = self.at_margin;
            if look.informative() {
                mixtures.add(&look, self.config.null_ratio());
            }
            let (c, b) = (plus(canary, look.canary), plus(baseline, look.baseline));
            let enough = self.canary.requests as f64 + extra >= self.config.min_samples as f64;
            self.fails(self.max_harm.max(mixtures.harm()), c, b)
                || (enough && self.passes(mixtures.safety(), c, b))
        };
        if decided(0.0) {
            return Some(0);
        }
        fewest(16, |extra| decided(extra as f64))
    }

    pub fn evidence(&self) -> RateEvidence {
        let config = &self.config;
        let (canary, baseline) = (self.canary.tally(), self.baseline.tally());
        RateEvidence {
            canary: self.canary,
            baseline: self.baseline,
            canary_rate: self.canary.rate(),
            baseline_rate: self.baseline.rate(),
            margin: config.margin,
            difference: Interval {
                lower: Some(difference_lower(canary, baseline, config.alpha)),
                upper: Some(difference_upper(canary, baseline, config.beta())),
            },
            ratio: self.ratio_interval(),
            e_value: self.e_value(),
            threshold: config.harm_threshold(),
            safety_e_value: self.at_margin.safety(),
            safety_threshold: config.safety_threshold(),
            p_value: self.p_value(),
            alpha: config.alpha,
            confidence: config.confidence,
            needed: self.needed(),
            looks: self.looks,
        }
    }
}

/// The fewest canary requests a step needs to pass even in the best case: a canary without a
/// single event, next to a baseline with nine times its traffic and events at `baseline_rate`.
/// `None` when no amount will do (a zero margin against a baseline without events).
pub fn requests_to_pass(config: TestConfig, baseline_rate: f64) -> Option<u64> {
    let passes = |n: u64| {
        let mut test = RateTest::new(config);
        let baseline = 9 * n;
        test.observe(
            Counts::new(n, 0),
            Counts::new(baseline, (baseline as f64 * baseline_rate).round() as u64),
        );
        test.decision(true) == Decision::Pass
    };
    fewest(config.min_samples.max(1), passes)
}

/// The fewest requests, from `start` up to `PROJECTION_LIMIT`, for which `enough` holds
/// (assumed to hold for every larger count once it holds): doubling, then bisecting.
fn fewest(start: u64, enough: impl Fn(u64) -> bool) -> Option<u64> {
    let mut high = start;
    while !enough(high) {
        high = high.checked_mul(2).filter(|&h| h <= PROJECTION_LIMIT)?;
    }
    let mut low = high / 2;
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if enough(middle) {
            high = middle;
        } else {
            low = middle;
        }
    }
    Some(high)
}

fn plus(a: Tally, b: Tally) -> Tally {
    Tally {
        events: a.events + b.events,
        requests: a.requests + b.requests,
    }
}

/// The difference's lower bound for a failure at `alpha` (half to each version).
fn difference_lower(canary: Tally, baseline: Tally, alpha: f64) -> f64 {
    bernoulli::lower(canary, alpha / 2.0) - bernoulli::upper(baseline, alpha / 2.0)
}

/// The difference's upper bound for a pass: the pass's `beta` gives half to the ratio, a
/// quarter to each version here.
fn difference_upper(canary: Tally, baseline: Tally, beta: f64) -> f64 {
    bernoulli::upper(canary, beta / 4.0) - bernoulli::lower(baseline, beta / 4.0)
}

/// The boundary between `low` (where `beyond` is false) and `high` (true) on a log scale, to a
/// relative `precision`, returning the `high` side: the bounds searched with it stay on their
/// conservative side.
fn bisect_log(mut low: f64, mut high: f64, precision: f64, beyond: impl Fn(f64) -> bool) -> f64 {
    for _ in 0..60 {
        let middle = (low * high).sqrt();
        if beyond(middle) {
            high = middle;
        } else {
            low = middle;
        }
        if high / low < 1.0 + precision {
            break;
        }
    }
    high
}
