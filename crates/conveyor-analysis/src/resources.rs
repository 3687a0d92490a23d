//! Resource tests, canary vs baseline, from what the target samples of each version at every
//! look: memory growth (leaks), CPU time per request, open descriptor growth (descriptor
//! leaks), and restarts. Same contract as `sequential`: `observe` every look, `decision` fails
//! as soon as the evidence allows and passes only at the horizon on evidence, `evidence` is
//! what a `deployment_judged` event records.
//!
//! **Per request.** Growth and CPU are compared per request served, not per second: with 10%
//! of the traffic a canary with the same request-driven leak grows nine times slower per second
//! than the baseline, and per request both read alike. What grows with time instead (caches
//! filling, timers, health checks) reads larger per request on the version with less traffic;
//! the absolute margins are sized to absorb that (see `GrowthConfig::defaults`).
//!
//! **Blocks.** Each version's looks are cut into blocks of at least `block_seconds` and
//! `block_requests`; a block's slope is its growth (last sample − first) over the requests
//! between. The statistic is the median of the block slopes: a Theil–Sen estimate restricted to
//! disjoint pairs of samples. Disjoint, because all-pairs Theil–Sen and Sen's interval assume
//! independent errors around a line, and RSS is not that: an allocator's jump of a few hundred
//! KiB persists, making the level a random walk, under which all-pairs slopes share increments
//! and their interval is far too narrow. Disjoint blocks (the look after a block is skipped, so
//! no two blocks share a sample) have independent slopes both when the noise persists and when
//! it comes and goes; and the median is untouched by a few outlying blocks: allocator jumps, or
//! the warm-up's one-time step (looks before `warmup_seconds` are also left out).
//!
//! **Anytime-valid bounds.** When the noise over a block (jumps, jitter, tick rounding) is as
//! likely down as up, every block's slope has the version's growth per request `m` as its
//! median: `P(slope > m) ≤ ½` for every block whatever came before (the blocks are
//! independent), whatever its length. So with `X` the blocks above `m` out of
//! `n`, the average over a grid of `p > ½` of `(2p)^X (2(1−p))^(n−X)` is a nonnegative
//! supermartingale; by Ville's inequality it never reaches `2/α` with probability `1 − α/2`,
//! however often one looks. Every `θ` at which it has reached `2/α` is below the median with
//! that confidence: the lower bound is the `x*`-th largest slope, `x*` the fewest exceedances
//! that reach `2/α` (the sign test's confidence interval for a median, made sequential as in
//! Howard & Ramdas, "Sequential estimation of quantiles", 2022, with a discrete mixture as in
//! `sequential`). The upper bound mirrors it. With margin `T(b) = b + max((ratio − 1)·max(b,
//! 0), absolute)` (increasing in `b`), the test fails when the canary's lower bound exceeds
//! `T(baseline's upper bound)`: both bounds hold at every look with probability `1 − α`, and
//! then the canary's median exceeds `T` of the baseline's. It passes when the canary's upper
//! bound is at most `T(baseline's lower bound)` — evidence that it does not, never the absence
//! of evidence — and passes a worse canary with probability at most `α` by the same argument.
//! Both bounds must be wrong at once for a false alarm, so at the edge of the null (no margin,
//! identical versions) the rate measured is far below `α`.
//!
//! **Restarts** are facts, not samples: a healthy instance does not exit by itself. See
//! `RestartTest`.

use serde::Serialize;

use crate::sequential::Decision;

// === looks ===

/// What one version's instances use at a look, summed over them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    pub rss_bytes: u64,
    /// A counter: CPU seconds since each instance's current process started.
    pub cpu_seconds: f64,
    pub open_fds: u64,
}

/// One version at a look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct VersionLook {
    /// Requests it served since the previous look.
    pub requests: u64,
    pub instances: u32,
    /// Restarts of its instances so far, summed.
    pub restarts: u64,
    /// `None` when the sample is incomplete: some instance had no running process at the look.
    pub usage: Option<Usage>,
}

/// One look at both versions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Look {
    /// Seconds since the analysis started.
    pub at: f64,
    pub canary: VersionLook,
    pub baseline: VersionLook,
}

// === growth per request ===

/// What a `GrowthTest` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    /// Resident memory: a leak.
    Memory,
    /// CPU time per request.
    Cpu,
    /// Open file descriptors: a descriptor leak.
    Fds,
}

impl Quantity {
    fn of(self, usage: &Usage) -> f64 {
        match self {
            Quantity::Memory => usage.rss_bytes as f64,
            Quantity::Cpu => usage.cpu_seconds,
            Quantity::Fds => usage.open_fds as f64,
        }
    }

