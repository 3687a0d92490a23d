//! `EventLog`: the one way anything is written. An append chains the event into the log, folds
//! it into the read models in the same transaction, then tells every subscriber; nothing else
//! writes the database. Secret values (sealed, never in the log) and signed checkpoints of the
//! chain are written here too, beside the events that record them.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use conveyor_attest::{Checkpoint, KeyPair};
use tokio::sync::broadcast;

use crate::backend::{Backend, Pool, Tx};
use crate::db::{append_in, chain_head, save_head};
use crate::event::Event;
use crate::query::{StoredEvent, stored_event};
use crate::secrets::{self, Keyring, SecretError, Stored};
use crate::{IdKind, StoreError, projection};

/// How many appended events wait for a slow subscriber before it has to catch up from the
/// database (it then misses nothing: `Subscription::next` reads what it lagged behind on).
const SUBSCRIBER_BUFFER: usize = 1024;
/// How many events a subscriber that is behind reads back from the log at a time.
const CATCH_UP_BATCH: i64 = 512;

/// The writing side of the store: append (one event, a batch, or one with a new id) and
/// subscribe.
pub struct EventLog {
    pool: Pool,
    pub(crate) backend: Backend,
    /// The database may have one writer (SQLite); serialising appends in-process avoids lock-upgrade failures.
    write: tokio::sync::Mutex<()>,
    announcer: Arc<Announcer>,
    /// On a database other servers share: the task that tells this one's subscribers of their
    /// appends (stopped with the log).
    follower: std::sync::OnceLock<tokio::task::AbortHandle>,
    /// The newest event a signed checkpoint covers; moves under `write`.
    checkpointed: AtomicI64,
    /// The keys secret values are sealed and opened with; replaced whole by a rotation.
    keyring: RwLock<Arc<Keyring>>,
}

impl EventLog {
    /// The log of `pool`, whose newest event is `head` and newest checkpoint `checkpointed`.
    pub(crate) fn new(pool: Pool, backend: Backend, head: i64, checkpointed: i64, keyring: Keyring) -> Self {
        EventLog {
            pool,
            backend,
            write: tokio::sync::Mutex::new(()),
            announcer: Arc::new(Announcer {
                appended: broadcast::channel(SUBSCRIBER_BUFFER).0,
                told: AtomicI64::new(head),
            }),
            follower: std::sync::OnceLock::new(),
            checkpointed: AtomicI64::new(checkpointed),
            keyring: RwLock::new(Arc::new(keyring)),
        }
    }

    /// The newest event appended (that this server has heard of).
    pub fn head(&self) -> i64 {
        self.announcer.told.load(Ordering::SeqCst)
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// This process's turn to write, outside an append (leases): SQLite has one writer, and a
    /// transaction that read before another connection wrote cannot upgrade to write.
    pub(crate) async fn writing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.write.lock().await
    }

    /// Has this server's subscribers told of what other servers append to the database at `url`
    /// (PostgreSQL), from now until the log is dropped.
    pub(crate) fn follow(&self, url: &str) {
        let task = tokio::spawn(crate::backend::follow(
            url.to_string(),
            self.pool.clone(),
            Arc::downgrade(&self.announcer),
        ));
        let _ = self.follower.set(task.abort_handle());
    }

    /// The newest event a signed checkpoint covers (0: none yet).
    pub fn checkpointed(&self) -> i64 {
        self.checkpointed.load(Ordering::SeqCst)
    }

