//! The SQLite backend: one database file in WAL mode, its connection pool, and its schema in
//! SQLite's dialect (`migrations/sqlite`). The embedded default.

use std::path::Path;

use sqlx::ConnectOptions as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

use super::{Migration, Pool};

/// The schema, in order. 7 reshaped the read models (JSON columns became child tables); 8
/// added users and roles, 10 server-side environment protection; 11 left plaintext secret
/// values for `Store::open` to seal; 12 moved source credentials among them; 14 added leases.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration::new(1, include_str!("../../migrations/sqlite/0001_init.sql")),
    Migration::new(2, include_str!("../../migrations/sqlite/0002_deployments.sql")),
    Migration::new(3, include_str!("../../migrations/sqlite/0003_commit_time.sql")),
    Migration::new(4, include_str!("../../migrations/sqlite/0004_judgements.sql")),
    Migration::new(5, include_str!("../../migrations/sqlite/0005_flags.sql")),
    Migration::new(6, include_str!("../../migrations/sqlite/0006_fix_forward.sql")),
    Migration::new(7, include_str!("../../migrations/sqlite/0007_child_tables.sql")).rebuilding(),
    Migration::new(8, include_str!("../../migrations/sqlite/0008_identities.sql")).rebuilding(),
    Migration::new(
        9,
        include_str!("../../migrations/sqlite/0009_source_credentials.sql"),
    ),
    Migration::new(10, include_str!("../../migrations/sqlite/0010_protection.sql")).rebuilding(),
    Migration::new(
        11,
        include_str!("../../migrations/sqlite/0011_secrets_at_rest.sql"),
    ),
    Migration::new(
        12,
        include_str!("../../migrations/sqlite/0012_sealed_source_credentials.sql"),
    ),
    Migration::new(13, include_str!("../../migrations/sqlite/0013_ui_indexes.sql")),
    Migration::new(14, include_str!("../../migrations/sqlite/0014_leases.sql")),
];

/// Opens (creating if needed) the database file at `path` (`url` names it for sqlx), readable by
/// its owner only.
pub(crate) async fn connect(path: &Path, url: &str) -> Result<Pool, sqlx::Error> {
    owner_only(path)?;
    // Per-statement logging costs more than the statement on the step path.
    let options = url.parse::<AnyConnectOptions>()?.disable_statement_logging();
    AnyPoolOptions::new()
        .test_before_acquire(false)
        .max_connections(4)
        .min_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                use sqlx::Executor as _;
                conn.execute(SETTINGS).await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await
}

/// Each connection's settings. Deleted and overwritten content is zeroed, not left in free
/// pages: the plaintext of a secret sealed on open, or a value under a retired key, does not
/// linger in the file.
const SETTINGS: &str = "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
                        PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;";

/// Creates the database file 0600 if it is missing (SQLite gives its `-wal` and `-shm` files the
/// database's mode), and takes group and other access away from an older data directory's files.
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}
