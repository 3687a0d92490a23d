//! The checker every part of the parser reports through: errors at a node's `line:col`, and the
//! typed readers of YAML nodes (mappings with known keys and typo suggestions, strings, booleans,
//! lists, durations) that turn a mistake into one precise error instead of a failure.

use std::collections::HashSet;
use std::time::Duration;

use crate::error::SpecError;
use crate::yaml::{Kind, Node};

pub(super) struct Checker<'f> {
    pub(super) file: &'f str,
    pub(super) errors: Vec<SpecError>,
}

/// The known entries of a mapping, first occurrence of each key.
pub(super) struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    pub(super) fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(_, _, v)| *v)
    }
}

/// A mapping key as text; `convert` makes every key a string.
pub(super) fn key_text(key: &Node) -> &str {
    match &key.kind {
        Kind::Str(s) => s,
        _ => "",
    }
}

impl Checker<'_> {
    pub(super) fn error_at(&mut self, line: usize, col: usize, message: impl Into<String>) {
        self.errors.push(SpecError {
            file: self.file.to_string(),
            line,
            col,
            message: message.into(),
        });
    }

    pub(super) fn error(&mut self, node: &Node, message: impl Into<String>) {
        self.error_at(node.line, node.col, message);
    }

    pub(super) fn type_error(&mut self, what: &str, expected: &str, node: &Node) {
        let found = node.describe();
        self.error(node, format!("{what}: expected {expected}, found {found}"));
    }

    /// Entries of a mapping with distinct keys; later duplicates are errors, except keys brought
    /// in by a `<<` merge, which explicit keys override as YAML intends.
    pub(super) fn unique_entries<'n>(
        &mut self,
        entries: &'n [(Node, Node)],
        noun: &str,
    ) -> Vec<(&'n str, &'n Node, &'n Node)> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let name = key_text(key);
            if seen.insert(name) {
                out.push((name, key, value));
            } else if !key.via_alias {
                self.error(key, format!("duplicate {noun} '{name}'"));
            }
        }
        out
    }

    /// A mapping with a fixed key set: unknown keys are errors, with a suggestion.
    pub(super) fn fields<'n>(&mut self, node: &'n Node, what: &str, allowed: &[&str]) -> Option<Fields<'n>> {
        let Kind::Map(entries) = &node.kind else {
            self.type_error(what, "a mapping", node);
            return None;
        };
        let mut known = Vec::new();
        for (name, key, value) in self.unique_entries(entries, "key") {
            if allowed.contains(&name) {
                known.push((name, key, value));
            } else {
                let message = match suggest(name, allowed.iter().copied()) {
                    Some(s) => format!("unknown key '{name}' — did you mean '{s}'?"),
                    None => format!("unknown key '{name}'; expected one of: {}", allowed.join(", ")),
                };
                self.error(key, message);
            }
        }
        Some(Fields { entries: known })
    }

    pub(super) fn string(&mut self, what: &str, node: &Node) -> Option<String> {
        match &node.kind {
            Kind::Str(s) => Some(s.clone()),
            // A number where text is expected is almost always meant as text (`name: 2024`).
            Kind::Int(_, text) | Kind::Float(text) => Some(text.clone()),
            _ => {
                self.type_error(what, "a string", node);
                None
            }
        }
    }

    pub(super) fn non_empty_string(&mut self, what: &str, node: &Node) -> Option<String> {
        let s = self.string(what, node)?;
        if s.trim().is_empty() {
            self.error(node, format!("{what} must not be empty"));
            return None;
        }
        Some(s)
    }

    pub(super) fn boolean(&mut self, what: &str, node: &Node) -> Option<bool> {
        match node.kind {
            Kind::Bool(b) => Some(b),
            _ => {
                self.type_error(what, "true or false", node);
                None
            }
        }
    }

    /// `x` or `[x, y]`; returns each string with its node.
    pub(super) fn string_list<'n>(&mut self, what: &str, node: &'n Node) -> Vec<(String, &'n Node)> {
        let expected = "a string or a list of strings";
        match &node.kind {
            Kind::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match &item.kind {
                        Kind::Str(_) | Kind::Int(..) | Kind::Float(_) => {
                            if let Some(s) = self.string(what, item) {
                                out.push((s, item));
                            }
                        }
                        _ => self.type_error(what, "a list of strings", item),
                    }
                }
                out
            }
            Kind::Str(_) | Kind::Int(..) | Kind::Float(_) => {
                self.string(what, node).map(|s| (s, node)).into_iter().collect()
            }
            _ => {
                self.type_error(what, expected, node);
                Vec::new()
            }
        }
    }

    pub(super) fn duration(&mut self, what: &str, node: &Node) -> Option<Duration> {
        let parsed = match &node.kind {
            Kind::Int(n, _) => u64::try_from(*n).ok().map(Duration::from_secs),
            Kind::Str(s) => parse_duration(s),
            _ => None,
        };
        match parsed {
            Some(d) if d.is_zero() => {
                self.error(node, format!("{what} must be greater than zero"));
                None
            }
            Some(d) => Some(d),
            None => {
                let shown = node.scalar_text().unwrap_or_else(|| node.describe().to_string());
                self.error(
                    node,
                    format!("invalid duration '{shown}' — use e.g. 90s, 10m, 1h30m"),
                );
                None
            }
        }
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`, plus `-` after the first character when `dash` is set.
pub(super) fn is_identifier(s: &str, dash: bool) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (dash && c == '-'))
}

/// The closest candidate, if it is close enough to be a plausible typo.
pub(super) fn suggest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (c, strsim::jaro_winkler(word, c), strsim::levenshtein(word, c)))
        // Short words are all within 2 edits of each other, so edit distance needs some length.
        .filter(|(_, jw, lev)| *jw > 0.8 || (*lev <= 2 && word.chars().count() > 3))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _, _)| c)
}

/// `90s`, `10m`, `1h30m`, `500ms`, or a bare number of seconds.
pub(super) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok().map(Duration::from_secs);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let amount: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // `ms` before `m`, or `500ms` would read as 500 minutes followed by junk.
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        let part = unit.checked_mul(u32::try_from(amount).ok()?)?;
        total = total.checked_add(part)?;
    }
    Some(total)
}

/// A cron expression refused (`on.schedule`, a freeze window's `start`/`end`). Like everything
/// this parser reports, the author's mistake: parsing has no internal failures.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CronError {
    #[error(
        "invalid cron expression '{expr}': expected 5 fields (minute hour day month weekday) or 6 with seconds, found {fields}"
    )]
    FieldCount { expr: String, fields: usize },
    #[error("invalid cron expression '{expr}': {}", .source.to_string().trim_end_matches('.'))]
    Invalid {
        expr: String,
        source: croner::errors::CronError,
    },
}

/// An `artifacts` pattern refused: the author's mistake.
#[derive(Debug, thiserror::Error)]
pub(super) enum ArtifactError {
    #[error("artifact pattern must not be empty")]
    Empty,
    #[error("artifact pattern '{0}' must be relative to the workspace")]
    Absolute(String),
    #[error("artifact pattern '{0}' must not contain '..'")]
    ParentDir(String),
    #[error("invalid artifact pattern '{pattern}': {}", .source.kind())]
    Glob { pattern: String, source: globset::Error },
}

pub(crate) fn check_cron(expr: &str) -> Result<(), CronError> {
    let trimmed = expr.trim();
    let fields = trimmed.split_whitespace().count();
    // croner also takes 7 fields (years); the model promises 5 or 6.
    if !trimmed.starts_with('@') && !(5..=6).contains(&fields) {
        return Err(CronError::FieldCount {
            expr: expr.to_owned(),
            fields,
        });
    }
    trimmed
        .parse::<croner::Cron>()
        .map(|_| ())
        .map_err(|source| CronError::Invalid {
            expr: expr.to_owned(),
            source,
        })
}

pub(super) fn check_artifact(pattern: &str) -> Result<(), ArtifactError> {
    if pattern.trim().is_empty() {
        return Err(ArtifactError::Empty);
    }
    let bytes = pattern.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if pattern.starts_with('/') || pattern.starts_with('\\') || drive {
        return Err(ArtifactError::Absolute(pattern.to_owned()));
    }
    if pattern.split(['/', '\\']).any(|part| part == "..") {
        return Err(ArtifactError::ParentDir(pattern.to_owned()));
    }
    globset::Glob::new(pattern)
        .map(|_| ())
        .map_err(|source| ArtifactError::Glob {
            pattern: pattern.to_owned(),
            source,
        })
}
