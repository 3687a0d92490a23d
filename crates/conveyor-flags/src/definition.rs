//! A flag set in flagd's definition format (`flags`, `$evaluators`, `metadata`), validated and
//! compiled in one go: a definition is either loaded whole or refused with the JSON path of
//! its first mistake, never half-loaded.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{DefinitionError, error};
use crate::jsonlogic::Rule;
use crate::jsonlogic::compile::Compiler;
use crate::path::JsonPath;

/// Flag or flag-set metadata: string, number or boolean values by key.
pub type Metadata = Map<String, Value>;

/// Bounds on definitions and on the work one evaluation may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Size of the definition text.
    pub max_definition_bytes: usize,
    pub max_flags: usize,
    /// Nesting of a targeting rule, shared evaluators included; checked at load so evaluation
    /// cannot overflow the stack.
    pub max_rule_depth: usize,
    /// Operations (and elements touched) per evaluation before it is cut off with `GENERAL`.
    pub max_operations: u64,
    /// Nesting of values a `reduce` may build.
    pub max_value_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_definition_bytes: 4 * 1024 * 1024,
            max_flags: 10_000,
            max_rule_depth: 64,
            max_operations: 50_000,
            max_value_depth: 64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum FlagState {
    Enabled,
    Disabled,
}

/// The one type all variants of a flag share (flagd's schema has one flag kind per type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VariantType {
    Boolean,
    String,
    Number,
    Object,
}

impl VariantType {
    fn of(value: &Value) -> Option<VariantType> {
        Some(match value {
            Value::Bool(_) => VariantType::Boolean,
            Value::String(_) => VariantType::String,
            Value::Number(_) => VariantType::Number,
            Value::Object(_) => VariantType::Object,
            Value::Null | Value::Array(_) => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VariantType::Boolean => "boolean",
            VariantType::String => "string",
            VariantType::Number => "number",
            VariantType::Object => "object",
        }
    }
}

/// One compiled flag; values and names are `Arc`s so an evaluation copies no data.
#[derive(Debug)]
pub(crate) struct Flag {
    pub key: Arc<str>,
    pub state: FlagState,
    pub variants: Vec<(Arc<str>, Arc<Value>)>,
    /// Index into `variants`; `None` means "use the caller's code default".
    pub default: Option<usize>,
    pub targeting: Option<Rule>,
    /// Flag-set metadata overlaid with the flag's own, as flagd merges them.
    pub metadata: Arc<Metadata>,
    pub variant_type: Option<VariantType>,
}

impl Flag {
    pub fn variant(&self, name: &str) -> Option<&(Arc<str>, Arc<Value>)> {
        self.variants.iter().find(|(n, _)| &**n == name)
    }
}

/// A loaded flag set, ready to evaluate; cheap to share behind an `Arc`.
pub struct FlagSet {
    pub(crate) flags: HashMap<Arc<str>, Flag>,
    /// Flag keys in order, for listings and bulk evaluation.
    pub(crate) keys: Vec<Arc<str>>,
    pub(crate) metadata: Arc<Metadata>,
    pub(crate) limits: Limits,
    source: Value,
}

impl fmt::Debug for FlagSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagSet")
            .field("flags", &self.keys)
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// A flag as a listing shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct FlagInfo<'a> {
    pub key: &'a str,
    pub state: FlagState,
    pub default_variant: Option<&'a str>,
    pub variants: Vec<&'a str>,
    pub variant_type: Option<VariantType>,
    /// Merged metadata (flag over flag set).
    pub metadata: &'a Metadata,
}

impl FlagSet {
    /// Loads a definition with the default [`Limits`].
    pub fn from_json(text: &str) -> Result<FlagSet, DefinitionError> {
        FlagSet::from_json_with_limits(text, Limits::default())
    }

