//! Evaluating flags with flagd's reasons and error codes. The answer for "use your code
//! default" (a null `defaultVariant`, or a disabled flag) has no value and no variant, which is
//! how flagd's OFREP answers it: `{"key", "reason": "DEFAULT" | "DISABLED", "metadata"}`.

use std::sync::Arc;

use serde_json::Value;

use crate::context::{ContextError, EvaluationContext};
use crate::definition::{Flag, FlagSet, FlagState, Metadata};
use crate::jsonlogic::eval::{Abort, Env, evaluate};
use crate::reason::{ErrorCode, Reason};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvaluationError {
    pub code: ErrorCode,
    pub message: String,
}

/// The type a typed evaluation expects (OpenFeature's typed accessors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    Boolean,
    String,
    /// A number that converts to an `i64` without loss (`10.0` does, `3.14` does not).
    Integer,
    Float,
    Object,
}

impl ValueType {
    pub fn matches(self, value: &Value) -> bool {
        match (self, value) {
            (ValueType::Boolean, Value::Bool(_))
            | (ValueType::String, Value::String(_))
            | (ValueType::Float, Value::Number(_))
            | (ValueType::Object, Value::Object(_)) => true,
            (ValueType::Integer, Value::Number(n)) => {
                n.is_i64()
                    || n.as_f64()
                        .is_some_and(|f| f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63))
            }
            _ => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Boolean => "boolean",
            ValueType::String => "string",
            ValueType::Integer => "integer",
            ValueType::Float => "float",
            ValueType::Object => "object",
        }
    }
}

/// The outcome of evaluating one flag.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub key: Arc<str>,
    /// `None` when the caller's code default applies (reason `DEFAULT` or `DISABLED`) and on
    /// errors.
    pub value: Option<Arc<Value>>,
    pub variant: Option<Arc<str>>,
    pub reason: Reason,
    pub error: Option<EvaluationError>,
    /// Flag-set metadata overlaid with the flag's.
    pub metadata: Arc<Metadata>,
}

impl Evaluation {
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.error.as_ref().map(|e| e.code)
    }

    fn error(key: Arc<str>, metadata: Arc<Metadata>, code: ErrorCode, message: String) -> Evaluation {
        Evaluation {
            key,
            value: None,
            variant: None,
            reason: Reason::Error,
            error: Some(EvaluationError { code, message }),
            metadata,
        }
    }
}

impl FlagSet {
    /// Evaluates one flag for `context` at `now_unix` (seconds; `$flagd.timestamp`).
    pub fn evaluate(&self, key: &str, context: &EvaluationContext, now_unix: i64) -> Evaluation {
        match self.flags.get(key) {
            Some(flag) => self.evaluate_flag(flag, context, now_unix),
            None => Evaluation::error(
                Arc::from(key),
                self.metadata.clone(),
                ErrorCode::FlagNotFound,
                format!("flag '{key}' does not exist"),
            ),
        }
    }

    /// Evaluates one flag and checks its value is of the `expected` type (`TYPE_MISMATCH`).
    pub fn evaluate_as(
        &self,
        key: &str,
        context: &EvaluationContext,
        now_unix: i64,
        expected: ValueType,
    ) -> Evaluation {
        let evaluation = self.evaluate(key, context, now_unix);
        match &evaluation.value {
            Some(value) if !expected.matches(value) => {
                let found = self
                    .flags
                    .get(key)
                    .and_then(|f| f.variant_type)
                    .map_or("other", |t| t.as_str());
                let message = format!("flag '{key}' has {found} values, not {}", expected.as_str());
                Evaluation::error(
                    evaluation.key,
                    evaluation.metadata,
                    ErrorCode::TypeMismatch,
                    message,
                )
            }
            _ => evaluation,
        }
    }

    /// Evaluates every flag, by key. Disabled flags are included with reason `DISABLED` (the
    /// caller decides whether a bulk answer lists them).
    pub fn evaluate_all(&self, context: &EvaluationContext, now_unix: i64) -> Vec<Evaluation> {
        self.keys
            .iter()
            .map(|key| self.evaluate_flag(&self.flags[key], context, now_unix))
            .collect()
    }

