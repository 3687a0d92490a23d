//! The `conveyor` binary: argument parsing, configuration and wiring. Logic lives in the crates.

mod client;
mod config;
mod demo;
mod local;
mod progress;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};

/// Conveyor — continuous delivery in one binary: pipelines as code, signed releases, an audited
/// event log.
///
/// Start here:
///   conveyor demo                        the whole path: build, release, staging, canary to production
///   conveyor run examples/hello          run a project's pipeline locally, print its release
///   conveyor validate conveyor.yml       check a pipeline file
///   conveyor serve                       start the server (API on 127.0.0.1:8080)
#[derive(Parser, Debug)]
#[command(name = "conveyor", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Server URL for client commands.
    #[arg(
        long,
        global = true,
        env = "CONVEYOR_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// API token for client commands that change something.
    #[arg(long, global = true, env = "CONVEYOR_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Args, Debug, Clone, Default)]
struct DataArgs {
    /// Data directory (database, artifacts, logs, signing key). Default: ~/.local/share/conveyor.
    #[arg(long, env = "CONVEYOR_DATA")]
    data: Option<PathBuf>,
    /// Configuration file (TOML); values there are overridden by environment and flags.
    #[arg(long, env = "CONVEYOR_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The whole path in one command: a server, the example project, two changes built into
    /// signed releases and delivered — blue-green to staging, approval and canary to production.
    Demo {
        /// The example project to use.
        #[arg(default_value = "examples/hello")]
        example: PathBuf,
        /// Stop at the end instead of serving until Ctrl-C (the default when not run from a terminal).
        #[arg(long)]
        exit: bool,
    },
    /// Check a conveyor.yml; prints FILE:LINE:COL: message per problem, exit 1 when invalid.
    Validate {
        /// Pipeline file (default: ./conveyor.yml).
        file: Option<PathBuf>,
    },
    /// Run DIR's pipeline here, without a server; exit 0 only when it passed.
    Run {
        /// Project directory holding conveyor.yml (default: .).
        dir: Option<PathBuf>,
        #[command(flatten)]
        data: DataArgs,
        /// Secret for ${{ secrets.NAME }}: NAME=VALUE, or NAME to take it from your environment.
        #[arg(long = "secret", value_name = "NAME[=VALUE]")]
        secrets: Vec<String>,
        /// Jobs run at once (default: number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Print the release as JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Start the server: API, triggers (polling, manual, cron), runs.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long, env = "CONVEYOR_ADDR")]
        addr: Option<SocketAddr>,
        #[command(flatten)]
        data: DataArgs,
        /// Seconds between checks for projects due to be polled (default 5).
        #[arg(long)]
        poll_tick: Option<u64>,
        /// Jobs run at once (default: number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Flag evaluations per second allowed per evaluation key (default 1000; 0: unlimited).
        #[arg(long)]
        flag_rate_limit: Option<u32>,
    },
    /// Manage projects on the server.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Start a run of a project now.
    Trigger {
        project: String,
        /// Branch to run (default: the repository's default branch).
        #[arg(long)]
        branch: Option<String>,
        /// Exact commit to run.
        #[arg(long)]
        commit: Option<String>,
    },
    /// List runs, or show one run with its jobs and steps.
    Runs {
        /// A run id to show in detail.
        id: Option<i64>,
        #[arg(long)]
        project: Option<String>,
    },
    /// Print a run's log; --follow streams it live until the run ends.
    Logs {
        run: i64,
        #[arg(long, short)]
        follow: bool,
    },
    /// Cancel a running run (kills its steps).
    Cancel { run: i64 },
    /// List releases.
    Releases {
        #[arg(long)]
        project: Option<String>,
    },
    /// Check a release: its signature and every artifact's digest.
    Verify {
        release: i64,
        /// Verify against a local data directory instead of a server.
        #[arg(long, env = "CONVEYOR_DATA")]
        data: Option<PathBuf>,
    },
    /// Deploy a release to an environment (`promote 3 --to staging`), or advance a paused
    /// deployment (`promote --deployment 7`, `--full` to skip the remaining canary steps).
    Promote {
        /// The release to deploy.
        release: Option<i64>,
        /// The environment to deploy it to.
        #[arg(long, requires = "release")]
        to: Option<String>,
        /// A deployment in progress to move on.
        #[arg(long, conflicts_with = "release")]
        deployment: Option<i64>,
        /// With --deployment: go straight to 100%.
        #[arg(long, requires = "deployment")]
        full: bool,
        /// This release fixes forward the change shipped by deployment N of the same environment:
        /// DORA counts N as a change failure, restored when this deployment succeeds.
        #[arg(long, value_name = "N", requires = "release")]
        fixes: Option<i64>,
    },
    /// Approve a deployment waiting for approval (not as its author: four-eyes).
    Approve { deployment: i64 },
    /// Pause a deployment between steps.
    Pause { deployment: i64 },
    /// Resume a paused deployment.
    Resume { deployment: i64 },
    /// Stop a deployment now: all traffic back to the stable version.
    Abort { deployment: i64 },
    /// Roll an environment back to the previous release (or --to RELEASE).
    Rollback {
        environment: String,
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        to: Option<i64>,
    },
    /// What runs in an environment: versions, traffic split, instances, URL.
    Status {
        environment: String,
        #[arg(long)]
        project: Option<String>,
    },
    /// An environment's deployments, newest first.
    History {
        environment: String,
        #[arg(long)]
        project: Option<String>,
    },
    /// A deployment's canary analysis: each judgement, its verdict and evidence.
    Analysis {
        /// The deployment's id (`conveyor history ENV` lists them).
        deployment: i64,
        /// Print the evidence as JSON too (queries, values per version, statistics).
        #[arg(long)]
        evidence: bool,
    },
    /// DORA metrics of an environment: deployment frequency, lead time, change failure rate,
    /// time to restore, each with its level.
    Dora {
        /// Environment measured.
        #[arg(long = "env", default_value = "production")]
        environment: String,
        /// Window: days (`90d`), weeks (`12w`) or a number of days.
        #[arg(long, default_value = "90d")]
        window: String,
        #[arg(long)]
        project: Option<String>,
    },
    /// Manage API tokens (their names are identities, e.g. for approvals).
    #[command(subcommand)]
    Token(TokenCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Manage secrets (write-only).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Feature flags of an environment (flagd format), served to OpenFeature SDKs over OFREP.
    ///
    /// Each environment has one flagd definition; every change is an audited event and reaches
    /// evaluations within 100 ms. See docs/flags.md.
    ///
    /// Start here:
    ///   conveyor flags import flags.json --env staging     load a flagd definition (all or nothing)
    ///   conveyor flags key create web --env staging         an evaluation key for an OpenFeature SDK
    ///   conveyor flags list --env staging                   what is defined, on or off
    ///   conveyor flags disable new-checkout --env staging   the kill switch
    ///   conveyor flags set new-checkout --env staging --rollout on=10,off=90
    ///   conveyor flags enable new-checkout --env staging --at 2030-01-31T09:00:00Z
    #[command(subcommand, verbatim_doc_comment)]
    Flags(FlagsCommand),
    /// Maintenance on a local data directory.
    #[command(subcommand)]
    Admin(AdminCommand),
}

/// Which project environment's flags (`--env` is required; `--project` may be left out when
/// the server has one project).
#[derive(Args, Debug, Clone)]
struct FlagScope {
    /// The environment whose flags these are, e.g. production.
    #[arg(long = "env")]
    environment: String,
    /// The project (default: the server's only project).
    #[arg(long)]
    project: Option<String>,
}

/// `conveyor flags …`.
#[derive(Subcommand, Debug)]
enum FlagsCommand {
    /// List the flags: state, default variant, variants, type.
    List {
        #[command(flatten)]
        scope: FlagScope,
    },
    /// Show one flag with its definition.
    Get {
        /// The flag's key.
        key: String,
        #[command(flatten)]
        scope: FlagScope,
    },
    /// Change one flag: its default variant, a percentage rollout, or its whole definition
    /// (a new flag is added). With --at, schedule the change instead.
    Set {
        /// The flag's key.
        key: String,
        #[command(flatten)]
        scope: FlagScope,
        /// Serve this variant by default.
        #[arg(long)]
        variant: Option<String>,
        /// Percentage rollout by targeting key, e.g. on=25,off=75 (flagd's fractional).
        #[arg(long, value_name = "VARIANT=WEIGHT,...")]
        rollout: Option<String>,
        /// The whole flag as flagd JSON (a file, or - for stdin).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["variant", "rollout"])]
        definition: Option<PathBuf>,
        /// Apply at this time (RFC 3339, e.g. 2030-01-31T09:00:00Z) instead of now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Turn a flag on (now, or --at a time).
    Enable {
        key: String,
        #[command(flatten)]
        scope: FlagScope,
        #[arg(long)]
        at: Option<String>,
    },
    /// Turn a flag off: SDKs get their code default (now, or --at a time).
    Disable {
        key: String,
        #[command(flatten)]
        scope: FlagScope,
        #[arg(long)]
        at: Option<String>,
    },
    /// Remove a flag.
    Remove {
        key: String,
        #[command(flatten)]
        scope: FlagScope,
    },
    /// Replace the environment's definition with a flagd JSON file (- for stdin); refused whole,
    /// with the JSON path of the mistake, if anything in it is wrong.
    Import {
        file: PathBuf,
        #[command(flatten)]
        scope: FlagScope,
    },
    /// Print the definition as flagd JSON (flagd can load it as is).
    Export {
        #[command(flatten)]
        scope: FlagScope,
    },
    /// Who changed what, when (newest first).
    History {
        #[command(flatten)]
        scope: FlagScope,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Flags past their expected lifetime (metadata `type`: release 40 days, experiment 40,
    /// operational 7; kill-switch and permission are permanent; or `expectedLifetimeDays`), or
    /// unchanged for longer than --idle-days.
    Stale {
        #[command(flatten)]
        scope: FlagScope,
        #[arg(long, default_value_t = 30)]
        idle_days: u32,
    },
    /// Scheduled changes of the environment.
    Schedules {
        #[command(flatten)]
        scope: FlagScope,
    },
    /// Cancel a scheduled change.
    Cancel { schedule: i64 },
    /// Evaluation keys (what OpenFeature SDKs authenticate with).
    #[command(subcommand)]
    Key(FlagKeyCommand),
}

#[derive(Subcommand, Debug)]
enum FlagKeyCommand {
    /// Create an evaluation key for an environment (admin only); prints it once.
    Create {
        name: String,
        #[command(flatten)]
        scope: FlagScope,
    },
    /// List an environment's evaluation keys (names only).
    List {
        #[command(flatten)]
        scope: FlagScope,
    },
}

#[derive(Subcommand, Debug)]
enum ProjectCommand {
    /// Register a project by git URL or local path; its watched branches are polled.
    Add {
        name: String,
        source: String,
        /// Seconds between polls for new commits (default 60).
        #[arg(long)]
        poll: Option<u64>,
    },
    /// List projects.
    List,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a token for NAME (admin only); prints it once.
    Create { name: String },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check the event log's hash chain; exit 1 if any event was edited or deleted.
    Verify {
        /// Check a local data directory instead of a server.
        #[arg(long, env = "CONVEYOR_DATA")]
        data: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum SecretCommand {
    /// Set a secret of a project; the value is read from stdin unless --value is given.
    Set {
        project: String,
        name: String,
        #[arg(long)]
        value: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Rebuild every read model from the event log.
    Rebuild {
        #[command(flatten)]
        data: DataArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The one place the process environment is read.
    #[allow(clippy::disallowed_methods)]
    let env: BTreeMap<String, String> = std::env::vars().collect();
    // The demo tells its own story on stdout; the server's log only speaks up for problems.
    let default_log = if matches!(cli.command, Command::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(
                env.get("CONVEYOR_LOG").map_or(default_log, String::as_str),
            )
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // The server serves many clients and runs at once: one worker per core. Everything else,
    // `run` included, is one pipeline or one request: a single thread has fewer wake-ups between
    // threads, which is most of a step's overhead (docs/benchmarks.md).
    let runtime = match cli.command {
        Command::Serve { .. } | Command::Demo { .. } => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build()
    .expect("the tokio runtime starts");
    match runtime.block_on(dispatch(cli, env)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `90d`, `12w` or `30` (days) → days.
fn parse_window(text: &str) -> anyhow::Result<u64> {
    let (number, unit) = match text.trim().strip_suffix('w') {
        Some(n) => (n, 7),
        None => (text.trim().trim_end_matches('d'), 1),
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| n * unit)
        .ok_or_else(|| anyhow::anyhow!("--window '{text}': use a number of days or weeks, e.g. 90d or 12w"))
}

fn overrides(data: &DataArgs) -> Overrides {
    Overrides {
        config: data.config.clone(),
        data: data.data.clone(),
        ..Default::default()
    }
}

async fn dispatch(cli: Cli, env: BTreeMap<String, String>) -> anyhow::Result<ExitCode> {
    let client = || client::Client::new(&cli.server, cli.token.clone());
    match cli.command {
        Command::Demo { example, exit } => {
            demo::demo(&Config::resolve(&Overrides::default(), &env)?, &example, exit).await
        }
        Command::Validate { file } => Ok(local::validate(&file.unwrap_or_else(|| "conveyor.yml".into()))),
        Command::Run {
            dir,
            data,
            secrets,
            jobs,
            json,
        } => {
            let mut o = overrides(&data);
            o.jobs = jobs;
            let config = Config::resolve(&o, &env)?;
            let secrets = local::parse_secrets(&secrets, &env)?;
            local::run(&config, &dir.unwrap_or_else(|| ".".into()), secrets, json).await
        }
        Command::Serve {
            addr,
            data,
            poll_tick,
            jobs,
            flag_rate_limit,
        } => {
            let mut o = overrides(&data);
            o.flag_rate_limit = flag_rate_limit;
            o.addr = addr;
            o.poll_tick_seconds = poll_tick;
            o.jobs = jobs;
            local::serve(&Config::resolve(&o, &env)?).await
        }
        Command::Project(ProjectCommand::Add { name, source, poll }) => {
            client()?.add_project(&name, &source, poll).await
        }
        Command::Project(ProjectCommand::List) => client()?.list_projects().await,
        Command::Trigger {
            project,
            branch,
            commit,
        } => client()?.trigger(&project, branch, commit).await,
        Command::Runs { id: Some(id), .. } => client()?.show_run(id).await,
        Command::Runs { id: None, project } => client()?.list_runs(project.as_deref()).await,
        Command::Logs { run, follow } => client()?.logs(run, follow).await,
        Command::Cancel { run } => client()?.cancel(run).await,
        Command::Releases { project } => client()?.list_releases(project.as_deref()).await,
        Command::Verify {
            release,
            data: Some(data),
        } => local::verify(&data, release).await,
        Command::Verify { release, data: None } => client()?.verify(release).await,
        Command::Promote {
            release: Some(release),
            to: Some(to),
            fixes,
            ..
        } => client()?.promote(release, &to, fixes).await,
        Command::Promote {
            deployment: Some(id),
            full,
            ..
        } => client()?.deployment_action(id, "resume", full).await,
        Command::Promote { .. } => {
            anyhow::bail!(
                "say what to promote: `conveyor promote RELEASE --to ENV` or `conveyor promote --deployment ID`"
            )
        }
        Command::Approve { deployment } => client()?.deployment_action(deployment, "approve", false).await,
        Command::Pause { deployment } => client()?.deployment_action(deployment, "pause", false).await,
        Command::Resume { deployment } => client()?.deployment_action(deployment, "resume", false).await,
        Command::Abort { deployment } => client()?.deployment_action(deployment, "abort", false).await,
        Command::Rollback {
            environment,
            project,
            to,
        } => client()?.rollback(project, &environment, to).await,
        Command::Status { environment, project } => client()?.status(project, &environment).await,
        Command::History { environment, project } => client()?.history(project, &environment).await,
        Command::Analysis { deployment, evidence } => client()?.analysis(deployment, evidence).await,
        Command::Token(TokenCommand::Create { name }) => client()?.create_token(&name).await,
        Command::Dora {
            environment,
            window,
            project,
        } => {
            client()?
                .dora(project.as_deref(), &environment, parse_window(&window)?)
                .await
        }
        Command::Audit(AuditCommand::Verify { data: Some(data) }) => local::audit_verify(&data).await,
        Command::Audit(AuditCommand::Verify { data: None }) => client()?.audit_verify().await,
        Command::Secret(SecretCommand::Set { project, name, value }) => {
            let value = match value {
                Some(v) => v,
                None => {
                    let mut v = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut v)?;
                    v.trim_end_matches(['\n', '\r']).to_string()
                }
            };
            client()?.set_secret(&project, &name, &value).await
        }
        Command::Flags(command) => flags(client()?, command).await,
        Command::Admin(AdminCommand::Rebuild { data }) => {
            local::rebuild(&Config::resolve(&overrides(&data), &env)?).await
        }
    }
}

/// A file's text, or stdin's for `-`.
fn read_input(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

async fn flags(client: client::Client, command: FlagsCommand) -> anyhow::Result<ExitCode> {
    use client::FlagChange;
    use serde_json::json;
    let state = |key: String, scope: FlagScope, at: Option<String>, state: &str| {
        (key, scope, at, FlagChange(json!({ "state": state })))
    };
    let (key, scope, at, change) = match command {
        FlagsCommand::List { scope } => return client.flags_list(scope.project, &scope.environment).await,
        FlagsCommand::Get { key, scope } => {
            return client.flags_get(scope.project, &scope.environment, &key).await;
        }
        FlagsCommand::Remove { key, scope } => {
            return client.flags_remove(scope.project, &scope.environment, &key).await;
        }
        FlagsCommand::Import { file, scope } => {
            let text = read_input(&file)?;
            return client.flags_import(scope.project, &scope.environment, text).await;
        }
        FlagsCommand::Export { scope } => {
            return client.flags_export(scope.project, &scope.environment).await;
        }
        FlagsCommand::History { scope, limit } => {
            return client
                .flags_history(scope.project, &scope.environment, limit)
                .await;
        }
        FlagsCommand::Stale { scope, idle_days } => {
            return client
                .flags_stale(scope.project, &scope.environment, idle_days)
                .await;
        }
        FlagsCommand::Schedules { scope } => {
            return client.flags_schedules(scope.project, &scope.environment).await;
        }
        FlagsCommand::Cancel { schedule } => return client.flags_cancel(schedule).await,
        FlagsCommand::Key(FlagKeyCommand::Create { name, scope }) => {
            return client
                .flags_key_create(scope.project, &scope.environment, &name)
                .await;
        }
        FlagsCommand::Key(FlagKeyCommand::List { scope }) => {
            return client.flags_keys(scope.project, &scope.environment).await;
        }
        FlagsCommand::Enable { key, scope, at } => state(key, scope, at, "ENABLED"),
        FlagsCommand::Disable { key, scope, at } => state(key, scope, at, "DISABLED"),
        FlagsCommand::Set {
            key,
            scope,
            variant,
            rollout,
            definition,
            at,
        } => {
            let mut change = serde_json::Map::new();
            if let Some(variant) = variant {
                change.insert("defaultVariant".into(), json!(variant));
            }
            if let Some(rollout) = rollout {
                change.insert("fractional".into(), json!(client::parse_rollout(&rollout)?));
            }
            if let Some(file) = definition {
                let text = read_input(&file)?;
                let value: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{} is not valid JSON: {e}", file.display()))?;
                change.insert("definition".into(), value);
            }
            if change.is_empty() {
                anyhow::bail!("say what to set: --variant, --rollout or --definition");
            }
            (key, scope, at, FlagChange(serde_json::Value::Object(change)))
        }
    };
    client
        .flags_change(scope.project, &scope.environment, &key, change, at)
        .await
}
