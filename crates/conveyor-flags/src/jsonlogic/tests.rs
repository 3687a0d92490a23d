//! Operator tables (after json-logic-js's own test suite) and hostile rules.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::compile::Compiler;
use super::eval::{Abort, Env, evaluate};
use crate::path::JsonPath;

const NOW: i64 = 1_700_000_000;

fn compile(rule: &Value) -> Result<super::Rule, String> {
    Compiler::new(None, 64)
        .compile(rule, &mut JsonPath::root())
        .map_err(|e| e.to_string())
}

fn run_with(rule: &Value, data: &Value, max_operations: u64) -> Result<Value, Abort> {
    let rule = compile(rule).unwrap_or_else(|e| panic!("{rule} does not compile: {e}"));
    let env = Env::new(data, "my-flag", NOW, max_operations, 64);
    evaluate(&rule, &env).map(Cow::into_owned)
}

fn run(rule: &Value, data: &Value) -> Value {
    run_with(rule, data, 50_000).unwrap_or_else(|abort| panic!("{rule} aborted: {abort:?}"))
}

fn table(cases: &[(Value, Value, Value)]) {
    for (rule, data, want) in cases {
        assert_eq!(&run(rule, data), want, "rule {rule} with data {data}");
    }
}

#[test]
fn var_and_flagd_properties() {
    table(&[
        (json!({"var": "a"}), json!({"a": 1}), json!(1)),
        (json!({"var": ["a"]}), json!({"a": 1}), json!(1)),
        (json!({"var": ["b", 5]}), json!({"a": 1}), json!(5)),
        (json!({"var": ["a", 5]}), json!({"a": null}), json!(null)),
        (
            json!({"var": "a.b.c"}),
            json!({"a": {"b": {"c": "deep"}}}),
            json!("deep"),
        ),
        (json!({"var": "a.1"}), json!({"a": [10, 20]}), json!(20)),
        (json!({"var": 1}), json!(["zero", "one"]), json!("one")),
        (json!({"var": ""}), json!({"a": 1}), json!({"a": 1})),
        (json!({"var": []}), json!({"a": 1}), json!({"a": 1})),
        (json!({"var": null}), json!({"a": 1}), json!({"a": 1})),
        (json!({"var": "x.y"}), json!({"x": 3}), json!(null)),
        (
            json!({"var": {"cat": ["a", ".b"]}}),
            json!({"a": {"b": 2}}),
            json!(2),
        ),
        (
            json!({"var": [{"cat": ["n", "o"]}, "dflt"]}),
            json!({}),
            json!("dflt"),
        ),
        (json!({"var": "$flagd.flagKey"}), json!({}), json!("my-flag")),
        (json!({"var": "$flagd.timestamp"}), json!({}), json!(NOW)),
        (
            json!({"var": "$flagd"}),
            json!({}),
            json!({"flagKey": "my-flag", "timestamp": NOW}),
        ),
        (json!({"var": ["$flagd.other", "d"]}), json!({}), json!("d")),
        // flagd replaces a `$flagd` the caller sent.
        (
            json!({"var": "$flagd.flagKey"}),
            json!({"$flagd": {"flagKey": "spoofed"}}),
            json!("my-flag"),
        ),
        (
            json!({"var": {"cat": ["$flagd", ".flagKey"]}}),
            json!({}),
            json!("my-flag"),
        ),
        (
            json!({"var": "targetingKey"}),
            json!({"targetingKey": "u-1"}),
            json!("u-1"),
        ),
    ]);
}

#[test]
fn missing_and_missing_some() {
    table(&[
        (json!({"missing": ["a", "b"]}), json!({"a": 1}), json!(["b"])),
        (
            json!({"missing": ["a", "c.d"]}),
            json!({"a": "", "c": {"d": 1}}),
            json!(["a"]),
        ),
        (
            json!({"missing": [["a", "b"]]}),
            json!({"b": false}),
            json!(["a"]),
        ),
        (json!({"missing": []}), json!({}), json!([])),
        (
            json!({"missing_some": [1, ["a", "b", "c"]]}),
            json!({"a": 1}),
            json!([]),
        ),
        (
            json!({"missing_some": [2, ["a", "b", "c"]]}),
            json!({"a": 1}),
            json!(["b", "c"]),
        ),
        (
            json!({"if": [{"missing_some": [1, ["email", "phone"]]}, "incomplete", "ok"]}),
            json!({"phone": "1"}),
            json!("ok"),
        ),
    ]);
}

