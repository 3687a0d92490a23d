use super::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Binomial, Distribution, Poisson};

fn look(rng: &mut StdRng, requests_per_look: f64, rate: f64) -> Counts {
    let requests = Poisson::new(requests_per_look).unwrap().sample(rng) as u64;
    let events = Binomial::new(requests, rate).unwrap().sample(rng);
    Counts::new(requests, events)
}

fn with_margin(relative: f64, absolute: f64) -> TestConfig {
    TestConfig {
        margin: Margin { relative, absolute },
        ..TestConfig::default()
    }
}

/// Looks after every handful of requests (each assigned to the canary at random), so nearly
/// every error is its own look; returns whether the test ever failed.
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

/// α = 1%; with 2,000 runs the binomial standard error at 1% is 0.22%.
fn at_most_one_percent(alarms: usize, runs: usize) {
    let rate = alarms as f64 / runs as f64;
    assert!(rate <= 0.01 + 3.0 * 0.0022, "false alarms {rate}");
}

#[test]
fn identical_versions_fail_at_most_alpha_of_the_time_looking_every_second() {
    let mut rng = StdRng::seed_from_u64(1);
    let runs = 2000;
    let mut false_alarms = 0;
    for run in 0..runs {
        // With and without an absolute margin: a margin only makes a failure harder.
        let config = [TestConfig::default(), with_margin(0.0, 0.002)][run % 2];
        let mut test = RateTest::new(config);
        // The split changes between steps, as in a canary: 5% → 25% → 50%.
        for second in 0..600 {
            let share = [0.05, 0.25, 0.5][second / 200];
            let rate = if run % 4 < 2 { 0.01 } else { 0.05 };
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
    at_most_one_percent(false_alarms, runs);
}

#[test]
fn identical_versions_fail_at_most_alpha_of_the_time_looking_after_every_error() {
    let mut rng = StdRng::seed_from_u64(2);
    let runs = 2000;
    let alarms = (0..runs)
        .filter(|_| aa_run_looking_at_every_error(&mut rng, 0.05, 0.2))
        .count();
    at_most_one_percent(alarms, runs);
}

/// A canary exactly on the margin (twice the baseline's rate, margin ×2) is the hardest case
/// for both sides: looked at after every look, it may pass at most β and fail at most α of
/// the time — the coverage of the ratio's confidence sequence at its true value.
#[test]
fn on_the_margin_a_canary_passes_at_most_beta_and_fails_at_most_alpha_of_the_time() {
    let mut rng = StdRng::seed_from_u64(3);
    let runs = 600;
    let config = TestConfig {
        confidence: 0.9,
        alpha: 0.05,
        min_samples: 0,
        margin: Margin {
            relative: 1.0,
            absolute: 0.0,
        },
    };
    let (mut passes, mut fails) = (0, 0);
    for run in 0..runs {
        let mut test = RateTest::new(config);
        let baseline_rate = [0.01, 0.05][run % 2];
        for second in 0..300 {
            let share = [0.1, 0.5][second / 150];
            test.observe(
                look(&mut rng, 100.0 * share, 2.0 * baseline_rate),
                look(&mut rng, 100.0 * (1.0 - share), baseline_rate),
            );
            match test.decision(true) {
                Decision::Pass => {
                    passes += 1;
                    break;
                }
                Decision::Fail => {
                    fails += 1;
                    break;
                }
                Decision::NoData | Decision::Continue => {}
            }
        }
    }
    // β = 10% and α = 5%; standard errors with 600 runs: 1.2% and 0.9%.
    assert!(
        passes as f64 / runs as f64 <= 0.10 + 0.036,
        "passed {passes} of {runs}"
    );
    assert!(
        fails as f64 / runs as f64 <= 0.05 + 0.027,
        "failed {fails} of {runs}"
    );
}

#[test]
fn a_better_canary_passes_and_a_tripled_error_rate_fails() {
    let mut rng = StdRng::seed_from_u64(4);
    let mut better = RateTest::new(TestConfig::default());
    let mut worse = RateTest::new(TestConfig::default());
    let (mut passed_at, mut failed_at) = (None, None);
    for second in 0..600 {
        better.observe(look(&mut rng, 20.0, 0.005), look(&mut rng, 180.0, 0.01));
        worse.observe(look(&mut rng, 20.0, 0.03), look(&mut rng, 180.0, 0.01));
        if passed_at.is_none() && better.decision(true) == Decision::Pass {
            passed_at = Some(second);
        }
        if failed_at.is_none() && worse.decision(false) == Decision::Fail {
            failed_at = Some(second);
        }
        assert_ne!(better.decision(false), Decision::Fail);
    }
    assert!(
        passed_at.is_some(),
        "a better canary is shown not worse within 10 minutes"
    );
    assert!(failed_at.is_some_and(|s| s < 200), "{failed_at:?}");
    let evidence = worse.evidence();
    assert!(evidence.p_value <= 0.01);
    assert_eq!(evidence.threshold, 100.0);
    let ratio = evidence.ratio;
    assert!(
        ratio.lower.unwrap() > 1.0 && ratio.upper.is_none_or(|u| u > 3.0),
        "{ratio:?}"
    );
}

#[test]
fn a_relative_margin_lets_a_slightly_worse_canary_through() {
    let mut rng = StdRng::seed_from_u64(5);
    let (mut alarms, mut passes) = (0, 0);
    for _ in 0..100 {
        let mut test = RateTest::new(with_margin(0.5, 0.0));
        for _ in 0..600 {
            // 1.2× worse, inside the 1.5× margin, on a busy service with a 2% base rate.
            test.observe(look(&mut rng, 50.0, 0.024), look(&mut rng, 150.0, 0.02));
        }
        alarms += usize::from(test.decision(false) == Decision::Fail);
        passes += usize::from(test.decision(true) == Decision::Pass);
    }
    assert!(alarms <= 3, "{alarms}");
    assert!(passes >= 80, "{passes} of 100 shown within the margin");
}

#[test]
fn an_absolute_margin_passes_a_version_that_never_fails_once_its_requests_show_it() {
    // Neither version fails: the ratio says nothing; the difference's bound falls like
    // ln(5·4/β)/n. With β = 5% and a margin of 0.1 point, about 6,000 canary requests.
    let mut test = RateTest::new(with_margin(0.5, 0.001));
    let mut requests = 0;
    while test.decision(true) != Decision::Pass {
        test.observe(Counts::new(100, 0), Counts::new(900, 0));
        requests += 100;
        assert!(requests < 20_000, "never passed");
    }
    assert!((5_000..=7_000).contains(&requests), "{requests}");

    // The projection told it in advance.
    let mut early = RateTest::new(with_margin(0.5, 0.001));
    early.observe(Counts::new(1_000, 0), Counts::new(9_000, 0));
    let needed = early.evidence().needed.unwrap();
    assert!(
        (needed as i64 + 1_000 - requests as i64).abs() <= 100,
        "{needed} vs {requests}"
    );
}

#[test]
fn the_larger_allowance_counts() {
    let table = [
        // (baseline rate, canary rate, relative, absolute, expected)
        (0.001, 0.004, 0.5, 0.005, Decision::Pass), // ×4 but +0.3 points: within 0.5 points
        (0.001, 0.02, 0.5, 0.005, Decision::Fail),  // ×20 and +1.9 points
        (0.05, 0.055, 0.5, 0.001, Decision::Pass),  // +0.5 points but ×1.1: within ×1.5
        (0.05, 0.15, 0.5, 0.01, Decision::Fail),    // ×3 and +10 points
    ];
    for (baseline_rate, canary_rate, relative, absolute, expected) in table {
        let mut rng = StdRng::seed_from_u64(6);
        let mut test = RateTest::new(with_margin(relative, absolute));
        let mut decision = Decision::Continue;
        for _ in 0..1200 {
            test.observe(
                look(&mut rng, 50.0, canary_rate),
                look(&mut rng, 150.0, baseline_rate),
            );
            decision = test.decision(true);
            if matches!(decision, Decision::Pass | Decision::Fail) {
                break;
            }
        }
        assert_eq!(decision, expected, "{baseline_rate} vs {canary_rate}");
    }
}

#[test]
fn decisions_follow_the_horizon_the_sample_size_and_the_evidence() {
    let table = [
        // (canary requests, horizon reached, expected); nobody fails, margin 1 point.
        (0, false, Decision::Continue),
        (0, true, Decision::NoData),
        (99, true, Decision::NoData),
        (200, true, Decision::Continue), // 200 clean requests do not show ≤ 1%
        (1_000, true, Decision::Pass),
        (1_000, false, Decision::Continue),
    ];
    for (requests, horizon, expected) in table {
        let mut test = RateTest::new(with_margin(0.0, 0.01));
        test.observe(Counts::new(requests, 0), Counts::new(10_000, 0));
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
fn a_look_without_traffic_on_one_side_carries_no_evidence_about_the_ratio() {
    let mut test = RateTest::new(TestConfig::default());
    test.observe(Counts::new(0, 0), Counts::new(100, 50));
    test.observe(Counts::new(100, 50), Counts::new(0, 0));
    assert_eq!(test.e_value(), 1.0);
    let evidence = test.evidence();
    assert_eq!(evidence.canary, Counts::new(100, 50));
    assert_eq!(evidence.looks, 2);
    assert_eq!(evidence.ratio.upper, None);
}

#[test]
fn the_fewest_requests_a_pass_needs_follow_the_margin_and_the_confidence() {
    let config = |absolute: f64, confidence: f64| TestConfig {
        confidence,
        ..with_margin(0.5, absolute)
    };
    // (absolute margin, confidence, baseline rate, within)
    let table = [
        (0.01, 0.95, 0.0, 550..=650),      // ln(5·4/0.05)/0.01 ≈ 600
        (0.001, 0.95, 0.0, 5_500..=6_500), // ten times the margin's precision, ten times the requests
        (0.01, 0.99, 0.0, 700..=850),
        (0.0, 0.95, 0.01, 300..=800), // latency at p99: the baseline's 1% slow share is the margin
    ];
    for (absolute, confidence, baseline_rate, within) in table {
        let needed = requests_to_pass(config(absolute, confidence), baseline_rate).unwrap();
        assert!(within.contains(&needed), "{absolute} {confidence}: {needed}");
    }
    assert_eq!(
        requests_to_pass(config(0.0, 0.95), 0.0),
        None,
        "a zero margin is never shown"
    );
}
