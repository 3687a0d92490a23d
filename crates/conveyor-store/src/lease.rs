//! Leases: what only one server may do at a time, among servers sharing a database (driving a
//! run or a deployment, polling, firing schedules). A lease is a row held until a deadline; its
//! holder renews it well before, and when the holder dies it simply expires and another takes
//! it. A row rather than an advisory lock: session advisory locks are lost or shared behind a
//! connection pooler in transaction mode (PgBouncer), a row is not. Time is given, never read.

use sqlx::Row as _;

use crate::db::{Store, StoreError};
use crate::log::EventLog;

/// Who holds a lease, until when (milliseconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub expires_ms: i64,
}

impl EventLog {
    /// Takes lease `name` for `holder` until `now_ms + ttl_ms` when it is free, expired (its
    /// deadline not after `now_ms`) or already `holder`'s (a renewal); one statement, so two
    /// servers asking at once cannot both get it. Whether `holder` holds it now.
    pub async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        // A write like an append's: one at a time in this process (SQLite has one writer).
        let _guard = self.writing().await;
        let taken = sqlx::query(
            "INSERT INTO leases (name, holder, expires_ms) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms
             WHERE leases.holder = excluded.holder OR leases.expires_ms <= $4",
        )
        .bind(name)
        .bind(holder)
        .bind(now_ms + ttl_ms)
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    /// Gives lease `name` up, if `holder` holds it: another server may take it at once.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let _guard = self.writing().await;
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

impl Store {
    /// Every lease, held or expired, by name.
    pub async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        sqlx::query("SELECT name, holder, expires_ms FROM leases ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok(Lease {
                    name: row.try_get(0)?,
                    holder: row.try_get(1)?,
                    expires_ms: row.try_get(2)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::db::tests::{Scratch, open};

    #[tokio::test]
    async fn a_lease_has_one_holder_until_it_expires_or_is_given_up() {
        let scratch = Scratch::new();
        // Two servers on one database.
        let (a, b) = (open(&scratch).await, open(&scratch).await);
        let (a, b) = (a.log(), b.log());
        assert!(a.take_lease("run:1", "a", 1_000, 500).await.unwrap());
        assert!(
            !b.take_lease("run:1", "b", 1_200, 500).await.unwrap(),
            "held by a"
        );
        assert!(a.take_lease("run:1", "a", 1_400, 500).await.unwrap(), "a renews");
        assert!(
            !b.take_lease("run:1", "b", 1_800, 500).await.unwrap(),
            "renewed until 1900"
        );
        assert!(
            b.take_lease("run:1", "b", 1_900, 500).await.unwrap(),
            "expired: b takes it"
        );
        assert!(
            !a.take_lease("run:1", "a", 2_000, 500).await.unwrap(),
            "a lost it"
        );
        // Giving up is only the holder's to do.
        a.release_lease("run:1", "a").await.unwrap();
        assert!(!a.take_lease("run:1", "a", 2_000, 500).await.unwrap());
        b.release_lease("run:1", "b").await.unwrap();
        assert!(a.take_lease("run:1", "a", 2_000, 500).await.unwrap());
        // Leases are apart from one another.
        assert!(b.take_lease("poller", "b", 2_000, 500).await.unwrap());
        let store = open(&scratch).await;
        let leases: Vec<(String, String, i64)> = store
            .leases()
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.name, l.holder, l.expires_ms))
            .collect();
        assert_eq!(
            leases,
            [
                ("poller".to_string(), "b".to_string(), 2_500),
                ("run:1".to_string(), "a".to_string(), 2_500)
            ]
        );
    }

    #[tokio::test]
    async fn servers_asking_at_once_get_a_lease_once() {
        let scratch = Scratch::new();
        let mut stores = Vec::new();
        for _ in 0..4 {
            stores.push(std::sync::Arc::new(open(&scratch).await));
        }
        for round in 0..10 {
            let name = format!("deployment:{round}");
            let mut asks = tokio::task::JoinSet::new();
            for (i, store) in stores.iter().enumerate() {
                let (store, name) = (store.clone(), name.clone());
                asks.spawn(async move {
                    store
                        .log()
                        .take_lease(&name, &format!("s{i}"), 0, 1_000)
                        .await
                        .unwrap()
                });
            }
            let granted = asks.join_all().await.into_iter().filter(|g| *g).count();
            assert_eq!(granted, 1, "{name}");
        }
    }
}
