//! Commands that work on a data directory in this process: `run`, `serve`, local `verify` and
//! `audit verify`, `secret rotate-key`, `admin rebuild`, and `validate`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use conveyor_attest::PublicKey;
use conveyor_engine::{CheckpointPolicy, DataDir, Engine, NewRun, source};
use conveyor_exec::LocalExecutor;
use conveyor_exec::sandbox::Sandbox;
use conveyor_store::{Database, Release, RunStatus};

use crate::config::{Config, Isolation};
use crate::progress::Progress;

pub fn validate(file: &Path) -> ExitCode {
    let name = file.display().to_string();
    let text = match std::fs::read(file) {
        Ok(bytes) if bytes.len() > conveyor_spec::MAX_SOURCE_BYTES => {
            eprintln!(
                "{name}:1:1: file is larger than {} bytes",
                conveyor_spec::MAX_SOURCE_BYTES
            );
            return ExitCode::FAILURE;
        }
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                eprintln!("{name}:1:1: file is not UTF-8 text");
                return ExitCode::FAILURE;
            }
        },
        Err(e) => {
            eprintln!("{name}: cannot read: {e}");
            return ExitCode::FAILURE;
        }
    };
    match conveyor_spec::parse(&name, &text) {
        Ok(p) => {
            let environments: Vec<&str> = p.environments.iter().map(|e| e.name.as_str()).collect();
            let delivery = match environments.is_empty() {
                true => String::new(),
                false => format!(", delivering to {}", environments.join(" → ")),
            };
            println!(
                "{name}: valid pipeline '{}' with {} job(s){delivery}",
                p.name,
                p.jobs.len()
            );
            for warning in p
                .environments
                .iter()
                .flat_map(conveyor_delivery::evidence_warnings)
            {
                eprintln!("{name}: warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

/// `NAME=VALUE`, or `NAME` taken from the caller's environment.
pub fn parse_secrets(
    args: &[String],
    env: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<(String, String)>> {
    args.iter()
        .map(|arg| match arg.split_once('=') {
            Some((name, value)) => Ok((name.to_string(), value.to_string())),
            None => env
                .get(arg)
                .map(|v| (arg.clone(), v.clone()))
                .with_context(|| format!("--secret {arg}: no such environment variable (use NAME=VALUE)")),
        })
        .collect()
}

async fn open_engine(config: &Config) -> anyhow::Result<Arc<Engine>> {
    let data = DataDir::open(&config.data, &config.database)
        .await
        .with_context(|| {
            format!(
                "cannot open data directory {} (database {})",
                config.data.display(),
                config.database
            )
        })?;
    engine(config, data).await
}

/// The engine on `data`, its steps (and the server's hooks and instances) in the sandbox that
/// `config.isolation` asks for.
pub async fn engine(config: &Config, data: DataDir) -> anyhow::Result<Arc<Engine>> {
    let sandbox = sandbox(config, &data).await?;
    let mut engine_config = config.engine_config();
    engine_config.sandbox = sandbox.clone();
    Ok(Engine::new(
        data,
        engine_config,
        Arc::new(LocalExecutor::new(sandbox)),
    ))
}

/// Bubblewrap hiding the data directory, or no sandbox: because the operator said `off`, or —
/// unless isolation is `required`, which refuses to go on — because this machine cannot have one,
/// which is said loudly.
async fn sandbox(config: &Config, data: &DataDir) -> anyhow::Result<Sandbox> {
    if config.isolation == Isolation::Off {
        return Ok(Sandbox::none("turned off (--isolation off)"));
    }
    let path = config
        .base_env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or("/usr/bin:/bin", |(_, v)| v.as_str());
    // Through a symlink, the same directory has two names: both are hidden.
    let mut hidden = vec![data.root.clone()];
    hidden.extend(std::fs::canonicalize(&data.root));
    match Sandbox::bubblewrap(path, hidden).await {
        Ok(sandbox) => {
            tracing::info!(
                isolation = sandbox.describe(),
                "steps, hooks and instances run sandboxed"
            );
            Ok(sandbox)
        }
        Err(why) if config.isolation == Isolation::Required => {
            Err(anyhow::Error::new(why)
                .context("isolation is required (--isolation required) but unavailable"))
        }
        Err(why) => {
            tracing::warn!(
                %why,
                "steps, hooks and instances run WITHOUT isolation, with the server's privileges: a \
                 pipeline can read the data directory (database, secrets, signing key); install \
                 bubblewrap, or say --isolation off"
            );
            Ok(Sandbox::none(why))
        }
    }
}

pub async fn run(
    config: &Config,
    dir: &Path,
    secrets: Vec<(String, String)>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let file = dir.join("conveyor.yml");
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let pipeline = match conveyor_spec::parse(&file.display().to_string(), &text) {
        Ok(p) => p,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let engine = open_engine(config).await?;
    let project = pipeline.name.clone();
    for (name, value) in &secrets {
        engine.events().set_secret(&project, name, value).await?;
    }
    let scratch = config.data.join("work");
    let tree = source::snapshot_working_tree(dir, &engine.data().cas, &scratch).await?;
    let source_uri = std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string();
    let progress = Arc::new(Progress::new(!json));
    engine.observe(progress.clone());
    let printing = tokio::spawn({
        let events = engine.events().subscribe();
        async move { progress.follow(events).await }
    });
    let run_id = engine
        .create_run(NewRun {
            project,
            source_uri,
            commit: tree.commit,
            branch: tree.branch,
            event: "local".into(),
            pipeline: text,
            source_digest: tree.source_digest,
            committed_at: tree.committed_at,
        })
        .await?;
    let status = engine.execute_run(run_id).await?;
    // Every event of the run printed before the release.
    printing.await?;
    final_checkpoint(&engine).await;
    let release = engine.store().release_of_run(run_id).await?;
    match (&release, json) {
        (Some(release), true) => println!("{}", serde_json::to_string_pretty(release)?),
        (Some(release), false) => print_release(release, &engine.data().signer.public(), &config.data),
        (None, _) => eprintln!("run {run_id} {status}: no release"),
    }
    Ok(if status == RunStatus::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_release(release: &Release, key: &PublicKey, data: &Path) {
    println!();
    println!(
        "release {} of {} — commit {} on {} (run {})",
        release.id,
        release.project,
        &release.commit[..release.commit.len().min(12)],
        release.branch,
        release.run_id
    );
    for a in &release.artifacts {
        println!("  {}  sha256:{}  {} bytes", a.path, a.digest, a.size);
    }
    println!("  provenance: SLSA v1 (in-toto Statement v1) in a DSSE envelope");
    println!("  signed by Ed25519 key {}", key.key_id());
    println!(
        "  check it:   conveyor verify {} --data {}",
        release.id,
        data.display()
    );
}

pub async fn serve(config: &Config) -> anyhow::Result<ExitCode> {
    let engine = open_engine(config).await?;
    if let Some(token) = conveyor_server::ensure_admin_token(&engine, config.admin_token.as_deref()).await? {
        println!("admin token (shown once — store it now): {token}");
    }
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    let addr = listener.local_addr()?;
    let server_config = conveyor_server::ServerConfig {
        poll_tick: config.poll_tick,
        trusted_proxies: config.trusted_proxies.clone(),
        access: config.access.clone(),
    };
    if config.access.anonymous_read {
        tracing::warn!("anonymous read access is on: anyone who reaches {addr} reads every project");
    }
    let checkpoints = tokio::spawn(engine.clone().keep_checkpoints(CheckpointPolicy::default()));
    // Recovery comes before "listening": once a client can talk to us, environments are back.
    let state = conveyor_server::start_with_flags(engine.clone(), server_config, config.flags).await;
    println!(
        "conveyor listening on http://{addr} (data: {})",
        config.data.display()
    );
    conveyor_server::serve(state, listener, shutdown_signal()).await?;
    checkpoints.abort();
    final_checkpoint(&engine).await;
    Ok(ExitCode::SUCCESS)
}

/// A checkpoint of everything logged until now, before the process ends.
async fn final_checkpoint(engine: &Engine) {
    if let Err(error) = engine.data().checkpoint().await {
        tracing::error!(%error, "cannot sign the event log's checkpoint at shutdown");
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM can be handled");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down; unfinished runs resume on the next start");
}

/// Refuses a data directory without its SQLite file, never creating one: a mistyped `--data`
/// is not a new, empty store.
fn existing(data: &Path, database: &Database) -> anyhow::Result<()> {
    if let Database::Sqlite(file) = database
        && !file.exists()
    {
        bail!(
            "{} is not a Conveyor data directory (no {})",
            data.display(),
            file.file_name().unwrap_or_default().to_string_lossy()
        );
    }
    Ok(())
}

/// Opens an existing data directory (never creates one).
async fn open_existing(data: &Path, database: &Database) -> anyhow::Result<DataDir> {
    existing(data, database)?;
    Ok(DataDir::open(data, database).await?)
}

/// `database`, or else the SQLite file in `data`.
fn database_of(data: &Path, database: Option<Database>) -> Database {
    database.unwrap_or_else(|| Database::in_data_dir(data))
}

pub async fn verify(data: &Path, database: Option<Database>, release_id: i64) -> anyhow::Result<ExitCode> {
    let data = open_existing(data, &database_of(data, database)).await?;
    let release = data
        .store
        .release(release_id)
        .await?
        .with_context(|| format!("release {release_id} does not exist"))?;
    let mut actual = BTreeMap::new();
    for a in &release.artifacts {
        let now = data
            .cas
            .rehash(&a.digest)
            .await
            .map_err(|e| format!("cannot read stored content: {e}"));
        actual.insert(a.path.clone(), now);
    }
    Ok(report_verification(&release, &data.public_keys(), &actual))
}

/// Prints the outcome of checking a release; the exit code says whether it verified.
pub fn report_verification(
    release: &Release,
    keys: &[PublicKey],
    actual: &BTreeMap<String, Result<String, String>>,
) -> ExitCode {
    let problems = conveyor_engine::verify_release(release, keys, actual);
    if problems.is_empty() {
        let signer = serde_json::from_value::<conveyor_attest::Envelope>(release.envelope.clone())
            .ok()
            .and_then(|e| e.signatures.first().map(|s| s.keyid.clone()))
            .unwrap_or_default();
        let retired = if keys.first().is_some_and(|k| k.key_id() == signer) {
            ""
        } else {
            " (a retired key)"
        };
        println!(
            "release {} verified: signature by key {signer}{retired} is valid; {} artifact(s) match their signed digests",
            release.id,
            release.artifacts.len()
        );
        ExitCode::SUCCESS
    } else {
        eprintln!("release {} FAILED verification:", release.id);
        for p in problems {
            eprintln!("  - {p}");
        }
        ExitCode::FAILURE
    }
}

/// Checks a local data directory's log (the server stopped, or a copy) with nothing of the
/// directory but its database trusted to be the directory's: the public key and the exported
/// checkpoints may come from elsewhere. Opened without the secrets key.
pub async fn audit_verify(
    data: &Path,
    database: Option<Database>,
    checkpoints: Option<&Path>,
    public_key: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let database = database_of(data, database);
    existing(data, &database)?;
    let key = public_keys(data, public_key)?;
    if let Some(file) = checkpoints {
        // Given explicitly, a missing file is a mistake, not "nothing exported yet".
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    }
    let exported = checkpoints.map_or_else(|| data.join("checkpoints.jsonl"), Path::to_path_buf);
    let store = conveyor_store::Store::open(&database, conveyor_store::Keyring::default()).await?;
    let audit = store.audit(&key, Some(&exported)).await?;
    Ok(report_audit(
        audit.events,
        (audit.checkpoints, audit.exported),
        &audit.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
    ))
}

/// Copies the store in `from` to `to` and verifies the copy against `data`'s keys and export.
pub async fn migrate(data: &Path, from: &Database, to: &Database) -> anyhow::Result<ExitCode> {
    existing(data, from)?;
    if from == to {
        bail!("--from and --to are the same database ({from})");
    }
    let key = public_keys(data, None)?;
    let copied = conveyor_store::Store::copy(from, to)
        .await
        .with_context(|| format!("cannot copy {from} to {to}"))?;
    println!(
        "copied {} events, {} signed checkpoint(s) and {} sealed secret value(s) from {from} to {to}",
        copied.events, copied.checkpoints, copied.secrets
    );
    let store = conveyor_store::Store::open(to, conveyor_store::Keyring::default()).await?;
    let audit = store.audit(&key, Some(&data.join("checkpoints.jsonl"))).await?;
    Ok(report_audit(
        audit.events,
        (audit.checkpoints, audit.exported),
        &audit.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
    ))
}

/// The public keys `data`'s releases and checkpoints verify with: its current and retired
/// ones, or those in `file` (one hex key per line) kept elsewhere.
fn public_keys(data: &Path, public_key: Option<&Path>) -> anyhow::Result<Vec<PublicKey>> {
    let mut key_files = vec![public_key.map_or_else(|| data.join("keys/signing.pub"), Path::to_path_buf)];
    if public_key.is_none()
        && let Ok(retired) = std::fs::read_dir(data.join("keys/retired"))
    {
        key_files.extend(retired.filter_map(Result::ok).map(|e| e.path()));
    }
    let mut key = Vec::new();
    for file in &key_files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the public key {}", file.display()))?;
        key.extend(
            conveyor_attest::public_keys_from_text(&text).with_context(|| format!("{}", file.display()))?,
        );
    }
    Ok(key)
}

/// Prints what verifying the log found: events, `(checkpoints, exported checkpoints)` checked,
/// problems; the exit code says whether it is intact.
pub fn report_audit(events: u64, (checkpoints, exported): (u64, u64), problems: &[String]) -> ExitCode {
    if problems.is_empty() {
        println!(
            "audit log intact: {events} events, hash chain verified, {checkpoints} signed checkpoint(s) match ({exported} in the exported file)"
        );
        ExitCode::SUCCESS
    } else {
        eprintln!("audit log TAMPERED ({events} events checked):");
        for p in problems {
            eprintln!("  - {p}");
        }
        ExitCode::FAILURE
    }
}

pub async fn rotate_secrets_key(config: &Config) -> anyhow::Result<ExitCode> {
    let data = open_existing(&config.data, &config.database).await?;
    let (key, resealed) = data.rotate_secrets_key().await?;
    println!("{resealed} secret value(s) re-encrypted under key {key}; the old key is retired");
    Ok(ExitCode::SUCCESS)
}

pub async fn rotate_signing_key(config: &Config) -> anyhow::Result<ExitCode> {
    let data = open_existing(&config.data, &config.database).await?;
    let previous = data.signer.public().key_id();
    let key = data.rotate_signing_key().await?;
    println!(
        "releases are signed by key {key} from now on; key {previous} is retired (what it signed still verifies)"
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn rebuild(config: &Config) -> anyhow::Result<ExitCode> {
    let data = open_existing(&config.data, &config.database).await?;
    let n = data.store.log().rebuild_read_models().await?;
    println!("read models rebuilt from {n} events");
    Ok(ExitCode::SUCCESS)
}
