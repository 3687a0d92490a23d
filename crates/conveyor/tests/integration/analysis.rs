//! Canary analysis through real processes and the router: a release with a raised error rate and
//! one with raised latency are rolled back by the analysis, a good one is promoted, a Prometheus
//! query gates a rollout, missing data follows its policy, and an inconclusive analysis pauses.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::delivery::{Load, Shop, sample};
use crate::harness::*;

/// A canary at `weight`% for long enough that only the analysis can end it early.
fn canary_with(analysis: &str) -> String {
    format!(
        "  prod:\n    strategy:\n      canary:\n        steps: [{{ weight: 30, pause: 10m }}]\n        analysis:\n{analysis}"
    )
}

async fn judgements(shop: &Shop, deployment: i64) -> Vec<Value> {
    let body = shop
        .server
        .get(&format!("/api/v1/deployments/{deployment}/analysis"))
        .await;
    body["judgements"].as_array().cloned().unwrap_or_default()
}

/// Deploys v1, then `bad` under load; returns the finished deployment and its judgements.
async fn roll_out_under_load(shop: &Shop, version: &str) -> (Value, Vec<Value>) {
    shop.deployed("v1", "prod").await;
    let release = shop.release(version).await;
    let load = Load::start(shop.url("prod").await);
    let id = shop.promote(release, "prod").await;
    let done = shop.finished(id).await;
    let (count, errors, _) = load.stop().await;
    assert!(count > 0);
    // The bad version's 500s are the only failed requests: the router itself never failed one.
    assert!(
        errors.iter().all(|e| e == "status 500 Internal Server Error"),
        "{errors:?}"
    );
    (done, judgements(shop, id).await)
}

