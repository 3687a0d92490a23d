//! Evaluation of a compiled [`Rule`]. Values are `Cow`s: whatever comes from the context or
//! the rule is borrowed, only computed values allocate. Every step is charged to a budget.
//!
//! Long on purpose: one `match` over every JsonLogic operator and flagd's extensions, each arm a
//! few lines, sharing the budget and the value helpers below; split, the arms would only trade
//! places with their imports.

use std::borrow::Cow;
use std::cell::Cell;
use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::value::{js_compare, loose_eq, number_value, strict_eq, to_js_string, to_number, truthy};
use super::{
    ArithmeticOp, BinaryOp, Buckets, CompareOp, FlagdProperty, Fractional, IterateOp, MAX_WEIGHT, Rule,
    Segment, Var, bucket_index, bucket_weight, parse_index, semver_op,
};
use crate::murmur3::murmur3_x86_32;
use crate::semver;

static NULL: Value = Value::Null;

/// Why an evaluation was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Abort {
    /// The rule did more work than one evaluation may.
    OperationLimit,
    /// `reduce` built a value nested deeper than allowed.
    ValueTooDeep,
}

/// What one evaluation sees besides the rule: the context, flagd's properties and the budget.
pub(crate) struct Env<'a> {
    root: &'a Value,
    flag_key: &'a str,
    now: i64,
    remaining: Cell<u64>,
    max_value_depth: usize,
}

impl<'a> Env<'a> {
    pub fn new(
        root: &'a Value,
        flag_key: &'a str,
        now: i64,
        max_operations: u64,
        max_value_depth: usize,
    ) -> Env<'a> {
        Env {
            root,
            flag_key,
            now,
            remaining: Cell::new(max_operations),
            max_value_depth,
        }
    }

    fn charge(&self, cost: u64) -> Result<(), Abort> {
        let remaining = self.remaining.get();
        if cost > remaining {
            self.remaining.set(0);
            return Err(Abort::OperationLimit);
        }
        self.remaining.set(remaining - cost);
        Ok(())
    }

    /// Charges for string work by the 64 bytes.
    fn charge_bytes(&self, bytes: usize) -> Result<(), Abort> {
        self.charge((bytes / 64) as u64)
    }

    /// Takes ownership of a value, charging for the nodes a copy clones.
    fn own(&self, value: Cow<'_, Value>) -> Result<Value, Abort> {
        match value {
            Cow::Owned(v) => Ok(v),
            Cow::Borrowed(v) => {
                if matches!(v, Value::Array(_) | Value::Object(_)) {
                    self.charge(count_nodes(v, self.remaining.get().saturating_add(1)))?;
                } else if let Value::String(s) = v {
                    self.charge_bytes(s.len())?;
                }
                Ok(v.clone())
            }
        }
    }
}

/// Nodes in `v`, counting no further than `limit`.
fn count_nodes(v: &Value, limit: u64) -> u64 {
    let mut count = 1u64;
    match v {
        Value::Array(items) => {
            for item in items {
                if count >= limit {
                    break;
                }
                count += count_nodes(item, limit - count);
            }
        }
        Value::Object(map) => {
            for item in map.values() {
                if count >= limit {
                    break;
                }
                count += count_nodes(item, limit - count);
            }
        }
        _ => {}
    }
    count
}

/// What `var` reads: plain data, or the `current`/`accumulator` pair inside `reduce`.
#[derive(Clone, Copy)]
pub(crate) enum Scope<'a> {
    Data(&'a Value),
    Reduce {
        current: &'a Value,
        accumulator: &'a Value,
    },
}

type Eval<'a> = Result<Cow<'a, Value>, Abort>;

fn owned<'a>(v: Value) -> Eval<'a> {
    Ok(Cow::Owned(v))
}

fn boolean<'a>(b: bool) -> Eval<'a> {
    Ok(Cow::Owned(Value::Bool(b)))
}

fn null<'a>() -> Eval<'a> {
    Ok(Cow::Borrowed(&NULL))
}

/// Evaluates a targeting rule against the context `root`.
pub(crate) fn evaluate<'a>(rule: &'a Rule, env: &Env<'a>) -> Eval<'a> {
    eval(rule, Scope::Data(env.root), env)
}

