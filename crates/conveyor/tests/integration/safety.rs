//! Safe by default: a production canary with the shipped analysis, under steady low traffic (a
//! paced 80 requests/s through the router, 0.5% of them failing in every version, ≈20 ms each).
//! A release failing five times as often, one 50% slower and one leaking memory are stopped
//! before they get all the traffic; a good one is promoted on evidence; pinned requests are no
//! evidence at all.

use serde_json::{Value, json};
use std::time::Duration;

use crate::delivery::{Load, Shop};
use crate::harness::*;

/// The analysis as shipped (`metrics` left out); only how long a step may wait is shortened, and
/// a step without a decision then rolls back, so a release that cannot be shown good ends here.
const PRODUCTION: &str = "  prod:\n    production: true\n    approval: { required: 0 }\n    verify: { duration: 3s, error_budget: { target: 0.9 } }\n    strategy:\n      canary:\n        steps: [{ weight: 50, pause: 5s }]\n        analysis: { max_duration: 150s, inconclusive: rollback }\n";
const BASE: &str = "FAILS=0.005 DELAY=0.02";

/// Deploys a stable version, then `settings` as a canary under paced load; returns the finished
/// deployment and its judgements.
async fn canary_under_load(settings: &str) -> (Value, Vec<Value>) {
    let shop = Shop::new(PRODUCTION).await;
    shop.deployed(&format!("v1 {BASE}"), "prod").await;
    let release = shop.release(&format!("v2 {settings}")).await;
    let load = Load::paced(shop.url("prod").await, 80);
    let id = shop.promote(release, "prod").await;
    let done = shop.finished_within(id, Duration::from_secs(240)).await;
    let (count, _, _) = load.stop().await;
    assert!(count > 0);
    let analysis = shop
        .server
        .get(&format!("/api/v1/deployments/{id}/analysis"))
        .await;
    (
        done,
        analysis["judgements"].as_array().cloned().unwrap_or_default(),
    )
}

fn verdicts(judgements: &[Value]) -> Vec<(String, String, u64)> {
    judgements
        .iter()
        .map(|j| {
            (
                j["metric"].as_str().unwrap().to_string(),
                j["verdict"].as_str().unwrap().to_string(),
                j["traffic"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_good_release_is_shown_not_worse_and_promoted() {
    let (done, judgements) = canary_under_load(BASE).await;
    assert_eq!(done["status"], "succeeded", "{done:#} {judgements:#?}");
    let verdicts = verdicts(&judgements);
    for metric in ["error_rate", "latency", "memory", "cpu", "restarts"] {
        assert!(
            verdicts.contains(&(metric.to_string(), "pass".to_string(), 50)),
            "{verdicts:?}"
        );
    }
    // The evidence says why: an interval inside the margin at 95%.
    let error_rate = judgements.iter().find(|j| j["metric"] == "error_rate").unwrap();
    let summary = error_rate["summary"].as_str().unwrap();
    assert!(
        summary.contains("passes when difference ≤ +1.00 pp or ratio ≤ 1.50 (95% confidence)"),
        "{summary}"
    );
    let statistic = &error_rate["evidence"]["statistic"];
    assert!(
        statistic["difference"]["upper"].as_f64().unwrap() <= 0.01,
        "{statistic:#}"
    );
}

#[tokio::test]
async fn a_release_failing_five_times_as_often_is_stopped_before_it_has_all_the_traffic() {
    let (done, judgements) = canary_under_load("FAILS=0.025 DELAY=0.02").await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let reason = done["reason"].as_str().unwrap();
    assert!(reason.starts_with("analysis"), "{reason}");
    assert!(verdicts(&judgements).iter().all(|(.., traffic)| *traffic <= 50));
    let error_rate = verdicts(&judgements)
        .into_iter()
        .find(|(metric, ..)| metric == "error_rate")
        .expect("error_rate judged");
    assert_ne!(error_rate.1, "pass", "{judgements:#?}");
}

#[tokio::test]
async fn a_release_half_as_slow_again_is_stopped_before_it_has_all_the_traffic() {
    let (done, judgements) = canary_under_load("FAILS=0.005 DELAY=0.03").await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let reason = done["reason"].as_str().unwrap();
    assert!(reason.starts_with("analysis failed: latency: p99"), "{reason}");
    assert!(verdicts(&judgements).iter().all(|(.., traffic)| *traffic <= 50));
}

#[tokio::test]
async fn a_leaking_release_fails_on_its_memory_during_the_canary() {
    // 100 KiB held per request; its requests start failing only long after the canary.
    let (done, judgements) =
        canary_under_load("FAILS=0.005 DELAY=0.02 LEAK=102400 LEAK_FAILS_AFTER=100000").await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let reason = done["reason"].as_str().unwrap();
    assert!(reason.starts_with("analysis failed: memory: canary"), "{reason}");
    let memory = judgements.iter().find(|j| j["metric"] == "memory").unwrap();
    assert_eq!(
        (memory["verdict"].as_str(), memory["traffic"].as_u64()),
        (Some("fail"), Some(50))
    );
    let statistic = &memory["evidence"]["statistic"];
    // Each request held 100 KiB: the canary's lower bound says at least a good part of it.
    assert!(
        statistic["canary"]["lower"].as_f64().unwrap() > 10_000.0,
        "{statistic:#}"
    );
}

#[tokio::test]
async fn pinned_requests_are_no_evidence_for_or_against_a_canary() {
    let shop = Shop::new(
        "  prod:\n    strategy:\n      canary:\n        steps: [{ weight: 10, pause: manual }]\n        analysis: { metrics: [{ error_rate: {}, min_samples: 10 }] }\n",
    )
    .await;
    shop.deployed("v1", "prod").await;
    let release = shop.release("v2 ERRORS").await;
    let id = shop.promote(release, "prod").await;
    shop.until_deployment(id, "the 10% pause", |d| d["status"] == "paused")
        .await;
    // A flood of pinned requests to the failing canary: 30% of them answer 500.
    let url = shop.url("prod").await;
    let http = reqwest::Client::new();
    let mut failed = 0;
    for _ in 0..300 {
        let response = http
            .get(&url)
            .header("x-conveyor-version", format!("r{release}"))
            .send()
            .await
            .unwrap();
        failed += usize::from(response.status().is_server_error());
    }
    assert!(failed > 30, "the canary did fail pinned requests: {failed}");
    // Let the analysis look a few times.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let analysis = shop
        .server
        .get(&format!("/api/v1/deployments/{id}/analysis"))
        .await;
    assert_eq!(analysis["status"], "paused", "{analysis:#}");
    assert_eq!(analysis["judgements"], json!([]), "{analysis:#}");
    let live = &analysis["live"][0];
    assert_eq!(live["metric"], "error_rate", "{analysis:#}");
    assert_eq!(
        live["evidence"]["statistic"]["canary"]["requests"], 0,
        "{analysis:#}"
    );
    assert_eq!(live["standing"], "too_few_samples", "{analysis:#}");
    // `conveyor status` shows where the running analysis stands.
    let output = command()
        .args([
            "status",
            "prod",
            "--project",
            "shop",
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
        text.contains("analysis now:") && text.contains("too_few_samples error_rate: canary 0 of 0 requests"),
        "{text}"
    );
    let stopped = shop
        .server
        .post(&format!("/api/v1/deployments/{id}/abort"), json!({}))
        .await;
    assert!(stopped.is_object());
}