#[test]
fn conditions_and_logic() {
    table(&[
        (json!({"if": [true, "yes", "no"]}), json!({}), json!("yes")),
        (json!({"if": [false, "yes", "no"]}), json!({}), json!("no")),
        (json!({"if": [false, 1, false, 2, 3]}), json!({}), json!(3)),
        (json!({"if": [false, 1, true, 2, 3]}), json!({}), json!(2)),
        (json!({"if": [false, 1]}), json!({}), json!(null)),
        (json!({"if": []}), json!({}), json!(null)),
        (
            json!({"if": [[], "non-empty", "empty"]}),
            json!({}),
            json!("empty"),
        ),
        (json!({"?:": [true, 1, 2]}), json!({}), json!(1)),
        (json!({"or": [false, 0, "a"]}), json!({}), json!("a")),
        (json!({"or": [false, 0]}), json!({}), json!(0)),
        (json!({"and": [true, "a", 3]}), json!({}), json!(3)),
        (json!({"and": [true, "", 3]}), json!({}), json!("")),
        (json!({"!": [true]}), json!({}), json!(false)),
        (json!({"!": false}), json!({}), json!(true)),
        (json!({"!": [""]}), json!({}), json!(true)),
        (json!({"!": [[]]}), json!({}), json!(true)),
        (json!({"!!": [["a"]]}), json!({}), json!(true)),
        (json!({"!!": ["0"]}), json!({}), json!(true)),
        (json!({"!!": [0]}), json!({}), json!(false)),
        (
            json!({"if": [true, {"a": 1, "b": 2}, null]}),
            json!({}),
            json!({"a": 1, "b": 2}),
        ),
        (json!([{"var": "a"}, 2]), json!({"a": 1}), json!([1, 2])),
    ]);
}

#[test]
fn equality_and_comparison() {
    table(&[
        (json!({"==": [1, 1]}), json!({}), json!(true)),
        (json!({"==": [1, "1"]}), json!({}), json!(true)),
        (json!({"==": [0, false]}), json!({}), json!(true)),
        (json!({"==": [null, 0]}), json!({}), json!(false)),
        (json!({"==": [{"var": "missing"}, null]}), json!({}), json!(true)),
        (json!({"===": [1, 1]}), json!({}), json!(true)),
        (json!({"===": [1, "1"]}), json!({}), json!(false)),
        (json!({"!=": [1, 2]}), json!({}), json!(true)),
        (json!({"!=": [1, "1"]}), json!({}), json!(false)),
        (json!({"!==": [1, 2]}), json!({}), json!(true)),
        (json!({"!==": [1, "1"]}), json!({}), json!(true)),
        (json!({">": [2, 1]}), json!({}), json!(true)),
        (json!({">": [1, 2]}), json!({}), json!(false)),
        (json!({">=": [1, 1]}), json!({}), json!(true)),
        (json!({"<": [1, 2]}), json!({}), json!(true)),
        (json!({"<": [2, 1]}), json!({}), json!(false)),
        (json!({"<=": [1, 1]}), json!({}), json!(true)),
        (json!({"<=": [2, 1]}), json!({}), json!(false)),
        (json!({"<": [1, 5, 10]}), json!({}), json!(true)),
        (json!({"<": [1, 1, 10]}), json!({}), json!(false)),
        (json!({"<": [1, 11, 10]}), json!({}), json!(false)),
        (json!({"<=": [1, 1, 10]}), json!({}), json!(true)),
        (json!({"<=": [1, 11, 10]}), json!({}), json!(false)),
        (json!({"<": ["a", "b"]}), json!({}), json!(true)),
        (
            json!({"<": [{"var": "age"}, 18]}),
            json!({"age": "17"}),
            json!(true),
        ),
        (json!({">": ["abc", 1]}), json!({}), json!(false)),
        (
            json!({"<": [{"var": "$flagd.timestamp"}, 1_800_000_000]}),
            json!({}),
            json!(true),
        ),
    ]);
}