    /// The unit of a slope.
    pub fn unit(self) -> &'static str {
        match self {
            Quantity::Memory => "bytes per request",
            Quantity::Cpu => "CPU seconds per request",
            Quantity::Fds => "descriptors per request",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GrowthConfig {
    /// The false-alarm bound (and the bound on passing a version that is worse).
    pub alpha: f64,
    /// The canary fails only above `ratio` times the baseline's slope…
    pub ratio: f64,
    /// …and above the baseline's plus this, per request, in the quantity's unit.
    pub absolute: f64,
    /// Looks before this (seconds since the start) are left out: warm-up.
    pub warmup_seconds: f64,
    /// A block spans at least this long…
    pub block_seconds: f64,
    /// …and at least this many requests.
    pub block_requests: u64,
}

impl GrowthConfig {
    /// The defaults per quantity, with a 15 s warm-up and blocks of 4 s and 20 requests: a
    /// canary on 6 requests/s makes a block every 5 looks of a second (the look after a block is
    /// skipped), and has the 11 blocks the first bound needs at α = 0.01 within a minute of its
    /// warm-up, some 400 requests after it started.
    ///
    ///
    /// - Memory: above 2× the baseline's growth and 1 MiB per 1,000 requests more. Below that,
    ///   a block of a canary's 20–30 requests grows by a few pages, what allocators and caches
    ///   do anyway; above it a release exhausts a 1 GiB instance within a million requests.
    /// - CPU: above 1.5× and 1 ms per request more. Half as much CPU again is what needs more
    ///   machines; 1 ms absorbs both the 10 ms clock tick over a block's requests (≈0.4 ms per
    ///   request) and background work spread over a canary's few requests (2 ms/s of health
    ///   checks and timers at 6 requests/s is 0.3 ms per request more than on the baseline).
    /// - Descriptors: above 2× and one per 10 requests more. Connections come and go, moving
    ///   the count by a few between samples (≈0.1 per request over a block); a smaller margin
    ///   would leave half the blocks of a sound canary above it, and it could never pass.
    ///   Leaks per request or per connection are far above it.
    pub fn defaults(quantity: Quantity, alpha: f64) -> Self {
        let (ratio, absolute) = match quantity {
            Quantity::Memory => (2.0, (1 << 20) as f64 / 1000.0),
            Quantity::Cpu => (1.5, 0.001),
            Quantity::Fds => (2.0, 0.1),
        };
        Self {
            alpha,
            ratio,
            absolute,
            warmup_seconds: 15.0,
            block_seconds: 4.0,
            block_requests: 20,
        }
    }

    /// `T(b)`: the canary's slope that a baseline slope `b` allows.
    fn allowed(&self, baseline: f64) -> f64 {
        baseline + ((self.ratio - 1.0) * baseline.max(0.0)).max(self.absolute)
    }

    /// The baseline slope whose allowance is `canary` (`T⁻¹`).
    fn allowing(&self, canary: f64) -> f64 {
        if self.ratio <= 1.0 {
            return canary - self.absolute;
        }
        // Beyond the knee the relative margin is the larger.
        let knee = self.absolute.max(0.0) / (self.ratio - 1.0);
        if canary >= self.ratio * knee {
            canary / self.ratio
        } else {
            canary - self.absolute
        }
    }
}

/// Where a block starts: a complete sample after the warm-up.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    at: f64,
    /// Requests served up to this look.
    requests: u64,
    value: f64,
    /// Blocks never span a restart (counters start again) or a change of instances.
    instances: u32,
    restarts: u64,
}

/// One version's blocks.
#[derive(Debug, Clone, Default)]
struct Blocks {
    requests: u64,
    /// The open block's start; `None` right after a block closed (its last sample is not
    /// reused, so no two blocks share a sample).
    anchor: Option<Anchor>,
    /// Closed blocks' slopes, ascending.
    slopes: Vec<f64>,
    /// Summed over closed blocks.
    block_requests: u64,
    block_seconds: f64,
    block_growth: f64,
    /// Looks since the warm-up, for how many looks a block takes.
    looks: u64,
}

impl Blocks {
    fn observe(&mut self, at: f64, version: &VersionLook, quantity: Quantity, config: &GrowthConfig) -> bool {
        self.requests += version.requests;
        if at < config.warmup_seconds {
            return false;
        }
        self.looks += 1;
        let Some(usage) = &version.usage else {
            return false;
        };
        let here = Anchor {
            at,
            requests: self.requests,
            value: quantity.of(usage),
            instances: version.instances,
            restarts: version.restarts,
        };
        let Some(start) = self.anchor else {
            self.anchor = Some(here);
            return false;
        };
        if (start.instances, start.restarts) != (here.instances, here.restarts) {
            self.anchor = Some(here);
            return false;
        }
        let requests = here.requests - start.requests;
        if here.at - start.at < config.block_seconds || requests < config.block_requests.max(1) {
            return false;
        }
        let growth = here.value - start.value;
        let slope = growth / requests as f64;
        let position = self.slopes.partition_point(|s| *s < slope);
        self.slopes.insert(position, slope);
        self.block_requests += requests;
        self.block_seconds += here.at - start.at;
        self.block_growth += growth;
        self.anchor = None;
        true
    }

    fn median(&self) -> Option<f64> {
        let n = self.slopes.len();
        (n > 0).then(|| (self.slopes[(n - 1) / 2] + self.slopes[n / 2]) / 2.0)
    }

