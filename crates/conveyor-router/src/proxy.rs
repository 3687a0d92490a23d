//! The request path: compiled routes, choosing a version and an instance, rewriting headers,
//! forwarding through the pooled client, failover on connect errors (to another instance, then to
//! another version), the response timeout, and upgrades.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::body::ProxyBody;
use crate::choose::{self, Available, RequestKeys, StickyMode, Weighted};
use crate::config::{RouteConfig, Sticky};
use crate::forwarded::set_forwarded;
use crate::hop_by_hop::strip_hop_by_hop;
use crate::metrics::{MetricsRegistry, VersionStats};
use crate::upstream::SendError;

/// How long an instance that refused a connection is skipped by the round robin, and a version
/// all of whose instances refused is skipped by the weights.
pub(crate) const EJECT_FOR: Duration = Duration::from_secs(1);

/// The response header naming the version that answered.
pub static VERSION_HEADER: HeaderName = HeaderName::from_static("x-conveyor-version");

// === Routes: a config compiled for the request path ===

/// An immutable, validated config in the shape the request path reads. Swapped whole.
#[derive(Debug)]
pub(crate) struct Routes {
    pub(crate) config: Arc<RouteConfig>,
    slots: Vec<Slot>,
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
    /// Milliseconds since the router's epoch until which the version counts as having no instance
    /// (every one refused a connection): meanwhile the weights send its traffic elsewhere.
    down_until: AtomicU64,
    stats: Arc<VersionStats>,
}

#[derive(Debug)]
struct Upstream {
    addr: SocketAddr,
    authority: Authority,
    /// Milliseconds since the router's epoch until which this instance is skipped.
    down_until: AtomicU64,
}

impl Weighted for Slot {
    fn version(&self) -> &str {
        &self.version
    }
    fn weight(&self) -> u32 {
        self.weight
    }
}

/// The version a request goes to, and how it was chosen.
struct Choice<'a> {
    index: usize,
    slot: &'a Slot,
    set_cookie: bool,
    /// The pin header chose it: it is the one the request goes to, instances or not.
    pinned: bool,
    /// It has an instance to try and had not been tried for this request.
    available: bool,
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
                Slot {
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
                    down_until: AtomicU64::new(0),
                    stats: metrics.stats(&backend.version),
                }
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

    /// The version for this request (pure, see `choose::choose`), the weights going only to the
    /// `untried` versions that have an instance at `now_ms`.
    fn choose(&self, headers: &HeaderMap, now_ms: u64, untried: Available) -> Choice<'_> {
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
        let available = Available::from_fn(self.slots.len(), |i| {
            untried.contains(i) && self.slots[i].has_instance(now_ms)
        });
        let bucket = fastrand::u32(..crate::config::TOTAL_WEIGHT);
        let decision = choose::choose(&self.slots, available, self.mode, &keys, bucket)
            .expect("a validated config's weights cover every bucket");
        Choice {
            index: decision.index,
            slot: &self.slots[decision.index],
            set_cookie: decision.set_cookie,
            pinned: decision.reason == choose::Reason::Pinned,
            available: available.contains(decision.index),
        }
    }

    /// Whether `peer` is one of the config's trusted proxies.
    fn trusts(&self, peer: IpAddr) -> bool {
        self.config
            .trusted_proxies
            .iter()
            .any(|block| block.contains(peer))
    }
}

impl Slot {
    /// Whether the version has an instance to try: it lists one, and they did not all refuse
    /// connections within the last `EJECT_FOR`.
    fn has_instance(&self, now_ms: u64) -> bool {
        !self.upstreams.is_empty() && self.down_until.load(Ordering::Relaxed) <= now_ms
    }

    /// The first instance in round-robin order that is not ejected (or the first, if all are).
    /// The version must list an instance.
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
    peer: IpAddr,
    peer_ip: HeaderValue,
}

/// Why no instance of a version answered.
enum Unanswered {
    /// None took the connection (or it lists none): nothing was sent, here is the request back
    /// (boxed, like `SendError::Connect`'s).
    NoInstance(Box<Request<ProxyBody>>),
    /// The request went out and failed.
    Failed,
}

impl Conn {
    pub(crate) fn new(shared: Arc<Shared>, peer: SocketAddr) -> Self {
        // An IPv4 client of a dual-stack listener shows as `::ffff:a.b.c.d`: the upstream and the
        // trusted proxies are told the IPv4 address it is.
        let peer = peer.ip().to_canonical();
        let peer_ip = HeaderValue::try_from(peer.to_string()).expect("an IP address is a header value");
        Self {
            shared,
            peer,
            peer_ip,
        }
    }

