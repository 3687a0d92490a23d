//! Choosing a version for one request: a pure function of the weights, what the request carries
//! (pin header, sticky cookie or header) and a random bucket the caller draws. No I/O, no clock,
//! no randomness of its own, so it is tested with tables.

use crate::config::{Backend, MAX_BACKENDS, TOTAL_WEIGHT};

/// What the choice needs to know about a version.
pub trait Weighted {
    fn version(&self) -> &str;
    /// Basis points, `0..=TOTAL_WEIGHT`.
    fn weight(&self) -> u32;
}

impl Weighted for Backend {
    fn version(&self) -> &str {
        &self.version
    }
    fn weight(&self) -> u32 {
        self.weight
    }
}

/// How stickiness is configured, without the names (the caller has already read the values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickyMode {
    None,
    Cookie,
    Header,
}

/// What one request carries that bears on the choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestKeys<'a> {
    /// The pin header's value, if present.
    pub pin: Option<&'a [u8]>,
    /// The sticky cookie's value, if the mode is `Cookie` and the request carries it.
    pub cookie: Option<&'a [u8]>,
    /// The sticky header's value, if the mode is `Header` and the request carries it.
    pub header: Option<&'a [u8]>,
}

/// Why a version was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The pin header named it.
    Pinned,
    /// The sticky cookie named it (and it still has weight).
    Cookie,
    /// The hash of the sticky header fell in its bucket.
    Header,
    /// The request's random bucket fell in its bucket.
    Weighted,
}

/// The outcome: an index into the backends, why, and whether the response must set the cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub index: usize,
    pub reason: Reason,
    /// True when cookie stickiness is on and the request did not already carry this version.
    pub set_cookie: bool,
}

/// Which backends have an instance that can take a request: bit `i` stands for backend `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Available(u64);

// A config lists at most `MAX_BACKENDS` versions: one bit each.
const _: () = assert!(MAX_BACKENDS <= u64::BITS as usize);

impl Available {
    /// Every backend.
    pub const ALL: Self = Self(u64::MAX);

    /// The backends `0..len` for which `f` holds.
    pub fn from_fn(len: usize, mut f: impl FnMut(usize) -> bool) -> Self {
        Self(
            (0..len.min(MAX_BACKENDS))
                .filter(|&i| f(i))
                .fold(0, |bits, i| bits | 1 << i),
        )
    }

    pub fn contains(self, index: usize) -> bool {
        index < MAX_BACKENDS && self.0 >> index & 1 == 1
    }

    /// The same set without backend `index`.
    pub fn without(self, index: usize) -> Self {
        match index < MAX_BACKENDS {
            true => Self(self.0 & !(1 << index)),
            false => self,
        }
    }
}

/// Chooses the version for one request.
///
/// 1. A pin header naming a listed version wins, whatever its weight or instances (so testers can
///    reach a version at weight 0 before it takes traffic).
/// 2. Cookie mode: a cookie naming an available version with weight > 0 keeps that version.
///    Otherwise the version comes from `random_bucket` and the response sets the cookie — so a
///    cookie for a version that lost its instances moves the user rather than stranding them.
/// 3. Header mode: the header's stable hash (`sticky_bucket`) picks the bucket; a request without
///    the header uses `random_bucket`.
/// 4. Otherwise `random_bucket` (in `0..TOTAL_WEIGHT`) picks the bucket.
///
/// Buckets are the cumulative weights in config order, so a version with weight 0 has an empty
/// bucket and is never chosen by 2–4. A bucket whose owner is not `available` goes to the
/// available versions in proportion to their weights (`owner`); when no version with weight is
/// available there is nowhere better to go, and the choice is made as if all were. Returns `None`
/// only when the weights add up to less than the bucket drawn, which a validated config never does.
pub fn choose<B: Weighted>(
    backends: &[B],
    available: Available,
    mode: StickyMode,
    keys: &RequestKeys<'_>,
    random_bucket: u32,
) -> Option<Decision> {
    if let Some(pin) = keys.pin
        && let Some(index) = backends.iter().position(|b| b.version().as_bytes() == pin)
    {
        return Some(Decision {
            index,
            reason: Reason::Pinned,
            set_cookie: false,
        });
    }
    let live = match weight_of(backends, available) {
        0 => Live {
            available: Available::ALL,
            weight: weight_of(backends, Available::ALL),
        },
        weight => Live { available, weight },
    };
    match mode {
        StickyMode::Cookie => {
            if let Some(cookie) = keys.cookie
                && let Some(index) = (0..backends.len()).find(|&i| {
                    let backend = &backends[i];
                    backend.weight() > 0
                        && live.available.contains(i)
                        && backend.version().as_bytes() == cookie
                })
            {
                return Some(Decision {
                    index,
                    reason: Reason::Cookie,
                    set_cookie: false,
                });
            }
            let index = owner(backends, live, random_bucket)?;
            Some(Decision {
                index,
                reason: Reason::Weighted,
                set_cookie: true,
            })
        }
        StickyMode::Header => match keys.header {
            Some(value) => {
                let index = owner(backends, live, sticky_bucket(value))?;
                Some(Decision {
                    index,
                    reason: Reason::Header,
                    set_cookie: false,
                })
            }
            None => weighted(backends, live, random_bucket),
        },
        StickyMode::None => weighted(backends, live, random_bucket),
    }
}