fn eval<'a>(rule: &'a Rule, scope: Scope<'a>, env: &Env<'a>) -> Eval<'a> {
    env.charge(1)?;
    match rule {
        Rule::Literal(v) => Ok(Cow::Borrowed(v)),
        Rule::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(env.own(eval(item, scope, env)?)?);
            }
            owned(Value::Array(out))
        }
        Rule::Var(var) => match var_static(var, scope, env)? {
            Some(v) => Ok(v),
            None => default(var.default.as_ref(), scope, env),
        },
        Rule::VarDynamic(parts) => {
            let (path, fallback) = &**parts;
            let path = eval(path, scope, env)?;
            let path = match &*path {
                Value::Null => Cow::Borrowed(""),
                other => to_js_string(other),
            };
            match lookup_text(scope, &path, env)? {
                Some(v) => Ok(v),
                None => default(fallback.as_ref(), scope, env),
            }
        }
        Rule::Missing(args) => missing(args, scope, env).map(|keys| Cow::Owned(Value::Array(keys))),
        Rule::MissingSome(parts) => {
            let (need, keys) = &**parts;
            let need = to_number(&*eval(need, scope, env)?);
            let keys = eval(keys, scope, env)?;
            let keys: &[Value] = match &*keys {
                Value::Array(items) => items,
                other => std::slice::from_ref(other),
            };
            let mut absent = Vec::new();
            for key in keys {
                if is_missing(key, scope, env)? {
                    absent.push(key.clone());
                }
            }
            let found = (keys.len() - absent.len()) as f64;
            owned(Value::Array(if found >= need { Vec::new() } else { absent }))
        }
        Rule::If(args) => {
            let mut i = 0;
            while i + 1 < args.len() {
                if truthy(&*eval(&args[i], scope, env)?) {
                    return eval(&args[i + 1], scope, env);
                }
                i += 2;
            }
            match args.get(i) {
                Some(otherwise) => eval(otherwise, scope, env),
                None => null(),
            }
        }
        Rule::Binary(op, parts) => binary(*op, &parts.0, &parts.1, scope, env),
        Rule::Not(a) => boolean(!truthy(&*eval(a, scope, env)?)),
        Rule::Truthy(a) => boolean(truthy(&*eval(a, scope, env)?)),
        Rule::Or(args) => {
            let mut last = null();
            for arg in args {
                let v = eval(arg, scope, env)?;
                if truthy(&v) {
                    return Ok(v);
                }
                last = Ok(v);
            }
            last
        }
        Rule::And(args) => {
            let mut last = null();
            for arg in args {
                let v = eval(arg, scope, env)?;
                if !truthy(&v) {
                    return Ok(v);
                }
                last = Ok(v);
            }
            last
        }
        Rule::Compare(op, args) => {
            let a = eval(&args[0], scope, env)?;
            let b = eval(&args[1], scope, env)?;
            let holds = |x: &Value, y: &Value| match js_compare(x, y) {
                None => false,
                Some(ord) => match op {
                    CompareOp::Less => ord == Ordering::Less,
                    CompareOp::LessOrEqual => ord != Ordering::Greater,
                    CompareOp::Greater => ord == Ordering::Greater,
                    CompareOp::GreaterOrEqual => ord != Ordering::Less,
                },
            };
            if !holds(&a, &b) {
                return boolean(false);
            }
            match args.get(2) {
                // Between: a < b < c.
                Some(c) => {
                    let c = eval(c, scope, env)?;
                    boolean(holds(&b, &c))
                }
                None => boolean(true),
            }
        }
        Rule::Arithmetic(op, args) => arithmetic(*op, args, scope, env),
        Rule::Cat(args) => {
            let mut out = String::new();
            for arg in args {
                let v = eval(arg, scope, env)?;
                let s = to_js_string(&v);
                env.charge_bytes(s.len())?;
                out.push_str(&s);
            }
            owned(Value::String(out))
        }
        Rule::Substr(args) => substr(args, scope, env),
        Rule::Merge(args) => {
            let mut out = Vec::new();
            for arg in args {
                match eval(arg, scope, env)? {
                    Cow::Owned(Value::Array(items)) => {
                        env.charge(items.len() as u64)?;
                        out.extend(items);
                    }
                    Cow::Borrowed(Value::Array(items)) => {
                        env.charge(items.len() as u64)?;
                        for item in items {
                            out.push(env.own(Cow::Borrowed(item))?);
                        }
                    }
                    other => out.push(env.own(other)?),
                }
            }
            owned(Value::Array(out))
        }
        Rule::Iterate(op, parts) => iterate(*op, &parts.0, &parts.1, scope, env),
        Rule::Reduce(parts) => reduce(&parts.0, &parts.1, &parts.2, scope, env),
        Rule::Fractional(f) => fractional(f, scope, env),
        Rule::SemVer(parts) => {
            let (a, op, b) = &**parts;
            let a = eval(a, scope, env)?;
            let op = eval(op, scope, env)?;
            let b = eval(b, scope, env)?;
            let result = match (&*a, semver_op(&op), &*b) {
                (Value::String(a), Some(op), Value::String(b)) => semver::compare(a, op, b).unwrap_or(false),
                _ => false,
            };
            boolean(result)
        }
        Rule::Shared(rule) => eval(rule, scope, env),
    }
}

