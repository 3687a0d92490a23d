//! `conveyor-spec` owns the `conveyor.yml` language: parsing, validation and the `if:` / `${{ }}`
//! expression language. It is pure: no clock, no disk, no network — text in, typed structs or
//! located errors out, so it is tested by tables of cases and can be fuzzed.

pub mod delivery;
mod error;
pub mod expr;
mod model;
mod parse;
mod yaml;

pub use delivery::{Environment, ReleaseSpec, Strategy};
pub use error::{SpecError, SpecErrors};
pub use model::*;
pub use parse::{MAX_SOURCE_BYTES, parse};
