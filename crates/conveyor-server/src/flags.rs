//! Feature flags served from memory: each project environment's compiled `FlagSet` behind an
//! `ArcSwap` (swapped whole on change, so an evaluation never sees half a change and never
//! touches the database), evaluation keys by hash with a token bucket each, change
//! notifications for the event stream, and the task that applies scheduled changes. Every
//! change is first a `flags_changed` event; on start everything is rebuilt from the read models.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use conveyor_engine::Engine;
use conveyor_flags::{DefinitionError, FlagPatch, FlagSet, Limits};
use conveyor_store::{Event, IdKind, StoreError};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;

/// Definitions are refused above this size (flagd JSON text).
pub const MAX_DEFINITION_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct FlagsConfig {
    /// Evaluation requests per second allowed per key (also the burst); 0: unlimited.
    pub rate_per_second: u32,
}

impl Default for FlagsConfig {
    fn default() -> Self {
        FlagsConfig {
            rate_per_second: 1_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FlagsError {
    #[error("{0}")]
    Invalid(DefinitionError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Request(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A compiled definition and what identifies it.
pub struct Live {
    pub set: FlagSet,
    pub version: i64,
    /// SHA-256 of the version and definition: the flag-configuration half of every ETag.
    pub digest: [u8; 32],
    /// Each flag's latest evaluation (unix seconds; 0: none since the server started), in the
    /// set's key order — the order `evaluate_all` answers in, so bulk marks need no lookup.
    evaluated: Vec<AtomicI64>,
    position: HashMap<String, usize>,
}

impl Live {
    /// `previous`: the definition this one replaces, whose evaluation times carry over.
    fn new(set: FlagSet, version: i64, previous: Option<&Live>) -> Live {
        let mut h = Sha256::new();
        h.update(version.to_be_bytes());
        h.update(set.to_json().to_string().as_bytes());
        let position: HashMap<String, usize> = set
            .flags()
            .enumerate()
            .map(|(i, flag)| (flag.key.to_string(), i))
            .collect();
        let evaluated = set
            .flags()
            .map(|flag| AtomicI64::new(previous.and_then(|p| p.last_evaluated(flag.key)).unwrap_or(0)))
            .collect();
        Live {
            set,
            version,
            digest: h.finalize().into(),
            evaluated,
            position,
        }
    }

    /// Notes that `key` was evaluated at `now`. Written at most once a second per flag, so
    /// concurrent evaluations mostly only read the shared counter.
    pub fn mark_evaluated(&self, key: &str, now: i64) {
        if let Some(&i) = self.position.get(key) {
            mark(&self.evaluated[i], now);
        }
    }

    /// Notes a bulk evaluation (every flag) at `now`.
    pub fn mark_all_evaluated(&self, now: i64) {
        for at in &self.evaluated {
            mark(at, now);
        }
    }

    /// When `key` was last evaluated since the server started.
    pub fn last_evaluated(&self, key: &str) -> Option<i64> {
        let at = self.evaluated[*self.position.get(key)?].load(Ordering::Relaxed);
        (at > 0).then_some(at)
    }

    pub fn etag_hex(&self) -> String {
        hex::encode(&self.digest[..16])
    }
}

fn mark(at: &AtomicI64, now: i64) {
    if at.load(Ordering::Relaxed) < now {
        at.store(now, Ordering::Relaxed);
    }
}

/// What a change notification carries (the event stream's `data`).
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub version: i64,
    pub etag: String,
    pub by: String,
    pub changes: Vec<String>,
}

/// One project environment's flags.
pub struct Environment {
    pub project: String,
    pub environment: String,
    live: ArcSwapOption<Live>,
}

impl Environment {
    fn new(project: &str, environment: &str) -> Environment {
        Environment {
            project: project.to_string(),
            environment: environment.to_string(),
            live: ArcSwapOption::empty(),
        }
    }

    /// The definition evaluations use now (`None` before the first one).
    pub fn live(&self) -> Option<Arc<Live>> {
        self.live.load_full()
    }
}

/// A token bucket: `rate` tokens a second, at most `rate` saved up.
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// An evaluation key, resolved.
pub struct ApiKey {
    pub name: String,
    pub environment: Arc<Environment>,
    bucket: Mutex<Bucket>,
}

impl ApiKey {
    /// Takes a token; `Err(seconds to wait)` when the bucket is empty.
    pub fn take(&self, rate: u32) -> Result<(), u64> {
        if rate == 0 {
            return Ok(());
        }
        let rate = f64::from(rate);
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(bucket.last).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(rate);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

pub fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The outcome of a change.
pub use conveyor_api::FlagsChanged as Changed;

type EnvKey = (String, String);

pub struct Flags {
    engine: Arc<Engine>,
    pub config: FlagsConfig,
    environments: RwLock<HashMap<EnvKey, Arc<Environment>>>,
    keys: RwLock<HashMap<[u8; 32], Arc<ApiKey>>>,
    /// Changes are read-modify-write of a whole definition: one at a time.
    write: tokio::sync::Mutex<()>,
    schedules_changed: Notify,
    /// Since when evaluations are counted (they are kept in memory only).
    pub started: chrono::DateTime<chrono::Utc>,
    /// The newest event of the log whose flag changes this server serves: those before it were
    /// loaded, the rest are `follow`ed.
    followed: tokio::sync::watch::Sender<i64>,
}

fn limits() -> Limits {
    Limits {
        max_definition_bytes: MAX_DEFINITION_BYTES,
        ..Limits::default()
    }
}

/// Loads and checks a definition the way every change is checked.
pub fn compile(definition: Value) -> Result<FlagSet, DefinitionError> {
    let set = FlagSet::from_value_with_limits(definition, limits())?;
    conveyor_flags::check_lifecycles(&set)?;
    Ok(set)
}

impl Flags {
    /// Rebuilds every environment's flags and the keys from the read models.
    pub async fn load(engine: Arc<Engine>, config: FlagsConfig) -> Result<Arc<Flags>, StoreError> {
        // Before reading: whatever is appended from here on is followed, so nothing falls between.
        let loaded = engine.events().head();
        let flags = Arc::new(Flags {
            engine,
            config,
            environments: RwLock::default(),
            keys: RwLock::default(),
            write: tokio::sync::Mutex::new(()),
            schedules_changed: Notify::new(),
            started: chrono::Utc::now(),
            followed: tokio::sync::watch::channel(loaded).0,
        });
        let store = flags.engine.store();
        for row in store.flag_sets().await? {
            let env = flags.environment(&row.project, &row.environment);
            match compile(row.definition) {
                Ok(set) => env.live.store(Some(Arc::new(Live::new(set, row.version, None)))),
                Err(error) => tracing::error!(
                    project = %row.project, environment = %row.environment, %error,
                    "stored flag definition no longer loads; its flags are not served"
                ),
            }
        }
        for key in store.flag_keys().await? {
            let Ok(hash) = <[u8; 32]>::try_from(hex::decode(&key.hash).unwrap_or_default()) else {
                tracing::error!(key = %key.name, "stored flag key hash is malformed");
                continue;
            };
            flags.add_key(hash, key.name, &key.project, &key.environment);
        }
        Ok(flags)
    }

    /// Brings an environment's compiled flags up to its stored definition, when that is newer:
    /// another server sharing the database changed it.
    async fn refresh(&self, project: &str, environment: &str) -> Result<(), StoreError> {
        let _guard = self.write.lock().await;
        self.refresh_locked(project, environment).await
    }

    /// [`Flags::refresh`], with `write` held.
    async fn refresh_locked(&self, project: &str, environment: &str) -> Result<(), StoreError> {
        let Some(row) = self.engine.store().flag_set(project, environment).await? else {
            return Ok(());
        };
        let env = self.environment(project, environment);
        let current = env.live();
        if current.as_ref().is_some_and(|live| live.version >= row.version) {
            return Ok(());
        }
        match compile(row.definition) {
            Ok(set) => env
                .live
                .store(Some(Arc::new(Live::new(set, row.version, current.as_deref())))),
            Err(error) => tracing::error!(
                project, environment, %error,
                "stored flag definition no longer loads; the previous one stays live"
            ),
        }
        Ok(())
    }

    /// Follows the log for what other servers sharing the database change (definitions,
    /// evaluation keys, schedules), so this one serves and applies the same; this server's own
    /// changes are already in memory when it hears of them. Runs until the process ends.
    pub async fn follow(self: Arc<Self>) {
        let mut events = self.engine.events().subscribe_after(*self.followed.borrow());
        loop {
            let stored = match events.next().await {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::warn!(%error, "flags cannot follow the event log");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            match &stored.event {
                Event::FlagsChanged {
                    project, environment, ..
                } => {
                    if let Err(error) = self.refresh(project, environment).await {
                        tracing::warn!(%project, %environment, %error, "cannot reload changed flags");
                    }
                }
                Event::FlagKeyCreated {
                    project,
                    environment,
                    name,
                    hash,
                    ..
                } => {
                    let hash = <[u8; 32]>::try_from(hex::decode(hash).unwrap_or_default());
                    if let Ok(hash) = hash
                        && self.key(&hash).is_none()
                    {
                        self.add_key(hash, name.clone(), project, environment);
                    }
                }
                Event::FlagChangeScheduled { .. } => self.schedules_changed.notify_one(),
                _ => {}
            }
            self.followed.send_replace(stored.seq);
        }
    }

    /// Returns once this server serves the flag changes of every event up to `seq`.
    pub async fn caught_up(&self, seq: i64) {
        // The sender lives as long as `self`: waiting cannot fail.
        let _ = self
            .followed
            .subscribe()
            .wait_for(|followed| *followed >= seq)
            .await;
    }

    /// The environment's flags (created empty on first use).
    pub fn environment(&self, project: &str, environment: &str) -> Arc<Environment> {
        let id = (project.to_string(), environment.to_string());
        if let Some(env) = self
            .environments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return env.clone();
        }
        self.environments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_insert_with(|| Arc::new(Environment::new(project, environment)))
            .clone()
    }

    /// The key with this SHA-256, if any (the evaluation hot path: memory only).
    pub fn key(&self, hash: &[u8; 32]) -> Option<Arc<ApiKey>> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .cloned()
    }

    fn add_key(&self, hash: [u8; 32], name: String, project: &str, environment: &str) {
        let key = Arc::new(ApiKey {
            name,
            environment: self.environment(project, environment),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(self.config.rate_per_second),
                last: Instant::now(),
            }),
        });
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hash, key);
    }

    /// A new evaluation key for an environment; the key itself is returned once, only its
    /// hash is kept.
    pub async fn create_key(
        &self,
        project: &str,
        environment: &str,
        name: &str,
        by: &str,
    ) -> Result<String, FlagsError> {
        let key = crate::auth::new_token()
            .map_err(|e| FlagsError::Request(format!("cannot generate a key: {e}")))?
            .replacen("cvy_", "cvf_", 1);
        let hash = key_hash(&key);
        self.engine
            .events()
            .append(Event::FlagKeyCreated {
                project: project.to_string(),
                environment: environment.to_string(),
                name: name.to_string(),
                hash: hex::encode(hash),
                by: by.to_string(),
            })
            .await?;
        self.add_key(hash, name.to_string(), project, environment);
        tracing::info!(
            project,
            environment,
            key = name,
            by,
            "flag evaluation key created"
        );
        Ok(key)
    }

    /// Replaces the whole definition.
    pub async fn replace(
        &self,
        project: &str,
        environment: &str,
        definition: Value,
        by: &str,
    ) -> Result<Changed, FlagsError> {
        self.change(project, environment, by, Vec::new(), |_| Ok(definition))
            .await
    }

    /// Changes one flag.
    pub async fn patch(
        &self,
        project: &str,
        environment: &str,
        flag: &str,
        patch: &FlagPatch,
        by: &str,
    ) -> Result<Changed, FlagsError> {
        self.change(project, environment, by, Vec::new(), |current| {
            conveyor_flags::apply_patch(current, flag, patch).map_err(FlagsError::Invalid)
        })
        .await
    }

    pub async fn remove(
        &self,
        project: &str,
        environment: &str,
        flag: &str,
        by: &str,
    ) -> Result<Changed, FlagsError> {
        self.change(project, environment, by, Vec::new(), |current| {
            conveyor_flags::remove_flag(current, flag).map_err(FlagsError::Invalid)
        })
        .await
    }

    /// The one way a definition changes: `edit` the current one, load the result (refused →
    /// the old one stays live), record the event (with `also`, in the same transaction), then
    /// swap the compiled set in and tell subscribers.
    async fn change(
        &self,
        project: &str,
        environment: &str,
        by: &str,
        also: Vec<Event>,
        edit: impl FnOnce(&Value) -> Result<Value, FlagsError>,
    ) -> Result<Changed, FlagsError> {
        let _guard = self.write.lock().await;
        // From the newest definition, whichever server stored it.
        self.refresh_locked(project, environment).await?;
        let env = self.environment(project, environment);
        let current = env.live();
        let (old, version) = match &current {
            Some(live) => (live.set.to_json(), live.version),
            None => (Value::Null, 0),
        };
        let new = edit(&old)?;
        let set = compile(new).map_err(FlagsError::Invalid)?;
        let new = set.to_json();
        let diff = conveyor_flags::describe(&old, &new);
        if diff.is_empty() && current.is_some() {
            if !also.is_empty() {
                self.engine.events().append_all(also).await?;
            }
            return Ok(Changed {
                version,
                changes: Vec::new(),
            });
        }
        let mut events = vec![Event::FlagsChanged {
            project: project.to_string(),
            environment: environment.to_string(),
            by: by.to_string(),
            definition: new,
            changes: diff.lines.clone(),
            touched: diff.touched,
            removed: diff.removed,
        }];
        events.extend(also);
        let live = Arc::new(Live::new(set, version + 1, current.as_deref()));
        // Swapped in before anyone hears of the change: a client told of it evaluates the new set.
        self.engine
            .events()
            .append_all_then(events, |_| env.live.store(Some(live)))
            .await?;
        tracing::info!(project, environment, by, version = version + 1, changes = ?diff.lines, "flags changed");
        Ok(Changed {
            version: version + 1,
            changes: diff.lines,
        })
    }

    /// Records a change to apply at `due` (RFC 3339, UTC). The patch must apply now too, so
    /// a typo is refused today rather than failing at 3 a.m.
    pub async fn schedule(
        &self,
        project: &str,
        environment: &str,
        flag: &str,
        due: chrono::DateTime<chrono::Utc>,
        patch: &FlagPatch,
        by: &str,
    ) -> Result<i64, FlagsError> {
        let live = self
            .environment(project, environment)
            .live()
            .ok_or_else(|| no_flags(project, environment))?;
        let patched =
            conveyor_flags::apply_patch(&live.set.to_json(), flag, patch).map_err(FlagsError::Invalid)?;
        compile(patched).map_err(FlagsError::Invalid)?;
        let patch = serde_json::to_value(patch).expect("patches serialize");
        let id = self
            .engine
            .events()
            .append_new(IdKind::FlagSchedule, |schedule_id| Event::FlagChangeScheduled {
                schedule_id,
                project: project.to_string(),
                environment: environment.to_string(),
                flag: flag.to_string(),
                due_at: due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                patch,
                by: by.to_string(),
            })
            .await?;
        self.schedules_changed.notify_one();
        Ok(id)
    }

    pub async fn cancel_schedule(&self, id: i64, by: &str) -> Result<(), FlagsError> {
        let store = self.engine.store();
        let schedule = store
            .flag_schedule(id)
            .await?
            .ok_or_else(|| FlagsError::NotFound(format!("scheduled change {id} does not exist")))?;
        if schedule.status != "pending" {
            return Err(FlagsError::Request(format!(
                "scheduled change {id} is already {}",
                schedule.status
            )));
        }
        self.engine
            .events()
            .append(Event::FlagScheduleFinished {
                schedule_id: id,
                project: schedule.project,
                environment: schedule.environment,
                status: "cancelled".into(),
                outcome: format!("cancelled by {by}"),
            })
            .await?;
        self.schedules_changed.notify_one();
        Ok(())
    }

    /// Applies scheduled changes when due, forever. Pending ones live in the read model, so a
    /// restart picks them up (late ones are applied at once).
    pub async fn run_schedules(self: Arc<Self>) {
        loop {
            // One server applies them, once each.
            if !self.engine.singleton("flag-schedules").await {
                tokio::time::sleep(conveyor_engine::lease::HEARTBEAT).await;
                continue;
            }
            let next = match self.apply_due().await {
                Ok(next) => next,
                Err(error) => {
                    tracing::error!(%error, "cannot apply scheduled flag changes");
                    Some(Duration::from_secs(5))
                }
            };
            let wait = next
                .unwrap_or(Duration::from_secs(3600))
                .min(Duration::from_secs(3600));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.schedules_changed.notified() => {}
            }
        }
    }

    /// Applies what is due; returns how long until the next one.
    async fn apply_due(&self) -> Result<Option<Duration>, StoreError> {
        let now = chrono::Utc::now();
        for schedule in self.engine.store().flag_schedules(None, true).await? {
            let due =
                chrono::DateTime::parse_from_rfc3339(&schedule.due_at).map(|d| d.with_timezone(&chrono::Utc));
            match due {
                Ok(due) if due > now => return Ok((due - now).to_std().ok()),
                _ => {}
            }
            let finished = |status: &str, outcome: String| Event::FlagScheduleFinished {
                schedule_id: schedule.id,
                project: schedule.project.clone(),
                environment: schedule.environment.clone(),
                status: status.into(),
                outcome,
            };
            let by = format!("schedule {} ({})", schedule.id, schedule.created_by);
            let result = match serde_json::from_value::<FlagPatch>(schedule.patch.clone()) {
                Ok(patch) => {
                    let applied = finished("applied", patch.summary());
                    self.change(
                        &schedule.project,
                        &schedule.environment,
                        &by,
                        vec![applied],
                        |current| {
                            if current.is_null() {
                                return Err(no_flags(&schedule.project, &schedule.environment));
                            }
                            conveyor_flags::apply_patch(current, &schedule.flag, &patch)
                                .map_err(FlagsError::Invalid)
                        },
                    )
                    .await
                }
                Err(e) => Err(FlagsError::Request(format!(
                    "the stored change cannot be read: {e}"
                ))),
            };
            match result {
                Ok(changed) => {
                    tracing::info!(schedule = schedule.id, flag = %schedule.flag, changes = ?changed.changes, "scheduled flag change applied")
                }
                Err(FlagsError::Store(e)) => return Err(e),
                Err(error) => {
                    tracing::warn!(schedule = schedule.id, flag = %schedule.flag, %error, "scheduled flag change failed");
                    self.engine
                        .events()
                        .append(finished("failed", error.to_string()))
                        .await?;
                }
            }
        }
        Ok(None)
    }
}

pub fn no_flags(project: &str, environment: &str) -> FlagsError {
    FlagsError::NotFound(format!("{project}/{environment} has no flags yet"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluations_are_noted_per_flag_and_carry_over_a_change() {
        let definition = |flags: &[&str]| {
            let flags: serde_json::Map<String, Value> = flags
                .iter()
                .map(|k| {
                    let flag = serde_json::json!({ "state": "ENABLED", "variants": { "on": true }, "defaultVariant": "on" });
                    (k.to_string(), flag)
                })
                .collect();
            compile(serde_json::json!({ "flags": flags })).unwrap()
        };
        let first = Live::new(definition(&["a", "b"]), 1, None);
        assert_eq!(first.last_evaluated("a"), None);
        first.mark_evaluated("a", 100);
        first.mark_evaluated("a", 90); // an older clock reading never moves it back
        first.mark_evaluated("missing", 100);
        assert_eq!(
            (first.last_evaluated("a"), first.last_evaluated("b")),
            (Some(100), None)
        );
        first.mark_all_evaluated(120);
        assert_eq!(
            (first.last_evaluated("a"), first.last_evaluated("b")),
            (Some(120), Some(120))
        );
        // A new definition keeps the times of the flags it still has.
        first.mark_evaluated("a", 130);
        let second = Live::new(definition(&["a", "c"]), 2, Some(&first));
        assert_eq!(
            (
                second.last_evaluated("a"),
                second.last_evaluated("c"),
                second.last_evaluated("b")
            ),
            (Some(130), None, None)
        );
    }

    #[test]
    fn the_bucket_refills_at_its_rate() {
        let env = Arc::new(Environment::new("p", "e"));
        let key = ApiKey {
            name: "k".into(),
            environment: env,
            bucket: Mutex::new(Bucket {
                tokens: 2.0,
                last: Instant::now(),
            }),
        };
        assert_eq!(key.take(2), Ok(()));
        assert_eq!(key.take(2), Ok(()));
        assert_eq!(key.take(2), Err(1));
        assert_eq!(key.take(0), Ok(()), "0 means unlimited");
        key.bucket.lock().unwrap().last -= Duration::from_millis(600);
        assert_eq!(key.take(2), Ok(()));
    }
}
