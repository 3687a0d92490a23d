//! Seeded simulations of canary analysis, each method run as it ships or as its documentation
//! shows it, on the same simulated service: Conveyor's default `analysis:` (error rate and p99
//! latency judged together, as one deployment), Kayenta's NetflixACAJudge with its defaults, and
//! Flagger's documented example.
//!
//! `cargo run --release -p conveyor-analysis --example canary_benchmark [runs | --quick]`
//!
//! Traffic: Poisson arrivals per second and version, 200 requests/s (and 20 in a low-traffic
//! run), split between canary and baseline by each method's own steps. Errors are Bernoulli per
//! request; latency is log-normal (median 50 ms, σ = 0.5, p99 ≈ 160 ms), each request recorded
//! into a latency sketch as the router records it. `--quick` runs a few deployments at 200
//! requests/s and exits non-zero when Conveyor's false alarms are far above α or a 5× error
//! regression goes uncaught: CI runs it so that the benchmark cannot rot.

use std::process::ExitCode;
use std::time::Duration;

use conveyor_analysis::judge::{Classification, Direction, MetricConfig, NanStrategy, classify};
use conveyor_analysis::sequential::{Counts, Decision, LatencyTest, Margin, RateTest, TestConfig};
use conveyor_analysis::special::normal_quantile;
use conveyor_sketch::LatencySketch;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Binomial, Distribution, LogNormal, Poisson};

// === The simulated service ===

const BASELINE_ERRORS: f64 = 0.01;
const MEDIAN_SECONDS: f64 = 0.05;
const SIGMA: f64 = 0.5;

// === Conveyor's shipped defaults ===
//
// Repeated from `conveyor-spec` (`parse::delivery`: steps and their pause; `parse::analysis`:
// the metrics, margins, α, confidence, `max_duration`) and `conveyor-delivery` (`analysis::
// test_config`: α divided among the tests that spend it), which this crate does not depend on.
// Of the default metrics only the router's two are simulated: memory, cpu and restarts read
// the instances' processes, which a simulated service does not have.

/// `canary.steps` default `[10, 50, 100]`: the analysis ends when the canary takes everything.
const CONVEYOR_STEPS: [f64; 2] = [0.10, 0.50];
/// Each step's pause: `canary.interval`, 1m.
const CONVEYOR_PAUSE: u64 = 60;
/// How long a step is extended past its pause for the evidence to pass, before it pauses for
/// a person (`inconclusive: pause`).
const CONVEYOR_MAX_DURATION: u64 = 1800;
const CONVEYOR_ALPHA: f64 = 0.01;
/// The default `analysis:` has four tests that share α: error_rate, latency, memory and cpu.
const CONVEYOR_TESTS: f64 = 4.0;
const CONVEYOR_CONFIDENCE: f64 = 0.95;
const CONVEYOR_ERROR_MARGIN: Margin = Margin {
    relative: 0.5,
    absolute: 0.01,
};
const CONVEYOR_LATENCY_MARGIN: Margin = Margin {
    relative: 0.25,
    absolute: 0.005,
};
const CONVEYOR_QUANTILE: f64 = 0.99;
const CONVEYOR_MIN_SAMPLES: u64 = 100;

// === Kayenta, as Spinnaker's canary stage runs it ===

/// One data point per version every 10 s, judged on every point so far each minute.
const KAYENTA_POINT: u64 = 10;
const KAYENTA_JUDGE_EVERY: u64 = 60;
/// The stage's lifetime; the canary has 10% for its first half, 50% for the second.
const KAYENTA_LIFETIME: u64 = 600;

// === Flagger's documented example ===
//
// `analysis: { interval: 1m, threshold: 5, maxWeight: 50, stepWeight: 10 }` with the builtin
// `request-success-rate` (min 99) and `request-duration` (max 500 ms, the p99) over 1m.
// Flagger reads the p99 off its mesh's Prometheus histogram; here it is the sketch's, within 1%,
// and likewise Kayenta's points.

const FLAGGER_INTERVAL: u64 = 60;
const FLAGGER_THRESHOLD: u32 = 5;
const FLAGGER_STEP_WEIGHT: u32 = 10;
const FLAGGER_MAX_WEIGHT: u32 = 50;
const FLAGGER_MIN_SUCCESS_PERCENT: f64 = 99.0;
const FLAGGER_MAX_P99_SECONDS: f64 = 0.5;

/// How the canary's latency differs from the baseline's.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// Every request takes this many times as long.
    Scaled(f64),
    /// The median is unchanged and above the baseline's p95 the excess over the p95 is stretched
    /// so that the p99 is this many times the baseline's.
    Tail(f64),
}