#[test]
fn arithmetic() {
    table(&[
        (json!({"+": [1, 2]}), json!({}), json!(3)),
        (json!({"+": ["1", 1]}), json!({}), json!(2)),
        (json!({"+": ["2.75"]}), json!({}), json!(2.75)),
        (json!({"+": []}), json!({}), json!(0)),
        (json!({"-": [3, 1]}), json!({}), json!(2)),
        (json!({"-": [2]}), json!({}), json!(-2)),
        (json!({"*": [2, 3]}), json!({}), json!(6)),
        (json!({"*": ["2", 2, 0.5]}), json!({}), json!(2)),
        (json!({"/": [4, 2]}), json!({}), json!(2)),
        (json!({"/": [1, 4]}), json!({}), json!(0.25)),
        (json!({"/": [1, 0]}), json!({}), json!(null)),
        (json!({"%": [7, 3]}), json!({}), json!(1)),
        (json!({"%": [-7, 3]}), json!({}), json!(-1)),
        (json!({"max": [1, 3, 2]}), json!({}), json!(3)),
        (json!({"min": [1, 3, 2]}), json!({}), json!(1)),
        (json!({"max": []}), json!({}), json!(null)),
        (json!({"max": [1, "x"]}), json!({}), json!(null)),
        (json!({"+": [1, "x"]}), json!({}), json!(null)),
    ]);
}

#[test]
fn strings_and_arrays() {
    table(&[
        (json!({"in": ["Spring", "Springfield"]}), json!({}), json!(true)),
        (
            json!({"in": ["Illinois", "Springfield"]}),
            json!({}),
            json!(false),
        ),
        (json!({"in": ["Mike", ["Bob", "Mike"]]}), json!({}), json!(true)),
        (json!({"in": ["Todd", ["Bob", "Mike"]]}), json!({}), json!(false)),
        (json!({"in": [1, "a1b"]}), json!({}), json!(true)),
        (json!({"in": [1, ["1"]]}), json!({}), json!(false)),
        (json!({"in": ["a", null]}), json!({}), json!(false)),
        (
            json!({"in": ["@faas.com", {"var": ["email"]}]}),
            json!({"email": "x@faas.com"}),
            json!(true),
        ),
        (json!({"cat": ["I love", " pie"]}), json!({}), json!("I love pie")),
        (
            json!({"cat": ["a", 1, null, [1, 2], 1.5, true]}),
            json!({}),
            json!("a1null1,21.5true"),
        ),
        (json!({"cat": []}), json!({}), json!("")),
        (json!({"substr": ["jsonlogic", 4]}), json!({}), json!("logic")),
        (json!({"substr": ["jsonlogic", -5]}), json!({}), json!("logic")),
        (json!({"substr": ["jsonlogic", 1, 3]}), json!({}), json!("son")),
        (json!({"substr": ["jsonlogic", 4, -2]}), json!({}), json!("log")),
        (json!({"substr": ["jsonlogic", 20]}), json!({}), json!("")),
        (json!({"substr": ["jsonlogic", 4, -9]}), json!({}), json!("")),
        (json!({"substr": ["héllo", 1, 3]}), json!({}), json!("éll")),
        (json!({"merge": [[1, 2], [3, 4]]}), json!({}), json!([1, 2, 3, 4])),
        (json!({"merge": [1, 2, [3, 4]]}), json!({}), json!([1, 2, 3, 4])),
        (json!({"merge": [[1, [2]]]}), json!({}), json!([1, [2]])),
        (json!({"merge": []}), json!({}), json!([])),
        (
            json!({"starts_with": ["192.168.0.1", "192.168"]}),
            json!({}),
            json!(true),
        ),
        (
            json!({"starts_with": ["10.0.0.1", "192.168"]}),
            json!({}),
            json!(false),
        ),
        (
            json!({"ends_with": ["noreply@example.com", "@example.com"]}),
            json!({}),
            json!(true),
        ),
        (
            json!({"ends_with": ["noreply@example.com", "@test.com"]}),
            json!({}),
            json!(false),
        ),
        // flagd: non-string operands are false, not coerced.
        (
            json!({"ends_with": [{"var": "id"}, 3]}),
            json!({"id": "abc3"}),
            json!(false),
        ),
        (json!({"starts_with": [3, "3"]}), json!({}), json!(false)),
    ]);
}

