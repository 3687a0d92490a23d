//! `AtomicSketch`: the recorder shared by every thread of a hot path.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::mapping::{self, BUCKETS};
use crate::sketch::LatencySketch;

/// A sketch many threads record into at once: one relaxed atomic counter per bucket. Recording is
/// one logarithm and one `fetch_add` — no lock, no allocation — and `snapshot` reads the counts
/// into a `LatencySketch`.
///
/// Relaxed ordering is enough: each count only grows, and a snapshot taken while requests are
/// recorded may miss the latest few, which the next snapshot has.
pub struct AtomicSketch {
    counts: Box<[AtomicU64; BUCKETS]>,
}

impl Default for AtomicSketch {
    fn default() -> Self {
        Self {
            counts: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

// === impl AtomicSketch ===

impl AtomicSketch {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one latency.
    pub fn record(&self, latency: Duration) {
        self.counts[mapping::index(latency.as_secs_f64())].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts recorded so far.
    pub fn snapshot(&self) -> LatencySketch {
        let mut counts = Box::new([0; BUCKETS]);
        for (count, atomic) in counts.iter_mut().zip(self.counts.iter()) {
            *count = atomic.load(Ordering::Relaxed);
        }
        LatencySketch::from_counts(counts)
    }
}

/// Sparse, through a snapshot: a dense dump would be a thousand zeros.
impl fmt::Debug for AtomicSketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AtomicSketch").field(&self.snapshot()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_recording_at_once_lose_nothing_and_match_a_plain_sketch() {
        let atomic = AtomicSketch::new();
        let latency =
            |thread: u64, i: u64| Duration::from_micros(1 + (thread * 7919 + i * 104_729) % 5_000_000);
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let atomic = &atomic;
                scope.spawn(move || {
                    for i in 0..10_000 {
                        atomic.record(latency(thread, i));
                    }
                });
            }
        });
        let mut plain = LatencySketch::new();
        for thread in 0..4 {
            for i in 0..10_000 {
                plain.record(latency(thread, i));
            }
        }
        let snapshot = atomic.snapshot();
        assert_eq!(snapshot.count(), 40_000);
        assert_eq!(snapshot, plain);
    }
}
