//! Swapping configs while traffic flows.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::harness::{backend, client, config, get, start, try_get, upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_under_load_fail_no_request_and_the_last_one_wins() {
    let (blue, green) = (upstream("blue").await, upstream("green").await);
    let all_blue = config(
        vec![backend("blue", 10_000, &[&blue]), backend("green", 0, &[&green])],
        None,
    );
    let all_green = config(
        vec![backend("blue", 0, &[&blue]), backend("green", 10_000, &[&green])],
        None,
    );
    let half = config(
        vec![backend("blue", 5000, &[&blue]), backend("green", 5000, &[&green])],
        None,
    );
    let router = start(all_blue.clone()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), router.addr);
        loops.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::Relaxed) {
                match try_get(&client, addr, "/", &[]).await {
                    Ok(answer)
                        if answer.status == 200 && (answer.body == "blue" || answer.body == "green") =>
                    {
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // Many swaps, each after some traffic went through the previous config.
    for i in 0..300u64 {
        let next = [&all_blue, &half, &all_green][(i % 3) as usize].clone();
        router.router.update(next).expect("valid config");
        let before = ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
        while ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < before + 2 {
            tokio::task::yield_now().await;
        }
    }
    router.router.update(all_green.clone()).expect("valid config");
    stop.store(true, Ordering::Relaxed);
    for handle in loops {
        handle.await.expect("client loop");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during updates"
    );
    assert!(ok.load(Ordering::Relaxed) >= 600);
    assert_eq!(*router.router.config(), all_green);

    let client = client();
    for _ in 0..200 {
        assert_eq!(get(&client, router.addr, "/", &[]).await.body, "green");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_update_keeps_the_current_config() {
    let blue = upstream("blue").await;
    let good = config(vec![backend("blue", 10_000, &[&blue])], None);
    let router = start(good.clone()).await;
    let bad = config(vec![backend("blue", 9_000, &[&blue])], None);
    assert_eq!(
        router.router.update(bad),
        Err(conveyor_router::ConfigError::WeightSum { sum: 9_000 })
    );
    assert_eq!(*router.router.config(), good);
    assert_eq!(get(&client(), router.addr, "/", &[]).await.body, "blue");
}
