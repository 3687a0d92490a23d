//! OpenFeature's vocabulary for how an evaluation ended: the `Reason` a flag resolved as it did
//! and the `ErrorCode` of a failed one, as flagd and OFREP carry them. A leaf: the context's
//! errors and the evaluator both name these codes.

use std::fmt;

/// Why a flag resolved as it did (OpenFeature's resolution reasons, as flagd uses them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// No targeting: the default variant, which never changes with the context.
    Static,
    /// Targeting chose the variant.
    TargetingMatch,
    /// Targeting returned null, or the flag has no default variant: the default applies (the
    /// caller's code default when there is no value).
    Default,
    /// The flag is disabled: the caller's code default applies.
    Disabled,
    Error,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Default => "DEFAULT",
            Reason::Disabled => "DISABLED",
            Reason::Error => "ERROR",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// OpenFeature's error codes, as OFREP carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    FlagNotFound,
    /// Targeting returned something that cannot name a variant (a number, array or object).
    ParseError,
    /// The flag's value is not of the type the caller asked for.
    TypeMismatch,
    /// Not produced by the evaluator (flagd's `fractional` falls back to the default without a
    /// targeting key); here for the API layer.
    TargetingKeyMissing,
    /// The context was refused (see [`ContextError`](crate::ContextError)).
    InvalidContext,
    /// Targeting named a variant the flag does not have, or was cut off by a limit.
    General,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::TypeMismatch => "TYPE_MISMATCH",
            ErrorCode::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            ErrorCode::InvalidContext => "INVALID_CONTEXT",
            ErrorCode::General => "GENERAL",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
