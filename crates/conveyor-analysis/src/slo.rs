//! Quality gates on service-level objectives, two ways.
//!
//! - [`evaluate`]: Keptn's `slo.yaml` model. Each objective's `pass` and `warning` lists are ORs of
//!   criteria sets, each an AND of criteria such as `"<600"` (absolute), `"<=+10%"` or `">=-5"`
//!   (relative to the aggregate of earlier evaluations). A passing objective earns its weight, a
//!   warning half of it; the total in percent is held against `total_score`, and a failed key SLI
//!   fails the evaluation. A missing SLI value fails its objective.
//! - [`evaluate_burn_rates`]: the Google SRE workbook's multiwindow, multi-burn-rate alerts
//!   (chapter 5, "Alerting on SLOs"): an alert fires when both its long and its short window burn
//!   the error budget faster than its threshold. Windows without traffic carry no data.
//!
//! Pure: SLI values, earlier evaluations and window counts are passed in.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

mod burn;

pub use burn::{
    AlertEvaluation, AlertState, BurnRateAlert, BurnRateReport, Severity, WindowBurn, WindowCounts,
    evaluate_burn_rates, sre_workbook_alerts,
};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SloError {
    #[error("criterion {criterion:?} {problem}")]
    InvalidCriterion {
        criterion: String,
        problem: &'static str,
    },
    #[error("score target {0:?} is not a percentage such as \"90%\"")]
    InvalidPercentage(String),
    #[error("the SLO target must lie strictly between 0 and 1, not {0}")]
    TargetOutOfRange(f64),
    #[error("burn-rate alert {long_window_secs}s/{short_window_secs}s: {problem}")]
    InvalidAlert {
        long_window_secs: u64,
        short_window_secs: u64,
        problem: &'static str,
    },
    #[error("window {window_secs}s counts {good} good events out of {total}")]
    MoreGoodThanTotal { window_secs: u64, good: u64, total: u64 },
    #[error("window {0}s is counted twice")]
    DuplicateWindow(u64),
    #[error("no counts for the {0}s window")]
    MissingWindow(u64),
}

// === Criteria ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Less,
    LessOrEqual,
    Equal,
    GreaterOrEqual,
    Greater,
}

impl Operator {
    /// Longest symbols first, so `<=` is not read as `<`.
    const SYMBOLS: [(&'static str, Operator); 5] = [
        ("<=", Operator::LessOrEqual),
        (">=", Operator::GreaterOrEqual),
        ("<", Operator::Less),
        (">", Operator::Greater),
        ("=", Operator::Equal),
    ];

    fn symbol(self) -> &'static str {
        Self::SYMBOLS
            .iter()
            .find(|(_, operator)| *operator == self)
            .map_or("=", |(symbol, _)| symbol)
    }

    fn holds(self, measured: f64, target: f64) -> bool {
        match self {
            Self::Less => measured < target,
            Self::LessOrEqual => measured <= target,
            Self::Equal => measured == target,
            Self::GreaterOrEqual => measured >= target,
            Self::Greater => measured > target,
        }
    }
}

/// What a criterion compares the SLI value with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// `<600`: a fixed value.
    Absolute(f64),
    /// `<=+50` / `>=-50`: the comparison value plus or minus an amount.
    Change(f64),
    /// `<=+10%` / `>=-5%`: the comparison value scaled by a percentage (`<=10%` means +10%).
    Percent(f64),
}

/// One parsed criterion string.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Criterion {
    pub operator: Operator,
    pub bound: Bound,
}

impl Criterion {
    /// The value the SLI is held against; None for a relative bound without earlier results.
    fn target(&self, comparison: Option<f64>) -> Option<f64> {
        match self.bound {
            Bound::Absolute(value) => Some(value),
            Bound::Change(change) => comparison.map(|base| base + change),
            Bound::Percent(percent) => comparison.map(|base| base * (100.0 + percent) / 100.0),
        }
    }
}

