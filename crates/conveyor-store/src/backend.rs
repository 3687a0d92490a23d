//! The backend boundary: everything that depends on which database holds the store. The rest of
//! the crate names only the aliases below and writes SQL both SQLite and PostgreSQL run (`$n`
//! placeholders, `ON CONFLICT … DO UPDATE`, no JSON functions, no `rowid`); the guard test at
//! the bottom keeps it so.
//!
//! The store talks to either through `sqlx::Any`, chosen at run time by [`Database`]. `Any`
//! carries integers, floats, text and blobs only, so every time is RFC 3339 text, decoded in
//! one place (`query::time`).
//!
//! A backend (one module beside `sqlite`) provides:
//! - `connect`: its connection settings (pragmas, pool size) as an `Any` pool;
//! - `MIGRATIONS`: its schema in its own dialect, creating the same tables and columns (names and
//!   meaning) as every other backend's, numbered alike; a migration that reshapes read models is
//!   marked `rebuilding`, and the read models are then folded again from the log on open;
//! - the few statements that differ ([`Backend`]): taking the chain's head for the rest of a
//!   transaction, and serialising migrations between servers.
//!
//! Columns holding whole documents (an event's `data`, a release's `envelope`, a flag set's
//! `definition`, …) are JSON text, never queried into: portable too.

mod postgres;
mod sqlite;

use std::fmt;
use std::path::{Path, PathBuf};

/// The database the store runs on: whichever [`Database`] names, through `sqlx::Any`.
pub(crate) type Db = sqlx::Any;
pub(crate) type Pool = sqlx::Pool<Db>;
pub(crate) type Tx<'a> = sqlx::Transaction<'a, Db>;
pub(crate) type Row = <Db as sqlx::Database>::Row;
/// A statement with its binds.
pub(crate) type Query<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments<'q>>;

/// Where the store is kept: a SQLite file (the embedded default, `conveyor.db` in the data
/// directory) or a PostgreSQL database several servers can share.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    /// A `postgres://` (or `postgresql://`) URL, as libpq takes it.
    Postgres(String),
}

/// A `--database` that names no database Conveyor can use.
#[derive(Debug, thiserror::Error)]
#[error(
    "'{0}' is not a database Conveyor can use: give postgres://USER@HOST/NAME (or postgresql://…), \
     or sqlite:PATH"
)]
pub struct UnknownDatabase(String);

impl Database {
    /// The embedded default: `conveyor.db` in the data directory `root`.
    pub fn in_data_dir(root: &Path) -> Database {
        Database::Sqlite(root.join("conveyor.db"))
    }

    /// The URL sqlx connects to (a SQLite path percent-encoded where its parser would split it).
    fn url(&self) -> String {
        match self {
            Database::Postgres(url) => url.clone(),
            Database::Sqlite(path) => {
                let path = path.to_string_lossy();
                let mut url = String::from("sqlite://");
                for c in path.chars() {
                    match c {
                        '%' => url.push_str("%25"),
                        '?' => url.push_str("%3F"),
                        '#' => url.push_str("%23"),
                        c => url.push(c),
                    }
                }
                url.push_str("?mode=rwc");
                url
            }
        }
    }
}

impl std::str::FromStr for Database {
    type Err = UnknownDatabase;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Database::Postgres(text.to_string()));
        }
        match text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
        {
            Some(path) if !path.is_empty() => Ok(Database::Sqlite(PathBuf::from(path))),
            _ => Err(UnknownDatabase(text.to_string())),
        }
    }
}

/// Shown in logs and errors: a PostgreSQL URL without its password.
impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Database::Postgres(url) => {
                let Some((scheme, rest)) = url.split_once("://") else {
                    return f.write_str(url);
                };
                let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
                match authority.rsplit_once('@') {
                    Some((user, host)) => {
                        let user = user.split_once(':').map_or(user, |(name, _)| name);
                        write!(f, "{scheme}://{user}@{host}{tail}")
                    }
                    None => f.write_str(url),
                }
            }
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Which backend a pool talks to: the statements that differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub(crate) fn migrations(self) -> &'static [Migration] {
        match self {
            Backend::Sqlite => sqlite::MIGRATIONS,
            Backend::Postgres => postgres::MIGRATIONS,
        }
    }

    /// What follows `SELECT … FROM chain_head` to hold the head until the transaction ends, so
    /// servers sharing the database append one at a time. SQLite has one writer already.
    pub(crate) fn hold_row(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    /// Run in each transaction that appends, to wake the servers following the log
    /// (`LISTEN`); delivered at commit, and only then.
    pub(crate) fn announce(self) -> Option<&'static str> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some(postgres::ANNOUNCE),
        }
    }

    /// Run once plaintext was sealed over: drops the journal's copies of the old pages. SQLite's
    /// WAL keeps frames written before the values were sealed until it is reset, so it is
    /// checkpointed and truncated; PostgreSQL's dead rows go with `VACUUM` (docs/scale-out.md).
    pub(crate) fn forget_overwritten(self) -> Option<&'static str> {
        match self {
            Backend::Sqlite => Some("PRAGMA wal_checkpoint(TRUNCATE)"),
            Backend::Postgres => None,
        }
    }

    /// Run first in the transaction that migrates: servers starting together on one database
    /// migrate one after the other. A transaction-scoped advisory lock, released at commit,
    /// which connection poolers in transaction mode keep intact. SQLite's writer lock does it.
    pub(crate) fn migration_lock(self) -> Option<&'static str> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some("SELECT pg_advisory_xact_lock(7476627906436429) IS NOT NULL"),
        }
    }
}

