//! Bad input gets a precise error, through the CLI and through the API; the example project runs.

use std::path::Path;

use serde_json::json;

use crate::harness::*;

fn validate(dir: &Path, name: &str, text: &str) -> (bool, String) {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    let out = command()
        .current_dir(dir)
        .args(["validate", name])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn bomb() -> String {
    let mut text = String::from("name: bomb\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    let mut prev = 'a';
    for name in "bcdefghi".chars() {
        text.push_str(&format!(
            "{name}: &{name} [{}]\n",
            vec![format!("*{prev}"); 9].join(", ")
        ));
        prev = name;
    }
    text + "jobs: {x: {steps: [echo]}}\n"
}

#[test]
fn validate_reports_each_problem_at_its_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown-key.yml",
            "name: x\njobs:\n  build:\n    neds: [a]\n    steps: [echo]\n".into(),
            "unknown-key.yml:4:5: unknown key 'neds' — did you mean 'needs'?",
        ),
        (
            "cycle.yml",
            "name: x\njobs:\n  a:\n    needs: [c]\n    steps: [echo]\n  b:\n    needs: [a]\n    steps: [echo]\n  c:\n    needs: [b]\n    steps: [echo]\n".into(),
            "cycle.yml:3:3: needs cycle: a → c → b → a",
        ),
        (
            "unknown-need.yml",
            "name: x\njobs:\n  build:\n    steps: [echo]\n  test:\n    needs: [buidl]\n    steps: [echo]\n".into(),
            "unknown-need.yml:6:13: job 'test' needs 'buidl', which is not a job — did you mean 'build'?",
        ),
        (
            "duplicate.yml",
            "name: x\njobs:\n  a:\n    steps: [echo]\n  a:\n    steps: [echo]\n".into(),
            "duplicate.yml:5:3: duplicate job 'a'",
        ),
        (
            "bomb.yml",
            bomb(),
            "bomb.yml:6:24: document too large or too deeply nested (alias expansion/nesting budget exceeded)",
        ),
    ];
    for (name, text, want) in cases {
        let (ok, err) = validate(tmp.path(), name, &text);
        assert!(!ok, "{name} should be invalid");
        assert_eq!(err, want, "{name}");
    }
    let (ok, _) = validate(
        tmp.path(),
        "fine.yml",
        "name: ok\njobs:\n  a:\n    steps: [echo hi]\n",
    );
    assert!(ok);
}

/// A valid file whose canary can never pass, or only on more traffic than a step gets, is
/// valid with warnings that say what the evidence needs.
#[test]
fn validate_warns_what_a_canary_step_needs_to_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, warnings) = validate(
        tmp.path(),
        "conveyor.yml",
        "name: shop\njobs:\n  build:\n    steps: [make]\nrelease: { run: ./app }\nenvironments:\n  production:\n    strategy: { canary: { steps: [10, 50], interval: 10s, analysis: { metrics: [{ error_rate: {} }, { name: strict, error_rate: { tolerance: 0, absolute: 0 } }] } } }\n",
    );
    assert!(ok, "{warnings}");
    let lines: Vec<&str> = warnings.lines().collect();
    assert_eq!(lines.len(), 2, "{warnings}");
    assert!(
        lines[0].starts_with("conveyor.yml: warning: environment 'production', metric 'error_rate': a step needs at least ")
            && lines[0].contains("canary requests to pass (min_samples is 100); the first step (10% of traffic) decides within its 10s pause only from ≈ "),
        "{warnings}"
    );
    assert_eq!(
        lines[1],
        "conveyor.yml: warning: environment 'production', metric 'strict': a zero margin can never be shown, so no step can pass; give the metric a tolerance or an absolute margin"
    );
}

#[test]
fn validate_lists_every_problem_of_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "name: many\njobs:\n  build:\n    timeout: 10x\n    retries: 99\n    steps:\n      - run: echo ${{ secret.X }}\n  test:\n    needs: [build, nope]\n    if: branch ==\n    steps: []\n";
    let (ok, err) = validate(tmp.path(), "conveyor.yml", text);
    assert!(!ok);
    insta::assert_snapshot!(err);
}

