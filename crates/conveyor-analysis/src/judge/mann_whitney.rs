//! The Mann–Whitney (Wilcoxon rank-sum) test with the Hodges–Lehmann-type shift estimate and its
//! confidence interval, as Kayenta's judge uses it: by the normal approximation with tie and
//! continuity corrections, the interval found by inverting the test with Brent's method.

use serde::Serialize;

use crate::special::{normal_cdf, normal_quantile, normal_sf};

/// Two-sided Wilcoxon rank-sum test of `x` against `y` with the Hodges–Lehmann-type shift
/// estimate and its confidence interval, all by the normal approximation with tie and continuity
/// corrections (R's `wilcox.test(x, y, conf.int = TRUE, exact = FALSE, correct = TRUE)`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MannWhitneyResult {
    /// R's `W`: pairs with x above y, ties counting one half.
    pub u: f64,
    pub p_value: f64,
    /// Location shift x − y.
    pub estimate: f64,
    pub lower: f64,
    pub upper: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MannWhitneyError {
    #[error("both samples need at least one value")]
    EmptySample,
    #[error("samples must hold finite values only")]
    NonFiniteValue,
    #[error("the confidence level must lie strictly between 0 and 1")]
    ConfidenceOutOfRange,
    #[error("cannot compute a confidence interval when all observations are tied")]
    AllObservationsTied,
}

/// Runs the test; the judge passes the canary as `x` and the baseline as `y`. Kayenta reports a
/// p-value from Commons Math without the tie and continuity corrections; it never decides, and R's
/// is given here. The interval bounds and the estimate are roots of the standardized rank-sum
/// statistic as a function of the shift, found with Brent's method at tolerance 1e-4 exactly as
/// Kayenta (and R) do, so results agree with theirs to the last few bits. The estimate keeps the
/// continuity correction, as Kayenta and R before 4.0 do.
pub fn mann_whitney(x: &[f64], y: &[f64], confidence: f64) -> Result<MannWhitneyResult, MannWhitneyError> {
    if x.is_empty() || y.is_empty() {
        return Err(MannWhitneyError::EmptySample);
    }
    if x.iter().chain(y).any(|value| !value.is_finite()) {
        return Err(MannWhitneyError::NonFiniteValue);
    }
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(MannWhitneyError::ConfidenceOutOfRange);
    }
    let statistic = |shift: f64| -> Result<f64, MannWhitneyError> {
        let ranks = RankSum::of(x.iter().map(|value| value - shift), y);
        let dz = ranks.centred();
        let sigma = ranks.sigma();
        if sigma == 0.0 {
            return Err(MannWhitneyError::AllObservationsTied);
        }
        Ok((dz - signum_or_zero(dz) * 0.5) / sigma)
    };

    let at_zero = RankSum::of(x.iter().copied(), y);
    let z = statistic(0.0)?;
    let p_value = 2.0 * normal_cdf(z).min(normal_sf(z));

    let shift_min = min(x) - max(y);
    let shift_max = max(x) - min(y);
    let at_min = statistic(shift_min)?;
    let at_max = statistic(shift_max)?;
    let root = |zq: f64| -> Result<f64, MannWhitneyError> {
        let (f_lower, f_upper) = (at_min - zq, at_max - zq);
        if f_lower <= 0.0 {
            return Ok(shift_min);
        }
        if f_upper >= 0.0 {
            return Ok(shift_max);
        }
        brent_zero(shift_min, shift_max, f_lower, f_upper, |shift| {
            Ok(statistic(shift)? - zq)
        })
    };
    let z_half_alpha = normal_quantile((1.0 - confidence) / 2.0);
    let lower = root(-z_half_alpha)?;
    let upper = root(z_half_alpha)?;
    let estimate = brent_zero(shift_min, shift_max, at_min, at_max, statistic)?;
    Ok(MannWhitneyResult {
        u: at_zero.u(),
        p_value,
        estimate,
        lower,
        upper,
    })
}

/// Rank sum of the first sample within the pooled, average-ranked samples.
pub(super) struct RankSum {
    x_len: f64,
    y_len: f64,
    x_rank_sum: f64,
    /// Σ (t³ − t) over groups of t tied values.
    ties: f64,
}

