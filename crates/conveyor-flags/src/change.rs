//! Changing a definition one flag at a time (`FlagPatch`), and describing what changed between
//! two definitions for people (`describe`). Both work on flagd JSON; the caller loads the result
//! with [`FlagSet::from_value`](crate::FlagSet::from_value) so a patch that breaks the
//! definition is refused like any other bad definition.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::definition::FlagState;
use crate::error::{DefinitionError, error};
use crate::path::JsonPath;

/// One change to one flag. Fields left out stay as they are; `definition` replaces (or adds)
/// the whole flag and may not be combined with the others.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct FlagPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<FlagState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_variant: Option<String>,
    /// A percentage rollout: targeting becomes flagd's `fractional` over these variants and
    /// weights, bucketed by targeting key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(value_type = Option<Vec<Vec<Object>>>, example = json!([["on", 25], ["off", 75]])))]
    pub fractional: Option<Vec<(String, u32)>>,
    /// The whole flag, in flagd's format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<Value>,
}

impl FlagPatch {
    pub fn is_empty(&self) -> bool {
        *self == FlagPatch::default()
    }

    /// A short description, e.g. `state DISABLED, fractional on:25 off:75`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(state) = self.state {
            parts.push(format!("state {}", state_name(state)));
        }
        if let Some(variant) = &self.default_variant {
            parts.push(format!("defaultVariant {variant}"));
        }
        if let Some(weights) = &self.fractional {
            let weights: Vec<String> = weights.iter().map(|(v, w)| format!("{v}:{w}")).collect();
            parts.push(format!("fractional {}", weights.join(" ")));
        }
        if self.definition.is_some() {
            parts.push("whole definition".into());
        }
        parts.join(", ")
    }
}

fn state_name(state: FlagState) -> &'static str {
    match state {
        FlagState::Enabled => "ENABLED",
        FlagState::Disabled => "DISABLED",
    }
}

/// `document` with `patch` applied to flag `key`. Checks only what the patch needs; the
/// result must still be loaded to be known valid.
pub fn apply_patch(document: &Value, key: &str, patch: &FlagPatch) -> Result<Value, DefinitionError> {
    let path = JsonPath::root().key("flags").key(key);
    if patch.is_empty() {
        return Err(error(&path, "the change is empty: say what to change"));
    }
    let mut document = document.clone();
    let flags = flags_mut(&mut document)?;
    if let Some(definition) = &patch.definition {
        if patch.state.is_some() || patch.default_variant.is_some() || patch.fractional.is_some() {
            return Err(error(
                &path,
                "a whole definition cannot be combined with other changes",
            ));
        }
        flags.insert(key.to_string(), definition.clone());
        return Ok(document);
    }
    let Some(Value::Object(flag)) = flags.get_mut(key) else {
        return Err(error(&path, format!("flag '{key}' does not exist")));
    };
    if let Some(state) = patch.state {
        flag.insert("state".into(), Value::String(state_name(state).into()));
    }
    if let Some(variant) = &patch.default_variant {
        flag.insert("defaultVariant".into(), Value::String(variant.clone()));
    }
    if let Some(weights) = &patch.fractional {
        if weights.is_empty() {
            return Err(error(
                &path.key("targeting"),
                "a rollout needs at least one variant",
            ));
        }
        let buckets: Vec<Value> = weights
            .iter()
            .map(|(variant, weight)| Value::Array(vec![Value::String(variant.clone()), Value::from(*weight)]))
            .collect();
        let mut rule = Map::new();
        rule.insert("fractional".into(), Value::Array(buckets));
        flag.insert("targeting".into(), Value::Object(rule));
    }
    Ok(document)
}

/// `document` without flag `key`.
pub fn remove_flag(document: &Value, key: &str) -> Result<Value, DefinitionError> {
    let mut document = document.clone();
    if flags_mut(&mut document)?.remove(key).is_none() {
        let path = JsonPath::root().key("flags").key(key);
        return Err(error(&path, format!("flag '{key}' does not exist")));
    }
    Ok(document)
}

fn flags_mut(document: &mut Value) -> Result<&mut Map<String, Value>, DefinitionError> {
    match document.get_mut("flags") {
        Some(Value::Object(flags)) => Ok(flags),
        _ => Err(error(
            &JsonPath::root().key("flags"),
            "must be an object of flags by key",
        )),
    }
}

/// What changed between two definitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// One line per change, e.g. `flag 'x': state ENABLED → DISABLED`.
    pub lines: Vec<String>,
    /// Flags added or changed.
    pub touched: Vec<String>,
    pub removed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// Compares two definitions (either may be `null`: no definition yet).
