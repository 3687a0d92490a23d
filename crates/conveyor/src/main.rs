//! The `conveyor` binary: configuration, wiring and dispatch of the commands `cli` parses. Logic
//! lives in the crates.

mod cli;
mod client;
mod config;
mod demo;
mod local;
mod progress;

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{
    AdminCommand, AuditCommand, Cli, Command, DataArgs, EnvCommand, FlagKeyCommand, FlagScope, FlagsCommand,
    ProjectCommand, SecretCommand, TokenCommand, UserCommand,
};
use crate::config::{Config, Overrides};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = config::environment();
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
        database: data.database.clone(),
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
            isolation,
        } => {
            let mut o = overrides(&data);
            o.jobs = jobs;
            o.isolation = isolation;
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
            trusted_proxies,
            anonymous_read,
            allowed_hosts,
            isolation,
        } => {
            let mut o = overrides(&data);
            o.isolation = isolation;
            o.flag_rate_limit = flag_rate_limit;
            o.trusted_proxies = trusted_proxies;
            o.anonymous_read = anonymous_read;
            o.allowed_hosts = allowed_hosts;
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
            database,
        } => local::verify(&data, database, release).await,
        Command::Verify {
            release, data: None, ..
        } => client()?.verify(release).await,
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
        Command::Token(TokenCommand::Create {
            name,
            user,
            expires_in_days,
        }) => client()?.create_token(&name, user, expires_in_days).await,
        Command::Token(TokenCommand::List) => client()?.tokens().await,
        Command::Token(TokenCommand::Revoke { name }) => client()?.revoke_token(&name).await,
        Command::Token(TokenCommand::Rotate { name }) => client()?.rotate_token(&name).await,
        Command::User(UserCommand::Add {
            name,
            email,
            automation,
        }) => client()?.add_user(&name, email, automation).await,
        Command::User(UserCommand::List) => client()?.users().await,
        Command::User(UserCommand::Remove { name }) => client()?.remove_user(&name).await,
        Command::User(UserCommand::Grant {
            name,
            role,
            project,
            environment,
        }) => client()?.grant(&name, role, project, environment).await,
        Command::User(UserCommand::Revoke {
            name,
            project,
            environment,
        }) => {
            client()?
                .revoke_role(&name, project.as_deref(), environment.as_deref())
                .await
        }
        Command::Whoami => client()?.whoami().await,
        Command::Env(EnvCommand::Protect {
            environment,
            project,
            approvals,
            reviewers,
            not_author,
            freeze,
            after,
        }) => {
            let protection = conveyor_api::EnvironmentProtection {
                required_approvals: approvals,
                reviewers,
                not_author,
                freeze: freeze
                    .iter()
                    .map(|w| client::parse_freeze(w))
                    .collect::<anyhow::Result<_>>()?,
                after,
            };
            client()?.protect(project, &environment, protection).await
        }
        Command::Env(EnvCommand::Unprotect { environment, project }) => {
            client()?.unprotect(project, &environment).await
        }
        Command::Env(EnvCommand::Protection { environment, project }) => {
            client()?.protection(project, &environment).await
        }
        Command::Dora {
            environment,
            window,
            project,
        } => {
            client()?
                .dora(project.as_deref(), &environment, parse_window(&window)?)
                .await
        }
        Command::Audit(AuditCommand::Verify {
            data: Some(data),
            database,
            checkpoints,
            public_key,
        }) => local::audit_verify(&data, database, checkpoints.as_deref(), public_key.as_deref()).await,
        Command::Audit(AuditCommand::Verify { data: None, .. }) => client()?.audit_verify().await,
        Command::Leases => client()?.list_leases().await,
        Command::Secret(SecretCommand::RotateKey { data }) => {
            local::rotate_secrets_key(&Config::resolve(&overrides(&data), &env)?).await
        }
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
        Command::Migrate { from, to, data } => {
            let config = Config::resolve(&overrides(&data), &env)?;
            let from = from.unwrap_or_else(|| config.database.clone());
            local::migrate(&config.data, &from, &to).await
        }
        Command::Admin(AdminCommand::Rebuild { data }) => {
            local::rebuild(&Config::resolve(&overrides(&data), &env)?).await
        }
        Command::Admin(AdminCommand::RotateSigningKey { data }) => {
            local::rotate_signing_key(&Config::resolve(&overrides(&data), &env)?).await
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