impl RankSum {
    pub(super) fn of(x: impl Iterator<Item = f64>, y: &[f64]) -> Self {
        let mut pooled: Vec<(f64, bool)> = x.map(|value| (value, true)).collect();
        let x_len = pooled.len() as f64;
        pooled.extend(y.iter().map(|&value| (value, false)));
        pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (mut x_rank_sum, mut ties, mut start) = (0.0, 0.0, 0);
        while start < pooled.len() {
            let end = start
                + pooled[start..]
                    .iter()
                    .take_while(|(v, _)| *v == pooled[start].0)
                    .count();
            let average_rank = (start + 1 + end) as f64 / 2.0;
            let in_x = pooled[start..end].iter().filter(|(_, is_x)| *is_x).count();
            x_rank_sum += average_rank * in_x as f64;
            let tied = (end - start) as f64;
            ties += tied * tied * tied - tied;
            start = end;
        }
        Self {
            x_len,
            y_len: y.len() as f64,
            x_rank_sum,
            ties,
        }
    }

    fn u(&self) -> f64 {
        self.x_rank_sum - self.x_len * (self.x_len + 1.0) / 2.0
    }

    /// U as a share of all pairs: the probability that a value of x exceeds one of y.
    pub(super) fn u_share(&self) -> f64 {
        self.u() / (self.x_len * self.y_len)
    }

    /// U minus its expectation under no shift.
    fn centred(&self) -> f64 {
        self.u() - self.x_len * self.y_len / 2.0
    }

    /// Standard deviation of U under no shift, corrected for ties.
    fn sigma(&self) -> f64 {
        let (n, m) = (self.x_len, self.y_len);
        ((n * m / 12.0) * ((n + m + 1.0) - self.ties / ((n + m) * (n + m - 1.0)))).sqrt()
    }
}

fn signum_or_zero(value: f64) -> f64 {
    if value == 0.0 { 0.0 } else { value.signum() }
}

pub(super) fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

pub(super) fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// Brent's root finder as in R's `R_zeroin2` and Kayenta's `KayentaBrentSolver` (tolerance 1e-4,
/// 1000 iterations): the same steps give the same roots on the step function being solved.
fn brent_zero<E>(
    ax: f64,
    bx: f64,
    fa: f64,
    fb: f64,
    mut f: impl FnMut(f64) -> Result<f64, E>,
) -> Result<f64, E> {
    const TOLERANCE: f64 = 1e-4;
    let (mut a, mut b, mut fa, mut fb) = (ax, bx, fa, fb);
    let (mut c, mut fc) = (a, fa);
    if fa == 0.0 {
        return Ok(a);
    }
    if fb == 0.0 {
        return Ok(b);
    }
    for _ in 0..=1000 {
        let previous_step = b - a;
        if fc.abs() < fb.abs() {
            (a, b, c) = (b, c, b);
            (fa, fb, fc) = (fb, fc, fb);
        }
        let tolerance = 2.0 * f64::EPSILON * b.abs() + TOLERANCE / 2.0;
        let mut new_step = (c - b) / 2.0;
        if new_step.abs() <= tolerance || fb == 0.0 {
            return Ok(b);
        }
        if previous_step.abs() >= tolerance && fa.abs() > fb.abs() {
            let cb = c - b;
            let (mut p, mut q);
            if a == c {
                let t1 = fb / fa;
                p = cb * t1;
                q = 1.0 - t1;
            } else {
                let (qa, t1, t2) = (fa / fc, fb / fc, fb / fa);
                p = t2 * (cb * qa * (qa - t1) - (b - a) * (t1 - 1.0));
                q = (qa - 1.0) * (t1 - 1.0) * (t2 - 1.0);
            }
            if p > 0.0 {
                q = -q;
            } else {
                p = -p;
            }
            if p < 0.75 * cb * q - (tolerance * q).abs() / 2.0 && p < (previous_step * q / 2.0).abs() {
                new_step = p / q;
            }
        }
        if new_step.abs() < tolerance {
            new_step = if new_step > 0.0 { tolerance } else { -tolerance };
        }
        (a, fa) = (b, fb);
        b += new_step;
        fb = f(b)?;
        if (fb > 0.0 && fc > 0.0) || (fb < 0.0 && fc < 0.0) {
            (c, fc) = (a, fa);
        }
    }
    Ok(b)
}