    pub fn from_json_with_limits(text: &str, limits: Limits) -> Result<FlagSet, DefinitionError> {
        if text.len() > limits.max_definition_bytes {
            return Err(error(
                &JsonPath::root(),
                format!(
                    "the definition is {} bytes; the limit is {}",
                    text.len(),
                    limits.max_definition_bytes
                ),
            ));
        }
        // serde_json refuses more than 128 levels of nesting instead of overflowing the stack.
        let source: Value = serde_json::from_str(text)
            .map_err(|e| error(&JsonPath::root(), format!("not valid JSON: {e}")))?;
        FlagSet::from_value_with_limits(source, limits)
    }

    /// Loads an already parsed definition (no byte limit applies).
    pub fn from_value(source: Value) -> Result<FlagSet, DefinitionError> {
        FlagSet::from_value_with_limits(source, Limits::default())
    }

    pub fn from_value_with_limits(source: Value, limits: Limits) -> Result<FlagSet, DefinitionError> {
        let root = JsonPath::root();
        let Value::Object(document) = &source else {
            return Err(error(&root, "a flag definition must be a JSON object"));
        };
        for key in document.keys() {
            if !matches!(key.as_str(), "flags" | "$evaluators" | "metadata" | "$schema") {
                return Err(error(
                    &root.clone().key(key),
                    "unknown property; expected 'flags', '$evaluators', 'metadata' or '$schema'",
                ));
            }
        }
        let flags = match document.get("flags") {
            Some(Value::Object(flags)) => flags,
            Some(_) => return Err(error(&root.key("flags"), "must be an object of flags by key")),
            None => return Err(error(&root, "'flags' is missing")),
        };
        if flags.len() > limits.max_flags {
            return Err(error(
                &JsonPath::root().key("flags"),
                format!("{} flags; the limit is {}", flags.len(), limits.max_flags),
            ));
        }
        let evaluators = match document.get("$evaluators") {
            None => None,
            Some(Value::Object(evaluators)) => Some(evaluators),
            Some(_) => {
                return Err(error(
                    &JsonPath::root().key("$evaluators"),
                    "must be an object of targeting rules by name",
                ));
            }
        };
        let set_metadata = metadata(document.get("metadata"), JsonPath::root().key("metadata"))?;
        let mut compiler = Compiler::new(evaluators, limits.max_rule_depth);
        compiler.compile_evaluators()?;
        let mut compiled = HashMap::with_capacity(flags.len());
        let mut keys = Vec::with_capacity(flags.len());
        for (key, definition) in flags {
            let flag = flag(key, definition, &set_metadata, &mut compiler)?;
            keys.push(flag.key.clone());
            compiled.insert(flag.key.clone(), flag);
        }
        keys.sort();
        Ok(FlagSet {
            flags: compiled,
            keys,
            metadata: Arc::new(set_metadata),
            limits,
            source,
        })
    }

    /// The definition as loaded, in flagd's format (`$ref`s and `$evaluators` kept):
    /// `FlagSet::from_value(set.to_json())` loads the same flags.
    pub fn to_json(&self) -> Value {
        self.source.clone()
    }

    /// [`FlagSet::to_json`] as indented text.
    pub fn to_json_string(&self) -> String {
        format!("{:#}", self.source)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.flags.contains_key(key)
    }

    /// The flag set's own metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Every flag, by key.
    pub fn flags(&self) -> impl Iterator<Item = FlagInfo<'_>> + '_ {
        self.keys.iter().filter_map(|key| self.flag(key))
    }

    pub fn flag(&self, key: &str) -> Option<FlagInfo<'_>> {
        let flag = self.flags.get(key)?;
        Some(FlagInfo {
            key: &flag.key,
            state: flag.state,
            default_variant: flag.default.map(|i| &*flag.variants[i].0),
            variants: flag.variants.iter().map(|(name, _)| &**name).collect(),
            variant_type: flag.variant_type,
            metadata: &flag.metadata,
        })
    }
}

fn metadata(value: Option<&Value>, path: JsonPath) -> Result<Metadata, DefinitionError> {
    match value {
        None => Ok(Metadata::new()),
        Some(Value::Object(map)) => {
            for (key, value) in map {
                if !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                    return Err(error(
                        &path.key(key),
                        "metadata values must be strings, numbers or booleans",
                    ));
                }
            }
            Ok(map.clone())
        }
        Some(_) => Err(error(&path, "must be an object of metadata by key")),
    }
}

