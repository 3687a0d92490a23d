//! Configuration, read once: file < environment < command line. Code below `main` receives the
//! resulting `Config`; nothing else reads the environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use conveyor_store::Database;
use serde::Deserialize;

/// `conveyor.toml`: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data: Option<PathBuf>,
    /// `postgres://…` for a database several servers share (default: SQLite in `data`).
    pub database: Option<String>,
    pub addr: Option<SocketAddr>,
    pub poll_tick_seconds: Option<u64>,
    pub jobs: Option<usize>,
    pub step_log_limit_bytes: Option<u64>,
    /// Flag evaluations per second per evaluation key (0: unlimited).
    pub flag_rate_limit: Option<u32>,
    /// Addresses or CIDR blocks of proxies in front of the environments' routers, whose
    /// `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Option<Vec<String>>,
    /// Let anyone read (a viewer of everything) without a token.
    pub anonymous_read: Option<bool>,
    /// Host names the API answers to besides IP addresses and `localhost`.
    pub allowed_hosts: Option<Vec<String>>,
    pub isolation: Option<Isolation>,
}

/// Whether steps, hooks and instances must run sandboxed (`serve --isolation`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Refuse to start without a working sandbox.
    Required,
    /// Sandbox when the machine can; otherwise run unsandboxed, and say so loudly.
    #[default]
    Auto,
    /// Never sandbox.
    Off,
}

/// Overrides from the environment and the command line (clap merges those two).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub data: Option<PathBuf>,
    pub database: Option<Database>,
    pub addr: Option<SocketAddr>,
    pub poll_tick_seconds: Option<u64>,
    pub jobs: Option<usize>,
    pub flag_rate_limit: Option<u32>,
    pub trusted_proxies: Vec<String>,
    pub anonymous_read: bool,
    pub allowed_hosts: Vec<String>,
    pub isolation: Option<Isolation>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data: PathBuf,
    /// Where the store is: `conveyor.db` in `data` unless `--database` says otherwise.
    pub database: Database,
    pub addr: SocketAddr,
    pub poll_tick: Duration,
    pub jobs: Option<usize>,
    pub step_log_limit: u64,
    pub flags: conveyor_server::flags::FlagsConfig,
    /// `CONVEYOR_ADMIN_TOKEN`, used only on first start.
    pub admin_token: Option<String>,
    /// What steps inherit from Conveyor's own environment.
    pub base_env: Vec<(String, String)>,
    /// Where scratch directories go (the demo's): `$TMPDIR`, else `/tmp`.
    pub temp_dir: PathBuf,
    pub trusted_proxies: Vec<conveyor_router::Cidr>,
    /// Who may read without a token, which host names the API answers to.
    pub access: conveyor_server::auth::AccessConfig,
    pub isolation: Isolation,
}

/// A given admin token shorter than this is refused: its hash is in the database, and a short
/// one could be guessed from it.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// The process environment: read here, once, by `main`, and passed down.
pub fn environment() -> BTreeMap<String, String> {
    #[allow(clippy::disallowed_methods)]
    std::env::vars().collect()
}

/// Variables a step gets from the environment Conveyor was started in; nothing else leaks in.
const INHERITED: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR", "TERM",
];

