//! Semantic versions exactly as flagd's `sem_ver` sees them: flagd prefixes a missing `v` and
//! validates with Go's `golang.org/x/mod/semver`, so `1`, `1.2` (shorthands for `1.0.0`,
//! `1.2.0`) and a leading `v` are accepted, build metadata is ignored and anything else is
//! invalid (the operation is then false).

use std::cmp::Ordering;

/// The comparison a `sem_ver` rule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SemVerOp {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    /// `~`: same major and minor version.
    SameMinor,
    /// `^`: same major version.
    SameMajor,
}

impl SemVerOp {
    pub fn parse(op: &str) -> Option<SemVerOp> {
        Some(match op {
            "=" => SemVerOp::Equal,
            "!=" => SemVerOp::NotEqual,
            "<" => SemVerOp::Less,
            "<=" => SemVerOp::LessOrEqual,
            ">" => SemVerOp::Greater,
            ">=" => SemVerOp::GreaterOrEqual,
            "~" => SemVerOp::SameMinor,
            "^" => SemVerOp::SameMajor,
            _ => return None,
        })
    }
}

/// A parsed version; the numeric parts stay digit strings so any size compares correctly.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version<'a> {
    major: &'a str,
    minor: &'a str,
    patch: &'a str,
    prerelease: Option<&'a str>,
}

/// `actual op target`, or `None` when either side is not a valid version.
pub fn compare(actual: &str, op: SemVerOp, target: &str) -> Option<bool> {
    let a = parse(actual)?;
    let b = parse(target)?;
    Some(match op {
        SemVerOp::Equal => cmp(&a, &b) == Ordering::Equal,
        SemVerOp::NotEqual => cmp(&a, &b) != Ordering::Equal,
        SemVerOp::Less => cmp(&a, &b) == Ordering::Less,
        SemVerOp::LessOrEqual => cmp(&a, &b) != Ordering::Greater,
        SemVerOp::Greater => cmp(&a, &b) == Ordering::Greater,
        SemVerOp::GreaterOrEqual => cmp(&a, &b) != Ordering::Less,
        SemVerOp::SameMinor => a.major == b.major && a.minor == b.minor,
        SemVerOp::SameMajor => a.major == b.major,
    })
}

fn parse(text: &str) -> Option<Version<'_>> {
    // flagd adds the `v` Go's package requires when it is missing; strip one here instead.
    let v = text.strip_prefix('v').unwrap_or(text);
    let (major, rest) = number(v)?;
    if rest.is_empty() {
        return Some(Version {
            major,
            minor: "0",
            patch: "0",
            prerelease: None,
        });
    }
    let (minor, rest) = number(rest.strip_prefix('.')?)?;
    if rest.is_empty() {
        return Some(Version {
            major,
            minor,
            patch: "0",
            prerelease: None,
        });
    }
    let (patch, mut rest) = number(rest.strip_prefix('.')?)?;
    let mut prerelease = None;
    if let Some(after) = rest.strip_prefix('-') {
        let end = after.find('+').unwrap_or(after.len());
        let pre = &after[..end];
        if !pre.split('.').all(prerelease_identifier) {
            return None;
        }
        prerelease = Some(pre);
        rest = &after[end..];
    }
    if let Some(build) = rest.strip_prefix('+') {
        if !build
            .split('.')
            .all(|id| !id.is_empty() && id.bytes().all(identifier_byte))
        {
            return None;
        }
        rest = "";
    }
    rest.is_empty().then_some(Version {
        major,
        minor,
        patch,
        prerelease,
    })
}

/// A decimal number without leading zeros, and what follows it.
fn number(s: &str) -> Option<(&str, &str)> {
    let end = s.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(s.len());
    let digits = &s[..end];
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    Some((digits, &s[end..]))
}

fn identifier_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

fn prerelease_identifier(id: &str) -> bool {
    if id.is_empty() || !id.bytes().all(identifier_byte) {
        return false;
    }
    let numeric = id.bytes().all(|b| b.is_ascii_digit());
    !(numeric && id.len() > 1 && id.starts_with('0'))
}

