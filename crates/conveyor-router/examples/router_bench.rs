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
    // The same serving model the `conveyor` binary uses for every environment.
    let addr = router.serve_on_threads(listen, threads)?;
    eprintln!("router_bench listening on {addr} with {threads} thread(s)");

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
    })
}