impl std::str::FromStr for Criterion {
    type Err = SloError;

    /// Parses Keptn's criterion syntax, whitespace ignored; anything Keptn would reject, or read
    /// only partly, is an error here.
    fn from_str(text: &str) -> Result<Self, SloError> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let invalid = |problem| SloError::InvalidCriterion {
            criterion: text.to_string(),
            problem,
        };
        let (operator, rest) = Operator::SYMBOLS
            .iter()
            .find_map(|(symbol, operator)| compact.strip_prefix(symbol).map(|rest| (*operator, rest)))
            .ok_or_else(|| invalid("must start with <, <=, =, >= or >"))?;
        let (rest, percent) = match rest.strip_suffix('%') {
            Some(rest) => (rest, true),
            None => (rest, false),
        };
        let (sign, digits) = match rest.as_bytes().first() {
            Some(b'+') => (Some(1.0), &rest[1..]),
            Some(b'-') => (Some(-1.0), &rest[1..]),
            _ => (None, rest),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(invalid(
                "needs a plain number after its operator, e.g. <600 or <=+10%",
            ));
        }
        let amount: f64 = digits.parse().map_err(|_| invalid("has a malformed number"))?;
        let bound = match (percent, sign) {
            (true, sign) => Bound::Percent(sign.unwrap_or(1.0) * amount),
            (false, Some(sign)) => Bound::Change(sign * amount),
            (false, None) => Bound::Absolute(amount),
        };
        Ok(Self { operator, bound })
    }
}

impl TryFrom<String> for Criterion {
    type Error = SloError;
    fn try_from(text: String) -> Result<Self, SloError> {
        text.parse()
    }
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operator = self.operator.symbol();
        match self.bound {
            Bound::Absolute(value) => write!(f, "{operator}{value}"),
            Bound::Change(change) => write!(f, "{operator}{change:+}"),
            Bound::Percent(percent) => write!(f, "{operator}{percent:+}%"),
        }
    }
}

impl From<Criterion> for String {
    fn from(criterion: Criterion) -> Self {
        criterion.to_string()
    }
}

/// A `total_score` target such as `"90%"`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Percentage(pub f64);

impl TryFrom<String> for Percentage {
    type Error = SloError;
    fn try_from(text: String) -> Result<Self, SloError> {
        let number = text.trim().trim_end_matches('%').trim();
        match number.parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(Self(value)),
            _ => Err(SloError::InvalidPercentage(text)),
        }
    }
}

impl From<Percentage> for String {
    fn from(percentage: Percentage) -> Self {
        format!("{}%", percentage.0)
    }
}

// === SLO specification (slo.yaml) ===

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloSpec {
    #[serde(default)]
    pub comparison: Comparison,
    pub objectives: Vec<Objective>,
    pub total_score: TotalScore,
}

/// Which earlier evaluations relative criteria compare with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Comparison {
    pub compare_with: CompareWith,
    /// How many earlier evaluations `several_results` uses.
    pub number_of_comparison_results: usize,
    pub include_result_with_score: IncludeResults,
    pub aggregate_function: Aggregate,
}