pub fn describe(old: &Value, new: &Value) -> Changes {
    let empty = Map::new();
    let flags = |v: &'_ Value| -> Map<String, Value> {
        v.get("flags")
            .and_then(Value::as_object)
            .unwrap_or(&empty)
            .clone()
    };
    let (before, after) = (flags(old), flags(new));
    let mut changes = Changes::default();
    for (key, flag) in &after {
        match before.get(key) {
            None => {
                changes.lines.push(format!("flag '{key}' added"));
                changes.touched.push(key.clone());
            }
            Some(previous) if previous != flag => {
                for property in ["state", "defaultVariant", "variants", "targeting", "metadata"] {
                    let (was, is) = (previous.get(property), flag.get(property));
                    if was != is {
                        changes.lines.push(format!(
                            "flag '{key}': {property} {} → {}",
                            short(was),
                            short(is)
                        ));
                    }
                }
                changes.touched.push(key.clone());
            }
            Some(_) => {}
        }
    }
    for key in before.keys().filter(|k| !after.contains_key(*k)) {
        changes.lines.push(format!("flag '{key}' removed"));
        changes.removed.push(key.clone());
    }
    for part in ["$evaluators", "metadata"] {
        if old.get(part) != new.get(part) {
            changes.lines.push(format!("{part} changed"));
        }
    }
    changes
}

/// A value as a diff line shows it: strings bare, small JSON inline, big JSON elided.
fn short(value: Option<&Value>) -> String {
    const MAX: usize = 80;
    match value {
        None | Some(Value::Null) => "(none)".into(),
        Some(Value::String(s)) if s.len() <= MAX => s.clone(),
        Some(other) => {
            let text = other.to_string();
            if text.len() <= MAX {
                text
            } else {
                format!("({} bytes of JSON)", text.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::definition::FlagSet;

    fn definition() -> Value {
        json!({"flags": {
            "dark-mode": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"},
            "banner": {"state": "ENABLED", "variants": {"a": "A", "b": "B"}, "defaultVariant": "a"}
        }})
    }

    #[test]
    fn patches_change_one_flag_and_are_described() {
        let old = definition();
        let cases: &[(FlagPatch, &[&str])] = &[
            (
                FlagPatch {
                    state: Some(FlagState::Disabled),
                    ..Default::default()
                },
                &["flag 'dark-mode': state ENABLED → DISABLED"],
            ),
            (
                FlagPatch {
                    default_variant: Some("on".into()),
                    ..Default::default()
                },
                &["flag 'dark-mode': defaultVariant off → on"],
            ),
            (
                FlagPatch {
                    fractional: Some(vec![("on".into(), 25), ("off".into(), 75)]),
                    ..Default::default()
                },
                &[r#"flag 'dark-mode': targeting (none) → {"fractional":[["on",25],["off",75]]}"#],
            ),
        ];
        for (patch, expected) in cases {
            let new = apply_patch(&old, "dark-mode", patch).unwrap();
            FlagSet::from_value(new.clone()).unwrap();
            let changes = describe(&old, &new);
            assert_eq!(changes.lines, *expected, "{}", patch.summary());
            assert_eq!(changes.touched, vec!["dark-mode"]);
        }
    }

    #[test]
    fn additions_removals_and_refusals() {
        let old = definition();
        let added = apply_patch(
            &old,
            "new",
            &FlagPatch {
                definition: Some(json!({"state": "DISABLED", "variants": {"x": 1}, "defaultVariant": "x"})),
                ..Default::default()
            },
        )
        .unwrap();
        let removed = remove_flag(&added, "banner").unwrap();
        let changes = describe(&old, &removed);
        assert_eq!(changes.lines, vec!["flag 'new' added", "flag 'banner' removed"]);
        assert_eq!(
            (changes.touched, changes.removed),
            (vec!["new".to_string()], vec!["banner".to_string()])
        );
        assert_eq!(describe(&Value::Null, &old).lines.len(), 2);
        assert!(describe(&old, &old).is_empty());

        let missing = apply_patch(
            &old,
            "nope",
            &FlagPatch {
                state: Some(FlagState::Enabled),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(missing.to_string(), "flags.nope: flag 'nope' does not exist");
        let empty = apply_patch(&old, "banner", &FlagPatch::default()).unwrap_err();
        assert!(empty.message.contains("empty"), "{empty}");
        // A patch naming a variant the flag does not have fails when the result is loaded.
        let bad = apply_patch(
            &old,
            "banner",
            &FlagPatch {
                default_variant: Some("zzz".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let refused = FlagSet::from_value(bad).unwrap_err();
        assert_eq!(refused.path, "flags.banner.variants");
    }
}
