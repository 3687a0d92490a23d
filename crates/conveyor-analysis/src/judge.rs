//! A canary judge compatible with Kayenta's `NetflixACAJudge-v1.0`, so canary configs and verdicts
//! carry over from Spinnaker.
//!
//! Per metric ([`classify`]): NaNs are removed or replaced by zero, outliers optionally removed
//! (IQR fence widened to the 1st/99th percentiles), then missing data is `Nodata`,
//! `NodataFailMetric` or a pass depending on the NaN strategy and `mustHaveData`. Otherwise a 98%
//! confidence interval for the shift canary − baseline is found by inverting the Mann–Whitney
//! test ([`mann_whitney`]); the canary is `High` when the whole interval lies above a tolerance band
//! of ±25% of the shift estimate *and* the effect size reaches `allowedIncrease` (mirror image for
//! `Low`); `direction` says which of the two counts. A critical metric beyond its critical effect
//! size fails the whole canary.
//!
//! Scoring ([`score`]): a group's score is its share of passing metrics among Pass/High/Low/
//! NodataFailMetric; the summary is the weighted sum of group scores, rounded to two decimals;
//! any critical failure, or `Nodata` on half the metrics or more, scores 0.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod mann_whitney;

pub use mann_whitney::{MannWhitneyError, MannWhitneyResult, mann_whitney};
use mann_whitney::{RankSum, max, min};

/// Kayenta's judge name, recorded with every result.
pub const JUDGE_NAME: &str = "NetflixACAJudge-v1.0";
/// Confidence level of the shift interval (hard-coded in Kayenta's judge).
pub const CONFIDENCE_LEVEL: f64 = 0.98;
/// Half-width of the band around zero, as a fraction of |shift estimate|, that the interval must
/// clear (Kayenta's `tolerance`).
pub const TOLERANCE: f64 = 0.25;
/// Share of metrics (percent) that may be `Nodata` before the canary fails outright.
pub const NODATA_THRESHOLD_PERCENT: f64 = 50.0;

// === Configuration ===

/// Which change fails a metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Only a rise fails (errors, latency).
    Increase,
    /// Only a fall fails (throughput, successes).
    Decrease,
    #[default]
    Either,
}

/// What a NaN sample means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NanStrategy {
    /// The sample is missing: drop it.
    #[default]
    Remove,
    /// No data means zero (counters that report nothing when nothing happened).
    Replace,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutlierStrategy {
    #[default]
    Keep,
    Remove,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Outliers {
    pub strategy: OutlierStrategy,
    /// Multiple of the interquartile range beyond the quartiles that counts as an outlier.
    pub outlier_factor: f64,
}

impl Default for Outliers {
    fn default() -> Self {
        Self {
            strategy: OutlierStrategy::Keep,
            outlier_factor: 3.0,
        }
    }
}

/// How the size of a change is measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EffectSizeMeasure {
    /// Canary mean / baseline mean.
    #[default]
    #[serde(rename = "meanRatio")]
    MeanRatio,
    /// Common-language effect size: the share of (canary, baseline) pairs where the canary is higher.
    #[serde(rename = "cles")]
    Cles,
}

/// Effect-size gates. Unset thresholds default to "no change" (1.0 for the mean ratio, 0.5 for
/// CLES), as in Kayenta, so by default the rank test alone decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EffectSize {
    pub measure: EffectSizeMeasure,
    /// A `High` needs at least this effect.
    pub allowed_increase: Option<f64>,
    /// A `Low` needs at most this effect.
    pub allowed_decrease: Option<f64>,
    /// A critical metric's `High` fails the canary from this effect on.
    pub critical_increase: Option<f64>,
    /// A critical metric's `Low` fails the canary from this effect down.
    pub critical_decrease: Option<f64>,
}

impl EffectSize {
    fn no_change(&self) -> f64 {
        match self.measure {
            EffectSizeMeasure::MeanRatio => 1.0,
            EffectSizeMeasure::Cles => 0.5,
        }
    }
    fn allowed_increase(&self) -> f64 {
        self.allowed_increase.unwrap_or(self.no_change())
    }
    fn allowed_decrease(&self) -> f64 {
        self.allowed_decrease.unwrap_or(self.no_change())
    }
    fn critical_increase(&self) -> f64 {
        self.critical_increase.unwrap_or(self.no_change())
    }
    fn critical_decrease(&self) -> f64 {
        self.critical_decrease.unwrap_or(self.no_change())
    }
}