    /// The answer for a request whose context was refused, shaped like any other evaluation.
    pub fn context_refused(&self, key: &str, error: &ContextError) -> Evaluation {
        let metadata = self
            .flags
            .get(key)
            .map_or_else(|| self.metadata.clone(), |f| f.metadata.clone());
        Evaluation::error(Arc::from(key), metadata, error.code(), error.to_string())
    }

    fn evaluate_flag(&self, flag: &Flag, context: &EvaluationContext, now_unix: i64) -> Evaluation {
        if flag.state == FlagState::Disabled {
            return Evaluation {
                key: flag.key.clone(),
                value: None,
                variant: None,
                reason: Reason::Disabled,
                error: None,
                metadata: flag.metadata.clone(),
            };
        }
        let Some(rule) = &flag.targeting else {
            return default_of(flag, Reason::Static);
        };
        let limits = &self.limits;
        let env = Env::new(
            context.as_json(),
            &flag.key,
            now_unix,
            limits.max_operations,
            limits.max_value_depth,
        );
        let fail = |code, message| Evaluation::error(flag.key.clone(), flag.metadata.clone(), code, message);
        match evaluate(rule, &env) {
            Err(Abort::OperationLimit) => fail(
                ErrorCode::General,
                format!(
                    "targeting of flag '{}' was stopped after {} operations",
                    flag.key, limits.max_operations
                ),
            ),
            Err(Abort::ValueTooDeep) => fail(
                ErrorCode::General,
                format!(
                    "targeting of flag '{}' was stopped: it built a value nested deeper than {} levels",
                    flag.key, limits.max_value_depth
                ),
            ),
            Ok(result) => {
                // flagd maps a boolean result to the variant named "true" or "false".
                let name = match &*result {
                    Value::Null => return default_of(flag, Reason::Default),
                    Value::String(name) => name.as_str(),
                    Value::Bool(true) => "true",
                    Value::Bool(false) => "false",
                    other => {
                        return fail(
                            ErrorCode::ParseError,
                            format!(
                                "targeting of flag '{}' returned {}, which cannot name a variant",
                                flag.key,
                                brief(other)
                            ),
                        );
                    }
                };
                match flag.variant(name) {
                    Some((variant, value)) => Evaluation {
                        key: flag.key.clone(),
                        value: Some(value.clone()),
                        variant: Some(variant.clone()),
                        reason: Reason::TargetingMatch,
                        error: None,
                        metadata: flag.metadata.clone(),
                    },
                    None => fail(
                        ErrorCode::General,
                        format!(
                            "targeting of flag '{}' returned '{}', which is not one of its variants",
                            flag.key,
                            brief_str(name)
                        ),
                    ),
                }
            }
        }
    }
}

/// The default variant, or the code default when the flag has none.
fn default_of(flag: &Flag, reason: Reason) -> Evaluation {
    let (value, variant, reason) = match flag.default {
        Some(i) => {
            let (name, value) = &flag.variants[i];
            (Some(value.clone()), Some(name.clone()), reason)
        }
        None => (None, None, Reason::Default),
    };
    Evaluation {
        key: flag.key.clone(),
        value,
        variant,
        reason,
        error: None,
        metadata: flag.metadata.clone(),
    }
}

fn brief(value: &Value) -> String {
    brief_str(&value.to_string()).to_owned()
}

