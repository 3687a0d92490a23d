//! `conveyor demo`: the whole path on the embedded default — a server, the example project as a
//! git repository, two changes built into signed releases, each delivered blue-green to staging
//! with a smoke check, then through an approval and canary steps to production while a small
//! load generator shows the traffic moving; canary analysis promotes the good change and rolls a
//! third, bad one back by itself. Everything goes through the real HTTP API.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use conveyor_api::dora::DoraReport;
use conveyor_api::{
    AddProject, AnalysisReport, Approved, DeploymentCreated, DeploymentHistory, DeploymentStatus,
    DeploymentView, EnvironmentView, GrantRole, JobStatus, NewToken, NewUser, Project, Promote, Release,
    Role, RunDetail, RunStarted, RunStatus, TokenCreated, TriggerRun, User,
};
use serde_json::json;

use crate::client::{ApiError, Client};
use crate::config::Config;

const REVIEWER: &str = "reviewer";

fn say(text: impl AsRef<str>) {
    println!("{}", text.as_ref());
}

/// An error as the demo tells it: a refusal of the API as `PATH: STATUS: message`.
fn explain(error: &anyhow::Error) -> String {
    match error.downcast_ref::<ApiError>() {
        Some(refusal) => format!("{}: {}: {}", refusal.path, refusal.status, refusal.message()),
        None => format!("{error:#}"),
    }
}

