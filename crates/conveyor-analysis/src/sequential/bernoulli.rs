//! Anytime-valid bounds on one version's event rate (errors, or slow requests) from its counts
//! alone, for the absolute part of a margin.
//!
//! For the upper bound, each candidate rate `p₀` is tested against "the rate is at least `p₀`"
//! with an e-process: the average, over alternatives `p₀·m` with `m < 1`, of the likelihood ratio
//! of every request so far (`x` events in `n` requests is sufficient, so no history is kept).
//! Under a rate `p ≥ p₀` each ratio is a nonnegative supermartingale (the Bernoulli family has a
//! monotone likelihood ratio), so by Ville's inequality the chance that the e-process ever
//! reaches `1/α` is at most `α`: the candidates it rejects give an upper bound that holds at
//! every look at once (a confidence sequence). The lower bound is the mirror image. The `m = 0`
//! alternative makes an error-free version's bound fall like `ln(5/α)/n`, close to the best any
//! test can do (`ln(1/α)/n`).

use super::bisect_log;

/// Alternatives below the candidate rate, as multiples of it.
const BELOW: [f64; 5] = [0.0, 0.2, 0.4, 0.6, 0.8];
/// Alternatives above the candidate rate, as multiples of it (capped below 1).
const ABOVE: [f64; 5] = [1.25, 1.5, 2.0, 3.0, 5.0];
/// The rates searched; a bound beyond them is reported as the end of the range.
const FLOOR: f64 = 1e-9;
const CEILING: f64 = 1.0 - 1e-9;
/// Relative precision of a bound.
const PRECISION: f64 = 1e-6;

/// Events and requests, as reals so a projection can add expected (fractional) counts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Tally {
    pub events: f64,
    pub requests: f64,
}

/// The log likelihood ratio of rate `alternative` against `null` over the tally.
fn log_ratio(tally: Tally, null: f64, alternative: f64) -> f64 {
    let alternative = alternative.min(CEILING);
    let misses = tally.requests - tally.events;
    let events_term = if tally.events == 0.0 {
        0.0
    } else if alternative == 0.0 {
        return f64::NEG_INFINITY;
    } else {
        tally.events * (alternative / null).ln()
    };
    events_term + misses * ((1.0 - alternative) / (1.0 - null)).ln()
}

fn e_value(tally: Tally, null: f64, multiples: &[f64]) -> f64 {
    let sum: f64 = multiples
        .iter()
        .map(|m| log_ratio(tally, null, null * m).exp())
        .sum();
    sum / multiples.len() as f64
}

/// The smallest rate the data do not rule out from above at level `alpha`: the true rate is
/// below it at every look but with probability `alpha`. 1 when nothing is ruled out.
pub(crate) fn upper(tally: Tally, alpha: f64) -> f64 {
    let rejected = |p: f64| e_value(tally, p, &BELOW) >= 1.0 / alpha;
    // The e-value grows with the candidate: bisect for where it crosses the threshold.
    if !rejected(CEILING) {
        return 1.0;
    }
    if rejected(FLOOR) {
        return FLOOR;
    }
    bisect_log(FLOOR, CEILING, PRECISION, rejected)
}

/// The largest rate the data do not rule out from below at level `alpha`; 0 when nothing is.
pub(crate) fn lower(tally: Tally, alpha: f64) -> f64 {
    let rejected = |p: f64| e_value(tally, p, &ABOVE) >= 1.0 / alpha;
    if !rejected(FLOOR) {
        return 0.0;
    }
    if rejected(CEILING) {
        return CEILING;
    }
    // Rejected at the low end, not at the high end: bisect for the crossing.
    bisect_log(FLOOR, CEILING, PRECISION, |p| !rejected(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use rand_distr::{Binomial, Distribution};

    fn tally(events: u64, requests: u64) -> Tally {
        Tally {
            events: events as f64,
            requests: requests as f64,
        }
    }

    #[test]
    fn bounds_by_table() {
        // (events, requests, alpha, upper within, lower within)
        let table = [
            // Nothing seen: nothing ruled out.
            (0, 0, 0.01, (1.0, 1.0), (0.0, 0.0)),
            // Error-free: the upper bound falls like ln(5/α)/n.
            (0, 1_000, 0.01, (0.0055, 0.0065), (0.0, 0.0)),
            (0, 10_000, 0.01, (0.00055, 0.00065), (0.0, 0.0)),
            // 1% observed over 10,000: both bounds within a few tenths of a point.
            (100, 10_000, 0.01, (0.0125, 0.0145), (0.0065, 0.0085)),
            // Every request an event.
            (50, 50, 0.01, (1.0, 1.0), (0.85, 0.95)),
        ];
        for (events, requests, alpha, (up_lo, up_hi), (low_lo, low_hi)) in table {
            let counts = tally(events, requests);
            let (u, l) = (upper(counts, alpha), lower(counts, alpha));
            assert!((up_lo..=up_hi).contains(&u), "{events}/{requests}: upper {u}");
            assert!((low_lo..=low_hi).contains(&l), "{events}/{requests}: lower {l}");
        }
    }

    /// Requests arrive in looks of `per_look`; the bounds are checked after every look.
    fn covered_at_every_look(
        rng: &mut StdRng,
        rate: f64,
        per_look: u64,
        looks: usize,
        alpha: f64,
    ) -> (bool, bool) {
        let mut seen = tally(0, 0);
        let (mut above_upper, mut below_lower) = (false, false);
        for _ in 0..looks {
            let events = Binomial::new(per_look, rate).unwrap().sample(rng);
            seen.events += events as f64;
            seen.requests += per_look as f64;
            above_upper |= rate > upper(seen, alpha);
            below_lower |= rate < lower(seen, alpha);
        }
        (above_upper, below_lower)
    }

    #[test]
    fn each_bound_misses_the_true_rate_at_some_look_at_most_alpha_of_the_time() {
        let mut rng = StdRng::seed_from_u64(11);
        let (runs, alpha) = (400, 0.05);
        let (mut upper_misses, mut lower_misses) = (0, 0);
        for run in 0..runs {
            let rate = [0.001, 0.005, 0.02, 0.1][run % 4] * rng.random_range(0.8..1.25);
            let (up, low) = covered_at_every_look(&mut rng, rate, 20, 300, alpha);
            upper_misses += usize::from(up);
            lower_misses += usize::from(low);
        }
        // α = 5%; with 400 runs the binomial standard error at 5% is 1.1%.
        let limit = (runs as f64 * (alpha + 3.0 * 0.011)) as usize;
        assert!(upper_misses <= limit, "upper missed {upper_misses} of {runs}");
        assert!(lower_misses <= limit, "lower missed {lower_misses} of {runs}");
    }
}