fn default<'a>(fallback: Option<&'a Rule>, scope: Scope<'a>, env: &Env<'a>) -> Eval<'a> {
    match fallback {
        Some(rule) => eval(rule, scope, env),
        None => null(),
    }
}

// === var ===

fn step<'a>(value: &'a Value, key: &str, index: Option<usize>) -> Option<&'a Value> {
    match value {
        Value::Object(map) => map.get(key),
        Value::Array(items) => index.and_then(|i| items.get(i)),
        _ => None,
    }
}

fn flagd_property<'a>(property: FlagdProperty, env: &Env<'a>) -> Option<Cow<'a, Value>> {
    Some(Cow::Owned(match property {
        FlagdProperty::FlagKey => Value::String(env.flag_key.to_owned()),
        FlagdProperty::Timestamp => Value::from(env.now),
        FlagdProperty::Object => {
            let mut map = Map::new();
            map.insert("flagKey".to_owned(), Value::String(env.flag_key.to_owned()));
            map.insert("timestamp".to_owned(), Value::from(env.now));
            Value::Object(map)
        }
        FlagdProperty::Unknown => return None,
    }))
}

fn reduce_scope_object(current: &Value, accumulator: &Value, env: &Env<'_>) -> Result<Value, Abort> {
    let mut map = Map::new();
    map.insert("current".to_owned(), env.own(Cow::Borrowed(current))?);
    map.insert("accumulator".to_owned(), env.own(Cow::Borrowed(accumulator))?);
    Ok(Value::Object(map))
}

fn var_static<'a>(var: &'a Var, scope: Scope<'a>, env: &Env<'a>) -> Result<Option<Cow<'a, Value>>, Abort> {
    match scope {
        Scope::Data(data) => {
            if let Some(property) = var.flagd {
                // flagd puts its properties under `$flagd` of the top-level context only.
                if std::ptr::eq(data, env.root) {
                    return Ok(flagd_property(property, env));
                }
            }
            let mut at = data;
            for segment in &var.path {
                match step(at, &segment.key, segment.index) {
                    Some(next) => at = next,
                    None => return Ok(None),
                }
            }
            Ok(Some(Cow::Borrowed(at)))
        }
        Scope::Reduce { current, accumulator } => {
            let Some((first, rest)) = var.path.split_first() else {
                return Ok(Some(Cow::Owned(reduce_scope_object(current, accumulator, env)?)));
            };
            let mut at = match &*first.key {
                "current" => current,
                "accumulator" => accumulator,
                _ => return Ok(None),
            };
            for Segment { key, index } in rest {
                match step(at, key, *index) {
                    Some(next) => at = next,
                    None => return Ok(None),
                }
            }
            Ok(Some(Cow::Borrowed(at)))
        }
    }
}

