//! Upstream connections: HTTP/1.1 keep-alive connections to instances, pooled per thread. Each
//! serving thread runs its own runtime (`Router::serve_on_threads`), so a thread-local pool needs
//! no lock and no cross-thread hand-off on the request path — leaner than a shared client pool.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use crate::body::ProxyBody;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle connections older than this are closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per instance and thread.
const MAX_IDLE: usize = 256;

type Idle = HashMap<SocketAddr, VecDeque<(SendRequest<ProxyBody>, Instant)>>;

thread_local! {
    static IDLE: RefCell<Idle> = RefCell::new(HashMap::new());
}

/// Why a request got no response.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made: the instance is down. Nothing was sent, so the request comes
    /// back whole, body and all, for another instance (boxed: only this rare path pays for it).
    Connect {
        error: std::io::Error,
        request: Box<Request<ProxyBody>>,
    },
    /// The request went out and failed.
    Request(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect { error, .. } => write!(f, "connect: {}", error_chain(error)),
            SendError::Request(e) => write!(f, "request: {}", error_chain(e)),
        }
    }
}

/// The error and its causes on one line (hyper's top-level messages are terse).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sends `request` to `addr` on an idle connection, or on a new one.
pub(crate) async fn send(
    addr: SocketAddr,
    mut request: Request<ProxyBody>,
) -> Result<Response<Incoming>, SendError> {
    while let Some(mut sender) = checkout(addr) {
        match sender.try_send_request(request).await {
            Ok(response) => {
                checkin(addr, sender);
                return Ok(response);
            }
            Err(mut error) => match error.take_message() {
                // The connection closed before the request went out (the upstream dropped an
                // idle keep-alive connection): nothing was sent, try the next one.
                Some(unsent) => request = unsent,
                None => return Err(SendError::Request(error.into_error())),
            },
        }
    }
    let mut sender = match connect(addr).await {
        Ok(sender) => sender,
        Err(error) => {
            return Err(SendError::Connect {
                error,
                request: Box::new(request),
            });
        }
    };
    match sender.try_send_request(request).await {
        Ok(response) => {
            checkin(addr, sender);
            Ok(response)
        }
        Err(error) => Err(SendError::Request(error.into_error())),
    }
}

/// An idle connection to `addr` that can take a request now. Oldest first: the connections
/// checked in last are the likeliest to still be streaming their response.
fn checkout(addr: SocketAddr) -> Option<SendRequest<ProxyBody>> {
    IDLE.with_borrow_mut(|idle| {
        let queue = idle.get_mut(&addr)?;
        let now = Instant::now();
        for _ in 0..queue.len() {
            let (sender, since) = queue.pop_front()?;
            if sender.is_closed() || now.duration_since(since) >= IDLE_TIMEOUT {
                continue;
            }
            if sender.is_ready() {
                return Some(sender);
            }
            // Still busy with a response body: keep it for a later request.
            queue.push_back((sender, since));
        }
        None
    })
}

/// Returns a connection for reuse; it takes the next request once its response is done.
fn checkin(addr: SocketAddr, sender: SendRequest<ProxyBody>) {
    IDLE.with_borrow_mut(|idle| {
        let queue = idle.entry(addr).or_default();
        if queue.len() < MAX_IDLE {
            queue.push_back((sender, Instant::now()));
        }
    });
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<ProxyBody>, std::io::Error> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    // An HTTP/1.1 handshake does no I/O; should it fail, nothing was sent either.
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%addr, %error, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}
