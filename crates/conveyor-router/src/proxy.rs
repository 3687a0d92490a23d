//! The request path: compiled routes, choosing a version and an instance, rewriting headers,
//! forwarding through the pooled client, failover on connect errors, and upgrades.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body::ProxyBody;
use crate::choose::{self, RequestKeys, StickyMode, Weighted};
use crate::config::{RouteConfig, Sticky};
use crate::hop_by_hop::strip_hop_by_hop;
use crate::metrics::{MetricsRegistry, VersionStats};

/// How long an instance that refused a connection is skipped by the round robin.
pub(crate) const EJECT_FOR: Duration = Duration::from_secs(1);

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// The response header naming the version that answered.
pub static VERSION_HEADER: HeaderName = HeaderName::from_static("x-conveyor-version");

// === Routes: a config compiled for the request path ===

/// An immutable, validated config in the shape the request path reads. Swapped whole.
#[derive(Debug)]
pub(crate) struct Routes {
    pub(crate) config: Arc<RouteConfig>,
    slots: Vec<Arc<Slot>>,
    mode: StickyMode,
    pin_header: HeaderName,
    sticky_header: Option<HeaderName>,
    cookie_name: Option<String>,
}

/// One version: its weight, instances, precomputed headers and counters.
#[derive(Debug)]
struct Slot {
    version: String,
    weight: u32,
    version_value: HeaderValue,
    set_cookie: Option<HeaderValue>,
    upstreams: Vec<Upstream>,
    next: AtomicUsize,
    stats: Arc<VersionStats>,
}

#[derive(Debug)]
struct Upstream {
    addr: SocketAddr,
    authority: Authority,
    /// Milliseconds since the router's epoch until which this instance is skipped.
    down_until: AtomicU64,
}

impl Weighted for Arc<Slot> {
    fn version(&self) -> &str {
        &self.version
    }
    fn weight(&self) -> u32 {
        self.weight
    }
}

impl Routes {
    /// Compiles a config that `RouteConfig::validate` accepted.
    pub(crate) fn compile(config: Arc<RouteConfig>, metrics: &MetricsRegistry) -> Self {
        let cookie_name = match &config.sticky {
            Some(Sticky::Cookie { name }) => Some(name.clone()),
            _ => None,
        };
        let slots = config
            .backends
            .iter()
            .map(|backend| {
                let set_cookie = cookie_name.as_ref().map(|name| {
                    HeaderValue::try_from(format!(
                        "{name}={}; Path=/; HttpOnly; SameSite=Lax",
                        backend.version
                    ))
                    .expect("validated cookie and version names are valid header values")
                });
                Arc::new(Slot {
                    version: backend.version.clone(),
                    weight: backend.weight,
                    version_value: HeaderValue::try_from(backend.version.as_str())
                        .expect("validated version names are valid header values"),
                    set_cookie,
                    upstreams: backend
                        .upstreams
                        .iter()
                        .map(|&addr| Upstream {
                            addr,
                            authority: Authority::try_from(addr.to_string().as_str())
                                .expect("a socket address is a valid authority"),
                            down_until: AtomicU64::new(0),
                        })
                        .collect(),
                    next: AtomicUsize::new(0),
                    stats: metrics.stats(&backend.version),
                })
            })
            .collect();
        let (mode, sticky_header) = match &config.sticky {
            None => (StickyMode::None, None),
            Some(Sticky::Cookie { .. }) => (StickyMode::Cookie, None),
            Some(Sticky::Header { name }) => (
                StickyMode::Header,
                Some(HeaderName::try_from(name.as_str()).expect("validated header name")),
            ),
        };
        Self {
            pin_header: HeaderName::try_from(config.pin_header.as_str()).expect("validated header name"),
            config,
            slots,
            mode,
            sticky_header,
            cookie_name,
        }
    }

    /// The version for this request (pure, see `choose::choose`), whether to set the cookie, and
    /// whether the pin header chose it.
    fn choose(&self, headers: &HeaderMap) -> (Arc<Slot>, bool, bool) {
        let cookie = self.cookie_name.as_deref().and_then(|name| {
            headers
                .get_all(header::COOKIE)
                .iter()
                .find_map(|value| choose::cookie_value(value.as_bytes(), name))
        });
        let keys = RequestKeys {
            pin: headers.get(&self.pin_header).map(HeaderValue::as_bytes),
            cookie,
            header: self
                .sticky_header
                .as_ref()
                .and_then(|name| headers.get(name))
                .map(HeaderValue::as_bytes),
        };
        let bucket = fastrand::u32(..crate::config::TOTAL_WEIGHT);
        let decision = choose::choose(&self.slots, self.mode, &keys, bucket)
            .expect("a validated config's weights cover every bucket");
        let pinned = decision.reason == choose::Reason::Pinned;
        (self.slots[decision.index].clone(), decision.set_cookie, pinned)
    }
}