fn flag(
    key: &str,
    definition: &Value,
    set_metadata: &Metadata,
    compiler: &mut Compiler<'_>,
) -> Result<Flag, DefinitionError> {
    let path = JsonPath::root().key("flags").key(key);
    let at = |property: &str| path.clone().key(property);
    if key.is_empty() {
        return Err(error(&path, "a flag key must not be empty"));
    }
    let Value::Object(definition) = definition else {
        return Err(error(&path, "a flag must be an object"));
    };
    for property in definition.keys() {
        if !matches!(
            property.as_str(),
            "state" | "variants" | "defaultVariant" | "targeting" | "metadata"
        ) {
            return Err(error(
                &at(property),
                "unknown property; expected 'state', 'variants', 'defaultVariant', 'targeting' or 'metadata'",
            ));
        }
    }
    let state = match definition.get("state") {
        Some(Value::String(s)) if s == "ENABLED" => FlagState::Enabled,
        Some(Value::String(s)) if s == "DISABLED" => FlagState::Disabled,
        Some(other) => {
            return Err(error(
                &at("state"),
                format!("must be \"ENABLED\" or \"DISABLED\", not {other}"),
            ));
        }
        None => return Err(error(&path, "'state' is missing")),
    };
    let variant_values = match definition.get("variants") {
        Some(Value::Object(variants)) => variants,
        Some(_) => {
            return Err(error(
                &at("variants"),
                "must be an object of values by variant name",
            ));
        }
        None => return Err(error(&path, "'variants' is missing")),
    };
    let mut variants = Vec::with_capacity(variant_values.len());
    let mut variant_type: Option<(VariantType, &str)> = None;
    for (name, value) in variant_values {
        let variant_path = at("variants").key(name);
        if name.is_empty() {
            return Err(error(&variant_path, "a variant name must not be empty"));
        }
        let Some(kind) = VariantType::of(value) else {
            return Err(error(
                &variant_path,
                "a variant value must be a boolean, string, number or object",
            ));
        };
        match variant_type {
            Some((first, first_name)) if first != kind => {
                return Err(error(
                    &variant_path,
                    format!(
                        "is a {} but variant '{first_name}' is a {}; all variants of a flag have one type",
                        kind.as_str(),
                        first.as_str()
                    ),
                ));
            }
            Some(_) => {}
            None => variant_type = Some((kind, name)),
        }
        variants.push((Arc::<str>::from(name.as_str()), Arc::new(value.clone())));
    }
    let default = match definition.get("defaultVariant") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => match variants.iter().position(|(n, _)| &**n == name) {
            Some(i) => Some(i),
            None => {
                return Err(error(
                    &at("variants"),
                    format!("defaultVariant '{name}' is not a variant"),
                ));
            }
        },
        Some(_) => return Err(error(&at("defaultVariant"), "must be a variant name or null")),
    };
    let targeting = match definition.get("targeting") {
        None | Some(Value::Null) => None,
        // flagd treats an empty rule as no rule: the flag is static.
        Some(Value::Object(rule)) if rule.is_empty() => None,
        Some(rule @ Value::Object(_)) => Some(compiler.compile(rule, &mut at("targeting"))?),
        Some(_) => return Err(error(&at("targeting"), "must be a JsonLogic rule (an object)")),
    };
    let mut merged = set_metadata.clone();
    merged.extend(metadata(definition.get("metadata"), at("metadata"))?);
    Ok(Flag {
        key: Arc::from(key),
        state,
        variants,
        default,
        targeting,
        metadata: Arc::new(merged),
        variant_type: variant_type.map(|(kind, _)| kind),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refuse(definition: Value) -> String {
        FlagSet::from_value(definition.clone())
            .map(|_| ())
            .expect_err(&definition.to_string())
            .to_string()
    }

    fn flag_with(extra: Value) -> Value {
        let mut flag =
            json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"});
        if let (Some(flag), Value::Object(extra)) = (flag.as_object_mut(), extra) {
            flag.extend(extra);
        }
        json!({"flags": {"new-welcome": flag}})
    }

    #[test]
    fn bad_definitions_are_refused_with_their_path() {
        let cases = [
            (json!([]), "a flag definition must be a JSON object"),
            (json!({}), "'flags' is missing"),
            (json!({"flags": []}), "flags: must be an object of flags by key"),
            (
                json!({"flags": {}, "flagz": {}}),
                "flagz: unknown property; expected 'flags', '$evaluators', 'metadata' or '$schema'",
            ),
            (json!({"flags": {"f": 1}}), "flags.f: a flag must be an object"),
            (
                json!({"flags": {"": {}}}),
                r#"flags[""]: a flag key must not be empty"#,
            ),
            (
                flag_with(json!({"defaultVariant": "on "})),
                "flags.new-welcome.variants: defaultVariant 'on ' is not a variant",
            ),
            (
                flag_with(json!({"defaultVariant": 1})),
                "flags.new-welcome.defaultVariant: must be a variant name or null",
            ),
            (
                flag_with(json!({"state": "ON"})),
                r#"flags.new-welcome.state: must be "ENABLED" or "DISABLED", not "ON""#,
            ),
            (
                json!({"flags": {"f": {"variants": {}}}}),
                "flags.f: 'state' is missing",
            ),
            (
                json!({"flags": {"f": {"state": "ENABLED"}}}),
                "flags.f: 'variants' is missing",
            ),
            (
                flag_with(json!({"variants": []})),
                "flags.new-welcome.variants: must be an object of values by variant name",
            ),
            (
                flag_with(json!({"variants": {"off": false, "on": "yes"}})),
                "flags.new-welcome.variants.on: is a string but variant 'off' is a boolean; all variants of a flag have one type",
            ),
            (
                flag_with(json!({"variants": {"off": [1]}})),
                "flags.new-welcome.variants.off: a variant value must be a boolean, string, number or object",
            ),
            (
                flag_with(json!({"defaultVarient": "on"})),
                "flags.new-welcome.defaultVarient: unknown property; expected 'state', 'variants', 'defaultVariant', 'targeting' or 'metadata'",
            ),
            (
                flag_with(json!({"targeting": "on"})),
                "flags.new-welcome.targeting: must be a JsonLogic rule (an object)",
            ),
            (
                flag_with(json!({"targeting": {"if": [{"ends_with": [{"var": "email"}]}, "on", "off"]}})),
                "flags.new-welcome.targeting.if[0].ends_with: 'ends_with' takes 2 arguments, got 1",
            ),
            (
                flag_with(json!({"targeting": {"if": [{"$ref": "beta"}, "on", null]}})),
                "flags.new-welcome.targeting.if[0].$ref: unknown evaluator 'beta'",
            ),
            (
                flag_with(json!({"metadata": {"owner": {"team": "x"}}})),
                "flags.new-welcome.metadata.owner: metadata values must be strings, numbers or booleans",
            ),
            (
                json!({"flags": {}, "metadata": {"v": null}}),
                "metadata.v: metadata values must be strings, numbers or booleans",
            ),
            (
                json!({"flags": {}, "$evaluators": {"a": {"$ref": "b"}, "b": {"$ref": "a"}}}),
                "$evaluators.b.$ref: evaluators refer to each other in a cycle: a -> b -> a",
            ),
            (
                json!({"flags": {}, "$evaluators": {"x": {"nope": 1}}}),
                "$evaluators.x.nope: unknown operation 'nope'",
            ),
            (
                json!({"flags": {}, "$evaluators": []}),
                "$evaluators: must be an object of targeting rules by name",
            ),
        ];
        for (definition, want) in cases {
            assert_eq!(refuse(definition), want);
        }
    }

    #[test]
    fn text_limits_and_broken_json_are_refused() {
        let small = Limits {
            max_definition_bytes: 20,
            ..Limits::default()
        };
        let text = r#"{"flags": {"a": {"state": "ENABLED"}}}"#;
        assert_eq!(
            FlagSet::from_json_with_limits(text, small)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(format!("the definition is {} bytes; the limit is 20", text.len()))
        );
        let broken = FlagSet::from_json("{\"flags\": ")
            .map(|_| ())
            .expect_err("broken JSON");
        assert_eq!(broken.path, "");
        assert!(broken.message.starts_with("not valid JSON: "), "{broken}");
        // Deeper than any parser should go: refused, not a stack overflow.
        let deep = format!(
            r#"{{"flags": {{}}, "$evaluators": {{"x": {}1{}}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let limits = Limits {
            max_definition_bytes: 1 << 20,
            ..Limits::default()
        };
        assert!(FlagSet::from_json_with_limits(&deep, limits).is_err());
        let few = Limits {
            max_flags: 1,
            ..Limits::default()
        };
        let two = json!({"flags": {"a": {"state": "DISABLED", "variants": {}}, "b": {"state": "DISABLED", "variants": {}}}});
        assert_eq!(
            FlagSet::from_value_with_limits(two, few)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err("flags: 2 flags; the limit is 1".to_owned())
        );
    }

    #[test]
    fn a_deep_evaluator_counts_where_it_is_used() {
        let mut deep = json!(true);
        for _ in 0..40 {
            deep = json!({"!": [deep]});
        }
        let mut wrapper = json!({"$ref": "deep"});
        for _ in 0..30 {
            wrapper = json!({"!!": [wrapper]});
        }
        let definition = json!({
            "$evaluators": {"deep": deep},
            "flags": {"f": {"state": "ENABLED", "variants": {"true": 1, "false": 0}, "targeting": wrapper}}
        });
        let error = refuse(definition);
        assert!(
            error.ends_with("with evaluator 'deep' in place, the rule is nested deeper than 64 levels"),
            "{error}"
        );
    }

    #[test]
    fn a_flag_set_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<FlagSet>();
    }

    #[test]
    fn loads_lists_and_round_trips() {
        let text = r##"{
            "$schema": "https://flagd.dev/schema/v0/flags.json",
            "flags": {
                "new-welcome": {
                    "state": "ENABLED",
                    "variants": {"on": true, "off": false},
                    "defaultVariant": "off",
                    "targeting": {"if": [{"$ref": "staff"}, "on", null]},
                    "metadata": {"version": "17", "owner": "growth"}
                },
                "colour": {"state": "DISABLED", "variants": {"red": "#f00"}, "defaultVariant": null},
                "limits": {"state": "ENABLED", "variants": {"low": 1, "high": 2.5}, "targeting": {}}
            },
            "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@example.com"]}},
            "metadata": {"flagSetId": "shop", "version": "3"}
        }"##;
        let set = FlagSet::from_json(text).expect("valid definition");
        assert_eq!(set.len(), 3);
        assert!(set.contains("colour") && !set.contains("color"));
        let keys: Vec<&str> = set.flags().map(|f| f.key).collect();
        assert_eq!(keys, ["colour", "limits", "new-welcome"]);
        let welcome = set.flag("new-welcome").expect("listed");
        assert_eq!(welcome.state, FlagState::Enabled);
        assert_eq!(welcome.default_variant, Some("off"));
        assert_eq!(welcome.variants, ["off", "on"]);
        assert_eq!(welcome.variant_type, Some(VariantType::Boolean));
        // Flag metadata overrides flag-set metadata.
        assert_eq!(
            Value::Object(welcome.metadata.clone()),
            json!({"flagSetId": "shop", "version": "17", "owner": "growth"})
        );
        assert_eq!(
            set.flag("colour").map(|f| (f.state, f.default_variant)),
            Some((FlagState::Disabled, None))
        );
        assert_eq!(
            set.flag("limits").and_then(|f| f.variant_type),
            Some(VariantType::Number)
        );
        assert_eq!(
            Value::Object(set.metadata().clone()),
            json!({"flagSetId": "shop", "version": "3"})
        );

        let exported = set.to_json();
        assert_eq!(exported, serde_json::from_str::<Value>(text).expect("valid JSON"));
        let again = FlagSet::from_json(&set.to_json_string()).expect("export loads");
        assert_eq!(again.to_json(), exported);
        assert_eq!(again.flags().collect::<Vec<_>>(), set.flags().collect::<Vec<_>>());
    }
}
