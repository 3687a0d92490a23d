//! The evaluation context a caller sends (OFREP's `context`), checked against size limits
//! before any rule sees it: a hostile context is refused with `INVALID_CONTEXT` up front.

use serde_json::{Map, Value};

use crate::reason::ErrorCode;

/// How big a context may be. The defaults fit real contexts (a user, a few attributes, a
/// list of groups) with a wide margin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextLimits {
    /// Size of the JSON text: exact from [`EvaluationContext::from_slice`], estimated from a
    /// parsed value otherwise.
    pub max_bytes: usize,
    /// Object keys plus array elements, at all levels.
    pub max_entries: usize,
    /// Nesting levels below the top-level object.
    pub max_depth: usize,
}

impl Default for ContextLimits {
    fn default() -> Self {
        ContextLimits {
            max_bytes: 64 * 1024,
            max_entries: 2_000,
            max_depth: 16,
        }
    }
}

/// Why a context was refused; all of them are OFREP's `INVALID_CONTEXT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("the evaluation context is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the evaluation context must be a JSON object")]
    NotAnObject,
    #[error("the evaluation context is about {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("the evaluation context has more than {limit} keys and array elements")]
    TooManyEntries { limit: usize },
    #[error("the evaluation context is nested deeper than {limit} levels")]
    TooDeep { limit: usize },
}

impl ContextError {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidContext
    }
}

/// A checked evaluation context: a JSON object, `targetingKey` among its keys as OFREP sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationContext {
    /// Always a `Value::Object`, so rules borrow from it directly.
    value: Value,
}

impl Default for EvaluationContext {
    fn default() -> Self {
        EvaluationContext::empty()
    }
}

impl EvaluationContext {
    pub fn empty() -> EvaluationContext {
        EvaluationContext {
            value: Value::Object(Map::new()),
        }
    }

    /// Parses and checks JSON text; the byte limit is checked before parsing.
    pub fn from_slice(bytes: &[u8]) -> Result<EvaluationContext, ContextError> {
        EvaluationContext::from_slice_with_limits(bytes, &ContextLimits::default())
    }

    pub fn from_slice_with_limits(
        bytes: &[u8],
        limits: &ContextLimits,
    ) -> Result<EvaluationContext, ContextError> {
        if bytes.len() > limits.max_bytes {
            return Err(ContextError::TooLarge {
                size: bytes.len(),
                limit: limits.max_bytes,
            });
        }
        // serde_json stops at 128 levels of nesting, so parsing cannot overflow the stack.
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ContextError::InvalidJson(e.to_string()))?;
        EvaluationContext::from_value_with_limits(value, limits)
    }

    /// Checks a parsed context (`null` is the empty context, as a missing OFREP context is).
    pub fn from_json(value: &Value) -> Result<EvaluationContext, ContextError> {
        EvaluationContext::from_json_with_limits(value, &ContextLimits::default())
    }

    pub fn from_json_with_limits(
        value: &Value,
        limits: &ContextLimits,
    ) -> Result<EvaluationContext, ContextError> {
        check(value, limits)?;
        Ok(EvaluationContext {
            value: normalize(value.clone()),
        })
    }

    /// Like [`EvaluationContext::from_json`], without copying the value.
    pub fn from_value(value: Value) -> Result<EvaluationContext, ContextError> {
        EvaluationContext::from_value_with_limits(value, &ContextLimits::default())
    }

    pub fn from_value_with_limits(
        value: Value,
        limits: &ContextLimits,
    ) -> Result<EvaluationContext, ContextError> {
        check(&value, limits)?;
        Ok(EvaluationContext {
            value: normalize(value),
        })
    }

    /// The context as JSON (always an object).
    pub fn as_json(&self) -> &Value {
        &self.value
    }

    /// OpenFeature's targeting key, when the context carries one as a string.
    pub fn targeting_key(&self) -> Option<&str> {
        self.value.get("targetingKey").and_then(Value::as_str)
    }
}

fn normalize(value: Value) -> Value {
    match value {
        Value::Null => Value::Object(Map::new()),
        other => other,
    }
}

struct Tally {
    bytes: usize,
    entries: usize,
}

