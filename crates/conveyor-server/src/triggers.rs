//! What starts runs on a server: new commits on watched branches (polling), manual triggers and
//! cron schedules. Every project has a bare git mirror under the data directory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use conveyor_engine::{Engine, NewRun, source};
use conveyor_store::Project;

use crate::ApiError;

pub fn mirror_path(engine: &Engine, project: &str) -> PathBuf {
    engine.data().mirror(project)
}

/// What a trigger resolved to.
pub struct Triggered {
    pub run_id: i64,
    pub commit: String,
    /// Empty for a run of a commit alone.
    pub branch: String,
}

/// Where git fetches the project from: its URL with the credentials stored apart.
pub async fn remote(engine: &Engine, project: &Project) -> Result<source::Remote, ApiError> {
    // Parsed rather than taken as is: a project registered before credentials were kept apart
    // still has them in its URL.
    let mut remote = source::Remote::parse(&project.source_uri);
    if let Some(credentials) = engine.store().source_credentials(&project.name).await? {
        remote.credentials = Some(credentials);
    }
    Ok(remote)
}

/// Creates and starts a run of `project`, the mirror fetched first: the head of `branch` (the
/// default branch when neither is given), `commit` on `branch` (refused unless the branch's head
/// contains it), or `commit` alone (refused unless a branch or tag contains it: what is left in
/// the mirror from a force-push or an old pull-request ref is not runnable).
pub async fn trigger(
    engine: &Arc<Engine>,
    project: &Project,
    branch: Option<&str>,
    commit: Option<&str>,
    event: &str,
) -> Result<Triggered, ApiError> {
    let mirror = mirror_path(engine, &project.name);
    let remote = remote(engine, project).await?;
    source::sync_mirror(&remote, &mirror).await?;
    let head_of = async |branch: &str| {
        source::resolve(&mirror, &format!("refs/heads/{branch}"))
            .await
            .map_err(|_| ApiError::NotFound(format!("branch '{branch}' does not exist in {}", remote.url)))
    };
    let (commit, branch) = match (commit, branch) {
        (None, branch) => {
            let branch = match branch {
                Some(b) => b.to_string(),
                None => default_branch(&mirror).await,
            };
            (head_of(&branch).await?, branch)
        }
        (Some(commit), Some(branch)) => {
            let head = head_of(branch).await?;
            let commit = resolve_commit(&mirror, commit, &remote).await?;
            if !source::is_ancestor(&mirror, &commit, &head).await? {
                return Err(ApiError::InvalidRequest(format!(
                    "commit {commit} is not on branch '{branch}' (its head is {head})"
                )));
            }
            (commit, branch.to_string())
        }
        (Some(commit), None) => {
            let commit = resolve_commit(&mirror, commit, &remote).await?;
            if !source::on_branch_or_tag(&mirror, &commit).await? {
                return Err(ApiError::InvalidRequest(format!(
                    "commit {commit} is on no branch or tag of {}",
                    remote.url
                )));
            }
            (commit, String::new())
        }
    };
    start_at(engine, project, &remote, &branch, &commit, event).await
}

async fn resolve_commit(
    mirror: &std::path::Path,
    commit: &str,
    remote: &source::Remote,
) -> Result<String, ApiError> {
    source::resolve(mirror, commit)
        .await
        .map_err(|_| ApiError::NotFound(format!("commit {commit} does not exist in {}", remote.url)))
}

async fn start_at(
    engine: &Arc<Engine>,
    project: &Project,
    remote: &source::Remote,
    branch: &str,
    commit: &str,
    event: &str,
) -> Result<Triggered, ApiError> {
    let mirror = mirror_path(engine, &project.name);
    let pipeline = source::file_at(&mirror, commit, "conveyor.yml")
        .await
        .map_err(|_| ApiError::InvalidRequest(format!("commit {commit} has no conveyor.yml at its root")))?;
    if event == "manual" {
        let parsed = conveyor_spec::parse("conveyor.yml", &pipeline).map_err(|errors| {
            ApiError::PipelineInvalid(errors.0.iter().map(ToString::to_string).collect())
        })?;
        if !parsed.on.manual {
            return Err(ApiError::Conflict(format!(
                "the pipeline at {commit} does not allow manual runs (add `manual: true` under `on:`)"
            )));
        }
    }
    let source_digest = source::snapshot_commit(&mirror, commit, &engine.data().cas).await?;
    let committed_at = source::commit_time(&mirror, commit).await;
    let run_id = engine
        .create_run(NewRun {
            project: project.name.clone(),
            source_uri: remote.url.clone(),
            commit: commit.to_string(),
            branch: branch.to_string(),
            event: event.to_string(),
            pipeline,
            source_digest,
            committed_at,
        })
        .await?;
    engine.spawn_run(run_id);
    Ok(Triggered {
        run_id,
        commit: commit.to_string(),
        branch: branch.to_string(),
    })
}

