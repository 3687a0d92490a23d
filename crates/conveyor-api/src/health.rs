//! The health endpoints' bodies.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `/readyz`: the server answers and its store too; how steps and instances are isolated from
/// it, said where an operator looks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// `bwrap: …` when steps, hooks and instances run sandboxed; `none: <why> — …` when they run
    /// with the server's privileges.
    #[schema(
        example = "none: bwrap not found on PATH (install bubblewrap) — steps and instances run with the server's privileges"
    )]
    pub isolation: String,
}
