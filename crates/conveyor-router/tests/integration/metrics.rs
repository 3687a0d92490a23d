//! Per-version counters and latencies, through the snapshot and the Prometheus text.

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
        (metrics[1].latency.count, metrics[1].latency_sketch.count()),
        (0, 0),
        "pinned requests are not in the latency either"
    );
    assert_eq!(metrics[0].latency_sketch.count(), 10);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latency_sketch_holds_each_requests_time_to_the_response_head() {
    let blue = upstream("blue").await;
    let router = start(config(vec![backend("blue", 10_000, &[&blue])], None)).await;
    let client = client();
    // 10 requests the upstream answers after 100 ms and 10 after 300 ms, all at once.
    let requests = (0..20).map(|i| {
        let (client, addr) = (client.clone(), router.addr);
        async move {
            let delay = if i % 2 == 0 { 100 } else { 300 };
            get(&client, addr, &format!("/sleep/{delay}"), &[]).await.status
        }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    let metrics = router.router.metrics();
    let sketch = &metrics[0].latency_sketch;
    assert_eq!((sketch.count(), metrics[0].requests), (20, 20));
    // The router's time includes the upstream's sleep, so it is never under it (the sketch is
    // within 1%), and over it by no more than scheduling on a busy machine (generous slack).
    let slack = 0.090;
    let within = |q: f64, delay: f64| {
        let seconds = sketch.quantile(q).expect("requests were recorded");
        assert!(
            seconds >= delay * 0.99 && seconds <= delay * 1.01 + slack,
            "q {q}: {seconds} s for a delay of {delay} s"
        );
    };
    // Ranks 0..=9 are the 100 ms requests, 10..=19 the 300 ms ones.
    for (q, delay) in [(0.0, 0.1), (0.45, 0.1), (0.55, 0.3), (1.0, 0.3)] {
        within(q, delay);
    }
    // Exactly the slow half lies above a boundary between the two.
    let boundary = conveyor_sketch::boundary_at_or_above(0.2);
    assert_eq!(sketch.count_above(boundary), 10);
}