    /// `(lower, upper)` bounds of the median at `α/2` each, when there are blocks enough.
    fn bounds(&self, alpha: f64) -> (Option<f64>, Option<f64>) {
        let n = self.slopes.len();
        match fewest_exceedances(n, alpha) {
            Some(x) => (Some(self.slopes[n - x]), Some(self.slopes[x - 1])),
            None => (None, None),
        }
    }

    /// The share of slopes on the side of `theta` that `keep` picks.
    fn share(&self, keep: impl Fn(f64) -> bool) -> f64 {
        let n = self.slopes.len().max(1);
        self.slopes.iter().filter(|s| keep(**s)).count() as f64 / n as f64
    }

    /// More looks this version needs for a bound to cross to where a `share` of its slopes
    /// lie, if that share holds; `None` when it never would (a share of at most ½).
    fn looks_needed(&self, share: f64, alpha: f64) -> Option<u64> {
        let n = self.slopes.len() as u64;
        let blocks = blocks_needed(n, share, alpha)?;
        let per_block = self.looks.div_ceil(n.max(1)).max(1);
        Some(blocks.saturating_sub(n) * per_block)
    }

    fn evidence(&self, alpha: f64) -> SlopeEvidence {
        let (lower, upper) = self.bounds(alpha);
        SlopeEvidence {
            blocks: self.slopes.len() as u64,
            requests: self.block_requests,
            seconds: self.block_seconds,
            median: self.median(),
            lower,
            upper,
            per_second: (self.block_seconds > 0.0).then(|| self.block_growth / self.block_seconds),
        }
    }
}

/// Alternatives of the sign e-process: the chance that a block lies beyond the bound. From a
/// slight tilt to nearly every block, equally weighted: a gross leak is found in
/// `log(2/α) / log 1.9` blocks (11 at α = 0.01).
const SHARES: [f64; 5] = [0.55, 0.65, 0.75, 0.85, 0.95];

/// `log E` for `x` of `n` blocks beyond `θ`.
fn log_e_value(n: u64, x: u64) -> f64 {
    let logs = SHARES.map(|p| x as f64 * (2.0 * p).ln() + (n - x) as f64 * (2.0 * (1.0 - p)).ln());
    let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logs.iter().map(|l| (l - top).exp()).sum();
    top + (sum / SHARES.len() as f64).ln()
}

/// The fewest of `n` blocks beyond `θ` that put `θ` outside the bounds (the e-process at
/// `2/α`); `None` when even all `n` do not.
fn fewest_exceedances(n: usize, alpha: f64) -> Option<usize> {
    let n = n as u64;
    let threshold = (2.0 / alpha).ln();
    if n == 0 || log_e_value(n, n) < threshold {
        return None;
    }
    // `log E` grows with `x`: the first `x` that reaches the threshold.
    let (mut low, mut high) = (0, n);
    while low < high {
        let mid = (low + high) / 2;
        if log_e_value(n, mid) >= threshold {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    Some(low as usize)
}

/// The fewest blocks (at least `n`) at which a `share` of them beyond a bound would move it.
fn blocks_needed(n: u64, share: f64, alpha: f64) -> Option<u64> {
    // A cap: 2²⁰ blocks of 5 s are two months.
    const MOST: u64 = 1 << 20;
    let enough = |blocks: u64| {
        fewest_exceedances(blocks as usize, alpha).is_some_and(|x| x as f64 <= share * blocks as f64)
    };
    if share <= 0.5 {
        return None;
    }
    let mut high = n.max(1);
    while !enough(high) {
        if high >= MOST {
            return None;
        }
        high *= 2;
    }
    let mut low = (high / 2).max(n);
    while low < high {
        let mid = (low + high) / 2;
        if enough(mid) {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    Some(high)
}

/// The anytime-valid test of a quantity's growth per request, canary vs baseline.
#[derive(Debug, Clone)]
pub struct GrowthTest {
    quantity: Quantity,
    config: GrowthConfig,
    canary: Blocks,
    baseline: Blocks,
    looks: u64,
    /// The bounds crossed at some look: the test stays failed.
    failed: bool,
}

/// One version's blocks, for the evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlopeEvidence {
    pub blocks: u64,
    /// Requests and seconds inside the blocks.
    pub requests: u64,
    pub seconds: f64,
    /// The median block slope, per request.
    pub median: Option<f64>,
    /// Anytime-valid bounds of the median (each at `α/2`), once there are blocks enough.
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    /// The blocks' growth per second, to read beside the per-request figures.
    pub per_second: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GrowthEvidence {
    pub quantity: Quantity,
    pub unit: &'static str,
    pub canary: SlopeEvidence,
    pub baseline: SlopeEvidence,
    /// The canary fails when its lower bound is above this: the margin over the baseline's
    /// upper bound.
    pub fail_above: Option<f64>,
    /// The canary passes when its upper bound is at most this: the margin over the baseline's
    /// lower bound.
    pub pass_at_most: Option<f64>,
    pub ratio: f64,
    pub absolute: f64,
    pub alpha: f64,
    pub looks: u64,
}

impl GrowthTest {
    pub fn new(quantity: Quantity, config: GrowthConfig) -> Self {
        Self {
            quantity,
            config,
            canary: Blocks::default(),
            baseline: Blocks::default(),
            looks: 0,
            failed: false,
        }
    }

    pub fn observe(&mut self, look: &Look) {
        self.looks += 1;
        let closed_canary = self
            .canary
            .observe(look.at, &look.canary, self.quantity, &self.config);
        let closed_baseline = self
            .baseline
            .observe(look.at, &look.baseline, self.quantity, &self.config);
        if (closed_canary || closed_baseline) && !self.failed {
            self.failed = self
                .fail_above()
                .zip(self.canary.bounds(self.config.alpha).0)
                .is_some_and(|(threshold, lower)| lower > threshold);
        }
    }

    fn fail_above(&self) -> Option<f64> {
        self.baseline
            .bounds(self.config.alpha)
            .1
            .map(|upper| self.config.allowed(upper))
    }

    fn pass_at_most(&self) -> Option<f64> {
        self.baseline
            .bounds(self.config.alpha)
            .0
            .map(|lower| self.config.allowed(lower))
    }

    fn passes(&self) -> bool {
        self.pass_at_most()
            .zip(self.canary.bounds(self.config.alpha).1)
            .is_some_and(|(threshold, upper)| upper <= threshold)
    }

    /// Fails as soon as the bounds allow; at the horizon, passes on evidence; with bounds on
    /// both sides but no decision, continues (the step is extended); without them, lacks data.
    pub fn decision(&self, horizon_reached: bool) -> Decision {
        let bounded = |blocks: &Blocks| {
            let (lower, upper) = blocks.bounds(self.config.alpha);
            lower.is_some() && upper.is_some()
        };
        if self.failed {
            Decision::Fail
        } else if !horizon_reached {
            Decision::Continue
        } else if self.passes() {
            Decision::Pass
        } else if bounded(&self.canary) && bounded(&self.baseline) {
            Decision::Continue
        } else {
            Decision::NoData
        }
    }

    /// An estimate of how many more looks a decision needs, if both versions' slopes keep their
    /// current spread: each side's bound must reach the point where the other side's median
    /// puts the margin. `Some(0)` when it could decide now, `None` before both have a block or
    /// while the medians sit on the margin.
    pub fn looks_needed(&self) -> Option<u64> {
        if self.failed || self.passes() {
            return Some(0);
        }
        let (canary, baseline) = (self.canary.median()?, self.baseline.median()?);
        let (canary_at, baseline_at) = (self.config.allowed(baseline), self.config.allowing(canary));
        let alpha = self.config.alpha;
        let (canary_needs, baseline_needs) = if canary > canary_at {
            (
                self.canary
                    .looks_needed(self.canary.share(|s| s > canary_at), alpha)?,
                self.baseline
                    .looks_needed(self.baseline.share(|s| s < baseline_at), alpha)?,
            )
        } else {
            (
                self.canary
                    .looks_needed(self.canary.share(|s| s <= canary_at), alpha)?,
                self.baseline
                    .looks_needed(self.baseline.share(|s| s >= baseline_at), alpha)?,
            )
        };
        Some(canary_needs.max(baseline_needs))
    }

    pub fn evidence(&self) -> GrowthEvidence {
        let alpha = self.config.alpha;
        GrowthEvidence {
            quantity: self.quantity,
            unit: self.quantity.unit(),
            canary: self.canary.evidence(alpha),
            baseline: self.baseline.evidence(alpha),
            fail_above: self.fail_above(),
            pass_at_most: self.pass_at_most(),
            ratio: self.config.ratio,
            absolute: self.config.absolute,
            alpha,
            looks: self.looks,
        }
    }
}

// === restarts ===

/// Restarts during the analysis. An instance that is healthy does not exit by itself, so there
/// is no noise to tell a restart from: the canary fails as soon as it restarted more than
/// `tolerance` times and more often per instance than the baseline during the same looks (a
/// baseline that restarts as well points at the machine, and the canary is then judged against
/// its rate). No false-alarm rate applies: the guarantee is that a sound version never
/// restarts. It passes at the horizon when it has been looked at and did not fail.
#[derive(Debug, Clone, Default)]
pub struct RestartTest {
    tolerance: u64,
    canary: Restarts,
    baseline: Restarts,
    looks: u64,
    failed: bool,
}

/// One version's restarts during the analysis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Restarts {
    /// Restarts since the first look.
    pub during: u64,
    pub instances: u32,
    /// The version's count at the previous look.
    #[serde(skip)]
    last: Option<u64>,
}

impl Restarts {
    fn observe(&mut self, version: &VersionLook) {
        // Removed instances take their restarts out of the sum: only increases count.
        if let Some(last) = self.last {
            self.during += version.restarts.saturating_sub(last);
        }
        self.last = Some(version.restarts);
        self.instances = version.instances;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestartEvidence {
    pub canary: Restarts,
    pub baseline: Restarts,
    pub tolerance: u64,
    pub looks: u64,
}

impl RestartTest {
    /// `tolerance`: restarts the canary may have (0: none).
    pub fn new(tolerance: u64) -> Self {
        Self {
            tolerance,
            ..Self::default()
        }
    }

    pub fn observe(&mut self, look: &Look) {
        self.looks += 1;
        self.canary.observe(&look.canary);
        self.baseline.observe(&look.baseline);
        let (canary, baseline) = (&self.canary, &self.baseline);
        // Per instance, crosswise so that no division is needed.
        let more_often = u128::from(canary.during) * u128::from(baseline.instances.max(1))
            > u128::from(baseline.during) * u128::from(canary.instances.max(1));
        self.failed |= canary.during > self.tolerance && more_often;
    }

    pub fn decision(&self, horizon_reached: bool) -> Decision {
        match (self.failed, horizon_reached, self.looks) {
            (true, _, _) => Decision::Fail,
            (false, false, _) => Decision::Continue,
            (false, true, 0) => Decision::NoData,
            (false, true, _) => Decision::Pass,
        }
    }

    /// A restart is judged when it happens: no more looks are needed once there was one.
    pub fn looks_needed(&self) -> Option<u64> {
        Some(u64::from(self.looks == 0))
    }

    pub fn evidence(&self) -> RestartEvidence {
        RestartEvidence {
            canary: self.canary,
            baseline: self.baseline,
            tolerance: self.tolerance,
            looks: self.looks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use rand_distr::{Distribution, LogNormal, Poisson};

    const KIB: f64 = 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;

    /// A simulated version, sampled once a second: requests at `rate`; RSS that leaks `leak`
    /// bytes per request, jumps persistently by 100–500 KiB either way about every two minutes
    /// (allocator arenas), jitters by up to 32 KiB at each sample and is read in 4 KiB pages; CPU time
    /// per request around `cpu` with 2 ms/s of background, read in 10 ms ticks; descriptors
    /// that leak `fd_leak` per request beside a Poisson number of open connections.
    #[derive(Debug, Clone)]
    struct Sim {
        rate: f64,
        leak: f64,
        cpu: f64,
        fd_leak: f64,
        /// Added to RSS over the first looks, a look at a time: warm-up.
        warmup: Vec<f64>,
        second: usize,
        requests: u64,
        rss: f64,
        cpu_seconds: f64,
    }

    impl Sim {
        fn new(rate: f64) -> Self {
            Self {
                rate,
                leak: 0.0,
                cpu: 0.0005,
                fd_leak: 0.0,
                warmup: Vec::new(),
                second: 0,
                requests: 0,
                rss: 80.0 * MIB,
                cpu_seconds: 0.0,
            }
        }

        fn look(&mut self, rng: &mut StdRng) -> VersionLook {
            let requests = Poisson::new(self.rate).unwrap().sample(rng) as u64;
            self.requests += requests;
            self.rss += self.leak * requests as f64 + self.warmup.get(self.second).copied().unwrap_or(0.0);
            if rng.random_bool(0.01) {
                let jump = rng.random_range(100.0 * KIB..500.0 * KIB);
                self.rss += if rng.random_bool(0.5) { jump } else { -jump };
            }
            let cost = LogNormal::new(self.cpu.ln(), 0.3).unwrap();
            self.cpu_seconds += (0..requests).map(|_| cost.sample(rng)).sum::<f64>() + 0.002;
            self.second += 1;
            let sampled = self.rss + rng.random_range(0.0..32.0 * KIB);
            let connections = Poisson::new(2.0).unwrap().sample(rng) as u64;
            VersionLook {
                requests,
                instances: 1,
                restarts: 0,
                usage: Some(Usage {
                    rss_bytes: (sampled / 4096.0).floor() as u64 * 4096,
                    cpu_seconds: (self.cpu_seconds * 100.0).floor() / 100.0,
                    open_fds: 12 + connections + (self.fd_leak * self.requests as f64) as u64,
                }),
            }
        }
    }

    fn look_at(rng: &mut StdRng, second: usize, canary: &mut Sim, baseline: &mut Sim) -> Look {
        Look {
            at: second as f64,
            canary: canary.look(rng),
            baseline: baseline.look(rng),
        }
    }

    /// Looks once a second (a canary on 10% of 60 requests/s) for `seconds`; the second of the
    /// first failure, if any, and the test at the end.
    fn run(
        rng: &mut StdRng,
        test: &mut GrowthTest,
        mut canary: Sim,
        mut baseline: Sim,
        seconds: usize,
    ) -> Option<usize> {
        for second in 0..seconds {
            test.observe(&look_at(rng, second, &mut canary, &mut baseline));
            if test.decision(false) == Decision::Fail {
                return Some(second);
            }
        }
        None
    }

    /// The test at the edge of its null: no margin at all.
    fn no_margin(quantity: Quantity, alpha: f64) -> GrowthConfig {
        GrowthConfig {
            ratio: 1.0,
            absolute: 0.0,
            ..GrowthConfig::defaults(quantity, alpha)
        }
    }

    #[test]
    fn identical_versions_without_a_margin_fail_at_most_alpha_of_the_time_looking_every_second() {
        for (quantity, seed) in [(Quantity::Memory, 1), (Quantity::Cpu, 2), (Quantity::Fds, 3)] {
            let mut rng = StdRng::seed_from_u64(seed);
            let runs = 1000;
            let alarms = (0..runs)
                .filter(|_| {
                    let mut test = GrowthTest::new(quantity, no_margin(quantity, 0.01));
                    // The same version twice, with the same traffic: every slope alike.
                    let mut version = Sim::new(30.0);
                    version.leak = 2.0 * KIB;
                    let (canary, baseline) = (version.clone(), version);
                    run(&mut rng, &mut test, canary, baseline, 600).is_some()
                })
                .count();
            let rate = alarms as f64 / runs as f64;
            // α = 1%; with 1,000 runs the binomial standard error at 1% is 0.31%.
            assert!(rate <= 0.01 + 3.0 * 0.0031, "{quantity:?}: false alarms {rate}");
        }
    }

    #[test]
    fn identical_versions_with_the_default_margins_pass() {
        let mut rng = StdRng::seed_from_u64(4);
        for quantity in [Quantity::Memory, Quantity::Cpu, Quantity::Fds] {
            for _ in 0..50 {
                let mut test = GrowthTest::new(quantity, GrowthConfig::defaults(quantity, 0.01));
                let failed = run(&mut rng, &mut test, Sim::new(6.0), Sim::new(54.0), 300);
                assert_eq!(failed, None, "{quantity:?}");
                assert_eq!(
                    test.decision(true),
                    Decision::Pass,
                    "{quantity:?}: {:?}",
                    test.evidence()
                );
            }
        }
    }

    #[test]
    fn a_leak_of_a_mib_per_100_requests_on_6_requests_a_second_fails_within_two_minutes() {
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..50 {
            let mut test = GrowthTest::new(Quantity::Memory, GrowthConfig::defaults(Quantity::Memory, 0.01));
            let mut canary = Sim::new(6.0);
            canary.leak = MIB / 100.0;
            let failed = run(&mut rng, &mut test, canary, Sim::new(54.0), 600);
            assert!(failed.is_some_and(|s| s < 120), "{failed:?}");
            let evidence = test.evidence();
            let (lower, fail_above) = (evidence.canary.lower.unwrap(), evidence.fail_above.unwrap());
            assert!(lower > fail_above, "{evidence:?}");
            assert!(
                (evidence.canary.median.unwrap() - MIB / 100.0).abs() < 1.5 * KIB,
                "{evidence:?}"
            );
        }
    }

    #[test]
    fn a_leak_a_few_times_the_margin_fails_within_five_minutes() {
        let mut rng = StdRng::seed_from_u64(6);
        for _ in 0..50 {
            let mut test = GrowthTest::new(Quantity::Memory, GrowthConfig::defaults(Quantity::Memory, 0.01));
            let mut canary = Sim::new(6.0);
            canary.leak = 4.0 * KIB;
            let failed = run(&mut rng, &mut test, canary, Sim::new(54.0), 300);
            assert!(failed.is_some(), "{:?}", test.evidence());
        }
    }

    #[test]
    fn a_one_time_step_at_the_start_does_not_fail_even_without_the_warm_up() {
        let mut rng = StdRng::seed_from_u64(7);
        for warmup_seconds in [0.0, 15.0] {
            for _ in 0..50 {
                let config = GrowthConfig {
                    warmup_seconds,
                    ..GrowthConfig::defaults(Quantity::Memory, 0.01)
                };
                let mut test = GrowthTest::new(Quantity::Memory, config);
                // 40 MiB over the first three seconds on the canary, 10 on the baseline.
                let (mut canary, mut baseline) = (Sim::new(6.0), Sim::new(54.0));
                canary.warmup = vec![20.0 * MIB, 15.0 * MIB, 5.0 * MIB];
                baseline.warmup = vec![10.0 * MIB];
                assert_eq!(run(&mut rng, &mut test, canary, baseline, 300), None);
                assert_eq!(test.decision(true), Decision::Pass, "{:?}", test.evidence());
            }
        }
    }

    #[test]
    fn more_cpu_per_request_fails_and_a_baseline_that_grows_raises_the_bar() {
        let mut rng = StdRng::seed_from_u64(8);
        for _ in 0..50 {
            let mut test = GrowthTest::new(Quantity::Cpu, GrowthConfig::defaults(Quantity::Cpu, 0.01));
            let (mut canary, mut baseline) = (Sim::new(6.0), Sim::new(54.0));
            (canary.cpu, baseline.cpu) = (0.006, 0.002);
            let failed = run(&mut rng, &mut test, canary, baseline, 600);
            assert!(failed.is_some_and(|s| s < 120), "{failed:?}");
        }
        // Growing 3 KiB per request is within twice a baseline growing 2 KiB.
        for _ in 0..20 {
            let mut test = GrowthTest::new(Quantity::Memory, GrowthConfig::defaults(Quantity::Memory, 0.01));
            let (mut canary, mut baseline) = (Sim::new(6.0), Sim::new(54.0));
            (canary.leak, baseline.leak) = (3.0 * KIB, 2.0 * KIB);
            assert_eq!(run(&mut rng, &mut test, canary, baseline, 600), None);
        }
    }

    #[test]
    fn a_descriptor_leak_fails() {
        let mut rng = StdRng::seed_from_u64(9);
        for _ in 0..50 {
            let mut test = GrowthTest::new(Quantity::Fds, GrowthConfig::defaults(Quantity::Fds, 0.01));
            let mut canary = Sim::new(6.0);
            canary.fd_leak = 0.5;
            let failed = run(&mut rng, &mut test, canary, Sim::new(54.0), 600);
            assert!(failed.is_some_and(|s| s < 120), "{failed:?}");
        }
    }

    /// A look at one version only (the baseline serves and stays flat).
    fn sample(at: f64, requests: u64, rss: Option<u64>, restarts: u64) -> Look {
        let version = |requests, rss: Option<u64>, restarts| VersionLook {
            requests,
            instances: 1,
            restarts,
            usage: rss.map(|rss_bytes| Usage {
                rss_bytes,
                ..Usage::default()
            }),
        };
        Look {
            at,
            canary: version(requests, rss, restarts),
            baseline: version(100, Some(0), 0),
        }
    }

    #[test]
    fn blocks_span_enough_time_and_requests_never_a_restart_and_share_no_sample() {
        let config = GrowthConfig {
            warmup_seconds: 10.0,
            block_seconds: 5.0,
            block_requests: 20,
            ..GrowthConfig::defaults(Quantity::Memory, 0.01)
        };
        let table: [(&str, Vec<Look>, Vec<f64>); 6] = [
            (
                "warm-up left out, then one block",
                vec![
                    sample(0.0, 10, Some(0), 0),
                    sample(10.0, 10, Some(1000), 0),
                    sample(15.0, 20, Some(3000), 0),
                ],
                vec![100.0],
            ),
            (
                "too short in time, then long enough",
                vec![
                    sample(10.0, 0, Some(0), 0),
                    sample(12.0, 50, Some(500), 0),
                    sample(15.0, 50, Some(1000), 0),
                ],
                vec![10.0],
            ),
            (
                "too few requests until the third sample",
                vec![
                    sample(10.0, 0, Some(0), 0),
                    sample(15.0, 5, Some(500), 0),
                    sample(20.0, 15, Some(800), 0),
                ],
                vec![40.0],
            ),
            (
                "an incomplete sample is spanned",
                vec![
                    sample(10.0, 0, Some(0), 0),
                    sample(13.0, 30, None, 0),
                    sample(16.0, 10, Some(4000), 0),
                ],
                vec![100.0],
            ),
            (
                "a restart starts the block again",
                vec![
                    sample(10.0, 0, Some(9000), 0),
                    sample(15.0, 40, Some(0), 1),
                    sample(20.0, 20, Some(2000), 1),
                ],
                vec![100.0],
            ),
            (
                "the sample closing a block does not open the next",
                vec![
                    sample(10.0, 0, Some(0), 0),
                    sample(15.0, 20, Some(2000), 0),
                    sample(20.0, 20, Some(99_000), 0),
                    sample(25.0, 20, Some(99_200), 0),
                ],
                vec![10.0, 100.0],
            ),
        ];
        for (case, looks, slopes) in table {
            let mut test = GrowthTest::new(Quantity::Memory, config);
            for look in &looks {
                test.observe(look);
            }
            assert_eq!(test.canary.slopes, slopes, "{case}");
        }
    }

    #[test]
    fn bounds_need_blocks_enough_and_narrow_towards_the_median() {
        // With every block beyond, `log(2/α)` = log 200 needs 11 blocks: the 0.95 alternative
        // gains log 1.9 a block.
        let table = [(0, None), (10, None), (11, Some(11)), (12, Some(12))];
        for (n, x) in table {
            assert_eq!(fewest_exceedances(n, 0.01), x, "{n}");
        }
        let share = |n: usize| fewest_exceedances(n, 0.01).unwrap() as f64 / n as f64;
        assert!(
            share(100) > share(1000) && share(1000) > share(10_000),
            "narrowing"
        );
        assert!(share(10_000) < 0.53, "{}", share(10_000));
        for (n, share, at_least) in [(0, 1.0, 11), (11, 1.0, 11), (20, 0.5, 0), (50, 0.75, 51)] {
            let needed = blocks_needed(n, share, 0.01);
            match at_least {
                0 => assert_eq!(needed, None),
                _ => assert!(
                    needed.is_some_and(|b| b >= at_least && b < 10 * at_least),
                    "{needed:?}"
                ),
            }
        }
    }

    #[test]
    fn the_margin_is_relative_or_absolute_whichever_is_larger() {
        let config = GrowthConfig {
            ratio: 2.0,
            absolute: 100.0,
            ..GrowthConfig::defaults(Quantity::Memory, 0.01)
        };
        // (baseline slope, allowed canary slope)
        let table = [
            (-50.0, 50.0),
            (0.0, 100.0),
            (50.0, 150.0),
            (100.0, 200.0),
            (300.0, 600.0),
        ];
        for (baseline, allowed) in table {
            assert_eq!(config.allowed(baseline), allowed, "{baseline}");
            assert_eq!(config.allowing(allowed), baseline, "{allowed}");
        }
        let flat = no_margin(Quantity::Cpu, 0.01);
        assert_eq!((flat.allowed(0.3), flat.allowing(0.3)), (0.3, 0.3));
    }

    #[test]
    fn decisions_follow_the_horizon_and_the_evidence() {
        let mut rng = StdRng::seed_from_u64(10);
        let mut test = GrowthTest::new(Quantity::Memory, GrowthConfig::defaults(Quantity::Memory, 0.01));
        assert_eq!(test.decision(false), Decision::Continue);
        assert_eq!(test.decision(true), Decision::NoData);
        assert_eq!(test.looks_needed(), None);
        let (mut canary, mut baseline) = (Sim::new(6.0), Sim::new(54.0));
        let mut estimate = None;
        let mut second = 0;
        while test.decision(true) != Decision::Pass {
            test.observe(&look_at(&mut rng, second, &mut canary, &mut baseline));
            if estimate.is_none()
                && test.canary.slopes.len() >= 5
                && let Some(needed) = test.looks_needed()
            {
                estimate = Some((second, needed));
            }
            assert_eq!(test.decision(false), Decision::Continue);
            second += 1;
        }
        assert_eq!(test.looks_needed(), Some(0));
        // Estimated from the spread of the canary's first few blocks: the right size.
        let (at, needed) = estimate.unwrap();
        let took = (second - at) as u64;
        assert!(
            needed / 3 <= took && took <= 3 * needed,
            "estimated {needed}, took {took}"
        );

        let evidence = serde_json::to_value(test.evidence()).unwrap();
        assert_eq!(evidence["quantity"], "memory");
        assert_eq!(evidence["unit"], "bytes per request");
        assert!(evidence["canary"]["upper"].as_f64().unwrap() <= evidence["pass_at_most"].as_f64().unwrap());
        assert!(evidence["canary"]["blocks"].as_u64().unwrap() >= 11);
    }

    fn restarts(canary: (u64, u32), baseline: (u64, u32)) -> Look {
        let version = |(restarts, instances)| VersionLook {
            restarts,
            instances,
            ..VersionLook::default()
        };
        Look {
            canary: version(canary),
            baseline: version(baseline),
            ..Look::default()
        }
    }

    #[test]
    fn a_canary_that_restarts_more_than_its_baseline_fails() {
        // (canary restarts and instances at the first and the last look, the baseline's,
        // tolerance, decision at the horizon)
        let table = [
            ((0, 1), (0, 1), (0, 1), (0, 1), 0, Decision::Pass),
            ((3, 1), (3, 1), (0, 1), (0, 1), 0, Decision::Pass), // before the analysis
            ((0, 1), (1, 1), (0, 1), (0, 1), 0, Decision::Fail),
            ((0, 1), (1, 1), (0, 1), (0, 1), 1, Decision::Pass),
            ((0, 1), (2, 1), (0, 1), (0, 1), 1, Decision::Fail),
            ((0, 1), (1, 1), (0, 4), (4, 4), 0, Decision::Pass), // the machine: as often
            ((0, 1), (2, 1), (0, 4), (4, 4), 0, Decision::Fail), // more often per instance
            ((3, 2), (1, 1), (0, 1), (0, 1), 0, Decision::Pass), // an instance removed
        ];
        for (canary_first, canary_last, baseline_first, baseline_last, tolerance, expected) in table {
            let mut test = RestartTest::new(tolerance);
            assert_eq!(test.decision(true), Decision::NoData);
            test.observe(&restarts(canary_first, baseline_first));
            test.observe(&restarts(canary_last, baseline_last));
            assert_eq!(test.decision(true), expected, "{canary_first:?} {canary_last:?}");
            let fails_now = expected == Decision::Fail;
            assert_eq!(test.decision(false) == Decision::Fail, fails_now);
            assert_eq!(test.looks_needed(), Some(0));
        }
        let mut test = RestartTest::new(0);
        test.observe(&restarts((0, 1), (0, 1)));
        test.observe(&restarts((1, 1), (0, 1)));
        test.observe(&restarts((1, 1), (5, 1)));
        assert_eq!(test.decision(true), Decision::Fail, "a failure stays");
        let evidence = serde_json::to_value(test.evidence()).unwrap();
        assert_eq!(
            evidence["canary"],
            serde_json::json!({ "during": 1, "instances": 1 })
        );
    }
}
