//! The PostgreSQL backend, for servers that share one database: its connection pool, and its
//! schema in its dialect (`migrations/postgres`): the same tables and columns as SQLite's,
//! numbered alike, times kept as RFC 3339 text as every backend keeps them, and the append-only
//! rules as triggers (TRUNCATE included, which skips row triggers).

use sqlx::ConnectOptions as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

use super::{Migration, Pool};

/// Connects to the database `url` names; it must exist (`createdb`), the schema is made here.
pub(crate) async fn connect(url: &str) -> Result<Pool, sqlx::Error> {
    let options = url.parse::<AnyConnectOptions>()?.disable_statement_logging();
    AnyPoolOptions::new()
        .max_connections(8)
        .min_connections(1)
        .connect_with(options)
        .await
}

/// The channel appends are announced on.
const CHANNEL: &str = "conveyor_events";
pub(super) const ANNOUNCE: &str = "NOTIFY conveyor_events";

/// Tells `announcer`'s subscribers of what other servers append: `LISTEN`s on a connection of
/// its own and catches up from the log after every notification and every reconnect (a
/// notification missed while disconnected is then read anyway). Ends when the log is gone.
pub(crate) async fn follow(url: String, pool: Pool, announcer: std::sync::Weak<crate::log::Announcer>) {
    loop {
        let listener = match sqlx::postgres::PgListener::connect(&url).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => Some(listener),
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for other servers' appends");
                    None
                }
            },
            Err(error) => {
                tracing::warn!(%error, "cannot connect to hear other servers' appends");
                None
            }
        };
        if let Some(mut listener) = listener {
            loop {
                let Some(announcer) = announcer.upgrade() else {
                    return;
                };
                if let Err(error) = announcer.catch_up(&pool).await {
                    tracing::warn!(%error, "cannot read other servers' appends");
                }
                drop(announcer);
                if let Err(error) = listener.recv().await {
                    tracing::warn!(%error, "lost the connection that hears other servers' appends");
                    break;
                }
            }
        }
        if announcer.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// The schema, in order: one file per SQLite migration, doing the same.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration::new(1, include_str!("../../migrations/postgres/0001_init.sql")),
    Migration::new(2, include_str!("../../migrations/postgres/0002_deployments.sql")),
    Migration::new(3, include_str!("../../migrations/postgres/0003_commit_time.sql")),
    Migration::new(4, include_str!("../../migrations/postgres/0004_judgements.sql")),
    Migration::new(5, include_str!("../../migrations/postgres/0005_flags.sql")),
    Migration::new(6, include_str!("../../migrations/postgres/0006_fix_forward.sql")),
    Migration::new(7, include_str!("../../migrations/postgres/0007_child_tables.sql")).rebuilding(),
    Migration::new(8, include_str!("../../migrations/postgres/0008_identities.sql")).rebuilding(),
    Migration::new(
        9,
        include_str!("../../migrations/postgres/0009_source_credentials.sql"),
    ),
    Migration::new(10, include_str!("../../migrations/postgres/0010_protection.sql")).rebuilding(),
    Migration::new(
        11,
        include_str!("../../migrations/postgres/0011_secrets_at_rest.sql"),
    ),
    Migration::new(
        12,
        include_str!("../../migrations/postgres/0012_sealed_source_credentials.sql"),
    ),
    Migration::new(13, include_str!("../../migrations/postgres/0013_ui_indexes.sql")),
    Migration::new(14, include_str!("../../migrations/postgres/0014_leases.sql")),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sqlx::Row as _;

    use super::MIGRATIONS;
    use crate::backend::scratch::Scratch;
    use crate::backend::{Backend, Database};

    /// A fresh PostgreSQL database, whichever backend the suite runs on, and a pool of its own.
    async fn postgres() -> (Scratch, sqlx::PgPool) {
        let scratch = Scratch::postgres();
        let Database::Postgres(url) = &scratch.database else {
            unreachable!("a PostgreSQL scratch database")
        };
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        (scratch, pool)
    }

    /// Every table's columns, and every index (primary keys aside), by name.
    type Shape = (BTreeMap<String, Vec<String>>, Vec<String>);

    async fn postgres_shape(pool: &sqlx::PgPool) -> Shape {
        let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in sqlx::query(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'
             ORDER BY table_name, column_name",
        )
        .fetch_all(pool)
        .await
        .unwrap()
        {
            tables.entry(row.get(0)).or_default().push(row.get(1));
        }
        let indexes = sqlx::query(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND indexname NOT LIKE '%_pkey'
             AND indexname NOT LIKE '%_key' ORDER BY indexname",
        )
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
        (tables, indexes)
    }

    async fn sqlite_shape() -> Shape {
        let scratch = Scratch::sqlite();
        let (pool, _) = crate::backend::connect(&scratch.database).await.unwrap();
        for m in Backend::Sqlite.migrations() {
            sqlx::raw_sql(m.sql).execute(&pool).await.unwrap();
        }
        let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        for table in names {
            let mut columns: Vec<String> =
                sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{table}')"))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            columns.sort();
            tables.insert(table, columns);
        }
        let indexes = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex_%' ORDER BY name",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        (tables, indexes)
    }

    async fn migrated() -> (Scratch, sqlx::PgPool) {
        let (scratch, pool) = postgres().await;
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "numbered alike, in order");
            sqlx::raw_sql(m.sql)
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("migration {} on PostgreSQL: {e}", m.version));
        }
        (scratch, pool)
    }

    #[tokio::test]
    async fn the_postgres_schema_has_sqlites_tables_columns_and_indexes() {
        let sqlite = Backend::Sqlite.migrations();
        assert_eq!(
            MIGRATIONS.len(),
            sqlite.len(),
            "one PostgreSQL migration per SQLite one"
        );
        for (pg, lite) in MIGRATIONS.iter().zip(sqlite) {
            assert_eq!((pg.version, pg.rebuilds), (lite.version, lite.rebuilds));
        }
        let (_scratch, pool) = migrated().await;
        let (pg_tables, pg_indexes) = postgres_shape(&pool).await;
        pool.close().await;
        let (lite_tables, lite_indexes) = sqlite_shape().await;
        assert_eq!(pg_tables, lite_tables);
        assert_eq!(pg_indexes, lite_indexes);
    }

    #[tokio::test]
    async fn on_postgres_the_log_releases_and_checkpoints_refuse_to_change() {
        let (_scratch, pool) = migrated().await;
        let pool = &pool;
        for insert in [
            "INSERT INTO events (seq, at, kind, data, prev_hash, hash) VALUES (1, '2026-12-01T00:00:00Z', 'k', '{}', '', 'h')",
            "INSERT INTO releases (id, run_id, project, commit_sha, branch, envelope, created_at)
             VALUES (1, 1, 'p', 'c', 'main', '{}', '2026-12-01T00:00:00Z')",
            "INSERT INTO release_artifacts (release_id, idx, path, digest, size) VALUES (1, 0, 'a', 'd', 1)",
            "INSERT INTO checkpoints (seq, head_hash, at, envelope) VALUES (1, 'h', '2026-12-01T00:00:00Z', '{}')",
        ] {
            sqlx::query(insert).execute(pool).await.unwrap();
        }
        for (change, why) in [
            (
                "UPDATE events SET data = '{\"x\":1}'",
                "the event log is append-only",
            ),
            ("DELETE FROM events", "the event log is append-only"),
            ("TRUNCATE events", "the event log is append-only"),
            (
                "UPDATE releases SET commit_sha = 'other'",
                "releases are immutable",
            ),
            (
                "UPDATE release_artifacts SET digest = 'other'",
                "releases are immutable",
            ),
            (
                "UPDATE checkpoints SET head_hash = 'other'",
                "checkpoints are append-only",
            ),
            ("DELETE FROM checkpoints", "checkpoints are append-only"),
            ("TRUNCATE checkpoints", "checkpoints are append-only"),
        ] {
            let refused = sqlx::query(change).execute(pool).await.unwrap_err();
            assert!(refused.to_string().contains(why), "{change}: {refused}");
        }
        let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(kept, 1);
        // Judgements number themselves, as SQLite's AUTOINCREMENT does.
        for _ in 0..2 {
            sqlx::query(
                "INSERT INTO judgements (deployment_id, metric, verdict, traffic, summary, evidence, at)
                 VALUES (1, 'm', 'pass', 10, 's', '{}', '2026-12-01T00:00:00Z')",
            )
            .execute(pool)
            .await
            .unwrap();
        }
        let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM judgements ORDER BY seq")
            .fetch_all(pool)
            .await
            .unwrap();
        assert_eq!(seqs, vec![1, 2]);
    }
}