#[test]
fn iteration() {
    let data = json!({"integers": [1, 2, 3, 4], "people": [{"age": 17}, {"age": 30}]});
    table(&[
        (
            json!({"map": [{"var": "integers"}, {"*": [{"var": ""}, 2]}]}),
            data.clone(),
            json!([2, 4, 6, 8]),
        ),
        (
            json!({"map": [{"var": "nothing"}, {"var": ""}]}),
            data.clone(),
            json!([]),
        ),
        (
            json!({"filter": [{"var": "integers"}, {"%": [{"var": ""}, 2]}]}),
            data.clone(),
            json!([1, 3]),
        ),
        (
            json!({"reduce": [{"var": "integers"}, {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]}),
            data.clone(),
            json!(10),
        ),
        (
            json!({"reduce": [{"var": "integers"}, {"*": [{"var": "current"}, {"var": "accumulator"}]}, 1]}),
            data.clone(),
            json!(24),
        ),
        (
            json!({"reduce": [{"var": "nothing"}, {"var": "current"}, "init"]}),
            data.clone(),
            json!("init"),
        ),
        (
            json!({"reduce": [[1, 2], {"var": ""}]}),
            data.clone(),
            json!({"current": 2, "accumulator": {"current": 1, "accumulator": null}}),
        ),
        (
            json!({"all": [{"var": "integers"}, {">": [{"var": ""}, 0]}]}),
            data.clone(),
            json!(true),
        ),
        (
            json!({"all": [{"var": "integers"}, {">": [{"var": ""}, 1]}]}),
            data.clone(),
            json!(false),
        ),
        (
            json!({"all": [[], {">": [{"var": ""}, 0]}]}),
            data.clone(),
            json!(false),
        ),
        (
            json!({"none": [[-3, -2], {">": [{"var": ""}, 0]}]}),
            data.clone(),
            json!(true),
        ),
        (
            json!({"none": [[], {">": [{"var": ""}, 0]}]}),
            data.clone(),
            json!(true),
        ),
        (
            json!({"some": [[-1, 0, 1], {">": [{"var": ""}, 0]}]}),
            data.clone(),
            json!(true),
        ),
        (
            json!({"some": [[], {">": [{"var": ""}, 0]}]}),
            data.clone(),
            json!(false),
        ),
        (
            json!({"some": [{"var": "people"}, {">=": [{"var": "age"}, 18]}]}),
            data.clone(),
            json!(true),
        ),
        // Inside an iteration `var` reads the element, `$flagd` included.
        (
            json!({"map": [[{"$flagd": {"flagKey": "inner"}, "n": 1}], {"var": "$flagd.flagKey"}]}),
            data,
            json!(["inner"]),
        ),
    ]);
}

#[test]
fn semantic_versions() {
    table(&[
        (
            json!({"sem_ver": ["1.1.2", ">=", "1.0.0"]}),
            json!({}),
            json!(true),
        ),
        (
            json!({"sem_ver": [{"var": "version"}, ">", "1.0.0"]}),
            json!({"version": "1.0.1"}),
            json!(true),
        ),
        (
            json!({"sem_ver": [{"var": "version"}, ">", "1.0.0"]}),
            json!({"version": "v0.0.1"}),
            json!(false),
        ),
        (
            json!({"sem_ver": ["1.2.3", "^", "1.5.6"]}),
            json!({}),
            json!(true),
        ),
        (
            json!({"sem_ver": ["1.2.3", "~", "1.2.6"]}),
            json!({}),
            json!(true),
        ),
        (
            json!({"sem_ver": ["1.3.3", "~", "1.2.6"]}),
            json!({}),
            json!(false),
        ),
        (json!({"sem_ver": [1.0, ">", "1.0.0"]}), json!({}), json!(false)),
        (
            json!({"sem_ver": ["invalid", ">", "1.0.0"]}),
            json!({}),
            json!(false),
        ),
        (
            json!({"sem_ver": [{"var": "version"}, "=", "2.0.0"]}),
            json!({}),
            json!(false),
        ),
        (
            json!({"sem_ver": ["1.0.0", {"var": "op"}, "1.0.0"]}),
            json!({"op": "=="}),
            json!(false),
        ),
    ]);
}

#[test]
fn fractional_buckets() {
    let rule = json!({"fractional": [{"var": "email"}, ["red", 50], ["blue", 20], ["green", 30]]});
    let shorthand = json!({"fractional": [["heads", 1], ["tails"]]});
    let dynamic =
        json!({"fractional": [{"var": "email"}, [{"var": "name"}, {"var": "weight"}], ["other", 0]]});
    // Same key, same bucket; a missing bucketing value falls back to flagKey + targetingKey.
    let a = run(&rule, &json!({"email": "a@example.com"}));
    assert_eq!(a, run(&rule, &json!({"email": "a@example.com", "other": 1})));
    assert!(
        ["red", "blue", "green"].contains(&a.as_str().unwrap_or("")),
        "{a}"
    );
    assert_eq!(run(&shorthand, &json!({})), json!(null), "no targeting key: null");
    assert_eq!(
        run(&shorthand, &json!({"targetingKey": 42})),
        json!(null),
        "non-string key: null"
    );
    assert!(run(&shorthand, &json!({"targetingKey": "u"})).is_string());
    assert_eq!(
        run(&rule, &json!({"email": 7})),
        json!(null),
        "a number is neither key nor bucket"
    );
    assert_eq!(
        run(&dynamic, &json!({"email": "e", "name": "n", "weight": 3})),
        json!("n")
    );
    assert_eq!(
        run(&dynamic, &json!({"email": "e", "name": "n", "weight": -3})),
        json!(null)
    );
    assert_eq!(
        run(&dynamic, &json!({"email": "e", "name": {"a": 1}, "weight": 3})),
        json!(null)
    );
    // All weights zero: flagd answers "", which names no variant.
    assert_eq!(
        run(
            &json!({"fractional": [{"var": "email"}, ["a", 0], ["b", 0]]}),
            &json!({"email": "e"})
        ),
        json!("")
    );
}

#[test]
fn rules_that_do_not_compile() {
    let cases = [
        (json!({"nope": [1]}), "nope: unknown operation 'nope'"),
        (
            json!({"if": [{"nope": 1}, 1, 2]}),
            "if[0].nope: unknown operation 'nope'",
        ),
        (json!({"==": [1, 2, 3]}), "==: '==' takes 2 arguments, got 3"),
        (json!({"!": [1, 2]}), "!: '!' takes 1 argument, got 2"),
        (json!({"<": [1]}), "<: '<' takes 2 to 3 arguments, got 1"),
        (
            json!({"var": [1, 2, 3]}),
            "var: 'var' takes 0 to 2 arguments, got 3",
        ),
        (
            json!({"var": [[1]]}),
            "var: the path of 'var' must be a string, a number or an operation",
        ),
        (json!({"*": []}), "*: '*' takes at least 1 arguments, got 0"),
        (
            json!({"sem_ver": ["1.0.0", "=>", "1.0.0"]}),
            "sem_ver[1]: unknown sem_ver operator \"=>\"; expected one of =, !=, <, <=, >, >=, ~, ^",
        ),
        (
            json!({"fractional": [["a", 50]]}),
            "fractional: 'fractional' takes at least 2 arguments, got 1",
        ),
        (
            json!({"fractional": "x"}),
            "fractional: 'fractional' takes an array: an optional bucketing expression, then [variant, weight] buckets",
        ),
        (
            json!({"fractional": [{"var": "x"}, ["a", 50.5], ["b", 50]]}),
            "fractional[1]: a bucket's weight must be a whole number from 0 to 2147483647",
        ),
        (
            json!({"fractional": [{"var": "x"}, ["a", -1], ["b", 50]]}),
            "fractional[1]: a bucket's weight must be a whole number from 0 to 2147483647",
        ),
        (
            json!({"fractional": [{"var": "x"}, ["a", "1"], ["b", 50]]}),
            "fractional[1]: a bucket's weight must be a number",
        ),
        (
            json!({"fractional": [{"var": "x"}, "a", ["b", 50]]}),
            "fractional[1]: a bucket must be an array [variant] or [variant, weight]",
        ),
        (
            json!({"fractional": [{"var": "x"}, ["a", 1, 2], ["b"]]}),
            "fractional[1]: a bucket must be an array [variant] or [variant, weight]",
        ),
        (
            json!({"fractional": [{"var": "x"}, [[1], 2], ["b", 1]]}),
            "fractional[1]: a bucket's variant must be a string, boolean, number or null",
        ),
        (
            json!({"fractional": [["a", 2147483647], ["b", 1]]}),
            "fractional: the weights add up to 2147483648; the most is 2147483647",
        ),
        (
            json!({"fractional": [5, ["a", 1], ["b", 1]]}),
            "fractional[0]: the bucketing expression must be a string or an operation",
        ),
        (json!({"$ref": "shared"}), "$ref: unknown evaluator 'shared'"),
        (
            json!({"$ref": 1}),
            "$ref: '$ref' must name an evaluator of '$evaluators'",
        ),
    ];
    for (rule, want) in cases {
        assert_eq!(compile(&rule).err().as_deref(), Some(want), "{rule}");
    }
}

fn nest(levels: usize, op: &str) -> Value {
    let mut rule = json!(true);
    for _ in 0..levels {
        rule = json!({ op: [rule] });
    }
    rule
}

#[test]
fn nesting_is_bounded_at_compile_time() {
    assert!(compile(&nest(63, "!")).is_ok());
    let error = compile(&nest(100, "!")).expect_err("too deep");
    assert!(error.ends_with("rule is nested deeper than 64 levels"), "{error}");
    assert!(error.starts_with("![0].![0]"), "{error}");
    // Arrays count as levels too.
    let mut arrays = json!(1);
    for _ in 0..70 {
        arrays = json!([arrays]);
    }
    assert!(compile(&arrays).is_err());
}

/// Runs a hostile rule and checks it is cut off quickly with the expected reason.
fn cut_off(rule: Value, data: Value, want: Abort) {
    let started = Instant::now();
    let result = run_with(&rule, &data, 50_000);
    assert_eq!(result.err(), Some(want), "{rule}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{rule} took {:?}",
        started.elapsed()
    );
}

#[test]
fn hostile_rules_are_cut_off() {
    let hundred: Vec<u32> = (0..100).collect();
    // Nested iteration: 100^5 steps.
    let mut nested = json!({"var": ""});
    for _ in 0..5 {
        nested = json!({"map": [hundred.clone(), nested]});
    }
    cut_off(nested, json!({}), Abort::OperationLimit);
    // A reduce whose accumulator doubles every step (2^100 elements).
    cut_off(
        json!({"reduce": [hundred.clone(), {"merge": [{"var": "accumulator"}, {"var": "accumulator"}]}, [1]]}),
        json!({}),
        Abort::OperationLimit,
    );
    // A string that doubles every step.
    cut_off(
        json!({"reduce": [hundred.clone(), {"cat": [{"var": "accumulator"}, {"var": "accumulator"}]}, "xxxxxxxx"]}),
        json!({}),
        Abort::OperationLimit,
    );
    // A value nested one level deeper every step.
    cut_off(
        json!({"reduce": [hundred, [{"var": "accumulator"}], null]}),
        json!({}),
        Abort::ValueTooDeep,
    );
    // Copying a large context value over and over.
    let big: Vec<u32> = (0..2_000).collect();
    let copies: Vec<Value> = (0..100).map(|_| json!({"var": "big"})).collect();
    cut_off(Value::Array(copies), json!({"big": big}), Abort::OperationLimit);
    // A huge context array scanned by `in` in a loop.
    let haystack: Vec<u32> = (0..2_000).collect();
    let mut scans = json!({"in": [-1, {"var": "h"}]});
    for _ in 0..40 {
        scans = json!({"or": [scans, {"in": [-1, {"var": "h"}]}]});
    }
    cut_off(scans, json!({"h": haystack}), Abort::OperationLimit);
}

#[test]
fn ordinary_rules_stay_far_below_the_budget() {
    let rule = json!({"if": [
        {"and": [{"in": ["@example.com", {"var": "email"}]}, {"sem_ver": [{"var": "version"}, ">=", "2.0.0"]}]},
        {"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}, ["a", 50], ["b", 50]]},
        null
    ]});
    let data = json!({"email": "x@example.com", "version": "2.1.0"});
    // 50 operations are plenty for a realistic rule.
    assert!(run_with(&rule, &data, 50).is_ok());
}
