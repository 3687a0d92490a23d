//! Instances that refuse connections.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use conveyor_router::Backend;

use crate::harness::{backend, client, config, dead_addr, eventually, get, read, start, upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_fails_over_to_another_instance_of_the_same_version() {
    let (live, green) = (upstream("blue").await, upstream("green").await);
    let dead = dead_addr().await;
    let blue = Backend {
        version: "blue".into(),
        weight: 10_000,
        upstreams: vec![dead, live.addr],
    };
    let router = start(config(vec![blue, backend("green", 0, &[&green])], None)).await;
    let client = client();
    for _ in 0..50 {
        let answer = get(&client, router.addr, "/", &[]).await;
        assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "blue"));
    }
    let metrics = router.router.metrics();
    assert_eq!(
        (
            metrics[0].version.as_str(),
            metrics[0].requests,
            metrics[0].errors_5xx
        ),
        ("blue", 50, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_body_fails_over_once_the_instance_is_ejected() {
    let live = upstream("blue").await;
    let dead = dead_addr().await;
    let blue = Backend {
        version: "blue".into(),
        weight: 10_000,
        upstreams: vec![dead, live.addr],
    };
    let router = start(config(vec![blue], None)).await;
    let client = client();
    let post = || {
        Request::post(format!("http://{}/echo", router.addr))
            .body(Full::new(Bytes::from_static(b"payload")))
            .expect("request")
    };
    // The first attempt on the dead instance may be a 502 (the body cannot be replayed); after
    // that the instance is skipped and every request reaches the live one.
    let mut answers = Vec::new();
    for _ in 0..20 {
        answers.push(
            read(client.request(post()).await.expect("response"))
                .await
                .expect("body"),
        );
    }
    let bad: Vec<_> = answers.iter().filter(|a| a.status == 502).collect();
    assert!(bad.len() <= 1, "{} requests failed", bad.len());
    assert!(
        answers
            .iter()
            .filter(|a| a.status == 200)
            .all(|a| a.body == "payload")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_down_is_a_502_counted_as_5xx() {
    let dead = [dead_addr().await, dead_addr().await];
    let blue = Backend {
        version: "blue".into(),
        weight: 10_000,
        upstreams: dead.to_vec(),
    };
    let router = start(config(vec![blue], None)).await;
    let client = client();
    for _ in 0..3 {
        let answer = get(&client, router.addr, "/", &[]).await;
        assert_eq!(answer.status, 502);
        assert!(answer.body.starts_with("bad gateway"), "{}", answer.body);
        assert_eq!(answer.version(), "blue");
    }
    let metrics = router.router.metrics();
    assert_eq!((metrics[0].requests, metrics[0].errors_5xx), (3, 3));

    // Adding a live instance takes effect with the next request.
    let live = upstream("blue").await;
    let mut config = router.router.config().as_ref().clone();
    config.backends[0].upstreams.push(live.addr);
    router.router.update(config).expect("valid");
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(&client, router.addr, "/", &[]).await.status == 200
        })
        .await
    );
}