/// One metric's canary settings: Kayenta's `analysisConfigurations.canary` plus name and groups.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MetricConfig {
    pub name: String,
    pub groups: Vec<String>,
    pub direction: Direction,
    pub nan_strategy: NanStrategy,
    pub outliers: Outliers,
    pub effect_size: EffectSize,
    /// A failure of this metric fails the whole canary.
    pub critical: bool,
    /// Missing data fails this metric instead of leaving it out of the score.
    pub must_have_data: bool,
    /// Classified and reported but left out of the score.
    pub muted: bool,
}

impl MetricConfig {
    /// A metric with Kayenta's defaults in the given groups.
    pub fn new(name: impl Into<String>, groups: &[&str]) -> Self {
        Self {
            name: name.into(),
            groups: groups.iter().map(|group| group.to_string()).collect(),
            ..Self::default()
        }
    }
}

// === Metric classification ===

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Classification {
    Pass,
    High,
    Low,
    /// Missing data on a `mustHaveData` metric: counts as a failure in its group.
    NodataFailMetric,
    /// Missing data: left out of its group's score.
    Nodata,
    /// The test could not run; left out of the score.
    Error,
}

/// Kayenta's descriptive statistics of one side after preprocessing (zeros when empty).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SampleSummary {
    pub count: usize,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// Sample standard deviation (n − 1).
    pub std: f64,
}

impl SampleSummary {
    fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self {
                count: 0,
                min: 0.0,
                max: 0.0,
                mean: 0.0,
                std: 0.0,
            };
        }
        let mean = mean(values);
        let std = if values.len() > 1 {
            let squares: f64 = values.iter().map(|value| (value - mean).powi(2)).sum();
            (squares / (values.len() - 1) as f64).sqrt()
        } else {
            0.0
        };
        Self {
            count: values.len(),
            min: min(values),
            max: max(values),
            mean,
            std,
        }
    }
}

/// The shift canary − baseline and its interval, as used for the decision.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ShiftInterval {
    pub estimate: f64,
    pub lower: f64,
    pub upper: f64,
    /// None when both sides were constant and the interval is the difference itself.
    pub p_value: Option<f64>,
}

/// One metric's verdict and the evidence for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricResult {
    pub name: String,
    pub classification: Classification,
    pub reason: Option<String>,
    /// Set when this result fails the whole canary (critical metric beyond its critical effect
    /// size, or a critical metric without data or with an error).
    pub critical: bool,
    /// Canary mean / baseline mean (Kayenta's `ratio`); None when either mean is zero.
    pub mean_ratio: Option<f64>,
    /// The configured effect-size measure; None when undefined (a zero mean).
    pub effect_size: Option<f64>,
    pub shift: Option<ShiftInterval>,
    pub control: SampleSummary,
    pub experiment: SampleSummary,
}

/// Classifies one metric from its baseline (`control`) and canary (`experiment`) samples.
pub fn classify(config: &MetricConfig, control: &[f64], experiment: &[f64]) -> MetricResult {
    let control = preprocess(config, control);
    let experiment = preprocess(config, experiment);
    let mut result = MetricResult {
        name: config.name.clone(),
        classification: Classification::Pass,
        reason: None,
        critical: false,
        mean_ratio: None,
        effect_size: None,
        shift: None,
        control: SampleSummary::of(&control),
        experiment: SampleSummary::of(&experiment),
    };
    let name = &config.name;

    if control.is_empty() || experiment.is_empty() {
        if config.nan_strategy == NanStrategy::Replace {
            return result;
        }
        result.reason = Some(format!("Missing data for {name}"));
        if config.must_have_data && !config.critical {
            result.classification = Classification::NodataFailMetric;
        } else {
            result.classification = Classification::Nodata;
            result.critical = config.critical;
        }
        return result;
    }
    if sorted(&control) == sorted(&experiment) {
        result.reason = Some("The Canary and Baseline data are identical".to_string());
        return result;
    }
    let first = control[0];
    let constant = |values: &[f64]| values.iter().all(|&value| value == values[0]);
    if constant(&control) && constant(&experiment) && experiment[0] == first {
        return result;
    }

    result.mean_ratio = mean_ratio(&control, &experiment);
    result.effect_size = match config.effect_size.measure {
        EffectSizeMeasure::MeanRatio => result.mean_ratio,
        EffectSizeMeasure::Cles => Some(cles(&control, &experiment)),
    };
    let shift = if constant(&control) && constant(&experiment) {
        // Kayenta jitters two constant samples with tiny Gaussian noise so the test can run; the
        // samples are then fully separated and the interval collapses onto the difference.
        let difference = experiment[0] - control[0];
        ShiftInterval {
            estimate: difference,
            lower: difference,
            upper: difference,
            p_value: None,
        }
    } else {
        match mann_whitney(&experiment, &control, CONFIDENCE_LEVEL) {
            Ok(test) => ShiftInterval {
                estimate: test.estimate,
                lower: test.lower,
                upper: test.upper,
                p_value: Some(test.p_value),
            },
            Err(error) => {
                result.classification = Classification::Error;
                result.reason = Some(format!("Metric classification failed: {error}"));
                result.critical = config.critical;
                return result;
            }
        }
    };
    result.shift = Some(shift);

    // An undefined effect size (a zero mean) cannot veto what the rank test found.
    let effect_at_least = |threshold: f64| result.effect_size.is_none_or(|e| e >= threshold);
    let effect_at_most = |threshold: f64| result.effect_size.is_none_or(|e| e <= threshold);
    let band = TOLERANCE * shift.estimate.abs();
    let thresholds = &config.effect_size;
    let may_rise = matches!(config.direction, Direction::Increase | Direction::Either);
    let may_fall = matches!(config.direction, Direction::Decrease | Direction::Either);
    let (classification, critical) =
        if may_rise && shift.lower > band && effect_at_least(thresholds.allowed_increase()) {
            (
                Classification::High,
                effect_at_least(thresholds.critical_increase()),
            )
        } else if may_fall && shift.upper < -band && effect_at_most(thresholds.allowed_decrease()) {
            (
                Classification::Low,
                effect_at_most(thresholds.critical_decrease()),
            )
        } else {
            (Classification::Pass, false)
        };
    result.classification = classification;
    if classification != Classification::Pass {
        result.critical = config.critical && critical;
        let suffix = if result.critical { " (Critical)" } else { "" };
        result.reason = Some(format!(
            "{name} was classified as {}{suffix}",
            classification.label()
        ));
    }
    result
}