#[cfg(test)]
impl Backend {
    /// What drops one of the append-only guards (`{table}_no_{change}`), as a test tampering
    /// with the database does.
    pub(crate) fn drop_trigger(self, trigger: &str) -> String {
        match self {
            Backend::Sqlite => format!("DROP TRIGGER {trigger}"),
            Backend::Postgres => {
                let table = trigger.rsplit_once("_no_").map_or(trigger, |(table, _)| table);
                format!("DROP TRIGGER {trigger} ON {table}")
            }
        }
    }
}

pub(crate) use postgres::follow;

/// Connects to `database` (creating a SQLite file if needed).
pub(crate) async fn connect(database: &Database) -> Result<(Pool, Backend), sqlx::Error> {
    sqlx::any::install_default_drivers();
    match database {
        Database::Sqlite(path) => Ok((sqlite::connect(path, &database.url()).await?, Backend::Sqlite)),
        Database::Postgres(url) => Ok((postgres::connect(url).await?, Backend::Postgres)),
    }
}

/// A time column's value: `Any` has no time type, so every backend keeps times as RFC 3339
/// text, read back here (`DateTime<Utc>`, or `Option` of it for a nullable column).
pub(crate) fn time<T: TimeColumn, I: sqlx::ColumnIndex<Row>>(row: &Row, column: I) -> Result<T, sqlx::Error> {
    use sqlx::Row as _;
    let text: Option<&str> = row.try_get(&column)?;
    T::from_text(text).map_err(|error| sqlx::Error::ColumnDecode {
        index: format!("{column:?}"),
        source: error.into(),
    })
}

pub(crate) trait TimeColumn: Sized {
    fn from_text(text: Option<&str>) -> Result<Self, String>;
}

impl TimeColumn for chrono::DateTime<chrono::Utc> {
    fn from_text(text: Option<&str>) -> Result<Self, String> {
        let text = text.ok_or("a time is missing")?;
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|e| format!("'{text}' is not an RFC 3339 time: {e}"))
    }
}

impl TimeColumn for Option<chrono::DateTime<chrono::Utc>> {
    fn from_text(text: Option<&str>) -> Result<Self, String> {
        text.map(|t| TimeColumn::from_text(Some(t))).transpose()
    }
}

/// One step of a backend's schema.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) sql: &'static str,
    /// It changes the shape of read models: they are rebuilt from the log once it is applied.
    pub(crate) rebuilds: bool,
}

impl Migration {
    pub(crate) const fn new(version: i64, sql: &'static str) -> Self {
        Migration {
            version,
            sql,
            rebuilds: false,
        }
    }

    pub(crate) const fn rebuilding(self) -> Self {
        Migration {
            rebuilds: true,
            ..self
        }
    }
}

/// Databases of tests' own. The suites run on SQLite unless `CONVEYOR_TEST_DATABASE=postgres`
/// says the local PostgreSQL server (over its socket, as the user running them: `.ci/run`
/// starts Debian's PostgreSQL 15 and makes that user a role).
#[cfg(test)]
pub(crate) mod scratch {
    use std::path::Path;
    use std::process::Command;

    use super::Database;

    /// The socket directory of the local PostgreSQL server.
    const SOCKET: &str = "/var/run/postgresql";

    /// A test's database, dropped when it is: on the suite's backend, or on PostgreSQL.
    pub(crate) struct Scratch {
        pub(crate) database: Database,
        /// Files beside the database (and the SQLite file itself).
        dir: tempfile::TempDir,
        postgres: Option<String>,
    }

    impl Scratch {
        /// On the backend the suite runs on.
        pub(crate) fn new() -> Scratch {
            // The one variable the store's tests read: which backend they hold to the contract.
            #[allow(clippy::disallowed_methods)]
            match std::env::var("CONVEYOR_TEST_DATABASE").as_deref() {
                Err(_) | Ok("" | "sqlite") => Scratch::sqlite(),
                Ok("postgres") => Scratch::postgres(),
                Ok(other) => panic!("CONVEYOR_TEST_DATABASE={other}: say sqlite or postgres"),
            }
        }