    pub(crate) fn keyring(&self) -> Arc<Keyring> {
        self.keyring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Appends one event and folds it into the read models, atomically. Returns its sequence number.
    pub async fn append(&self, event: Event) -> Result<i64, StoreError> {
        let seqs = self.append_all(vec![event]).await?;
        Ok(seqs[0])
    }

    /// Appends several events in one transaction (all or none), in order.
    pub async fn append_all(&self, events: Vec<Event>) -> Result<Vec<i64>, StoreError> {
        self.append_all_then(events, |_| ()).await.map(|(seqs, ())| seqs)
    }

    /// Like `append_all`, and runs `then` after the commit and before any subscriber is told:
    /// state kept in memory beside the read models (compiled flags) is current by the time
    /// anyone hears of the change.
    pub async fn append_all_then<T>(
        &self,
        events: Vec<Event>,
        then: impl FnOnce(&[i64]) -> T,
    ) -> Result<(Vec<i64>, T), StoreError> {
        let _guard = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let stored = chain(&mut tx, self.backend, events).await?;
        tx.commit().await?;
        let seqs: Vec<i64> = stored.iter().map(|e| e.seq).collect();
        let done = then(&seqs);
        self.tell(stored);
        Ok((seqs, done))
    }

    /// Appends the event `build` makes from a freshly allocated id (run, release, deployment,
    /// flag schedule); returns the id.
    pub async fn append_new(
        &self,
        kind: IdKind,
        build: impl FnOnce(i64) -> Event,
    ) -> Result<i64, StoreError> {
        let _guard = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        // The head first: servers sharing the database allocate ids one at a time.
        let head = chain_head(&mut tx, self.backend).await?;
        let table = match kind {
            IdKind::Run => "runs",
            IdKind::Release => "releases",
            IdKind::Deployment => "deployments",
            IdKind::FlagSchedule => "flag_schedules",
        };
        let id = sqlx::query_scalar::<_, i64>(&format!("SELECT COALESCE(MAX(id), 0) + 1 FROM {table}"))
            .fetch_one(&mut *tx)
            .await?;
        let stored = chain_from(&mut tx, self.backend, head, vec![build(id)]).await?;
        tx.commit().await?;
        self.tell(stored);
        Ok(id)
    }

    /// Stores a secret's value, sealed, and records that it changed (the value itself never
    /// enters the log), in one transaction.
    pub async fn set_secret(&self, project: &str, name: &str, value: &str) -> Result<(), StoreError> {
        let sealed = self.keyring().seal(project, name, value)?;
        let _guard = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        secrets::put(&mut tx, project, name, &sealed).await?;
        let event = Event::SecretSet {
            project: project.to_string(),
            name: name.to_string(),
        };
        let stored = chain(&mut tx, self.backend, vec![event]).await?;
        tx.commit().await?;
        self.tell(stored);
        Ok(())
    }

    /// Stores (or, with `None`, forgets) the credentials of a project's source URL, outside the
    /// log (the `project_added` event carries the URL without them), sealed like a secret value.
    pub async fn set_source_credentials(
        &self,
        project: &str,
        credentials: Option<&str>,
    ) -> Result<(), StoreError> {
        let name = secrets::SOURCE_CREDENTIALS;
        let sealed = credentials
            .map(|c| self.keyring().seal(project, name, c))
            .transpose()?;
        let _guard = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        match sealed {
            Some(sealed) => secrets::put(&mut tx, project, name, &sealed).await?,
            None => {
                sqlx::query("DELETE FROM secrets WHERE project = $1 AND name = $2")
                    .bind(project)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Seals the plaintext values a database from before sealing holds under the current key,
    /// with their `secrets_sealed` event, in one transaction; how many there were. Without a key
    /// they stay as they are (a store opened only to audit it).
    pub(crate) async fn seal_plaintext_secrets(&self) -> Result<usize, StoreError> {
        let keyring = self.keyring();
        let Some(key) = keyring.current() else {
            return Ok(0);
        };
        let _guard = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut sealed = 0;
        for (project, name, stored) in secrets::all(&mut tx).await? {
            if let Stored::Plaintext(plain) = stored {
                let value = keyring.seal(&project, &name, &plain)?;
                secrets::put(&mut tx, &project, &name, &value).await?;
                sealed += 1;
            }
        }
        if sealed == 0 {
            return Ok(0);
        }
        let event = Event::SecretsSealed {
            key_id: key.id().to_string(),
            secrets: sealed as u64,
        };
        let stored = chain(&mut tx, self.backend, vec![event]).await?;
        tx.commit().await?;
        self.tell(stored);
        Ok(sealed)
    }

    /// Re-seals every secret value under `keyring`'s current key, with its
    /// `secrets_key_rotated` event, in one transaction; `keyring` must also hold every key a
    /// value is sealed under now. From then on only the current key is used. Returns how many
    /// values were re-sealed.
    pub async fn rotate_secrets_key(&self, keyring: Keyring) -> Result<usize, StoreError> {
        let key = keyring.current().ok_or(SecretError::NoKey)?.clone();
        let _guard = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut previous = std::collections::BTreeSet::new();
        let rows = secrets::all(&mut tx).await?;
        for (project, name, stored) in &rows {
            let value = match stored {
                Stored::Sealed(sealed) => {
                    previous.insert(sealed.key_id.clone());
                    keyring.open(project, name, sealed)?
                }
                Stored::Plaintext(plain) => plain.clone(),
            };
            secrets::put(&mut tx, project, name, &keyring.seal(project, name, &value)?).await?;
        }
        let event = Event::SecretsKeyRotated {
            key_id: key.id().to_string(),
            previous: previous.into_iter().collect(),
            secrets: rows.len() as u64,
        };
        let stored = chain(&mut tx, self.backend, vec![event]).await?;
        tx.commit().await?;
        *self.keyring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Keyring::new(vec![key]));
        self.tell(stored);
        Ok(rows.len())
    }

    /// Signs a checkpoint of the chain's head with `signer` if events were appended since the
    /// last one: stored in the database, then appended as one JSON line (the DSSE envelope) to
    /// `export`, outside it. Returns what was signed. A checkpoint in the database but not in
    /// the file (the append failed after the commit) is harmless; the other way round would read
    /// as a removed checkpoint, hence this order.
    pub async fn checkpoint(
        &self,
        signer: &KeyPair,
        export: &Path,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let _guard = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let (seq, head_hash) = chain_head(&mut tx, self.backend).await?;
        // Read, not remembered: another server sharing the database may have signed it.
        let signed = sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(seq), 0) FROM checkpoints")
            .fetch_one(&mut *tx)
            .await?;
        self.checkpointed.fetch_max(signed, Ordering::SeqCst);
        if seq <= signed {
            return Ok(None);
        }
        let checkpoint = Checkpoint {
            seq,
            head_hash,
            time: crate::now_rfc3339(),
        };
        let envelope = serde_json::to_string(&checkpoint.sign(signer)).expect("envelopes serialize");
        sqlx::query("INSERT INTO checkpoints (seq, head_hash, at, envelope) VALUES ($1, $2, $3, $4)")
            .bind(seq)
            .bind(&checkpoint.head_hash)
            .bind(&checkpoint.time)
            .bind(&envelope)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.checkpointed.store(seq, Ordering::SeqCst);
        append_line(export, &envelope).await?;
        Ok(Some(checkpoint))
    }

    /// Drops every read model and folds the whole log into them again.
    pub async fn rebuild_read_models(&self) -> Result<usize, StoreError> {
        let _guard = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let events = projection::rebuild(&mut tx).await?;
        tx.commit().await?;
        Ok(events)
    }

    /// Every event appended from now on, in order.
    pub fn subscribe(&self) -> Subscription {
        // Listening first, then reading what was told: nothing falls in between.
        let receiver = self.announcer.appended.subscribe();
        let told = self.head();
        self.subscription(receiver, told)
    }

    /// Every event after `seq`, the ones already in the log first, then each as it is appended.
    pub fn subscribe_after(&self, seq: i64) -> Subscription {
        self.subscription(self.announcer.appended.subscribe(), seq)
    }

    fn subscription(&self, receiver: broadcast::Receiver<Arc<StoredEvent>>, last: i64) -> Subscription {
        Subscription {
            receiver,
            pool: self.pool.clone(),
            last,
            backlog: std::collections::VecDeque::new(),
            behind: true,
        }
    }

    /// Tells subscribers of committed events.
    fn tell(&self, stored: Vec<StoredEvent>) {
        for event in stored {
            self.announcer.tell(event);
        }
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        if let Some(follower) = self.follower.get() {
            follower.abort();
        }
    }
}

/// Tells this server's subscribers of appended events: its own as it commits them, and, on a
/// database other servers share, theirs as it hears of them. Events may reach the channel out
/// of order or twice when both race; a `Subscription` skips what it had and reads a gap back.
pub(crate) struct Announcer {
    appended: broadcast::Sender<Arc<StoredEvent>>,
    /// The newest event told; only moves forward.
    told: AtomicI64,
}

impl Announcer {
    fn tell(&self, event: StoredEvent) {
        self.told.fetch_max(event.seq, Ordering::SeqCst);
        // Nobody listening is fine.
        let _ = self.appended.send(Arc::new(event));
    }

    /// Tells every event in the log after the newest told: what other servers appended.
    pub(crate) async fn catch_up(&self, pool: &Pool) -> Result<(), StoreError> {
        loop {
            let rows = sqlx::query("SELECT seq, at, data FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(self.told.load(Ordering::SeqCst))
                .bind(CATCH_UP_BATCH)
                .fetch_all(pool)
                .await?;
            for row in &rows {
                self.tell(stored_event(row)?);
            }
            if (rows.len() as i64) < CATCH_UP_BATCH {
                return Ok(());
            }
        }
    }
}

/// Chains `events` after the head in `tx`, folding each into the read models, and moves the head.
async fn chain(
    tx: &mut Tx<'_>,
    backend: Backend,
    events: Vec<Event>,
) -> Result<Vec<StoredEvent>, StoreError> {
    let head = chain_head(tx, backend).await?;
    chain_from(tx, backend, head, events).await
}

/// [`chain`] after `head`, already read (and held) in `tx`.
async fn chain_from(
    tx: &mut Tx<'_>,
    backend: Backend,
    mut head: (i64, String),
    events: Vec<Event>,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut stored = Vec::with_capacity(events.len());
    for event in events {
        let (seq, at) = append_in(tx, &mut head, &event).await?;
        stored.push(StoredEvent { seq, at, event });
    }
    save_head(tx, &head).await?;
    if let Some(announce) = backend.announce() {
        use sqlx::Executor as _;
        (&mut **tx).execute(announce).await?;
    }
    Ok(stored)
}

/// Appends `line` to `path` (created if missing) and waits until it is on disk.
async fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    // One write: a reader never sees half a line followed by another writer's.
    file.write_all(format!("{line}\n").as_bytes()).await?;
    file.sync_data().await
}

/// An ordered stream of appended events that never skips one: whatever the in-memory buffer no
/// longer holds is read back from the log, a batch at a time.
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<StoredEvent>>,
    pool: Pool,
    /// The newest event handed out.
    last: i64,
    backlog: std::collections::VecDeque<Arc<StoredEvent>>,
    /// Whether the log may hold events after `last` that the receiver will not bring.
    behind: bool,
}

impl Subscription {
    /// The next event; `Err` only when the log cannot be read back.
    pub async fn next(&mut self) -> Result<Arc<StoredEvent>, StoreError> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                self.last = event.seq;
                return Ok(event);
            }
            if self.behind {
                self.behind = self.read_back().await?;
                if !self.backlog.is_empty() {
                    continue;
                }
            }
            match self.receiver.recv().await {
                Ok(event) if event.seq <= self.last => {}
                Ok(event) if event.seq == self.last + 1 => {
                    self.last = event.seq;
                    return Ok(event);
                }
                // A gap (an append that raced the subscription) or a lag: the log has it all.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.behind = true,
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }

