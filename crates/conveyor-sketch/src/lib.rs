//! `conveyor-sketch` owns a mergeable latency quantile sketch: DDSketch's fixed logarithmic
//! mapping with 1% relative accuracy from 1 µs to 1000 s, a lock-free `AtomicSketch` the router
//! records into on its hot path, and the plain `LatencySketch` snapshot the analysis reads
//! (quantiles, exact counts above a bucket boundary, differences between two looks).
//! Pure: no clock, disk or network.
//!
//! Every sketch has the same bucket layout (`mapping`), so two sketches merge by adding counts and
//! the increment between two looks is a subtraction, like Prometheus counters.

mod atomic;
mod mapping;
mod sketch;

pub use atomic::AtomicSketch;
pub use mapping::{BUCKETS, MIN_SECONDS, RELATIVE_ACCURACY, boundary_at_or_above};
pub use sketch::LatencySketch;
