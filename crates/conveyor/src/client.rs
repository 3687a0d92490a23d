//! Client commands: talk to a Conveyor server's API and print the answers for people.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use conveyor_api::dora::{DoraReport, Level, Measure};
use conveyor_api::{
    AnalysisReport, AuditReport, DeploymentCreated, DeploymentHistory, DeploymentView, EnvironmentView,
    ErrorBody, FlagDetail, FlagHistory, FlagHistoryEntry, FlagKeyList, FlagList, FlagSummary, FlagsChanged,
    KeyCreated, LogLine, LogPage, Project, ProjectList, Release, ReleaseList, RunDetail, RunList, RunStarted,
    ScheduleCreated, ScheduleList, SigningKey, StaleReport, StreamEnd, TokenCreated,
};
use conveyor_attest::PublicKey;
use futures_util::StreamExt as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The server refused a request, with the `ErrorBody` it answered with (if it sent one).
#[derive(Debug)]
pub struct ApiError {
    /// The request's path and query.
    pub path: String,
    pub status: reqwest::StatusCode,
    pub body: Option<ErrorBody>,
}

impl ApiError {
    /// The server's sentence for people.
    pub fn message(&self) -> &str {
        self.body.as_ref().map_or("no message", |b| b.message.as_str())
    }
}

