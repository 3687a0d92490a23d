//! The one error body every `/api/v1` error answers with.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{code, message}` (and `details` for a refused pipeline or flag definition). `code` is
/// stable and machine-readable; `message` is a sentence for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    #[schema(example = "not_found")]
    pub code: String,
    #[schema(example = "run 7 does not exist")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<ErrorDetails>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetails {
    /// `pipeline_invalid`: one `file:line:col: message` per problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<String>>,
    /// `flags_invalid`: the JSON path of the mistake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `flags_invalid`: what is wrong there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