/// Polls every project on its interval; a new head on a watched branch starts a run. "New" means
/// not yet run (by any trigger) and not the head the branch had when the project was registered.
pub async fn poll_forever(engine: Arc<Engine>, tick: Duration) {
    let mut last_poll: HashMap<String, tokio::time::Instant> = HashMap::new();
    // Heads already looked at whose pipeline could not start (invalid file): not retried each tick.
    let mut refused: HashMap<(String, String), String> = HashMap::new();
    let mut interval = tokio::time::interval(tick);
    loop {
        interval.tick().await;
        // One server polls at a time, or a new head would start a run on each.
        if !engine.singleton("poller").await {
            continue;
        }
        let projects = match engine.store().projects().await {
            Ok(p) => p,
            Err(error) => {
                tracing::warn!(%error, "cannot list projects to poll");
                continue;
            }
        };
        for project in projects {
            let due = last_poll
                .get(&project.name)
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(project.poll_seconds));
            if !due {
                continue;
            }
            last_poll.insert(project.name.clone(), tokio::time::Instant::now());
            if let Err(error) = poll_project(&engine, &project, &mut refused).await {
                tracing::warn!(project = %project.name, %error, "polling failed");
            }
        }
    }
}

async fn poll_project(
    engine: &Arc<Engine>,
    project: &Project,
    refused: &mut HashMap<(String, String), String>,
) -> Result<(), ApiError> {
    let mirror = mirror_path(engine, &project.name);
    let remote = remote(engine, project).await?;
    source::sync_mirror(&remote, &mirror).await?;
    for (branch, head) in source::branches(&mirror).await? {
        let key = (project.name.clone(), branch.clone());
        let known = match engine.store().last_commit(&project.name, &branch).await? {
            Some(commit) => Some(commit),
            None => project.heads.get(&branch).cloned(),
        };
        if known.as_deref() == Some(head.as_str()) || refused.get(&key) == Some(&head) {
            continue;
        }
        let Ok(text) = source::file_at(&mirror, &head, "conveyor.yml").await else {
            refused.insert(key, head);
            continue;
        };
        let watched = conveyor_spec::parse("conveyor.yml", &text).map(|p| p.on.watches_branch(&branch));
        match watched {
            Ok(false) => {
                refused.insert(key, head);
            }
            Ok(true) => {
                let started = start_at(engine, project, &remote, &branch, &head, "push").await?;
                tracing::info!(project = %project.name, %branch, commit = %head, run = started.run_id, "new commit: run started");
            }
            Err(errors) => {
                tracing::warn!(project = %project.name, %branch, commit = %head, %errors, "conveyor.yml is invalid; no run started");
                refused.insert(key, head);
            }
        }
    }
    Ok(())
}

/// Fires the `on.schedule` crons of each project's default branch.
pub async fn schedule_forever(engine: Arc<Engine>, tick: Duration) {
    let mut next_fire: HashMap<(String, String), chrono::DateTime<chrono::Utc>> = HashMap::new();
    let mut interval = tokio::time::interval(tick);
    loop {
        interval.tick().await;
        if !engine.singleton("cron").await {
            continue;
        }
        let Ok(projects) = engine.store().projects().await else {
            continue;
        };
        for project in projects {
            let mirror = mirror_path(&engine, &project.name);
            if !mirror.join("HEAD").exists() {
                continue;
            }
            let Ok(head) = source::resolve(&mirror, "HEAD").await else {
                continue;
            };
            let Ok(text) = source::file_at(&mirror, &head, "conveyor.yml").await else {
                continue;
            };
            let Ok(pipeline) = conveyor_spec::parse("conveyor.yml", &text) else {
                continue;
            };
            let now = chrono::Utc::now();
            for cron_text in &pipeline.on.schedule {
                let Ok(cron) = croner::Cron::from_str(cron_text) else {
                    continue;
                };
                let key = (project.name.clone(), cron_text.clone());
                let Some(due) = next_fire.get(&key).copied() else {
                    if let Ok(next) = cron.find_next_occurrence(&now, false) {
                        next_fire.insert(key, next);
                    }
                    continue;
                };
                if now < due {
                    continue;
                }
                if let Ok(next) = cron.find_next_occurrence(&now, false) {
                    next_fire.insert(key, next);
                }
                match trigger(&engine, &project, None, None, "schedule").await {
                    Ok(t) => {
                        tracing::info!(project = %project.name, cron = %cron_text, run = t.run_id, "schedule fired")
                    }
                    Err(error) => {
                        tracing::warn!(project = %project.name, %error, "scheduled run failed to start")
                    }
                }
            }
        }
    }
}

/// The branch a mirror's HEAD names (`main` when it cannot tell).
pub async fn default_branch(mirror: &std::path::Path) -> String {
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(mirror)
        .args(["symbolic-ref", "--short", "HEAD"])
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => "main".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    #[test]
    fn croner_parses_second_schedules() {
        let cron = croner::Cron::from_str("*/2 * * * * *").unwrap();
        let now = chrono::Utc::now();
        let next = cron.find_next_occurrence(&now, false).unwrap();
        assert!(next > now && (next - now).num_seconds() <= 2);
    }
}
