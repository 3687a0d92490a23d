//! `conveyor demo`: the whole path on the embedded default — a server, the example project as a
//! git repository, two changes built into signed releases, each delivered blue-green to staging
//! with a smoke check, then through an approval and canary steps to production while a small
//! load generator shows the traffic moving; canary analysis promotes the good change and rolls a
//! third, bad one back by itself. Everything goes through the real HTTP API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::config::Config;

const REVIEWER: &str = "reviewer";

struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        token: &str,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{path}: {status}: {}",
                value["message"].as_str().unwrap_or("no message")
            );
        }
        Ok(value)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None, &self.token).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body), &self.token)
            .await
    }
}

fn say(text: impl AsRef<str>) {
    println!("{}", text.as_ref());
}

pub async fn demo(config: &Config, example: &Path, exit: bool) -> anyhow::Result<ExitCode> {
    let root = std::env::temp_dir().join(format!("conveyor-demo-{}", std::process::id()));
    let data = root.join("data");
    let repo = root.join("hello");
    say(format!(
        "▶ Conveyor demo (everything lives in {})",
        root.display()
    ));
    make_repo(example, &repo).await?;

    let mut engine_config = config.clone();
    engine_config.data = data.clone();
    let engine = conveyor_engine::Engine::new(
        conveyor_engine::DataDir::open(&data).await?,
        engine_config.engine_config(),
        Arc::new(conveyor_exec::LocalExecutor),
    );
    let token = conveyor_server::ensure_admin_token(&engine, None)
        .await?
        .context("a fresh data directory gets a new admin token")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let state = conveyor_server::start(
        engine,
        conveyor_server::ServerConfig {
            poll_tick: Duration::from_secs(3600),
        },
    )
    .await;
    let delivery = state.delivery.clone();
    tokio::spawn(conveyor_server::serve(state, listener, std::future::pending()));
    say(format!("  server   {base}   (admin token {token})"));
    let api = Api {
        base: base.clone(),
        token,
        http: reqwest::Client::new(),
    };

    let outcome = walk(&api, &repo).await;
    if let Err(error) = &outcome {
        say(format!("✗ the demo stopped: {error:#}"));
    }
    // Someone at a terminal gets the server to explore; a script gets its exit status.
    let keep = !exit && std::io::IsTerminal::is_terminal(&std::io::stdin());
    if keep && outcome.is_ok() {
        say("\nThe server keeps running; press Ctrl-C to stop it (and every instance).");
        say(format!(
            "  export CONVEYOR_SERVER={base} CONVEYOR_TOKEN={}",
            api.token
        ));
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

async fn walk(api: &Api, repo: &Path) -> anyhow::Result<()> {
    api.post(
        "/api/v1/projects",
        json!({ "name": "hello", "source": repo.display().to_string(), "poll_seconds": 3600 }),
    )
    .await?;
    say(format!(
        "  project  hello ← {} (a git repository made from the example)",
        repo.display()
    ));
    let reviewer = api.post("/api/v1/tokens", json!({ "name": REVIEWER })).await?["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    say("\n▶ First change: build, release, deliver");
    let first = build(api).await?;
    let staged = follow(api, await_deployment(api, "staging", first).await?).await?;
    if staged != "succeeded" {
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
    if done != "succeeded" {
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
    if done != "failed" {
        bail!("the bad change was not caught: its production deployment ended {done}");
    }
    let status = api.get("/api/v1/projects/hello/environments/production").await?;
    let serving: Vec<String> = status["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["traffic"].as_u64().unwrap_or(0) > 0)
        .map(|v| format!("{} {}%", v["version"].as_str().unwrap_or("?"), v["traffic"]))
        .collect();
    say(format!("  production serves {} again", serving.join(", ")));

    let dora = api
        .get("/api/v1/dora?environment=production&window_days=1")
        .await?;
    say(format!(
        "\n▶ DORA (production, today): {} deployments, {:.0}/day ({}), change failure rate {}",
        dora["deployments"],
        dora["deployment_frequency"]["per_day"].as_f64().unwrap_or(0.0),
        dora["deployment_frequency"]["level"].as_str().unwrap_or("-"),
        dora["change_failure_rate"]["ratio"]
            .as_f64()
            .map_or("n/a".into(), |r| format!("{:.0}%", r * 100.0)),
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
async fn build(api: &Api) -> anyhow::Result<i64> {
    let started = api
        .post("/api/v1/projects/hello/runs", json!({ "branch": "main" }))
        .await?;
    let run_id = started["run_id"].as_i64().context("a run id")?;
    say(format!(
        "  run {run_id} of commit {}",
        started["commit"]
            .as_str()
            .unwrap_or_default()
            .get(..12)
            .unwrap_or_default()
    ));
    let mut shown = BTreeMap::new();
    loop {
        let run = api.get(&format!("/api/v1/runs/{run_id}")).await?;
        for job in run["jobs"].as_array().into_iter().flatten() {
            let (name, status) = (
                job["job"].as_str().unwrap_or(""),
                job["status"].as_str().unwrap_or(""),
            );
            if matches!(status, "success" | "failed" | "skipped" | "cancelled")
                && shown.insert(name.to_string(), ()).is_none()
            {
                let mark = if status == "success" { "✓" } else { "✗" };
                say(format!("    {mark} {name} {status}"));
            }
        }
        match run["status"].as_str() {
            Some("running") => tokio::time::sleep(Duration::from_millis(200)).await,
            Some("success") => {
                let release = run["release_id"]
                    .as_i64()
                    .context("a successful run has a release")?;
                let r = api.get(&format!("/api/v1/releases/{release}")).await?;
                say(format!(
                    "  release {release}: {} artifacts, SLSA provenance signed ({})",
                    r["artifacts"].as_array().map_or(0, Vec::len),
                    r["envelope"]["payloadType"].as_str().unwrap_or("")
                ));
                return Ok(release);
            }
            other => bail!("run {run_id} ended {}", other.unwrap_or("?")),
        }
    }
}

/// The deployment continuous deployment started for `release` in `environment`.
async fn await_deployment(api: &Api, environment: &str, release: i64) -> anyhow::Result<i64> {
    for _ in 0..300 {
        let list = api
            .get(&format!(
                "/api/v1/projects/hello/environments/{environment}/deployments"
            ))
            .await?;
        if let Some(d) = list["deployments"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["release_id"] == release)
        {
            say(format!(
                "  {environment}: deployment {} of release {release} started by continuous deployment",
                d["id"]
            ));
            return d["id"].as_i64().context("a deployment id");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no deployment of release {release} to {environment} started")
}

/// Promotes to production; the author (admin) may not approve, the reviewer does.
async fn promote(api: &Api, release: i64, reviewer: &str) -> anyhow::Result<i64> {
    let d = api
        .post(
            &format!("/api/v1/releases/{release}/promote"),
            json!({ "environment": "production" }),
        )
        .await?;
    let id = d["deployment_id"].as_i64().context("a deployment id")?;
    say(format!(
        "  production: deployment {id} of release {release} requested by admin"
    ));
    for _ in 0..100 {
        let view = api.get(&format!("/api/v1/deployments/{id}")).await?;
        if let Some(gate) = view["gates"].as_array().and_then(|g| g.first()) {
            say(format!("    gate: {}", gate.as_str().unwrap_or("")));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let own = api
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/deployments/{id}/approve"),
            None,
            &api.token,
        )
        .await;
    if let Err(refused) = own {
        say(format!("    admin tries to approve: refused ({refused})"));
    }
    api.call(
        reqwest::Method::POST,
        &format!("/api/v1/deployments/{id}/approve"),
        None,
        reviewer,
    )
    .await?;
    say(format!("    approved by {REVIEWER}"));
    Ok(id)
}

/// Builds the head of main, lets continuous deployment take it through staging, then promotes it
/// to production while the load generator runs; returns the production deployment and its end.
async fn canary_under_load(api: &Api, reviewer: &str, production_url: &str) -> anyhow::Result<(i64, String)> {
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
async fn show_analysis(api: &Api, id: i64) -> anyhow::Result<()> {
    let analysis = api.get(&format!("/api/v1/deployments/{id}/analysis")).await?;
    for j in analysis["judgements"].as_array().into_iter().flatten() {
        say(format!(
            "    analysis at {}%: {} {}",
            j["traffic"],
            j["verdict"].as_str().unwrap_or("?").to_uppercase(),
            j["summary"].as_str().unwrap_or("")
        ));
    }
    say(format!("    (evidence: conveyor analysis {id} --evidence)"));
    Ok(())
}

/// Shows a deployment's phases as it enters them; returns how it ended.
async fn follow(api: &Api, id: i64) -> anyhow::Result<String> {
    let mut shown = 0usize;
    loop {
        let d = api.get(&format!("/api/v1/deployments/{id}")).await?;
        let phases = d["phases"].as_array().cloned().unwrap_or_default();
        let reached = d["phase_index"].as_u64().map_or(0, |i| i as usize + 1);
        while shown < reached.min(phases.len()) {
            say(format!("    → {}", phases[shown].as_str().unwrap_or("")));
            shown += 1;
        }
        if !d["finished_at"].is_null() {
            let status = d["status"].as_str().unwrap_or("").to_string();
            let reason = d["reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default();
            say(format!("    deployment {id} {status}{reason}"));
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn env_url(api: &Api, environment: &str) -> anyhow::Result<String> {
    let s = api
        .get(&format!("/api/v1/projects/hello/environments/{environment}"))
        .await?;
    s["url"]
        .as_str()
        .map(String::from)
        .context("the environment has a router")
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