/// `var` with a path computed at evaluation time.
fn lookup_text<'a>(scope: Scope<'a>, path: &str, env: &Env<'a>) -> Result<Option<Cow<'a, Value>>, Abort> {
    env.charge_bytes(path.len())?;
    let mut keys = path.split('.');
    let mut at = match scope {
        _ if path.is_empty() => {
            return Ok(Some(match scope {
                Scope::Data(data) => Cow::Borrowed(data),
                Scope::Reduce { current, accumulator } => {
                    Cow::Owned(reduce_scope_object(current, accumulator, env)?)
                }
            }));
        }
        Scope::Data(data) => {
            if std::ptr::eq(data, env.root) && path.split('.').next() == Some("$flagd") {
                let rest: Vec<&str> = path.split('.').skip(1).collect();
                let property = match rest.as_slice() {
                    [] => FlagdProperty::Object,
                    ["flagKey"] => FlagdProperty::FlagKey,
                    ["timestamp"] => FlagdProperty::Timestamp,
                    _ => FlagdProperty::Unknown,
                };
                return Ok(flagd_property(property, env));
            }
            data
        }
        Scope::Reduce { current, accumulator } => match keys.next() {
            Some("current") => current,
            Some("accumulator") => accumulator,
            _ => return Ok(None),
        },
    };
    for key in keys {
        match step(at, key, parse_index(key)) {
            Some(next) => at = next,
            None => return Ok(None),
        }
    }
    Ok(Some(Cow::Borrowed(at)))
}

fn is_missing<'a>(key: &Value, scope: Scope<'a>, env: &Env<'a>) -> Result<bool, Abort> {
    env.charge(1)?;
    let path = match key {
        Value::Null => Cow::Borrowed(""),
        other => to_js_string(other),
    };
    Ok(match lookup_text(scope, &path, env)? {
        None => true,
        Some(v) => matches!(&*v, Value::Null) || matches!(&*v, Value::String(s) if s.is_empty()),
    })
}

fn missing<'a>(args: &'a [Rule], scope: Scope<'a>, env: &Env<'a>) -> Result<Vec<Value>, Abort> {
    let mut absent = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        let key = eval(arg, scope, env)?;
        // `{"missing": [["a", "b"]]}` lists the keys in its first argument.
        if i == 0
            && let Value::Array(keys) = &*key
        {
            for k in keys {
                if is_missing(k, scope, env)? {
                    absent.push(k.clone());
                }
            }
            return Ok(absent);
        }
        if is_missing(&key, scope, env)? {
            absent.push(env.own(key)?);
        }
    }
    Ok(absent)
}

// === operators ===

fn binary<'a>(op: BinaryOp, a: &'a Rule, b: &'a Rule, scope: Scope<'a>, env: &Env<'a>) -> Eval<'a> {
    let a = eval(a, scope, env)?;
    let b = eval(b, scope, env)?;
    let mut cost = 0;
    let result = match op {
        BinaryOp::Equal => Value::Bool(loose_eq(&a, &b, &mut cost)),
        BinaryOp::StrictEqual => Value::Bool(strict_eq(&a, &b, &mut cost)),
        BinaryOp::NotEqual => Value::Bool(!loose_eq(&a, &b, &mut cost)),
        BinaryOp::StrictNotEqual => Value::Bool(!strict_eq(&a, &b, &mut cost)),
        BinaryOp::Divide => number_value(to_number(&a) / to_number(&b)),
        BinaryOp::Modulo => number_value(to_number(&a) % to_number(&b)),
        BinaryOp::In => Value::Bool(match &*b {
            Value::String(haystack) => {
                cost += (haystack.len() / 64) as u64;
                haystack.contains(&*to_js_string(&a))
            }
            Value::Array(items) => items.iter().any(|item| strict_eq(&a, item, &mut cost)),
            _ => false,
        }),
        BinaryOp::StartsWith | BinaryOp::EndsWith => Value::Bool(match (&*a, &*b) {
            (Value::String(s), Value::String(affix)) => {
                if op == BinaryOp::StartsWith {
                    s.starts_with(affix.as_str())
                } else {
                    s.ends_with(affix.as_str())
                }
            }
            _ => false,
        }),
    };
    env.charge(cost)?;
    owned(result)
}