impl Slot {
    /// The first instance in round-robin order that is not ejected (or the first, if all are).
    fn pick(&self, now_ms: u64) -> usize {
        let n = self.upstreams.len();
        if n == 1 {
            return 0;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        self.next_live(start, n, now_ms).unwrap_or(start)
    }

    /// The first instance at or after `from`, within `len` steps, that is not ejected.
    fn next_live(&self, from: usize, len: usize, now_ms: u64) -> Option<usize> {
        let n = self.upstreams.len();
        (0..len)
            .map(|i| (from + i) % n)
            .find(|&i| self.upstreams[i].down_until.load(Ordering::Relaxed) <= now_ms)
    }
}

// === Shared: what every connection of a router reads ===

/// Router state shared by all connections; `routes` is the only thing that changes.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) routes: arc_swap::ArcSwap<Routes>,
    pub(crate) metrics: MetricsRegistry,
    pub(crate) epoch: Instant,
}

/// Per-connection facts added to every request of the connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer_ip: HeaderValue,
}

impl Conn {
    pub(crate) fn new(shared: Arc<Shared>, peer: SocketAddr) -> Self {
        let peer_ip = HeaderValue::try_from(peer.ip().to_string()).expect("an IP address is a header value");
        Self { shared, peer_ip }
    }

    /// Answers one request: choose, forward, label, count. Never fails: errors become 502s.
    pub(crate) async fn handle(&self, req: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
        let start = Instant::now();
        let (slot, set_cookie, pinned) = self.shared.routes.load().choose(req.headers());
        let in_flight = slot.stats.begin();
        let mut response = self.forward(&slot, req, start).await;
        drop(in_flight);
        let headers = response.headers_mut();
        headers.insert(VERSION_HEADER.clone(), slot.version_value.clone());
        if set_cookie && let Some(cookie) = &slot.set_cookie {
            headers.append(header::SET_COOKIE, cookie.clone());
        }
        if pinned {
            slot.stats.record_pinned();
        } else {
            slot.stats.record(response.status().as_u16(), start.elapsed());
        }
        Ok(response)
    }

