//! Feature flags through a real server: managed through the API and the CLI (audited, refused
//! whole when invalid), evaluated over OFREP with the spec's shapes, status codes, ETags and
//! rate limit, and by the unmodified OpenFeature JS SDK with its OFREP provider.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

const ENV: &str = "/api/v1/projects/shop/environments/production/flags";

fn definition() -> Value {
    json!({
        "flags": {
            "new-checkout": {
                "state": "ENABLED",
                "variants": {"on": true, "off": false},
                "defaultVariant": "on",
                "metadata": {"type": "release", "owner": "payments"}
            },
            "banner-text": {"state": "ENABLED", "variants": {"a": "Welcome", "b": "Hello"}, "defaultVariant": "a"},
            "max-items": {"state": "ENABLED", "variants": {"few": 10, "many": 250}, "defaultVariant": "many"},
            "theme": {"state": "ENABLED", "variants": {"dark": {"bg": "#000", "fg": "#fff"}}, "defaultVariant": "dark"},
            "greeting": {
                "state": "ENABLED",
                "variants": {"beta": "hi, tester", "plain": "hello"},
                "defaultVariant": "plain",
                "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "beta", null]}
            },
            "legacy": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                       "metadata": {"type": "operational", "expectedLifetimeDays": 1}}
        }
    })
}

/// A server with project `shop`, the definition above in `production`, and an evaluation key.
async fn flag_server(tmp: &Path, args: &[&str]) -> (Server, String) {
    let repo = repo(
        &tmp.join("repo"),
        &[("conveyor.yml", "name: shop\njobs: {build: {steps: [true]}}\n")],
    );
    let server = Server::start_with(&tmp.join("data"), args);
    server.add_project("shop", &repo).await;
    let (status, body) = server
        .request(reqwest::Method::PUT, ENV, Some(definition()), true)
        .await;
    assert_eq!(status, 200, "{body}");
    let key = server.post(&format!("{ENV}/keys"), json!({"name": "web"})).await;
    (server, key["key"].as_str().expect("a key").to_string())
}

/// Changes one flag through the API.
async fn patch(server: &Server, flag: &str, change: Value) -> (u16, Value) {
    server
        .request(
            reqwest::Method::PATCH,
            &format!("{ENV}/{flag}"),
            Some(change),
            true,
        )
        .await
}

/// One OFREP call: status, headers, body.
async fn ofrep(
    server: &Server,
    path: &str,
    auth: Option<(&str, &str)>,
    body: &str,
    if_none_match: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/ofrep/v1/evaluate/flags{path}", server.base))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some((name, value)) = auth {
        request = request.header(name, value);
    }
    if let Some(tag) = if_none_match {
        request = request.header("if-none-match", tag);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

// === the spec's response schemas ===

/// The OFREP spec (open-feature/protocol `service/openapi.yaml`, vendored in tests/ofrep-spec).
struct Spec {
    components: Value,
}

impl Spec {
    fn load() -> Spec {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ofrep-spec/openapi.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let root: Value = serde_saphyr::from_str(&text).unwrap();
        Spec {
            components: root["components"].clone(),
        }
    }

    /// Panics with every violation unless `body` is valid against `#/components/schemas/{name}`.
    fn check(&self, name: &str, body: &Value) {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": format!("#/components/schemas/{name}"),
            "components": self.components,
        });
        let validator = jsonschema::validator_for(&schema).expect("the spec's schemas compile");
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{body} is not a valid {name}: {errors:?}");
    }
}

fn json_content_type(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("application/json"))
}

