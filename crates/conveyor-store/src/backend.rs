//! The backend boundary: everything that depends on which database holds the store. The rest of
//! the crate names only the aliases below and writes SQL both SQLite and PostgreSQL run (`$n`
//! placeholders, `ON CONFLICT … DO UPDATE`, no JSON functions, no `rowid`); the guard test at
//! the bottom keeps it so.
//!
//! A backend (one module beside `sqlite`) provides:
//! - `Db`: its `sqlx::Database`, from which `Pool`, `Tx` and `Row` follow;
//! - `connect`: its connection options, pragmas/settings and pool size;
//! - `MIGRATIONS`: its schema in its own dialect, creating the same tables and columns (names and
//!   meaning) as every other backend's, numbered alike; a migration that reshapes read models is
//!   marked `rebuilding`, and the read models are then folded again from the log on open.
//!
//! Columns holding whole documents (an event's `data`, a release's `envelope`, a flag set's
//! `definition`, …) are JSON text, never queried into: portable too.

#[cfg(test)]
mod postgres;
mod sqlite;

pub(crate) use sqlite::{MIGRATIONS, connect};

/// The database the store runs on.
pub(crate) type Db = sqlite::Db;
pub(crate) type Pool = sqlx::Pool<Db>;
pub(crate) type Tx<'a> = sqlx::Transaction<'a, Db>;
pub(crate) type Row = <Db as sqlx::Database>::Row;
/// A statement with its binds.
pub(crate) type Query<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments<'q>>;

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
