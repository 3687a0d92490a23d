//! A definition refused at load: the JSON path of the first mistake and what is wrong. A leaf
//! shared by everything that reads a definition: the loader, the JsonLogic compiler, patches and
//! lifecycle checks.

use std::fmt;

use crate::path::JsonPath;

/// A definition refused at load: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    /// JSON path such as `flags.new-welcome.targeting.if[0]`; empty for the whole document.
    pub path: String,
    pub message: String,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for DefinitionError {}

pub(crate) fn error(path: &JsonPath, message: impl Into<String>) -> DefinitionError {
    DefinitionError {
        path: path.to_string(),
        message: message.into(),
    }
}
