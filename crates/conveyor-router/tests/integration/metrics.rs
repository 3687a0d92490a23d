//! Per-version counters, through the snapshot and the Prometheus text.

use crate::harness::{backend, client, config, get, start, upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_5xx_are_counted_per_version_and_pinned_ones_apart() {
    let (blue, green) = (upstream("blue").await, upstream("green").await);
    let router = start(config(
        vec![backend("blue", 10_000, &[&blue]), backend("green", 0, &[&green])],
        None,
    ))
    .await;
    let client = client();
    for _ in 0..7 {
        assert_eq!(get(&client, router.addr, "/", &[]).await.status, 200);
    }
    for status in ["500", "503", "404"] {
        let answer = get(&client, router.addr, &format!("/status/{status}"), &[]).await;
        assert_eq!(answer.status.as_str(), status);
        assert_eq!(answer.body, "blue");
    }
    // A tester's pinned requests reach green, failing or not, but are no evidence about it.
    for status in ["200", "500", "500", "500"] {
        let pinned = [("x-conveyor-version", "green")];
        let answer = get(&client, router.addr, &format!("/status/{status}"), &pinned).await;
        assert_eq!((answer.status.as_str(), answer.body.as_str()), (status, "green"));
    }
    let metrics = router.router.metrics();
    let counts: Vec<_> = metrics
        .iter()
        .map(|m| (m.version.as_str(), m.requests, m.errors_5xx, m.pinned))
        .collect();
    assert_eq!(counts, [("blue", 10, 2, 0), ("green", 0, 0, 4)]);
    assert_eq!(
        metrics[1].latency.count, 0,
        "pinned requests are not in the latency either"
    );
    let blue_latency = &metrics[0].latency;
    assert_eq!(blue_latency.count, 10);
    assert_eq!(
        blue_latency
            .buckets
            .last()
            .map(|&(bound, count)| (bound.is_infinite(), count)),
        Some((true, 10))
    );
    assert!(blue_latency.sum_seconds > 0.0);

    let text = router.router.metrics_text();
    for line in [
        "conveyor_router_requests_total{version=\"blue\"} 10",
        "conveyor_router_requests_total{version=\"green\"} 0",
        "conveyor_router_responses_5xx_total{version=\"blue\"} 2",
        "conveyor_router_responses_5xx_total{version=\"green\"} 0",
        "conveyor_router_pinned_requests_total{version=\"green\"} 4",
        "conveyor_router_request_duration_seconds_count{version=\"blue\"} 10",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }

    // Counters survive a config that drops the version.
    let mut only_blue = router.router.config().as_ref().clone();
    only_blue.backends.truncate(1);
    router.router.update(only_blue).expect("valid");
    assert_eq!(router.router.metrics()[1].pinned, 4);
}
