//! A located YAML tree: every node (and every mapping key) knows its 1-based line and column.
//!
//! serde-saphyr resolves scalars to typed values; for anything that is not a string we also keep
//! the scalar's source text, so keys such as `on` and env values such as `1.10` or `010` keep
//! their spelling instead of becoming `true`, `1.1` or `10`.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Error as YamlError, Location, Spanned};

/// Refuse alias bombs and pathological nesting long before they cost memory or stack.
const MAX_DEPTH: usize = 48;
const MAX_NODES: usize = 100_000;
const MAX_ALIASES: usize = 2_000;
const MAX_REPLAYED_EVENTS: usize = 50_000;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub kind: Kind,
    pub line: usize,
    pub col: usize,
    /// Reached through an alias or a `<<` merge rather than written here.
    pub via_alias: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Str(String),
    Bool(bool),
    /// An integer, with its source spelling (`0x1F`, `10`).
    Int(i128, String),
    /// A float, with its source spelling.
    Float(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A short noun for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Null => "nothing",
            Kind::Str(_) => "a string",
            Kind::Bool(_) => "a boolean",
            Kind::Int(..) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    /// The scalar as text, as the user spelled it (`None` for null and collections).
    pub fn scalar_text(&self) -> Option<String> {
        match &self.kind {
            Kind::Str(s) => Some(s.clone()),
            Kind::Bool(b) => Some(b.to_string()),
            Kind::Int(_, text) | Kind::Float(text) => Some(text.clone()),
            Kind::Null | Kind::Seq(_) | Kind::Map(_) => None,
        }
    }
}

/// What serde-saphyr hands us, before we attach source text.
#[derive(Debug)]
enum Raw {
    Null,
    Str(String),
    Bool(bool),
    Int(i128),
    Float(f64),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Raw, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }

    fn visit_u128<E>(self, v: u128) -> Result<Raw, E> {
        Ok(i128::try_from(v).map_or(Raw::Float(v as f64), Raw::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Raw::Map(entries))
    }
}

/// A YAML-level failure: syntax, budget, multiple documents.
#[derive(Debug)]
pub(crate) struct LoadError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

pub(crate) fn load(source: &str) -> Result<Node, LoadError> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.max_nodes = MAX_NODES;
    budget.max_aliases = MAX_ALIASES;
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = MAX_REPLAYED_EVENTS;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits = alias_limits;
    // Duplicates are detected on the tree so that all of them are reported with our wording.
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    // Only `true`/`false` are booleans: `on:` and `yes` stay strings.
    options.strict_booleans = true;
    let raw: Spanned<Raw> =
        serde_saphyr::from_str_with_options(source, options).map_err(|e| load_error(&e))?;
    Ok(convert(raw, source))
}

fn load_error(err: &YamlError) -> LoadError {
    let (line, col) = err.location().map_or((1, 1), |l| position(&l).unwrap_or((1, 1)));
    let mut inner = err;
    // Unwrap the presentation wrappers to classify the original error.
    while let YamlError::WithSnippet { error, .. } | YamlError::AliasError { error, .. } = inner {
        inner = error;
    }
    let message = match inner {
        YamlError::Budget { .. }
        | YamlError::AliasReplayLimitExceeded { .. }
        | YamlError::AliasExpansionLimitExceeded { .. }
        | YamlError::AliasReplayStackDepthExceeded { .. }
        | YamlError::AliasReplayCounterOverflow { .. } => {
            "document too large or too deeply nested (alias expansion/nesting budget exceeded)".to_string()
        }
        YamlError::MultipleDocuments { .. } => {
            "only one YAML document is allowed (remove the extra '---')".to_string()
        }
        other => {
            use serde_saphyr::MessageFormatter;
            let text = serde_saphyr::DefaultMessageFormatter.format_message(other);
            // Keep error lines single-line, whatever the underlying formatter produced.
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        }
    };
    LoadError { line, col, message }
}

fn position(loc: &Location) -> Option<(usize, usize)> {
    let line = usize::try_from(loc.line()).ok()?;
    let col = usize::try_from(loc.column()).ok()?;
    (line > 0 && col > 0).then_some((line, col))
}

fn convert(raw: Spanned<Raw>, source: &str) -> Node {
    let (line, col) = position(&raw.referenced).unwrap_or((1, 1));
    let via_alias = raw.referenced != raw.defined;
    // The source spelling is only meaningful where the value is written (not via an alias).
    let own_text = || {
        if via_alias {
            return None;
        }
        let span = raw.referenced.span();
        let start = usize::try_from(span.byte_offset()?).ok()?;
        let len = usize::try_from(span.byte_len()?).ok()?;
        let text = source.get(start..start.checked_add(len)?)?.trim();
        (!text.is_empty()).then(|| text.to_string())
    };
    let kind = match raw.value {
        Raw::Null => Kind::Null,
        Raw::Str(s) => Kind::Str(s),
        Raw::Bool(b) => Kind::Bool(b),
        Raw::Int(i) => Kind::Int(i, own_text().unwrap_or_else(|| i.to_string())),
        Raw::Float(f) => Kind::Float(own_text().unwrap_or_else(|| f.to_string())),
        Raw::Seq(items) => Kind::Seq(items.into_iter().map(|i| convert(i, source)).collect()),
        Raw::Map(entries) => Kind::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    // A key like `on`, `1` or `true` is still the key's text to us.
                    let mut key = convert(k, source);
                    if let Some(text) = key.scalar_text() {
                        key.kind = Kind::Str(text);
                    } else if key.kind == Kind::Null {
                        key.kind = Kind::Str("~".to_string());
                    }
                    (key, convert(v, source))
                })
                .collect(),
        ),
    };
    Node {
        kind,
        line,
        col,
        via_alias,
    }
}