/// The backends a bucket may go to, and their total weight (> 0).
#[derive(Clone, Copy)]
struct Live {
    available: Available,
    weight: u32,
}

fn weighted<B: Weighted>(backends: &[B], live: Live, bucket: u32) -> Option<Decision> {
    let index = owner(backends, live, bucket)?;
    Some(Decision {
        index,
        reason: Reason::Weighted,
        set_cookie: false,
    })
}

/// Who serves `bucket`: its owner if available; otherwise its position within the owner's
/// interval, scaled to the available versions' total weight, picks among them. Scaling keeps the
/// split proportional to their weights, and keeps a sticky user (a fixed bucket) on one version
/// for as long as the owner stays unavailable, while users of available versions do not move.
fn owner<B: Weighted>(backends: &[B], live: Live, bucket: u32) -> Option<usize> {
    let (index, start) = interval(backends, Available::ALL, bucket)?;
    if live.available.contains(index) {
        return Some(index);
    }
    // The owner's weight is > 0 (it owns a bucket) and `offset` is below it, so `scaled` is below
    // the available versions' weight.
    let offset = u64::from(bucket - start);
    let scaled = offset * u64::from(live.weight) / u64::from(backends[index].weight());
    interval(backends, live.available, u32::try_from(scaled).ok()?).map(|(index, _)| index)
}

/// The backend among `available` whose cumulative-weight interval `[start, start + weight)` (over
/// the available backends only) contains `bucket`, with its start.
fn interval<B: Weighted>(backends: &[B], available: Available, bucket: u32) -> Option<(usize, u32)> {
    let mut start = 0u32;
    for (index, backend) in backends.iter().enumerate() {
        if !available.contains(index) {
            continue;
        }
        let end = start.saturating_add(backend.weight());
        if bucket < end {
            return Some((index, start));
        }
        start = end;
    }
    None
}

/// The total weight of the `available` backends.
fn weight_of<B: Weighted>(backends: &[B], available: Available) -> u32 {
    backends
        .iter()
        .enumerate()
        .filter(|&(i, _)| available.contains(i))
        .fold(0, |sum, (_, b)| sum.saturating_add(b.weight()))
}

/// The backend whose cumulative-weight interval `[start, start + weight)` contains `bucket`.
pub fn bucket_owner<B: Weighted>(backends: &[B], bucket: u32) -> Option<usize> {
    interval(backends, Available::ALL, bucket).map(|(index, _)| index)
}

/// The stable bucket in `0..TOTAL_WEIGHT` of a sticky header value: FNV-1a (64-bit) followed by
/// the splitmix64 finalizer, mapped by multiply-shift. Fixed constants, so a user lands in the
/// same bucket across requests, routers and restarts; this is part of the router's contract.
pub fn sticky_bucket(value: &[u8]) -> u32 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = FNV_OFFSET;
    for &byte in value {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    ((u128::from(hash) * u128::from(TOTAL_WEIGHT)) >> 64) as u32
}

