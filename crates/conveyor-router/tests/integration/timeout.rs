//! The response timeout: an upstream that takes the request and never answers.

use std::time::Duration;

use crate::harness::{backend, backend_at, client, config, get, hung_upstream, start, upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_gets_a_504_counted_as_5xx_and_is_cut_off() {
    let mut hung = hung_upstream().await;
    let blue = backend_at("blue", 10_000, vec![hung.addr]);
    let mut routes = config(vec![blue], None);
    routes.response_timeout = Duration::from_millis(300);
    let router = start(routes).await;
    let client = client();
    for _ in 0..2 {
        let answer = get(&client, router.addr, "/", &[]).await;
        assert_eq!(answer.status, 504);
        assert!(answer.body.starts_with("gateway timeout"), "{}", answer.body);
        assert_eq!(answer.version(), "blue");
        // The router closed its connection to the instance: it holds nothing for the hung request.
        let closed = tokio::time::timeout(Duration::from_secs(10), hung.closed.recv()).await;
        assert_eq!(
            closed,
            Ok(Some(())),
            "the hung upstream connection was not closed"
        );
    }
    let metrics = router.router.metrics();
    let blue = &metrics[0];
    assert_eq!(
        (blue.version.as_str(), blue.requests, blue.errors_5xx),
        ("blue", 2, 2)
    );
    assert_eq!(router.router.in_flight("blue"), 0);
    let text = router.router.metrics_text();
    let line = "conveyor_router_responses_5xx_total{version=\"blue\"} 2";
    assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_answering_within_the_timeout_is_not_cut_off() {
    let blue = upstream("blue").await;
    let mut routes = config(vec![backend("blue", 10_000, &[&blue])], None);
    routes.response_timeout = Duration::from_secs(20);
    let router = start(routes).await;
    let answer = get(&client(), router.addr, "/sleep/200", &[]).await;
    assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "blue"));
}