#[test]
fn run_builds_the_example_project_into_a_verified_release() {
    let tmp = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    let data = tmp.path().join("data");
    let out = command()
        .arg("run")
        .arg(&example)
        .args(data_args(&data))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("release 1 of hello"), "{stdout}");
    assert!(stdout.contains("dist/hello.tar.gz  sha256:"), "{stdout}");
    for job in ["build", "test", "lint", "package"] {
        assert!(stderr.contains(&format!("✓ {job} success")), "{stderr}");
    }
    let verify = command()
        .args(["verify", "1"])
        .args(data_args(&data))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn migrate_moves_a_sqlite_store_to_postgres_where_it_verifies_and_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    let data = tmp.path().join("data");
    let cli = |args: &[&str]| {
        let out = command().args(args).arg("--data").arg(&data).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, out) = cli(&["run", example.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&["secret", "rotate-key"]);
    assert!(ok, "{out}");

    let target = postgres_database(&tmp.path().join("target"));
    let (ok, out) = cli(&["migrate", "--to", &target]);
    assert!(ok, "{out}");
    assert!(out.contains("copied") && out.contains("from sqlite:"), "{out}");
    assert!(out.contains("audit log intact"), "{out}");
    // Where it now is, the release verifies and the audit holds.
    let (ok, out) = cli(&["verify", "1", "--database", &target]);
    assert!(ok && out.contains("release 1 verified"), "{out}");
    let (ok, out) = cli(&["audit", "verify", "--database", &target]);
    assert!(ok && out.contains("audit log intact"), "{out}");
    // Done twice, the second copy is refused and the first left as it was.
    let (ok, out) = cli(&["migrate", "--to", &target]);
    assert!(!ok && out.contains("already holds"), "{out}");
    let (ok, out) = cli(&["audit", "verify", "--database", &target]);
    assert!(ok && out.contains("audit log intact"), "{out}");
    // A server on the copy has the run and the release.
    let server = Server::start_with(&data, &["--database", &target]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let release = server.get("/api/v1/releases/1").await;
        assert_eq!(release["project"], "hello", "{release}");
    });
}

#[test]
fn run_fails_with_the_failing_jobs_reason() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("conveyor.yml"),
        "name: red\njobs:\n  t:\n    steps: [echo boom; exit 7]\n",
    )
    .unwrap();
    let out = command()
        .arg("run")
        .arg(tmp.path())
        .args(data_args(&tmp.path().join("data")))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("✗ t failed") && stderr.contains("failed with exit code 7"),
        "{stderr}"
    );
    assert!(stderr.contains("run 1 failed: no release"), "{stderr}");
}