pub async fn demo(config: &Config, example: &Path, exit: bool) -> anyhow::Result<ExitCode> {
    let root = config
        .temp_dir
        .join(format!("conveyor-demo-{}", std::process::id()));
    let data = root.join("data");
    let repo = root.join("hello");
    say(format!(
        "▶ Conveyor demo (everything lives in {})",
        root.display()
    ));
    make_repo(example, &repo).await?;

    let mut engine_config = config.clone();
    engine_config.data = data.clone();
    let engine = crate::local::engine(
        &engine_config,
        conveyor_engine::DataDir::open(&data, &conveyor_store::Database::in_data_dir(&data)).await?,
    )
    .await?;
    let token = conveyor_server::ensure_admin_token(&engine, None)
        .await?
        .context("a fresh data directory gets a new admin token")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let state = conveyor_server::start(
        engine,
        conveyor_server::ServerConfig {
            poll_tick: Duration::from_secs(3600),
            trusted_proxies: Vec::new(),
            access: conveyor_server::auth::AccessConfig::default(),
        },
    )
    .await;
    let delivery = state.delivery.clone();
    tokio::spawn(conveyor_server::serve(state, listener, std::future::pending()));
    say(format!("  server   {base}   (admin token {token})"));
    // The token rides in the fragment, which browsers never send: the page signs itself in.
    let ui = format!("{base}/sign-in#token={token}");
    say(format!("  web UI   {ui}   (opens signed in as admin)"));
    let api = Client::new(&base, Some(token.clone()))?;

    let outcome = walk(&api, &base, &repo).await;
    if let Err(error) = &outcome {
        say(format!("✗ the demo stopped: {}", explain(error)));
    }
    // Someone at a terminal gets the server to explore; a script gets its exit status.
    let keep = !exit && std::io::IsTerminal::is_terminal(&std::io::stdin());
    if keep && outcome.is_ok() {
        say("\nThe server keeps running; press Ctrl-C to stop it (and every instance).");
        say(format!("  open {ui} to watch it in the browser"));
        say(format!("  export CONVEYOR_SERVER={base} CONVEYOR_TOKEN={token}"));
        say("  conveyor status production   conveyor rollback production   conveyor dora");
        let _ = tokio::signal::ctrl_c().await;
    }
    delivery.stop_everything().await;
    let _ = std::fs::remove_dir_all(&root);
    Ok(if outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `api` is the admin's client; a reviewer, who approves what the admin promotes, is made a
/// user (deployer of the production environment) with a token and a client of their own on
/// `base`.
async fn walk(api: &Client, base: &str, repo: &Path) -> anyhow::Result<()> {
    api.post::<Project>(
        "/api/v1/projects",
        AddProject {
            name: "hello".into(),
            source: repo.display().to_string(),
            poll_seconds: Some(3600),
        },
    )
    .await?;
    say(format!(
        "  project  hello ← {} (a git repository made from the example)",
        repo.display()
    ));
    api.post::<User>(
        "/api/v1/users",
        NewUser {
            name: REVIEWER.into(),
            email: None,
            kind: None,
        },
    )
    .await?;
    api.put::<User>(
        &format!("/api/v1/users/{REVIEWER}/roles"),
        GrantRole {
            role: Role::Deployer,
            project: Some("hello".into()),
            environment: Some("production".into()),
        },
    )
    .await?;
    let reviewer: TokenCreated = api
        .post(
            "/api/v1/tokens",
            NewToken {
                name: REVIEWER.into(),
                user: Some(REVIEWER.into()),
                expires_in_days: Some(1),
                expires_at: None,
            },
        )
        .await?;
    let reviewer = Client::new(base, Some(reviewer.token))?;

    say("\n▶ First change: build, release, deliver");
    let first = build(api).await?;
    let staged = follow(api, await_deployment(api, "staging", first).await?).await?;
    if staged != DeploymentStatus::Succeeded {
        bail!("the staging deployment ended {staged}");
    }
    let staging_url = env_url(api, "staging").await?;
    say(format!("  staging    → {staging_url}"));
    let production = promote(api, first, &reviewer).await?;
    follow(api, production).await?;
    let production_url = env_url(api, "production").await?;
    say(format!("  production → {production_url}"));

    say("\n▶ Second change: a new commit goes the same way, then a canary in production");
    git(repo, &["commit", "-q", "--allow-empty", "-m", "second change"]).await?;
    let (_, done) = canary_under_load(api, &reviewer, &production_url).await?;
    if done != DeploymentStatus::Succeeded {
        bail!("the production deployment ended {done}");
    }

    say("\n▶ Third change: a bad one (10% of requests fail); the canary analysis catches it");
    let config = repo.join("conveyor.yml");
    let text = std::fs::read_to_string(&config)?;
    std::fs::write(&config, text.replace("ERROR_RATE: \"0\"", "ERROR_RATE: \"0.1\""))?;
    git(
        repo,
        &["commit", "-q", "-am", "raise the error rate (a bad change)"],
    )
    .await?;
    let (_, done) = canary_under_load(api, &reviewer, &production_url).await?;
    if done != DeploymentStatus::Failed {
        bail!("the bad change was not caught: its production deployment ended {done}");
    }
    let production: EnvironmentView = api.get("/api/v1/projects/hello/environments/production").await?;
    let serving: Vec<String> = production
        .status
        .versions
        .iter()
        .filter(|v| v.traffic > 0)
        .map(|v| format!("{} {}%", v.version, v.traffic))
        .collect();
    say(format!("  production serves {} again", serving.join(", ")));

    let DoraReport { report: dora, .. } = api
        .get("/api/v1/dora?environment=production&window_days=1")
        .await?;
    say(format!(
        "\n▶ DORA (production, today): {} deployments, {:.0}/day ({}), change failure rate {}",
        dora.deployments,
        dora.deployment_frequency.per_day,
        dora.deployment_frequency.level.as_str(),
        dora.change_failure_rate
            .map_or("n/a".into(), |c| format!("{:.0}%", c.ratio * 100.0)),
    ));
    say(format!(
        "\n✓ Delivered. staging: {staging_url}   production: {production_url}"
    ));
    Ok(())
}

/// Copies the example into a fresh git repository with one commit.
async fn make_repo(example: &Path, repo: &Path) -> anyhow::Result<()> {
    for entry in walk_files(example)? {
        let relative = entry.strip_prefix(example).expect("walked from the example");
        let target = repo.join(relative);
        std::fs::create_dir_all(target.parent().expect("files have a parent"))?;
        std::fs::copy(&entry, &target).with_context(|| format!("copy {}", entry.display()))?;
    }
    git(repo, &["init", "-q", "-b", "main"]).await?;
    git(repo, &["add", "-A"]).await?;
    git(repo, &["commit", "-q", "-m", "the example project"]).await
}

fn walk_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with('.') || name == "build" || name == "dist" || name == "__pycache__" {
            continue;
        }
        if path.is_dir() {
            out.extend(walk_files(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

async fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Conveyor Demo")
        .env("GIT_AUTHOR_EMAIL", "demo@conveyor.invalid")
        .env("GIT_COMMITTER_NAME", "Conveyor Demo")
        .env("GIT_COMMITTER_EMAIL", "demo@conveyor.invalid")
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Triggers a run of the head of main, shows its jobs as they end, returns its release.
async fn build(api: &Client) -> anyhow::Result<i64> {
    let started: RunStarted = api
        .post(
            "/api/v1/projects/hello/runs",
            TriggerRun {
                branch: Some("main".into()),
                commit: None,
            },
        )
        .await?;
    let run_id = started.run_id;
    say(format!(
        "  run {run_id} of commit {}",
        started.commit.get(..12).unwrap_or_default()
    ));
    let mut shown = BTreeSet::new();
    loop {
        let RunDetail { run, release_id } = api.get(&format!("/api/v1/runs/{run_id}")).await?;
        for job in &run.jobs {
            let ended = matches!(
                job.status,
                JobStatus::Success | JobStatus::Failed | JobStatus::Skipped | JobStatus::Cancelled
            );
            if ended && shown.insert(job.job.clone()) {
                let mark = if job.status == JobStatus::Success {
                    "✓"
                } else {
                    "✗"
                };
                say(format!("    {mark} {} {}", job.job, job.status));
            }
        }
        match run.status {
            RunStatus::Running => tokio::time::sleep(Duration::from_millis(200)).await,
            RunStatus::Success => {
                let release = release_id.context("a successful run has a release")?;
                let r: Release = api.get(&format!("/api/v1/releases/{release}")).await?;
                let envelope: conveyor_attest::Envelope = serde_json::from_value(r.envelope)
                    .with_context(|| format!("release {release} is not signed in a DSSE envelope"))?;
                say(format!(
                    "  release {release}: {} artifacts, SLSA provenance signed ({})",
                    r.artifacts.len(),
                    envelope.payload_type
                ));
                return Ok(release);
            }
            other => bail!("run {run_id} ended {other}"),
        }
    }
}

/// The deployment continuous deployment started for `release` in `environment`.
async fn await_deployment(api: &Client, environment: &str, release: i64) -> anyhow::Result<i64> {
    for _ in 0..300 {
        let history: DeploymentHistory = api
            .get(&format!(
                "/api/v1/projects/hello/environments/{environment}/deployments"
            ))
            .await?;
        if let Some(d) = history.deployments.iter().find(|d| d.release_id == release) {
            say(format!(
                "  {environment}: deployment {} of release {release} started by continuous deployment",
                d.id
            ));
            return Ok(d.id);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no deployment of release {release} to {environment} started")
}

/// Promotes to production; the author (admin) may not approve, the reviewer does.
async fn promote(api: &Client, release: i64, reviewer: &Client) -> anyhow::Result<i64> {
    let DeploymentCreated { deployment_id: id } = api
        .post(
            &format!("/api/v1/releases/{release}/promote"),
            Promote {
                environment: "production".into(),
                fixes: None,
            },
        )
        .await?;
    say(format!(
        "  production: deployment {id} of release {release} requested by admin"
    ));
    for _ in 0..100 {
        let view: DeploymentView = api.get(&format!("/api/v1/deployments/{id}")).await?;
        if let Some(gate) = view.gates.first() {
            say(format!("    gate: {gate}"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let approve = format!("/api/v1/deployments/{id}/approve");
    if let Err(refused) = api.post::<Approved>(&approve, json!({})).await {
        say(format!(
            "    admin tries to approve: refused ({})",
            explain(&refused)
        ));
    }
    reviewer.post::<Approved>(&approve, json!({})).await?;
    say(format!("    approved by {REVIEWER}"));
    Ok(id)
}

/// Builds the head of main, lets continuous deployment take it through staging, then promotes it
/// to production while the load generator runs; returns the production deployment and its end.
async fn canary_under_load(
    api: &Client,
    reviewer: &Client,
    production_url: &str,
) -> anyhow::Result<(i64, DeploymentStatus)> {
    let release = build(api).await?;
    follow(api, await_deployment(api, "staging", release).await?).await?;
    let load = Load::start(production_url.to_string());
    let id = promote(api, release, reviewer).await?;
    let done = follow(api, id).await?;
    let seen = load.stop().await;
    say(format!(
        "  traffic seen by the load generator during the canary: {}",
        split(&seen)
    ));
    show_analysis(api, id).await?;
    Ok((id, done))
}

/// Prints a deployment's canary-analysis judgements.
async fn show_analysis(api: &Client, id: i64) -> anyhow::Result<()> {
    let analysis: AnalysisReport = api.get(&format!("/api/v1/deployments/{id}/analysis")).await?;
    for j in &analysis.judgements {
        say(format!(
            "    analysis at {}%: {} {}",
            j.traffic,
            j.verdict.as_str().to_uppercase(),
            j.summary
        ));
    }
    say(format!("    (evidence: conveyor analysis {id} --evidence)"));
    Ok(())
}

/// Shows a deployment's phases as it enters them; returns how it ended.
async fn follow(api: &Client, id: i64) -> anyhow::Result<DeploymentStatus> {
    let mut shown = 0usize;
    loop {
        let d: DeploymentView = api.get(&format!("/api/v1/deployments/{id}")).await?;
        let reached = d.phase_index.map_or(0, |i| i as usize + 1).min(d.phases.len());
        for phase in d.phases.get(shown..reached).unwrap_or_default() {
            say(format!("    → {phase}"));
        }
        shown = shown.max(reached);
        if d.finished_at.is_some() {
            let reason = d.reason.map(|r| format!(": {r}")).unwrap_or_default();
            say(format!("    deployment {id} {}{reason}", d.status));
            return Ok(d.status);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn env_url(api: &Client, environment: &str) -> anyhow::Result<String> {
    let view: EnvironmentView = api
        .get(&format!("/api/v1/projects/hello/environments/{environment}"))
        .await?;
    view.status.url.context("the environment has a router")
}

/// Requests and 5xx answers per version.
type Seen = BTreeMap<String, (usize, usize)>;

fn split(seen: &Seen) -> String {
    let total: usize = seen.values().map(|(n, _)| n).sum();
    let parts: Vec<String> = seen
        .iter()
        .map(|(v, (n, errors))| {
            let share = *n as f64 * 100.0 / total.max(1) as f64;
            match errors {
                0 => format!("{v} {n} ({share:.0}%)"),
                e => format!("{v} {n} ({share:.0}%, {e} × 5xx)"),
            }
        })
        .collect();
    format!("{} requests: {}", total, parts.join(", "))
}

/// A small load generator: requests the production URL in a loop, printing the split between
/// versions every second, until stopped.
struct Load {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Seen>,
}

impl Load {
    fn start(url: String) -> Load {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut total = Seen::new();
            let mut second = Seen::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stopped.changed() => return total,
                    _ = tick.tick() => {
                        if !second.is_empty() {
                            say(format!("      traffic: {}", split(&second)));
                        }
                        second.clear();
                    }
                    answer = http.get(&url).send() => {
                        let (version, failed) = match answer {
                            Ok(r) => (
                                r.headers().get("x-conveyor-version").and_then(|v| v.to_str().ok()).unwrap_or("?").to_string(),
                                r.status().is_server_error(),
                            ),
                            Err(_) => ("error".into(), true),
                        };
                        for seen in [&mut second, &mut total] {
                            let (requests, errors) = seen.entry(version.clone()).or_insert((0, 0));
                            *requests += 1;
                            *errors += usize::from(failed);
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        });
        Load { stop, task }
    }

    async fn stop(self) -> Seen {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}
