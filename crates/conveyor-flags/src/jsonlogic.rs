//! JsonLogic with flagd's custom operations, compiled once at load into a [`Rule`] tree and
//! evaluated against a borrowed context. Compilation bounds the nesting depth (so evaluation
//! cannot overflow the stack); evaluation is charged per operation and per element touched
//! (so a hostile rule or context is cut off instead of hanging the server).

pub(crate) mod compile;
pub(crate) mod eval;
pub(crate) mod value;

use std::sync::Arc;

use serde_json::Value;

use crate::semver::SemVerOp;

/// A compiled JsonLogic expression.
#[derive(Debug)]
pub(crate) enum Rule {
    /// A constant: a scalar, or an array or object without operations inside.
    Literal(Value),
    /// An array literal with operations inside (JsonLogic evaluates each element).
    Array(Vec<Rule>),
    Var(Box<Var>),
    /// `var` whose path is itself computed.
    VarDynamic(Box<(Rule, Option<Rule>)>),
    Missing(Vec<Rule>),
    MissingSome(Box<(Rule, Rule)>),
    If(Vec<Rule>),
    Binary(BinaryOp, Box<(Rule, Rule)>),
    Not(Box<Rule>),
    Truthy(Box<Rule>),
    Or(Vec<Rule>),
    And(Vec<Rule>),
    /// `<`, `<=` (two or three arguments: "between"), `>`, `>=`.
    Compare(CompareOp, Vec<Rule>),
    Arithmetic(ArithmeticOp, Vec<Rule>),
    Cat(Vec<Rule>),
    Substr(Vec<Rule>),
    Merge(Vec<Rule>),
    Iterate(IterateOp, Box<(Rule, Rule)>),
    Reduce(Box<(Rule, Rule, Rule)>),
    Fractional(Box<Fractional>),
    SemVer(Box<(Rule, Rule, Rule)>),
    /// A `$ref` to a shared evaluator, compiled once for the whole flag set.
    Shared(Arc<Rule>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    Equal,
    StrictEqual,
    NotEqual,
    StrictNotEqual,
    Divide,
    Modulo,
    In,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompareOp {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithmeticOp {
    Add,
    Subtract,
    Multiply,
    Max,
    Min,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IterateOp {
    Map,
    Filter,
    All,
    None,
    Some,
}

/// `var` with a path known at load time, split once.
#[derive(Debug)]
pub(crate) struct Var {
    /// Empty: the whole data.
    pub path: Vec<Segment>,
    /// Set when the path starts with `$flagd`: at the top level flagd replaces that key of the
    /// context with its own properties.
    pub flagd: Option<FlagdProperty>,
    pub default: Option<Rule>,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub key: Box<str>,
    /// The key read as an array index, when it is one.
    pub index: Option<usize>,
}

impl Segment {
    pub fn new(key: &str) -> Segment {
        Segment {
            key: key.into(),
            index: parse_index(key),
        }
    }
}

pub(crate) fn parse_index(key: &str) -> Option<usize> {
    if key.is_empty() || (key.len() > 1 && key.starts_with('0')) {
        return None;
    }
    key.parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagdProperty {
    /// `$flagd` itself: `{"flagKey": .., "timestamp": ..}`.
    Object,
    FlagKey,
    Timestamp,
    /// Any other `$flagd.*` path: never found.
    Unknown,
}

/// flagd's `fractional`: deterministic weighted buckets.
#[derive(Debug)]
pub(crate) struct Fractional {
    /// The bucketing expression; absent means `flagKey + targetingKey`.
    pub bucket_by: Option<Rule>,
    pub buckets: Buckets,
}

#[derive(Debug)]
pub(crate) enum Buckets {
    /// All variants and weights literal: validated and summed at load.
    Static {
        variants: Vec<Value>,
        ends: Vec<u64>,
        total: u64,
    },
    /// Some variant or weight is computed: validated per evaluation as flagd does.
    Dynamic(Vec<Vec<Rule>>),
}

/// The largest weight, and sum of weights, flagd accepts.
pub(crate) const MAX_WEIGHT: u64 = i32::MAX as u64;

/// The weight of one bucket (`[variant]` or `[variant, weight]`), checked as flagd checks it.
pub(crate) fn bucket_weight(variant: &Value, weight: Option<&Value>) -> Result<u64, &'static str> {
    if !matches!(
        variant,
        Value::String(_) | Value::Bool(_) | Value::Number(_) | Value::Null
    ) {
        return Err("a bucket's variant must be a string, boolean, number or null");
    }
    match weight {
        None | Some(Value::Null) => Ok(1),
        Some(Value::Number(n)) => {
            let w = n.as_f64().unwrap_or(f64::NAN);
            if w.fract() != 0.0 || !(0.0..=MAX_WEIGHT as f64).contains(&w) {
                Err("a bucket's weight must be a whole number from 0 to 2147483647")
            } else {
                Ok(w as u64)
            }
        }
        Some(_) => Err("a bucket's weight must be a number"),
    }
}

/// Which bucket a 32-bit hash falls in: flagd maps it onto `[0, total)` as
/// `(hash × total) >> 32` and walks the cumulative weights.
pub(crate) fn bucket_index(hash: u32, ends: impl IntoIterator<Item = u64>, total: u64) -> Option<usize> {
    let bucket = (u64::from(hash) * total) >> 32;
    ends.into_iter().position(|end| bucket < end)
}

pub(crate) fn semver_op(op: &Value) -> Option<SemVerOp> {
    op.as_str().and_then(SemVerOp::parse)
}

#[cfg(test)]
mod tests;