#[tokio::test]
async fn a_canary_with_a_raised_error_rate_is_rolled_back_by_the_analysis() {
    let shop = Shop::new(&canary_with("          metrics: [{ error_rate: {} }]\n")).await;
    let (done, judgements) = roll_out_under_load(&shop, "v2 ERRORS").await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let reason = done["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("analysis failed: error_rate: canary "),
        "{reason}"
    );
    assert_eq!(judgements.len(), 1, "{judgements:#?}");
    let judged = &judgements[0];
    assert_eq!(
        (judged["metric"].as_str(), judged["verdict"].as_str()),
        (Some("error_rate"), Some("fail"))
    );
    assert_eq!(judged["traffic"], 30);
    let evidence = &judged["evidence"];
    assert_eq!(evidence["versions"], json!({ "canary": "r2", "baseline": "r1" }));
    let statistic = &evidence["statistic"];
    assert!(statistic["e_value"].as_f64().unwrap() >= 100.0, "{statistic:#}");
    assert!(statistic["p_value"].as_f64().unwrap() <= 0.01, "{statistic:#}");
    assert!(
        statistic["canary"]["events"].as_u64().unwrap() > 0,
        "{statistic:#}"
    );
    assert_eq!(statistic["baseline"]["events"], 0, "{statistic:#}");
    // Traffic is back on the stable version.
    let url = shop.url("prod").await;
    assert_eq!(sample(&url, 20).await, BTreeMap::from([("v1".to_string(), 20)]));

    // The CLI shows the judgement.
    let output = command()
        .args([
            "analysis",
            &done["id"].to_string(),
            "--server",
            &shop.server.base,
            "--token",
            TOKEN,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("FAIL") && text.contains("error_rate: canary"),
        "{text}"
    );
}

#[tokio::test]
async fn a_canary_with_raised_latency_is_rolled_back_by_the_analysis() {
    let shop = Shop::new(&canary_with(
        "          metrics: [{ latency: { quantile: 0.99 } }]\n",
    ))
    .await;
    let (done, judgements) = roll_out_under_load(&shop, "v2 SLOW").await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let reason = done["reason"].as_str().unwrap();
    assert!(reason.starts_with("analysis failed: latency: p99"), "{reason}");
    let statistic = &judgements[0]["evidence"]["statistic"];
    // Every canary request took over 50 ms: slower than the baseline's p99 bucket bound.
    assert!(
        statistic["canary_threshold"].as_f64().unwrap() < 0.05,
        "{statistic:#}"
    );
}

#[tokio::test]
async fn a_good_canary_is_judged_at_each_step_and_promoted() {
    let shop = Shop::new(
        // Wide margins: a few hundred requests show the canary within them, even on a busy
        // machine (passing needs evidence, so the load's pace sets how long this takes).
        "  prod:\n    strategy:\n      canary:\n        steps: [{ weight: 50, pause: 2s }]\n        analysis:\n          alpha: 0.001\n          metrics:\n            - error_rate: { absolute: '5%' }\n              min_samples: 20\n            - latency: { quantile: 0.9, tolerance: 1.0 }\n              min_samples: 20\n            - command: python3 dist/check.py\n",
    )
    .await;
    shop.deployed("v1", "prod").await;
    let release = shop.release("v2").await;
    let load = Load::start(shop.url("prod").await);
    let id = shop.promote(release, "prod").await;
    let done = shop.finished_within(id, Duration::from_secs(180)).await;
    let (_, errors, bodies) = load.stop().await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert!(errors.is_empty(), "{errors:?}");
    assert!(bodies.iter().any(|b| b == "v2"));
    let verdicts: Vec<(String, String)> = judgements(&shop, id)
        .await
        .iter()
        .map(|j| {
            (
                j["metric"].as_str().unwrap().into(),
                j["verdict"].as_str().unwrap().into(),
            )
        })
        .collect();
    let pass = |m: &str| (m.to_string(), "pass".to_string());
    assert_eq!(verdicts, [pass("error_rate"), pass("latency"), pass("command")]);
}

#[tokio::test]
async fn missing_data_follows_its_policy_and_inconclusive_pauses_for_a_person() {
    let shop = Shop::new(
        "  strict:\n    strategy:\n      canary:\n        steps: [{ weight: 50, pause: 1s }]\n        analysis:\n          max_duration: 1s\n          metrics: [{ error_rate: {}, no_data: fail }]\n  lenient:\n    strategy:\n      canary:\n        steps: [{ weight: 50, pause: 1s }]\n        analysis:\n          max_duration: 1s\n          metrics: [{ error_rate: {}, no_data: pass }]\n  careful:\n    strategy:\n      canary:\n        steps: [{ weight: 50, pause: 1s }]\n        analysis:\n          max_duration: 1s\n          inconclusive: pause\n          metrics: [{ error_rate: {} }]\n",
    )
    .await;
    for env in ["strict", "lenient", "careful"] {
        shop.deployed("v1", env).await;
    }
    // No traffic at all: no metric ever has its 100 samples.
    let release = shop.release("v2").await;

    let strict = shop.finished(shop.promote(release, "strict").await).await;
    assert_eq!(strict["status"], "failed", "{strict:#}");
    let reason = strict["reason"].as_str().unwrap();
    assert!(
        reason.contains("no data: 100 samples needed within 1s (no_data: fail)"),
        "{reason}"
    );

    let lenient = shop.finished(shop.promote(release, "lenient").await).await;
    assert_eq!(lenient["status"], "succeeded", "{lenient:#}");
    let lenient_judged = judgements(&shop, lenient["id"].as_i64().unwrap()).await;
    assert_eq!(lenient_judged[0]["verdict"], "pass");
    assert_eq!(lenient_judged[0]["evidence"]["no_data"], true);

    let careful = shop.promote(release, "careful").await;
    let paused = shop
        .until_deployment(careful, "an inconclusive pause", |d| d["status"] == "paused")
        .await;
    assert_eq!(paused["traffic"], 50);
    assert_eq!(judgements(&shop, careful).await[0]["verdict"], "inconclusive");
    // A person looks and promotes.
    shop.server
        .post(&format!("/api/v1/deployments/{careful}/resume"), json!({}))
        .await;
    assert_eq!(shop.finished(careful).await["status"], "succeeded");
}

/// A Prometheus server scraping Conveyor's `/metrics` every second.
struct Prometheus {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(port: u16, conveyor: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let target = conveyor.trim_start_matches("http://");
        let config = format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nscrape_configs:\n  - job_name: conveyor\n    authorization: {{ credentials: {TOKEN} }}\n    static_configs: [{{ targets: ['{target}'] }}]\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let child = std::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (.ci/run installs Debian's package)");
        Prometheus { child, _dir: dir }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn until_scraped(prometheus: &str) {
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(30), || async {
        let body: Value = http
            .get(format!("{prometheus}/api/v1/query"))
            .query(&[("query", "up{job=\"conveyor\"}")])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (body["data"]["result"][0]["value"][1] == "1").then_some(())
    })
    .await;
}

/// The canary's share of 5xx answers since the router started, as Prometheus scraped it.
const RATIO_QUERY: &str = r#"sum(conveyor_router_responses_5xx_total{version="{{version}}"}) / sum(conveyor_router_requests_total{version="{{version}}"})"#;

/// A shop whose production canary is judged by one Prometheus metric (`prometheus` holds its
/// keys besides address and query), with a Prometheus scraping the server, scraped once.
async fn shop_with_prometheus(pause: &str, prometheus: &str) -> (Shop, Prometheus, u16) {
    let port = free_port();
    let shop = Shop::new(&format!(
        "  prod:\n    strategy:\n      canary:\n        steps: [{{ weight: 30, pause: {pause} }}]\n        analysis:\n          metrics:\n            - name: canary-5xx-ratio\n              prometheus:\n                address: http://127.0.0.1:{port}\n                query: '{RATIO_QUERY}'\n{prometheus}"
    ))
    .await;
    let server = Prometheus::start(port, &shop.server.base);
    until_scraped(&format!("http://127.0.0.1:{port}")).await;
    (shop, server, port)
}

#[tokio::test]
async fn a_prometheus_query_gates_a_rollout() {
    let (shop, _prometheus, port) = shop_with_prometheus("10m", "                max: 0.1\n").await;
    let (done, judgements) = roll_out_under_load(&shop, "v2 ERRORS").await;
    assert_eq!(done["status"], "failed", "{done:#}");
    assert!(
        done["reason"]
            .as_str()
            .unwrap()
            .starts_with("analysis failed: canary-5xx-ratio: canary value 0."),
        "{done:#}"
    );
    let evidence = &judgements[0]["evidence"];
    assert_eq!(evidence["query"], RATIO_QUERY.replace("{{version}}", "r2"));
    assert!(evidence["value"].as_f64().unwrap() > 0.1, "{evidence:#}");
    assert_eq!(evidence["address"], format!("http://127.0.0.1:{port}"));
}

#[tokio::test]
async fn a_prometheus_query_compared_with_the_baseline_by_kayentas_judge_fails_a_worse_canary() {
    let (shop, _prometheus, _) = shop_with_prometheus(
        "10s",
        "                compare: increase\n              min_samples: 10\n",
    )
    .await;
    let (done, judgements) = roll_out_under_load(&shop, "v2 ERRORS").await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let reason = done["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("analysis failed: canary-5xx-ratio: High"),
        "{reason}"
    );
    let evidence = &judgements[0]["evidence"];
    assert_eq!(
        evidence["baseline_query"],
        RATIO_QUERY.replace("{{version}}", "r1")
    );
    assert_eq!(evidence["result"]["classification"], "High", "{evidence:#}");
    assert!(evidence["canary_values"].as_array().unwrap().len() >= 10);
}

#[tokio::test]
async fn a_blue_green_release_burning_its_error_budget_is_rolled_back_by_verify() {
    let shop = Shop::new(
        "  prod:\n    strategy: blue-green\n    verify: { duration: 1m, error_budget: { target: 0.99, max_burn_rate: 10 } }\n",
    )
    .await;
    let (done, judgements) = roll_out_under_load(&shop, "v2 ERRORS").await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let reason = done["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("analysis failed: error_budget: burning "),
        "{reason}"
    );
    assert_eq!(judgements[0]["traffic"], 100);
    let report = &judgements[0]["evidence"]["report"];
    assert_eq!(report["firing"], true, "{report:#}");
    assert!(
        report["alerts"][0]["long"]["burn_rate"].as_f64().unwrap() > 10.0,
        "{report:#}"
    );
    let url = shop.url("prod").await;
    assert_eq!(sample(&url, 20).await, BTreeMap::from([("v1".to_string(), 20)]));
}

#[tokio::test]
async fn verify_holds_a_release_to_slos_relative_to_the_previous_releases() {
    let shop = Shop::new(
        "  prod:\n    strategy: blue-green\n    verify:\n      duration: 3s\n      slo:\n        objectives:\n          - { sli: error_rate, key_sli: true, pass: ['<=0.01'] }\n          - { sli: latency_p99, pass: ['<=+100%'] }\n        total_score: { pass: '90%' }\n",
    )
    .await;
    shop.deployed("v1", "prod").await;
    // v2 passes: nothing earlier to compare its latency with yet.
    let release = shop.release("v2").await;
    let load = Load::start(shop.url("prod").await);
    let second = shop.finished(shop.promote(release, "prod").await).await;
    load.stop().await;
    assert_eq!(second["status"], "succeeded", "{second:#}");
    let judged = judgements(&shop, second["id"].as_i64().unwrap()).await;
    assert_eq!(judged[0]["metric"], "slo");
    assert_eq!(judged[0]["verdict"], "pass", "{judged:#?}");
    assert!(judged[0]["evidence"]["values"]["latency_p99"].as_f64().is_some());

    // v3 answers 50 ms slower: its p99 more than doubles v2's, so the SLO fails and v2 is back.
    let release = shop.release("v3 SLOW").await;
    let load = Load::start(shop.url("prod").await);
    let id = shop.promote(release, "prod").await;
    let done = shop.finished(id).await;
    load.stop().await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let reason = done["reason"].as_str().unwrap();
    assert!(
        reason
            .starts_with("analysis failed: slo: score 50% (pass at 90%; compared with 1 earlier result(s))"),
        "{reason}"
    );
    let url = shop.url("prod").await;
    assert_eq!(sample(&url, 20).await, BTreeMap::from([("v2".to_string(), 20)]));
}

#[tokio::test]
async fn a_fresh_baseline_gets_the_canarys_share_and_stops_with_the_canary() {
    let shop = Shop::new(
        // A wide margin: the hundred canary requests below are evidence enough to pass.
        "  prod:\n    strategy:\n      canary:\n        steps: [{ weight: 20, pause: manual }, { weight: 40, pause: 1s }]\n        analysis:\n          baseline: fresh\n          metrics: [{ error_rate: { absolute: '10%' }, min_samples: 10 }]\n",
    )
    .await;
    shop.deployed("v1", "prod").await;
    let release = shop.release("v2").await;
    let id = shop.promote(release, "prod").await;
    shop.until_deployment(id, "the 20% pause", |d| {
        d["status"] == "paused" && d["traffic"] == 20
    })
    .await;
    let status = shop.server.get("/api/v1/projects/shop/environments/prod").await;
    let split: BTreeMap<String, (String, u64)> = status["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let role = v["role"].as_str().unwrap().to_string();
            (
                role,
                (
                    v["version"].as_str().unwrap().to_string(),
                    v["traffic"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(split["stable"], ("r1".to_string(), 60), "{status:#}");
    assert_eq!(split["canary"], ("r2".to_string(), 20), "{status:#}");
    assert_eq!(split["baseline"], ("r1-baseline".to_string(), 20), "{status:#}");

    // Each request says which version answered it: the fresh baseline takes about 20%.
    let url = shop.url("prod").await;
    let http = reqwest::Client::new();
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..500 {
        let response = http.get(&url).send().await.unwrap();
        let version = response.headers()["x-conveyor-version"]
            .to_str()
            .unwrap()
            .to_string();
        *answered.entry(version).or_insert(0) += 1;
    }
    // Binomial(500, 0.2): 5 standard deviations is ±45.
    let baseline = answered.get("r1-baseline").copied().unwrap_or(0) as f64;
    assert!((baseline - 100.0).abs() < 45.0, "{answered:?}");

    let pids: Vec<i32> = shop.deployment(id).await["instances"]["r1-baseline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| instance_pid(i) as i32)
        .collect();
    assert_eq!(pids.len(), 2);
    shop.server
        .post(&format!("/api/v1/deployments/{id}/resume"), json!({}))
        .await;
    assert_eq!(shop.finished(id).await["status"], "succeeded");
    for pid in pids {
        wait_dead(pid).await;
    }
    let status = shop.server.get("/api/v1/projects/shop/environments/prod").await;
    let roles: Vec<&str> = status["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["stable", "warm"], "{status:#}");
    // The 40% step's judgement compared the canary with the fresh baseline.
    let judged = judgements(&shop, id).await;
    assert!(!judged.is_empty(), "{:#}", shop.deployment(id).await);
    assert_eq!(
        judged[0]["evidence"]["versions"]["baseline"], "r1-baseline",
        "{judged:#?}"
    );
}

#[tokio::test]
async fn webhooks_pass_on_2xx_and_a_failing_one_rolls_back_after_its_retries() {
    let shop = Shop::new(&canary_with("          metrics: [{ error_rate: {} }]\n")).await;
    shop.deployed("v1", "prod").await;
    // The webhooks need the server's address, known only now: a new commit sets them.
    let healthz = format!("{}/healthz", shop.server.base);
    let pipeline = crate::delivery::pipeline(&format!(
        "  prod:\n    strategy:\n      canary:\n        steps: [{{ weight: 30, pause: 1s }}, {{ weight: 60, pause: 1s }}]\n        analysis:\n          metrics:\n            - name: healthy\n              webhook: {{ url: '{healthz}' }}\n            - name: probe\n              webhook: {{ url: 'http://127.0.0.1:1/probe', timeout: 1s, retries: 2 }}\n              critical: false\n"
    ));
    commit(&shop.repo, &[("conveyor.yml", &pipeline)], "webhooks");
    let release = shop.release("v2").await;
    let done = shop.finished(shop.promote(release, "prod").await).await;
    // The failing probe is not critical: recorded as a warning, the rollout goes on.
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let verdicts: Vec<(String, String)> = judgements(&shop, done["id"].as_i64().unwrap())
        .await
        .iter()
        .map(|j| {
            (
                j["metric"].as_str().unwrap().into(),
                j["verdict"].as_str().unwrap().into(),
            )
        })
        .collect();
    let v = |m: &str, verdict: &str| (m.to_string(), verdict.to_string());
    assert_eq!(
        verdicts,
        [v("probe", "warning"), v("healthy", "pass"), v("healthy", "pass")],
        "the probe is judged once, when it fails; the healthy one at each step"
    );

    // The same probe, critical: the rollout stops at the first step's end.
    let pipeline = pipeline.replace("              critical: false\n", "");
    commit(&shop.repo, &[("conveyor.yml", &pipeline)], "critical probe");
    let release = shop.release("v3").await;
    let done = shop.finished(shop.promote(release, "prod").await).await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let reason = done["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("analysis failed: probe: unreachable: "),
        "{reason}"
    );
    assert_eq!(done["traffic"], 30, "{done:#}");
}
