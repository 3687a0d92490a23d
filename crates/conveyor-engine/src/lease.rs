//! Which server does what when several share one database. Each run is driven by the server
//! holding its lease (`run:{id}`), and each singleton (the poller, cron, flag schedules) by the
//! server holding `singleton:{name}`. A heartbeat renews every lease this server holds; the same
//! loop resumes the unfinished runs nobody holds, so when a server dies another takes its runs
//! over within a lease's lifetime, as a restart resumes them (running steps recorded as
//! interrupted, their jobs retried as their `retries` allow). Leases are rows in the store, not
//! advisory locks: those do not survive a connection pooler in transaction mode.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Engine, EngineError};

/// How long a lease lasts unless renewed: another server takes over a dead one's work after at
/// most this long.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often held leases are renewed, and unheld runs looked for.
pub const HEARTBEAT: Duration = Duration::from_secs(3);

/// This server's name among those sharing the database, and the leases it holds.
pub(crate) struct Leases {
    /// `host/pid/nonce`: the nonce tells a restarted server from the one before it.
    holder: String,
    held: Mutex<BTreeSet<String>>,
    /// Runs this server is driving or about to (claimed before their lease is asked for, so
    /// one server never drives a run twice).
    runs: Mutex<BTreeSet<i64>>,
}

impl Leases {
    pub(crate) fn new() -> Leases {
        let mut nonce = [0u8; 4];
        getrandom::fill(&mut nonce).expect("the OS has randomness");
        Leases {
            holder: format!("{}/{}/{}", host(), std::process::id(), hex::encode(nonce)),
            held: Mutex::new(BTreeSet::new()),
            runs: Mutex::new(BTreeSet::new()),
        }
    }
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Whether `holder` names a server that is gone: one before this one on this host (its process
/// ended, or it had this pid with another nonce, as a restarted container's pid 1 does).
fn is_gone(holder: &str, me: &str) -> bool {
    let mut mine = me.splitn(3, '/');
    let mut theirs = holder.splitn(3, '/');
    let (Some(host), Some(pid)) = (mine.next(), mine.next()) else {
        return false;
    };
    match (theirs.next(), theirs.next().and_then(|p| p.parse::<u32>().ok())) {
        (Some(their_host), Some(their_pid)) if their_host == host && holder != me => {
            their_pid.to_string() == pid || !std::path::Path::new(&format!("/proc/{their_pid}")).exists()
        }
        _ => false,
    }
}

impl Engine {
    /// This server's name in the leases it holds.
    pub fn holder(&self) -> &str {
        &self.leases.holder
    }

    /// Takes or renews lease `name`; whether this server holds it.
    async fn lease(&self, name: &str) -> Result<bool, EngineError> {
        let ttl = LEASE_TTL.as_millis() as i64;
        let held = self
            .events()
            .take_lease(name, self.holder(), now_ms(), ttl)
            .await?;
        let mut set = self.leases.held.lock().unwrap_or_else(|p| p.into_inner());
        if held {
            set.insert(name.to_string());
        } else if set.remove(name) {
            tracing::error!(lease = name, "another server took over a lease this one held");
        }
        Ok(held)
    }

    async fn release(&self, name: &str) {
        self.leases
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Err(error) = self.events().release_lease(name, self.holder()).await {
            tracing::warn!(lease = name, %error, "cannot give a lease up; it expires instead");
        }
    }

    /// Whether this server is the one to do `what` (poll, fire cron, apply flag schedules)
    /// now: takes or renews its lease. Ask before each round of it.
    pub async fn singleton(&self, what: &str) -> bool {
        match self.lease(&format!("singleton:{what}")).await {
            Ok(held) => held,
            Err(error) => {
                tracing::warn!(singleton = what, %error, "cannot take a lease; not doing it this time");
                false
            }
        }
    }

    /// Claims run `run_id` for this server: not already driven here, and its lease taken.
    pub(crate) async fn claim_run(&self, run_id: i64) -> bool {
        if !self
            .leases
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id)
        {
            return false;
        }
        match self.lease(&format!("run:{run_id}")).await {
            Ok(true) => true,
            outcome => {
                if let Err(error) = outcome {
                    tracing::warn!(run = run_id, %error, "cannot take the run's lease");
                }
                self.leases
                    .runs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&run_id);
                false
            }
        }
    }

    /// Gives up a run this server drove to its end.
    pub(crate) async fn release_run(&self, run_id: i64) {
        self.release(&format!("run:{run_id}")).await;
        self.leases
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run_id);
    }

    /// Frees the leases of servers before this one on this host (crashed, or restarted), so
    /// their runs resume now rather than when the leases expire. With a SQLite store this is
    /// the only server there is: every lease is a predecessor's.
    pub(crate) async fn free_predecessors_leases(&self) -> Result<(), EngineError> {
        let shared = self.store().shared();
        for lease in self.store().leases().await? {
            if !shared || is_gone(&lease.holder, self.holder()) {
                self.events().release_lease(&lease.name, &lease.holder).await?;
            }
        }
        Ok(())
    }

    /// Renews every lease this server holds, then resumes each unfinished run no server
    /// holds (its server died), every [`HEARTBEAT`], until the process ends.
    pub async fn keep_leases(self: Arc<Self>) {
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            beat.tick().await;
            let held: Vec<String> = self
                .leases
                .held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect();
            for name in held {
                if let Err(error) = self.lease(&name).await {
                    tracing::warn!(lease = %name, %error, "cannot renew a lease");
                }
            }
            match self.store().unfinished_run_ids().await {
                Ok(ids) => {
                    for id in ids {
                        let driven = self
                            .leases
                            .runs
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .contains(&id);
                        if !driven {
                            self.spawn_run(id);
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot look for runs to take over"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_gone;

    #[test]
    fn a_holder_is_gone_when_its_host_says_so() {
        let me = format!("h1/{}/aaaa", std::process::id());
        let me_before = format!("h1/{}/bbbb", std::process::id());
        for (holder, gone) in [
            (me.as_str(), false),
            // The same pid with another nonce: this server's predecessor (a container's pid 1).
            (me_before.as_str(), true),
            // A pid no process has.
            ("h1/4194304999/cccc", true),
            // Pid 1 is alive on every Linux host.
            ("h1/1/dddd", false),
            // Another host's server: only its lease's expiry says it is gone.
            ("h2/4194304999/eeee", false),
            ("garbage", false),
        ] {
            assert_eq!(is_gone(holder, &me), gone, "{holder}");
        }
    }
}