impl Config {
    pub fn resolve(overrides: &Overrides, env: &BTreeMap<String, String>) -> anyhow::Result<Config> {
        let file = match &overrides.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let data = overrides
            .data
            .clone()
            .or(file.data)
            .unwrap_or_else(|| default_data_dir(env));
        let database = match (&overrides.database, &file.database) {
            (Some(database), _) => database.clone(),
            (None, Some(text)) => text.parse().context("the config file's database")?,
            (None, None) => Database::in_data_dir(&data),
        };
        let trusted_proxies = if overrides.trusted_proxies.is_empty() {
            file.trusted_proxies.unwrap_or_default()
        } else {
            overrides.trusted_proxies.clone()
        };
        let trusted_proxies = trusted_proxies
            .iter()
            .map(|text| text.parse().with_context(|| format!("trusted proxy '{text}'")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let admin_token = env.get("CONVEYOR_ADMIN_TOKEN").filter(|t| !t.is_empty()).cloned();
        if admin_token
            .as_ref()
            .is_some_and(|t| t.len() < MIN_ADMIN_TOKEN_LEN)
        {
            anyhow::bail!("CONVEYOR_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_LEN} characters");
        }
        let mut allowed_hosts = file.allowed_hosts.unwrap_or_default();
        allowed_hosts.extend(overrides.allowed_hosts.iter().cloned());
        Ok(Config {
            data,
            database,
            trusted_proxies,
            access: conveyor_server::auth::AccessConfig {
                anonymous_read: overrides.anonymous_read || file.anonymous_read.unwrap_or(false),
                allowed_hosts,
            },
            isolation: overrides.isolation.or(file.isolation).unwrap_or_default(),
            addr: overrides
                .addr
                .or(file.addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            poll_tick: Duration::from_secs(
                overrides
                    .poll_tick_seconds
                    .or(file.poll_tick_seconds)
                    .unwrap_or(5)
                    .max(1),
            ),
            jobs: overrides.jobs.or(file.jobs),
            step_log_limit: file
                .step_log_limit_bytes
                .unwrap_or(conveyor_engine::DEFAULT_STEP_LOG_LIMIT),
            flags: conveyor_server::flags::FlagsConfig {
                rate_per_second: overrides
                    .flag_rate_limit
                    .or(file.flag_rate_limit)
                    .unwrap_or(conveyor_server::flags::FlagsConfig::default().rate_per_second),
            },
            admin_token,
            base_env: INHERITED
                .iter()
                .filter_map(|k| env.get(*k).map(|v| (k.to_string(), v.clone())))
                .collect(),
            temp_dir: env
                .get("TMPDIR")
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from),
        })
    }

    pub fn engine_config(&self) -> conveyor_engine::EngineConfig {
        let mut config = conveyor_engine::EngineConfig::new(self.base_env.clone());
        if let Some(jobs) = self.jobs {
            config.parallelism = jobs.max(1);
        }
        config.step_log_limit = self.step_log_limit;
        config
    }
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not a valid Conveyor config", path.display()))
}

/// `$XDG_DATA_HOME/conveyor`, else `~/.local/share/conveyor`, else `./.conveyor`.
fn default_data_dir(env: &BTreeMap<String, String>) -> PathBuf {
    if let Some(xdg) = env.get("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Path::new(xdg).join("conveyor");
    }
    match env.get("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Path::new(home).join(".local/share/conveyor"),
        None => PathBuf::from(".conveyor"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_below_environment_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("conveyor.toml");
        std::fs::write(&file, "data = '/from/file'\naddr = '127.0.0.1:9000'\njobs = 3\n").unwrap();
        let mut o = Overrides {
            config: Some(file.clone()),
            ..Default::default()
        };
        let c = Config::resolve(&o, &env(&[("HOME", "/h"), ("SECRET", "x")])).unwrap();
        assert_eq!(c.data, PathBuf::from("/from/file"));
        assert_eq!(c.addr.port(), 9000);
        assert_eq!(c.jobs, Some(3));
        assert_eq!(c.base_env, vec![("HOME".to_string(), "/h".to_string())]);
        o.data = Some("/from/flag".into());
        o.jobs = Some(1);
        let c = Config::resolve(&o, &env(&[])).unwrap();
        assert_eq!(c.data, PathBuf::from("/from/flag"));
        assert_eq!(c.database, Database::Sqlite("/from/flag/conveyor.db".into()));
        assert_eq!(c.jobs, Some(1));
        assert_eq!(c.flags.rate_per_second, 1_000);
        o.flag_rate_limit = Some(0);
        assert_eq!(Config::resolve(&o, &env(&[])).unwrap().flags.rate_per_second, 0);
    }

    #[test]
    fn the_database_is_sqlite_in_the_data_directory_unless_the_file_or_a_flag_says() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("conveyor.toml");
        std::fs::write(
            &file,
            "data = '/d'\ndatabase = 'postgres://conveyor:pw@db.internal/conveyor'\n",
        )
        .unwrap();
        let mut o = Overrides {
            config: Some(file.clone()),
            ..Default::default()
        };
        let c = Config::resolve(&o, &env(&[])).unwrap();
        assert_eq!(
            c.database,
            Database::Postgres("postgres://conveyor:pw@db.internal/conveyor".into())
        );
        // Shown without its password.
        assert_eq!(c.database.to_string(), "postgres://conveyor@db.internal/conveyor");
        o.database = Some("sqlite:/elsewhere/c.db".parse().unwrap());
        assert_eq!(
            Config::resolve(&o, &env(&[])).unwrap().database,
            Database::Sqlite("/elsewhere/c.db".into())
        );
        std::fs::write(&file, "database = 'mysql://x'\n").unwrap();
        o.database = None;
        let err = format!("{:#}", Config::resolve(&o, &env(&[])).unwrap_err());
        assert!(
            err.contains("'mysql://x' is not a database Conveyor can use"),
            "{err}"
        );
    }

    #[test]
    fn isolation_is_auto_unless_the_file_or_a_flag_says() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("conveyor.toml");
        assert_eq!(
            Config::resolve(&Overrides::default(), &env(&[]))
                .unwrap()
                .isolation,
            Isolation::Auto
        );
        std::fs::write(&file, "isolation = 'required'\n").unwrap();
        let mut o = Overrides {
            config: Some(file),
            ..Default::default()
        };
        assert_eq!(
            Config::resolve(&o, &env(&[])).unwrap().isolation,
            Isolation::Required
        );
        o.isolation = Some(Isolation::Off);
        assert_eq!(Config::resolve(&o, &env(&[])).unwrap().isolation, Isolation::Off);
    }

    #[test]
    fn trusted_proxies_from_the_file_or_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("conveyor.toml");
        std::fs::write(&file, "trusted_proxies = ['10.0.0.0/8', '192.0.2.7']\n").unwrap();
        let mut o = Overrides {
            config: Some(file),
            ..Default::default()
        };
        let shown = |c: Config| {
            c.trusted_proxies
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            shown(Config::resolve(&o, &env(&[])).unwrap()),
            ["10.0.0.0/8", "192.0.2.7/32"]
        );
        o.trusted_proxies = vec!["fd00::/8".into()];
        assert_eq!(shown(Config::resolve(&o, &env(&[])).unwrap()), ["fd00::/8"]);
        o.trusted_proxies = vec!["10.0.0.1/8".into()];
        let err = format!("{:#}", Config::resolve(&o, &env(&[])).unwrap_err());
        assert!(err.starts_with("trusted proxy '10.0.0.1/8'"), "{err}");
    }

    #[test]
    fn defaults_and_bad_files() {
        let c = Config::resolve(&Overrides::default(), &env(&[("HOME", "/home/u")])).unwrap();
        assert_eq!(c.data, PathBuf::from("/home/u/.local/share/conveyor"));
        assert_eq!(c.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.temp_dir, PathBuf::from("/tmp"));
        let c = Config::resolve(&Overrides::default(), &env(&[("TMPDIR", "/scratch")])).unwrap();
        assert_eq!(c.temp_dir, PathBuf::from("/scratch"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "dta = 1\n").unwrap();
        let o = Overrides {
            config: Some(file),
            ..Default::default()
        };
        let err = format!("{:#}", Config::resolve(&o, &env(&[])).unwrap_err());
        assert!(err.contains("unknown field `dta`"), "{err}");
    }
}