/// Where the canary stands against Conveyor's shipped margin.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// No worse than the baseline: a failure is a false alarm.
    Good,
    /// Worse, but within the margin: either verdict is defensible.
    WithinMargin,
    /// Exactly as bad as the margin allows: the hardest acceptable canary, where the bound on
    /// false alarms (≤ α) binds.
    OnMargin,
    /// Worse than the margin allows: a pass is the mistake (≤ 1 − confidence).
    BeyondMargin,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Good => "good",
            Kind::WithinMargin => "within the margin",
            Kind::OnMargin => "on the margin",
            Kind::BeyondMargin => "beyond the margin",
        }
    }
}

struct Scenario {
    name: &'static str,
    kind: Kind,
    canary_errors: f64,
    latency: Shape,
}

/// The scenarios `--quick` checks.
const AA: &str = "A/A: canary = baseline";
const FIVE_FOLD_ERRORS: &str = "errors × 5 (1% → 5%)";

const SCENARIOS: [Scenario; 8] = [
    Scenario {
        name: AA,
        kind: Kind::Good,
        canary_errors: BASELINE_ERRORS,
        latency: Shape::Scaled(1.0),
    },
    Scenario {
        name: "better: errors 0.8%, latency × 0.9",
        kind: Kind::Good,
        canary_errors: 0.008,
        latency: Shape::Scaled(0.9),
    },
    Scenario {
        name: FIVE_FOLD_ERRORS,
        kind: Kind::BeyondMargin,
        canary_errors: 0.05,
        latency: Shape::Scaled(1.0),
    },
    Scenario {
        name: "errors × 2 (1% → 2%)",
        kind: Kind::OnMargin,
        canary_errors: 0.02,
        latency: Shape::Scaled(1.0),
    },
    Scenario {
        name: "errors +50% (1% → 1.5%)",
        kind: Kind::WithinMargin,
        canary_errors: 0.015,
        latency: Shape::Scaled(1.0),
    },
    Scenario {
        name: "latency × 1.5 (p99 +50%)",
        kind: Kind::BeyondMargin,
        canary_errors: BASELINE_ERRORS,
        latency: Shape::Scaled(1.5),
    },
    Scenario {
        name: "latency tail only (p99 +50%, median same)",
        kind: Kind::BeyondMargin,
        canary_errors: BASELINE_ERRORS,
        latency: Shape::Tail(1.5),
    },
    Scenario {
        name: "latency × 1.25 (p99 +25%)",
        kind: Kind::OnMargin,
        canary_errors: BASELINE_ERRORS,
        latency: Shape::Scaled(1.25),
    },
];

// === Traffic ===

/// One version's requests in one second (or a window of seconds): errors and latencies.
#[derive(Debug, Default)]
struct Sample {
    requests: u64,
    errors: u64,
    latency: LatencySketch,
}

impl Sample {
    fn add(&mut self, other: &Sample) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency += &other.latency;
    }

    fn counts(&self) -> Counts {
        Counts::new(self.requests, self.errors)
    }

    /// The error ratio, NaN without requests (Kayenta leaves such points out).
    fn error_ratio(&self) -> f64 {
        match self.requests {
            0 => f64::NAN,
            n => self.errors as f64 / n as f64,
        }
    }

    /// The p99 in seconds, NaN without requests.
    fn p99(&self) -> f64 {
        self.latency.quantile(0.99).unwrap_or(f64::NAN)
    }
}

/// What one version serves: its error rate and its latency distribution.
struct Version {
    errors: f64,
    latency: LogNormal<f64>,
    shape: Shape,
    /// The baseline's p95 and the factor its excess is stretched by above it (`Shape::Tail`).
    p95: f64,
    stretch: f64,
}

impl Version {
    fn new(errors: f64, shape: Shape) -> Self {
        let p95 = MEDIAN_SECONDS * (SIGMA * normal_quantile(0.95)).exp();
        let p99 = MEDIAN_SECONDS * (SIGMA * normal_quantile(0.99)).exp();
        let stretch = match shape {
            Shape::Scaled(_) => 1.0,
            Shape::Tail(k) => (k * p99 - p95) / (p99 - p95),
        };
        Self {
            errors,
            latency: LogNormal::new(MEDIAN_SECONDS.ln(), SIGMA).expect("a positive σ"),
            shape,
            p95,
            stretch,
        }
    }