fn arithmetic<'a>(op: ArithmeticOp, args: &'a [Rule], scope: Scope<'a>, env: &Env<'a>) -> Eval<'a> {
    let mut numbers = Vec::with_capacity(args.len());
    for arg in args {
        numbers.push(to_number(&*eval(arg, scope, env)?));
    }
    let result = match op {
        ArithmeticOp::Add => numbers.iter().sum(),
        ArithmeticOp::Multiply => numbers.iter().product(),
        ArithmeticOp::Subtract => match numbers.as_slice() {
            [a] => -a,
            [a, b] => a - b,
            _ => f64::NAN,
        },
        ArithmeticOp::Max | ArithmeticOp::Min => {
            if numbers.is_empty() || numbers.iter().any(|n| n.is_nan()) {
                return null();
            }
            let pick = if op == ArithmeticOp::Max {
                f64::max
            } else {
                f64::min
            };
            numbers.iter().copied().reduce(pick).unwrap_or(f64::NAN)
        }
    };
    owned(number_value(result))
}

/// JavaScript's `String(source).substr(start, length)`, with a negative length dropping that
/// many characters from the end (JsonLogic's extension).
fn substr<'a>(args: &'a [Rule], scope: Scope<'a>, env: &Env<'a>) -> Eval<'a> {
    let source = eval(&args[0], scope, env)?;
    let source = to_js_string(&source);
    env.charge_bytes(source.len())?;
    let chars: Vec<char> = source.chars().collect();
    let count = chars.len() as i64;
    let integer = |v: &Value| {
        let n = to_number(v);
        if n.is_nan() {
            0
        } else {
            n.trunc().clamp(-1e15, 1e15) as i64
        }
    };
    let start = integer(&*eval(&args[1], scope, env)?);
    let start = if start < 0 {
        (count + start).max(0)
    } else {
        start.min(count)
    };
    let end = match args.get(2) {
        None => count,
        Some(length) => {
            let length = integer(&*eval(length, scope, env)?);
            if length < 0 {
                (count + length).max(start)
            } else {
                (start + length).min(count)
            }
        }
    };
    let slice: String = chars[start as usize..end.max(start) as usize].iter().collect();
    owned(Value::String(slice))
}

fn iterate<'a>(op: IterateOp, items: &'a Rule, logic: &'a Rule, scope: Scope<'a>, env: &Env<'a>) -> Eval<'a> {
    let items = eval(items, scope, env)?;
    let items: &[Value] = match &*items {
        Value::Array(items) => items,
        _ => &[],
    };
    match op {
        IterateOp::Map => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(env.own(eval(logic, Scope::Data(item), env)?)?);
            }
            owned(Value::Array(out))
        }
        IterateOp::Filter => {
            let mut out = Vec::new();
            for item in items {
                if truthy(&*eval(logic, Scope::Data(item), env)?) {
                    out.push(env.own(Cow::Borrowed(item))?);
                }
            }
            owned(Value::Array(out))
        }
        IterateOp::All => {
            if items.is_empty() {
                return boolean(false);
            }
            for item in items {
                if !truthy(&*eval(logic, Scope::Data(item), env)?) {
                    return boolean(false);
                }
            }
            boolean(true)
        }
        IterateOp::None | IterateOp::Some => {
            for item in items {
                if truthy(&*eval(logic, Scope::Data(item), env)?) {
                    return boolean(op == IterateOp::Some);
                }
            }
            boolean(op == IterateOp::None)
        }
    }
}

fn reduce<'a>(
    items: &'a Rule,
    logic: &'a Rule,
    initial: &'a Rule,
    scope: Scope<'a>,
    env: &Env<'a>,
) -> Eval<'a> {
    let items = eval(items, scope, env)?;
    let initial = eval(initial, scope, env)?;
    let Value::Array(list) = &*items else {
        return owned(env.own(initial)?);
    };
    let mut accumulator = env.own(initial)?;
    for item in list {
        let next = eval(
            logic,
            Scope::Reduce {
                current: item,
                accumulator: &accumulator,
            },
            env,
        )?;
        let next = env.own(next)?;
        // The accumulator feeds back into itself: bound how deep it can grow.
        check_depth(&next, env.max_value_depth, env)?;
        accumulator = next;
    }
    owned(accumulator)
}

