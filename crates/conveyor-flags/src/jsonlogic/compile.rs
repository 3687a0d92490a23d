//! JSON → [`Rule`]: every operation is checked once, at load, with the JSON path of the first
//! mistake, so evaluation never meets an unknown operation or a malformed `fractional`.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::value::to_js_string;
use super::{
    ArithmeticOp, BinaryOp, Buckets, CompareOp, FlagdProperty, Fractional, IterateOp, MAX_WEIGHT, Rule,
    Segment, Var, bucket_weight, semver_op,
};
use crate::error::{DefinitionError, error};
use crate::path::JsonPath;

/// Compiles targeting rules of one flag set; shared evaluators (`$evaluators`) are compiled
/// once and referenced, so `$ref` chains cannot blow up the tree.
pub(crate) struct Compiler<'d> {
    evaluators: Option<&'d Map<String, Value>>,
    compiled: HashMap<String, (Arc<Rule>, usize)>,
    /// Evaluators being compiled, to report `$ref` cycles.
    active: Vec<String>,
    max_depth: usize,
}

type Compiled = Result<(Rule, usize), DefinitionError>;

impl<'d> Compiler<'d> {
    pub fn new(evaluators: Option<&'d Map<String, Value>>, max_depth: usize) -> Compiler<'d> {
        Compiler {
            evaluators,
            compiled: HashMap::new(),
            active: Vec::new(),
            max_depth,
        }
    }

    /// Compiles every shared evaluator, so an unused broken one is refused too.
    pub fn compile_evaluators(&mut self) -> Result<(), DefinitionError> {
        let Some(evaluators) = self.evaluators else {
            return Ok(());
        };
        for name in evaluators.keys() {
            self.evaluator(name, &JsonPath::root().key("$evaluators"))?;
        }
        Ok(())
    }

    /// Compiles one targeting rule found at `path`.
    pub fn compile(&mut self, rule: &Value, path: &mut JsonPath) -> Result<Rule, DefinitionError> {
        self.node(rule, path, 1).map(|(rule, _height)| rule)
    }

    /// Returns the rule and its height (levels, this node included).
    fn node(&mut self, value: &Value, path: &mut JsonPath, depth: usize) -> Compiled {
        if depth > self.max_depth {
            return Err(error(
                path,
                format!("rule is nested deeper than {} levels", self.max_depth),
            ));
        }
        match value {
            Value::Array(items) => {
                let (rules, height) = self.list(items, path, depth + 1)?;
                if rules.iter().all(|r| matches!(r, Rule::Literal(_))) {
                    Ok((Rule::Literal(value.clone()), height + 1))
                } else {
                    Ok((Rule::Array(rules), height + 1))
                }
            }
            Value::Object(map) if map.len() == 1 => {
                let Some((op, args)) = map.iter().next() else {
                    unreachable!("an object of length one has an entry")
                };
                path.push_key(op);
                let compiled = self.operation(op, args, path, depth);
                path.pop();
                compiled
            }
            // Any other object is data to JsonLogic, as are scalars.
            _ => Ok((Rule::Literal(value.clone()), 1)),
        }
    }

    fn list(
        &mut self,
        items: &[Value],
        path: &mut JsonPath,
        depth: usize,
    ) -> Result<(Vec<Rule>, usize), DefinitionError> {
        let mut rules = Vec::with_capacity(items.len());
        let mut height = 0;
        for (i, item) in items.iter().enumerate() {
            path.push_index(i);
            let (rule, h) = self.node(item, path, depth)?;
            path.pop();
            height = height.max(h);
            rules.push(rule);
        }
        Ok((rules, height))
    }

    /// Compiles an operation's arguments: an array is the argument list, anything else is the
    /// single argument (`{"var": "a"}` is `{"var": ["a"]}`).
    fn arguments(
        &mut self,
        args: &Value,
        path: &mut JsonPath,
        depth: usize,
    ) -> Result<(Vec<Rule>, usize), DefinitionError> {
        match args {
            Value::Array(items) => self.list(items, path, depth + 1),
            single => {
                let (rule, h) = self.node(single, path, depth + 1)?;
                Ok((vec![rule], h))
            }
        }
    }

    fn operation(&mut self, op: &str, args: &Value, path: &mut JsonPath, depth: usize) -> Compiled {
        match op {
            "$ref" => return self.reference(args, path, depth),
            "fractional" => return self.fractional(args, path, depth),
            _ => {}
        }
        let (mut rules, height) = self.arguments(args, path, depth)?;
        let count = rules.len();
        let arity = |min: usize, max: usize| -> Result<(), DefinitionError> {
            if count < min || count > max {
                let wanted = match (min, max) {
                    (a, b) if a == b => format!("{a}"),
                    (a, usize::MAX) => format!("at least {a}"),
                    (a, b) => format!("{a} to {b}"),
                };
                let plural = if max == 1 { "argument" } else { "arguments" };
                return Err(error(
                    path,
                    format!("'{op}' takes {wanted} {plural}, got {count}"),
                ));
            }
            Ok(())
        };
        let rule = match op {
            "var" => {
                arity(0, 2)?;
                self.var(rules, path)?
            }
            "missing" => Rule::Missing(rules),
            "missing_some" => {
                arity(2, 2)?;
                let [need, keys] = take(rules);
                Rule::MissingSome(Box::new((need, keys)))
            }
            "if" | "?:" => Rule::If(rules),
            "==" | "===" | "!=" | "!==" | "/" | "%" | "in" | "starts_with" | "ends_with" => {
                arity(2, 2)?;
                let op = match op {
                    "==" => BinaryOp::Equal,
                    "===" => BinaryOp::StrictEqual,
                    "!=" => BinaryOp::NotEqual,
                    "!==" => BinaryOp::StrictNotEqual,
                    "/" => BinaryOp::Divide,
                    "%" => BinaryOp::Modulo,
                    "in" => BinaryOp::In,
                    "starts_with" => BinaryOp::StartsWith,
                    _ => BinaryOp::EndsWith,
                };
                let [a, b] = take(rules);
                Rule::Binary(op, Box::new((a, b)))
            }
            "!" | "!!" => {
                arity(1, 1)?;
                let [a] = take(rules);
                if op == "!" {
                    Rule::Not(Box::new(a))
                } else {
                    Rule::Truthy(Box::new(a))
                }
            }
            "or" => Rule::Or(rules),
            "and" => Rule::And(rules),
            "<" | "<=" => {
                arity(2, 3)?;
                let op = if op == "<" {
                    CompareOp::Less
                } else {
                    CompareOp::LessOrEqual
                };
                Rule::Compare(op, rules)
            }
            ">" | ">=" => {
                arity(2, 2)?;
                let op = if op == ">" {
                    CompareOp::Greater
                } else {
                    CompareOp::GreaterOrEqual
                };
                Rule::Compare(op, rules)
            }
            "+" => Rule::Arithmetic(ArithmeticOp::Add, rules),
            "*" => {
                arity(1, usize::MAX)?;
                Rule::Arithmetic(ArithmeticOp::Multiply, rules)
            }
            "-" => {
                arity(1, 2)?;
                Rule::Arithmetic(ArithmeticOp::Subtract, rules)
            }
            "max" => Rule::Arithmetic(ArithmeticOp::Max, rules),
            "min" => Rule::Arithmetic(ArithmeticOp::Min, rules),
            "cat" => Rule::Cat(rules),
            "substr" => {
                arity(2, 3)?;
                Rule::Substr(rules)
            }
            "merge" => Rule::Merge(rules),
            "map" | "filter" | "all" | "none" | "some" => {
                arity(2, 2)?;
                let op = match op {
                    "map" => IterateOp::Map,
                    "filter" => IterateOp::Filter,
                    "all" => IterateOp::All,
                    "none" => IterateOp::None,
                    _ => IterateOp::Some,
                };
                let [items, logic] = take(rules);
                Rule::Iterate(op, Box::new((items, logic)))
            }
            "reduce" => {
                arity(2, 3)?;
                if rules.len() == 2 {
                    rules.push(Rule::Literal(Value::Null));
                }
                let [items, logic, initial] = take(rules);
                Rule::Reduce(Box::new((items, logic, initial)))
            }
            "sem_ver" => {
                arity(3, 3)?;
                if let Rule::Literal(literal) = &rules[1]
                    && semver_op(literal).is_none()
                {
                    path.push_index(1);
                    return Err(error(
                        path,
                        format!(
                            "unknown sem_ver operator {literal}; expected one of =, !=, <, <=, >, >=, ~, ^"
                        ),
                    ));
                }
                let [a, op, b] = take(rules);
                Rule::SemVer(Box::new((a, op, b)))
            }
            _ => return Err(error(path, format!("unknown operation '{op}'"))),
        };
        Ok((rule, height + 1))
    }

    fn var(&mut self, rules: Vec<Rule>, path: &JsonPath) -> Result<Rule, DefinitionError> {
        let mut rules = rules.into_iter();
        let path_rule = rules.next();
        let default = rules.next();
        let text = match &path_rule {
            None => String::new(),
            Some(Rule::Literal(Value::Null)) => String::new(),
            Some(Rule::Literal(Value::String(s))) => s.clone(),
            Some(Rule::Literal(v @ (Value::Number(_) | Value::Bool(_)))) => to_js_string(v).into_owned(),
            Some(Rule::Literal(_)) => {
                return Err(error(
                    path,
                    "the path of 'var' must be a string, a number or an operation",
                ));
            }
            Some(_) => {
                let Some(dynamic) = path_rule else {
                    unreachable!("matched Some")
                };
                return Ok(Rule::VarDynamic(Box::new((dynamic, default))));
            }
        };
        let segments: Vec<Segment> = if text.is_empty() {
            Vec::new()
        } else {
            text.split('.').map(Segment::new).collect()
        };
        let flagd = match segments.as_slice() {
            [first, rest @ ..] if &*first.key == "$flagd" => Some(match rest {
                [] => FlagdProperty::Object,
                [p] if &*p.key == "flagKey" => FlagdProperty::FlagKey,
                [p] if &*p.key == "timestamp" => FlagdProperty::Timestamp,
                _ => FlagdProperty::Unknown,
            }),
            _ => None,
        };
        Ok(Rule::Var(Box::new(Var {
            path: segments,
            flagd,
            default,
        })))
    }

    fn reference(&mut self, args: &Value, path: &mut JsonPath, depth: usize) -> Compiled {
        let Value::String(name) = args else {
            return Err(error(path, "'$ref' must name an evaluator of '$evaluators'"));
        };
        let (rule, height) = self.evaluator(name, path)?;
        // The reference is replaced by the evaluator, so its root sits at this depth.
        if depth - 1 + height > self.max_depth {
            return Err(error(
                path,
                format!(
                    "with evaluator '{name}' in place, the rule is nested deeper than {} levels",
                    self.max_depth
                ),
            ));
        }
        Ok((Rule::Shared(rule), height))
    }

    fn evaluator(&mut self, name: &str, at: &JsonPath) -> Result<(Arc<Rule>, usize), DefinitionError> {
        if let Some((rule, height)) = self.compiled.get(name) {
            return Ok((rule.clone(), *height));
        }
        if self.active.iter().any(|a| a == name) {
            let cycle = self
                .active
                .iter()
                .map(String::as_str)
                .chain([name])
                .collect::<Vec<_>>()
                .join(" -> ");
            return Err(error(
                at,
                format!("evaluators refer to each other in a cycle: {cycle}"),
            ));
        }
        let Some(definition) = self.evaluators.and_then(|e| e.get(name)) else {
            return Err(error(at, format!("unknown evaluator '{name}'")));
        };
        self.active.push(name.to_owned());
        let mut path = JsonPath::root().key("$evaluators").key(name);
        let compiled = self.node(definition, &mut path, 1);
        self.active.pop();
        let (rule, height) = compiled?;
        let rule = Arc::new(rule);
        self.compiled.insert(name.to_owned(), (rule.clone(), height));
        Ok((rule, height))
    }

    fn fractional(&mut self, args: &Value, path: &mut JsonPath, depth: usize) -> Compiled {
        let Value::Array(items) = args else {
            return Err(error(
                path,
                "'fractional' takes an array: an optional bucketing expression, then [variant, weight] buckets",
            ));
        };
        if items.len() < 2 {
            return Err(error(
                path,
                format!("'fractional' takes at least 2 arguments, got {}", items.len()),
            ));
        }
        let mut height = 1;
        let (bucket_by, first_bucket) = if items[0].is_array() {
            (None, 0)
        } else {
            path.push_index(0);
            let (rule, h) = self.node(&items[0], path, depth + 1)?;
            height = height.max(h);
            let bucket_by = match rule {
                Rule::Literal(Value::Null) => None,
                Rule::Literal(Value::String(_)) => Some(rule),
                Rule::Literal(_) => {
                    return Err(error(
                        path,
                        "the bucketing expression must be a string or an operation",
                    ));
                }
                rule => Some(rule),
            };
            path.pop();
            (bucket_by, 1)
        };
        let mut buckets = Vec::with_capacity(items.len() - first_bucket);
        for (i, item) in items.iter().enumerate().skip(first_bucket) {
            path.push_index(i);
            let parts = match item {
                Value::Array(parts) if (1..=2).contains(&parts.len()) => parts,
                _ => {
                    return Err(error(
                        path,
                        "a bucket must be an array [variant] or [variant, weight]",
                    ));
                }
            };
            let (rules, h) = self.list(parts, path, depth + 2)?;
            height = height.max(h + 1);
            path.pop();
            buckets.push(rules);
        }
        let all_literal = buckets.iter().flatten().all(|r| matches!(r, Rule::Literal(_)));
        let buckets = if all_literal {
            let mut variants = Vec::with_capacity(buckets.len());
            let mut ends = Vec::with_capacity(buckets.len());
            let mut total = 0u64;
            for (i, parts) in buckets.into_iter().enumerate() {
                let mut parts = parts.into_iter().map(|r| match r {
                    Rule::Literal(v) => v,
                    _ => unreachable!("all parts are literal"),
                });
                let variant = parts.next().unwrap_or(Value::Null);
                let weight = parts.next();
                path.push_index(i + first_bucket);
                let w = bucket_weight(&variant, weight.as_ref()).map_err(|m| error(path, m))?;
                path.pop();
                total += w;
                variants.push(variant);
                ends.push(total);
            }
            if total > MAX_WEIGHT {
                return Err(error(
                    path,
                    format!("the weights add up to {total}; the most is {MAX_WEIGHT}"),
                ));
            }
            Buckets::Static {
                variants,
                ends,
                total,
            }
        } else {
            Buckets::Dynamic(buckets)
        };
        Ok((
            Rule::Fractional(Box::new(Fractional { bucket_by, buckets })),
            height + 1,
        ))
    }
}

/// Moves a vector whose length was checked into an array.
fn take<const N: usize>(rules: Vec<Rule>) -> [Rule; N] {
    rules
        .try_into()
        .unwrap_or_else(|_| unreachable!("arity checked before"))
}