    /// One second of this version's traffic at `rate` requests/s.
    fn serve(&self, rng: &mut StdRng, rate: f64) -> Sample {
        let requests = Poisson::new(rate).expect("a positive rate").sample(rng) as u64;
        let errors = Binomial::new(requests, self.errors)
            .expect("a probability")
            .sample(rng);
        let mut latency = LatencySketch::default();
        for _ in 0..requests {
            let seconds = self.latency.sample(rng);
            let seconds = match self.shape {
                Shape::Scaled(k) => seconds * k,
                Shape::Tail(_) if seconds <= self.p95 => seconds,
                Shape::Tail(_) => self.p95 + (seconds - self.p95) * self.stretch,
            };
            latency.record(Duration::from_secs_f64(seconds));
        }
        Sample {
            requests,
            errors,
            latency,
        }
    }
}

// === The methods ===

/// How a deployment ended, seconds after the canary got its first traffic.
#[derive(Debug, Clone, Copy)]
enum End {
    Failed(u64),
    Passed(u64),
    /// Conveyor only: a step reached `max_duration` without evidence either way and paused;
    /// which tests had not passed.
    Undecided {
        errors: bool,
        latency: bool,
    },
}

trait Method {
    const NAME: &'static str;
    fn start() -> Self;
    /// The canary's share of the traffic in the coming second.
    fn canary_share(&self) -> f64;
    /// One second of traffic was served; `Some` once the method concludes.
    fn second(&mut self, canary: &Sample, baseline: &Sample) -> Option<End>;
}

/// The default `analysis:` as the delivery runs it: both tests look every second and a failure
/// of either stops the deployment at once; at the end of each step's pause both must pass, and
/// the step is extended until they do or `max_duration` is over.
struct Conveyor {
    errors: RateTest,
    latency: LatencyTest,
    step: usize,
    in_step: u64,
    elapsed: u64,
}

impl Method for Conveyor {
    const NAME: &'static str = "Conveyor (shipped defaults)";

    fn start() -> Self {
        let config = |margin| TestConfig {
            alpha: CONVEYOR_ALPHA / CONVEYOR_TESTS,
            confidence: CONVEYOR_CONFIDENCE,
            margin,
            min_samples: CONVEYOR_MIN_SAMPLES,
        };
        Self {
            errors: RateTest::new(config(CONVEYOR_ERROR_MARGIN)),
            latency: LatencyTest::new(CONVEYOR_QUANTILE, config(CONVEYOR_LATENCY_MARGIN)),
            step: 0,
            in_step: 0,
            elapsed: 0,
        }
    }

    fn canary_share(&self) -> f64 {
        CONVEYOR_STEPS[self.step]
    }

    fn second(&mut self, canary: &Sample, baseline: &Sample) -> Option<End> {
        self.elapsed += 1;
        self.in_step += 1;
        self.errors.observe(canary.counts(), baseline.counts());
        self.latency.observe(&canary.latency, &baseline.latency);
        if self.errors.decision(false) == Decision::Fail || self.latency.decision(false) == Decision::Fail {
            return Some(End::Failed(self.elapsed));
        }
        if self.in_step < CONVEYOR_PAUSE {
            return None;
        }
        let errors = self.errors.decision(true) == Decision::Pass;
        let latency = self.latency.decision(true) == Decision::Pass;
        if errors && latency {
            if self.step + 1 == CONVEYOR_STEPS.len() {
                return Some(End::Passed(self.elapsed));
            }
            self.step += 1;
            self.in_step = 0;
            return None;
        }
        (self.in_step - CONVEYOR_PAUSE >= CONVEYOR_MAX_DURATION).then_some(End::Undecided {
            errors: !errors,
            latency: !latency,
        })
    }
}

/// Both metrics in one canary config, critical, direction `increase`, NaN points removed; a
/// `High` on either at any judgement fails the stage (score 0, under any marginal threshold),
/// a last judgement without one passes it (score 100).
struct Kayenta {
    elapsed: u64,
    point: (Sample, Sample),
    errors: (Vec<f64>, Vec<f64>),
    latency: (Vec<f64>, Vec<f64>),
}

impl Method for Kayenta {
    const NAME: &'static str = "Kayenta (judge defaults)";

    fn start() -> Self {
        Self {
            elapsed: 0,
            point: Default::default(),
            errors: Default::default(),
            latency: Default::default(),
        }
    }

    fn canary_share(&self) -> f64 {
        if self.elapsed < KAYENTA_LIFETIME / 2 {
            0.10
        } else {
            0.50
        }
    }