#[tokio::test]
async fn the_api_answers_bad_requests_from_its_error_table() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo(
        &tmp.path().join("repo"),
        &[(
            "conveyor.yml",
            "name: bad\njobs:\n  a:\n    nedds: []\n    steps: [echo]\n",
        )],
    );
    let server = Server::start(&tmp.path().join("data"));
    let post = reqwest::Method::POST;
    let source = repo.display().to_string();

    let cases = [
        (
            json!({ "name": "p", "source": source }),
            false,
            401,
            "unauthorized",
        ),
        (json!({ "name": "p" }), true, 400, "invalid_request"),
        (
            json!({ "name": "p", "source": source, "extra": 1 }),
            true,
            400,
            "invalid_request",
        ),
        (
            json!({ "name": "../etc", "source": source }),
            true,
            400,
            "invalid_request",
        ),
        (
            json!({ "name": "p", "source": source, "poll_seconds": 0 }),
            true,
            400,
            "invalid_request",
        ),
        (
            json!({ "name": "p", "source": tmp.path().join("nowhere").display().to_string() }),
            true,
            502,
            "source_unavailable",
        ),
    ];
    for (body, auth, status, code) in cases {
        let (got, answer) = server
            .request(post.clone(), "/api/v1/projects", Some(body.clone()), auth)
            .await;
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    server.add_project("bad", &repo).await;
    let (status, answer) = server
        .request(
            post.clone(),
            "/api/v1/projects",
            Some(json!({ "name": "bad", "source": source })),
            true,
        )
        .await;
    assert_eq!((status, answer["code"].as_str()), (409, Some("conflict")));

    let (status, answer) = server
        .request(post.clone(), "/api/v1/projects/bad/runs", Some(json!({})), true)
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (422, Some("pipeline_invalid")),
        "{answer}"
    );
    assert_eq!(
        answer["details"]["errors"][0],
        "conveyor.yml:4:5: unknown key 'nedds' — did you mean 'needs'?"
    );

    let (status, answer) = server
        .request(post.clone(), "/api/v1/projects/ghost/runs", Some(json!({})), true)
        .await;
    assert_eq!((status, answer["code"].as_str()), (404, Some("not_found")));
    let (status, answer) = server
        .request(
            post,
            "/api/v1/projects/bad/runs",
            Some(json!({ "branch": "nope" })),
            true,
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (404, Some("not_found")),
        "{answer}"
    );
    let (status, _) = server
        .request(reqwest::Method::GET, "/api/v1/runs/999", None, true)
        .await;
    assert_eq!(status, 404);

    // The framework's own rejections answer from the same table, as JSON.
    for (method, path, status) in [
        (reqwest::Method::GET, "/api/v1/runs/abc", 400),
        (reqwest::Method::GET, "/api/v1/runs?limit=many", 400),
        (reqwest::Method::GET, "/api/v1/nothing-here", 404),
        (reqwest::Method::DELETE, "/api/v1/runs", 405),
    ] {
        let (got, answer) = server.request(method.clone(), path, None, true).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert!(
            answer["code"].is_string() && answer["message"].is_string(),
            "{answer}"
        );
    }
    let (status, answer) = server
        .request(
            reqwest::Method::POST,
            "/api/v1/tokens",
            Some(json!({ "name": 7 })),
            true,
        )
        .await;
    assert_eq!((status, answer["code"].as_str()), (400, Some("invalid_request")));
    assert_eq!(server.get("/readyz").await["ready"], json!(true));
}

/// Every route the server mounts (the router's own table) is in the generated OpenAPI document
/// with schemas for its request and response bodies, nothing is documented that is not mounted,
/// and the public reads answer what their schemas say.
#[tokio::test]
async fn every_mounted_route_is_documented_with_its_schemas() {
    use conveyor_server::{Access, openapi::openapi_path};
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let doc = server.get("/api/v1/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    let routes = conveyor_server::routes();
    let resolve = |value: &serde_json::Value| match value["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap();
            doc["components"]["responses"][name].clone()
        }
        None => value.clone(),
    };
    for route in &routes {
        let (method, path) = (route.method.as_str().to_lowercase(), openapi_path(&route.path));
        let op = &doc["paths"][&path][&method];
        if !route.documented() {
            assert!(
                op.is_null(),
                "{path} is OFREP's (the protocol has its own document) or a page"
            );
            continue;
        }
        let what = format!("{} {path}", route.method);
        assert!(op.is_object(), "{what} is mounted but not documented");
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{what}: no success response"
        );
        for (status, response) in responses {
            let response = resolve(response);
            if status == "204" {
                continue;
            }
            let content = response["content"]
                .as_object()
                .unwrap_or_else(|| panic!("{what} {status}: no content"));
            for (media, body) in content {
                assert!(body["schema"].is_object(), "{what} {status} {media}: no schema");
            }
            if !status.starts_with('2') {
                assert_eq!(
                    content["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                    "{what} {status}: errors are ErrorBody"
                );
            }
        }
        let token = matches!(route.access, Access::Caller(_));
        assert_eq!(
            op["security"][0].get("bearer").is_some(),
            token,
            "{what}: security"
        );
        for refusal in ["401", "403", "429"] {
            assert_eq!(responses.contains_key(refusal), token, "{what}: {refusal}");
        }
        if path.contains('{') {
            assert!(responses.contains_key("404"), "{what}: 404");
        }
        if let Some(body) = op.get("requestBody") {
            for (media, content) in body["content"].as_object().expect("request content") {
                assert!(content["schema"].is_object(), "{what} request {media}: no schema");
            }
        }
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(
                routes.iter().any(|r| openapi_path(&r.path) == *path && r.method.as_str().eq_ignore_ascii_case(method)),
                "{method} {path} is documented but not mounted"
            );
        }
    }
    // The reads without parameters answer what their schema says.
    for route in routes
        .iter()
        .filter(|r| r.documented() && r.method == reqwest::Method::GET && !r.path.contains('{'))
    {
        let op = &doc["paths"][&route.path]["get"];
        let Some(schema) = op["responses"]["200"]["content"]["application/json"]["schema"].as_object() else {
            continue;
        };
        let mut schema = serde_json::Value::Object(schema.clone());
        schema["components"] = doc["components"].clone();
        let validator = jsonschema::draft202012::new(&schema).expect("the document's schemas compile");
        let body = server.get(&route.path).await;
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| format!("{e} at {}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "GET {}: {errors:?}", route.path);
    }
}