    /// Answers one request: choose, forward, label, count. Never fails: errors become 5xx answers.
    /// When no instance of the chosen version takes the connection, the request goes to another
    /// version (unless pinned), and is counted for the version that answered.
    pub(crate) async fn handle(&self, req: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
        let start = Instant::now();
        let routes = self.shared.routes.load_full();
        let mut choice = routes.choose(req.headers(), ms_since(self.shared.epoch, start), Available::ALL);
        let mut in_flight = choice.slot.stats.begin();
        let mut response = if req.method() == Method::CONNECT {
            plain(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not proxied\n")
        } else {
            let (mut request, client_upgrade) = self.prepare(req, &routes);
            let deadline = tokio::time::Instant::from_std(start) + routes.config.response_timeout;
            let mut untried = Available::ALL;
            loop {
                match tokio::time::timeout_at(deadline, self.send(choice.slot, request)).await {
                    Ok(Ok(response)) => break finish(response, client_upgrade),
                    Ok(Err(Unanswered::Failed)) => {
                        break plain(StatusCode::BAD_GATEWAY, "bad gateway: the upstream failed\n");
                    }
                    Ok(Err(Unanswered::NoInstance(back))) => {
                        untried = untried.without(choice.index);
                        let next = (!choice.pinned)
                            .then(|| {
                                let now_ms = ms_since(self.shared.epoch, Instant::now());
                                routes.choose(back.headers(), now_ms, untried)
                            })
                            .filter(|next| next.available);
                        let Some(next) = next else {
                            break no_instance(choice.slot);
                        };
                        tracing::debug!(
                            from = %choice.slot.version,
                            to = %next.slot.version,
                            "no instance of the version took the request; sent to another version"
                        );
                        in_flight = next.slot.stats.begin();
                        choice = next;
                        request = *back;
                    }
                    // Dropping the attempt closes its upstream connection: an instance that
                    // accepted the request and never answers holds nothing of the router's.
                    Err(_elapsed) => {
                        tracing::warn!(
                            version = %choice.slot.version,
                            timeout_ms = routes.config.response_timeout.as_millis(),
                            "the upstream sent no response head within the response timeout"
                        );
                        break plain(
                            StatusCode::GATEWAY_TIMEOUT,
                            "gateway timeout: the upstream did not answer in time\n",
                        );
                    }
                }
            }
        };
        drop(in_flight);
        let slot = choice.slot;
        let headers = response.headers_mut();
        headers.insert(VERSION_HEADER.clone(), slot.version_value.clone());
        if choice.set_cookie
            && let Some(cookie) = &slot.set_cookie
        {
            headers.append(header::SET_COOKIE, cookie.clone());
        }
        if choice.pinned {
            slot.stats.record_pinned();
        } else {
            slot.stats.record(response.status().as_u16(), start.elapsed());
        }
        Ok(response)
    }

    /// The request as upstreams get it — hop-by-hop headers stripped, `Host` and the
    /// `X-Forwarded-*` headers set, the URI in origin form — and the client's side of an upgrade.
    fn prepare(
        &self,
        mut req: Request<Incoming>,
        routes: &Routes,
    ) -> (Request<ProxyBody>, Option<OnUpgrade>) {
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
        set_forwarded(&mut parts.headers, &self.peer_ip, routes.trusts(self.peer));
        // Origin form (`/path?query`), as an HTTP/1.1 request to a server carries it.
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::from(path);
        parts.version = Version::HTTP_11;
        (
            Request::from_parts(parts, ProxyBody::Incoming(body)),
            client_upgrade,
        )
    }

    /// Sends `request` to an instance of `slot`: round robin over the instances not ejected, and on
    /// to the next one when an instance refuses the connection (nothing was sent, so any request
    /// may go again). When none takes it, the version is skipped for `EJECT_FOR` and the request
    /// comes back.
    async fn send(
        &self,
        slot: &Slot,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, Unanswered> {
        let n = slot.upstreams.len();
        if n == 0 {
            return Err(Unanswered::NoInstance(Box::new(request)));
        }
        let mut index = slot.pick(ms_since(self.shared.epoch, Instant::now()));
        let mut attempts = 1;
        loop {
            let upstream = &slot.upstreams[index];
            if !request.headers().contains_key(header::HOST)
                && let Ok(host) = HeaderValue::try_from(upstream.authority.as_str())
            {
                request.headers_mut().insert(header::HOST, host);
            }
            match crate::upstream::send(upstream.addr, request).await {
                Ok(response) => return Ok(response),
                Err(SendError::Connect { error, request: back }) => {
                    let now_ms = ms_since(self.shared.epoch, Instant::now());
                    let until = now_ms + EJECT_FOR.as_millis() as u64;
                    upstream.down_until.store(until, Ordering::Relaxed);
                    tracing::warn!(
                        version = %slot.version,
                        upstream = %upstream.addr,
                        %error,
                        "upstream connect failed; skipping this instance for a while"
                    );
                    let next = slot.next_live(index + 1, n - 1, now_ms).filter(|_| attempts < n);
                    let Some(next) = next else {
                        slot.down_until.store(until, Ordering::Relaxed);
                        tracing::warn!(
                            version = %slot.version,
                            "no instance of this version took a connection; its traffic goes to the \
                             other versions for a while"
                        );
                        return Err(Unanswered::NoInstance(back));
                    };
                    request = *back;
                    index = next;
                    attempts += 1;
                }
                Err(error @ SendError::Request(_)) => {
                    tracing::warn!(
                        version = %slot.version,
                        upstream = %upstream.addr,
                        %error,
                        "upstream request failed"
                    );
                    return Err(Unanswered::Failed);
                }
            }
        }
    }
}

/// The answer when no instance of `slot` took the request (it lists none, or all refused).
fn no_instance(slot: &Slot) -> Response<ProxyBody> {
    if slot.upstreams.is_empty() {
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "service unavailable: this version has no instance\n",
        )
    } else {
        plain(
            StatusCode::BAD_GATEWAY,
            "bad gateway: no instance of this version answered\n",
        )
    }
}

/// Turns the upstream's response into the client's, splicing the two connections on a 101.
fn finish(response: Response<Incoming>, client_upgrade: Option<OnUpgrade>) -> Response<ProxyBody> {
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
async fn splice(client: OnUpgrade, upstream: OnUpgrade) {
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
