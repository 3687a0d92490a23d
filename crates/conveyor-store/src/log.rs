//! `EventLog`: the one way anything is written. An append chains the event into the log, folds
//! it into the read models in the same transaction, then tells every subscriber; nothing else
//! writes the database (secret values aside, which never enter the log).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::broadcast;

use crate::backend::Pool;
use crate::db::{append_in, chain_head, save_head};
use crate::event::Event;
use crate::query::{StoredEvent, stored_event};
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
    /// The database may have one writer (SQLite); serialising appends in-process avoids lock-upgrade failures.
    write: tokio::sync::Mutex<()>,
    appended: broadcast::Sender<Arc<StoredEvent>>,
    /// The newest event subscribers have been told of; moves with `appended`, under `write`.
    told: AtomicI64,
}

impl EventLog {
    /// The log of `pool`, whose newest event is `head`.
    pub(crate) fn new(pool: Pool, head: i64) -> Self {
        EventLog {
            pool,
            write: tokio::sync::Mutex::new(()),
            appended: broadcast::channel(SUBSCRIBER_BUFFER).0,
            told: AtomicI64::new(head),
        }
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
        let mut head = chain_head(&mut tx).await?;
        let mut stored = Vec::with_capacity(events.len());
        for event in events {
            let (seq, at) = append_in(&mut tx, &mut head, &event).await?;
            stored.push(StoredEvent { seq, at, event });
        }
        save_head(&mut tx, &head).await?;
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
        let table = match kind {
            IdKind::Run => "runs",
            IdKind::Release => "releases",
            IdKind::Deployment => "deployments",
            IdKind::FlagSchedule => "flag_schedules",
        };
        let id = sqlx::query_scalar::<_, i64>(&format!("SELECT COALESCE(MAX(id), 0) + 1 FROM {table}"))
            .fetch_one(&mut *tx)
            .await?;
        let event = build(id);
        let mut head = chain_head(&mut tx).await?;
        let (seq, at) = append_in(&mut tx, &mut head, &event).await?;
        save_head(&mut tx, &head).await?;
        tx.commit().await?;
        self.tell(vec![StoredEvent { seq, at, event }]);
        Ok(id)
    }

    /// Stores a secret's value (outside the log) and records that it changed (inside it).
    pub async fn set_secret(&self, project: &str, name: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO secrets (project, name, value) VALUES ($1, $2, $3)
             ON CONFLICT (project, name) DO UPDATE SET value = excluded.value",
        )
        .bind(project)
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        self.append(Event::SecretSet {
            project: project.to_string(),
            name: name.to_string(),
        })
        .await?;
        Ok(())
    }

    /// Stores (or, with `None`, forgets) the credentials of a project's source URL, outside the
    /// log: the `project_added` event carries the URL without them.
    pub async fn set_source_credentials(
        &self,
        project: &str,
        credentials: Option<&str>,
    ) -> Result<(), StoreError> {
        let query = match credentials {
            Some(credentials) => sqlx::query(
                "INSERT INTO source_credentials (project, credentials) VALUES ($1, $2)
                 ON CONFLICT (project) DO UPDATE SET credentials = excluded.credentials",
            )
            .bind(project)
            .bind(credentials),
            None => sqlx::query("DELETE FROM source_credentials WHERE project = $1").bind(project),
        };
        query.execute(&self.pool).await?;
        Ok(())
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
        let receiver = self.appended.subscribe();
        let told = self.told.load(Ordering::SeqCst);
        self.subscription(receiver, told)
    }

    /// Every event after `seq`, the ones already in the log first, then each as it is appended.
    pub fn subscribe_after(&self, seq: i64) -> Subscription {
        self.subscription(self.appended.subscribe(), seq)
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

    /// Tells subscribers of committed events; called with `write` held, so in order.
    fn tell(&self, stored: Vec<StoredEvent>) {
        for event in stored {
            self.told.store(event.seq, Ordering::SeqCst);
            // Nobody listening is fine.
            let _ = self.appended.send(Arc::new(event));
        }
    }
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
    use crate::Store;

    fn cancel(run_id: i64) -> Event {
        Event::RunCancelRequested {
            run_id,
            reason: "test".into(),
        }
    }

    #[tokio::test]
    async fn a_subscriber_sees_every_event_in_order_even_when_it_falls_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).await.unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).await.unwrap();
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
