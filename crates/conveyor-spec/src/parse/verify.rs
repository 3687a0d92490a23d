//! `verify:` — the post-promotion gate: SLOs in Keptn's model and an error-budget burn rate.

use std::time::Duration;

use conveyor_analysis::slo::{
    Aggregate, CompareWith, Comparison, CriteriaSet, Criterion, IncludeResults, Objective, Percentage,
    SloSpec, TotalScore,
};

use super::{Checker, suggest};
use crate::delivery::{ErrorBudget, ROUTER_SLIS, Verify};
use crate::yaml::{Kind, Node};

const VERIFY_KEYS: &[&str] = &["duration", "slo", "error_budget"];
const SLO_KEYS: &[&str] = &["comparison", "objectives", "total_score"];
const COMPARISON_KEYS: &[&str] = &[
    "compare_with",
    "number_of_comparison_results",
    "include_result_with_score",
    "aggregate_function",
];
const OBJECTIVE_KEYS: &[&str] = &["sli", "key_sli", "pass", "warning", "weight"];
const TOTAL_SCORE_KEYS: &[&str] = &["pass", "warning"];
const ERROR_BUDGET_KEYS: &[&str] = &["target", "max_burn_rate"];
const MAX_OBJECTIVES: usize = 32;
const DEFAULT_DURATION: Duration = Duration::from_secs(60);
/// The SRE workbook's fastest paging burn rate (2% of a 30-day budget in an hour).
const DEFAULT_MAX_BURN_RATE: f64 = 14.4;

/// The error budget a production environment without `verify:` is held to: 99% of requests
/// succeeding, failing at 5× the budget's burn — once more than 5% of requests fail, over the
/// whole minute and its last twelfth. A net for the release that breaks under all the traffic
/// (a leak, a cache that only fills at scale), loose enough for a service's own noise.
const PRODUCTION_BUDGET: ErrorBudget = ErrorBudget {
    target: 0.99,
    max_burn_rate: 5.0,
};

pub(super) fn production_default() -> Verify {
    Verify {
        duration: DEFAULT_DURATION,
        slo: None,
        error_budget: Some(PRODUCTION_BUDGET),
    }
}

