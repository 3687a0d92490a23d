use super::*;
use std::time::Duration;

use crate::error::SpecError;
use crate::expr::EvalContext;

const FILE: &str = "conveyor.yml";

/// Every error of `source`, one per line; panics if it parses.
fn errors(source: &str) -> String {
    match parse(FILE, source) {
        Ok(p) => panic!("expected errors, parsed {p:#?}"),
        Err(e) => e.to_string(),
    }
}

fn ok(source: &str) -> Pipeline {
    parse(FILE, source).unwrap_or_else(|e| panic!("{e}"))
}

/// A valid job block to pad cases that are about something else.
const JOBS: &str = "jobs:\n  build:\n    steps: [make]\n";

#[test]
fn error_table() {
    // (case, source, every expected error)
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown key with suggestion",
            "name: x\njobs:\n  test:\n    neds: [build]\n    steps: [make]\n  build:\n    steps: [make]\n",
            "conveyor.yml:4:5: unknown key 'neds' — did you mean 'needs'?",
        ),
        (
            "unknown key without suggestion",
            "name: x\njobs:\n  build:\n    foo: 1\n    steps: [make]\n",
            "conveyor.yml:4:5: unknown key 'foo'; expected one of: needs, if, env, timeout, retries, steps, artifacts",
        ),
        (
            "unknown top-level key",
            "name: x\nstages: {}\njobs:\n  b:\n    steps: [make]\n",
            "conveyor.yml:2:1: unknown key 'stages'; expected one of: name, on, env, concurrency, jobs, release, environments",
        ),
        (
            "unknown step key",
            "name: x\njobs:\n  b:\n    steps:\n      - run: make\n        continue-on-error: true\n",
            "conveyor.yml:6:9: unknown key 'continue-on-error' — did you mean 'continue_on_error'?",
        ),
        (
            "unknown need with suggestion",
            "name: x\njobs:\n  build:\n    steps: [make]\n  test:\n    needs: buidl\n    steps: [make]\n",
            "conveyor.yml:6:12: job 'test' needs 'buidl', which is not a job — did you mean 'build'?",
        ),
        (
            "unknown need without suggestion",
            "name: x\njobs:\n  build:\n    steps: [make]\n  test:\n    needs: [zzz]\n    steps: [make]\n",
            "conveyor.yml:6:13: job 'test' needs 'zzz', which is not a job",
        ),
        (
            "needs cycle",
            "name: x\njobs:\n  a:\n    needs: c\n    steps: [x]\n  b:\n    needs: a\n    steps: [x]\n  c:\n    needs: b\n    steps: [x]\n",
            "conveyor.yml:3:3: needs cycle: a → c → b → a",
        ),
        (
            "two-job cycle found from a later job",
            "name: x\njobs:\n  root:\n    needs: q\n    steps: [x]\n  p:\n    needs: q\n    steps: [x]\n  q:\n    needs: p\n    steps: [x]\n",
            "conveyor.yml:6:3: needs cycle: p → q → p",
        ),
        (
            "job needs itself",
            "name: x\njobs:\n  a:\n    needs: [a]\n    steps: [x]\n",
            "conveyor.yml:4:13: job 'a' needs itself",
        ),
        (
            "duplicate need",
            "name: x\njobs:\n  a:\n    steps: [x]\n  b:\n    needs: [a, a]\n    steps: [x]\n",
            "conveyor.yml:6:16: job 'b' needs 'a' twice",
        ),
        (
            "duplicate job id",
            "name: x\njobs:\n  a:\n    steps: [x]\n  a:\n    steps: [y]\n",
            "conveyor.yml:5:3: duplicate job 'a'",
        ),
        (
            "duplicate key",
            "name: x\njobs:\n  a:\n    steps: [x]\n    timeout: 1m\n    timeout: 2m\n",
            "conveyor.yml:6:5: duplicate key 'timeout'",
        ),
        (
            "duplicate env variable",
            "name: x\nenv:\n  A: 1\n  A: 2\njobs:\n  a:\n    steps: [x]\n",
            "conveyor.yml:4:3: duplicate env variable 'A'",
        ),
        (
            "wrong type: needs",
            "name: x\njobs:\n  a:\n    needs: { b: 1 }\n    steps: [x]\n",
            "conveyor.yml:4:12: needs: expected a string or a list of strings, found a mapping",
        ),
        (
            "wrong type: needs item",
            "name: x\njobs:\n  a:\n    needs: [[b]]\n    steps: [x]\n",
            "conveyor.yml:4:13: needs: expected a list of strings, found a list",
        ),
        (
            "wrong type: manual",
            "name: x\non: { manual: yes }\njobs:\n  a:\n    steps: [x]\n",
            "conveyor.yml:2:15: manual: expected true or false, found a string",
        ),
        (
            "wrong type: retries",
            "name: x\njobs:\n  a:\n    retries: many\n    steps: [x]\n",
            "conveyor.yml:4:14: retries: expected an integer, found a string",
        ),
        (
            "retries out of range",
            "name: x\njobs:\n  a:\n    retries: 11\n    steps: [x]\n",
            "conveyor.yml:4:14: retries must be between 0 and 10, found 11",
        ),
        (
            "wrong type: jobs",
            "name: x\njobs: [a]\n",
            "conveyor.yml:2:7: jobs: expected a mapping of job ids to jobs, found a list",
        ),
        (
            "wrong type: step",
            "name: x\njobs:\n  a:\n    steps:\n      - [make]\n",
            "conveyor.yml:5:9: step 1 of job 'a': expected a command or a mapping with 'run', found a list",
        ),
        (
            "wrong type: top level",
            "- a\n- b\n",
            "conveyor.yml:1:1: the top level: expected a mapping, found a list",
        ),
        (
            "missing name and jobs",
            "on: [push]\n",
            "conveyor.yml:1:1: missing required key 'name'\nconveyor.yml:1:1: missing required key 'jobs'",
        ),
        (
            "empty name",
            "name: ''\njobs:\n  a:\n    steps: [x]\n",
            "conveyor.yml:1:7: name must not be empty",
        ),
        (
            "empty file",
            "# nothing\n",
            "conveyor.yml:1:1: the file is empty; a pipeline needs 'name' and 'jobs'",
        ),
        (
            "no jobs",
            "name: x\njobs: {}\n",
            "conveyor.yml:2:7: jobs must define at least one job",
        ),
        (
            "job without steps",
            "name: x\njobs:\n  x:\n    timeout: 1m\n",
            "conveyor.yml:3:3: job 'x' has no steps",
        ),
        (
            "null job",
            "name: x\njobs:\n  x:\n",
            "conveyor.yml:3:3: job 'x' has no steps",
        ),
        (
            "empty steps",
            "name: x\njobs:\n  x:\n    steps: []\n",
            "conveyor.yml:4:12: job 'x' has no steps",
        ),
        (
            "step without run",
            "name: x\njobs:\n  x:\n    steps:\n      - name: hi\n",
            "conveyor.yml:5:9: step 1 of job 'x' has no 'run'",
        ),
        (
            "empty run",
            "name: x\njobs:\n  x:\n    steps:\n      - run: '  '\n",
            "conveyor.yml:5:14: step 1 of job 'x' has an empty 'run'",
        ),
        (
            "invalid job id",
            "name: x\njobs:\n  1st:\n    steps: [x]\n",
            "conveyor.yml:3:3: invalid job id '1st' — use letters, digits, '_' and '-', starting with a letter or '_'",
        ),
        (
            "bad duration",
            "name: x\njobs:\n  a:\n    timeout: 10x\n    steps: [x]\n",
            "conveyor.yml:4:14: invalid duration '10x' — use e.g. 90s, 10m, 1h30m",
        ),
        (
            "bad step duration",
            "name: x\njobs:\n  a:\n    steps:\n      - run: x\n        timeout: 1.5m\n",
            "conveyor.yml:6:18: invalid duration '1.5m' — use e.g. 90s, 10m, 1h30m",
        ),
        (
            "zero duration",
            "name: x\njobs:\n  a:\n    timeout: 0s\n    steps: [x]\n",
            "conveyor.yml:4:14: timeout must be greater than zero",
        ),
        (
            "bad if",
            "name: x\njobs:\n  a:\n    if: branch = 'main'\n    steps: [x]\n",
            "conveyor.yml:4:9: invalid if expression \"branch = 'main'\": unexpected '=' (at offset 7)",
        ),
        (
            "bad wrapped if",
            "name: x\njobs:\n  a:\n    if: ${{ github.ref == 'x' }}\n    steps: [x]\n",
            "conveyor.yml:4:9: invalid if expression \"${{ github.ref == 'x' }}\": unknown name 'github.ref' (expected branch, event or a function call) (at offset 4)",
        ),
        (
            "unknown reference in run",
            "name: x\njobs:\n  a:\n    steps:\n      - run: echo ${{ github.sha }}\n",
            "conveyor.yml:5:14: unknown reference '${{ github.sha }}' in run; allowed: secrets.NAME, branch, sha, event, run_id, project, job",
        ),
        (
            "bad secret name",
            "name: x\nenv:\n  T: ${{ secrets.my-token }}\njobs:\n  a:\n    steps: [x]\n",
            "conveyor.yml:3:6: unknown reference '${{ secrets.my-token }}' in env.T; allowed: secrets.NAME, branch, sha, event, run_id, project, job",
        ),
        (
            "unterminated template",
            "name: x\njobs:\n  a:\n    steps:\n      - run: echo ${{ branch\n",
            "conveyor.yml:5:14: unterminated '${{' in run (missing '}}')",
        ),
        (
            "reference not allowed in concurrency group",
            "name: x\nconcurrency: g-${{ job }}\njobs:\n  a:\n    steps: [x]\n",
            "conveyor.yml:2:14: unknown reference '${{ job }}' in concurrency.group; allowed: branch, project",
        ),
        (
            "concurrency without group",
            "name: x\nconcurrency: { cancel_in_progress: true }\njobs:\n  a:\n    steps: [x]\n",
            "conveyor.yml:2:14: concurrency has no 'group'",
        ),
        (
            "bad cron",
            "name: x\non:\n  schedule: ['0 3 * *', '61 * * * *']\njobs:\n  a:\n    steps: [x]\n",
            "conveyor.yml:3:14: invalid cron expression '0 3 * *': expected 5 fields (minute hour day month weekday) or 6 with seconds, found 4\n\
             conveyor.yml:3:25: invalid cron expression '61 * * * *': Component error: Number out of bounds",
        ),
        (
            "unknown trigger",
            "name: x\non: [push, manul]\njobs:\n  a:\n    steps: [x]\n",
            "conveyor.yml:2:12: unknown trigger 'manul' — did you mean 'manual'?",
        ),
        (
            "schedule in list form",
            "name: x\non: [schedule]\njobs:\n  a:\n    steps: [x]\n",
            "conveyor.yml:2:6: schedule needs cron expressions: use on: { schedule: ['0 3 * * *'] }",
        ),
        (
            "bad branch glob",
            "name: x\non:\n  push:\n    branches: ['release/[']\njobs:\n  a:\n    steps: [x]\n",
            "conveyor.yml:4:16: invalid branch pattern 'release/[': unclosed character class; missing ']'",
        ),
        (
            "absolute artifact",
            "name: x\njobs:\n  a:\n    steps: [x]\n    artifacts: [/etc/passwd]\n",
            "conveyor.yml:5:17: artifact pattern '/etc/passwd' must be relative to the workspace",
        ),
        (
            "dotdot artifact",
            "name: x\njobs:\n  a:\n    steps: [x]\n    artifacts:\n      - dist/../../secret\n",
            "conveyor.yml:6:9: artifact pattern 'dist/../../secret' must not contain '..'",
        ),
        (
            "bad artifact glob",
            "name: x\njobs:\n  a:\n    steps: [x]\n    artifacts: 'dist/{a,b'\n",
            "conveyor.yml:5:16: invalid artifact pattern 'dist/{a,b': unclosed alternate group; missing '}' (maybe escape '{' with '[{]'?)",
        ),
        (
            "bad env name",
            "name: x\nenv: { 'A B': x }\njobs:\n  a:\n    steps: [x]\n",
            "conveyor.yml:2:8: invalid environment variable name 'A B' — use letters, digits and '_'",
        ),
        (
            "yaml syntax error",
            "name: x\njobs:\n  a: [1\n  b: 2\n",
            "conveyor.yml:4:4: illegal placement of ':' indicator",
        ),
        (
            "multiple documents",
            "name: x\n---\nname: y\n",
            "conveyor.yml:3:1: only one YAML document is allowed (remove the extra '---')",
        ),
        (
            "unknown anchor",
            "name: *nope\n",
            "conveyor.yml:1:7: alias references unknown anchor",
        ),
    ];
    let mut failed = Vec::new();
    for (case, source, want) in cases {
        let got = errors(source);
        if got != *want {
            failed.push(format!("case: {case}\n  got:  {got}\n  want: {want}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn errors_are_collected_in_file_order() {
    let source = "\
name: x
jobs:
  b:
    needs: [a]
    timeout: forever
    steps: [x]
  a:
    retries: -1
    steps:
      - run: echo ${{ nope }}
  c:
    foo: 1
";
    insta::assert_snapshot!(errors(source), @r"
    conveyor.yml:5:14: invalid duration 'forever' — use e.g. 90s, 10m, 1h30m
    conveyor.yml:8:14: retries must be between 0 and 10, found -1
    conveyor.yml:10:14: unknown reference '${{ nope }}' in run; allowed: secrets.NAME, branch, sha, event, run_id, project, job
    conveyor.yml:11:3: job 'c' has no steps
    conveyor.yml:12:5: unknown key 'foo'; expected one of: needs, if, env, timeout, retries, steps, artifacts
    ");
}

#[test]
fn billion_laughs_is_refused() {
    let mut source = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let (prev, cur) = (pair[0], pair[1]);
        let refs = vec![format!("*{prev}"); 9].join(", ");
        source.push_str(&format!("{cur}: &{cur} [{refs}]\n"));
    }
    let started = std::time::Instant::now();
    let err = errors(&source);
    assert!(
        err.ends_with(": document too large or too deeply nested (alias expansion/nesting budget exceeded)"),
        "{err}"
    );
    assert!(err.starts_with("conveyor.yml:"), "{err}");
    // Refused on a budget, not after expanding 9^9 nodes.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn deep_nesting_is_refused() {
    let source = format!("name: {}1{}\n", "[".repeat(200), "]".repeat(200));
    assert!(
        errors(&source)
            .contains("document too large or too deeply nested (alias expansion/nesting budget exceeded)")
    );
}

#[test]
fn oversized_file_is_refused() {
    let source = format!("name: x\n#{}\n", "x".repeat(MAX_SOURCE_BYTES));
    assert_eq!(
        errors(&source),
        format!(
            "conveyor.yml:1:1: file is too large ({} bytes; the limit is 1048576 bytes)",
            source.len()
        )
    );
}

fn step(name: &str, run: &str) -> Step {
    Step {
        name: name.into(),
        run: run.into(),
        env: BTreeMap::new(),
        timeout: None,
        continue_on_error: false,
    }
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn full_example_round_trips() {
    let source = r#"
name: hello
on:
  push: { branches: [main, 'release/*'] }
  manual: true
  schedule: ['0 3 * * *']
env: { KEY: value, VERSION: 1.10, PORT: 8080, DEBUG: false, MODE: 010, EMPTY: }
concurrency: { group: 'deploy-${{ branch }}', cancel_in_progress: true }
jobs:
  lint:
    steps: ['cargo clippy -- -D warnings']
  build:
    needs: [lint]
    if: "success() && branch == 'main'"
    env: {}
    timeout: 10m
    retries: 2
    steps:
      - run: ./build.sh
      - name: test
        run: |
          cargo test
        env: { A: b, TOKEN: '${{ secrets.TOKEN }}' }
        timeout: 5m
        continue_on_error: true
    artifacts: [dist/*.tar.gz]
  deploy-prod:
    needs: build
    if: ${{ always() }}
    timeout: 90
    steps:
      - |

        ./deploy.sh --a-very-long-argument-list-that-goes-on-and-on-and-on --and-on
        echo done
"#;
    let got = ok(source);
    let want = Pipeline {
        name: "hello".into(),
        on: Triggers {
            push: Some(PushTrigger {
                branches: vec!["main".into(), "release/*".into()],
            }),
            manual: true,
            schedule: vec!["0 3 * * *".into()],
        },
        // Non-string scalars keep their spelling.
        env: env(&[
            ("KEY", "value"),
            ("VERSION", "1.10"),
            ("PORT", "8080"),
            ("DEBUG", "false"),
            ("MODE", "010"),
            ("EMPTY", ""),
        ]),
        concurrency: Some(Concurrency {
            group: "deploy-${{ branch }}".into(),
            cancel_in_progress: true,
        }),
        jobs: vec![
            Job {
                id: "lint".into(),
                needs: vec![],
                condition: None,
                env: BTreeMap::new(),
                timeout: None,
                retries: 0,
                steps: vec![step("cargo clippy -- -D warnings", "cargo clippy -- -D warnings")],
                artifacts: vec![],
            },
            Job {
                id: "build".into(),
                needs: vec!["lint".into()],
                condition: Some(Condition::parse("success() && branch == 'main'").expect("valid")),
                env: BTreeMap::new(),
                timeout: Some(Duration::from_secs(600)),
                retries: 2,
                steps: vec![
                    step("./build.sh", "./build.sh"),
                    Step {
                        env: env(&[("A", "b"), ("TOKEN", "${{ secrets.TOKEN }}")]),
                        timeout: Some(Duration::from_secs(300)),
                        continue_on_error: true,
                        ..step("test", "cargo test\n")
                    },
                ],
                artifacts: vec!["dist/*.tar.gz".into()],
            },
            Job {
                id: "deploy-prod".into(),
                needs: vec!["build".into()],
                condition: Some(Condition::parse("${{ always() }}").expect("valid")),
                env: BTreeMap::new(),
                timeout: Some(Duration::from_secs(90)),
                retries: 0,
                steps: vec![step(
                    "./deploy.sh --a-very-long-argument-list-that-goes-on-and-on-",
                    "\n./deploy.sh --a-very-long-argument-list-that-goes-on-and-on-and-on --and-on\necho done\n",
                )],
                artifacts: vec![],
            },
        ],
        release: None,
        environments: vec![],
    };
    assert_eq!(got, want);
    assert_eq!(got.secret_refs().into_iter().collect::<Vec<_>>(), ["TOKEN"]);
    assert_eq!(
        got.ancestors("deploy-prod").into_iter().collect::<Vec<_>>(),
        ["build", "lint"]
    );
    let failed = EvalContext {
        branch: "dev",
        event: "push",
        needs_succeeded: false,
        ancestor_failed: true,
        cancelled: false,
    };
    let deploy = got.job("deploy-prod").and_then(|j| j.condition.as_ref());
    assert_eq!(deploy.map(|c| c.eval(&failed)), Some(true));
    assert!(got.on.watches_branch("release/1.0"));
    // globset's `*` crosses `/` (documented in docs/pipeline.md).
    assert!(got.on.watches_branch("release/1.0/hotfix"));
    assert!(!got.on.watches_branch("dev"));
}

#[test]
fn full_example_snapshot() {
    let source = "\
name: snap
on: [push, manual]
concurrency: ci
jobs:
  build:
    steps:
      - make
      - name: check
        run: make check
        timeout: 1h30m
";
    insta::assert_debug_snapshot!(ok(source));
}

#[test]
fn triggers_table() {
    let every = || Some(PushTrigger { branches: vec![] });
    // (on: value, or None for absent; expected triggers)
    let cases: Vec<(Option<&str>, Triggers)> = vec![
        (
            None,
            Triggers {
                push: every(),
                manual: true,
                schedule: vec![],
            },
        ),
        (
            Some("push"),
            Triggers {
                push: every(),
                manual: false,
                schedule: vec![],
            },
        ),
        (
            Some("[push, manual]"),
            Triggers {
                push: every(),
                manual: true,
                schedule: vec![],
            },
        ),
        (
            Some("[manual]"),
            Triggers {
                push: None,
                manual: true,
                schedule: vec![],
            },
        ),
        (
            Some("\n  push:"),
            Triggers {
                push: every(),
                manual: false,
                schedule: vec![],
            },
        ),
        (
            Some("{ push: {} }"),
            Triggers {
                push: every(),
                manual: false,
                schedule: vec![],
            },
        ),
        (
            Some("{ push: { branches: main } }"),
            Triggers {
                push: Some(PushTrigger {
                    branches: vec!["main".into()],
                }),
                manual: false,
                schedule: vec![],
            },
        ),
        (
            Some("{ schedule: '@daily', manual: false }"),
            Triggers {
                push: None,
                manual: false,
                schedule: vec!["@daily".into()],
            },
        ),
        (
            Some("{ schedule: ['@hourly', '@weekly', '@monthly', '@yearly'] }"),
            Triggers {
                push: None,
                manual: false,
                schedule: ["@hourly", "@weekly", "@monthly", "@yearly"]
                    .map(String::from)
                    .to_vec(),
            },
        ),
        (
            Some("{ schedule: ['*/5 * * * *', '0 0 3 * * MON'] }"),
            Triggers {
                push: None,
                manual: false,
                schedule: vec!["*/5 * * * *".into(), "0 0 3 * * MON".into()],
            },
        ),
    ];
    for (on, want) in cases {
        let source = match on {
            Some(on) => format!("name: t\non: {on}\n{JOBS}"),
            None => format!("name: t\n{JOBS}"),
        };
        assert_eq!(ok(&source).on, want, "on: {on:?}");
    }
}

#[test]
fn duration_table() {
    let cases: &[(&str, Option<u64>)] = &[
        ("90s", Some(90_000)),
        ("10m", Some(600_000)),
        ("1h30m", Some(5_400_000)),
        ("500ms", Some(500)),
        ("1m30s", Some(90_000)),
        ("2h", Some(7_200_000)),
        ("45", Some(45_000)),
        (" 5m ", Some(300_000)),
        ("10x", None),
        ("m", None),
        ("1.5m", None),
        ("10 m", None),
        ("-5s", None),
        ("", None),
        ("99999999999999999999s", None),
    ];
    for (text, want) in cases {
        let got = parse_duration(text).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        assert_eq!(got, *want, "{text:?}");
    }
}

#[test]
fn step_names_and_shorthands() {
    let p = ok(
        "name: t\njobs:\n  a:\n    needs: []\n    steps:\n      - '  echo hi  '\n      - run: \"\\n\\n  make all\\n  make more\"\n",
    );
    let names: Vec<&str> = p.jobs[0].steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["echo hi", "make all"]);
}

#[test]
fn merge_keys_and_aliases_are_supported() {
    let source = "\
name: t
env: &common { A: '1', B: '2' }
jobs:
  a:
    env:
      <<: *common
      B: override
    steps: [x]
";
    let p = ok(source);
    assert_eq!(p.jobs[0].env, env(&[("A", "1"), ("B", "override")]));
}

#[test]
fn suggestions() {
    let keys = JOB_KEYS.iter().copied();
    assert_eq!(suggest("neds", keys.clone()), Some("needs"));
    assert_eq!(suggest("step", keys.clone()), Some("steps"));
    assert_eq!(suggest("timeuot", keys.clone()), Some("timeout"));
    assert_eq!(suggest("x", keys.clone()), None);
    assert_eq!(suggest("foo", keys), None);
}

#[test]
fn spec_error_display() {
    let e = SpecError {
        file: "f.yml".into(),
        line: 3,
        col: 7,
        message: "boom".into(),
    };
    assert_eq!(e.to_string(), "f.yml:3:7: boom");
    assert_eq!(
        SpecErrors(vec![e.clone(), e]).to_string(),
        "f.yml:3:7: boom\nf.yml:3:7: boom"
    );
}

#[test]
fn truncated_inputs_never_panic() {
    let source = "name: t\non: { push: { branches: [main] }, schedule: ['0 3 * * *'] }\nenv: &e { A: '${{ branch }}' }\nconcurrency: { group: 'g-${{ project }}' }\njobs:\n  a:\n    env: *e\n    if: ${{ branch == 'main' || failure() }}\n    steps:\n      - run: |\n          echo ${{ secrets.T }}\n        timeout: 1h30m\n  b:\n    needs: [a]\n    steps: [x]\n    artifacts: ['out/**']\n";
    assert!(parse(FILE, source).is_ok());
    for (cut, _) in source.char_indices() {
        // Any outcome is fine; a panic is not.
        let _ = parse(FILE, &source[..cut]);
    }
}
