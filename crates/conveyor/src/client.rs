//! Client commands: talk to a Conveyor server's API and print the answers for people.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use conveyor_attest::PublicKey;
use conveyor_store::Release;
use futures_util::StreamExt as _;
use serde_json::{Value, json};

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
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let message = body["message"].as_str().unwrap_or("no message");
        let code = body["code"].as_str().unwrap_or("error");
        let mut text = format!("{code} ({status}): {message}");
        if let Some(path) = body["details"]["path"].as_str().filter(|p| !p.is_empty()) {
            text.push_str(&format!("\n  at {path}"));
        }
        if let Some(errors) = body["details"]["errors"].as_array() {
            for e in errors {
                text.push_str(&format!("\n  {}", e.as_str().unwrap_or_default()));
            }
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            text.push_str("\n  (set CONVEYOR_TOKEN or pass --token)");
        }
        bail!(text)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.send(self.http.get(self.url(path))).await?.json().await?)
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        Ok(self
            .send(self.http.post(self.url(path)).json(&body))
            .await?
            .json()
            .await?)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        Ok(self.send(request).await?.json().await?)
    }

    pub async fn add_project(&self, name: &str, source: &str, poll: Option<u64>) -> anyhow::Result<ExitCode> {
        let p = self
            .post(
                "/api/v1/projects",
                json!({ "name": name, "source": source, "poll_seconds": poll }),
            )
            .await?;
        println!(
            "project {} added: {} (polled every {}s)",
            p["name"].as_str().unwrap_or(name),
            source,
            p["poll_seconds"]
        );
        Ok(ExitCode::SUCCESS)
    }

    pub async fn list_projects(&self) -> anyhow::Result<ExitCode> {
        let body = self.get("/api/v1/projects").await?;
        for p in body["projects"].as_array().into_iter().flatten() {
            println!(
                "{:<24} {}",
                p["name"].as_str().unwrap_or(""),
                p["source_uri"].as_str().unwrap_or("")
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn trigger(
        &self,
        project: &str,
        branch: Option<String>,
        commit: Option<String>,
    ) -> anyhow::Result<ExitCode> {
        let body = self
            .post(
                &format!("/api/v1/projects/{project}/runs"),
                json!({ "branch": branch, "commit": commit }),
            )
            .await?;
        println!(
            "run {} started for {project} at {} ({})",
            body["run_id"],
            body["commit"].as_str().unwrap_or(""),
            body["branch"].as_str().unwrap_or("")
        );
        Ok(ExitCode::SUCCESS)
    }

    pub async fn list_runs(&self, project: Option<&str>) -> anyhow::Result<ExitCode> {
        let path = match project {
            Some(p) => format!("/api/v1/runs?project={p}"),
            None => "/api/v1/runs".into(),
        };
        let body = self.get(&path).await?;
        for r in body["runs"].as_array().into_iter().flatten() {
            println!(
                "{:>5}  {:<20} {:<10} {:<12} {:<9} {}",
                r["id"],
                r["project"].as_str().unwrap_or(""),
                r["branch"].as_str().unwrap_or(""),
                r["commit"].as_str().unwrap_or("").get(..12).unwrap_or(""),
                r["status"].as_str().unwrap_or(""),
                r["created_at"].as_str().unwrap_or("")
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn show_run(&self, id: i64) -> anyhow::Result<ExitCode> {
        let r = self.get(&format!("/api/v1/runs/{id}")).await?;
        println!(
            "run {id} of {} — {} at {} ({}): {}",
            r["project"].as_str().unwrap_or(""),
            r["event"].as_str().unwrap_or(""),
            r["commit"].as_str().unwrap_or(""),
            r["branch"].as_str().unwrap_or(""),
            r["status"].as_str().unwrap_or("")
        );
        for j in r["jobs"].as_array().into_iter().flatten() {
            let reason = j["reason"]
                .as_str()
                .map(|s| format!(" — {s}"))
                .unwrap_or_default();
            println!(
                "  {:<16} {:<9} attempt {}{reason}",
                j["job"].as_str().unwrap_or(""),
                j["status"].as_str().unwrap_or(""),
                j["attempt"]
            );
            for s in j["steps"].as_array().into_iter().flatten() {
                println!(
                    "      {:<9} {}",
                    s["status"].as_str().unwrap_or(""),
                    s["name"].as_str().unwrap_or("")
                );
            }
        }
        if let Some(release) = r["release_id"].as_i64() {
            println!("  release {release}");
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn logs(&self, run: i64, follow: bool) -> anyhow::Result<ExitCode> {
        if !follow {
            let body = self.get(&format!("/api/v1/runs/{run}/logs")).await?;
            for line in body["lines"].as_array().into_iter().flatten() {
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
                let value: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                match kind {
                    "end" => {
                        println!("run {run} {}", value["status"].as_str().unwrap_or("ended"));
                        return Ok(ExitCode::SUCCESS);
                    }
                    "line" => print_line(&value),
                    _ => {}
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn cancel(&self, run: i64) -> anyhow::Result<ExitCode> {
        self.post(&format!("/api/v1/runs/{run}/cancel"), json!({}))
            .await?;
        println!("run {run}: cancelling");
        Ok(ExitCode::SUCCESS)
    }

    pub async fn list_releases(&self, project: Option<&str>) -> anyhow::Result<ExitCode> {
        let path = match project {
            Some(p) => format!("/api/v1/releases?project={p}"),
            None => "/api/v1/releases".into(),
        };
        let body = self.get(&path).await?;
        for r in body["releases"].as_array().into_iter().flatten() {
            println!(
                "{:>5}  {:<20} {:<10} {:<12} run {:<5} {} artifact(s)",
                r["id"],
                r["project"].as_str().unwrap_or(""),
                r["branch"].as_str().unwrap_or(""),
                r["commit"].as_str().unwrap_or("").get(..12).unwrap_or(""),
                r["run_id"],
                r["artifacts"].as_array().map_or(0, Vec::len)
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Downloads the release, its artifacts and the server's public key, and checks them here.
    pub async fn verify(&self, id: i64) -> anyhow::Result<ExitCode> {
        let key = self.get("/api/v1/keys/signing").await?;
        let key = PublicKey::from_hex(key["public_key"].as_str().unwrap_or_default())?;
        let release: Release = serde_json::from_value(self.get(&format!("/api/v1/releases/{id}")).await?)
            .context("the server sent a malformed release")?;
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
        let body = self.get("/api/v1/audit/verify").await?;
        let problems: Vec<String> = body["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(String::from))
            .collect();
        Ok(crate::local::report_audit(
            body["events"].as_u64().unwrap_or(0) as usize,
            &problems,
        ))
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
        let body = self
            .post(
                &format!("/api/v1/releases/{release}/promote"),
                json!({ "environment": environment, "fixes": fixes }),
            )
            .await?;
        println!(
            "deployment {} of release {release} to {environment} requested",
            body["deployment_id"]
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
        self.post(&format!("/api/v1/deployments/{id}/{action}"), body)
            .await?;
        println!("deployment {id}: {action}{}", if full { " (full)" } else { "" });
        Ok(ExitCode::SUCCESS)
    }

    /// The project to use: the given one, or the only one the server has.
    async fn project_or_only(&self, project: Option<String>) -> anyhow::Result<String> {
        if let Some(p) = project {
            return Ok(p);
        }
        let body = self.get("/api/v1/projects").await?;
        let names: Vec<&str> = body["projects"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
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
        let body = self
            .post(
                &format!("/api/v1/projects/{project}/environments/{environment}/rollback"),
                json!({ "to": to }),
            )
            .await?;
        println!(
            "rollback of {project}/{environment}: deployment {}",
            body["deployment_id"]
        );
        Ok(ExitCode::SUCCESS)
    }

    pub async fn status(&self, project: Option<String>, environment: &str) -> anyhow::Result<ExitCode> {
        let project = self.project_or_only(project).await?;
        let s = self
            .get(&format!("/api/v1/projects/{project}/environments/{environment}"))
            .await?;
        println!(
            "{project}/{environment}  {}",
            s["url"].as_str().unwrap_or("(no router yet)")
        );
        for v in s["versions"].as_array().into_iter().flatten() {
            let instances = v["instances"].as_array().map_or(0, Vec::len);
            let healthy = v["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|i| i["healthy"] == true)
                .count();
            println!(
                "  {:<8} {:<7} release {:<5} {:>3}% of traffic  {healthy}/{instances} instances healthy",
                v["version"].as_str().unwrap_or(""),
                v["role"].as_str().unwrap_or(""),
                v["release_id"],
                v["traffic"]
            );
        }
        if let Some(d) = s.get("deployment").filter(|d| !d.is_null()) {
            print_deployment(d);
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn history(&self, project: Option<String>, environment: &str) -> anyhow::Result<ExitCode> {
        let project = self.project_or_only(project).await?;
        let body = self
            .get(&format!(
                "/api/v1/projects/{project}/environments/{environment}/deployments"
            ))
            .await?;
        // Deployments and flag changes, newest first (RFC 3339 UTC sorts as text).
        let deployments = body["deployments"].as_array().into_iter().flatten();
        let flag_changes = body["flag_changes"].as_array().into_iter().flatten();
        let mut timeline: Vec<(&str, &Value)> = deployments
            .map(|d| (d["created_at"].as_str().unwrap_or(""), d))
            .chain(flag_changes.map(|f| (f["at"].as_str().unwrap_or(""), f)))
            .collect();
        timeline.sort_by(|a, b| b.0.cmp(a.0));
        for (at, entry) in timeline {
            match entry.get("changes") {
                Some(changes) => {
                    let changes: Vec<&str> = changes
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    println!(
                        "  flags      {at} by {}: {}",
                        entry["by"].as_str().unwrap_or(""),
                        changes.join("; ")
                    );
                }
                None => print_deployment(entry),
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn analysis(&self, deployment: i64, evidence: bool) -> anyhow::Result<ExitCode> {
        let body = self
            .get(&format!("/api/v1/deployments/{deployment}/analysis"))
            .await?;
        let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
        println!("deployment {deployment}: {}", text(&body["status"]));
        if let Some(reason) = body["reason"].as_str() {
            println!("  {reason}");
        }
        let judgements = body["judgements"].as_array().cloned().unwrap_or_default();
        if judgements.is_empty() {
            println!("  no judgements (no canary analysis ran)");
        }
        for j in &judgements {
            println!(
                "  {:<12} {:>3}%  {}",
                text(&j["verdict"]).to_uppercase(),
                j["traffic"],
                text(&j["summary"])
            );
            if evidence {
                println!("{}", serde_json::to_string_pretty(&j["evidence"])?);
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
        let r = self.get(&path).await?;
        println!(
            "DORA — {environment}, last {days} days ({} deployments)",
            r["deployments"]
        );
        let level = |v: &Value| v["level"].as_str().unwrap_or("-").to_string();
        let f = &r["deployment_frequency"];
        println!(
            "  deployment frequency   {:.2}/day ({})  {}",
            f["per_day"].as_f64().unwrap_or(0.0),
            f["bucket"].as_str().unwrap_or(""),
            level(f)
        );
        let measure = |v: &Value| match v["median_seconds"].as_u64() {
            Some(s) => format!("median {} ({} samples)  {}", human(s), v["samples"], level(v)),
            None => "no data".into(),
        };
        println!("  lead time for changes  {}", measure(&r["lead_time"]));
        let c = &r["change_failure_rate"];
        match c["ratio"].as_f64() {
            Some(ratio) => println!(
                "  change failure rate    {:.0}% ({} of {})  {}",
                ratio * 100.0,
                c["failed"],
                c["total"],
                level(c)
            ),
            None => println!("  change failure rate    no data"),
        }
        println!("  time to restore        {}", measure(&r["time_to_restore"]));
        Ok(ExitCode::SUCCESS)
    }

    pub async fn create_token(&self, name: &str) -> anyhow::Result<ExitCode> {
        let body = self.post("/api/v1/tokens", json!({ "name": name })).await?;
        println!(
            "token for {name} (shown once — store it now): {}",
            body["token"].as_str().unwrap_or("")
        );
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

fn print_deployment(d: &Value) {
    let rollback = d["rollback_of"]
        .as_i64()
        .map(|r| format!(" (rollback of {r})"))
        .unwrap_or_default();
    println!(
        "  deployment {:<4} release {:<4} {:<9} by {:<10} {}{}",
        d["id"],
        d["release_id"],
        d["status"].as_str().unwrap_or(""),
        d["requested_by"].as_str().unwrap_or(""),
        d["phase"].as_str().or(d["reason"].as_str()).unwrap_or(""),
        rollback
    );
    for gate in d["gates"].as_array().into_iter().flatten() {
        println!("      {}", gate.as_str().unwrap_or(""));
    }
}

fn print_line(line: &Value) {
    println!(
        "{} {} │ {}",
        line["t"].as_str().unwrap_or(""),
        line["job"].as_str().unwrap_or(""),
        line["line"].as_str().unwrap_or("")
    );
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

fn flag_line(f: &Value) -> String {
    let variants: Vec<&str> = f["variants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let kind = f["metadata"]["type"]
        .as_str()
        .map(|t| format!("  [{t}]"))
        .unwrap_or_default();
    format!(
        "{:<28} {:<9} default {:<10} {:<8} {}{kind}",
        f["key"].as_str().unwrap_or(""),
        f["state"].as_str().unwrap_or(""),
        f["defaultVariant"].as_str().unwrap_or("(code)"),
        f["type"].as_str().unwrap_or(""),
        variants.join(" | "),
    )
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
        let body = self.get(&path).await?;
        let flags = body["flags"].as_array().cloned().unwrap_or_default();
        println!(
            "{project}/{environment}: {} flag(s), version {}",
            flags.len(),
            body["version"]
        );
        for f in &flags {
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
        let f = self.get(&format!("{path}/{key}")).await?;
        println!("{}", flag_line(&f));
        if let Some(l) = f.get("lifecycle").filter(|l| !l.is_null()) {
            let lifetime = l["expected_lifetime_days"]
                .as_u64()
                .map_or("permanent".to_string(), |d| format!("expected to live {d} days"));
            println!(
                "  lifecycle: {}, {lifetime}",
                l["kind"].as_str().unwrap_or("untyped")
            );
        }
        println!("{}", serde_json::to_string_pretty(&f["definition"])?);
        Ok(ExitCode::SUCCESS)
    }

    fn print_changed(&self, what: &str, body: &Value) {
        let changes = body["changes"].as_array().cloned().unwrap_or_default();
        if changes.is_empty() {
            println!("{what}: nothing changed (version {})", body["version"]);
            return;
        }
        println!("{what}: version {}", body["version"]);
        for c in changes {
            println!("  {}", c.as_str().unwrap_or(""));
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
                let body = self
                    .post(
                        &format!("{path}/{key}/schedule"),
                        json!({ "at": at, "change": change.0 }),
                    )
                    .await?;
                println!(
                    "scheduled change {} to flag '{key}' of {project}/{environment} at {}",
                    body["schedule_id"],
                    body["at"].as_str().unwrap_or("")
                );
            }
            None => {
                let body = self
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
        let body = self
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
        let body: Value = self.send(request).await?.json().await?;
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
        let body = self.get(&format!("{path}/history?limit={limit}")).await?;
        for e in body["history"].as_array().into_iter().flatten() {
            let at = e["at"].as_str().unwrap_or("");
            match e["type"].as_str().unwrap_or("") {
                "flags_changed" => {
                    println!("{at}  {} changed flags:", e["by"].as_str().unwrap_or(""));
                    for c in e["changes"].as_array().into_iter().flatten() {
                        println!("    {}", c.as_str().unwrap_or(""));
                    }
                }
                "flag_key_created" => println!(
                    "{at}  {} created evaluation key '{}'",
                    e["by"].as_str().unwrap_or(""),
                    e["name"].as_str().unwrap_or("")
                ),
                "flag_change_scheduled" => println!(
                    "{at}  {} scheduled change {} to '{}' for {}: {}",
                    e["by"].as_str().unwrap_or(""),
                    e["schedule_id"],
                    e["flag"].as_str().unwrap_or(""),
                    e["due_at"].as_str().unwrap_or(""),
                    e["patch"]
                ),
                _ => println!(
                    "{at}  scheduled change {} {}: {}",
                    e["schedule_id"],
                    e["status"].as_str().unwrap_or(""),
                    e["outcome"].as_str().unwrap_or("")
                ),
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
        let body = self.get(&format!("{path}/stale?idle_days={idle_days}")).await?;
        let stale = body["stale"].as_array().cloned().unwrap_or_default();
        if stale.is_empty() {
            println!("{project}/{environment}: no stale flags");
        }
        for f in &stale {
            println!(
                "{:<28} {:<9} {}",
                f["key"].as_str().unwrap_or(""),
                f["state"].as_str().unwrap_or(""),
                f["reason"].as_str().unwrap_or("")
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn flags_schedules(
        &self,
        project: Option<String>,
        environment: &str,
    ) -> anyhow::Result<ExitCode> {
        let (_, path) = self.flags_path(project, environment).await?;
        let body = self.get(&format!("{path}/schedules")).await?;
        for s in body["schedules"].as_array().into_iter().flatten() {
            println!(
                "{:>4}  {:<20} {:<24} {:<9} {} {}",
                s["id"],
                s["due_at"].as_str().unwrap_or(""),
                s["flag"].as_str().unwrap_or(""),
                s["status"].as_str().unwrap_or(""),
                s["patch"],
                s["outcome"].as_str().unwrap_or("")
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn flags_cancel(&self, schedule: i64) -> anyhow::Result<ExitCode> {
        self.call(
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
        let body = self
            .post(&format!("{path}/keys"), json!({ "name": name }))
            .await?;
        println!(
            "evaluation key '{name}' for {project}/{environment} (shown once — store it now):\n{}",
            body["key"].as_str().unwrap_or("")
        );
        println!(
            "OpenFeature: OFREPProvider {{ baseUrl: '{}', headers: [['Authorization', 'Bearer <key>']] }}",
            self.base
        );
        Ok(ExitCode::SUCCESS)
    }

    pub async fn flags_keys(&self, project: Option<String>, environment: &str) -> anyhow::Result<ExitCode> {
        let (_, path) = self.flags_path(project, environment).await?;
        let body = self.get(&format!("{path}/keys")).await?;
        for k in body["keys"].as_array().into_iter().flatten() {
            println!(
                "{:<24} created by {} at {}",
                k["name"].as_str().unwrap_or(""),
                k["created_by"].as_str().unwrap_or(""),
                k["created_at"].as_str().unwrap_or("")
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
