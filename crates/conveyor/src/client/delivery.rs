//! Deployments (promote, approve, pause, resume, abort, rollback), environments, canary
//! analysis, DORA.

use std::process::ExitCode;

use conveyor_api::dora::{DoraReport, Level, Measure};
use conveyor_api::{AnalysisReport, DeploymentCreated, DeploymentHistory, DeploymentView, EnvironmentView};
use serde_json::{Value, json};

use super::{Client, time};

impl Client {
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
            if d.finished_at.is_none() {
                let analysis: AnalysisReport = self
                    .get(&format!("/api/v1/deployments/{}/analysis", d.id))
                    .await?;
                print_standings(&analysis.live);
            }
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
                Entry::Flags(f) => {
                    println!("  flags      {} by {}: {}", time(&at), f.by, f.changes.join("; "))
                }
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
        if body.judgements.is_empty() && body.live.is_empty() {
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
        print_standings(&body.live);
        if evidence {
            for standing in &body.live {
                println!("{}", serde_json::to_string_pretty(&standing.evidence)?);
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
                conveyor_api::human_duration(std::time::Duration::from_secs(m.median_seconds)),
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
}

/// The running analysis, a line per metric: where it stands and what a decision needs.
fn print_standings(live: &[conveyor_api::MetricStanding]) {
    if live.is_empty() {
        return;
    }
    println!("  analysis now:");
    for standing in live {
        println!("    {:<15} {}", standing.standing, standing.summary);
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