impl Checker<'_> {
    pub(super) fn verify(&mut self, node: &Node) -> Option<Verify> {
        let fields = self.fields(node, "verify", VERIFY_KEYS)?;
        let duration = fields
            .get("duration")
            .and_then(|n| self.duration("verify.duration", n))
            .unwrap_or(DEFAULT_DURATION);
        let slo = fields.get("slo").and_then(|n| self.slo(n));
        let error_budget = fields.get("error_budget").and_then(|n| self.error_budget(n));
        if fields.get("slo").is_none() && fields.get("error_budget").is_none() {
            self.error(
                node,
                "verify needs 'slo', 'error_budget' or both: what the new version is held to",
            );
        }
        Some(Verify {
            duration,
            slo,
            error_budget,
        })
    }

    fn slo(&mut self, node: &Node) -> Option<SloSpec> {
        let fields = self.fields(node, "slo", SLO_KEYS)?;
        let comparison = fields
            .get("comparison")
            .and_then(|n| self.comparison(n))
            .unwrap_or_default();
        let mut objectives = Vec::new();
        match fields.get("objectives") {
            Some(Node {
                kind: Kind::Seq(items),
                ..
            }) if !items.is_empty() && items.len() <= MAX_OBJECTIVES => {
                for item in items {
                    if let Some(objective) = self.objective(item) {
                        objectives.push(objective);
                    }
                }
            }
            Some(list) => self.type_error(
                "slo.objectives",
                &format!("a list of 1 to {MAX_OBJECTIVES} objectives"),
                list,
            ),
            None => self.error(node, "slo has no 'objectives'"),
        }
        let total_score = match fields.get("total_score") {
            Some(n) => self.total_score(n)?,
            None => TotalScore {
                pass: Percentage(90.0),
                warning: Some(Percentage(75.0)),
            },
        };
        Some(SloSpec {
            comparison,
            objectives,
            total_score,
        })
    }

    fn comparison(&mut self, node: &Node) -> Option<Comparison> {
        let f = self.fields(node, "comparison", COMPARISON_KEYS)?;
        let mut comparison = Comparison::default();
        if let Some(n) = f.get("compare_with") {
            comparison.compare_with =
                match self.one_of("compare_with", n, &["single_result", "several_results"])? {
                    "single_result" => CompareWith::SingleResult,
                    _ => CompareWith::SeveralResults,
                };
        }
        if let Some(n) = f.get("number_of_comparison_results") {
            comparison.number_of_comparison_results =
                self.int_in("number_of_comparison_results", n, 1, 100)? as usize;
        }
        if let Some(n) = f.get("include_result_with_score") {
            comparison.include_result_with_score =
                match self.one_of("include_result_with_score", n, &["all", "pass", "pass_or_warn"])? {
                    "all" => IncludeResults::All,
                    "pass" => IncludeResults::Pass,
                    _ => IncludeResults::PassOrWarn,
                };
        }
        if let Some(n) = f.get("aggregate_function") {
            comparison.aggregate_function =
                match self.one_of("aggregate_function", n, &["avg", "p50", "p90", "p95"])? {
                    "avg" => Aggregate::Avg,
                    "p50" => Aggregate::P50,
                    "p90" => Aggregate::P90,
                    _ => Aggregate::P95,
                };
        }
        Some(comparison)
    }

    fn objective(&mut self, node: &Node) -> Option<Objective> {
        let f = self.fields(node, "objective", OBJECTIVE_KEYS)?;
        let Some(sli_node) = f.get("sli") else {
            self.error(
                node,
                format!("objective has no 'sli' (one of: {})", ROUTER_SLIS.join(", ")),
            );
            return None;
        };
        let sli = self.string("sli", sli_node)?;
        if !ROUTER_SLIS.contains(&sli.as_str()) {
            let message = match suggest(&sli, ROUTER_SLIS.iter().copied()) {
                Some(s) => format!("unknown sli '{sli}' — did you mean '{s}'?"),
                None => format!("unknown sli '{sli}'; expected one of: {}", ROUTER_SLIS.join(", ")),
            };
            self.error(sli_node, message);
            return None;
        }
        let key_sli = f
            .get("key_sli")
            .and_then(|n| self.boolean("key_sli", n))
            .unwrap_or(false);
        let weight = match f.get("weight") {
            Some(n) => self.int_in("weight", n, 0, 100)?,
            None => 1,
        };
        let pass = f
            .get("pass")
            .map(|n| self.criteria_sets("pass", n))
            .unwrap_or_default();
        let warning = f
            .get("warning")
            .map(|n| self.criteria_sets("warning", n))
            .unwrap_or_default();
        Some(Objective {
            sli,
            key_sli,
            pass,
            warning,
            weight,
        })
    }

    /// Keptn's `[{ criteria: ["<=+10%", "<600"] }, …]` (any set passing passes), or a plain list of
    /// criteria as one set.
    fn criteria_sets(&mut self, what: &str, node: &Node) -> Vec<CriteriaSet> {
        let Kind::Seq(items) = &node.kind else {
            self.type_error(what, "a list of criteria, or of { criteria: [...] } sets", node);
            return Vec::new();
        };
        if items.iter().all(|i| matches!(i.kind, Kind::Str(_))) {
            return vec![CriteriaSet {
                criteria: self.criteria(what, node),
            }];
        }
        let mut sets = Vec::new();
        for item in items {
            if let Some(f) = self.fields(item, what, &["criteria"]) {
                match f.get("criteria") {
                    Some(list) => sets.push(CriteriaSet {
                        criteria: self.criteria(what, list),
                    }),
                    None => self.error(item, format!("{what} set has no 'criteria'")),
                }
            }
        }
        sets
    }

    fn criteria(&mut self, what: &str, node: &Node) -> Vec<Criterion> {
        let mut out = Vec::new();
        for (text, item) in self.string_list(what, node) {
            match text.parse::<Criterion>() {
                Ok(criterion) => out.push(criterion),
                Err(e) => self.error(item, format!("{what}: {e}")),
            }
        }
        out
    }

    fn total_score(&mut self, node: &Node) -> Option<TotalScore> {
        let f = self.fields(node, "total_score", TOTAL_SCORE_KEYS)?;
        let mut percentage = |key: &str| -> Option<Percentage> {
            let n = f.get(key)?;
            let text = self.string(key, n)?;
            match Percentage::try_from(text) {
                Ok(p) if (0.0..=100.0).contains(&p.0) => Some(p),
                Ok(p) => {
                    self.error(
                        n,
                        format!("total_score.{key} must be between 0% and 100%, found {}%", p.0),
                    );
                    None
                }
                Err(e) => {
                    self.error(n, format!("total_score.{key}: {e}"));
                    None
                }
            }
        };
        let pass = percentage("pass");
        let warning = percentage("warning");
        let Some(pass) = pass else {
            if f.get("pass").is_none() {
                self.error(node, "total_score has no 'pass' (e.g. \"90%\")");
            }
            return None;
        };
        Some(TotalScore { pass, warning })
    }

    fn error_budget(&mut self, node: &Node) -> Option<ErrorBudget> {
        let f = self.fields(node, "error_budget", ERROR_BUDGET_KEYS)?;
        let Some(target) = f.get("target") else {
            self.error(node, "error_budget has no 'target' (the SLO, e.g. 0.999)");
            return None;
        };
        let target = self.number("error_budget.target", target, 0.5, 0.999999)?;
        let max_burn_rate = match f.get("max_burn_rate") {
            Some(n) => self.number("max_burn_rate", n, 1.0, 1000.0)?,
            None => DEFAULT_MAX_BURN_RATE,
        };
        Some(ErrorBudget {
            target,
            max_burn_rate,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::delivery::*;
    use crate::{SpecErrors, parse};

    const HEAD: &str = "name: app\njobs:\n  build:\n    steps: [make]\nrelease: { run: ./app }\nenvironments:\n  prod:\n    strategy: blue-green\n    verify:\n";

    fn parse_verify(body: &str) -> Result<Verify, SpecErrors> {
        let pipeline = parse("conveyor.yml", &format!("{HEAD}{body}"))?;
        Ok(pipeline.environments[0].verify.clone().expect("verify"))
    }

    #[test]
    fn a_keptn_slo_and_an_error_budget_parse() {
        let verify = parse_verify(
            "      duration: 2m
      slo:
        comparison: { compare_with: several_results, number_of_comparison_results: 3 }
        objectives:
          - sli: error_rate
            key_sli: true
            pass: ['<=0.01']
          - sli: latency_p99
            pass: [{ criteria: ['<=+10%', '<0.5'] }]
            warning: [{ criteria: ['<=0.8'] }]
            weight: 2
        total_score: { pass: '90%', warning: '75%' }
      error_budget: { target: 0.999 }
",
        )
        .unwrap();
        assert_eq!(verify.duration, Duration::from_secs(120));
        let slo = verify.slo.unwrap();
        assert_eq!(slo.comparison.number_of_comparison_results, 3);
        assert_eq!(slo.objectives.len(), 2);
        assert!(slo.objectives[0].key_sli);
        assert_eq!(slo.objectives[0].pass[0].criteria[0].to_string(), "<=0.01");
        assert_eq!(slo.objectives[1].pass[0].criteria.len(), 2);
        assert_eq!(slo.objectives[1].weight, 2);
        assert_eq!(slo.total_score.pass.0, 90.0);
        assert_eq!(
            verify.error_budget,
            Some(ErrorBudget {
                target: 0.999,
                max_burn_rate: 14.4
            })
        );
    }

    #[test]
    fn verify_error_table() {
        let cases = [
            (
                "      error_budget: { target: 0.99 }\n  dev:\n    strategy: rolling\n    verify: { error_budget: { target: 0.99 } }\n",
                "conveyor.yml:13:13: verify needs a strategy that keeps the previous version running to take the traffic back: blue-green or canary",
            ),
            (
                "      duration: 1m\n",
                "conveyor.yml:10:7: verify needs 'slo', 'error_budget' or both: what the new version is held to",
            ),
            (
                "      slo: { objectives: [{ sli: eror_rate, pass: ['<1'] }] }\n",
                "conveyor.yml:10:34: unknown sli 'eror_rate' — did you mean 'error_rate'?",
            ),
            (
                "      slo: { objectives: [{ sli: error_rate, pass: ['<=ten'] }] }\n",
                "conveyor.yml:10:53: pass: criterion \"<=ten\" needs a plain number after its operator, e.g. <600 or <=+10%",
            ),
            (
                "      error_budget: { target: 99.9 }\n",
                "conveyor.yml:10:31: error_budget.target must be between 0.5 and 0.999999, found 99.9",
            ),
            (
                "      slo: { objectives: [{ sli: requests_per_second }], total_score: { pass: 120% } }\n",
                "conveyor.yml:10:79: total_score.pass must be between 0% and 100%, found 120%",
            ),
        ];
        let wrong: Vec<String> = cases
            .iter()
            .filter_map(|(body, want)| {
                let got = parse_verify(body).unwrap_err().to_string();
                (got != *want).then(|| format!("{body}  got: {got}\n want: {want}"))
            })
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
