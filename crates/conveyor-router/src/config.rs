//! `RouteConfig`: which versions receive traffic, in what proportion, on which instances, and how a
//! user is kept on one version, and its validation. Pure: no clock, disk or network (the atomic
//! on-disk form is `file`), so the pure `choose` can depend on it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use serde::{Deserialize, Serialize};

use crate::forwarded::Cidr;
use crate::hop_by_hop::is_hop_by_hop;

/// The weights of all backends add up to this: weights are basis points of the traffic.
pub const TOTAL_WEIGHT: u32 = 10_000;
/// The cookie `Sticky::Cookie` uses when the config names none.
pub const DEFAULT_COOKIE: &str = "conveyor_version";
/// The request header that pins a request to a version, unless the config names another.
pub const DEFAULT_PIN_HEADER: &str = "x-conveyor-version";
/// Longest accepted version name (it travels in a cookie and a response header).
pub const MAX_VERSION_LEN: usize = 128;
/// Most instances one version may list.
pub const MAX_UPSTREAMS: usize = 1024;
/// Most versions one config may list.
pub const MAX_BACKENDS: usize = 64;
/// Most entries `trusted_proxies` may list.
pub const MAX_TRUSTED_PROXIES: usize = 64;
/// How long the router waits for an upstream's response head when the config does not say.
///
/// 30 s: far above what an interactive request takes, so only a hung instance meets it, and
/// below the 60 s at which the proxies and load balancers commonly put in front of a router give
/// up (nginx's `proxy_read_timeout`, an AWS ALB's idle timeout) — the router answers the 504
/// itself and counts it against the version, instead of the client's side giving up unseen.
/// Longer than Envoy's 15 s route timeout because that one covers the whole response, and this
/// one only the wait for its head.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// How traffic is split between versions: the router's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The versions that may receive traffic; their weights add up to `TOTAL_WEIGHT`.
    pub backends: Vec<Backend>,
    /// How a user keeps seeing one version across requests; `None` chooses per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    /// A request carrying this header with a version's name goes to that version (for testers).
    #[serde(default = "default_pin_header")]
    pub pin_header: String,
    /// How long an upstream may take, from the request's arrival, to send its response head
    /// (the request body included); then the router answers 504, counted as the version's 5xx,
    /// and closes that upstream connection. In JSON, whole milliseconds (`response_timeout_ms`).
    #[serde(
        rename = "response_timeout_ms",
        with = "millis",
        default = "default_response_timeout"
    )]
    pub response_timeout: Duration,
    /// Peers whose `X-Forwarded-For`, `-Proto` and `-Host` are believed (proxies in front of the
    /// router); from anyone else these headers are replaced by what the router saw.
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
}

/// One version and the instances that serve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// The version's name, e.g. the release id `r12`: `[A-Za-z0-9._-]`, 1..=128 characters.
    pub version: String,
    /// Share of the traffic in basis points, `0..=10000`. A version with weight 0 is reached only by
    /// the pin header.
    pub weight: u32,
    /// The instances of this version, used in turn (round robin). When none is left (the list is
    /// empty, or none accepts a connection), the traffic its weight would get goes to the versions
    /// that have instances, in proportion to their weights; only pinned requests still reach it.
    pub upstreams: Vec<SocketAddr>,
}

/// How a user is kept on one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Sticky {
    /// The router assigns a version on the first request and remembers it in this cookie.
    Cookie {
        #[serde(default = "default_cookie")]
        name: String,
    },
    /// A stable hash of this request header (e.g. `x-user-id`) chooses the version.
    Header { name: String },
}

fn default_cookie() -> String {
    DEFAULT_COOKIE.to_owned()
}

fn default_pin_header() -> String {
    DEFAULT_PIN_HEADER.to_owned()
}

fn default_response_timeout() -> Duration {
    DEFAULT_RESPONSE_TIMEOUT
}

/// A `Duration` as whole milliseconds: JSON has no duration type, and `{secs, nanos}` is noise.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

