//! `conveyor-router` is Conveyor's data plane: a reverse proxy in front of an environment's
//! instances that splits traffic between versions by weight, keeps users on one version (cookie or
//! header hash), honours a tester's pin header, sends a version's share to the others while it has
//! no instance, answers 504 for an upstream that does not answer in time, and counts requests,
//! 5xx and latency per version.
//! It must never block on the control plane: a config is swapped in whole (`Router::update`) and
//! the last one keeps serving; it never reads the environment and writes only its own config file.

mod body;
pub mod choose;
mod config;
mod file;
mod forwarded;
mod hop_by_hop;
mod metrics;
mod proxy;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

pub use config::{
    Backend, ConfigError, DEFAULT_COOKIE, DEFAULT_PIN_HEADER, DEFAULT_RESPONSE_TIMEOUT, MAX_BACKENDS,
    MAX_TRUSTED_PROXIES, MAX_UPSTREAMS, MAX_VERSION_LEN, RouteConfig, Sticky, TOTAL_WEIGHT,
};
pub use file::Error;
pub use forwarded::{Cidr, CidrError};
pub use metrics::{ExtraLabels, LATENCY_BUCKETS, LatencyHistogram, VersionMetrics, encode_labeled};
pub use proxy::VERSION_HEADER;

use proxy::{Conn, Routes, Shared};

/// How long `serve` waits for open connections to finish after the shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The proxy: a swappable route config, a pooled upstream client and per-version metrics.
/// Cloning is cheap and clones share everything.
#[derive(Debug, Clone)]
pub struct Router {
    shared: Arc<Shared>,
}

// === impl Router ===

impl Router {
    /// A router serving `config`, which must pass `RouteConfig::validate`.
    pub fn new(config: RouteConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let metrics = metrics::MetricsRegistry::default();
        let routes = Routes::compile(Arc::new(config), &metrics);
        let shared = Shared {
            routes: ArcSwap::from_pointee(routes),
            metrics,
            epoch: Instant::now(),
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// Replaces the config atomically. Each request reads the config once, when it arrives, so a
    /// request in flight finishes on the version it was given; the next request sees the new one.
    /// A refused config leaves the current one in place.
    pub fn update(&self, config: RouteConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let routes = Routes::compile(Arc::new(config), &self.shared.metrics);
        tracing::info!(
            versions = ?routes.config.backends.iter().map(|b| (&b.version, b.weight)).collect::<Vec<_>>(),
            "route config updated"
        );
        self.shared.routes.store(Arc::new(routes));
        Ok(())
    }

    /// The config in force.
    pub fn config(&self) -> Arc<RouteConfig> {
        self.shared.routes.load().config.clone()
    }

    /// Counters and latency histograms of every version served since the router started (a
    /// version stays listed after it leaves the config, so counters never go backwards).
    pub fn metrics(&self) -> Vec<VersionMetrics> {
        self.shared.metrics.snapshot()
    }

    /// Requests sent to `version` that have no response head yet.
    pub fn in_flight(&self, version: &str) -> u64 {
        self.shared.metrics.in_flight(version)
    }

    /// The same metrics in the Prometheus text exposition format (OpenMetrics flavour):
    /// `conveyor_router_requests_total{version}`, `conveyor_router_responses_5xx_total{version}`,
    /// `conveyor_router_request_duration_seconds{version}`.
    pub fn metrics_text(&self) -> String {
        metrics::encode_text(self.metrics())
    }

    /// Proxies connections accepted on `listener` (HTTP/1.1 with upgrades, and HTTP/2 with prior
    /// knowledge) until `shutdown` completes; then stops accepting and lets open connections finish
    /// their requests, for at most `DRAIN_TIMEOUT`.
    ///
    /// `serve` may run several times at once on clones of one router (they share config and
    /// metrics). The fastest shape measured is one current-thread runtime per core, each serving its
    /// own `SO_REUSEPORT` listener (see `examples/router_bench.rs` and `docs/benchmarks.md`).
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new());
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let local = listener.local_addr().ok();
        tracing::info!(listen = ?local, "router serving");
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => self.spawn_connection(&builder, &graceful, stream, peer),
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        tracing::info!(listen = ?local, "router draining connections");
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(listen = ?local, "connections still open after the drain timeout; closing them");
        }
    }

    /// Serves on `listen` from `threads` threads, each a current-thread runtime accepting on its
    /// own `SO_REUSEPORT` socket (the kernel spreads connections, like nginx's workers): the
    /// fastest shape measured (`docs/benchmarks.md`). The threads serve for the life of the
    /// process — traffic never depends on whoever configured the router. Returns the bound
    /// address (useful when `listen` has port 0).
    pub fn serve_on_threads(&self, listen: SocketAddr, threads: usize) -> std::io::Result<SocketAddr> {
        let mut addr = listen;
        for index in 0..threads.max(1) {
            let socket = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.bind(addr)?;
            // The first socket fixes the port the others share.
            addr = socket.local_addr()?;
            let router = self.clone();
            std::thread::Builder::new()
                .name(format!("router-{}-{index}", addr.port()))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            tracing::error!(%error, "router thread cannot start its runtime");
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        match socket.listen(4096) {
                            Ok(listener) => router.serve(listener, std::future::pending::<()>()).await,
                            Err(error) => tracing::error!(%addr, %error, "router cannot listen"),
                        }
                    });
                })?;
        }
        Ok(addr)
    }

    fn spawn_connection(
        &self,
        builder: &auto::Builder<TokioExecutor>,
        graceful: &GracefulShutdown,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
    ) {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "could not disable Nagle's algorithm");
        }
        let conn = Arc::new(Conn::new(self.shared.clone(), peer));
        let service = service_fn(move |req| {
            let conn = conn.clone();
            async move { conn.handle(req).await }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "client connection ended with an error");
            }
        });
    }
}
