//! Delivery through real processes and real HTTP through the router: blue/green under load,
//! canary weights, four-eyes approval, freeze windows, abort, rollback, failing health checks,
//! and kill -9 of the server mid-rollout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// A tiny service: answers `/` with its version (from the VERSION artifact), `/healthz` with 200
/// unless BROKEN is in its VERSION. ERRORS in its VERSION fails 30% of the other requests with a
/// 500; SLOW adds 50 ms to each; `FAILS=0.005` fails that share of them, `DELAY=0.02` takes that
/// many seconds over each, `LEAK=102400` holds on to that many more bytes with each (and after
/// `LEAK_FAILS_AFTER` requests fails half of them).
const APP: &str = r#"
import http.server, os, pathlib, random, time
VERSION = pathlib.Path("dist/VERSION").read_text().strip()
SETTINGS = dict(word.split("=", 1) for word in VERSION.split() if "=" in word)
FAILS = float(SETTINGS.get("FAILS", 0.3 if "ERRORS" in VERSION else 0))
DELAY = float(SETTINGS.get("DELAY", 0.05 if "SLOW" in VERSION else 0))
LEAK = int(SETTINGS.get("LEAK", 0))
LEAK_FAILS_AFTER = int(SETTINGS.get("LEAK_FAILS_AFTER", 1 << 62))
HELD = []
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        broken = "BROKEN" in VERSION
        code = 500 if (broken and self.path == "/healthz") else 200
        if self.path != "/healthz":
            if random.random() < FAILS:
                code = 500
            if LEAK:
                HELD.append(bytearray(b"x" * LEAK))
                if len(HELD) > LEAK_FAILS_AFTER and random.random() < 0.5:
                    code = 500
            if DELAY:
                time.sleep(DELAY)
        body = VERSION.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// A check: the service at `$URL` answers its health endpoint.
const CHECK: &str = r#"
import os, urllib.request
body = urllib.request.urlopen(os.environ["URL"] + "/healthz").read().decode()
print("checked", os.environ["URL"], body)
"#;