    async fn forward(&self, slot: &Slot, mut req: Request<Incoming>, start: Instant) -> Response<ProxyBody> {
        if req.method() == Method::CONNECT {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not proxied\n");
        }
        let upgrade = is_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers, upgrade);
        if upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        if !parts.headers.contains_key(header::HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(host) = HeaderValue::try_from(authority.as_str())
        {
            parts.headers.insert(header::HOST, host);
        }
        self.add_forwarded(&mut parts.headers);
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));

        // Only a request whose body is already complete can be sent again after a connect error:
        // the failed attempt consumed nothing, and an empty body is rebuilt for free.
        let body_done = body.is_end_stream();
        let mut body = if body_done {
            ProxyBody::empty()
        } else {
            ProxyBody::Incoming(body)
        };
        let n = slot.upstreams.len();
        let retry_copy = (body_done && n > 1).then(|| (parts.method.clone(), parts.headers.clone()));
        let now_ms = ms_since(self.shared.epoch, start);
        let mut index = slot.pick(now_ms);
        let mut attempts = 1;
        loop {
            let upstream = &slot.upstreams[index];
            // Origin form (`/path?query`), as an HTTP/1.1 request to a server carries it.
            parts.uri = Uri::from(path.clone());
            if !parts.headers.contains_key(header::HOST)
                && let Ok(host) = HeaderValue::try_from(upstream.authority.as_str())
            {
                parts.headers.insert(header::HOST, host);
            }
            parts.version = Version::HTTP_11;
            let request = Request::from_parts(parts, body);
            let result = crate::upstream::send(upstream.addr, request).await;
            match result {
                Ok(response) => return finish(response, client_upgrade),
                Err(error @ crate::upstream::SendError::Connect(_)) => {
                    let now_ms = ms_since(self.shared.epoch, Instant::now());
                    upstream
                        .down_until
                        .store(now_ms + EJECT_FOR.as_millis() as u64, Ordering::Relaxed);
                    tracing::warn!(
                        version = %slot.version,
                        upstream = %upstream.addr,
                        %error,
                        "upstream connect failed; skipping this instance for a while"
                    );
                    let next = retry_copy
                        .as_ref()
                        .filter(|_| attempts < n)
                        .and_then(|copy| slot.next_live(index + 1, n - 1, now_ms).map(|next| (next, copy)));
                    let Some((next, (method, headers))) = next else {
                        return plain(
                            StatusCode::BAD_GATEWAY,
                            "bad gateway: no instance of this version answered\n",
                        );
                    };
                    let mut retry = Request::new(());
                    *retry.method_mut() = method.clone();
                    *retry.headers_mut() = headers.clone();
                    (parts, _) = retry.into_parts();
                    body = ProxyBody::empty();
                    index = next;
                    attempts += 1;
                }
                Err(error) => {
                    tracing::warn!(
                        version = %slot.version,
                        upstream = %upstream.addr,
                        %error,
                        "upstream request failed"
                    );
                    return plain(StatusCode::BAD_GATEWAY, "bad gateway: the upstream failed\n");
                }
            }
        }
    }

    fn add_forwarded(&self, headers: &mut HeaderMap) {
        match headers.entry(&X_FORWARDED_FOR) {
            header::Entry::Vacant(entry) => {
                entry.insert(self.peer_ip.clone());
            }
            header::Entry::Occupied(mut entry) => {
                let mut joined = entry.get().as_bytes().to_vec();
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(self.peer_ip.as_bytes());
                match HeaderValue::from_bytes(&joined) {
                    Ok(value) => {
                        entry.insert(value);
                    }
                    Err(_) => {
                        entry.insert(self.peer_ip.clone());
                    }
                }
            }
        }
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        }
    }
}

/// Turns the upstream's response into the client's, splicing the two connections on a 101.
fn finish(
    response: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    match client_upgrade {
        Some(client_upgrade) if switching => {
            let mut upstream_response = Response::from_parts(parts, ());
            let upstream_upgrade = hyper::upgrade::on(&mut upstream_response);
            let (mut parts, ()) = upstream_response.into_parts();
            strip_hop_by_hop(&mut parts.headers, true);
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            tokio::spawn(splice(client_upgrade, upstream_upgrade));
            drop(body);
            Response::from_parts(parts, ProxyBody::empty())
        }
        _ => {
            if switching {
                // The client asked for no upgrade: a 101 cannot be passed on.
                return plain(
                    StatusCode::BAD_GATEWAY,
                    "bad gateway: unexpected protocol switch\n",
                );
            }
            strip_hop_by_hop(&mut parts.headers, false);
            Response::from_parts(parts, ProxyBody::Incoming(body))
        }
    }
}

/// Copies bytes both ways between the upgraded client and upstream connections until both close.
async fn splice(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, "upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((to_upstream, to_client)) => {
            tracing::debug!(to_upstream, to_client, "upgraded connection closed");
        }
        Err(error) => tracing::debug!(%error, "upgraded connection ended with an error"),
    }
}

/// An HTTP/1.1 request asking to switch protocols (`Connection: upgrade` + `Upgrade`).
fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .any(|value| has_token(value, "upgrade"))
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn plain(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn ms_since(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_detection() {
        let req = |connection: &'static str, upgrade: Option<&'static str>, version| {
            let mut builder = Request::builder()
                .version(version)
                .header("connection", connection);
            if let Some(upgrade) = upgrade {
                builder = builder.header("upgrade", upgrade);
            }
            builder.body(()).expect("request")
        };
        assert!(is_upgrade(&req("Upgrade", Some("websocket"), Version::HTTP_11)));
        assert!(is_upgrade(&req(
            "keep-alive, upgrade",
            Some("websocket"),
            Version::HTTP_11
        )));
        assert!(!is_upgrade(&req(
            "keep-alive",
            Some("websocket"),
            Version::HTTP_11
        )));
        assert!(!is_upgrade(&req("upgrade", None, Version::HTTP_11)));
        assert!(!is_upgrade(&req("upgrade", Some("websocket"), Version::HTTP_10)));
    }
}