fn check(value: &Value, limits: &ContextLimits) -> Result<(), ContextError> {
    match value {
        Value::Null => return Ok(()),
        Value::Object(_) => {}
        _ => return Err(ContextError::NotAnObject),
    }
    let mut tally = Tally { bytes: 0, entries: 0 };
    walk(value, 0, limits, &mut tally)
}

/// Walks the value once; recursion stops at `max_depth`, so it is bounded too.
fn walk(value: &Value, depth: usize, limits: &ContextLimits, tally: &mut Tally) -> Result<(), ContextError> {
    tally.bytes += match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(_) | Value::Object(_) => 2,
    };
    if tally.bytes > limits.max_bytes {
        return Err(ContextError::TooLarge {
            size: tally.bytes,
            limit: limits.max_bytes,
        });
    }
    let children: Box<dyn Iterator<Item = (Option<&String>, &Value)>> = match value {
        Value::Array(items) => Box::new(items.iter().map(|v| (None, v))),
        Value::Object(map) => Box::new(map.iter().map(|(k, v)| (Some(k), v))),
        _ => return Ok(()),
    };
    let mut children = children.peekable();
    if children.peek().is_some() && depth >= limits.max_depth {
        return Err(ContextError::TooDeep {
            limit: limits.max_depth,
        });
    }
    for (key, child) in children {
        tally.entries += 1;
        if tally.entries > limits.max_entries {
            return Err(ContextError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        tally.bytes += key.map_or(1, |k| k.len() + 4);
        walk(child, depth + 1, limits, tally)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!({ "a": v });
        }
        v
    }

    #[test]
    fn accepts_ordinary_contexts() {
        let ctx = EvaluationContext::from_json(
            &json!({"targetingKey": "user-1", "email": "a@b.c", "groups": ["x", "y"]}),
        )
        .expect("ordinary context");
        assert_eq!(ctx.targeting_key(), Some("user-1"));
        let empty = EvaluationContext::from_json(&Value::Null).expect("null is the empty context");
        assert_eq!(empty.as_json(), &json!({}));
        assert_eq!(
            EvaluationContext::from_slice(br#"{"a": 1}"#).map(|c| c.as_json().clone()),
            Ok(json!({"a": 1}))
        );
    }

    #[test]
    fn refuses_hostile_contexts() {
        let limits = ContextLimits::default();
        let cases: Vec<(Value, ContextError)> = vec![
            (json!([1, 2]), ContextError::NotAnObject),
            (json!("user"), ContextError::NotAnObject),
            (
                nested(limits.max_depth + 1),
                ContextError::TooDeep {
                    limit: limits.max_depth,
                },
            ),
            (
                json!({ "list": vec![0; limits.max_entries + 1] }),
                ContextError::TooManyEntries {
                    limit: limits.max_entries,
                },
            ),
        ];
        for (value, want) in cases {
            assert_eq!(EvaluationContext::from_json(&value), Err(want.clone()));
            assert_eq!(EvaluationContext::from_value(value), Err(want));
        }
        let big = json!({ "blob": "x".repeat(limits.max_bytes) });
        assert!(matches!(
            EvaluationContext::from_json(&big),
            Err(ContextError::TooLarge { .. })
        ));
        // Right at the depth limit is still fine.
        assert!(EvaluationContext::from_json(&nested(limits.max_depth)).is_ok());
    }

    #[test]
    fn refuses_oversized_or_broken_text_before_using_it() {
        let limits = ContextLimits {
            max_bytes: 10,
            ..ContextLimits::default()
        };
        assert_eq!(
            EvaluationContext::from_slice_with_limits(br#"{"key": "long value"}"#, &limits),
            Err(ContextError::TooLarge { size: 21, limit: 10 })
        );
        assert!(matches!(
            EvaluationContext::from_slice(b"{"),
            Err(ContextError::InvalidJson(_))
        ));
        // Deeper than serde_json's own recursion limit: an error, not a crash.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let wrapped = format!(r#"{{"a": {deep}}}"#);
        let limits = ContextLimits {
            max_bytes: 1 << 20,
            ..ContextLimits::default()
        };
        assert!(matches!(
            EvaluationContext::from_slice_with_limits(wrapped.as_bytes(), &limits),
            Err(ContextError::InvalidJson(_))
        ));
        assert_eq!(ContextError::NotAnObject.code(), ErrorCode::InvalidContext);
    }
}