/// The value of cookie `name` in a `Cookie` request header value (`a=1; b=2`), if present.
pub fn cookie_value<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let (key, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
        (key.trim_ascii() == name.as_bytes()).then(|| {
            let value = value[1..].trim_ascii();
            value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(weights: &[(&str, u32)]) -> Vec<Backend> {
        weights
            .iter()
            .map(|&(version, weight)| Backend {
                version: version.into(),
                weight,
                upstreams: vec![],
            })
            .collect()
    }

    fn keys<'a>(pin: Option<&'a str>, cookie: Option<&'a str>, header: Option<&'a str>) -> RequestKeys<'a> {
        RequestKeys {
            pin: pin.map(str::as_bytes),
            cookie: cookie.map(str::as_bytes),
            header: header.map(str::as_bytes),
        }
    }

    #[test]
    fn buckets_follow_cumulative_weights() {
        let b = backends(&[("a", 2500), ("zero", 0), ("b", 7000), ("c", 500)]);
        let cases = [
            (0, Some(0)),
            (2499, Some(0)),
            (2500, Some(2)),
            (9499, Some(2)),
            (9500, Some(3)),
            (9999, Some(3)),
        ];
        for (bucket, expected) in cases {
            assert_eq!(bucket_owner(&b, bucket), expected, "bucket {bucket}");
        }
        assert_eq!(bucket_owner(&b, 10_000), None);
        // Every bucket has an owner with weight > 0, and each owner's share is its weight.
        let mut counts = [0u32; 4];
        for bucket in 0..TOTAL_WEIGHT {
            counts[bucket_owner(&b, bucket).expect("owned")] += 1;
        }
        assert_eq!(counts, [2500, 0, 7000, 500]);
    }

    /// (name, mode, keys, random bucket) -> (version, reason, set_cookie)
    type Case<'a> = (&'a str, StickyMode, RequestKeys<'a>, u32, (&'a str, Reason, bool));

    #[test]
    fn choice_table() {
        use Reason::*;
        use StickyMode as M;
        let b = backends(&[("blue", 9000), ("green", 1000), ("dark", 0)]);
        // (name, mode, keys, random bucket) -> (version, reason, set_cookie)
        let cases: Vec<Case<'_>> = vec![
            (
                "random low",
                M::None,
                keys(None, None, None),
                0,
                ("blue", Weighted, false),
            ),
            (
                "random high",
                M::None,
                keys(None, None, None),
                9500,
                ("green", Weighted, false),
            ),
            (
                "pin wins over bucket",
                M::None,
                keys(Some("green"), None, None),
                0,
                ("green", Pinned, false),
            ),
            (
                "pin reaches weight 0",
                M::None,
                keys(Some("dark"), None, None),
                0,
                ("dark", Pinned, false),
            ),
            (
                "unknown pin ignored",
                M::None,
                keys(Some("r99"), None, None),
                9500,
                ("green", Weighted, false),
            ),
            (
                "pin wins over cookie",
                M::Cookie,
                keys(Some("green"), Some("blue"), None),
                0,
                ("green", Pinned, false),
            ),
            (
                "cookie kept",
                M::Cookie,
                keys(None, Some("green"), None),
                0,
                ("green", Cookie, false),
            ),
            (
                "no cookie sets one",
                M::Cookie,
                keys(None, None, None),
                9999,
                ("green", Weighted, true),
            ),
            (
                "cookie for weight 0 reassigned",
                M::Cookie,
                keys(None, Some("dark"), None),
                10,
                ("blue", Weighted, true),
            ),
            (
                "cookie for unknown reassigned",
                M::Cookie,
                keys(None, Some("r1"), None),
                9100,
                ("green", Weighted, true),
            ),
            (
                "cookie ignored without mode",
                M::None,
                keys(None, Some("green"), None),
                0,
                ("blue", Weighted, false),
            ),
            (
                "header without value is random",
                M::Header,
                keys(None, None, None),
                9999,
                ("green", Weighted, false),
            ),
        ];
        for (name, mode, keys, bucket, (version, reason, set_cookie)) in cases {
            let d = choose(&b, Available::ALL, mode, &keys, bucket).expect("a decision");
            assert_eq!(
                (b[d.index].version.as_str(), d.reason, d.set_cookie),
                (version, reason, set_cookie),
                "{name}"
            );
        }
    }

    #[test]
    fn header_choice_ignores_random_bucket_and_matches_hash() {
        let b = backends(&[("blue", 5000), ("green", 5000)]);
        for user in ["alice", "bob", "user-1", "user-2", ""] {
            let keys = keys(None, None, Some(user));
            let first = choose(&b, Available::ALL, StickyMode::Header, &keys, 0).expect("decision");
            for bucket in [1, 5000, 9999] {
                assert_eq!(
                    choose(&b, Available::ALL, StickyMode::Header, &keys, bucket),
                    Some(first),
                    "user {user}"
                );
            }
            assert_eq!(
                Some(first.index),
                bucket_owner(&b, sticky_bucket(user.as_bytes()))
            );
            assert_eq!(first.reason, Reason::Header);
        }
    }

    #[test]
    fn sticky_bucket_is_stable_and_spread() {
        // Pinned values: changing the hash moves users between versions, so it must not change.
        let pinned: Vec<u32> = ["", "a", "alice", "user-42"]
            .iter()
            .map(|v| sticky_bucket(v.as_bytes()))
            .collect();
        assert_eq!(pinned, STABLE_BUCKETS);
        // 10,000 distinct ids fall evenly enough in ten deciles (expected 1,000 each; 5 sd ≈ 150).
        let mut deciles = [0u32; 10];
        for i in 0..10_000 {
            deciles[(sticky_bucket(format!("user-{i}").as_bytes()) / 1000) as usize] += 1;
        }
        for count in deciles {
            assert!((850..=1150).contains(&count), "deciles {deciles:?}");
        }
    }

    // Computed independently (Python) from the definition above.
    const STABLE_BUCKETS: [u32; 4] = [9576, 107, 7727, 4768];

    #[test]
    fn zero_weight_never_chosen_without_pin() {
        let b = backends(&[("zero-a", 0), ("live", 10_000), ("zero-b", 0)]);
        for bucket in 0..TOTAL_WEIGHT {
            for mode in [StickyMode::None, StickyMode::Cookie] {
                let d = choose(
                    &b,
                    Available::ALL,
                    mode,
                    &keys(None, Some("zero-a"), None),
                    bucket,
                )
                .expect("decision");
                assert_eq!(d.index, 1);
            }
        }
        for i in 0..2000 {
            let user = format!("u{i}");
            let d = choose(
                &b,
                Available::ALL,
                StickyMode::Header,
                &keys(None, None, Some(&user)),
                0,
            )
            .expect("decision");
            assert_eq!(d.index, 1);
        }
    }

    #[test]
    fn an_unavailable_versions_buckets_go_to_the_others_by_weight() {
        let b = backends(&[("blue", 5000), ("green", 3000), ("red", 2000)]);
        let without_blue = Available::from_fn(3, |i| i != 0);
        let mut counts = [0u32; 3];
        for bucket in 0..TOTAL_WEIGHT {
            let d = choose(
                &b,
                without_blue,
                StickyMode::None,
                &keys(None, None, None),
                bucket,
            )
            .expect("decision");
            counts[d.index] += 1;
            // Buckets of available versions do not move.
            if bucket >= 5000 {
                assert_eq!(Some(d.index), bucket_owner(&b, bucket), "bucket {bucket}");
            }
        }
        // Green and red split all the traffic 3:2, exactly.
        assert_eq!(counts, [0, 6000, 4000]);
        let only_red = Available::from_fn(3, |i| i == 2);
        for bucket in 0..TOTAL_WEIGHT {
            let d =
                choose(&b, only_red, StickyMode::None, &keys(None, None, None), bucket).expect("decision");
            assert_eq!(d.index, 2);
        }
    }

    /// (name, available, mode, keys, random bucket) -> (version, reason, set_cookie)
    type UnavailableCase<'a> = (
        &'a str,
        Available,
        StickyMode,
        RequestKeys<'a>,
        u32,
        (&'a str, Reason, bool),
    );

    #[test]
    fn choice_table_with_a_version_unavailable() {
        use Reason::*;
        use StickyMode as M;
        let b = backends(&[("blue", 9000), ("green", 1000), ("dark", 0)]);
        let no_green = Available::from_fn(3, |i| i != 1);
        let no_blue = Available::from_fn(3, |i| i != 0);
        let only_dark = Available::from_fn(3, |i| i == 2);
        let none = Available::from_fn(3, |_| false);
        let cases: Vec<UnavailableCase<'_>> = vec![
            (
                "green's bucket goes to blue",
                no_green,
                M::None,
                keys(None, None, None),
                9500,
                ("blue", Weighted, false),
            ),
            (
                "blue's bucket goes to green",
                no_blue,
                M::None,
                keys(None, None, None),
                0,
                ("green", Weighted, false),
            ),
            (
                "a pin still reaches it",
                no_green,
                M::None,
                keys(Some("green"), None, None),
                0,
                ("green", Pinned, false),
            ),
            (
                "its cookie is replaced",
                no_green,
                M::Cookie,
                keys(None, Some("green"), None),
                9999,
                ("blue", Weighted, true),
            ),
            (
                "another version's cookie is kept",
                no_green,
                M::Cookie,
                keys(None, Some("blue"), None),
                9999,
                ("blue", Cookie, false),
            ),
            (
                "a weight-0 version takes no rerouted traffic: as if all were available",
                only_dark,
                M::None,
                keys(None, None, None),
                9500,
                ("green", Weighted, false),
            ),
            (
                "nothing with weight available: the cookie is kept",
                only_dark,
                M::Cookie,
                keys(None, Some("green"), None),
                0,
                ("green", Cookie, false),
            ),
            (
                "nothing available at all: the weights as they are",
                none,
                M::None,
                keys(None, None, None),
                9500,
                ("green", Weighted, false),
            ),
        ];
        for (name, available, mode, keys, bucket, (version, reason, set_cookie)) in cases {
            let d = choose(&b, available, mode, &keys, bucket).expect("a decision");
            assert_eq!(
                (b[d.index].version.as_str(), d.reason, d.set_cookie),
                (version, reason, set_cookie),
                "{name}"
            );
        }
    }

    #[test]
    fn header_users_of_an_unavailable_version_move_together_and_stay() {
        let b = backends(&[("blue", 5000), ("green", 2500), ("red", 2500)]);
        let no_blue = Available::from_fn(3, |i| i != 0);
        let mut moved = [0u32; 3];
        for i in 0..4000 {
            let user = format!("user-{i}");
            let header = keys(None, None, Some(&user));
            let before = choose(&b, Available::ALL, StickyMode::Header, &header, 0).expect("decision");
            let during = choose(&b, no_blue, StickyMode::Header, &header, 0).expect("decision");
            // The same user lands on the same version on every request during the outage.
            for bucket in [1, 9999] {
                assert_eq!(
                    choose(&b, no_blue, StickyMode::Header, &header, bucket),
                    Some(during)
                );
            }
            if before.index == 0 {
                moved[during.index] += 1;
            } else {
                assert_eq!(during, before, "{user} was not on blue and stays put");
            }
        }
        // Blue's users (≈2000) are split evenly between green and red (5 sd ≈ 110).
        assert_eq!(moved[0], 0);
        assert!(moved[1].abs_diff(moved[2]) < 220, "{moved:?}");
    }

    #[test]
    fn available_set() {
        let set = Available::from_fn(5, |i| i % 2 == 0);
        let members: Vec<bool> = (0..6).map(|i| set.contains(i)).collect();
        assert_eq!(members, [true, false, true, false, true, false]);
        assert!(Available::ALL.contains(MAX_BACKENDS - 1));
        assert!(!Available::ALL.contains(MAX_BACKENDS));
        let fewer = set.without(2).without(3);
        let members: Vec<bool> = (0..5).map(|i| fewer.contains(i)).collect();
        assert_eq!(members, [true, false, false, false, true]);
    }

    #[test]
    fn cookie_parsing() {
        let cases: [(&str, &str, Option<&str>); 7] = [
            ("conveyor_version=r12", "conveyor_version", Some("r12")),
            ("a=1; conveyor_version=r12; b=2", "conveyor_version", Some("r12")),
            ("a=1;conveyor_version = r3 ", "conveyor_version", Some("r3")),
            ("conveyor_version=\"r4\"", "conveyor_version", Some("r4")),
            ("xconveyor_version=r1", "conveyor_version", None),
            ("conveyor_version", "conveyor_version", None),
            ("", "conveyor_version", None),
        ];
        for (header, name, expected) in cases {
            assert_eq!(
                cookie_value(header.as_bytes(), name),
                expected.map(str::as_bytes),
                "{header:?}"
            );
        }
    }
}