/// A config the router refuses, with the exact reason. These are the caller's mistakes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the config lists no backend")]
    NoBackends,
    #[error("the config lists {count} backends; at most {MAX_BACKENDS} are allowed")]
    TooManyBackends { count: usize },
    #[error(
        "backend {index}: version {version:?} is not a valid name \
         (1..={MAX_VERSION_LEN} characters of A-Z a-z 0-9 . _ -)"
    )]
    InvalidVersion { index: usize, version: String },
    #[error("version {version:?} is listed twice")]
    DuplicateVersion { version: String },
    #[error("version {version:?}: weight {weight} is above {TOTAL_WEIGHT} basis points")]
    WeightTooLarge { version: String, weight: u32 },
    #[error("the weights add up to {sum} basis points; they must add up to {TOTAL_WEIGHT}")]
    WeightSum { sum: u64 },
    #[error("version {version:?} lists {count} upstreams; at most {MAX_UPSTREAMS} are allowed")]
    TooManyUpstreams { version: String, count: usize },
    #[error("version {version:?} lists upstream {upstream} twice")]
    DuplicateUpstream { version: String, upstream: SocketAddr },
    #[error("sticky cookie name {name:?} is not a valid cookie name")]
    InvalidCookieName { name: String },
    #[error("{what} {name:?} is not a valid HTTP header name")]
    InvalidHeaderName { what: &'static str, name: String },
    #[error("{what} {name:?} is a hop-by-hop header, which a proxy does not forward")]
    HopByHopHeader { what: &'static str, name: String },
    #[error("the response timeout must be at least 1 ms")]
    ZeroResponseTimeout,
    #[error("the config lists {count} trusted proxies; at most {MAX_TRUSTED_PROXIES} are allowed")]
    TooManyTrustedProxies { count: usize },
}

// === impl RouteConfig ===

impl RouteConfig {
    /// A config sending all traffic to one version on the given instances.
    pub fn single(version: impl Into<String>, upstreams: Vec<SocketAddr>) -> Self {
        Self {
            backends: vec![Backend {
                version: version.into(),
                weight: TOTAL_WEIGHT,
                upstreams,
            }],
            sticky: None,
            pin_header: default_pin_header(),
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            trusted_proxies: Vec::new(),
        }
    }

    /// Checks every rule the router relies on; the first broken one is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.backends.is_empty() {
            return Err(ConfigError::NoBackends);
        }
        if self.backends.len() > MAX_BACKENDS {
            return Err(ConfigError::TooManyBackends {
                count: self.backends.len(),
            });
        }
        let mut versions = HashSet::new();
        let mut sum = 0u64;
        for (index, backend) in self.backends.iter().enumerate() {
            if !is_version_name(&backend.version) {
                return Err(ConfigError::InvalidVersion {
                    index,
                    version: backend.version.clone(),
                });
            }
            if !versions.insert(backend.version.as_str()) {
                return Err(ConfigError::DuplicateVersion {
                    version: backend.version.clone(),
                });
            }
            if backend.weight > TOTAL_WEIGHT {
                return Err(ConfigError::WeightTooLarge {
                    version: backend.version.clone(),
                    weight: backend.weight,
                });
            }
            sum += u64::from(backend.weight);
            if backend.upstreams.len() > MAX_UPSTREAMS {
                return Err(ConfigError::TooManyUpstreams {
                    version: backend.version.clone(),
                    count: backend.upstreams.len(),
                });
            }
            let mut seen = HashSet::new();
            for upstream in &backend.upstreams {
                if !seen.insert(upstream) {
                    return Err(ConfigError::DuplicateUpstream {
                        version: backend.version.clone(),
                        upstream: *upstream,
                    });
                }
            }
        }
        if sum != u64::from(TOTAL_WEIGHT) {
            return Err(ConfigError::WeightSum { sum });
        }
        check_header_name("pin header", &self.pin_header)?;
        match &self.sticky {
            None => {}
            Some(Sticky::Cookie { name }) if !is_cookie_name(name) => {
                return Err(ConfigError::InvalidCookieName { name: name.clone() });
            }
            Some(Sticky::Cookie { .. }) => {}
            Some(Sticky::Header { name }) => check_header_name("sticky header", name)?,
        }
        if self.response_timeout < Duration::from_millis(1) {
            return Err(ConfigError::ZeroResponseTimeout);
        }
        if self.trusted_proxies.len() > MAX_TRUSTED_PROXIES {
            return Err(ConfigError::TooManyTrustedProxies {
                count: self.trusted_proxies.len(),
            });
        }
        Ok(())
    }

    /// The backend serving `version`, if the config lists it.
    pub fn backend(&self, version: &str) -> Option<&Backend> {
        self.backends.iter().find(|backend| backend.version == version)
    }
}

