//! What the upstream is told about the client: `X-Forwarded-For`, `-Proto` and `-Host`, and which
//! peers are trusted to have set them already (`Cidr`, the config's `trusted_proxies`). Pure:
//! headers in, headers out; depends on nothing else in the crate.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// Other headers upstreams commonly read a client's address from. The router does not set them,
/// so from an untrusted peer they can only be forged.
const UNVOUCHED: [HeaderName; 2] = [header::FORWARDED, HeaderName::from_static("x-real-ip")];

/// A block of IP addresses: `10.0.0.0/8`, `2001:db8::/32`, or one address (`192.0.2.7`, a /32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// A `Cidr` that does not parse, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{text:?} is not an IP address or a CIDR block such as 10.0.0.0/8")]
    Syntax { text: String },
    #[error("{text:?}: the prefix length is longer than the address ({max} bits)")]
    PrefixTooLong { text: String, max: u8 },
    #[error("{text:?} has address bits set past its prefix; the block is {network}")]
    HostBits { text: String, network: String },
}

// === impl Cidr ===

impl Cidr {
    /// Whether `ip` is in the block. An IPv4 address never matches an IPv6 block nor the reverse;
    /// the caller canonicalizes IPv4-mapped IPv6 peers first (`IpAddr::to_canonical`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                masked(u128::from(ip.to_bits()), self.prefix, 32) == u128::from(network.to_bits())
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                masked(ip.to_bits(), self.prefix, 128) == network.to_bits()
            }
            _ => false,
        }
    }
}

/// `bits` (an address of `width` bits) with everything past the first `prefix` bits cleared.
fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
    let host_bits = u32::from(width - prefix);
    if host_bits >= 128 {
        0
    } else {
        bits >> host_bits << host_bits
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, CidrError> {
        let syntax = || CidrError::Syntax {
            text: text.to_owned(),
        };
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| syntax())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Digits only: `u8::from_str` would also take a `+`.
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| syntax())?
            }
            Some(_) => return Err(syntax()),
        };
        if prefix > max {
            return Err(CidrError::PrefixTooLong {
                text: text.to_owned(),
                max,
            });
        }
        let bits = match network {
            IpAddr::V4(v4) => u128::from(v4.to_bits()),
            IpAddr::V6(v6) => v6.to_bits(),
        };
        let kept = masked(bits, prefix, max);
        if kept != bits {
            // `10.0.0.1/8` is likelier a typo than a way of writing 10.0.0.0/8: say which is meant.
            let network = match network {
                IpAddr::V4(_) => IpAddr::from(std::net::Ipv4Addr::from_bits(kept as u32)),
                IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::from_bits(kept)),
            };
            return Err(CidrError::HostBits {
                text: text.to_owned(),
                network: format!("{network}/{prefix}"),
            });
        }
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl TryFrom<String> for Cidr {
    type Error = CidrError;

    fn try_from(text: String) -> Result<Self, CidrError> {
        text.parse()
    }
}

impl From<Cidr> for String {
    fn from(cidr: Cidr) -> Self {
        cidr.to_string()
    }
}

// === the headers ===

/// Sets the `X-Forwarded-*` headers of a request the router received from `peer` (its TCP peer's
/// address, as a header value). The router serves plain HTTP (h2c included), so the scheme it saw
/// is always `http`.
///
/// From an untrusted peer, whatever the client sent is replaced by what the router saw (and the
/// other address headers it does not set are removed): a client must not be able to make the
/// upstream believe it comes from another address, which would defeat the upstream's rate limits,
/// allow-lists and audit logs. From a `trusted` peer (a proxy in front of the router, listed in
/// the config's `trusted_proxies`), the client's address is the one that proxy recorded:
/// `X-Forwarded-For` is extended with the peer, `-Proto` and `-Host` are kept.
pub(crate) fn set_forwarded(headers: &mut HeaderMap, peer: &HeaderValue, trusted: bool) {
    if !trusted {
        headers.insert(X_FORWARDED_FOR.clone(), peer.clone());
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        match headers.get(header::HOST).cloned() {
            Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host),
            None => headers.remove(&X_FORWARDED_HOST),
        };
        for name in &UNVOUCHED {
            headers.remove(name);
        }
        return;
    }
    let chain = extended(headers.get_all(&X_FORWARDED_FOR), peer);
    headers.insert(X_FORWARDED_FOR.clone(), chain);
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    if !headers.contains_key(&X_FORWARDED_HOST)
        && let Some(host) = headers.get(header::HOST).cloned()
    {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
}