fn preprocess(config: &MetricConfig, values: &[f64]) -> Vec<f64> {
    let values: Vec<f64> = match config.nan_strategy {
        NanStrategy::Remove => values.iter().copied().filter(|value| !value.is_nan()).collect(),
        NanStrategy::Replace => values
            .iter()
            .map(|&value| if value.is_nan() { 0.0 } else { value })
            .collect(),
    };
    match config.outliers.strategy {
        OutlierStrategy::Keep => values,
        OutlierStrategy::Remove => remove_outliers(&values, config.outliers.outlier_factor),
    }
}

/// Kayenta's `IQRDetector(factor, reduceSensitivity = true)`: values beyond the quartiles ±
/// `factor`·IQR *and* beyond the 1st/99th percentiles are dropped, so short, spiky series keep
/// their shape.
pub fn remove_outliers(values: &[f64], factor: f64) -> Vec<f64> {
    if values.is_empty() {
        return Vec::new();
    }
    let sorted = sorted(values);
    let (p25, p75) = (percentile(&sorted, 25.0), percentile(&sorted, 75.0));
    let iqr = p75 - p25;
    let lower_fence = percentile(&sorted, 1.0).min(p25 - factor * iqr);
    let upper_fence = percentile(&sorted, 99.0).max(p75 + factor * iqr);
    values
        .iter()
        .copied()
        .filter(|&value| value >= lower_fence && value <= upper_fence)
        .collect()
}

