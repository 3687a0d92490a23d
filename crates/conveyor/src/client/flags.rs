//! Feature flags of a project environment: list, change (now or scheduled), import, export,
//! history, stale flags, evaluation keys.

use std::process::ExitCode;

use conveyor_api::{
    FlagDetail, FlagHistory, FlagHistoryEntry, FlagKeyList, FlagList, FlagSummary, FlagsChanged, KeyCreated,
    ScheduleCreated, ScheduleList, StaleReport,
};
use serde_json::{Value, json};

use super::{Client, time};

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
