//! Projects, runs and their logs, releases (verified here), the audit trail, secrets.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context as _;
use conveyor_api::{
    AuditReport, LeaseView, LogLine, LogPage, Project, ProjectList, Release, ReleaseList, RunDetail, RunList,
    RunStarted, SigningKey, StreamEnd,
};
use conveyor_attest::PublicKey;
use futures_util::StreamExt as _;
use serde_json::json;

use super::{Client, time};

impl Client {
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
        let body: RunList = self.get(&of_project("/api/v1/runs", project)).await?;
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
        let body: ReleaseList = self.get(&of_project("/api/v1/releases", project)).await?;
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
        let keys = std::iter::once(&key.public_key)
            .chain(&key.retired)
            .map(|k| PublicKey::from_hex(k))
            .collect::<Result<Vec<_>, _>>()?;
        let release: Release = self.get(&format!("/api/v1/releases/{id}")).await?;
        let mut actual = BTreeMap::new();
        for a in &release.artifacts {
            let digest = self.digest_of(id, &a.path).await.map_err(|e| format!("{e:#}"));
            actual.insert(a.path.clone(), digest);
        }
        Ok(crate::local::report_verification(&release, &keys, &actual))
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
        Ok(crate::local::report_audit(
            body.events,
            (body.checkpoints, body.exported),
            &body.problems,
        ))
    }

    pub async fn list_leases(&self) -> anyhow::Result<ExitCode> {
        let leases: Vec<LeaseView> = self.get("/api/v1/leases").await?;
        if leases.is_empty() {
            println!("no leases: no server has driven a run or a singleton yet");
        }
        for lease in &leases {
            let state = if lease.live { "until" } else { "expired" };
            println!(
                "{:<28} {:<40} {state} {}",
                lease.name,
                lease.holder,
                time(&lease.expires_at)
            );
        }
        Ok(ExitCode::SUCCESS)
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
}

fn print_line(line: &LogLine) {
    println!("{} {} │ {}", line.t, line.job, line.line);
}

/// A list's path, narrowed to one project when one is given.
fn of_project(path: &str, project: Option<&str>) -> String {
    match project {
        Some(p) => format!("{path}?project={p}"),
        None => path.to_string(),
    }
}