impl Default for Comparison {
    fn default() -> Self {
        Self {
            compare_with: CompareWith::SingleResult,
            number_of_comparison_results: 1,
            include_result_with_score: IncludeResults::All,
            aggregate_function: Aggregate::Avg,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareWith {
    SingleResult,
    SeveralResults,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncludeResults {
    All,
    Pass,
    PassOrWarn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    Avg,
    P50,
    P90,
    P95,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    pub sli: String,
    /// Failing this objective fails the evaluation whatever the score.
    #[serde(default)]
    pub key_sli: bool,
    /// Any one set passing passes the objective; without sets the objective only informs.
    #[serde(default)]
    pub pass: Vec<CriteriaSet>,
    #[serde(default)]
    pub warning: Vec<CriteriaSet>,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// Criteria that must all hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriteriaSet {
    pub criteria: Vec<Criterion>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TotalScore {
    pub pass: Percentage,
    #[serde(default)]
    pub warning: Option<Percentage>,
}

// === Evaluation ===

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Warning,
    Fail,
}

/// An earlier evaluation of the same service, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousEvaluation {
    pub verdict: Verdict,
    pub values: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectiveStatus {
    Pass,
    Warning,
    Fail,
    /// No pass criteria: reported, not scored.
    Info,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetResult {
    pub criterion: Criterion,
    /// The value held against; None for a relative criterion without earlier results (which
    /// then holds, as in Keptn).
    pub target: Option<f64>,
    pub violated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectiveResult {
    pub sli: String,
    /// None when the SLI provider returned nothing (the objective then fails).
    pub value: Option<f64>,
    /// Aggregate of the earlier values relative criteria compare with.
    pub comparison_value: Option<f64>,
    pub status: ObjectiveStatus,
    pub score: f64,
    pub weight: u32,
    pub key_sli: bool,
    pub pass_targets: Vec<TargetResult>,
    pub warning_targets: Vec<TargetResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloEvaluation {
    /// Achieved share of the achievable score, in percent (100 when nothing is scored).
    pub score: f64,
    pub verdict: Verdict,
    pub key_sli_failed: bool,
    /// How many earlier evaluations relative criteria compared with.
    pub compared_evaluations: usize,
    pub objectives: Vec<ObjectiveResult>,
}

/// Evaluates current SLI values against `spec`. `previous` holds earlier evaluations newest first;
/// the comparison settings pick which of them relative criteria use. NaN counts as missing.
pub fn evaluate(
    spec: &SloSpec,
    current: &BTreeMap<String, f64>,
    previous: &[PreviousEvaluation],
) -> SloEvaluation {
    let comparison = &spec.comparison;
    let wanted = match comparison.compare_with {
        CompareWith::SingleResult => 1,
        CompareWith::SeveralResults => comparison.number_of_comparison_results,
    };
    let compared: Vec<&PreviousEvaluation> = previous
        .iter()
        .filter(|evaluation| match comparison.include_result_with_score {
            IncludeResults::All => true,
            IncludeResults::Pass => evaluation.verdict == Verdict::Pass,
            IncludeResults::PassOrWarn => evaluation.verdict != Verdict::Fail,
        })
        .take(wanted)
        .collect();

    let objectives: Vec<ObjectiveResult> = spec
        .objectives
        .iter()
        .map(|objective| {
            let earlier: Vec<f64> = compared
                .iter()
                .filter_map(|evaluation| evaluation.values.get(&objective.sli).copied())
                .filter(|value| !value.is_nan())
                .collect();
            let comparison_value = aggregate(comparison.aggregate_function, earlier);
            let value = current
                .get(&objective.sli)
                .copied()
                .filter(|value| !value.is_nan());
            evaluate_objective(objective, value, comparison_value)
        })
        .collect();

    let achievable: u32 = spec
        .objectives
        .iter()
        .filter(|objective| !objective.pass.is_empty())
        .map(|o| o.weight)
        .sum();
    let key_sli_failed = objectives
        .iter()
        .any(|result| result.key_sli && result.status == ObjectiveStatus::Fail);
    let (score, verdict) = if achievable == 0 {
        (100.0, Verdict::Pass)
    } else {
        let achieved: f64 = objectives.iter().map(|result| result.score).sum();
        let score = 100.0 * achieved / f64::from(achievable);
        let verdict = if key_sli_failed {
            Verdict::Fail
        } else if score >= spec.total_score.pass.0 {
            Verdict::Pass
        } else if spec.total_score.warning.is_some_and(|warning| score >= warning.0) {
            Verdict::Warning
        } else {
            Verdict::Fail
        };
        (score, verdict)
    };
    SloEvaluation {
        score,
        verdict,
        key_sli_failed,
        compared_evaluations: compared.len(),
        objectives,
    }
}

fn evaluate_objective(
    objective: &Objective,
    value: Option<f64>,
    comparison_value: Option<f64>,
) -> ObjectiveResult {
    let mut result = ObjectiveResult {
        sli: objective.sli.clone(),
        value,
        comparison_value,
        status: ObjectiveStatus::Fail,
        score: 0.0,
        weight: objective.weight,
        key_sli: objective.key_sli,
        pass_targets: Vec::new(),
        warning_targets: Vec::new(),
    };
    let Some(value) = value else {
        return result;
    };
    if objective.pass.is_empty() {
        result.status = ObjectiveStatus::Info;
        return result;
    }
    let (passed, pass_targets) = evaluate_sets(&objective.pass, value, comparison_value);
    result.pass_targets = pass_targets;
    if passed {
        result.status = ObjectiveStatus::Pass;
        result.score = f64::from(objective.weight);
        return result;
    }
    let (warned, warning_targets) = evaluate_sets(&objective.warning, value, comparison_value);
    result.warning_targets = warning_targets;
    if warned {
        result.status = ObjectiveStatus::Warning;
        result.score = f64::from(objective.weight) / 2.0;
    }
    result
}

/// Whether any set holds in full; every criterion is reported, violated or not.
fn evaluate_sets(sets: &[CriteriaSet], value: f64, comparison: Option<f64>) -> (bool, Vec<TargetResult>) {
    let mut any_set_holds = false;
    let mut targets = Vec::new();
    for set in sets {
        let mut all_hold = true;
        for criterion in &set.criteria {
            let target = criterion.target(comparison);
            let violated = target.is_some_and(|target| !criterion.operator.holds(value, target));
            all_hold &= !violated;
            targets.push(TargetResult {
                criterion: *criterion,
                target,
                violated,
            });
        }
        any_set_holds |= all_hold;
    }
    (any_set_holds, targets)
}

/// Keptn's aggregation of earlier values: the mean, or a percentile at rank p·(n + 1) with linear
/// interpolation, clamped to the smallest and largest value.
fn aggregate(function: Aggregate, mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let p = match function {
        Aggregate::Avg => return Some(values.iter().sum::<f64>() / values.len() as f64),
        Aggregate::P50 => 0.5,
        Aggregate::P90 => 0.9,
        Aggregate::P95 => 0.95,
    };
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let position = p * (n + 1) as f64;
    Some(if position < 1.0 {
        values[0]
    } else if position >= n as f64 {
        values[n - 1]
    } else {
        let below = position.floor() as usize;
        let (lower, upper) = (values[below - 1], values[below]);
        lower + (position - position.floor()) * (upper - lower)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn criterion(text: &str) -> Criterion {
        text.parse().expect("valid criterion")
    }

    #[test]
    fn criteria_parse_into_operator_and_bound() {
        use Bound::*;
        use Operator::*;
        let cases = [
            ("<600", Less, Absolute(600.0), "<600"),
            ("<=+10%", LessOrEqual, Percent(10.0), "<=+10%"),
            (">=-5%", GreaterOrEqual, Percent(-5.0), ">=-5%"),
            ("<= 10 %", LessOrEqual, Percent(10.0), "<=+10%"),
            ("=0", Equal, Absolute(0.0), "=0"),
            (">+50", Greater, Change(50.0), ">+50"),
            ("<-2.5", Less, Change(-2.5), "<-2.5"),
            (">0.95", Greater, Absolute(0.95), ">0.95"),
        ];
        for (text, operator, bound, display) in cases {
            let parsed = criterion(text);
            assert_eq!((parsed.operator, parsed.bound), (operator, bound), "{text}");
            assert_eq!(parsed.to_string(), display);
        }
    }

    #[test]
    fn malformed_criteria_are_rejected_with_the_offending_text() {
        for text in [
            "", "600", "=>5", "==5", "<", "<=+", "<=abc", "<5%%", "<1.2.3", "<=1e3", "<+-5",
        ] {
            let error = text.parse::<Criterion>().expect_err(text);
            assert!(
                matches!(&error, SloError::InvalidCriterion { criterion, .. } if criterion == text),
                "{text}: {error}"
            );
        }
        let error = "=>5".parse::<Criterion>().expect_err("operator order");
        assert_eq!(
            error.to_string(),
            "criterion \"=>5\" needs a plain number after its operator, e.g. <600 or <=+10%"
        );
    }

    /// The example `slo.yaml` of Keptn's lighthouse service, as JSON.
    fn spec() -> SloSpec {
        serde_json::from_value(serde_json::json!({
            "comparison": {
                "compare_with": "single_result",
                "include_result_with_score": "pass",
                "number_of_comparison_results": 1,
                "aggregate_function": "avg"
            },
            "objectives": [
                {
                    "sli": "response_time_p95",
                    "pass": [{ "criteria": ["<=+10%", "<600"] }],
                    "warning": [{ "criteria": ["<=800"] }]
                },
                { "sli": "throughput" },
                { "sli": "error_rate", "key_sli": true, "pass": [{ "criteria": ["<=1"] }, { "criteria": ["=0"] }] }
            ],
            "total_score": { "pass": "90%", "warning": "75%" }
        }))
        .expect("valid slo.yaml")
    }

    fn values(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), *value))
            .collect()
    }

    fn previous(verdict: Verdict, response_time: f64) -> PreviousEvaluation {
        PreviousEvaluation {
            verdict,
            values: values(&[("response_time_p95", response_time)]),
        }
    }

    #[test]
    fn objectives_score_weights_and_key_slis_decide_the_verdict() {
        use ObjectiveStatus::*;
        let spec = spec();
        let history = [previous(Verdict::Fail, 300.0), previous(Verdict::Pass, 480.0)];
        type Case<'a> = (
            &'a [(&'a str, f64)],
            &'a [PreviousEvaluation],
            f64,
            Verdict,
            [ObjectiveStatus; 3],
        );
        let cases: [Case<'_>; 6] = [
            // 500 ≤ 480 × 1.1 = 528 and < 600.
            (
                &[
                    ("response_time_p95", 500.0),
                    ("throughput", 9.0),
                    ("error_rate", 0.5),
                ],
                &history,
                100.0,
                Verdict::Pass,
                [Pass, Info, Pass],
            ),
            // 550 > 528: only the warning (≤ 800) holds, half the weight.
            (
                &[("response_time_p95", 550.0), ("error_rate", 0.5)],
                &history,
                75.0,
                Verdict::Warning,
                [Warning, Fail, Pass],
            ),
            (
                &[("response_time_p95", 900.0), ("error_rate", 0.0)],
                &history,
                50.0,
                Verdict::Fail,
                [Fail, Fail, Pass],
            ),
            // A failed key SLI fails the evaluation whatever the score.
            (
                &[("response_time_p95", 500.0), ("error_rate", 2.0)],
                &history,
                50.0,
                Verdict::Fail,
                [Pass, Fail, Fail],
            ),
            // A missing or NaN value fails its objective.
            (
                &[("response_time_p95", f64::NAN), ("error_rate", 0.0)],
                &history,
                50.0,
                Verdict::Fail,
                [Fail, Fail, Pass],
            ),
            // Without earlier results relative criteria hold: 590 passes on "<600" alone.
            (
                &[("response_time_p95", 590.0), ("error_rate", 0.0)],
                &[],
                100.0,
                Verdict::Pass,
                [Pass, Fail, Pass],
            ),
        ];
        for (current, earlier, score, verdict, statuses) in cases {
            let evaluation = evaluate(&spec, &values(current), earlier);
            let actual: Vec<_> = evaluation.objectives.iter().map(|o| o.status).collect();
            assert_eq!(
                (evaluation.score, evaluation.verdict, actual),
                (score, verdict, statuses.to_vec()),
                "{current:?}"
            );
        }

        let evaluation = evaluate(
            &spec,
            &values(&[("response_time_p95", 550.0), ("error_rate", 0.5)]),
            &history,
        );
        assert_eq!(evaluation.compared_evaluations, 1);
        let response_time = &evaluation.objectives[0];
        assert_eq!(response_time.comparison_value, Some(480.0));
        let targets: Vec<_> = response_time
            .pass_targets
            .iter()
            .map(|t| (t.target, t.violated))
            .collect();
        assert_eq!(targets, [(Some(528.0), true), (Some(600.0), false)]);
        assert_eq!(response_time.warning_targets[0].target, Some(800.0));
        assert!(evaluation.objectives[2].key_sli);
    }

    #[test]
    fn comparison_settings_pick_and_aggregate_earlier_results() {
        let history = [
            previous(Verdict::Fail, 1000.0),
            previous(Verdict::Pass, 400.0),
            previous(Verdict::Warning, 500.0),
            previous(Verdict::Pass, 600.0),
        ];
        let cases = [
            (IncludeResults::All, 2, 700.0),
            (IncludeResults::Pass, 2, 500.0),
            (IncludeResults::PassOrWarn, 2, 450.0),
            (IncludeResults::PassOrWarn, 10, 500.0),
        ];
        for (include, count, expected) in cases {
            let mut spec = spec();
            spec.comparison.compare_with = CompareWith::SeveralResults;
            spec.comparison.number_of_comparison_results = count;
            spec.comparison.include_result_with_score = include;
            let evaluation = evaluate(&spec, &values(&[("response_time_p95", 1.0)]), &history);
            assert_eq!(
                evaluation.objectives[0].comparison_value,
                Some(expected),
                "{include:?} {count}"
            );
        }
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(aggregate(Aggregate::P90, ten.clone()), Some(9.9));
        assert_eq!(aggregate(Aggregate::P50, vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(aggregate(Aggregate::P95, vec![1.0, 2.0]), Some(2.0));
        assert_eq!(aggregate(Aggregate::P50, vec![7.0]), Some(7.0));
        assert_eq!(aggregate(Aggregate::Avg, ten), Some(5.5));
        assert_eq!(aggregate(Aggregate::Avg, Vec::new()), None);
    }

    #[test]
    fn informative_only_specs_pass_and_bad_files_are_refused() {
        let spec: SloSpec = serde_json::from_value(serde_json::json!({
            "objectives": [{ "sli": "throughput" }],
            "total_score": { "pass": "90%" }
        }))
        .expect("valid");
        assert_eq!(spec.comparison, Comparison::default());
        assert_eq!(spec.objectives[0].weight, 1);
        let evaluation = evaluate(&spec, &BTreeMap::new(), &[]);
        assert_eq!((evaluation.score, evaluation.verdict), (100.0, Verdict::Pass));

        let bad_criterion = serde_json::from_value::<SloSpec>(serde_json::json!({
            "objectives": [{ "sli": "x", "pass": [{ "criteria": ["<<5"] }] }],
            "total_score": { "pass": "90%" }
        }));
        assert!(
            bad_criterion
                .expect_err("bad criterion")
                .to_string()
                .contains("\"<<5\"")
        );
        let bad_score = serde_json::from_value::<SloSpec>(serde_json::json!({
            "objectives": [], "total_score": { "pass": "ninety" }
        }));
        assert!(bad_score.is_err());
    }

    fn counts(window_secs: u64, good: u64, total: u64) -> WindowCounts {
        WindowCounts {
            window_secs,
            good,
            total,
        }
    }

    #[test]
    fn multiwindow_alerts_fire_only_when_both_windows_burn() {
        use AlertState::*;
        let alerts = sre_workbook_alerts();
        // Windows: 1h, 5m, 6h, 30m, 3d for a 99.9% SLO (budget 0.1%).
        let cases: [([WindowCounts; 5], [AlertState; 3]); 4] = [
            // 2% errors over the hour and the last 5 minutes: burn 20 > 14.4 pages.
            (
                [
                    counts(3600, 9800, 10_000),
                    counts(300, 980, 1000),
                    counts(21_600, 59_700, 60_000),
                    counts(1800, 4950, 5000),
                    counts(259_200, 999_500, 1_000_000),
                ],
                [Firing, NotFiring, NotFiring],
            ),
            // The hour still burns but the last 5 minutes recovered: the alert resets.
            (
                [
                    counts(3600, 9800, 10_000),
                    counts(300, 1000, 1000),
                    counts(21_600, 59_000, 60_000),
                    counts(1800, 4900, 5000),
                    counts(259_200, 998_000, 1_000_000),
                ],
                [NotFiring, Firing, Firing],
            ),
            // No traffic in the short window: no data unless the long window rules it out.
            (
                [
                    counts(3600, 9800, 10_000),
                    counts(300, 0, 0),
                    counts(21_600, 0, 0),
                    counts(1800, 0, 0),
                    counts(259_200, 999_900, 1_000_000),
                ],
                [NoData, NoData, NotFiring],
            ),
            (
                [
                    counts(3600, 0, 0),
                    counts(300, 0, 0),
                    counts(21_600, 1, 1),
                    counts(1800, 0, 0),
                    counts(259_200, 0, 0),
                ],
                [NoData, NotFiring, NotFiring],
            ),
        ];
        for (windows, expected) in cases {
            let report = evaluate_burn_rates(0.999, &alerts, &windows).expect("valid");
            let states: Vec<_> = report.alerts.iter().map(|alert| alert.state).collect();
            assert_eq!(states, expected, "{windows:?}");
            assert_eq!(report.firing, expected.contains(&Firing));
            assert_eq!(report.no_data, expected.contains(&NoData));
        }
        let report = evaluate_burn_rates(
            0.999,
            &alerts[..1],
            &[counts(3600, 9800, 10_000), counts(300, 980, 1000)],
        )
        .expect("valid");
        let long = report.alerts[0].long;
        assert!((long.burn_rate.expect("traffic") - 20.0).abs() < 1e-9);
        assert!((long.error_ratio.expect("traffic") - 0.02).abs() < 1e-15);
        assert!((report.error_budget - 0.001).abs() < 1e-15);
        // Exactly at the threshold does not fire: 1.44% errors burn at 14.4.
        let at_threshold = [counts(3600, 98_560, 100_000), counts(300, 98_560, 100_000)];
        let report = evaluate_burn_rates(0.999, &alerts[..1], &at_threshold).expect("valid");
        assert!((report.alerts[0].long.burn_rate.expect("traffic") - 14.4).abs() < 1e-9);
    }

    #[test]
    fn burn_rate_inputs_are_validated() {
        let alerts = sre_workbook_alerts();
        let one_hour = [counts(3600, 10, 10), counts(300, 10, 10)];
        assert_eq!(
            evaluate_burn_rates(1.0, &alerts[..1], &one_hour),
            Err(SloError::TargetOutOfRange(1.0))
        );
        assert!(matches!(
            evaluate_burn_rates(0.99, &alerts[..1], &[counts(3600, 11, 10), counts(300, 1, 1)]),
            Err(SloError::MoreGoodThanTotal {
                window_secs: 3600,
                ..
            })
        ));
        assert_eq!(
            evaluate_burn_rates(0.99, &alerts[..1], &[counts(3600, 1, 1), counts(3600, 1, 1)]),
            Err(SloError::DuplicateWindow(3600))
        );
        assert_eq!(
            evaluate_burn_rates(0.99, &alerts[..2], &one_hour),
            Err(SloError::MissingWindow(21_600))
        );
        let backwards = BurnRateAlert {
            severity: Severity::Page,
            long_window_secs: 300,
            short_window_secs: 3600,
            burn_rate: 2.0,
        };
        assert!(matches!(
            evaluate_burn_rates(0.99, &[backwards], &one_hour),
            Err(SloError::InvalidAlert { .. })
        ));
    }
}
