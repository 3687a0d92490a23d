//! Weighted split, pin header, stickiness, and what the upstream and the client see.

use conveyor_router::Sticky;

use crate::harness::{assert_binomial, backend, client, config, get, start, upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_follows_weights() {
    let (blue, green, dark) = (
        upstream("blue").await,
        upstream("green").await,
        upstream("dark").await,
    );
    let router = start(config(
        vec![
            backend("blue", 8000, &[&blue]),
            backend("green", 2000, &[&green]),
            backend("dark", 0, &[&dark]),
        ],
        None,
    ))
    .await;
    let client = client();
    let n = 2000;
    let (mut green_count, mut blue_count) = (0u64, 0u64);
    for _ in 0..n {
        let answer = get(&client, router.addr, "/", &[]).await;
        assert_eq!(answer.status, 200);
        // The label names the upstream that actually answered.
        assert_eq!(answer.version(), answer.body);
        match answer.body.as_str() {
            "green" => green_count += 1,
            "blue" => blue_count += 1,
            other => panic!("version {other:?} has weight 0 or is unknown"),
        }
    }
    assert_eq!(green_count + blue_count, n);
    assert_binomial(green_count, n, 0.2, "green at 20%");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_header_reaches_the_named_version_even_at_weight_zero() {
    let (blue, green) = (upstream("blue").await, upstream("green").await);
    let router = start(config(
        vec![backend("blue", 10_000, &[&blue]), backend("green", 0, &[&green])],
        None,
    ))
    .await;
    let client = client();
    for _ in 0..20 {
        assert_eq!(
            get(&client, router.addr, "/", &[("x-conveyor-version", "green")])
                .await
                .body,
            "green"
        );
        assert_eq!(get(&client, router.addr, "/", &[]).await.body, "blue");
        // An unknown version falls back to the weights.
        assert_eq!(
            get(&client, router.addr, "/", &[("x-conveyor-version", "r99")])
                .await
                .body,
            "blue"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_stickiness_assigns_once_and_holds() {
    let (blue, green) = (upstream("blue").await, upstream("green").await);
    let sticky = Some(Sticky::Cookie {
        name: conveyor_router::DEFAULT_COOKIE.into(),
    });
    let router = start(config(
        vec![backend("blue", 5000, &[&blue]), backend("green", 5000, &[&green])],
        sticky,
    ))
    .await;
    let client = client();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        let first = get(&client, router.addr, "/", &[]).await;
        let cookie = first.header("set-cookie").to_owned();
        assert_eq!(
            cookie,
            format!("conveyor_version={}; Path=/; HttpOnly; SameSite=Lax", first.body)
        );
        seen.insert(first.body.clone());
        let pair = cookie.split(';').next().expect("name=value").to_owned();
        for _ in 0..5 {
            let next = get(
                &client,
                router.addr,
                "/",
                &[("cookie", &format!("theme=dark; {pair}"))],
            )
            .await;
            assert_eq!(next.body, first.body, "a user with a cookie stays on one version");
            assert_eq!(
                next.header("set-cookie"),
                "",
                "an honoured cookie is not set again"
            );
        }
    }
    // 40 users on a 50/50 split: both versions were assigned (fails with probability 2^-39).
    assert_eq!(seen.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_for_a_drained_version_is_replaced() {
    let (blue, green) = (upstream("blue").await, upstream("green").await);
    let sticky = Some(Sticky::Cookie { name: "cv".into() });
    let router = start(config(
        vec![backend("blue", 0, &[&blue]), backend("green", 10_000, &[&green])],
        sticky,
    ))
    .await;
    let answer = get(&client(), router.addr, "/", &[("cookie", "cv=blue")]).await;
    assert_eq!(answer.body, "green");
    assert_eq!(
        answer.header("set-cookie"),
        "cv=green; Path=/; HttpOnly; SameSite=Lax"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_stickiness_is_stable_per_user() {
    let (blue, green) = (upstream("blue").await, upstream("green").await);
    let sticky = Some(Sticky::Header {
        name: "x-user-id".into(),
    });
    let router = start(config(
        vec![backend("blue", 5000, &[&blue]), backend("green", 5000, &[&green])],
        sticky,
    ))
    .await;
    let client = client();
    let mut versions = std::collections::HashSet::new();
    for user in 0..50 {
        let id = format!("user-{user}");
        let first = get(&client, router.addr, "/", &[("x-user-id", &id)]).await;
        assert_eq!(first.header("set-cookie"), "");
        for _ in 0..4 {
            assert_eq!(
                get(&client, router.addr, "/", &[("x-user-id", &id)]).await.body,
                first.body,
                "{id}"
            );
        }
        versions.insert(first.body);
    }
    assert_eq!(versions.len(), 2, "50 users on a 50/50 split reach both versions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_what_the_router_saw_replacing_spoofed_headers_and_strips_hop_by_hop_ones() {
    let blue = upstream("blue").await;
    let router = start(config(vec![backend("blue", 10_000, &[&blue])], None)).await;
    let client = client();
    let answer = get(&client, router.addr, "/", &[("connection", "keep-alive")]).await;
    assert_eq!(answer.header("x-seen-forwarded-for"), "127.0.0.1");
    assert_eq!(answer.header("x-seen-host"), router.addr.to_string());
    // The upstream's own `keep-alive` header describes its connection to the router, not ours.
    assert_eq!(answer.header("keep-alive"), "");
    assert_eq!(answer.version(), "blue");
    assert_eq!(answer.header("x-seen-forwarded-proto"), "http");
    assert_eq!(answer.header("x-seen-forwarded-host"), router.addr.to_string());
    // A client cannot make the upstream believe it is someone else: what it claims is replaced.
    let spoofed = [
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "admin.example"),
    ];
    let replaced = get(&client, router.addr, "/", &spoofed).await;
    assert_eq!(replaced.header("x-seen-forwarded-for"), "127.0.0.1");
    assert_eq!(replaced.header("x-seen-forwarded-proto"), "http");
    assert_eq!(replaced.header("x-seen-forwarded-host"), router.addr.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_forwarded_headers_are_extended_and_kept() {
    let blue = upstream("blue").await;
    let mut routes = config(vec![backend("blue", 10_000, &[&blue])], None);
    // The test client connects from 127.0.0.1: it plays the proxy in front of the router.
    routes.trusted_proxies = vec!["127.0.0.0/8".parse().expect("a block")];
    let router = start(routes).await;
    let client = client();
    let from_proxy = [
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "shop.example"),
    ];
    let answer = get(&client, router.addr, "/", &from_proxy).await;
    assert_eq!(answer.header("x-seen-forwarded-for"), "203.0.113.9, 127.0.0.1");
    assert_eq!(answer.header("x-seen-forwarded-proto"), "https");
    assert_eq!(answer.header("x-seen-forwarded-host"), "shop.example");

    // Trust is the config's: once the proxy is no longer listed, its claims are replaced.
    let mut untrusting = router.router.config().as_ref().clone();
    untrusting.trusted_proxies = vec!["10.0.0.0/8".parse().expect("a block")];
    router.router.update(untrusting).expect("valid");
    let answer = get(&client, router.addr, "/", &from_proxy).await;
    assert_eq!(answer.header("x-seen-forwarded-for"), "127.0.0.1");
    assert_eq!(answer.header("x-seen-forwarded-proto"), "http");
}
