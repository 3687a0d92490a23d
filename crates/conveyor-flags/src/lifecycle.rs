//! Flag lifecycle: what kind of flag it is (flag metadata `type`) and how long it is expected
//! to live (`expectedLifetimeDays`, else the kind's default), and whether it is stale. Time is
//! passed in as ages.

use serde::Serialize;
use serde_json::Value;

use crate::definition::{FlagSet, Metadata};
use crate::error::{DefinitionError, error};
use crate::path::JsonPath;

/// The kinds Unleash and LaunchDarkly users know, with their usual expected lifetimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlagKind {
    /// Ships a feature dark, then rolls it out: 40 days.
    Release,
    /// An A/B test: 40 days.
    Experiment,
    /// Tunes how the system behaves, e.g. during a migration: 7 days.
    Operational,
    /// Turns something off in an incident: permanent.
    KillSwitch,
    /// Gives some users a feature: permanent.
    Permission,
}

const KINDS: &[(&str, FlagKind)] = &[
    ("release", FlagKind::Release),
    ("experiment", FlagKind::Experiment),
    ("operational", FlagKind::Operational),
    ("kill-switch", FlagKind::KillSwitch),
    ("permission", FlagKind::Permission),
];

impl FlagKind {
    /// `None`: permanent.
    pub fn default_lifetime_days(self) -> Option<u32> {
        match self {
            FlagKind::Release | FlagKind::Experiment => Some(40),
            FlagKind::Operational => Some(7),
            FlagKind::KillSwitch | FlagKind::Permission => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        KINDS
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(name, _)| *name)
            .expect("every kind is listed")
    }
}

/// Lifecycle metadata a definition's author got wrong; [`LifecycleError::key`] names the
/// metadata key, the message says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("unknown flag type '{name}'; expected one of {}", kind_names())]
    UnknownType { name: String },
    #[error("must be a string")]
    TypeNotString,
    #[error("must be a whole number of days from 1 to 3650")]
    LifetimeOutOfRange,
    #[error("must be a number of days")]
    LifetimeNotNumber,
}

impl LifecycleError {
    /// The metadata key at fault: `type` or `expectedLifetimeDays`.
    pub fn key(&self) -> &'static str {
        match self {
            LifecycleError::UnknownType { .. } | LifecycleError::TypeNotString => "type",
            LifecycleError::LifetimeOutOfRange | LifecycleError::LifetimeNotNumber => "expectedLifetimeDays",
        }
    }
}

fn kind_names() -> String {
    let names: Vec<&str> = KINDS.iter().map(|(n, _)| *n).collect();
    names.join(", ")
}

/// A flag's kind and expected lifetime, from its metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Lifecycle {
    pub kind: Option<FlagKind>,
    /// `None`: permanent (or no kind given).
    pub expected_lifetime_days: Option<u32>,
}

impl Lifecycle {
    /// Reads `type` and `expectedLifetimeDays`; the error names the metadata key at fault.
    pub fn from_metadata(metadata: &Metadata) -> Result<Lifecycle, LifecycleError> {
        let kind = match metadata.get("type") {
            None => None,
            Some(Value::String(name)) => Some(
                KINDS
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, k)| *k)
                    .ok_or_else(|| LifecycleError::UnknownType { name: name.clone() })?,
            ),
            Some(_) => return Err(LifecycleError::TypeNotString),
        };
        let lifetime = match metadata.get("expectedLifetimeDays") {
            None => kind.and_then(FlagKind::default_lifetime_days),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(days @ 1..=3650) => Some(days as u32),
                _ => return Err(LifecycleError::LifetimeOutOfRange),
            },
            Some(_) => return Err(LifecycleError::LifetimeNotNumber),
        };
        Ok(Lifecycle {
            kind,
            expected_lifetime_days: lifetime,
        })
    }

    /// Why a flag `age_days` old, last changed `idle_days` ago, is stale; `None` if it is not.
    /// Flags without an expected lifetime are stale only when idle longer than `idle_limit_days`
    /// and not permanent by kind.
    pub fn stale(&self, age_days: u32, idle_days: u32, idle_limit_days: u32) -> Option<String> {
        if let Some(lifetime) = self.expected_lifetime_days
            && age_days > lifetime
        {
            let kind = self.kind.map_or("flag", FlagKind::as_str);
            return Some(format!(
                "{age_days} days old; a {kind} flag is expected to live {lifetime} days"
            ));
        }
        let permanent = self.kind.is_some() && self.expected_lifetime_days.is_none();
        (!permanent && idle_days > idle_limit_days)
            .then(|| format!("unchanged for {idle_days} days (limit {idle_limit_days})"))
    }
}

/// Checks every flag's lifecycle metadata; the error has the JSON path of the bad key.
pub fn check_lifecycles(set: &FlagSet) -> Result<(), DefinitionError> {
    for flag in set.flags() {
        if let Err(refused) = Lifecycle::from_metadata(flag.metadata) {
            let path = JsonPath::root()
                .key("flags")
                .key(flag.key)
                .key("metadata")
                .key(refused.key());
            return Err(error(&path, refused.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn lifecycle(metadata: Value) -> Result<Lifecycle, LifecycleError> {
        Lifecycle::from_metadata(metadata.as_object().unwrap())
    }

    #[test]
    fn kinds_and_lifetimes() {
        let cases = [
            (json!({}), None, None),
            (json!({"type": "release"}), Some(FlagKind::Release), Some(40)),
            (
                json!({"type": "operational"}),
                Some(FlagKind::Operational),
                Some(7),
            ),
            (json!({"type": "kill-switch"}), Some(FlagKind::KillSwitch), None),
            (
                json!({"type": "permission", "expectedLifetimeDays": 90}),
                Some(FlagKind::Permission),
                Some(90),
            ),
            (json!({"expectedLifetimeDays": 3}), None, Some(3)),
        ];
        for (metadata, kind, days) in cases {
            let l = lifecycle(metadata.clone()).unwrap();
            assert_eq!((l.kind, l.expected_lifetime_days), (kind, days), "{metadata}");
        }
        assert_eq!(lifecycle(json!({"type": "temporary"})).unwrap_err().key(), "type");
        assert_eq!(
            lifecycle(json!({"expectedLifetimeDays": 0})).unwrap_err().key(),
            "expectedLifetimeDays"
        );
        assert_eq!(
            lifecycle(json!({"expectedLifetimeDays": "9"})).unwrap_err().key(),
            "expectedLifetimeDays"
        );
    }

    #[test]
    fn staleness() {
        let release = lifecycle(json!({"type": "release"})).unwrap();
        assert_eq!(release.stale(10, 10, 30), None);
        assert!(
            release
                .stale(41, 0, 30)
                .unwrap()
                .contains("release flag is expected to live 40 days")
        );
        let kill = lifecycle(json!({"type": "kill-switch"})).unwrap();
        assert_eq!(kill.stale(900, 900, 30), None);
        let untyped = lifecycle(json!({})).unwrap();
        assert_eq!(
            untyped.stale(100, 31, 30).unwrap(),
            "unchanged for 31 days (limit 30)"
        );
    }

    #[test]
    fn bad_metadata_is_refused_with_its_path() {
        let set = FlagSet::from_value(json!({"flags": {"f": {
            "state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
            "metadata": {"type": "forever"}
        }}}))
        .unwrap();
        let e = check_lifecycles(&set).unwrap_err();
        assert_eq!(e.path, "flags.f.metadata.type");
        assert_eq!(
            e.message,
            "unknown flag type 'forever'; expected one of release, experiment, operational, kill-switch, permission"
        );
    }
}