        pub(crate) fn sqlite() -> Scratch {
            let dir = tempfile::tempdir().unwrap();
            Scratch {
                database: Database::in_data_dir(dir.path()),
                dir,
                postgres: None,
            }
        }

        /// A fresh database on the local PostgreSQL server.
        pub(crate) fn postgres() -> Scratch {
            let mut suffix = [0u8; 6];
            getrandom::fill(&mut suffix).unwrap();
            let name = format!("conveyor_test_{}", hex::encode(suffix));
            let made = Command::new("createdb")
                .args(["-h", SOCKET, &name])
                .status()
                .expect("PostgreSQL's createdb runs");
            assert!(
                made.success(),
                "a PostgreSQL server for the tests: start it (`pg_ctlcluster 15 main start`) and make \
                 yourself a role, as .ci/run does"
            );
            Scratch {
                database: Database::Postgres(format!("postgres:///{name}?host={SOCKET}")),
                dir: tempfile::tempdir().unwrap(),
                postgres: Some(name),
            }
        }

        pub(crate) fn dir(&self) -> &Path {
            self.dir.path()
        }

        /// Whether `needle` is anywhere in what the database keeps: SQLite's files (with the
        /// store closed), or a dump of the PostgreSQL database.
        pub(crate) fn holds(&self, needle: &str) -> bool {
            let found = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
            match (&self.database, &self.postgres) {
                (_, Some(name)) => {
                    let dump = Command::new("pg_dump")
                        .args(["-h", SOCKET, name])
                        .output()
                        .expect("PostgreSQL's pg_dump runs");
                    assert!(dump.status.success(), "pg_dump {name}");
                    found(&dump.stdout)
                }
                (Database::Sqlite(path), None) => ["", "-wal", "-shm"].iter().any(|suffix| {
                    let mut file = path.as_os_str().to_owned();
                    file.push(suffix);
                    std::fs::read(file).is_ok_and(|bytes| found(&bytes))
                }),
                (Database::Postgres(_), None) => unreachable!("a scratch PostgreSQL database has a name"),
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            if let Some(name) = &self.postgres {
                let _ = Command::new("dropdb")
                    .args(["--force", "-h", SOCKET, name])
                    .status();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// SQL only one backend understands, and the ways SQLite's types get named.
    const BACKEND_ONLY: &[&str] = &[
        "json_",
        "json(",
        "jsonb",
        "rowid",
        "insert or ",
        "replace into",
        "datetime(",
        "strftime(",
        "julianday(",
        "ifnull(",
        "group_concat(",
        "autoincrement",
        "pragma ",
        "sqlx::sqlite",
    ];

    /// Each backend-only word in `text` (as a word start: `decode_json(` is fine), and each
    /// `Sqlite…` type name, with its line number.
    fn backend_only(text: &str) -> Vec<(usize, String)> {
        let mut found = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let lower = line.to_ascii_lowercase();
            for word in BACKEND_ONLY {
                for (at, _) in lower.match_indices(word) {
                    let before = lower[..at].chars().next_back();
                    if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                        found.push((n + 1, word.to_string()));
                    }
                }
            }
            for (at, _) in line.match_indices("Sqlite") {
                if line[at + 6..].starts_with(|c: char| c.is_ascii_uppercase() || c == ':') {
                    found.push((
                        n + 1,
                        line[at..]
                            .split(|c: char| !c.is_alphanumeric())
                            .next()
                            .unwrap_or("")
                            .to_string(),
                    ));
                }
            }
        }
        found
    }

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn the_guard_sees_backend_only_sql() {
        let sample = "sqlx::query(\"UPDATE d SET a = json_insert(a, '$[#]', $2) WHERE id = $1 ORDER BY ROWID\")\n\
                      let pool: SqlitePool; INSERT OR IGNORE INTO t; decode_json(x); serde_json::to_string(y)";
        let words: Vec<String> = backend_only(sample).into_iter().map(|(_, w)| w).collect();
        assert_eq!(words, ["json_", "rowid", "insert or ", "SqlitePool"]);
    }

    #[test]
    fn only_the_backend_module_speaks_a_backend_dialect() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let backend = src.join("backend");
        let mut problems = Vec::new();
        for file in files {
            if file == src.join("backend.rs") || file.starts_with(&backend) {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for (line, word) in backend_only(&text) {
                problems.push(format!("{}:{line}: {word}", file.display()));
            }
        }
        assert!(
            problems.is_empty(),
            "backend-only SQL or types outside src/backend (move it there or write it portably):\n{}",
            problems.join("\n")
        );
        // The scan did look at the SQL.
        assert!(
            std::fs::read_to_string(src.join("projection.rs"))
                .unwrap()
                .contains("INSERT INTO")
        );
    }
}