    fn second(&mut self, canary: &Sample, baseline: &Sample) -> Option<End> {
        self.elapsed += 1;
        self.point.0.add(canary);
        self.point.1.add(baseline);
        if self.elapsed.is_multiple_of(KAYENTA_POINT) {
            let (canary, baseline) = std::mem::take(&mut self.point);
            self.errors.0.push(canary.error_ratio());
            self.errors.1.push(baseline.error_ratio());
            self.latency.0.push(canary.p99());
            self.latency.1.push(baseline.p99());
        }
        if !self.elapsed.is_multiple_of(KAYENTA_JUDGE_EVERY) {
            return None;
        }
        let config = MetricConfig {
            direction: Direction::Increase,
            nan_strategy: NanStrategy::Remove,
            critical: true,
            ..MetricConfig::new("metric", &["group"])
        };
        let high = |(canary, baseline): &(Vec<f64>, Vec<f64>)| {
            classify(&config, baseline, canary).classification == Classification::High
        };
        if high(&self.errors) || high(&self.latency) {
            Some(End::Failed(self.elapsed))
        } else {
            (self.elapsed >= KAYENTA_LIFETIME).then_some(End::Passed(self.elapsed))
        }
    }
}

/// Flagger's canary loop: every interval, the canary's success rate and p99 over the last
/// interval against the bounds. A check that passes advances the weight by `stepWeight`, or at
/// `maxWeight` promotes; one that fails holds the weight and counts, and the `threshold`-th
/// failed check (never reset) rolls back — counted here at that check, though the controller
/// routes traffic back on its next tick.
struct Flagger {
    weight: u32,
    failed: u32,
    elapsed: u64,
    window: Sample,
}

impl Method for Flagger {
    const NAME: &'static str = "Flagger (documented example)";

    fn start() -> Self {
        Self {
            weight: FLAGGER_STEP_WEIGHT,
            failed: 0,
            elapsed: 0,
            window: Sample::default(),
        }
    }

    fn canary_share(&self) -> f64 {
        f64::from(self.weight) / 100.0
    }

    fn second(&mut self, canary: &Sample, _baseline: &Sample) -> Option<End> {
        self.elapsed += 1;
        self.window.add(canary);
        if !self.elapsed.is_multiple_of(FLAGGER_INTERVAL) {
            return None;
        }
        let window = std::mem::take(&mut self.window);
        // No requests is "no values found": a failed check. NaN comparisons are false.
        let success = 100.0 * (1.0 - window.error_ratio());
        let healthy = success >= FLAGGER_MIN_SUCCESS_PERCENT && window.p99() <= FLAGGER_MAX_P99_SECONDS;
        if !healthy {
            self.failed += 1;
            return (self.failed >= FLAGGER_THRESHOLD).then_some(End::Failed(self.elapsed));
        }
        if self.weight < FLAGGER_MAX_WEIGHT {
            self.weight += FLAGGER_STEP_WEIGHT;
            return None;
        }
        Some(End::Passed(self.elapsed))
    }
}

// === Running and reporting ===

/// One deployment of a scenario's canary under a method; every method ends on its own (at most
/// two steps of `pause + max_duration` for Conveyor).
fn deploy<M: Method>(rng: &mut StdRng, rps: f64, canary: &Version, baseline: &Version) -> End {
    let mut method = M::start();
    loop {
        let share = method.canary_share();
        let c = canary.serve(rng, rps * share);
        let b = baseline.serve(rng, rps * (1.0 - share));
        if let Some(end) = method.second(&c, &b) {
            return end;
        }
    }
}

#[derive(Default)]
struct Outcomes {
    runs: usize,
    failed: Vec<u64>,
    passed: Vec<u64>,
    undecided: usize,
    /// Of the undecided, how many had the error test, and the latency test, not passing.
    errors_undecided: usize,
    latency_undecided: usize,
}

impl Outcomes {
    fn record(&mut self, end: End) {
        self.runs += 1;
        match end {
            End::Failed(s) => self.failed.push(s),
            End::Passed(s) => self.passed.push(s),
            End::Undecided { errors, latency } => {
                self.undecided += 1;
                self.errors_undecided += usize::from(errors);
                self.latency_undecided += usize::from(latency);
            }
        }
    }
}

/// `share ± binomial standard error (count/runs)`.
fn rate(count: usize, runs: usize) -> String {
    let p = count as f64 / runs as f64;
    let se = (p * (1.0 - p) / runs as f64).sqrt();
    format!("{:.1}% ± {:.1} ({count}/{runs})", 100.0 * p, 100.0 * se)
}

/// The undecided share, and which tests held it.
fn undecided(outcomes: &Outcomes) -> String {
    let share = rate(outcomes.undecided, outcomes.runs);
    match outcomes.undecided {
        0 => share,
        _ => format!(
            "{share}: errors {}, latency {}",
            outcomes.errors_undecided, outcomes.latency_undecided
        ),
    }
}

