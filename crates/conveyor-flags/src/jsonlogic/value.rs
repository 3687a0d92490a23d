//! JavaScript's coercions, which JsonLogic inherits: truthiness, `==`, `<`, `Number(x)` and
//! `String(x)`. Rules written for flagd rely on them (`{"<": [{"var": "age"}, 18]}` with
//! `"age": "17"` is true), so they are reproduced rather than "fixed".

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Number, Value};

/// JsonLogic truthiness: `false`, `null`, `0`, `NaN`, `""` and `[]` are false; `{}` is true.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            f != 0.0 && !f.is_nan()
        }
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(_) => true,
    }
}

/// JavaScript's `Number(v)`.
pub fn to_number(v: &Value) -> f64 {
    match v {
        Value::Null => 0.0,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => str_to_number(s),
        Value::Array(a) => match a.as_slice() {
            [] => 0.0,
            [x] => str_to_number(&to_js_string(x)),
            _ => f64::NAN,
        },
        Value::Object(_) => f64::NAN,
    }
}

/// JavaScript's `Number(s)` for a string: trimmed, empty is 0, anything unparsable is NaN.
pub fn str_to_number(s: &str) -> f64 {
    let t = s.trim();
    match t {
        "" => 0.0,
        "Infinity" | "+Infinity" => f64::INFINITY,
        "-Infinity" => f64::NEG_INFINITY,
        // Rust also reads "inf" and "nan"; JavaScript does not.
        _ if t
            .bytes()
            .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E') =>
        {
            f64::NAN
        }
        _ => t.parse::<f64>().unwrap_or(f64::NAN),
    }
}

/// JavaScript's `String(v)`: arrays join with commas (nulls as empty), objects are
/// `[object Object]`, integral numbers print without a fraction.
pub fn to_js_string(v: &Value) -> Cow<'_, str> {
    match v {
        Value::Null => Cow::Borrowed("null"),
        Value::Bool(true) => Cow::Borrowed("true"),
        Value::Bool(false) => Cow::Borrowed("false"),
        Value::Number(n) => Cow::Owned(number_to_string(n)),
        Value::String(s) => Cow::Borrowed(s),
        Value::Array(items) => {
            let mut out = String::new();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if !item.is_null() {
                    out.push_str(&to_js_string(item));
                }
            }
            Cow::Owned(out)
        }
        Value::Object(_) => Cow::Borrowed("[object Object]"),
    }
}

fn number_to_string(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        f64_to_string(n.as_f64().unwrap_or(f64::NAN))
    }
}

pub fn f64_to_string(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else if f == f.trunc() && f.abs() < 1e21 {
        // Exact: |f| < 1e21 fits an i128.
        (f as i128).to_string()
    } else {
        f.to_string()
    }
}

/// A number result as JSON: integral values become JSON integers (so `{"+": [1, 2]}` is `3`,
/// not `3.0`), NaN and infinities become `null` as `JSON.stringify` does.
pub fn number_value(f: f64) -> Value {
    if f == f.trunc() && f.abs() < 9.0e15 {
        Value::from(f as i64)
    } else {
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// `===`, except that arrays and objects compare by content (JavaScript compares identity,
/// which a rule can never observe usefully). `cost` counts the nodes visited.
pub fn strict_eq(a: &Value, b: &Value, cost: &mut u64) -> bool {
    *cost += 1;
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => number_eq(x, y),
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| strict_eq(p, q, cost))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, p)| y.get(k).is_some_and(|q| strict_eq(p, q, cost)))
        }
        _ => false,
    }
}

fn number_eq(x: &Number, y: &Number) -> bool {
    match (x.as_i64(), y.as_i64()) {
        (Some(p), Some(q)) => p == q,
        _ => x.as_f64() == y.as_f64(),
    }
}

/// JavaScript's `==`.
pub fn loose_eq(a: &Value, b: &Value, cost: &mut u64) -> bool {
    use Value::*;
    match (a, b) {
        (Null, Null) => true,
        (Null, _) | (_, Null) => false,
        (Bool(_), Bool(_))
        | (Number(_), Number(_))
        | (String(_), String(_))
        | (Array(_), Array(_))
        | (Object(_), Object(_)) => strict_eq(a, b, cost),
        // A boolean or a number against anything else compares as numbers (NaN never equals).
        (Bool(_) | Number(_), _) | (_, Bool(_) | Number(_)) => {
            *cost += 1;
            to_number(a) == to_number(b)
        }
        // Arrays and objects against a string compare as strings.
        (String(s), other) | (other, String(s)) => {
            *cost += 1;
            matches!(other, Array(_) | Object(_)) && to_js_string(other) == s.as_str()
        }
        (Array(_), Object(_)) | (Object(_), Array(_)) => false,
    }
}