/// The trusted proxy's `X-Forwarded-For` lines, joined as one list (RFC 9110 §5.3), then `peer`.
fn extended(lines: header::GetAll<'_, HeaderValue>, peer: &HeaderValue) -> HeaderValue {
    let mut joined = Vec::new();
    for line in lines {
        joined.extend_from_slice(line.as_bytes());
        joined.extend_from_slice(b", ");
    }
    if joined.is_empty() {
        return peer.clone();
    }
    joined.extend_from_slice(peer.as_bytes());
    HeaderValue::from_bytes(&joined).expect("header values joined by \", \" form a header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().expect("a valid block")
    }

    #[test]
    fn cidr_parsing_table() {
        let ok = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("192.0.2.7", "192.0.2.7/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("::1", "::1/128"),
            ("::/0", "::/0"),
        ];
        for (text, shown) in ok {
            assert_eq!(cidr(text).to_string(), shown, "{text}");
        }
        let syntax = |text: &str| CidrError::Syntax { text: text.into() };
        let refused = [
            ("", syntax("")),
            ("10.0.0", syntax("10.0.0")),
            ("10.0.0.0/", syntax("10.0.0.0/")),
            ("10.0.0.0/+8", syntax("10.0.0.0/+8")),
            ("10.0.0.0/8/8", syntax("10.0.0.0/8/8")),
            ("localhost", syntax("localhost")),
            (
                "10.0.0.0/33",
                CidrError::PrefixTooLong {
                    text: "10.0.0.0/33".into(),
                    max: 32,
                },
            ),
            (
                "::/129",
                CidrError::PrefixTooLong {
                    text: "::/129".into(),
                    max: 128,
                },
            ),
            (
                "10.0.0.1/8",
                CidrError::HostBits {
                    text: "10.0.0.1/8".into(),
                    network: "10.0.0.0/8".into(),
                },
            ),
            (
                "2001:db8::1/64",
                CidrError::HostBits {
                    text: "2001:db8::1/64".into(),
                    network: "2001:db8::/64".into(),
                },
            ),
        ];
        for (text, error) in refused {
            assert_eq!(text.parse::<Cidr>(), Err(error), "{text:?}");
        }
        let json: Vec<Cidr> = serde_json::from_str(r#"["10.0.0.0/8","::1"]"#).expect("valid blocks");
        assert_eq!(
            serde_json::to_string(&json).expect("serializes"),
            r#"["10.0.0.0/8","::1/128"]"#
        );
        assert!(serde_json::from_str::<Cidr>(r#""10.0.0.1/8""#).is_err());
    }

    #[test]
    fn cidr_membership_table() {
        let ip = |text: &str| text.parse::<IpAddr>().expect("an address");
        let cases = [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("172.16.0.0/12", "172.31.255.255", true),
            ("172.16.0.0/12", "172.32.0.0", false),
            ("2001:db8::/32", "2001:db8:1::5", true),
            ("2001:db8::/32", "2001:db9::5", false),
            ("::/0", "::1", true),
            ("0.0.0.0/0", "::1", false),
            ("::/0", "127.0.0.1", false),
        ];
        for (block, address, expected) in cases {
            assert_eq!(
                cidr(block).contains(ip(address)),
                expected,
                "{address} in {block}"
            );
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for &(name, value) in pairs {
            headers.append(name, HeaderValue::from_static(value));
        }
        headers
    }

    fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect()
    }

    #[test]
    fn forwarded_headers_table() {
        let peer = HeaderValue::from_static("198.51.100.4");
        /// (name, headers sent, peer trusted) -> values of each header the upstream gets
        type Expected = [(&'static str, &'static [&'static str]); 5];
        type Case = (
            &'static str,
            &'static [(&'static str, &'static str)],
            bool,
            Expected,
        );
        let what_the_router_saw: Expected = [
            ("x-forwarded-for", &["198.51.100.4"]),
            ("x-forwarded-proto", &["http"]),
            ("x-forwarded-host", &["shop.example"]),
            ("forwarded", &[]),
            ("x-real-ip", &[]),
        ];
        let cases: [Case; 5] = [
            (
                "untrusted, nothing sent",
                &[("host", "shop.example")],
                false,
                what_the_router_saw,
            ),
            (
                "untrusted, spoofed: replaced",
                &[
                    ("host", "shop.example"),
                    ("x-forwarded-for", "10.0.0.1"),
                    ("x-forwarded-for", "10.0.0.2"),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-host", "admin.example"),
                    ("forwarded", "for=10.0.0.1"),
                    ("x-real-ip", "10.0.0.1"),
                ],
                false,
                what_the_router_saw,
            ),
            (
                "untrusted, no host: no forwarded host either",
                &[("x-forwarded-host", "admin.example")],
                false,
                [
                    ("x-forwarded-for", &["198.51.100.4"]),
                    ("x-forwarded-proto", &["http"]),
                    ("x-forwarded-host", &[]),
                    ("forwarded", &[]),
                    ("x-real-ip", &[]),
                ],
            ),
            (
                "trusted: extended and kept",
                &[
                    ("host", "shop.example"),
                    ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
                    ("x-forwarded-for", "10.0.0.2"),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-host", "www.example"),
                    ("forwarded", "for=203.0.113.9"),
                ],
                true,
                [
                    (
                        "x-forwarded-for",
                        &["203.0.113.9, 10.0.0.1, 10.0.0.2, 198.51.100.4"],
                    ),
                    ("x-forwarded-proto", &["https"]),
                    ("x-forwarded-host", &["www.example"]),
                    ("forwarded", &["for=203.0.113.9"]),
                    ("x-real-ip", &[]),
                ],
            ),
            (
                "trusted, nothing sent: what the router saw",
                &[("host", "shop.example")],
                true,
                what_the_router_saw,
            ),
        ];
        for (name, sent, trusted, expected) in cases {
            let mut map = headers(sent);
            set_forwarded(&mut map, &peer, trusted);
            for (header, want) in expected {
                assert_eq!(values(&map, header), want, "{name}: {header}");
            }
            assert_eq!(map.get("host"), headers(sent).get("host"), "{name}: host is kept");
        }
    }
}