fn cmp(a: &Version<'_>, b: &Version<'_>) -> Ordering {
    cmp_digits(a.major, b.major)
        .then_with(|| cmp_digits(a.minor, b.minor))
        .then_with(|| cmp_digits(a.patch, b.patch))
        .then_with(|| match (a.prerelease, b.prerelease) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => cmp_prerelease(x, y),
        })
}

fn cmp_digits(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn cmp_prerelease(a: &str, b: &str) -> Ordering {
    let mut xs = a.split('.');
    let mut ys = b.split('.');
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let xn = x.bytes().all(|b| b.is_ascii_digit());
                let yn = y.bytes().all(|b| b.is_ascii_digit());
                let ord = match (xn, yn) {
                    (true, true) => cmp_digits(x, y),
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    (false, false) => x.cmp(y),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{SemVerOp, compare};

    #[test]
    fn comparisons_follow_flagd() {
        use SemVerOp::*;
        let cases = [
            ("0.0.1", Less, "0.0.2", Some(true)),
            ("0.0.1", Less, "0.0.1", Some(false)),
            ("0.0.1", LessOrEqual, "0.0.1", Some(true)),
            ("0.0.2", LessOrEqual, "0.0.1", Some(false)),
            ("1.0.0", Equal, "1.0.0", Some(true)),
            ("v1.0.0", Equal, "1.0.0", Some(true)),
            ("1.0.0+build.7", Equal, "1.0.0", Some(true)),
            ("0.0.2", NotEqual, "0.0.1", Some(true)),
            ("0.0.2", GreaterOrEqual, "0.0.1", Some(true)),
            ("0.0.1", GreaterOrEqual, "0.0.2", Some(false)),
            ("1.0.0", Greater, "0.1.0", Some(true)),
            ("1.0.0", Greater, "1.0.0", Some(false)),
            ("1.3.4", SameMajor, "1.5.3", Some(true)),
            ("2.1.1", SameMajor, "1.1.1", Some(false)),
            ("1.3.4", SameMinor, "1.3.1", Some(true)),
            ("2.2.1", SameMinor, "2.1.1", Some(false)),
            ("3.0.1", SameMinor, "3.0.0", Some(true)),
            ("3.1.0", SameMinor, "3.0.0", Some(false)),
            ("3.1.0", SameMajor, "3.0.0", Some(true)),
            // Shorthands: Go's semver reads v1 as v1.0.0 and v1.2 as v1.2.0.
            ("1", Equal, "1.0.0", Some(true)),
            ("1.2", Equal, "1.2.0", Some(true)),
            ("10.0.0", Greater, "9.0.0", Some(true)),
            ("99999999999999999999.0.0", Greater, "9.0.0", Some(true)),
            // Pre-releases sort before the release and by identifier.
            ("2.0.0-alpha", Less, "2.0.0", Some(true)),
            ("1.0.0-alpha", Less, "1.0.0-alpha.1", Some(true)),
            ("1.0.0-alpha.1", Less, "1.0.0-alpha.beta", Some(true)),
            ("1.0.0-beta.2", Less, "1.0.0-beta.11", Some(true)),
            ("1.0.0-beta.11", Less, "1.0.0-rc.1", Some(true)),
            // Invalid versions make the operation false in flagd.
            ("2.0.0.0", Equal, "2.0.0", None),
            ("invalid", Greater, "1.0.0", None),
            ("1.0.0", Greater, "invalid", None),
            ("01.0.0", Equal, "1.0.0", None),
            ("1.0.0-", Equal, "1.0.0", None),
            ("1.0.0-01", Equal, "1.0.0", None),
            ("1.2-pre", Equal, "1.2.0", None),
            ("vv1.0.0", Equal, "1.0.0", None),
            ("V1.0.0", Equal, "1.0.0", None),
            ("", Equal, "1.0.0", None),
            ("1.0.0+", Equal, "1.0.0", None),
        ];
        for (a, op, b, want) in cases {
            assert_eq!(compare(a, op, b), want, "{a} {op:?} {b}");
        }
    }

    #[test]
    fn operators_parse() {
        for op in ["=", "!=", "<", "<=", ">", ">=", "~", "^"] {
            assert!(SemVerOp::parse(op).is_some(), "{op}");
        }
        assert_eq!(SemVerOp::parse("=="), None);
        assert_eq!(SemVerOp::parse(""), None);
    }
}