pub(crate) fn pipeline(environments: &str) -> String {
    format!(
        r#"name: shop
jobs:
  build:
    steps:
      - run: mkdir -p dist && cp app.py check.py VERSION dist/
    artifacts: [dist/*]
release:
  run: exec python3 dist/app.py
  health: {{ path: /healthz, interval: 100ms, start_timeout: 10s }}
  instances: 2
  stop_grace: 2s
environments:
{environments}"#
    )
}

pub(crate) struct Shop {
    pub(crate) server: Server,
    pub(crate) repo: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

impl Shop {
    pub(crate) async fn new(environments: &str) -> Shop {
        let tmp = tempfile::tempdir().unwrap();
        let repo = repo(
            &tmp.path().join("repo"),
            &[
                ("conveyor.yml", &pipeline(environments)),
                ("app.py", APP),
                ("check.py", CHECK),
                ("VERSION", "v1"),
            ],
        );
        let server = Server::start(&tmp.path().join("data"));
        server.add_project("shop", &repo).await;
        Shop {
            server,
            repo,
            _tmp: tmp,
        }
    }

    /// Commits `version` and builds it into a release; returns the release id.
    pub(crate) async fn release(&self, version: &str) -> i64 {
        if std::fs::read_to_string(self.repo.join("VERSION")).unwrap() != version {
            commit(&self.repo, &[("VERSION", version)], version);
        }
        let run = self.server.finished_run(self.server.trigger("shop").await).await;
        assert_eq!(run["status"], "success", "{run:#}");
        run["release_id"].as_i64().unwrap()
    }

    pub(crate) async fn promote(&self, release: i64, environment: &str) -> i64 {
        let body = self
            .server
            .post(
                &format!("/api/v1/releases/{release}/promote"),
                json!({ "environment": environment }),
            )
            .await;
        body["deployment_id"].as_i64().unwrap()
    }

    /// Builds `version` into a release and deploys it into `environment` successfully.
    pub(crate) async fn deployed(&self, version: &str, environment: &str) -> i64 {
        let release = self.release(version).await;
        let done = self.finished(self.promote(release, environment).await).await;
        assert_eq!(done["status"], "succeeded", "{done:#}");
        release
    }

    pub(crate) async fn deployment(&self, id: i64) -> Value {
        self.server.get(&format!("/api/v1/deployments/{id}")).await
    }

    pub(crate) async fn until_deployment(
        &self,
        id: i64,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        self.until_deployment_within(id, what, Duration::from_secs(60), check)
            .await
    }

    pub(crate) async fn until_deployment_within(
        &self,
        id: i64,
        what: &str,
        limit: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        let found = tokio::time::timeout(limit, async {
            loop {
                last = self.deployment(id).await;
                if check(&last) {
                    return last.clone();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("deployment {id}: {what} did not happen: {last:#}"))
    }

    pub(crate) async fn finished(&self, id: i64) -> Value {
        self.finished_within(id, Duration::from_secs(60)).await
    }

    /// For deployments that wait for evidence: their pace is the traffic's.
    pub(crate) async fn finished_within(&self, id: i64, limit: Duration) -> Value {
        self.until_deployment_within(id, "end", limit, |d| !d["finished_at"].is_null())
            .await
    }

    pub(crate) async fn url(&self, environment: &str) -> String {
        let status = self
            .server
            .get(&format!("/api/v1/projects/shop/environments/{environment}"))
            .await;
        status["url"]
            .as_str()
            .expect("the environment has a router")
            .to_string()
    }
}

/// GETs `/` through the router `n` times, each as a new user (no cookie); counts answers by body.
pub(crate) async fn sample(url: &str, n: usize) -> BTreeMap<String, usize> {
    let http = reqwest::Client::new();
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let body = http.get(url).send().await.unwrap().text().await.unwrap();
        *seen.entry(body).or_insert(0) += 1;
    }
    seen
}

/// Requests in a loop until stopped: how many were made, how many failed, and every body seen.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>, Vec<String>)>,
}

impl Load {
    pub(crate) fn start(url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let (mut count, mut errors, mut bodies) = (0, Vec::new(), Vec::new());
            while !flag.load(Ordering::Relaxed) {
                count += 1;
                match http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => bodies.push(r.text().await.unwrap_or_default()),
                    Ok(r) => errors.push(format!("status {}", r.status())),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (count, errors, bodies)
        });
        Load { stop, task }
    }

    /// Open-loop load: `per_second` requests a second whatever the answers take, as real
    /// users send them.
    pub(crate) fn paced(url: String, per_second: u32) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
            let mut requests = tokio::task::JoinSet::new();
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                let (http, url) = (http.clone(), url.clone());
                requests.spawn(async move {
                    match http.get(&url).send().await {
                        Ok(r) if r.status().is_success() => Ok(r.text().await.unwrap_or_default()),
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(e.to_string()),
                    }
                });
            }
            let (mut count, mut errors, mut bodies) = (0, Vec::new(), Vec::new());
            while let Some(answer) = requests.join_next().await {
                count += 1;
                match answer.expect("a request task") {
                    Ok(body) => bodies.push(body),
                    Err(error) => errors.push(error),
                }
            }
            (count, errors, bodies)
        });
        Load { stop, task }
    }

    pub(crate) async fn stop(self) -> (usize, Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

#[tokio::test]
async fn blue_green_flips_under_load_without_a_failed_request() {
    let shop = Shop::new("  staging:\n    strategy: blue-green\n    checks: [python3 dist/check.py]\n").await;
    let first = shop.release("v1").await;
    let d1 = shop.finished(shop.promote(first, "staging").await).await;
    assert_eq!(d1["status"], "succeeded", "{d1:#}");
    let url = shop.url("staging").await;
    assert_eq!(sample(&url, 5).await, BTreeMap::from([("v1".to_string(), 5)]));

    let load = Load::start(url.clone());
    let second = shop.release("v2").await;
    let d2 = shop.finished(shop.promote(second, "staging").await).await;
    assert_eq!(d2["status"], "succeeded", "{d2:#}");
    // Keep the load on a little after the flip.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (count, errors, bodies) = load.stop().await;
    assert!(
        errors.is_empty(),
        "{} of {count} requests failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let first_v2 = bodies
        .iter()
        .position(|b| b == "v2")
        .expect("v2 served after the flip");
    assert!(
        bodies[..first_v2].iter().all(|b| b == "v1") && bodies[first_v2..].iter().all(|b| b == "v2"),
        "one flip"
    );

    let status = shop
        .server
        .get("/api/v1/projects/shop/environments/staging")
        .await;
    let roles: Vec<(String, String, u64)> = status["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().into(),
                v["role"].as_str().unwrap().into(),
                v["traffic"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        vec![
            ("r2".into(), "stable".into(), 100),
            ("r1".into(), "warm".into(), 0)
        ],
        "the previous version stays warm"
    );

    // Rollback to the warm version is one route change.
    let back = shop
        .server
        .post("/api/v1/projects/shop/environments/staging/rollback", json!({}))
        .await["deployment_id"]
        .as_i64()
        .unwrap();
    let rolled = shop.finished(back).await;
    assert_eq!(
        (rolled["status"].as_str(), rolled["rollback_of"].as_i64()),
        (Some("succeeded"), d2["id"].as_i64())
    );
    assert_eq!(
        rolled["phase"], "send all traffic to the warm version",
        "{rolled:#}"
    );
    assert_eq!(sample(&url, 5).await, BTreeMap::from([("v1".to_string(), 5)]));

    // DORA from these events: two changes shipped, one of them rolled back.
    let dora = shop
        .server
        .get("/api/v1/dora?environment=staging&window_days=1")
        .await;
    assert_eq!(dora["deployments"], 3);
    assert_eq!(dora["deployment_frequency"]["per_day"], 2.0);
    assert_eq!(dora["deployment_frequency"]["level"], "elite");
    assert_eq!(
        dora["lead_time"]["samples"], 2,
        "commit times were recorded: {dora}"
    );
    assert_eq!(dora["change_failure_rate"]["failed"], 1);
    assert_eq!(dora["change_failure_rate"]["total"], 2);
    assert_eq!(dora["time_to_restore"]["samples"], 1);
    assert_eq!(dora["time_to_restore"]["level"], "elite");
}

#[tokio::test]
async fn canary_weights_hold_and_abort_returns_traffic_to_stable() {
    let shop =
        Shop::new("  prod:\n    strategy: { canary: { steps: [{ weight: 30, pause: manual }] } }\n").await;
    shop.deployed("v1", "prod").await;
    let second = shop.release("v2").await;
    let id = shop.promote(second, "prod").await;
    shop.until_deployment(id, "the 30% pause", |d| {
        d["status"] == "paused" && d["traffic"] == 30
    })
    .await;
    let url = shop.url("prod").await;

    let n = 1000;
    let seen = sample(&url, n).await;
    let canary = *seen.get("v2").unwrap_or(&0) as f64;
    // Binomial(1000, 0.3): 5 standard deviations is ±72 requests.
    let (mean, sd) = (n as f64 * 0.3, (n as f64 * 0.3 * 0.7).sqrt());
    assert!(
        (canary - mean).abs() < 5.0 * sd,
        "canary got {canary} of {n}: {seen:?}"
    );
    assert_eq!(seen.values().sum::<usize>(), n);
    // /metrics counts them per version, labelled by project and environment.
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", shop.server.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted = |version: &str| -> f64 {
        let series = format!(
            "conveyor_router_requests_total{{project=\"shop\",environment=\"prod\",version=\"{version}\"}} "
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    assert!(
        counted("r2") >= canary && counted("r1") >= n as f64 - canary,
        "{metrics}"
    );

    // A user keeps seeing one version (cookie stickiness).
    let http = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let first_answer = http.get(&url).send().await.unwrap().text().await.unwrap();
    for _ in 0..20 {
        assert_eq!(
            http.get(&url).send().await.unwrap().text().await.unwrap(),
            first_answer
        );
    }

    shop.server
        .post(&format!("/api/v1/deployments/{id}/abort"), json!({}))
        .await;
    let aborted = shop.finished(id).await;
    assert_eq!(
        (aborted["status"].as_str(), aborted["reason"].as_str()),
        (Some("aborted"), Some("aborted by admin"))
    );
    assert_eq!(sample(&url, 20).await, BTreeMap::from([("v1".to_string(), 20)]));
}

#[tokio::test]
async fn production_needs_an_approval_from_someone_else_and_respects_freezes() {
    let shop = Shop::new(
        "  staging:\n  prod:\n    after: staging\n    production: true\n  frozen:\n    freeze: [{ start: '* * * * *', end: '59 23 31 12 *', reason: audit }]\n",
    )
    .await;
    let release = shop.release("v1").await;
    // Production comes after staging.
    let (status, body) = shop
        .server
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/releases/{release}/promote"),
            Some(json!({ "environment": "prod" })),
            true,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("has not been deployed to staging yet")
    );
    assert_eq!(
        shop.finished(shop.promote(release, "staging").await).await["status"],
        "succeeded"
    );

    let id = shop.promote(release, "prod").await;
    let gated = shop
        .until_deployment(id, "the approval gate", |d| {
            d["gates"] == json!(["waiting for approval (0 of 1)"])
        })
        .await;
    assert_eq!(gated["status"], "pending");
    // The author (admin promoted it) cannot approve.
    let (status, body) = shop
        .server
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/deployments/{id}/approve"),
            None,
            true,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("four-eyes"));
    // Another identity can.
    let bob = shop.server.user("bob", &[("deployer", Some("shop"), None)]).await;
    let approved = reqwest::Client::new()
        .post(format!("{}/api/v1/deployments/{id}/approve", shop.server.base))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    let done = shop.finished(id).await;
    assert_eq!(
        (done["status"].as_str(), done["approvals"].clone()),
        (Some("succeeded"), json!(["bob"]))
    );

    // A freeze window holds a deployment back until it closes (or it is aborted).
    let frozen = shop.promote(release, "frozen").await;
    let held = shop
        .until_deployment(frozen, "the freeze gate", |d| {
            !d["gates"].as_array().unwrap().is_empty()
        })
        .await;
    let gate = held["gates"][0].as_str().unwrap();
    assert!(
        gate.starts_with("frozen until ") && gate.ends_with("-12-31T23:59:00Z (audit)"),
        "{gate}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(shop.deployment(frozen).await["status"], "pending", "still held");
    shop.server
        .post(&format!("/api/v1/deployments/{frozen}/abort"), json!({}))
        .await;
    assert_eq!(shop.finished(frozen).await["status"], "aborted");
}

#[tokio::test]
async fn a_failing_health_check_stops_the_rollout_before_it_takes_traffic() {
    let shop = Shop::new("  prod:\n    strategy: blue-green\n").await;
    shop.deployed("v1", "prod").await;
    let url = shop.url("prod").await;
    let broken = shop.release("v2-BROKEN").await;
    let failed = shop.finished(shop.promote(broken, "prod").await).await;
    assert_eq!(failed["status"], "failed");
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("did not become healthy") && reason.contains("answered 500"),
        "{reason}"
    );
    assert_eq!(failed["traffic"], 0, "it never took traffic");
    assert_eq!(sample(&url, 10).await, BTreeMap::from([("v1".to_string(), 10)]));
}

/// The pids of `version`'s instances in an environment's status.
fn instance_pids(status: &Value, version: &str) -> Vec<u64> {
    status["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["version"] == version)
        .flat_map(|v| v["instances"].as_array().unwrap())
        .map(instance_pid)
        .collect()
}

#[tokio::test]
async fn a_server_killed_mid_rollout_comes_back_serving_the_stable_version() {
    let tmp = tempfile::tempdir().unwrap();
    // `release.run` uses a template: instances restarted after the server's restart must get it
    // filled in like the first ones did.
    let pipeline =
        pipeline("  prod:\n    strategy: { canary: { steps: [{ weight: 50, pause: manual }] } }\n").replace(
            "run: exec python3 dist/app.py",
            "run: exec python3 dist/app.py --project ${{ project }}",
        );
    let repo = repo(
        &tmp.path().join("repo"),
        &[
            ("conveyor.yml", &pipeline),
            ("app.py", APP),
            ("check.py", CHECK),
            ("VERSION", "v1"),
        ],
    );
    let data = tmp.path().join("data");
    let server = Server::start(&data);
    server.add_project("shop", &repo).await;
    let shop = Shop {
        server,
        repo,
        _tmp: tmp,
    };
    shop.deployed("v1", "prod").await;
    let second = shop.release("v2").await;
    let id = shop.promote(second, "prod").await;
    shop.until_deployment(id, "the 50% pause", |d| d["status"] == "paused")
        .await;
    let url = shop.url("prod").await;
    let stable_pids = instance_pids(
        &shop.server.get("/api/v1/projects/shop/environments/prod").await,
        "r1",
    );
    assert_eq!(stable_pids.len(), 2);
    let canary_pids: Vec<u64> = shop.deployment(id).await["instances"]["r2"]
        .as_array()
        .unwrap()
        .iter()
        .map(instance_pid)
        .collect();

    let Shop {
        mut server,
        repo,
        _tmp,
    } = shop;
    server.kill9();
    drop(server);
    let server = Server::start(&data);
    let shop = Shop { server, repo, _tmp };
    // The router is back on its address, serving the stable version only.
    assert_eq!(sample(&url, 20).await, BTreeMap::from([("v1".to_string(), 20)]));
    let interrupted = shop.finished(id).await;
    assert_eq!(interrupted["status"], "failed");
    assert_eq!(
        interrupted["reason"],
        "interrupted by a restart of the server; traffic is on r1"
    );
    for pid in canary_pids {
        wait_dead(pid as i32).await;
    }
    let status = shop.server.get("/api/v1/projects/shop/environments/prod").await;
    assert_eq!(status["versions"][0]["version"], "r1");
    assert_eq!(status["versions"][0]["role"], "stable");
    // The stable instances were adopted, not restarted: the very same processes serve.
    assert_eq!(instance_pids(&status, "r1"), stable_pids);

    // An adopted instance that crashes is restarted with the command the release defines.
    kill9_pid(stable_pids[0] as i32);
    let restarted = eventually(Duration::from_secs(30), || async {
        let status = shop.server.get("/api/v1/projects/shop/environments/prod").await;
        let instance = status["versions"][0]["instances"][0].clone();
        (instance["restarts"].as_u64() >= Some(1) && instance["healthy"] == true).then_some(instance)
    })
    .await;
    assert_ne!(instance_pid(&restarted), stable_pids[0]);
    assert_eq!(sample(&url, 20).await, BTreeMap::from([("v1".to_string(), 20)]));
}

#[tokio::test]
async fn rolling_replaces_instances_batch_by_batch_under_load() {
    let shop = Shop::new("  prod:\n    strategy: { rolling: { max_surge: 1 } }\n").await;
    shop.deployed("v1", "prod").await;
    let url = shop.url("prod").await;
    let load = Load::start(url.clone());
    let second = shop.release("v2").await;
    let done = shop.finished(shop.promote(second, "prod").await).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (count, errors, bodies) = load.stop().await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert!(
        errors.is_empty(),
        "{} of {count} requests failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(bodies.contains(&"v2".to_string()));
    assert_eq!(
        done["phases"],
        json!([
            "start 1 instance(s) of the new version",
            "shift 50% of the traffic to the new version",
            "scale the stable version down to 1 instance(s)",
            "start 2 instance(s) of the new version",
            "shift 100% of the traffic to the new version",
            "scale the stable version down to 0 instance(s)",
            "make the new version stable",
        ])
    );
    assert_eq!(
        done["instances"]["r2"].as_array().unwrap().len(),
        2,
        "both batches recorded"
    );
    let status = shop.server.get("/api/v1/projects/shop/environments/prod").await;
    let versions = status["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "rolling keeps no warm version: {status:#}");
    assert_eq!(
        (
            versions[0]["version"].as_str(),
            versions[0]["instances"].as_array().unwrap().len()
        ),
        (Some("r2"), 2)
    );
    assert_eq!(sample(&url, 10).await, BTreeMap::from([("v2".to_string(), 10)]));
}

#[tokio::test]
async fn a_canary_waits_for_promotion_and_obeys_pause_and_resume() {
    let shop = Shop::new(
        "  prod:\n    strategy: { canary: { steps: [{ weight: 20, pause: manual }, { weight: 60, pause: 30s }] } }\n",
    )
    .await;
    shop.deployed("v1", "prod").await;
    let second = shop.release("v2").await;
    let id = shop.promote(second, "prod").await;
    shop.until_deployment(id, "the manual pause at 20%", |d| {
        d["status"] == "paused" && d["traffic"] == 20
    })
    .await;

    // `conveyor promote --deployment`: past the manual pause, on to the 30 s pause at 60%.
    shop.server
        .post(&format!("/api/v1/deployments/{id}/resume"), json!({}))
        .await;
    shop.until_deployment(id, "the 60% step", |d| {
        d["status"] == "running" && d["traffic"] == 60
    })
    .await;
    shop.server
        .post(&format!("/api/v1/deployments/{id}/pause"), json!({}))
        .await;
    shop.until_deployment(id, "a pause by hand", |d| d["status"] == "paused")
        .await;
    let (status, body) = shop
        .server
        .request(
            reqwest::Method::POST,
            "/api/v1/deployments/999/resume",
            Some(json!({})),
            true,
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

    // `promote --full`: skip what is left of the 30 s pause and go to 100% now.
    shop.server
        .post(
            &format!("/api/v1/deployments/{id}/resume"),
            json!({ "full": true }),
        )
        .await;
    let done = shop.finished(id).await;
    assert_eq!(
        (done["status"].as_str(), done["traffic"].as_u64()),
        (Some("succeeded"), Some(100)),
        "{done:#}"
    );
    let events = shop.server.get("/api/v1/events?limit=1000").await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["deployment_id"] == id)
        .map(|e| e["event"]["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"deployment_paused") && kinds.contains(&"deployment_resumed"),
        "{kinds:?}"
    );
    let (status, _) = shop
        .server
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/deployments/{id}/abort"),
            None,
            true,
        )
        .await;
    assert_eq!(status, 409, "an ended deployment cannot be aborted");
}

#[tokio::test]
async fn a_fix_forward_marks_the_broken_deployment_as_a_change_failure() {
    let shop = Shop::new("  prod:\n    strategy: blue-green\n").await;
    shop.deployed("v1", "prod").await;
    let broken_release = shop.deployed("v2", "prod").await;
    let broken = shop
        .server
        .get("/api/v1/projects/shop/environments/prod/deployments")
        .await["deployments"][0]["id"]
        .as_i64()
        .unwrap();
    let fix = shop.release("v3").await;

    // Only a successful deployment of another release to this environment can be fixed forward.
    let (status, body) = shop
        .server
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/releases/{fix}/promote"),
            Some(json!({ "environment": "prod", "fixes": broken + 100 })),
            true,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, _) = shop
        .server
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/releases/{broken_release}/promote"),
            Some(json!({ "environment": "prod", "fixes": broken })),
            true,
        )
        .await;
    assert_eq!(status, 403, "a release cannot fix itself");

    let body = shop
        .server
        .post(
            &format!("/api/v1/releases/{fix}/promote"),
            json!({ "environment": "prod", "fixes": broken }),
        )
        .await;
    let fixing = body["deployment_id"].as_i64().unwrap();
    assert_eq!(shop.finished(fixing).await["status"], "succeeded");
    assert_eq!(shop.deployment(broken).await["fixed_by"], fixing);
    let dora = shop
        .server
        .get("/api/v1/dora?environment=prod&window_days=1")
        .await;
    let cfr = &dora["change_failure_rate"];
    assert_eq!(
        (cfr["failed"].as_u64(), cfr["total"].as_u64()),
        (Some(1), Some(3)),
        "{dora:#}"
    );
    assert_eq!(dora["time_to_restore"]["samples"], 1, "{dora:#}");
}
