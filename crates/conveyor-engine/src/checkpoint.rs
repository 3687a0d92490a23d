//! Signed checkpoints of the event log while a server runs: one after every `events` appended
//! events, or `interval` after the last one when anything was appended since (the process
//! signs one more at a clean shutdown: `DataDir::checkpoint`). What happened after the newest
//! checkpoint can still be rewritten unnoticed by someone with the database file; these bound
//! how much.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Engine;

/// How often the checkpoint policy is looked at.
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    /// Sign once this many events were appended since the last checkpoint.
    pub events: i64,
    /// Sign when the last checkpoint is this old and an event was appended since.
    pub interval: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            events: 100,
            interval: Duration::from_secs(60),
        }
    }
}

impl CheckpointPolicy {
    /// Whether to sign now, `pending` events after the last checkpoint, `since` after it.
    fn due(&self, pending: i64, since: Duration) -> bool {
        pending >= self.events || (pending > 0 && since >= self.interval)
    }
}

impl Engine {
    /// Signs checkpoints by `policy` until the task is dropped; a failure is logged and tried
    /// again at the next tick.
    pub async fn keep_checkpoints(self: Arc<Self>, policy: CheckpointPolicy) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        loop {
            tick.tick().await;
            let log = self.events();
            if !policy.due(log.head() - log.checkpointed(), last.elapsed()) {
                continue;
            }
            match self.data.checkpoint().await {
                Ok(signed) => {
                    last = Instant::now();
                    if let Some(checkpoint) = signed {
                        tracing::debug!(seq = checkpoint.seq, "event log checkpoint signed");
                    }
                }
                Err(error) => tracing::error!(%error, "cannot sign a checkpoint of the event log"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_due_after_enough_events_or_time_with_something_new() {
        let policy = CheckpointPolicy::default();
        let (now, later) = (Duration::from_secs(1), Duration::from_secs(61));
        for (pending, since, due) in [
            (0, later, false),
            (1, now, false),
            (99, now, false),
            (100, now, true),
            (1, later, true),
        ] {
            assert_eq!(policy.due(pending, since), due, "{pending} events, {since:?}");
        }
    }
}