/// Percentile of sorted data by linear interpolation (Hyndman–Fan type 7, R's and numpy's default).
fn percentile(sorted: &[f64], percent: f64) -> f64 {
    let position = (sorted.len() - 1) as f64 * percent / 100.0;
    let below = position.floor() as usize;
    match sorted.get(below + 1) {
        Some(&above) => sorted[below] + (position - below as f64) * (above - sorted[below]),
        None => sorted[sorted.len() - 1],
    }
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn mean_ratio(control: &[f64], experiment: &[f64]) -> Option<f64> {
    let (control_mean, experiment_mean) = (mean(control), mean(experiment));
    (control_mean != 0.0 && experiment_mean != 0.0).then(|| experiment_mean / control_mean)
}

/// Vargha–Delaney A: share of (canary, baseline) pairs with the canary higher, ties counting half.
fn cles(control: &[f64], experiment: &[f64]) -> f64 {
    RankSum::of(experiment.iter().copied(), control).u_share()
}

// === Scoring ===

/// Weight (percent) per group; groups without one share what is left of 100 equally.
pub type GroupWeights = BTreeMap<String, f64>;

/// Summary-score thresholds (percent): at or above `pass` passes, at or above `marginal` is
/// marginal, below fails.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreThresholds {
    pub pass: f64,
    pub marginal: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Pass,
    Marginal,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupScore {
    pub name: String,
    /// Passing share of the scored metrics, in percent (0 when none was scored).
    pub score: f64,
    /// No metric of the group was Pass, High, Low or NodataFailMetric; the group then counts as 100.
    pub no_data: bool,
    /// Count of each classification among the group's metrics.
    pub classifications: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JudgeResult {
    pub judge: &'static str,
    /// Summary score in percent, rounded half-up to two decimals.
    pub score: f64,
    pub verdict: Verdict,
    /// Why the canary failed outright, if it did.
    pub reason: Option<String>,
    pub groups: Vec<GroupScore>,
}

/// Kayenta's `WeightedSumScorer` and `ThresholdScoreClassifier` over classified metrics; muted
/// metrics are reported by the caller but left out here. A critical failure or too much missing
/// data scores 0 and fails whatever the thresholds say.
pub fn score(
    results: &[(MetricConfig, MetricResult)],
    thresholds: &ScoreThresholds,
    weights: &GroupWeights,
) -> JudgeResult {
    let scored: Vec<_> = results.iter().filter(|(config, _)| !config.muted).collect();

    let mut labels_by_group: BTreeMap<&str, Vec<Classification>> = BTreeMap::new();
    for (config, result) in &scored {
        for group in &config.groups {
            labels_by_group
                .entry(group)
                .or_default()
                .push(result.classification);
        }
    }
    let groups: Vec<GroupScore> = labels_by_group
        .into_iter()
        .map(|(name, labels)| {
            let count =
                |wanted: &[Classification]| labels.iter().filter(|label| wanted.contains(label)).count();
            let passed = count(&[Classification::Pass]);
            let total = count(&[
                Classification::Pass,
                Classification::High,
                Classification::Low,
                Classification::NodataFailMetric,
            ]);
            let mut classifications = BTreeMap::new();
            for label in &labels {
                *classifications.entry(label.label().to_string()).or_insert(0) += 1;
            }
            GroupScore {
                name: name.to_string(),
                score: if total == 0 {
                    0.0
                } else {
                    passed as f64 / total as f64 * 100.0
                },
                no_data: total == 0,
                classifications,
            }
        })
        .collect();

    let critical_failure = scored
        .iter()
        .find(|(_, result)| result.critical && result.classification != Classification::Pass);
    let nodata = scored
        .iter()
        .filter(|(_, result)| result.classification == Classification::Nodata)
        .count();
    let reason = if let Some((_, failure)) = critical_failure {
        Some(format!(
            "Canary Failed: {}",
            failure.reason.as_deref().unwrap_or_default()
        ))
    } else if !scored.is_empty() && nodata as f64 / scored.len() as f64 * 100.0 >= NODATA_THRESHOLD_PERCENT {
        Some(format!(
            "Canary Failed: {NODATA_THRESHOLD_PERCENT}% or more metrics returned NODATA"
        ))
    } else {
        None
    };
    if reason.is_some() {
        return JudgeResult {
            judge: JUDGE_NAME,
            score: 0.0,
            verdict: Verdict::Fail,
            reason,
            groups,
        };
    }

    let unweighted = groups
        .iter()
        .filter(|group| !weights.contains_key(&group.name))
        .count();
    let shared_weight = if unweighted > 0 {
        (100.0 - weights.values().sum::<f64>()) / unweighted as f64
    } else {
        0.0
    };
    let summary: f64 = groups
        .iter()
        .map(|group| {
            let effective = if group.no_data { 100.0 } else { group.score };
            effective * weights.get(&group.name).copied().unwrap_or(shared_weight) / 100.0
        })
        .sum();
    let score = round_half_up_two_decimals(summary);
    let verdict = if score >= thresholds.pass {
        Verdict::Pass
    } else if score >= thresholds.marginal {
        Verdict::Marginal
    } else {
        Verdict::Fail
    };
    JudgeResult {
        judge: JUDGE_NAME,
        score,
        verdict,
        reason: None,
        groups,
    }
}

/// Commons Math's `MathUtils.round(x, 2)`: half-up on the shortest decimal form of `x`, so a score
/// printed as 89.995 rounds to 90.0 rather than down through its binary neighbour.
fn round_half_up_two_decimals(value: f64) -> f64 {
    let text = format!("{value}");
    let Some((integer, fraction)) = text.split_once('.') else {
        return value;
    };
    if fraction.len() <= 2 {
        return value;
    }
    let truncated: f64 = format!("{integer}.{}", &fraction[..2]).parse().unwrap_or(value);
    let step = if fraction.as_bytes()[2] >= b'5' { 0.01 } else { 0.0 };
    let rounded = truncated.abs() + step;
    // Re-parse the two-decimal text so the result is the closest double to it.
    let rounded: f64 = format!("{rounded:.2}").parse().unwrap_or(rounded);
    if value.is_sign_negative() {
        -rounded
    } else {
        rounded
    }
}

impl Classification {
    /// Kayenta's wire label (`"Pass"`, `"NodataFailMetric"`, …).
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "Pass",
            Self::High => "High",
            Self::Low => "Low",
            Self::NodataFailMetric => "NodataFailMetric",
            Self::Nodata => "Nodata",
            Self::Error => "Error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_near(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "{actual} is not within {tolerance} of {expected}"
        );
    }

    // Hollander & Wolfe (1973), p. 69 — the two-sample example of R's `?wilcox.test`.
    const HW_X: [f64; 10] = [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46];
    const HW_Y: [f64; 5] = [1.15, 0.88, 0.90, 0.74, 1.21];
    const TIES_A: [f64; 8] = [1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0];
    const TIES_B: [f64; 9] = [3.0, 4.0, 4.0, 5.0, 5.0, 6.0, 7.0, 7.0, 8.0];
    const BASELINE: [f64; 10] = [10.1, 9.8, 10.4, 10.0, 9.9, 10.2, 10.3, 9.7, 10.0, 10.1];
    const CANARY_UP: [f64; 10] = [12.2, 11.9, 12.5, 12.1, 12.0, 12.4, 12.3, 11.8, 12.1, 12.2];

    /// Expected W, p-value and interval from R 4.2.2:
    /// `wilcox.test(x, y, conf.int = TRUE, conf.level = c, exact = FALSE, correct = TRUE)`.
    /// The estimate is Kayenta's (continuity-corrected statistic, as R before 4.0), computed in
    /// R 4.2.2 as `uniroot(W, c(min(x) - max(y), max(x) - min(y)), tol = 1e-4)$root` with W the
    /// corrected standardized statistic; R 4.2 itself reports 0.30250833904157232 for the first.
    #[test]
    #[allow(clippy::excessive_precision, reason = "R's 17-digit output, kept as printed")]
    fn mann_whitney_matches_r() {
        struct Case {
            x: &'static [f64],
            y: &'static [f64],
            confidence: f64,
            u: f64,
            p_value: f64,
            estimate: f64,
            lower: f64,
            upper: f64,
        }
        let cases = [
            Case {
                x: &HW_X,
                y: &HW_Y,
                confidence: 0.98,
                u: 35.0,
                p_value: 0.24462360512698336,
                estimate: 0.30014867694941327,
                lower: -0.31999721322183022,
                upper: 0.98994618206203366,
            },
            Case {
                x: &HW_X,
                y: &HW_Y,
                confidence: 0.95,
                u: 35.0,
                p_value: 0.24462360512698336,
                estimate: 0.30014867694941327,
                lower: -0.15001483719908448,
                upper: 0.75994276532229388,
            },
            Case {
                x: &TIES_A,
                y: &TIES_B,
                confidence: 0.98,
                u: 7.5,
                p_value: 0.0063731338380858754,
                estimate: -2.5,
                lower: -4.9999956885003582,
                upper: -0.99997930903397692,
            },
            Case {
                x: &TIES_B,
                y: &TIES_A,
                confidence: 0.98,
                u: 64.5,
                p_value: 0.0063731338380858754,
                estimate: 2.5,
                lower: 0.99997930903397692,
                upper: 4.9999956885003582,
            },
            Case {
                x: &CANARY_UP,
                y: &BASELINE,
                confidence: 0.98,
                u: 100.0,
                p_value: 0.00017861448837368194,
                estimate: 2.1000000000000005,
                lower: 1.8000147867613632,
                upper: 2.3999852132386379,
            },
        ];
        for case in cases {
            let result = mann_whitney(case.x, case.y, case.confidence).expect("valid samples");
            assert_eq!(result.u, case.u);
            assert_near(result.p_value, case.p_value, case.p_value * 1e-12);
            assert_near(result.estimate, case.estimate, 1e-9);
            assert_near(result.lower, case.lower, 1e-9);
            assert_near(result.upper, case.upper, 1e-9);
        }
    }

    #[test]
    fn mann_whitney_rejects_what_it_cannot_test() {
        assert_eq!(
            mann_whitney(&[], &[1.0], 0.98),
            Err(MannWhitneyError::EmptySample)
        );
        assert_eq!(
            mann_whitney(&[1.0, f64::INFINITY], &[1.0], 0.98),
            Err(MannWhitneyError::NonFiniteValue)
        );
        assert_eq!(
            mann_whitney(&[1.0], &[2.0], 1.0),
            Err(MannWhitneyError::ConfidenceOutOfRange)
        );
        assert_eq!(
            mann_whitney(&[3.0, 3.0], &[3.0, 3.0, 3.0], 0.98),
            Err(MannWhitneyError::AllObservationsTied)
        );
    }

    #[test]
    fn outliers_beyond_the_widened_fence_are_removed() {
        let spike: Vec<f64> = (1..=20).map(f64::from).chain([1000.0]).collect();
        // Quartiles 6 and 16, IQR fence [-24, 46]; the 99th percentile 804 still drops 1000.
        assert_eq!(
            remove_outliers(&spike, 3.0),
            (1..=20).map(f64::from).collect::<Vec<_>>()
        );
        // A tight fence (factor 0.01 → [25.255, 75.745]) is widened to the 1st/99th percentiles
        // (1.99, 99.01): only the extremes go.
        let ramp: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(
            remove_outliers(&ramp, 0.01),
            (2..=99).map(f64::from).collect::<Vec<_>>()
        );
        assert!(remove_outliers(&[], 3.0).is_empty());
        assert_eq!(remove_outliers(&[7.0], 3.0), vec![7.0]);
    }

    fn metric(configure: impl FnOnce(&mut MetricConfig)) -> MetricConfig {
        let mut config = MetricConfig::new("latency", &["performance"]);
        configure(&mut config);
        config
    }

    #[test]
    fn a_clear_shift_is_high_or_low_as_the_direction_allows() {
        let cases = [
            (
                Direction::Either,
                &CANARY_UP[..],
                &BASELINE[..],
                Classification::High,
            ),
            (
                Direction::Increase,
                &CANARY_UP[..],
                &BASELINE[..],
                Classification::High,
            ),
            (
                Direction::Decrease,
                &CANARY_UP[..],
                &BASELINE[..],
                Classification::Pass,
            ),
            (
                Direction::Either,
                &BASELINE[..],
                &CANARY_UP[..],
                Classification::Low,
            ),
            (
                Direction::Increase,
                &BASELINE[..],
                &CANARY_UP[..],
                Classification::Pass,
            ),
            (Direction::Either, &HW_X[..], &HW_Y[..], Classification::Pass),
        ];
        for (direction, experiment, control, expected) in cases {
            let result = classify(&metric(|m| m.direction = direction), control, experiment);
            assert_eq!(result.classification, expected, "{direction:?}");
            assert!(!result.critical);
        }
        let high = classify(&metric(|_| ()), &BASELINE, &CANARY_UP);
        assert_eq!(high.reason.as_deref(), Some("latency was classified as High"));
        let shift = high.shift.expect("tested");
        assert_near(shift.lower, 1.8000147867613632, 1e-9);
        assert_near(high.mean_ratio.expect("non-zero means"), 121.5 / 100.5, 1e-12);
    }

    #[test]
    fn effect_size_thresholds_gate_high_and_low() {
        // The canary's mean is 1.209 times the baseline's.
        let cases = [
            (Some(1.2), Classification::High),
            (Some(1.25), Classification::Pass),
            (None, Classification::High),
        ];
        for (allowed_increase, expected) in cases {
            let config = metric(|m| m.effect_size.allowed_increase = allowed_increase);
            assert_eq!(classify(&config, &BASELINE, &CANARY_UP).classification, expected);
        }
        let cases = [
            (Some(0.85), Classification::Low),
            (Some(0.8), Classification::Pass),
        ];
        for (allowed_decrease, expected) in cases {
            let config = metric(|m| m.effect_size.allowed_decrease = allowed_decrease);
            // Mean ratio 100.5 / 121.5 = 0.827.
            assert_eq!(classify(&config, &CANARY_UP, &BASELINE).classification, expected);
        }
        // CLES: every canary value is above every baseline value, so A = 1.
        let config = metric(|m| {
            m.effect_size.measure = EffectSizeMeasure::Cles;
            m.effect_size.allowed_increase = Some(0.9);
        });
        let result = classify(&config, &BASELINE, &CANARY_UP);
        assert_eq!(result.effect_size, Some(1.0));
        assert_eq!(result.classification, Classification::High);
    }

    #[test]
    fn critical_metrics_fail_the_canary_beyond_their_critical_effect() {
        let cases = [
            (true, Some(1.2), true),
            (true, Some(1.5), false),
            (true, None, true),
            (false, Some(1.2), false),
        ];
        for (critical, critical_increase, expected) in cases {
            let config = metric(|m| {
                m.critical = critical;
                m.effect_size.critical_increase = critical_increase;
            });
            let result = classify(&config, &BASELINE, &CANARY_UP);
            assert_eq!(result.classification, Classification::High);
            assert_eq!(result.critical, expected, "{critical} {critical_increase:?}");
        }
        let config = metric(|m| m.critical = true);
        assert_eq!(
            classify(&config, &BASELINE, &CANARY_UP).reason.as_deref(),
            Some("latency was classified as High (Critical)")
        );
    }

    #[test]
    fn missing_data_follows_the_nan_strategy_must_have_data_and_criticality() {
        let nothing = [f64::NAN, f64::NAN];
        let cases = [
            (NanStrategy::Remove, false, false, Classification::Nodata, false),
            (
                NanStrategy::Remove,
                true,
                false,
                Classification::NodataFailMetric,
                false,
            ),
            (NanStrategy::Remove, false, true, Classification::Nodata, true),
            (NanStrategy::Remove, true, true, Classification::Nodata, true),
            (NanStrategy::Replace, true, true, Classification::Pass, false),
        ];
        for (nan_strategy, must_have_data, critical, expected, expected_critical) in cases {
            let config = metric(|m| {
                m.nan_strategy = nan_strategy;
                m.must_have_data = must_have_data;
                m.critical = critical;
            });
            // With NaNs replaced, only a query that returned no samples at all has no data.
            let samples: &[f64] = if nan_strategy == NanStrategy::Replace {
                &[]
            } else {
                &nothing
            };
            let result = classify(&config, &BASELINE, samples);
            assert_eq!(
                result.classification, expected,
                "{nan_strategy:?} {must_have_data} {critical}"
            );
            assert_eq!(result.critical, expected_critical);
        }
        // Replaced NaNs are zeros: a canary reporting nothing against a busy baseline is Low.
        let config = metric(|m| m.nan_strategy = NanStrategy::Replace);
        let result = classify(&config, &BASELINE, &[f64::NAN; 10]);
        assert_eq!(result.classification, Classification::Low);
        assert_eq!(result.experiment.count, 10);
        assert_eq!(result.mean_ratio, None);
    }

    #[test]
    fn degenerate_samples_pass_or_compare_their_constants() {
        let config = metric(|_| ());
        let identical = classify(&config, &[3.0, 1.0, 2.0], &[1.0, 2.0, 3.0]);
        assert_eq!(identical.classification, Classification::Pass);
        assert_eq!(
            identical.reason.as_deref(),
            Some("The Canary and Baseline data are identical")
        );
        assert_eq!(
            classify(&config, &[4.0, 4.0], &[4.0; 3]).classification,
            Classification::Pass
        );
        // Errors appear where the baseline had none: no mean ratio, the rank test decides.
        let errors = classify(&config, &[0.0; 10], &[5.0; 10]);
        assert_eq!(errors.classification, Classification::High);
        assert_eq!(errors.mean_ratio, None);
        assert_eq!(errors.shift.map(|shift| shift.lower), Some(5.0));
        assert_eq!(
            classify(&config, &[5.0; 10], &[2.0; 10]).classification,
            Classification::Low
        );
    }

    #[test]
    fn a_test_that_cannot_run_is_an_error() {
        let config = metric(|m| m.critical = true);
        let result = classify(&config, &BASELINE, &[1.0, f64::INFINITY]);
        assert_eq!(result.classification, Classification::Error);
        assert!(result.critical);
    }

    #[test]
    fn serialized_results_carry_kayenta_labels() {
        let result = classify(&metric(|_| ()), &BASELINE, &CANARY_UP);
        let json = serde_json::to_value(&result).expect("serializable");
        assert_eq!(json["classification"], "High");
        assert_eq!(json["control"]["count"], 10);
        let config: MetricConfig = serde_json::from_value(serde_json::json!({
            "name": "errors",
            "groups": ["errors"],
            "direction": "increase",
            "nanStrategy": "replace",
            "critical": true,
            "mustHaveData": true,
            "effectSize": { "measure": "cles", "criticalIncrease": 0.9 },
            "outliers": { "strategy": "remove" }
        }))
        .expect("Kayenta-shaped config");
        assert_eq!(config.direction, Direction::Increase);
        assert_eq!(
            config.outliers,
            Outliers {
                strategy: OutlierStrategy::Remove,
                outlier_factor: 3.0
            }
        );
        assert_eq!(config.effect_size.allowed_increase(), 0.5);
        assert_eq!(config.effect_size.critical_increase(), 0.9);
    }

    fn outcome(name: &str, groups: &[&str], classification: Classification) -> (MetricConfig, MetricResult) {
        let config = MetricConfig::new(name, groups);
        let mut result = classify(&config, &BASELINE, &BASELINE);
        result.classification = classification;
        (config, result)
    }

    const THRESHOLDS: ScoreThresholds = ScoreThresholds {
        pass: 75.0,
        marginal: 50.0,
    };

    #[test]
    fn group_scores_are_weighted_and_classified() {
        use Classification::*;
        let weights: GroupWeights = [("errors".to_string(), 60.0), ("latency".to_string(), 40.0)].into();
        let results = [
            outcome("5xx", &["errors"], Pass),
            outcome("4xx", &["errors"], High),
            outcome("p99", &["latency"], Pass),
            outcome("p50", &["latency"], Nodata),
        ];
        let judged = score(&results, &THRESHOLDS, &weights);
        // errors 50 × 0.6 + latency 100 × 0.4.
        assert_eq!(judged.score, 70.0);
        assert_eq!(judged.verdict, Verdict::Marginal);
        assert_eq!(judged.groups[0].name, "errors");
        assert_eq!(judged.groups[0].classifications["High"], 1);

        type Case<'a> = (&'a [(&'a str, Classification)], f64, Verdict);
        let cases: [Case<'_>; 6] = [
            // Unweighted groups share what is left: a 50, b and c 25 each; c has no data → 100.
            (
                &[("a", Pass), ("b", High), ("c", Nodata), ("a", Pass)],
                75.0,
                Verdict::Pass,
            ),
            (
                &[("a", Pass), ("a", Low), ("a", NodataFailMetric), ("b", Pass)],
                66.67,
                Verdict::Marginal,
            ),
            (
                &[("a", Pass), ("a", High), ("a", High), ("b", Pass)],
                66.67,
                Verdict::Marginal,
            ),
            (&[("a", Low), ("b", High), ("c", Pass)], 25.0, Verdict::Fail),
            (&[("a", Pass), ("b", Error), ("c", Pass)], 100.0, Verdict::Pass),
            (
                &[("a", Nodata), ("b", Nodata), ("c", Pass), ("c", High)],
                0.0,
                Verdict::Fail,
            ),
        ];
        let weights: GroupWeights = [("a".to_string(), 50.0)].into();
        for (metrics, expected_score, expected_verdict) in cases {
            let results: Vec<_> = metrics
                .iter()
                .enumerate()
                .map(|(i, (group, label))| outcome(&format!("m{i}"), &[group], *label))
                .collect();
            let judged = score(&results, &THRESHOLDS, &weights);
            assert_eq!(
                (judged.score, judged.verdict),
                (expected_score, expected_verdict),
                "{metrics:?}"
            );
        }
    }

    #[test]
    fn critical_failures_and_missing_data_fail_outright() {
        use Classification::*;
        let weights = GroupWeights::new();
        let mut critical = outcome("5xx", &["errors"], High);
        critical.1.critical = true;
        critical.1.reason = Some("5xx was classified as High (Critical)".to_string());
        let results = [
            critical,
            outcome("p99", &["latency"], Pass),
            outcome("p50", &["latency"], Pass),
        ];
        let judged = score(&results, &THRESHOLDS, &weights);
        assert_eq!((judged.score, judged.verdict), (0.0, Verdict::Fail));
        assert_eq!(
            judged.reason.as_deref(),
            Some("Canary Failed: 5xx was classified as High (Critical)")
        );

        let results = [outcome("a", &["g"], Nodata), outcome("b", &["g"], Pass)];
        let judged = score(&results, &THRESHOLDS, &weights);
        assert_eq!((judged.score, judged.verdict), (0.0, Verdict::Fail));
        assert_eq!(
            judged.reason.as_deref(),
            Some("Canary Failed: 50% or more metrics returned NODATA")
        );

        // A muted metric is left out, critical or not.
        let (mut config, mut result) = outcome("flaky", &["g"], High);
        config.muted = true;
        result.critical = true;
        let results = [(config, result), outcome("b", &["g"], Pass)];
        let judged = score(&results, &THRESHOLDS, &weights);
        assert_eq!((judged.score, judged.verdict), (100.0, Verdict::Pass));
    }

    #[test]
    fn summary_scores_round_half_up_on_their_decimal_form() {
        for (value, expected) in [
            (89.995, 90.0),
            (0.125, 0.13),
            (66.66666666666667, 66.67),
            (70.0, 70.0),
            (33.334, 33.33),
        ] {
            assert_eq!(round_half_up_two_decimals(value), expected, "{value}");
        }
    }
}
