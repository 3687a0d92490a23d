//! The evaluation hot path: a static flag, a targeting rule and a fractional split.

use std::hint::black_box;

use conveyor_flags::{EvaluationContext, FlagSet};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

const DEFINITION: &str = r##"{
  "flags": {
    "static": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
    "targeted": {
      "state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
      "targeting": {"if": [
        {"and": [{"ends_with": [{"var": "email"}, "@example.com"]}, {"in": [{"var": "country"}, ["FR", "DE", "NL"]]}]},
        "on", null
      ]}
    },
    "split": {
      "state": "ENABLED", "variants": {"red": "#f00", "green": "#0f0", "blue": "#00f"}, "defaultVariant": "red",
      "targeting": {"fractional": [
        {"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]},
        ["red", 50], ["green", 30], ["blue", 20]
      ]}
    }
  },
  "metadata": {"flagSetId": "bench"}
}"##;

fn evaluate(c: &mut Criterion) {
    let set = FlagSet::from_json(DEFINITION).expect("valid definition");
    let context = EvaluationContext::from_value(json!({
        "targetingKey": "user-42", "email": "ann@example.com", "country": "FR", "plan": "pro"
    }))
    .expect("valid context");
    for key in ["static", "targeted", "split"] {
        c.bench_function(key, |b| {
            b.iter(|| set.evaluate(black_box(key), black_box(&context), 1_700_000_000))
        });
    }
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
