//! Instances that refuse connections, and versions left without any: their traffic goes to the
//! other versions.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use conveyor_router::Sticky;

use crate::harness::{
    Running, assert_binomial, backend, backend_at, client, config, dead_addr, eventually, get, read, start,
    upstream,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_fails_over_to_another_instance_of_the_same_version() {
    let (live, green) = (upstream("blue").await, upstream("green").await);
    let dead = dead_addr().await;
    let blue = backend_at("blue", 10_000, vec![dead, live.addr]);
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
async fn a_request_with_a_body_fails_over_too() {
    let live = upstream("blue").await;
    let dead = dead_addr().await;
    let blue = backend_at("blue", 10_000, vec![dead, live.addr]);
    let router = start(config(vec![blue], None)).await;
    let client = client();
    let post = || {
        Request::post(format!("http://{}/echo", router.addr))
            .body(Full::new(Bytes::from_static(b"payload")))
            .expect("request")
    };
    // A refused connection sent nothing, so even a request with a body goes on whole to the
    // next instance.
    for _ in 0..20 {
        let answer = read(client.request(post()).await.expect("response"))
            .await
            .expect("body");
        assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "payload"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_down_is_a_502_counted_as_5xx() {
    let dead = [dead_addr().await, dead_addr().await];
    let blue = backend_at("blue", 10_000, dead.to_vec());
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

/// Sends `n` requests (every third a POST with a body) and returns the versions that answered.
async fn versions_answering(router: &Running, n: usize, headers: &[(&str, &str)]) -> Vec<String> {
    let client = client();
    let mut versions = Vec::new();
    for i in 0..n {
        let answer = if i % 3 == 2 {
            let mut post = Request::post(format!("http://{}/echo", router.addr));
            for (name, value) in headers {
                post = post.header(*name, *value);
            }
            let post = post
                .body(Full::new(Bytes::from_static(b"payload")))
                .expect("request");
            let answer = read(client.request(post).await.expect("response"))
                .await
                .expect("body");
            assert_eq!(answer.body, "payload");
            answer
        } else {
            get(&client, router.addr, "/", headers).await
        };
        assert_eq!(answer.status, 200, "request {i} answered {}", answer.body);
        versions.push(answer.version().to_owned());
    }
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_whose_instances_left_the_config_sends_its_share_to_the_other() {
    let green = upstream("green").await;
    let blue = backend_at("blue", 5000, vec![]);
    let router = start(config(vec![blue, backend("green", 5000, &[&green])], None)).await;
    let versions = versions_answering(&router, 60, &[]).await;
    assert!(versions.iter().all(|v| v == "green"), "{versions:?}");
    // Counted for the version that answered; the empty one served nothing.
    let metrics = router.router.metrics();
    let counts: Vec<_> = metrics
        .iter()
        .map(|m| {
            (
                m.version.as_str(),
                m.requests,
                m.errors_5xx,
                m.latency_sketch.count(),
            )
        })
        .collect();
    assert_eq!(counts, [("blue", 0, 0, 0), ("green", 60, 0, 60)]);

    // A tester pinning the empty version hears that it has no instance.
    let pinned = get(&client(), router.addr, "/", &[("x-conveyor-version", "blue")]).await;
    assert_eq!((pinned.status.as_u16(), pinned.version()), (503, "blue"));
    assert_eq!(router.router.metrics()[0].pinned, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_whose_instances_all_refuse_sends_its_share_to_the_others() {
    let (green, red) = (upstream("green").await, upstream("red").await);
    let blue = backend_at("blue", 6000, vec![dead_addr().await, dead_addr().await]);
    let router = start(config(
        vec![
            blue,
            backend("green", 2000, &[&green]),
            backend("red", 2000, &[&red]),
        ],
        None,
    ))
    .await;
    // No 502 at all, not even for the requests that found out first; blue's share is split
    // between green and red by their weights (both get some of 300 with certainty).
    let versions = versions_answering(&router, 300, &[]).await;
    let green_count = versions.iter().filter(|v| *v == "green").count() as u64;
    assert!(
        versions.iter().all(|v| v == "green" || v == "red"),
        "{versions:?}"
    );
    assert_binomial(green_count, 300, 0.5, "green's share of all the traffic");
    let metrics = router.router.metrics();
    assert_eq!(
        (metrics[0].requests, metrics[0].errors_5xx),
        (0, 0),
        "blue answered nothing"
    );
    assert_eq!(metrics[1].requests + metrics[2].requests, 300);

    // Pinned to it, a request finds no instance: 502, as before.
    let pinned = get(&client(), router.addr, "/", &[("x-conveyor-version", "blue")]).await;
    assert_eq!((pinned.status.as_u16(), pinned.version()), (502, "blue"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_user_of_a_version_without_instances_moves_to_one_that_has_some() {
    let green = upstream("green").await;
    let blue = backend_at("blue", 9000, vec![dead_addr().await]);
    let sticky = Some(Sticky::Cookie { name: "cv".into() });
    let router = start(config(vec![blue, backend("green", 1000, &[&green])], sticky)).await;
    let client = client();
    let first = get(&client, router.addr, "/", &[("cookie", "cv=blue")]).await;
    assert_eq!((first.status.as_u16(), first.body.as_str()), (200, "green"));
    assert_eq!(
        first.header("set-cookie"),
        "cv=green; Path=/; HttpOnly; SameSite=Lax"
    );
    // Now the user holds green's cookie and stays there.
    for _ in 0..10 {
        let next = get(&client, router.addr, "/", &[("cookie", "cv=green")]).await;
        assert_eq!((next.body.as_str(), next.header("set-cookie")), ("green", ""));
    }
    // Users still sending blue's cookie are never stranded either.
    let versions = versions_answering(&router, 30, &[("cookie", "cv=blue")]).await;
    assert!(versions.iter().all(|v| v == "green"), "{versions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_back_in_the_config_take_their_share_again() {
    let (blue, green) = (upstream("blue").await, upstream("green").await);
    let empty_blue = backend_at("blue", 5000, vec![]);
    let router = start(config(vec![empty_blue, backend("green", 5000, &[&green])], None)).await;
    assert!(
        versions_answering(&router, 20, &[])
            .await
            .iter()
            .all(|v| v == "green")
    );
    let mut back = router.router.config().as_ref().clone();
    back.backends[0].upstreams.push(blue.addr);
    router.router.update(back).expect("valid");
    let versions = versions_answering(&router, 200, &[]).await;
    let blue_count = versions.iter().filter(|v| *v == "blue").count() as u64;
    assert_binomial(blue_count, 200, 0.5, "blue at 50% again");
}
