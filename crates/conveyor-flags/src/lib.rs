//! `conveyor-flags` owns feature flags: flagd's flag definition format, a JsonLogic targeting
//! engine (with flagd's `fractional`, `sem_ver`, `starts_with`, `ends_with`) compiled at load,
//! and the evaluator with flagd's reasons and error codes. Pure: no clock, disk or network —
//! the definition, the context and `now` are passed in.

mod change;
mod context;
mod definition;
mod error;
mod evaluation;
mod jsonlogic;
mod lifecycle;
mod murmur3;
mod path;
mod reason;
mod semver;

pub use change::{Changes, FlagPatch, apply_patch, describe, remove_flag};
pub use context::{ContextError, ContextLimits, EvaluationContext};
pub use definition::{FlagInfo, FlagSet, FlagState, Limits, Metadata, VariantType};
pub use error::DefinitionError;
pub use evaluation::{Evaluation, EvaluationError, ValueType};
pub use lifecycle::{FlagKind, Lifecycle, LifecycleError, check_lifecycles};
pub use murmur3::murmur3_x86_32;
pub use reason::{ErrorCode, Reason};