/// `code (status): message`, then the details and what to do about a missing token.
impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = self.body.as_ref().map_or("error", |b| b.code.as_str());
        write!(f, "{code} ({}): {}", self.status, self.message())?;
        let details = self.body.as_ref().and_then(|b| b.details.as_ref());
        if let Some(path) = details.and_then(|d| d.path.as_deref()).filter(|p| !p.is_empty()) {
            write!(f, "\n  at {path}")?;
        }
        for e in details.and_then(|d| d.errors.as_deref()).unwrap_or_default() {
            write!(f, "\n  {e}")?;
        }
        if self.status == reqwest::StatusCode::UNAUTHORIZED {
            f.write_str("\n  (set CONVEYOR_TOKEN or pass --token)")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> anyhow::Result<Self> {
        let base = server.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("--server must be an http:// or https:// URL, not '{server}'");
        }
        Ok(Client {
            base,
            token,
            http: reqwest::Client::new(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let url = response.url();
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        };
        let status = response.status();
        let body: Option<ErrorBody> = response.json().await.ok();
        Err(ApiError { path, status, body }.into())
    }

    /// A response body, read as the API type it is documented to be.
    async fn read<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let response = self.send(request).await?;
        let url = response.url().path().to_string();
        response
            .json()
            .await
            .with_context(|| format!("the server sent a malformed answer to {url}"))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.read(self.http.get(self.url(path))).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: impl Serialize) -> anyhow::Result<T> {
        self.read(self.http.post(self.url(path)).json(&body)).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<T> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.read(request).await
    }

    pub async fn add_project(&self, name: &str, source: &str, poll: Option<u64>) -> anyhow::Result<ExitCode> {
        let p: Project = self
            .post(
                "/api/v1/projects",
                conveyor_api::AddProject {
                    name: name.into(),
                    source: source.into(),
                    poll_seconds: poll,
                },
            )
            .await?;
        println!(
            "project {} added: {} (polled every {}s)",
            p.name, source, p.poll_seconds
        );
        Ok(ExitCode::SUCCESS)
    }

    pub async fn list_projects(&self) -> anyhow::Result<ExitCode> {
        let body: ProjectList = self.get("/api/v1/projects").await?;
        for p in &body.projects {
            println!("{:<24} {}", p.name, p.source_uri);
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn trigger(
        &self,
        project: &str,
        branch: Option<String>,
        commit: Option<String>,
    ) -> anyhow::Result<ExitCode> {
        let body: RunStarted = self
            .post(
                &format!("/api/v1/projects/{project}/runs"),
                conveyor_api::TriggerRun { branch, commit },
            )
            .await?;
        println!(
            "run {} started for {project} at {} ({})",
            body.run_id, body.commit, body.branch
        );
        Ok(ExitCode::SUCCESS)
    }

    pub async fn list_runs(&self, project: Option<&str>) -> anyhow::Result<ExitCode> {
        let path = match project {
            Some(p) => format!("/api/v1/runs?project={p}"),
            None => "/api/v1/runs".into(),
        };
        let body: RunList = self.get(&path).await?;
        for r in &body.runs {
            println!(
                "{:>5}  {:<20} {:<10} {:<12} {:<9} {}",
                r.id,
                r.project,
                r.branch,
                r.commit.get(..12).unwrap_or(""),
                r.status,
                time(&r.created_at)
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn show_run(&self, id: i64) -> anyhow::Result<ExitCode> {
        let RunDetail { run: r, release_id } = self.get(&format!("/api/v1/runs/{id}")).await?;
        println!(
            "run {id} of {} — {} at {} ({}): {}",
            r.project, r.event, r.commit, r.branch, r.status
        );
        for j in &r.jobs {
            let reason = j.reason.as_deref().map(|s| format!(" — {s}")).unwrap_or_default();
            println!("  {:<16} {:<9} attempt {}{reason}", j.job, j.status, j.attempt);
            for s in &j.steps {
                println!("      {:<9} {}", s.status, s.name);
            }
        }
        if let Some(release) = release_id {
            println!("  release {release}");
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn logs(&self, run: i64, follow: bool) -> anyhow::Result<ExitCode> {
        if !follow {
            let body: LogPage = self.get(&format!("/api/v1/runs/{run}/logs")).await?;
            for line in &body.lines {
                print_line(line);
            }
            return Ok(ExitCode::SUCCESS);
        }
        let response = self
            .send(
                self.http
                    .get(self.url(&format!("/api/v1/runs/{run}/logs/stream"))),
            )
            .await?;
        let mut stream = response.bytes_stream();
        let mut buf = String::new();
        while let Some(chunk) = stream.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk?));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let (mut kind, mut data) = ("message", String::new());
                for l in frame.lines() {
                    if let Some(k) = l.strip_prefix("event:") {
                        kind = if k.trim() == "end" { "end" } else { "line" };
                    } else if let Some(d) = l.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                match kind {
                    "end" => {
                        let end = serde_json::from_str::<StreamEnd>(&data).ok();
                        println!(
                            "run {run} {}",
                            end.as_ref().map_or("ended", |e| e.status.as_str())
                        );
                        return Ok(ExitCode::SUCCESS);
                    }
                    "line" => {
                        let line = serde_json::from_str::<LogLine>(&data)
                            .context("the server sent a malformed log line")?;
                        print_line(&line);
                    }
                    _ => {}
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn cancel(&self, run: i64) -> anyhow::Result<ExitCode> {
        self.post::<conveyor_api::RunCancelled>(&format!("/api/v1/runs/{run}/cancel"), json!({}))
            .await?;
        println!("run {run}: cancelling");
        Ok(ExitCode::SUCCESS)
    }

    pub async fn list_releases(&self, project: Option<&str>) -> anyhow::Result<ExitCode> {
        let path = match project {
            Some(p) => format!("/api/v1/releases?project={p}"),
            None => "/api/v1/releases".into(),
        };
        let body: ReleaseList = self.get(&path).await?;
        for r in &body.releases {
            println!(
                "{:>5}  {:<20} {:<10} {:<12} run {:<5} {} artifact(s)",
                r.id,
                r.project,
                r.branch,
                r.commit.get(..12).unwrap_or(""),
                r.run_id,
                r.artifacts.len()
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Downloads the release, its artifacts and the server's public key, and checks them here.
    pub async fn verify(&self, id: i64) -> anyhow::Result<ExitCode> {
        let key: SigningKey = self.get("/api/v1/keys/signing").await?;
        let key = PublicKey::from_hex(&key.public_key)?;
        let release: Release = self.get(&format!("/api/v1/releases/{id}")).await?;
        let mut actual = BTreeMap::new();
        for a in &release.artifacts {
            let digest = self.digest_of(id, &a.path).await.map_err(|e| format!("{e:#}"));
            actual.insert(a.path.clone(), digest);
        }
        Ok(crate::local::report_verification(&release, &key, &actual))
    }

    async fn digest_of(&self, release: i64, path: &str) -> anyhow::Result<String> {
        use sha2::Digest as _;
        let response = self
            .send(
                self.http
                    .get(self.url(&format!("/api/v1/releases/{release}/artifacts/{path}"))),
            )
            .await?;
        let mut hasher = sha2::Sha256::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk?);
        }
        Ok(hex::encode(hasher.finalize()))
    }

    pub async fn audit_verify(&self) -> anyhow::Result<ExitCode> {
        let body: AuditReport = self.get("/api/v1/audit/verify").await?;
        Ok(crate::local::report_audit(body.events as usize, &body.problems))
    }

    pub async fn set_secret(&self, project: &str, name: &str, value: &str) -> anyhow::Result<ExitCode> {
        self.send(
            self.http
                .put(self.url(&format!("/api/v1/projects/{project}/secrets/{name}")))
                .json(&json!({ "value": value })),
        )
        .await?;
        println!("secret {name} set for {project}");
        Ok(ExitCode::SUCCESS)
    }
    pub async fn promote(
        &self,
        release: i64,
        environment: &str,
        fixes: Option<i64>,
    ) -> anyhow::Result<ExitCode> {
        let body: DeploymentCreated = self
            .post(
                &format!("/api/v1/releases/{release}/promote"),
                conveyor_api::Promote {
                    environment: environment.into(),
                    fixes,
                },
            )
            .await?;
        println!(
            "deployment {} of release {release} to {environment} requested",
            body.deployment_id
        );
        Ok(ExitCode::SUCCESS)
    }

    /// `approve`, `pause`, `resume` (with `full`) or `abort` a deployment.
    pub async fn deployment_action(&self, id: i64, action: &str, full: bool) -> anyhow::Result<ExitCode> {
        let body = if action == "resume" {
            json!({ "full": full })
        } else {
            json!({})
        };
        self.post::<Value>(&format!("/api/v1/deployments/{id}/{action}"), body)
            .await?;
        println!("deployment {id}: {action}{}", if full { " (full)" } else { "" });
        Ok(ExitCode::SUCCESS)
    }

    /// The project to use: the given one, or the only one the server has.
    async fn project_or_only(&self, project: Option<String>) -> anyhow::Result<String> {
        if let Some(p) = project {
            return Ok(p);
        }
        let body: ProjectList = self.get("/api/v1/projects").await?;
        let names: Vec<&str> = body.projects.iter().map(|p| p.name.as_str()).collect();
        match names.as_slice() {
            [only] => Ok(only.to_string()),
            [] => bail!("the server has no project"),
            _ => bail!(
                "say which project with --project (the server has: {})",
                names.join(", ")
            ),
        }
    }

    pub async fn rollback(
        &self,
        project: Option<String>,
        environment: &str,
        to: Option<i64>,
    ) -> anyhow::Result<ExitCode> {
        let project = self.project_or_only(project).await?;
        let body: DeploymentCreated = self
            .post(
                &format!("/api/v1/projects/{project}/environments/{environment}/rollback"),
                conveyor_api::Rollback { to },
            )
            .await?;
        println!(
            "rollback of {project}/{environment}: deployment {}",
            body.deployment_id
        );
        Ok(ExitCode::SUCCESS)
    }

    pub async fn status(&self, project: Option<String>, environment: &str) -> anyhow::Result<ExitCode> {
        let project = self.project_or_only(project).await?;
        let s: EnvironmentView = self
            .get(&format!("/api/v1/projects/{project}/environments/{environment}"))
            .await?;
        println!(
            "{project}/{environment}  {}",
            s.status.url.as_deref().unwrap_or("(no router yet)")
        );
        for v in &s.status.versions {
            let instances = v.instances.len();
            let healthy = v.instances.iter().filter(|i| i.healthy).count();
            println!(
                "  {:<8} {:<7} release {:<5} {:>3}% of traffic  {healthy}/{instances} instances healthy",
                v.version,
                v.role.as_str(),
                v.release_id,
                v.traffic
            );
        }
        if let Some(d) = &s.deployment {
            print_deployment(d);
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn history(&self, project: Option<String>, environment: &str) -> anyhow::Result<ExitCode> {
        let project = self.project_or_only(project).await?;
        let body: DeploymentHistory = self
            .get(&format!(
                "/api/v1/projects/{project}/environments/{environment}/deployments"
            ))
            .await?;
        // Deployments and flag changes, newest first.
        enum Entry<'a> {
            Deployment(&'a DeploymentView),
            Flags(&'a conveyor_api::FlagChangeEntry),
        }
        let mut timeline: Vec<(chrono::DateTime<chrono::Utc>, Entry<'_>)> = body
            .deployments
            .iter()
            .map(|d| (d.created_at, Entry::Deployment(d)))
            .chain(body.flag_changes.iter().map(|f| (f.at, Entry::Flags(f))))
            .collect();
        timeline.sort_by_key(|entry| std::cmp::Reverse(entry.0));
        for (at, entry) in timeline {
            match entry {
                Entry::Flags(f) => println!(
                    "  flags      {} by {}: {}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    f.by,
                    f.changes.join("; ")
                ),
                Entry::Deployment(d) => print_deployment(d),
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn analysis(&self, deployment: i64, evidence: bool) -> anyhow::Result<ExitCode> {
        let body: AnalysisReport = self
            .get(&format!("/api/v1/deployments/{deployment}/analysis"))
            .await?;
        println!("deployment {deployment}: {}", body.status);
        if let Some(reason) = &body.reason {
            println!("  {reason}");
        }
        if body.judgements.is_empty() {
            println!("  no judgements (no canary analysis ran)");
        }
        for j in &body.judgements {
            println!(
                "  {:<12} {:>3}%  {}",
                j.verdict.as_str().to_uppercase(),
                j.traffic,
                j.summary
            );
            if evidence {
                println!("{}", serde_json::to_string_pretty(&j.evidence)?);
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn dora(
        &self,
        project: Option<&str>,
        environment: &str,
        days: u64,
    ) -> anyhow::Result<ExitCode> {
        let mut path = format!("/api/v1/dora?environment={environment}&window_days={days}");
        if let Some(p) = project {
            path.push_str(&format!("&project={p}"));
        }
        let DoraReport { report: r, .. } = self.get(&path).await?;
        println!(
            "DORA — {environment}, last {days} days ({} deployments)",
            r.deployments
        );
        let f = &r.deployment_frequency;
        println!(
            "  deployment frequency   {:.2}/day ({})  {}",
            f.per_day,
            f.bucket.as_str(),
            f.level.as_str()
        );
        let measure = |m: &Option<Measure>| match m {
            Some(m) => format!(
                "median {} ({} samples)  {}",
                human(m.median_seconds),
                m.samples,
                m.level.as_str()
            ),
            None => "no data".into(),
        };
        println!("  lead time for changes  {}", measure(&r.lead_time));
        match &r.change_failure_rate {
            Some(c) => println!(
                "  change failure rate    {:.0}% ({} of {})  {}",
                c.ratio * 100.0,
                c.failed,
                c.total,
                Level::as_str(c.level)
            ),
            None => println!("  change failure rate    no data"),
        }
        println!("  time to restore        {}", measure(&r.time_to_restore));
        Ok(ExitCode::SUCCESS)
    }

    pub async fn create_token(&self, name: &str) -> anyhow::Result<ExitCode> {
        let body: TokenCreated = self
            .post("/api/v1/tokens", conveyor_api::NewToken { name: name.into() })
            .await?;
        println!("token for {name} (shown once — store it now): {}", body.token);
        Ok(ExitCode::SUCCESS)
    }
}

/// `3d 4h`, `2h 5m`, `42s`.
fn human(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn print_deployment(d: &DeploymentView) {
    let rollback = d
        .rollback_of
        .map(|r| format!(" (rollback of {r})"))
        .unwrap_or_default();
    println!(
        "  deployment {:<4} release {:<4} {:<9} by {:<10} {}{}",
        d.id,
        d.release_id,
        d.status,
        d.requested_by,
        d.phase.as_deref().or(d.reason.as_deref()).unwrap_or(""),
        rollback
    );
    for gate in &d.gates {
        println!("      {gate}");
    }
}

fn print_line(line: &LogLine) {
    println!("{} {} │ {}", line.t, line.job, line.line);
}

/// A time as the API's text (RFC 3339, UTC, milliseconds).
fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// === flags ===

/// A change to one flag, as the API takes it (`conveyor_flags::FlagPatch` in JSON).
pub struct FlagChange(pub Value);

/// `on=25,off=75` → `[["on", 25], ["off", 75]]`.
pub fn parse_rollout(text: &str) -> anyhow::Result<Vec<(String, u32)>> {
    text.split(',')
        .map(|part| {
            let (variant, weight) = part.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("--rollout '{part}': use VARIANT=WEIGHT, e.g. on=25,off=75")
            })?;
            let weight = weight
                .trim()
                .parse::<u32>()
                .map_err(|_| anyhow::anyhow!("--rollout '{part}': the weight must be a whole number"))?;
            Ok((variant.trim().to_string(), weight))
        })
        .collect()
}

fn flag_line(f: &FlagSummary) -> String {
    let kind = f
        .metadata
        .get("type")
        .and_then(Value::as_str)
        .map(|t| format!("  [{t}]"))
        .unwrap_or_default();
    format!(
        "{:<28} {:<9} default {:<10} {:<8} {}{kind}",
        f.key,
        flag_state(f.state),
        f.default_variant.as_deref().unwrap_or("(code)"),
        f.variant_type.as_deref().unwrap_or(""),
        f.variants.join(" | "),
    )
}

/// `ENABLED` / `DISABLED`, as the API spells it.
fn flag_state(state: conveyor_api::FlagState) -> &'static str {
    match state {
        conveyor_api::FlagState::Enabled => "ENABLED",
        conveyor_api::FlagState::Disabled => "DISABLED",
    }
}

impl Client {
    async fn flags_path(
        &self,
        project: Option<String>,
        environment: &str,
    ) -> anyhow::Result<(String, String)> {
        let project = self.project_or_only(project).await?;
        let path = format!("/api/v1/projects/{project}/environments/{environment}/flags");
        Ok((project, path))
    }

    pub async fn flags_list(&self, project: Option<String>, environment: &str) -> anyhow::Result<ExitCode> {
        let (project, path) = self.flags_path(project, environment).await?;
        let body: FlagList = self.get(&path).await?;
        println!(
            "{project}/{environment}: {} flag(s), version {}",
            body.flags.len(),
            body.version
        );
        for f in &body.flags {
            println!("  {}", flag_line(f));
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn flags_get(
        &self,
        project: Option<String>,
        environment: &str,
        key: &str,
    ) -> anyhow::Result<ExitCode> {
        let (_, path) = self.flags_path(project, environment).await?;
        let f: FlagDetail = self.get(&format!("{path}/{key}")).await?;
        println!("{}", flag_line(&f.flag));
        if let Some(l) = &f.flag.lifecycle {
            let lifetime = l
                .expected_lifetime_days
                .map_or("permanent".to_string(), |d| format!("expected to live {d} days"));
            println!(
                "  lifecycle: {}, {lifetime}",
                l.kind.as_deref().unwrap_or("untyped")
            );
        }
        println!("{}", serde_json::to_string_pretty(&f.definition)?);
        Ok(ExitCode::SUCCESS)
    }

    fn print_changed(&self, what: &str, body: &FlagsChanged) {
        if body.changes.is_empty() {
            println!("{what}: nothing changed (version {})", body.version);
            return;
        }
        println!("{what}: version {}", body.version);
        for c in &body.changes {
            println!("  {c}");
        }
    }

    pub async fn flags_change(
        &self,
        project: Option<String>,
        environment: &str,
        key: &str,
        change: FlagChange,
        at: Option<String>,
    ) -> anyhow::Result<ExitCode> {
        let (project, path) = self.flags_path(project, environment).await?;
        match at {
            Some(at) => {
                let body: ScheduleCreated = self
                    .post(
                        &format!("{path}/{key}/schedule"),
                        json!({ "at": at, "change": change.0 }),
                    )
                    .await?;
                println!(
                    "scheduled change {} to flag '{key}' of {project}/{environment} at {}",
                    body.schedule_id,
                    body.at.to_rfc3339()
                );
            }
            None => {
                let body: FlagsChanged = self
                    .call(reqwest::Method::PATCH, &format!("{path}/{key}"), Some(change.0))
                    .await?;
                self.print_changed(&format!("{project}/{environment}"), &body);
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn flags_remove(
        &self,
        project: Option<String>,
        environment: &str,
        key: &str,
    ) -> anyhow::Result<ExitCode> {
        let (project, path) = self.flags_path(project, environment).await?;
        let body: FlagsChanged = self
            .call(reqwest::Method::DELETE, &format!("{path}/{key}"), None)
            .await?;
        self.print_changed(&format!("{project}/{environment}"), &body);
        Ok(ExitCode::SUCCESS)
    }

    pub async fn flags_import(
        &self,
        project: Option<String>,
        environment: &str,
        text: String,
    ) -> anyhow::Result<ExitCode> {
        let (project, path) = self.flags_path(project, environment).await?;
        let request = self
            .http
            .put(self.url(&path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(text);
        let body: FlagsChanged = self.read(request).await?;
        self.print_changed(&format!("{project}/{environment}"), &body);
        Ok(ExitCode::SUCCESS)
    }

    pub async fn flags_export(&self, project: Option<String>, environment: &str) -> anyhow::Result<ExitCode> {
        let (_, path) = self.flags_path(project, environment).await?;
        let text = self
            .send(self.http.get(self.url(&format!("{path}/export"))))
            .await?
            .text()
            .await?;
        println!("{text}");
        Ok(ExitCode::SUCCESS)
    }

    pub async fn flags_history(
        &self,
        project: Option<String>,
        environment: &str,
        limit: u32,
    ) -> anyhow::Result<ExitCode> {
        let (_, path) = self.flags_path(project, environment).await?;
        let body: FlagHistory = self.get(&format!("{path}/history?limit={limit}")).await?;
        for e in &body.history {
            match e {
                FlagHistoryEntry::FlagsChanged { at, by, changes, .. } => {
                    println!("{}  {by} changed flags:", time(at));
                    for c in changes {
                        println!("    {c}");
                    }
                }
                FlagHistoryEntry::FlagKeyCreated { at, by, name, .. } => {
                    println!("{}  {by} created evaluation key '{name}'", time(at))
                }
                FlagHistoryEntry::FlagChangeScheduled {
                    at,
                    by,
                    schedule_id,
                    flag,
                    due_at,
                    patch,
                    ..
                } => println!(
                    "{}  {by} scheduled change {schedule_id} to '{flag}' for {due_at}: {patch}",
                    time(at)
                ),
                FlagHistoryEntry::FlagScheduleFinished {
                    at,
                    schedule_id,
                    status,
                    outcome,
                    ..
                } => println!("{}  scheduled change {schedule_id} {status}: {outcome}", time(at)),
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn flags_stale(
        &self,
        project: Option<String>,
        environment: &str,
        idle_days: u32,
    ) -> anyhow::Result<ExitCode> {
        let (project, path) = self.flags_path(project, environment).await?;
        let body: StaleReport = self.get(&format!("{path}/stale?idle_days={idle_days}")).await?;
        if body.stale.is_empty() {
            println!("{project}/{environment}: no stale flags");
        }
        for f in &body.stale {
            println!("{:<28} {:<9} {}", f.key, flag_state(f.state), f.reason);
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn flags_schedules(
        &self,
        project: Option<String>,
        environment: &str,
    ) -> anyhow::Result<ExitCode> {
        let (_, path) = self.flags_path(project, environment).await?;
        let body: ScheduleList = self.get(&format!("{path}/schedules")).await?;
        for s in &body.schedules {
            println!(
                "{:>4}  {:<20} {:<24} {:<9} {} {}",
                s.id,
                s.due_at,
                s.flag,
                s.status,
                s.patch,
                s.outcome.as_deref().unwrap_or("")
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn flags_cancel(&self, schedule: i64) -> anyhow::Result<ExitCode> {
        self.call::<conveyor_api::ScheduleCancelled>(
            reqwest::Method::DELETE,
            &format!("/api/v1/flag-schedules/{schedule}"),
            None,
        )
        .await?;
        println!("scheduled change {schedule} cancelled");
        Ok(ExitCode::SUCCESS)
    }

    pub async fn flags_key_create(
        &self,
        project: Option<String>,
        environment: &str,
        name: &str,
    ) -> anyhow::Result<ExitCode> {
        let (project, path) = self.flags_path(project, environment).await?;
        let body: KeyCreated = self
            .post(
                &format!("{path}/keys"),
                conveyor_api::NewKey { name: name.into() },
            )
            .await?;
        println!(
            "evaluation key '{name}' for {project}/{environment} (shown once — store it now):\n{}",
            body.key
        );
        println!(
            "OpenFeature: OFREPProvider {{ baseUrl: '{}', headers: [['Authorization', 'Bearer <key>']] }}",
            self.base
        );
        Ok(ExitCode::SUCCESS)
    }

    pub async fn flags_keys(&self, project: Option<String>, environment: &str) -> anyhow::Result<ExitCode> {
        let (_, path) = self.flags_path(project, environment).await?;
        let body: FlagKeyList = self.get(&format!("{path}/keys")).await?;
        for k in &body.keys {
            println!(
                "{:<24} created by {} at {}",
                k.name,
                k.created_by,
                time(&k.created_at)
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