fn brief_str(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;

    fn set(definition: Value) -> FlagSet {
        FlagSet::from_value(definition).expect("valid definition")
    }

    fn ctx(value: Value) -> EvaluationContext {
        EvaluationContext::from_value(value).expect("valid context")
    }

    /// (value, variant, reason, error code) of an evaluation, for tables.
    type Summary<'a> = (Option<Value>, Option<&'a str>, Reason, Option<ErrorCode>);

    fn summary(e: &Evaluation) -> Summary<'_> {
        (
            e.value.as_deref().cloned(),
            e.variant.as_deref(),
            e.reason,
            e.error_code(),
        )
    }

    fn flags() -> FlagSet {
        set(json!({
            "flags": {
                "static": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
                "disabled": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
                "code-default": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": null},
                "code-default-targeted": {
                    "state": "ENABLED", "variants": {"on": true, "off": false},
                    "targeting": {"if": [{"==": [{"var": "tier"}, "gold"]}, "on", null]}
                },
                "targeted": {
                    "state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                    "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on", null]}
                },
                "picks-default-by-name": {
                    "state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                    "targeting": {"if": [true, "off", "on"]}
                },
                "boolean-shorthand": {
                    "state": "ENABLED", "variants": {"true": 2, "false": 1}, "defaultVariant": "false",
                    "targeting": {"ends_with": [{"var": "email"}, "@example.com"]}
                },
                "missing-variant": {
                    "state": "ENABLED", "variants": {"one": 1, "two": 2}, "defaultVariant": "two",
                    "targeting": {"if": [true, "three", "one"]}
                },
                "number-result": {
                    "state": "ENABLED", "variants": {"one": 1, "two": 2}, "defaultVariant": "two",
                    "targeting": {"+": [1, 1]}
                },
                "runaway": {
                    "state": "ENABLED", "variants": {"one": 1}, "defaultVariant": "one",
                    "targeting": {"map": [[0,1,2,3,4,5,6,7,8,9], {"map": [[0,1,2,3,4,5,6,7,8,9], {"map": [[0,1,2,3,4,5,6,7,8,9],
                        {"map": [[0,1,2,3,4,5,6,7,8,9], {"map": [[0,1,2,3,4,5,6,7,8,9], "one"]}]}]}]}]}
                },
                "object": {"state": "ENABLED", "variants": {"a": {"x": 1}}, "defaultVariant": "a"},
                "text": {"state": "ENABLED", "variants": {"a": "alpha"}, "defaultVariant": "a"},
                "integer": {"state": "ENABLED", "variants": {"ten": 10.0, "pi": 2.5}, "defaultVariant": "ten",
                    "targeting": {"if": [{"var": "pi"}, "pi", null]}}
            },
            "metadata": {"flagSetId": "test"}
        }))
    }

    #[test]
    fn reasons_and_error_codes() {
        let set = flags();
        let staff = ctx(json!({"email": "ann@example.com", "targetingKey": "u-1"}));
        let guest = ctx(json!({"email": "bob@elsewhere.org"}));
        use ErrorCode::*;
        use Reason::*;
        let cases: Vec<(&str, &EvaluationContext, Summary<'_>)> = vec![
            ("static", &guest, (Some(json!(true)), Some("on"), Static, None)),
            ("disabled", &guest, (None, None, Disabled, None)),
            ("code-default", &guest, (None, None, Default, None)),
            ("code-default-targeted", &guest, (None, None, Default, None)),
            (
                "targeted",
                &staff,
                (Some(json!(true)), Some("on"), TargetingMatch, None),
            ),
            (
                "targeted",
                &guest,
                (Some(json!(false)), Some("off"), Default, None),
            ),
            (
                "picks-default-by-name",
                &guest,
                (Some(json!(false)), Some("off"), TargetingMatch, None),
            ),
            (
                "boolean-shorthand",
                &staff,
                (Some(json!(2)), Some("true"), TargetingMatch, None),
            ),
            (
                "boolean-shorthand",
                &guest,
                (Some(json!(1)), Some("false"), TargetingMatch, None),
            ),
            ("missing-variant", &guest, (None, None, Error, Some(General))),
            ("number-result", &guest, (None, None, Error, Some(ParseError))),
            ("runaway", &guest, (None, None, Error, Some(General))),
            ("no-such-flag", &guest, (None, None, Error, Some(FlagNotFound))),
        ];
        for (key, context, want) in cases {
            let evaluation = set.evaluate(key, context, NOW);
            assert_eq!(summary(&evaluation), want, "{key}");
            assert_eq!(&*evaluation.key, key);
        }
        let missing = set.evaluate("missing-variant", &guest, NOW);
        assert_eq!(
            missing.error.map(|e| e.message),
            Some(
                "targeting of flag 'missing-variant' returned 'three', which is not one of its variants"
                    .to_owned()
            )
        );
        let runaway = set.evaluate("runaway", &guest, NOW);
        assert_eq!(
            runaway.error.map(|e| e.message),
            Some("targeting of flag 'runaway' was stopped after 50000 operations".to_owned())
        );
        let refused = set.context_refused("static", &ContextError::NotAnObject);
        assert_eq!(summary(&refused), (None, None, Error, Some(InvalidContext)));
    }

    #[test]
    fn typed_evaluation_checks_the_type() {
        let set = flags();
        let none = EvaluationContext::empty();
        let pi = ctx(json!({"pi": true}));
        use ValueType::*;
        let cases = [
            ("static", &none, Boolean, None),
            ("static", &none, String, Some(ErrorCode::TypeMismatch)),
            ("static", &none, Integer, Some(ErrorCode::TypeMismatch)),
            ("text", &none, String, None),
            ("text", &none, Boolean, Some(ErrorCode::TypeMismatch)),
            ("text", &none, Float, Some(ErrorCode::TypeMismatch)),
            ("object", &none, Object, None),
            ("object", &none, String, Some(ErrorCode::TypeMismatch)),
            ("integer", &none, Integer, None),
            ("integer", &none, Float, None),
            ("integer", &pi, Integer, Some(ErrorCode::TypeMismatch)),
            ("integer", &pi, Float, None),
            // Nothing to check: the caller's default applies.
            ("disabled", &none, String, None),
            ("code-default", &none, String, None),
            ("no-such-flag", &none, String, Some(ErrorCode::FlagNotFound)),
        ];
        for (key, context, expected, want) in cases {
            let evaluation = set.evaluate_as(key, context, NOW, expected);
            assert_eq!(evaluation.error_code(), want, "{key} as {expected:?}");
            if want == Some(ErrorCode::TypeMismatch) {
                assert_eq!(
                    (evaluation.reason, evaluation.value.is_none()),
                    (Reason::Error, true)
                );
            }
        }
        let mismatch = set.evaluate_as("text", &none, NOW, Boolean);
        assert_eq!(
            mismatch.error.map(|e| e.message),
            Some("flag 'text' has string values, not boolean".to_owned())
        );
    }

    #[test]
    fn metadata_is_merged_and_carried_on_every_answer() {
        let set = set(json!({
            "flags": {
                "f": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a", "metadata": {"version": "2", "team": "x"}},
                "off": {"state": "DISABLED", "variants": {"a": 1}, "defaultVariant": "a"}
            },
            "metadata": {"flagSetId": "shop", "version": "1"}
        }));
        let none = EvaluationContext::empty();
        let meta = |key: &str| Value::Object((*set.evaluate(key, &none, NOW).metadata).clone());
        assert_eq!(
            meta("f"),
            json!({"flagSetId": "shop", "version": "2", "team": "x"})
        );
        assert_eq!(meta("off"), json!({"flagSetId": "shop", "version": "1"}));
        assert_eq!(meta("nope"), json!({"flagSetId": "shop", "version": "1"}));
    }

    #[test]
    fn bulk_evaluation_lists_every_flag_in_key_order() {
        let set = flags();
        let all = set.evaluate_all(&EvaluationContext::empty(), NOW);
        let keys: Vec<&str> = all.iter().map(|e| &*e.key).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
        assert_eq!(all.len(), set.len());
        let disabled = all.iter().find(|e| &*e.key == "disabled").map(|e| e.reason);
        assert_eq!(disabled, Some(Reason::Disabled));
    }

    #[test]
    fn shared_evaluators_and_flagd_properties() {
        let set = set(json!({
            "$evaluators": {
                "emailWithFaas": {"in": ["@faas.com", {"var": ["email"]}]},
                "late": {">=": [{"var": "$flagd.timestamp"}, 1_700_000_000]},
                "both": {"and": [{"$ref": "emailWithFaas"}, {"$ref": "late"}]}
            },
            "flags": {
                "fibAlgo": {"state": "ENABLED", "variants": {"recursive": "recursive", "binet": "binet"}, "defaultVariant": "recursive",
                    "targeting": {"if": [{"$ref": "emailWithFaas"}, "binet", null]}},
                "timed": {"state": "ENABLED", "variants": {"before": -1, "after": 1}, "defaultVariant": "before",
                    "targeting": {"if": [{"$ref": "both"}, "after", "before"]}},
                "self-aware": {"state": "ENABLED", "variants": {"self-aware": "yes", "other": "no"}, "defaultVariant": "other",
                    "targeting": {"var": "$flagd.flagKey"}}
            }
        }));
        let faas = ctx(json!({"email": "ballmer@faas.com"}));
        let other = ctx(json!({"email": "ballmer@macrosoft.com"}));
        assert_eq!(
            set.evaluate("fibAlgo", &faas, NOW).variant.as_deref(),
            Some("binet")
        );
        assert_eq!(
            set.evaluate("fibAlgo", &other, NOW).variant.as_deref(),
            Some("recursive")
        );
        assert_eq!(
            set.evaluate("timed", &faas, NOW).variant.as_deref(),
            Some("after")
        );
        assert_eq!(
            set.evaluate("timed", &faas, NOW - 1).variant.as_deref(),
            Some("before")
        );
        assert_eq!(
            set.evaluate("self-aware", &other, NOW).variant.as_deref(),
            Some("self-aware")
        );
    }

    /// flagd-testbed's `custom-ops.json` flags with the expectations of its targeting suite
    /// (fractional "v2", the current `(hash × total) >> 32` bucketing).
    #[test]
    fn flagd_testbed_custom_operations() {
        let set = set(json!({"flags": {
            "fractional-flag": {"state": "ENABLED",
                "variants": {"clubs": "clubs", "diamonds": "diamonds", "hearts": "hearts", "spades": "spades", "wild": "wild"},
                "defaultVariant": "wild",
                "targeting": {"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "user.name"}]},
                    ["clubs", 25], ["diamonds", 25], ["hearts", 25], ["spades", 25]]}},
            "starts-ends-flag": {"state": "ENABLED", "variants": {"prefix": "prefix", "postfix": "postfix", "none": "none"},
                "defaultVariant": "none",
                "targeting": {"if": [{"starts_with": [{"var": "id"}, "abc"]}, "prefix",
                    {"if": [{"ends_with": [{"var": "id"}, "xyz"]}, "postfix", {"if": [{"ends_with": [{"var": "id"}, 3]}, "fail", "none"]}]}]}},
            "equal-greater-lesser-version-flag": {"state": "ENABLED",
                "variants": {"equal": "equal", "greater": "greater", "lesser": "lesser", "none": "none"}, "defaultVariant": "none",
                "targeting": {"if": [{"sem_ver": [{"var": "version"}, "=", "2.0.0"]}, "equal",
                    {"if": [{"sem_ver": [{"var": "version"}, ">", "2.0.0"]}, "greater",
                    {"if": [{"sem_ver": [{"var": "version"}, "<", "2.0.0"]}, "lesser",
                    {"if": [{"sem_ver": [{"var": "version"}, "=", "2.0.0.0"]}, "fail", "none"]}]}]}]}},
            "major-minor-version-flag": {"state": "ENABLED", "variants": {"minor": "minor", "major": "major", "none": "none"},
                "defaultVariant": "none",
                "targeting": {"if": [{"sem_ver": [{"var": "version"}, "~", "3.0.0"]}, "minor",
                    {"if": [{"sem_ver": [{"var": "version"}, "^", "3.0.0"]}, "major", "none"]}]}}
        }}));
        let cases = [
            ("fractional-flag", json!({"user": {"name": "jack"}}), "hearts"),
            ("fractional-flag", json!({"user": {"name": "queen"}}), "spades"),
            ("fractional-flag", json!({"user": {"name": "ten"}}), "clubs"),
            ("fractional-flag", json!({"user": {"name": "nine"}}), "diamonds"),
            ("fractional-flag", json!({"user": {"name": "3"}}), "clubs"),
            ("starts-ends-flag", json!({"id": "abcdef"}), "prefix"),
            ("starts-ends-flag", json!({"id": "uvwxyz"}), "postfix"),
            ("starts-ends-flag", json!({"id": "abcxyz"}), "prefix"),
            ("starts-ends-flag", json!({"id": "lmnopq"}), "none"),
            ("starts-ends-flag", json!({"id": "3"}), "none"),
            (
                "equal-greater-lesser-version-flag",
                json!({"version": "2.0.0"}),
                "equal",
            ),
            (
                "equal-greater-lesser-version-flag",
                json!({"version": "2.1.0"}),
                "greater",
            ),
            (
                "equal-greater-lesser-version-flag",
                json!({"version": "1.9.0"}),
                "lesser",
            ),
            (
                "equal-greater-lesser-version-flag",
                json!({"version": "2.0.0-alpha"}),
                "lesser",
            ),
            (
                "equal-greater-lesser-version-flag",
                json!({"version": "2.0.0.0"}),
                "none",
            ),
            ("major-minor-version-flag", json!({"version": "3.0.1"}), "minor"),
            ("major-minor-version-flag", json!({"version": "3.1.0"}), "major"),
            ("major-minor-version-flag", json!({"version": "4.0.0"}), "none"),
        ];
        for (key, context, want) in cases {
            let evaluation = set.evaluate(key, &ctx(context.clone()), NOW);
            assert_eq!(
                evaluation.value.as_deref(),
                Some(&json!(want)),
                "{key} with {context}"
            );
        }
    }

    fn split_flag(weights: &[(&str, u32)]) -> FlagSet {
        let buckets: Vec<Value> = weights.iter().map(|(name, w)| json!([name, w])).collect();
        let variants: serde_json::Map<std::string::String, Value> = weights
            .iter()
            .map(|(name, _)| ((*name).to_owned(), json!(name)))
            .collect();
        set(
            json!({"flags": {"split": {"state": "ENABLED", "variants": variants, "defaultVariant": weights[0].0,
            "targeting": {"fractional": buckets}}}}),
        )
    }

    #[test]
    fn fractional_distribution_matches_the_weights() {
        let weights = [("a", 50), ("b", 30), ("c", 15), ("d", 5)];
        let set = split_flag(&weights);
        let total = 100_000;
        let mut counts = std::collections::HashMap::new();
        for i in 0..total {
            let context = ctx(json!({"targetingKey": format!("user-{i}")}));
            let evaluation = set.evaluate("split", &context, NOW);
            assert_eq!(evaluation.reason, Reason::TargetingMatch);
            *counts
                .entry(evaluation.variant.map(|v| v.to_string()))
                .or_insert(0u32) += 1;
        }
        for (name, weight) in weights {
            let share =
                f64::from(counts.get(&Some(name.to_owned())).copied().unwrap_or(0)) / f64::from(total);
            let expected = f64::from(weight) / 100.0;
            // Binomial standard deviation is at most 0.0016 here: 0.01 is over six of them.
            assert!((share - expected).abs() < 0.01, "{name}: {share} vs {expected}");
        }
    }

    #[test]
    fn fractional_assignment_is_exactly_flagds() {
        // Bucketing key: flagKey + targetingKey, murmur3 seed 0, bucket = (hash × total) >> 32.
        let set = split_flag(&[("a", 50), ("b", 50)]);
        // Hashes and buckets computed independently (a separate murmur3 implementation).
        let pinned = [
            ("hello", 0x1ef9_e722, 12, "a"),
            ("world", 0x5fb1_4bfa, 37, "a"),
            ("user-1", 0xf3d9_a840, 95, "b"),
            ("user-2", 0x8bea_3886, 54, "b"),
            ("bob", 0xba8c_dac8, 72, "b"),
        ];
        for (targeting_key, hash, bucket, want) in pinned {
            let key = format!("split{targeting_key}");
            assert_eq!(crate::murmur3::murmur3_x86_32(key.as_bytes(), 0), hash, "{key}");
            assert_eq!((u64::from(hash) * 100) >> 32, bucket, "{key}");
            let evaluation = set.evaluate("split", &ctx(json!({"targetingKey": targeting_key})), NOW);
            assert_eq!(evaluation.variant.as_deref(), Some(want), "{targeting_key}");
        }
        // The documented vector: murmur3("hello") = 0x248bfa47 → bucket 14 of 100.
        assert_eq!(
            crate::jsonlogic::bucket_index(0x248b_fa47, [50, 100], 100),
            Some(0)
        );
        assert_eq!(crate::jsonlogic::bucket_index(u32::MAX, [50, 100], 100), Some(1));
        assert_eq!(
            crate::jsonlogic::bucket_index(0, [0, 1], 1),
            Some(1),
            "a zero weight never matches"
        );
    }
}