/// JavaScript's relational comparison: two strings (after arrays and objects turn into
/// strings) compare as text, anything else as numbers; `None` when a side is NaN.
pub fn js_compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        _ => {
            let pa = primitive(a);
            let pb = primitive(b);
            match (&*pa, &*pb) {
                (Value::String(x), Value::String(y)) => Some(x.as_str().cmp(y.as_str())),
                _ => to_number(&pa).partial_cmp(&to_number(&pb)),
            }
        }
    }
}

fn primitive(v: &Value) -> Cow<'_, Value> {
    match v {
        Value::Array(_) | Value::Object(_) => Cow::Owned(Value::String(to_js_string(v).into_owned())),
        _ => Cow::Borrowed(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn truthiness_table() {
        let cases = [
            (json!(null), false),
            (json!(false), false),
            (json!(true), true),
            (json!(0), false),
            (json!(0.0), false),
            (json!(-1), true),
            (json!(""), false),
            (json!("0"), true),
            (json!([]), false),
            (json!([0]), true),
            (json!({}), true),
        ];
        for (v, want) in cases {
            assert_eq!(truthy(&v), want, "{v}");
        }
    }

    #[test]
    fn number_coercion_table() {
        let cases = [
            (json!(null), 0.0),
            (json!(true), 1.0),
            (json!(" 12 "), 12.0),
            (json!(""), 0.0),
            (json!("1e3"), 1000.0),
            (json!([]), 0.0),
            (json!(["7"]), 7.0),
            (json!(2.5), 2.5),
        ];
        for (v, want) in cases {
            assert_eq!(to_number(&v), want, "{v}");
        }
        for v in [json!("abc"), json!("inf"), json!("nan"), json!([1, 2]), json!({})] {
            assert!(to_number(&v).is_nan(), "{v}");
        }
    }

    #[test]
    fn string_coercion_table() {
        let cases = [
            (json!(null), "null"),
            (json!(1), "1"),
            (json!(1.0), "1"),
            (json!(1.5), "1.5"),
            (json!(-0.0), "0"),
            (json!([1, null, "a"]), "1,,a"),
            (json!({"a": 1}), "[object Object]"),
            (json!(true), "true"),
        ];
        for (v, want) in cases {
            assert_eq!(to_js_string(&v), want, "{v}");
        }
    }

    #[test]
    fn loose_and_strict_equality_tables() {
        let mut cost = 0;
        let cases = [
            (json!(1), json!(1), true, true),
            (json!(1), json!(1.0), true, true),
            (json!(1), json!("1"), true, false),
            (json!(0), json!(""), true, false),
            (json!(0), json!(false), true, false),
            (json!(1), json!(true), true, false),
            (json!("1"), json!(true), true, false),
            (json!(null), json!(null), true, true),
            (json!(null), json!(0), false, false),
            (json!(null), json!(false), false, false),
            (json!([1, 2]), json!("1,2"), true, false),
            (json!([1]), json!(1), true, false),
            (json!([1, 2]), json!([1, 2]), true, true),
            (json!({"a": 1}), json!({"a": 1.0}), true, true),
            (json!("a"), json!("b"), false, false),
        ];
        for (a, b, loose, strict) in cases {
            assert_eq!(loose_eq(&a, &b, &mut cost), loose, "{a} == {b}");
            assert_eq!(loose_eq(&b, &a, &mut cost), loose, "{b} == {a}");
            assert_eq!(strict_eq(&a, &b, &mut cost), strict, "{a} === {b}");
        }
        assert!(cost > 0);
    }

    #[test]
    fn relational_comparison_table() {
        use Ordering::*;
        let cases = [
            (json!(1), json!(2), Some(Less)),
            (json!("10"), json!(9), Some(Greater)),
            (json!("10"), json!("9"), Some(Less)),
            (json!(null), json!(1), Some(Less)),
            (json!("a"), json!(1), None),
            (json!([2]), json!(1), Some(Greater)),
        ];
        for (a, b, want) in cases {
            assert_eq!(js_compare(&a, &b), want, "{a} vs {b}");
        }
    }

    #[test]
    fn number_results_are_integers_when_integral() {
        assert_eq!(number_value(3.0), json!(3));
        assert_eq!(number_value(2.5), json!(2.5));
        assert_eq!(number_value(f64::NAN), json!(null));
        assert_eq!(number_value(f64::INFINITY), json!(null));
    }
}
