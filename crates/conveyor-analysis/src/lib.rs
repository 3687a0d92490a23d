//! `conveyor-analysis` owns delivery statistics: the DORA metrics (Four Keys definitions) today,
//! canary analysis and SLO burn rates next. Pure: it never reads the clock, the disk or the
//! network — records and `now` are passed in — so every figure is tested against tables.

pub mod dora;
pub mod judge;
pub mod resources;
pub mod sequential;
pub mod slo;
pub mod special;