fn median(seconds: &mut [u64]) -> String {
    if seconds.is_empty() {
        return "–".into();
    }
    seconds.sort_unstable();
    seconds[(seconds.len() - 1) / 2].to_string()
}

type Run = fn(&mut StdRng, f64, &Version, &Version) -> End;

const METHODS: [(&str, Run); 3] = [
    (Conveyor::NAME, deploy::<Conveyor>),
    (Kayenta::NAME, deploy::<Kayenta>),
    (Flagger::NAME, deploy::<Flagger>),
];

/// Runs every method on every scenario at `rps`, prints the table and returns Conveyor's
/// outcomes per scenario.
fn table(rps: f64, runs: usize, seed: u64) -> Vec<Outcomes> {
    println!(
        "\n{rps} requests/s, {runs} deployments per scenario and method (baseline: errors 1%, p99 160 ms)\n"
    );
    println!(
        "| scenario | against the margin | method | failed the canary | median s to fail | passed | median s to pass | undecided (paused) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let baseline = Version::new(BASELINE_ERRORS, Shape::Scaled(1.0));
    let mut conveyor = Vec::new();
    for (s, scenario) in SCENARIOS.iter().enumerate() {
        let canary = Version::new(scenario.canary_errors, scenario.latency);
        for (m, (name, run)) in METHODS.iter().enumerate() {
            // Each method gets its own stream: its decisions decide the split.
            let mut rng = StdRng::seed_from_u64(seed + 100 * s as u64 + m as u64);
            let mut outcomes = Outcomes::default();
            for _ in 0..runs {
                outcomes.record(run(&mut rng, rps, &canary, &baseline));
            }
            println!(
                "| {} | {} | {name} | {} | {} | {} | {} | {} |",
                scenario.name,
                scenario.kind.label(),
                rate(outcomes.failed.len(), runs),
                median(&mut outcomes.failed),
                rate(outcomes.passed.len(), runs),
                median(&mut outcomes.passed),
                undecided(&outcomes),
            );
            if m == 0 {
                conveyor.push(outcomes);
            }
        }
    }
    conveyor
}

/// The smoke check of `--quick`: Conveyor's A/A false alarms within α plus three standard errors,
/// and the 5× error regression caught in most deployments. Messages for what is wrong.
fn smoke_check(conveyor: &[Outcomes]) -> Vec<String> {
    let mut wrong = Vec::new();
    let by_name = |name: &str| {
        let index = SCENARIOS.iter().position(|s| s.name == name);
        &conveyor[index.expect("a scenario of that name")]
    };
    let aa = by_name(AA);
    let limit = CONVEYOR_ALPHA + 3.0 * (CONVEYOR_ALPHA * (1.0 - CONVEYOR_ALPHA) / aa.runs as f64).sqrt();
    let alarms = aa.failed.len() as f64 / aa.runs as f64;
    if alarms > limit {
        wrong.push(format!(
            "A/A false alarms {:.1}% exceed α = {CONVEYOR_ALPHA} plus three standard errors ({:.1}%)",
            100.0 * alarms,
            100.0 * limit
        ));
    }
    let regression = by_name(FIVE_FOLD_ERRORS);
    if 2 * regression.failed.len() < regression.runs {
        wrong.push(format!(
            "the 5× error regression was caught in only {} of {} deployments",
            regression.failed.len(),
            regression.runs
        ));
    }
    wrong
}

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    let quick = arg.as_deref() == Some("--quick");
    let runs = match arg.as_deref() {
        None => 1000,
        Some("--quick") => 100,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("usage: canary_benchmark [runs | --quick] (runs: a positive number, default 1000)");
                return ExitCode::from(2);
            }
        },
    };
    println!(
        "Conveyor: α = {CONVEYOR_ALPHA} per deployment, {} for each of its {CONVEYOR_TESTS} tests that \
         spend it (error_rate and latency simulated), confidence {CONVEYOR_CONFIDENCE}, steps 10% → 50% \
         paused {CONVEYOR_PAUSE} s, extended up to {CONVEYOR_MAX_DURATION} s each",
        CONVEYOR_ALPHA / CONVEYOR_TESTS
    );
    let conveyor = table(200.0, runs, 1);
    if quick {
        let wrong = smoke_check(&conveyor);
        for message in &wrong {
            eprintln!("canary_benchmark --quick: {message}");
        }
        return if wrong.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    table(20.0, runs, 10_000);
    ExitCode::SUCCESS
}
