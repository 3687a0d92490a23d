//! Copying a store to another database (`conveyor migrate`): the event log with its signed
//! checkpoints and the sealed secret values, row for row, their hashes and ciphertexts as they
//! are; the read models are then folded from the copied log, as on any rebuild.

use sqlx::Row as _;

use crate::backend::{self, Database, Pool, Tx};
use crate::db::{Store, StoreError, chain_head, save_head};
use crate::projection;

/// Rows read from the source at a time.
const BATCH: i64 = 1000;

/// What a copy moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub events: i64,
    pub checkpoints: i64,
    pub secrets: i64,
    /// The newest event's sequence number and hash, the same in both stores.
    pub head: (i64, String),
}

impl Store {
    /// Copies the store in `from` into `to`, which must hold no events yet (its schema is made
    /// if missing), in one transaction on `to`: all of it or nothing. The source is only read.
    /// Secret values stay sealed: `to` opens them with the same keyring.
    pub async fn copy(from: &Database, to: &Database) -> Result<Copied, StoreError> {
        let source = Store::open(from, crate::Keyring::default()).await?;
        let target = Store::open(to, crate::Keyring::default()).await?;
        let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&target.pool)
            .await?;
        if held > 0 {
            return Err(StoreError::NotEmpty { events: held });
        }
        let backend = target.log().backend;
        let mut tx = target.pool.begin().await?;
        let events = copy_events(&source.pool, &mut tx).await?;
        let checkpoints = copy_rows(
            &source.pool,
            &mut tx,
            "SELECT seq, head_hash, at, envelope FROM checkpoints ORDER BY seq",
            "INSERT INTO checkpoints (seq, head_hash, at, envelope) VALUES ($1, $2, $3, $4)",
            &[Column::Int, Column::Text, Column::Text, Column::Text],
        )
        .await?;
        let secrets = copy_rows(
            &source.pool,
            &mut tx,
            "SELECT project, name, value, key_id, nonce FROM secrets ORDER BY project, name",
            "INSERT INTO secrets (project, name, value, key_id, nonce) VALUES ($1, $2, $3, $4, $5)",
            &[
                Column::Text,
                Column::Text,
                Column::Text,
                Column::MaybeText,
                Column::MaybeText,
            ],
        )
        .await?;
        let mut source_tx = source.pool.begin().await?;
        let head = chain_head(&mut source_tx, source.log().backend).await?;
        source_tx.rollback().await?;
        save_head(&mut tx, &head).await?;
        projection::rebuild(&mut tx).await?;
        // The copy's chain ends where the source's does.
        if chain_head(&mut tx, backend).await? != head {
            return Err(StoreError::Decode {
                seq: head.0,
                error: "the copied chain's head differs from the source's".into(),
            });
        }
        tx.commit().await?;
        source.pool.close().await;
        target.pool.close().await;
        Ok(Copied {
            events,
            checkpoints,
            secrets,
            head,
        })
    }
}

async fn copy_events(source: &Pool, tx: &mut Tx<'_>) -> Result<i64, StoreError> {
    let mut last = 0;
    let mut copied = 0;
    loop {
        let rows = sqlx::query(
            "SELECT seq, at, kind, data, prev_hash, hash FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(last)
        .bind(BATCH)
        .fetch_all(source)
        .await?;
        let Some(row) = rows.last() else {
            return Ok(copied);
        };
        last = row.try_get(0)?;
        for row in &rows {
            sqlx::query(
                "INSERT INTO events (seq, at, kind, data, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(row.try_get::<i64, _>(0)?)
            .bind(row.try_get::<&str, _>(1)?)
            .bind(row.try_get::<&str, _>(2)?)
            .bind(row.try_get::<&str, _>(3)?)
            .bind(row.try_get::<&str, _>(4)?)
            .bind(row.try_get::<&str, _>(5)?)
            .execute(&mut **tx)
            .await?;
        }
        copied += rows.len() as i64;
    }
}

/// The type of a copied column.
#[derive(Clone, Copy)]
enum Column {
    Int,
    Text,
    MaybeText,
}

/// Copies what `select` reads into `insert`, column for column; returns the rows copied.
async fn copy_rows(
    source: &Pool,
    tx: &mut Tx<'_>,
    select: &str,
    insert: &str,
    columns: &[Column],
) -> Result<i64, StoreError> {
    let rows = sqlx::query(select).fetch_all(source).await?;
    for row in &rows {
        let mut query: backend::Query<'_> = sqlx::query(insert);
        for (i, column) in columns.iter().enumerate() {
            query = match column {
                Column::Int => query.bind(row.try_get::<i64, _>(i)?),
                Column::Text => query.bind(row.try_get::<String, _>(i)?),
                Column::MaybeText => query.bind(row.try_get::<Option<String>, _>(i)?),
            };
        }
        query.execute(&mut **tx).await?;
    }
    Ok(rows.len() as i64)
}

#[cfg(test)]
mod tests {
    use crate::backend::scratch::Scratch;
    use crate::db::tests::{audit, open, store_with_a_run};
    use crate::{Event, Store, StoreError};

    #[tokio::test]
    async fn a_copy_has_the_same_chain_checkpoints_secrets_and_views_and_refuses_a_used_target() {
        let (source, store, run_id) = store_with_a_run().await;
        store.log().set_secret("p", "TOKEN", "s3cr3t").await.unwrap();
        let signer = conveyor_attest::KeyPair::from_seed([6; 32]);
        store
            .log()
            .checkpoint(&signer, &source.dir().join("checkpoints.jsonl"))
            .await
            .unwrap();
        let want_run = store.run(run_id).await.unwrap();
        let want_events = store.events(0, 100).await.unwrap();
        store.pool.close().await;

        // Onto the other backend when the suite runs on SQLite, and the same one otherwise.
        let target = match &source.database {
            crate::Database::Sqlite(_) => Scratch::postgres(),
            crate::Database::Postgres(_) => Scratch::sqlite(),
        };
        let copied = Store::copy(&source.database, &target.database).await.unwrap();
        assert_eq!(
            (copied.events, copied.checkpoints, copied.secrets),
            (want_events.len() as i64, 1, 1)
        );
        let copy = open(&target).await;
        assert_eq!(copy.events(0, 100).await.unwrap(), want_events);
        assert_eq!(copy.run(run_id).await.unwrap(), want_run);
        assert_eq!(
            copy.secrets("p").await.unwrap(),
            [("TOKEN".to_string(), "s3cr3t".to_string())]
        );
        assert_eq!(audit(&copy).await, (want_events.len() as u64, vec![]));
        // The copy goes on from the same head.
        copy.log()
            .append(Event::RunCancelRequested {
                run_id,
                reason: "after the move".into(),
            })
            .await
            .unwrap();
        assert_eq!(audit(&copy).await.1, vec![]);
        copy.pool.close().await;

        // A target that already has a history is left alone.
        assert!(matches!(
            Store::copy(&source.database, &target.database).await,
            Err(StoreError::NotEmpty { events }) if events == want_events.len() as i64 + 1
        ));
    }
}