fn check_depth(value: &Value, budget: usize, env: &Env<'_>) -> Result<(), Abort> {
    let children: Box<dyn Iterator<Item = &Value>> = match value {
        Value::Array(items) => Box::new(items.iter()),
        Value::Object(map) => Box::new(map.values()),
        _ => return Ok(()),
    };
    if budget == 0 {
        return Err(Abort::ValueTooDeep);
    }
    for child in children {
        env.charge(1)?;
        check_depth(child, budget - 1, env)?;
    }
    Ok(())
}

// === fractional ===

fn fractional<'a>(f: &'a Fractional, scope: Scope<'a>, env: &Env<'a>) -> Eval<'a> {
    let explicit = match &f.bucket_by {
        Some(rule) => Some(eval(rule, scope, env)?),
        None => None,
    };
    let mut leading_bucket = None;
    let key: Cow<'_, str> = match explicit.as_deref() {
        Some(Value::String(s)) => Cow::Borrowed(s.as_str()),
        // flagd drops a null bucketing value; an array is the first bucket (its ADR's reading).
        None | Some(Value::Null) | Some(Value::Array(_)) => {
            if let Some(Value::Array(bucket)) = explicit.as_deref() {
                leading_bucket = Some(bucket.as_slice());
            }
            let Some(Value::String(targeting_key)) = env.root.get("targetingKey") else {
                return null();
            };
            Cow::Owned(format!("{}{}", env.flag_key, targeting_key))
        }
        // Anything else is not a bucket either: flagd returns null.
        Some(_) => return null(),
    };
    env.charge_bytes(key.len())?;
    let hash = murmur3_x86_32(key.as_bytes(), 0);
    match (&f.buckets, leading_bucket) {
        (
            Buckets::Static {
                variants,
                ends,
                total,
            },
            None,
        ) => {
            env.charge(variants.len() as u64)?;
            if *total == 0 {
                // flagd answers the empty string, which names no variant.
                return owned(Value::String(String::new()));
            }
            match bucket_index(hash, ends.iter().copied(), *total) {
                Some(i) => Ok(Cow::Borrowed(&variants[i])),
                None => null(),
            }
        }
        (buckets, leading) => {
            let mut variants: Vec<Cow<'a, Value>> = Vec::new();
            let mut ends = Vec::new();
            let mut total = 0u64;
            let mut add = |variant: Cow<'a, Value>, weight: Option<&Value>| -> bool {
                match bucket_weight(&variant, weight) {
                    Ok(w) => {
                        total += w;
                        variants.push(variant);
                        ends.push(total);
                        true
                    }
                    Err(_) => false,
                }
            };
            if let Some(parts) = leading {
                let ok = match parts {
                    [variant] => add(Cow::Owned(variant.clone()), None),
                    [variant, weight, ..] => add(Cow::Owned(variant.clone()), Some(weight)),
                    [] => false,
                };
                if !ok {
                    return null();
                }
            }
            match buckets {
                Buckets::Static {
                    variants: vs,
                    ends: es,
                    ..
                } => {
                    let mut previous = 0;
                    for (variant, end) in vs.iter().zip(es) {
                        let weight = Value::from(end - previous);
                        previous = *end;
                        add(Cow::Borrowed(variant), Some(&weight));
                    }
                }
                Buckets::Dynamic(rules) => {
                    for parts in rules {
                        let variant = eval(&parts[0], scope, env)?;
                        let weight = match parts.get(1) {
                            Some(w) => Some(eval(w, scope, env)?),
                            None => None,
                        };
                        if !add(variant, weight.as_deref()) {
                            return null();
                        }
                    }
                }
            }
            if total > MAX_WEIGHT {
                return null();
            }
            if total == 0 {
                return owned(Value::String(String::new()));
            }
            match bucket_index(hash, ends, total) {
                Some(i) => Ok(variants.swap_remove(i)),
                None => null(),
            }
        }
    }
}
