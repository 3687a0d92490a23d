//! Runs the router alone for benchmarks (`bench/router.sh`): one version on the given instances,
//! served by THREADS threads, each a single-threaded runtime accepting on its own `SO_REUSEPORT`
//! listener (the kernel spreads connections; like nginx's workers). All threads share one
//! `Router`, so one config and one set of metrics.
//!
//!     router_bench LISTEN THREADS UPSTREAM[,UPSTREAM...]
//!     router_bench 127.0.0.1:8090 1 127.0.0.1:8081
//!
//! Stops on SIGTERM or Ctrl-C.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::net::SocketAddr;

use anyhow::Context as _;
use conveyor_router::{RouteConfig, Router};
use tokio::sync::watch;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, threads, upstreams] = args.as_slice() else {
        anyhow::bail!("usage: router_bench LISTEN THREADS UPSTREAM[,UPSTREAM...]");
    };
    let listen: SocketAddr = listen.parse().context("LISTEN")?;
    let threads: usize = threads.parse().context("THREADS")?;
    let upstreams = upstreams
        .split(',')
        .map(|u| u.parse::<SocketAddr>().with_context(|| format!("UPSTREAM {u}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let router = Router::new(RouteConfig::single("bench", upstreams))?;
    let (stop, stopped) = watch::channel(false);

    let mut workers = Vec::new();
    for _ in 0..threads {
        let (router, mut stopped) = (router.clone(), stopped.clone());
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(listen)?;
        workers.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = socket.listen(4096)?;
                router
                    .serve(listener, async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    })
                    .await;
                anyhow::Ok(())
            })
        }));
    }
    drop(stopped);

    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    signals.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    let _ = stop.send(true);
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("a worker thread panicked"))??;
    }
    Ok(())
}
