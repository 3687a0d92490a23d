//! Starts upstreams and routers on 127.0.0.1:0 and hands back clients for them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use conveyor_router::{Backend, RouteConfig, Router, Sticky};

/// A small HTTP/1.1 server that answers every request with its version name. It also reports what
/// it received: `x-seen-forwarded-for`, `x-seen-forwarded-proto`, `x-seen-forwarded-host`,
/// `x-seen-host`, `x-seen-connection` response headers. `/status/NNN` answers with that status;
/// `/sleep/MS` answers after that many milliseconds; `POST /echo` echoes the body.
pub struct Upstream {
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

pub async fn upstream(version: &'static str) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
    let addr = listener.local_addr().expect("upstream address");
    let (stop, mut stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
                _ = &mut stopped => return,
            };
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(version, req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Upstream { addr, _stop: stop }
}

async fn answer(
    version: &'static str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let seen = |name: &str| {
        req.headers()
            .get(name)
            .cloned()
            .unwrap_or(http::HeaderValue::from_static("-"))
    };
    let mut response = Response::builder()
        .header("x-upstream-version", version)
        .header("x-seen-forwarded-for", seen("x-forwarded-for"))
        .header("x-seen-forwarded-proto", seen("x-forwarded-proto"))
        .header("x-seen-forwarded-host", seen("x-forwarded-host"))
        .header("x-seen-host", seen("host"))
        .header("x-seen-connection", seen("connection"))
        .header("connection", "keep-alive")
        .header("keep-alive", "timeout=5");
    let path = req.uri().path().to_owned();
    let body = if let Some(code) = path.strip_prefix("/status/") {
        response = response.status(code.parse::<u16>().expect("a status code in the path"));
        Bytes::from_static(version.as_bytes())
    } else if let Some(ms) = path.strip_prefix("/sleep/") {
        let ms = ms.parse().expect("milliseconds in the path");
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Bytes::from_static(version.as_bytes())
    } else if path == "/echo" {
        req.into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default()
    } else {
        Bytes::from_static(version.as_bytes())
    };
    Ok(response.body(Full::new(body)).expect("a valid response"))
}

/// An instance that accepts connections, reads requests and never answers. `closed` hears once for
/// each connection the other side closed.
pub struct Hung {
    pub addr: SocketAddr,
    pub closed: tokio::sync::mpsc::UnboundedReceiver<()>,
}

pub async fn hung_upstream() -> Hung {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind hung upstream");
    let addr = listener.local_addr().expect("hung upstream address");
    let (tell, closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tell = tell.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                // Read (and ignore) whatever comes until the peer closes the connection.
                while matches!(stream.read(&mut buffer).await, Ok(1..)) {}
                let _ = tell.send(());
            });
        }
    });
    Hung { addr, closed }
}

/// A binding that nothing listens on (connections are refused).
pub async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("address")
}

pub fn backend(version: &str, weight: u32, upstreams: &[&Upstream]) -> Backend {
    backend_at(version, weight, upstreams.iter().map(|u| u.addr).collect())
}

/// A version on instances given by address (dead ones, hung ones, or none at all).
pub fn backend_at(version: &str, weight: u32, upstreams: Vec<SocketAddr>) -> Backend {
    Backend {
        version: version.into(),
        weight,
        upstreams,
    }
}

pub fn config(backends: Vec<Backend>, sticky: Option<Sticky>) -> RouteConfig {
    RouteConfig {
        backends,
        sticky,
        // The defaults: pin header, response timeout, no trusted proxies.
        ..RouteConfig::single("defaults", vec![])
    }
}

/// A router serving on a free loopback port until dropped.
pub struct Running {
    pub router: Router,
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

pub async fn start(config: RouteConfig) -> Running {
    let router = Router::new(config).expect("a valid config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind router");
    let addr = listener.local_addr().expect("router address");
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = router.clone();
    tokio::spawn(async move {
        serving
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    Running {
        router,
        addr,
        _stop: stop,
    }
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn version(&self) -> &str {
        self.headers
            .get("x-conveyor-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

pub async fn get(client: &TestClient, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    try_get(client, addr, path, headers)
        .await
        .expect("the request completes")
}

pub async fn try_get(
    client: &TestClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Answer> {
    let mut request = Request::get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client.request(request.body(Full::default())?).await?;
    read(response).await
}

pub async fn read(response: Response<Incoming>) -> anyhow::Result<Answer> {
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec())?,
    })
}

/// Polls `check` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that `count` out of `n` trials is within 5 standard deviations of a binomial with
/// probability `p`: such a test fails by chance less than once in a million runs.
pub fn assert_binomial(count: u64, n: u64, p: f64, what: &str) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    let deviation = (count as f64 - mean).abs();
    assert!(
        deviation <= 5.0 * sd,
        "{what}: {count} of {n}, expected {mean:.0} ± {:.0} (5 sd)",
        5.0 * sd
    );
}