#[test]
fn a_flooding_step_is_capped_with_a_visible_notice() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("conveyor.yml"),
        "name: flood\njobs:\n  flood:\n    steps:\n      - run: yes 0123456789 | head -n 200000\n      - run: echo still runs\n",
    )
    .unwrap();
    let config = tmp.path().join("conveyor.toml");
    std::fs::write(&config, "step_log_limit_bytes = 10000\n").unwrap();
    let data = tmp.path().join("data");
    let out = command()
        .arg("run")
        .arg(tmp.path())
        .args(data_args(&data))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = std::fs::read_to_string(data.join("logs/run-1.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let first_step = lines.iter().filter(|l| l["step"] == 0).count();
    assert!(first_step < 1000, "{first_step} lines kept of 200000");
    let notice = lines
        .iter()
        .find(|l| l["stream"] == "conveyor")
        .expect("a truncation notice");
    assert_eq!(
        notice["line"],
        "output truncated: this step wrote more than 10000 bytes; the rest is discarded"
    );
    assert!(
        lines.iter().any(|l| l["step"] == 1 && l["line"] == "still runs"),
        "the cap is per step"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["t"].as_str().is_some_and(|t| t.ends_with('Z'))),
        "timestamped"
    );
}

#[test]
fn the_demo_delivers_through_a_canary_and_the_analysis_rolls_a_bad_change_back() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    let out = command()
        .arg("demo")
        .arg(&example)
        .arg("--exit")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "release 1: 4 artifacts, SLSA provenance signed",
        "staging: deployment 1 of release 1 started by continuous deployment",
        "admin tries to approve: refused",
        "approved by reviewer",
        "→ shift 10% of the traffic to the new version",
        "→ shift 50% of the traffic to the new version",
        "deployment 4 succeeded",
        "analysis at 50%: PASS error_rate: canary 0 of",
        "▶ Third change: a bad one",
        "deployment 6 failed: analysis failed: error_rate: canary ",
        // Caught at the 10% step or, with fewer early errors, at 50%.
        "%: FAIL error_rate: canary ",
        "production serves r2 100% again",
        "change failure rate 33%",
        "✓ Delivered.",
        // The web UI, signed in through the link's fragment.
        "web UI   http://127.0.0.1:",
        "/sign-in#token=cvy_",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    // The load generator saw both versions during the good canary, and no error; the bad one's
    // errors came from the bad version only.
    let seen: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("traffic seen by the load generator"))
        .collect();
    assert!(
        seen[0].contains("r1 ") && seen[0].contains("r2 ") && !seen[0].contains("5xx"),
        "{seen:?}"
    );
    assert!(seen[1].contains("r3 ") && !seen[1].contains("error"), "{seen:?}");
    assert!(!seen[1].split("r3").next().unwrap().contains("5xx"), "{seen:?}");
}