#[tokio::test]
async fn ofrep_answers_with_the_spec_shapes_codes_and_etags() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, key) = flag_server(tmp.path(), &[]).await;
    let spec = Spec::load();
    let bearer = format!("Bearer {key}");
    let auth = Some(("authorization", bearer.as_str()));
    let ctx = r#"{"context": {"targetingKey": "user-1", "email": "ada@example.com"}}"#;

    // Single evaluations: values of every type, a targeting match, a disabled flag.
    let cases = [
        ("new-checkout", json!(true), "STATIC", Some("on")),
        ("banner-text", json!("Welcome"), "STATIC", Some("a")),
        ("max-items", json!(250), "STATIC", Some("many")),
        (
            "theme",
            json!({"bg": "#000", "fg": "#fff"}),
            "STATIC",
            Some("dark"),
        ),
        ("greeting", json!("hi, tester"), "TARGETING_MATCH", Some("beta")),
        ("legacy", Value::Null, "DISABLED", None),
    ];
    for (flag, value, reason, variant) in cases {
        let (status, headers, body) = ofrep(&server, &format!("/{flag}"), auth, ctx, None).await;
        assert_eq!(status, 200, "{flag}: {body}");
        assert!(json_content_type(&headers), "{flag}");
        spec.check("serverEvaluationSuccess", &body);
        assert_eq!(body["key"], flag);
        assert_eq!(body["reason"], reason, "{body}");
        assert_eq!(body.get("value").cloned().unwrap_or(Value::Null), value, "{body}");
        assert_eq!(body["variant"].as_str(), variant, "{body}");
    }
    let (_, _, body) = ofrep(&server, "/new-checkout", auth, ctx, None).await;
    assert_eq!(body["metadata"], json!({"type": "release", "owner": "payments"}));
    // X-API-Key works like a bearer key.
    let (status, _, _) = ofrep(&server, "/new-checkout", Some(("x-api-key", &key)), "", None).await;
    assert_eq!(status, 200);

    // Errors: the spec's status codes and bodies.
    let (status, headers, body) = ofrep(&server, "/nope", auth, ctx, None).await;
    assert_eq!(status, 404);
    assert!(json_content_type(&headers));
    spec.check("flagNotFound", &body);
    for (request, code) in [
        ("{not json", "PARSE_ERROR"),
        (r#"{"context": [1, 2]}"#, "INVALID_CONTEXT"),
    ] {
        let (status, headers, body) = ofrep(&server, "/new-checkout", auth, request, None).await;
        assert_eq!((status, body["errorCode"].as_str()), (400, Some(code)), "{body}");
        assert!(json_content_type(&headers));
        spec.check("evaluationFailure", &body);
    }
    let huge = format!(r#"{{"context": {{"targetingKey": "{}"}}}}"#, "x".repeat(200_000));
    let (status, _, body) = ofrep(&server, "/new-checkout", auth, &huge, None).await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (400, Some("INVALID_CONTEXT")),
        "{body}"
    );
    let (status, headers, body) = ofrep(&server, "/new-checkout", None, ctx, None).await;
    assert_eq!(status, 401);
    assert!(json_content_type(&headers));
    spec.check("generalErrorResponse", &body);
    let (status, _, _) = ofrep(
        &server,
        "/new-checkout",
        Some(("authorization", "Bearer cvf_wrong")),
        ctx,
        None,
    )
    .await;
    assert_eq!(status, 403);
    // An API token is not an evaluation key.
    let (status, _, _) = ofrep(
        &server,
        "/new-checkout",
        Some(("authorization", &format!("Bearer {TOKEN}"))),
        ctx,
        None,
    )
    .await;
    assert_eq!(status, 403);

    // Bulk: every flag, ETag over configuration and context, 304 only for the same both.
    let (status, headers, body) = ofrep(&server, "", auth, ctx, None).await;
    assert_eq!(status, 200);
    assert!(json_content_type(&headers));
    spec.check("bulkEvaluationSuccess", &body);
    assert_eq!(body["flags"].as_array().unwrap().len(), 6);
    let etag = headers["etag"].to_str().unwrap().to_string();
    let (status, headers, _) = ofrep(&server, "", auth, ctx, Some(&etag)).await;
    assert_eq!(status, 304);
    assert_eq!(headers["etag"].to_str().unwrap(), etag);
    let other = r#"{"context": {"targetingKey": "user-2", "email": "bob@example.org"}}"#;
    let (status, headers, body) = ofrep(&server, "", auth, other, Some(&etag)).await;
    assert_eq!(status, 200, "a changed context must not get a stale 304");
    assert_ne!(headers["etag"].to_str().unwrap(), etag);
    let greeting = body["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == "greeting")
        .unwrap();
    assert_eq!(greeting["value"], "hello");
    let (status, _, body) = ofrep(&server, "", auth, "[]", None).await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (400, Some("PARSE_ERROR")),
        "{body}"
    );
    spec.check("bulkEvaluationFailure", &body);

    // A change reaches evaluations at once, and invalidates the ETag.
    let (status, changed) = patch(&server, "banner-text", json!({"defaultVariant": "b"})).await;
    assert_eq!(status, 200, "{changed}");
    let started = Instant::now();
    let (_, _, body) = ofrep(&server, "/banner-text", auth, ctx, None).await;
    assert_eq!(body["value"], "Hello");
    assert!(started.elapsed() < Duration::from_millis(100));
    let (status, _, _) = ofrep(&server, "", auth, ctx, Some(&etag)).await;
    assert_eq!(status, 200, "a changed configuration must not get a stale 304");

    // The provider configuration.
    let response = reqwest::Client::new()
        .get(format!("{}/ofrep/v1/configuration", server.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let config: Value = response.json().await.unwrap();
    assert_eq!(
        config["capabilities"]["cacheInvalidation"]["polling"]["enabled"],
        true
    );
}

#[tokio::test]
async fn flags_are_audited_refused_whole_when_invalid_and_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, key) = flag_server(tmp.path(), &[]).await;
    let bearer = format!("Bearer {key}");
    let auth = Some(("authorization", bearer.as_str()));

    // Reads need a token.
    let (status, _) = server.request(reqwest::Method::GET, ENV, None, false).await;
    assert_eq!(status, 401);

    // An invalid definition is refused with the JSON path of the mistake; the old one stays.
    let mut bad = definition();
    bad["flags"]["greeting"]["targeting"] = json!({"if": [{"no_such_op": [1]}, "beta", null]});
    let (status, body) = server.request(reqwest::Method::PUT, ENV, Some(bad), true).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "flags_invalid");
    assert!(
        body["details"]["path"]
            .as_str()
            .unwrap()
            .starts_with("flags.greeting.targeting"),
        "{body}"
    );
    let mut bad_type = definition();
    bad_type["flags"]["legacy"]["metadata"]["type"] = json!("forever");
    let (status, body) = server
        .request(reqwest::Method::PUT, ENV, Some(bad_type), true)
        .await;
    assert_eq!(
        (status, body["details"]["path"].as_str()),
        (422, Some("flags.legacy.metadata.type"))
    );
    let (status, body) = patch(&server, "banner-text", json!({"defaultVariant": "zzz"})).await;
    assert_eq!(
        (status, body["details"]["path"].as_str()),
        (422, Some("flags.banner-text.variants")),
        "{body}"
    );
    let (_, _, eval) = ofrep(
        &server,
        "/greeting",
        auth,
        r#"{"context": {"email": "a@example.com"}}"#,
        None,
    )
    .await;
    assert_eq!(eval["value"], "hi, tester");

    // Disable through the CLI; the change is in the history with who and the diff.
    let cli = |args: &[&str]| {
        let out = command()
            .args(["--server", &server.base, "--token", TOKEN, "flags"])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = cli(&["disable", "new-checkout", "--env", "production"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("flag 'new-checkout': state ENABLED → DISABLED"),
        "{text}"
    );
    let (_, _, eval) = ofrep(&server, "/new-checkout", auth, "{}", None).await;
    assert_eq!(eval["reason"], "DISABLED");
    let (ok, text) = cli(&["list", "--env", "production"]);
    assert!(ok && text.contains("shop/production: 6 flag(s)"), "{text}");
    assert!(
        text.contains("new-checkout") && text.contains("DISABLED"),
        "{text}"
    );
    let (ok, text) = cli(&[
        "set",
        "max-items",
        "--env",
        "production",
        "--rollout",
        "few=50,many=50",
    ]);
    assert!(ok, "{text}");
    let (ok, text) = cli(&["history", "--env", "production"]);
    assert!(ok, "{text}");
    assert!(text.contains("admin changed flags:"), "{text}");
    assert!(
        text.contains(r#"flag 'max-items': targeting (none) → {"fractional":[["few",50],["many",50]]}"#),
        "{text}"
    );
    assert!(text.contains("admin created evaluation key 'web'"), "{text}");
    // The environment's timeline shows flag changes beside deployments.
    let out = command()
        .args([
            "--server",
            &server.base,
            "--token",
            TOKEN,
            "history",
            "production",
        ])
        .output()
        .unwrap();
    let timeline = String::from_utf8_lossy(&out.stdout);
    assert!(
        timeline.contains("by admin: flag 'new-checkout': state ENABLED → DISABLED"),
        "{timeline}"
    );
    let (ok, text) = cli(&["import", "/no/such/file.json", "--env", "production"]);
    assert!(!ok && text.contains("cannot read /no/such/file.json"), "{text}");
    let bad_file = tmp.path().join("bad.json");
    std::fs::write(
        &bad_file,
        r#"{"flags": {"x": {"state": "ON", "variants": {"a": 1}}}}"#,
    )
    .unwrap();
    let (ok, text) = cli(&["import", bad_file.to_str().unwrap(), "--env", "production"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("flags_invalid") && text.contains("at flags.x.state"),
        "{text}"
    );
    let (ok, exported) = cli(&["export", "--env", "production"]);
    assert!(ok);
    let exported: Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(exported["flags"]["new-checkout"]["state"], "DISABLED");
    // The audit log (hash chain) holds the changes too.
    let events = server.get("/api/v1/events?limit=1000").await;
    let by: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["type"] == "flags_changed")
        .map(|e| e["event"]["by"].as_str().unwrap())
        .collect();
    assert_eq!(by, ["admin", "admin", "admin"]);

    // The stale report: an operational flag expected to live 1 day is not stale on day 0.
    let (ok, text) = cli(&["stale", "--env", "production"]);
    assert!(ok && text.contains("no stale flags"), "{text}");

    // A scheduled change is applied by the server; one far in the future survives a restart.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339();
    let (status, body) = server
        .request(
            reqwest::Method::POST,
            &format!("{ENV}/new-checkout/schedule"),
            Some(json!({"at": soon, "change": {"state": "ENABLED"}})),
            true,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    eventually(Duration::from_secs(10), || async {
        let (_, _, eval) = ofrep(&server, "/new-checkout", auth, "{}", None).await;
        (eval["value"] == true).then_some(())
    })
    .await;
    let (status, _) = server
        .request(
            reqwest::Method::POST,
            &format!("{ENV}/legacy/schedule"),
            Some(json!({"at": "2099-01-01T00:00:00Z", "change": {"fractional": [["on", 10], ["off", 90]]}})),
            true,
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = server
        .request(
            reqwest::Method::POST,
            &format!("{ENV}/nope/schedule"),
            Some(json!({"at": "2099-01-01T00:00:00Z", "change": {"state": "ENABLED"}})),
            true,
        )
        .await;
    assert_eq!(
        (status, body["details"]["path"].as_str()),
        (422, Some("flags.nope")),
        "{body}"
    );

    let data = server.data.clone();
    drop(server);
    let server = Server::start(&data);
    let (_, _, eval) = ofrep(&server, "/new-checkout", auth, "{}", None).await;
    assert_eq!(eval["value"], true, "flags and keys are back after a restart");
    let schedules = get_auth(&server, &format!("{ENV}/schedules")).await;
    let statuses: Vec<&str> = schedules["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["applied", "pending"]);
}

async fn get_auth(server: &Server, path: &str) -> Value {
    let (status, body) = server.request(reqwest::Method::GET, path, None, true).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after_and_changes_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, key) = flag_server(tmp.path(), &["--flag-rate-limit", "3"]).await;
    let bearer = format!("Bearer {key}");
    let auth = Some(("authorization", bearer.as_str()));
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (status, headers, body) = ofrep(&server, "/new-checkout", auth, "{}", None).await;
        if status == 429 {
            assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
            Spec::load().check("generalErrorResponse", &body);
            assert!(
                body["errorDetails"]
                    .as_str()
                    .unwrap()
                    .contains("3 evaluations per second")
            );
        }
        statuses.push(status);
    }
    assert_eq!(&statuses[..3], [200, 200, 200]);
    assert!(statuses.contains(&429), "{statuses:?}");

    // The event stream: the current configuration, then each change with its diff.
    let mut stream = reqwest::Client::new()
        .get(format!("{}{ENV}/stream", server.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut seen = String::new();
    while !seen.contains("event: configuration") {
        seen.push_str(&String::from_utf8_lossy(&stream.chunk().await.unwrap().unwrap()));
    }
    let (status, _) = patch(&server, "legacy", json!({"state": "ENABLED"})).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen.contains("flag 'legacy': state DISABLED → ENABLED") {
        assert!(Instant::now() < deadline, "no change event: {seen}");
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: refetchEvaluation"), "{seen}");
}

fn ofrep_js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ofrep-js")
}

/// The unmodified OpenFeature JS server SDK with `@openfeature/ofrep-provider` (installed by
/// `npm ci` in tests/ofrep-js, which `.ci/run` does): fails, not skips, without node or them.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_openfeature_client_sees_changes() {
    let dir = ofrep_js_dir();
    assert!(
        dir.join("node_modules/@openfeature/ofrep-provider").exists(),
        "run `npm ci` in {} first (.ci/run does)",
        dir.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let (server, key) = flag_server(tmp.path(), &[]).await;
    let mut node = std::process::Command::new("node")
        .arg("evaluate.mjs")
        .current_dir(&dir)
        .env("OFREP_URL", &server.base)
        .env("OFREP_KEY", &key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs (install Node.js)");
    let mut stdin = node.stdin.take().unwrap();
    let mut lines = std::io::BufReader::new(node.stdout.take().unwrap()).lines();
    let mut next = move || -> Value {
        let line = lines.next().expect("the script answers").unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let first = tokio::task::block_in_place(&mut next);
    assert_eq!(
        first,
        json!({
            "boolean": true, "booleanReason": "STATIC", "booleanVariant": "on",
            "string": "Welcome", "number": 250, "object": {"bg": "#000", "fg": "#fff"},
            "targetedBeta": "hi, tester", "targetedOther": "hello", "missing": "FLAG_NOT_FOUND"
        })
    );
    let (status, _) = patch(&server, "new-checkout", json!({"defaultVariant": "off"})).await;
    assert_eq!(status, 200);
    let (status, _) = patch(&server, "banner-text", json!({"defaultVariant": "b"})).await;
    assert_eq!(status, 200);
    writeln!(stdin, "again").unwrap();
    let second = tokio::task::block_in_place(&mut next);
    assert_eq!(
        (second["boolean"].clone(), second["booleanVariant"].clone()),
        (json!(false), json!("off"))
    );
    assert_eq!(second["string"], "Hello");
    drop(stdin);
    assert!(node.wait().unwrap().success());
}
