//! The one bucket layout every sketch shares: DDSketch's logarithmic mapping. Bucket `k` holds the
//! values in `(u[k-1], u[k]]` with `u[k] = MIN_SECONDS · γᵏ` and `γ = (1 + α) / (1 − α)`; the
//! value reported for a bucket, `2·u[k-1]·u[k] / (u[k-1] + u[k])`, is then within `α` of every
//! value in it. The lowest bucket also holds everything at or below `MIN_SECONDS`, the highest
//! everything above its lower bound.
//!
//! The bounds are a table computed once, and the table — not the logarithm — decides which bucket
//! a value is in: the logarithm only guesses, within a bucket of the truth. So a value equal to a
//! bound is always in the bucket that bound closes, and counts above a bound are exact.

use std::sync::LazyLock;

/// α: a quantile is reported within this fraction of the sample value it stands for.
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// The ratio of neighbouring bounds, γ = 1.01 / 0.99.
const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);
/// The upper bound of the lowest bucket (1 µs, in seconds).
pub const MIN_SECONDS: f64 = 1e-6;
/// How many buckets a sketch has: the highest one's nominal upper bound, `1 µs · γ¹⁰³⁷`, is
/// ≈1017.6 s, so relative accuracy holds up to 1000 s (checked by a test).
pub const BUCKETS: usize = 1038;

struct Mapping {
    /// Nominal upper bounds in seconds, strictly increasing: `upper[k] = MIN_SECONDS · γᵏ`.
    upper: [f64; BUCKETS],
    ln_min: f64,
    inv_ln_gamma: f64,
}

// `ln` and `exp` are not `const`: the table is computed on first use (a few microseconds). After
// that, reading it is one atomic load, no lock.
static MAPPING: LazyLock<Mapping> = LazyLock::new(|| {
    let ln_gamma = GAMMA.ln();
    // Each bound from its exponent, not by repeated multiplication, so rounding does not
    // accumulate along the table.
    let upper = std::array::from_fn(|k| MIN_SECONDS * (k as f64 * ln_gamma).exp());
    Mapping {
        upper,
        ln_min: MIN_SECONDS.ln(),
        inv_ln_gamma: 1.0 / ln_gamma,
    }
});

/// The bucket holding `seconds`: 0 for anything at or below `MIN_SECONDS` (NaN too), the highest
/// for anything above the highest bucket's lower bound. One logarithm; no allocation.
pub(crate) fn index(seconds: f64) -> usize {
    let mapping = &*MAPPING;
    if seconds.is_nan() || seconds <= mapping.upper[0] {
        return 0;
    }
    let guess = ((seconds.ln() - mapping.ln_min) * mapping.inv_ln_gamma).ceil();
    // `as` saturates: a guess below 0 becomes 0; the loops below fix an off-by-one either way.
    let mut k = (guess as usize).min(BUCKETS - 1);
    while k < BUCKETS - 1 && seconds > mapping.upper[k] {
        k += 1;
    }
    while k > 0 && seconds <= mapping.upper[k - 1] {
        k -= 1;
    }
    k
}

/// The largest value bucket `index` holds: its nominal bound, or `+∞` for the highest bucket,
/// which holds everything above its lower bound.
pub(crate) fn upper_bound(index: usize) -> f64 {
    if index >= BUCKETS - 1 {
        f64::INFINITY
    } else {
        MAPPING.upper[index]
    }
}

/// The value reported for bucket `index`: the one with the same relative distance `α` to both
/// nominal ends of the bucket (for the lowest bucket the nominal lower end is `MIN_SECONDS / γ`).
pub(crate) fn value(index: usize) -> f64 {
    let upper = MAPPING.upper[index];
    let lower = match index {
        0 => MIN_SECONDS / GAMMA,
        _ => MAPPING.upper[index - 1],
    };
    2.0 * lower * upper / (lower + upper)
}

/// The upper bound of the bucket holding `seconds`: the smallest boundary at or above it (`+∞` when
/// `seconds` is in the highest bucket). `LatencySketch::count_above` of a boundary is exact: it
/// counts precisely the recorded values greater than it. Use it to turn a threshold (say, a
/// baseline's p99 scaled by 1.25) into one every sketch counts exactly.
pub fn boundary_at_or_above(seconds: f64) -> f64 {
    upper_bound(index(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upper(k: usize) -> f64 {
        MAPPING.upper[k]
    }

    #[test]
    fn layout_covers_one_microsecond_to_a_thousand_seconds() {
        assert!((upper(0) - MIN_SECONDS).abs() < 1e-18);
        assert!(upper(BUCKETS - 2) < 1000.0 && upper(BUCKETS - 1) >= 1000.0);
        for k in 1..BUCKETS {
            let ratio = upper(k) / upper(k - 1);
            assert!((ratio - GAMMA).abs() < 1e-12, "bucket {k}: ratio {ratio}");
        }
        // What makes the error bound α: every value of a bucket is within α of its value.
        for k in 0..BUCKETS {
            let lower = if k == 0 { MIN_SECONDS / GAMMA } else { upper(k - 1) };
            let v = value(k);
            let worst = ((v - lower) / lower).max((upper(k) - v) / upper(k));
            assert!(worst <= RELATIVE_ACCURACY * (1.0 + 1e-9), "bucket {k}: {worst}");
            assert!(lower < v && v < upper(k));
        }
    }

    #[test]
    fn index_table() {
        let cases = [
            ("zero", 0.0, 0),
            ("negative", -1.0, 0),
            ("NaN", f64::NAN, 0),
            ("below the range", 1e-9, 0),
            ("the lowest bound", MIN_SECONDS, 0),
            ("just above it", MIN_SECONDS.next_up(), 1),
            ("1 ms", 1e-3, 346),
            ("1 s", 1.0, 691),
            ("1000 s", 1000.0, BUCKETS - 1),
            ("one day", 86_400.0, BUCKETS - 1),
            ("infinity", f64::INFINITY, BUCKETS - 1),
        ];
        for (name, seconds, expected) in cases {
            assert_eq!(index(seconds), expected, "{name}");
        }
        // 1 ms lies in (u[345], u[346]].
        assert!(upper(345) < 1e-3 && 1e-3 <= upper(346));
    }

    #[test]
    fn every_bound_closes_its_own_bucket() {
        for k in 0..BUCKETS - 1 {
            assert_eq!(index(upper(k)), k, "bound {k}");
            assert_eq!(index(upper(k).next_up()), k + 1, "just above bound {k}");
            assert_eq!(index(upper(k).next_down()), k, "just below bound {k}");
            assert_eq!(boundary_at_or_above(upper(k)), upper(k));
            assert_eq!(boundary_at_or_above(value(k)), upper(k));
        }
        assert_eq!(index(upper(BUCKETS - 1)), BUCKETS - 1);
        assert_eq!(boundary_at_or_above(999.0), f64::INFINITY);
        assert_eq!(boundary_at_or_above(0.0), MIN_SECONDS);
    }
}