/// Version names travel in cookies and header values: keep them to a safe token alphabet.
pub(crate) fn is_version_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_VERSION_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// RFC 6265 cookie-name: an RFC 7230 token.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.'
                )
                || matches!(b, b'^' | b'_' | b'`' | b'|' | b'~')
        })
}

fn check_header_name(what: &'static str, name: &str) -> Result<(), ConfigError> {
    // `HeaderName::from_bytes` lowercases; a config must already be lowercase so that what is
    // saved is what is matched.
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .ok()
        .filter(|parsed| parsed.as_str() == name)
        .ok_or_else(|| ConfigError::InvalidHeaderName {
            what,
            name: name.to_owned(),
        })?;
    if is_hop_by_hop(&parsed) {
        return Err(ConfigError::HopByHopHeader {
            what,
            name: name.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn backend(version: &str, weight: u32, ports: &[u16]) -> Backend {
        Backend {
            version: version.into(),
            weight,
            upstreams: ports.iter().map(|&p| addr(p)).collect(),
        }
    }

    fn config(backends: Vec<Backend>) -> RouteConfig {
        RouteConfig {
            backends,
            ..RouteConfig::single("unused", vec![])
        }
    }

    #[test]
    fn validation_table() {
        let ok = || config(vec![backend("r1", 9000, &[1]), backend("r2", 1000, &[2, 3])]);
        let with = |f: &dyn Fn(&mut RouteConfig)| {
            let mut c = ok();
            f(&mut c);
            c
        };
        let cases: Vec<(&str, RouteConfig, Result<(), ConfigError>)> = vec![
            ("valid", ok(), Ok(())),
            ("single", RouteConfig::single("r1", vec![addr(1)]), Ok(())),
            (
                "zero weight allowed",
                config(vec![backend("a", 0, &[1]), backend("b", 10_000, &[2])]),
                Ok(()),
            ),
            ("no backends", config(vec![]), Err(ConfigError::NoBackends)),
            (
                "too many backends",
                config((0..65).map(|i| backend(&format!("v{i}"), 0, &[1])).collect()),
                Err(ConfigError::TooManyBackends { count: 65 }),
            ),
            (
                "empty version",
                config(vec![backend("", 10_000, &[1])]),
                Err(ConfigError::InvalidVersion {
                    index: 0,
                    version: String::new(),
                }),
            ),
            (
                "version with a semicolon",
                with(&|c| c.backends[1].version = "r2;x=1".into()),
                Err(ConfigError::InvalidVersion {
                    index: 1,
                    version: "r2;x=1".into(),
                }),
            ),
            (
                "version too long",
                config(vec![backend(&"a".repeat(129), 10_000, &[1])]),
                Err(ConfigError::InvalidVersion {
                    index: 0,
                    version: "a".repeat(129),
                }),
            ),
            (
                "duplicate version",
                with(&|c| c.backends[1].version = "r1".into()),
                Err(ConfigError::DuplicateVersion { version: "r1".into() }),
            ),
            (
                "weight above total",
                config(vec![backend("a", 10_001, &[1])]),
                Err(ConfigError::WeightTooLarge {
                    version: "a".into(),
                    weight: 10_001,
                }),
            ),
            (
                "weights short of total",
                with(&|c| c.backends[1].weight = 999),
                Err(ConfigError::WeightSum { sum: 9_999 }),
            ),
            (
                "weights over total",
                config(vec![backend("a", 10_000, &[1]), backend("b", 10_000, &[1])]),
                Err(ConfigError::WeightSum { sum: 20_000 }),
            ),
            (
                "a version without instances is allowed (its traffic goes elsewhere)",
                with(&|c| c.backends[0].upstreams.clear()),
                Ok(()),
            ),
            (
                "duplicate upstream",
                with(&|c| c.backends[1].upstreams[1] = addr(2)),
                Err(ConfigError::DuplicateUpstream {
                    version: "r2".into(),
                    upstream: addr(2),
                }),
            ),
            (
                "uppercase pin header",
                with(&|c| c.pin_header = "X-Pin".into()),
                Err(ConfigError::InvalidHeaderName {
                    what: "pin header",
                    name: "X-Pin".into(),
                }),
            ),
            (
                "pin header with a space",
                with(&|c| c.pin_header = "x pin".into()),
                Err(ConfigError::InvalidHeaderName {
                    what: "pin header",
                    name: "x pin".into(),
                }),
            ),
            (
                "hop-by-hop pin header",
                with(&|c| c.pin_header = "connection".into()),
                Err(ConfigError::HopByHopHeader {
                    what: "pin header",
                    name: "connection".into(),
                }),
            ),
            (
                "sticky cookie",
                with(&|c| c.sticky = Some(Sticky::Cookie { name: "cv".into() })),
                Ok(()),
            ),
            (
                "bad cookie name",
                with(&|c| c.sticky = Some(Sticky::Cookie { name: "a=b".into() })),
                Err(ConfigError::InvalidCookieName { name: "a=b".into() }),
            ),
            (
                "sticky header",
                with(&|c| {
                    c.sticky = Some(Sticky::Header {
                        name: "x-user-id".into(),
                    })
                }),
                Ok(()),
            ),
            (
                "bad sticky header",
                with(&|c| c.sticky = Some(Sticky::Header { name: String::new() })),
                Err(ConfigError::InvalidHeaderName {
                    what: "sticky header",
                    name: String::new(),
                }),
            ),
            (
                "zero response timeout",
                with(&|c| c.response_timeout = Duration::from_micros(999)),
                Err(ConfigError::ZeroResponseTimeout),
            ),
            (
                "trusted proxies",
                with(&|c| c.trusted_proxies = vec!["10.0.0.0/8".parse().expect("block")]),
                Ok(()),
            ),
            (
                "too many trusted proxies",
                with(&|c| c.trusted_proxies = vec!["10.0.0.0/8".parse().expect("block"); 65]),
                Err(ConfigError::TooManyTrustedProxies { count: 65 }),
            ),
        ];
        for (name, config, expected) in cases {
            assert_eq!(config.validate(), expected, "case {name:?}");
        }
    }

    #[test]
    fn json_form_and_defaults() {
        let json = r#"{"backends":[{"version":"r12","weight":10000,"upstreams":["127.0.0.1:8001"]}],
                       "sticky":{"cookie":{}}}"#;
        let config: RouteConfig = serde_json::from_str(json).expect("valid json");
        assert_eq!(config.pin_header, DEFAULT_PIN_HEADER);
        assert_eq!(
            config.sticky,
            Some(Sticky::Cookie {
                name: DEFAULT_COOKIE.into()
            })
        );
        config.validate().expect("valid config");
        let header: RouteConfig = serde_json::from_str(
            r#"{"backends":[],"sticky":{"header":{"name":"x-user-id"}},"pin_header":"x-pin"}"#,
        )
        .expect("valid json");
        assert_eq!(
            header.sticky,
            Some(Sticky::Header {
                name: "x-user-id".into()
            })
        );
        assert!(serde_json::from_str::<RouteConfig>(r#"{"backends":[],"extra":1}"#).is_err());
    }

    #[test]
    fn configs_saved_before_the_timeout_and_trusted_proxies_still_parse() {
        let old = r#"{"backends":[{"version":"r12","weight":10000,"upstreams":["127.0.0.1:8001"]}],
                      "pin_header":"x-conveyor-version"}"#;
        let config: RouteConfig = serde_json::from_str(old).expect("an old config parses");
        assert_eq!(config.response_timeout, DEFAULT_RESPONSE_TIMEOUT);
        assert!(config.trusted_proxies.is_empty());
        let mut new = config.clone();
        new.response_timeout = Duration::from_millis(2500);
        new.trusted_proxies = vec!["10.0.0.0/8".parse().expect("block")];
        let json = serde_json::to_value(&new).expect("serializes");
        assert_eq!(json["response_timeout_ms"], 2500);
        assert_eq!(json["trusted_proxies"], serde_json::json!(["10.0.0.0/8"]));
        assert_eq!(
            serde_json::from_value::<RouteConfig>(json).expect("round trip"),
            new
        );
    }
}