    /// Reads a batch of the events after `last` into the backlog; whether more may follow.
    async fn read_back(&mut self) -> Result<bool, StoreError> {
        let rows = sqlx::query("SELECT seq, at, data FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(self.last)
            .bind(CATCH_UP_BATCH)
            .fetch_all(&self.pool)
            .await?;
        for row in &rows {
            self.backlog.push_back(Arc::new(stored_event(row)?));
        }
        Ok(rows.len() as i64 == CATCH_UP_BATCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn servers_sharing_a_database_append_one_chain_and_each_hears_every_event_in_order() {
        // Servers share a database only on PostgreSQL.
        let scratch = crate::db::tests::Scratch::postgres();
        let servers = [
            Arc::new(crate::db::tests::open(&scratch).await),
            Arc::new(crate::db::tests::open(&scratch).await),
        ];
        let mut heard: Vec<Subscription> = servers.iter().map(|s| s.log().subscribe()).collect();
        const EACH: i64 = 40;
        let mut writers = tokio::task::JoinSet::new();
        for (n, server) in servers.iter().enumerate() {
            let server = server.clone();
            writers.spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..EACH {
                    let project = format!("p{n}");
                    let id = server
                        .log()
                        .append_new(IdKind::Run, |run_id| {
                            crate::db::tests::run_created(run_id, &project, &["build"])
                        })
                        .await
                        .unwrap();
                    server.log().append(cancel(id)).await.unwrap();
                    ids.push(id);
                }
                ids
            });
        }
        let mut ids: Vec<i64> = writers.join_all().await.into_iter().flatten().collect();
        ids.sort();
        assert_eq!(ids, (1..=2 * EACH).collect::<Vec<_>>(), "every run id once");
        let all = 4 * EACH;
        for subscription in &mut heard {
            let mut seqs = Vec::new();
            while seqs.len() < all as usize {
                let event = tokio::time::timeout(std::time::Duration::from_secs(10), subscription.next())
                    .await
                    .expect("every event is heard, the other server's too")
                    .unwrap();
                seqs.push(event.seq);
            }
            assert_eq!(seqs, (1..=all).collect::<Vec<_>>());
        }
        for server in &servers {
            assert_eq!(crate::db::tests::audit(server).await, (all as u64, vec![]));
            assert_eq!(server.log().head(), all);
        }
        // Either may sign the checkpoint; the other finds it signed.
        let signer = conveyor_attest::KeyPair::from_seed([6; 32]);
        let export = scratch.dir().join("checkpoints.jsonl");
        for (server, signs) in servers.iter().zip([true, false]) {
            let signed = server.log().checkpoint(&signer, &export).await.unwrap();
            assert_eq!(signed.is_some(), signs);
        }
    }

    fn cancel(run_id: i64) -> Event {
        Event::RunCancelRequested {
            run_id,
            reason: "test".into(),
        }
    }

    #[tokio::test]
    async fn a_subscriber_sees_every_event_in_order_even_when_it_falls_behind() {
        let scratch = crate::db::tests::Scratch::new();
        let store = crate::db::tests::open(&scratch).await;
        store.log().append(cancel(0)).await.unwrap();
        let mut from_now = store.log().subscribe();
        let mut from_start = store.log().subscribe_after(0);
        // More than the in-memory buffer holds, before either subscriber reads anything.
        let total = SUBSCRIBER_BUFFER as i64 + CATCH_UP_BATCH + 10;
        for chunk in (1..=total).collect::<Vec<_>>().chunks(100) {
            store
                .log()
                .append_all(chunk.iter().map(|i| cancel(*i)).collect())
                .await
                .unwrap();
        }
        for want in 2..=total + 1 {
            assert_eq!(from_now.next().await.unwrap().seq, want);
        }
        for want in 1..=total + 1 {
            assert_eq!(from_start.next().await.unwrap().seq, want);
        }
        // And live again once caught up.
        let seq = store.log().append(cancel(-1)).await.unwrap();
        assert_eq!(from_now.next().await.unwrap().seq, seq);
        assert_eq!(from_start.next().await.unwrap().seq, seq);
    }

    #[tokio::test]
    async fn state_updated_after_the_commit_is_current_before_subscribers_hear() {
        let scratch = crate::db::tests::Scratch::new();
        let store = crate::db::tests::open(&scratch).await;
        let mut subscriber = store.log().subscribe();
        let seen = std::sync::atomic::AtomicI64::new(0);
        let (seqs, ()) = store
            .log()
            .append_all_then(vec![cancel(1)], |seqs| seen.store(seqs[0], Ordering::SeqCst))
            .await
            .unwrap();
        let heard = subscriber.next().await.unwrap();
        assert_eq!((heard.seq, seen.load(Ordering::SeqCst)), (seqs[0], seqs[0]));
    }
}
