//! The pages: each reads what the API's handlers and the store's reads give, and hands it to
//! `conveyor-ui` to render. Lists are bounded; nothing here reads a whole table.

use std::collections::{BTreeMap, HashMap};

use axum::Extension;
use axum::extract::{Query, State};
use chrono::{Duration, Utc};
use conveyor_api::{DeploymentStatus, LimitQuery, StaleQuery};
use conveyor_store::logs::LogOf;
use conveyor_store::{CurrentRelease, DeploymentView, RunFilter};
use conveyor_ui::overview::{EnvironmentCell, Overview, ProjectRow};
use serde::Deserialize;

use super::session::Session;
use super::{PageResult, chrome, ok};
use crate::auth::{Action, Caller};
use crate::extract::{Params, Q};
use crate::{ApiError, AppState, api, delivery_api, flags_api};

/// The query parameters any page takes (each page reads its own).
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    /// The action just done (a code: `approved`, `saved`, …), for the flash message.
    pub done: Option<String>,
    pub status: Option<String>,
    pub branch: Option<String>,
    pub before: Option<i64>,
    pub compare: Option<i64>,
    pub kind: Option<String>,
    pub project: Option<String>,
    pub verify: Option<String>,
}

fn blank_is_none(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Runs a project page lists at once.
const RUNS_PER_PAGE: i64 = 50;
/// Bytes of a log a run page shows before following it live (its end).
const LOG_BYTES: u64 = 1024 * 1024;

/// Every environment `caller` may read, with what it runs and how healthy it is.
async fn environments(
    state: &AppState,
    caller: &Caller,
    project: Option<&str>,
) -> Result<Vec<EnvironmentCell>, ApiError> {
    let store = state.engine.store();
    let current: HashMap<(String, String), CurrentRelease> = store
        .current_releases()
        .await?
        .into_iter()
        .map(|c| ((c.project.clone(), c.environment.clone()), c))
        .collect();
    Ok(store
        .latest_deployments(project)
        .await?
        .into_iter()
        .filter(|d| caller.may(Action::Read, Some(&d.project), None))
        .map(|latest| {
            let status = state.delivery.status(&latest.project, &latest.environment);
            let instances: Vec<bool> = status
                .versions
                .iter()
                .flat_map(|v| v.instances.iter().map(|i| i.healthy))
                .collect();
            EnvironmentCell {
                environment: latest.environment.clone(),
                current: current
                    .get(&(latest.project.clone(), latest.environment.clone()))
                    .map(|c| (c.release_id, c.since.unwrap_or(latest.created_at))),
                healthy: (!instances.is_empty()).then(|| instances.iter().all(|h| *h)),
                latest,
            }
        })
        .collect())
}

/// May `caller` approve `d` now, as far as the page can tell (the server decides on the
/// click, with the release's own rules too)?
async fn may_approve(state: &AppState, caller: &Caller, d: &DeploymentView) -> Result<bool, ApiError> {
    if !caller.may(Action::Deploy, Some(&d.project), Some(&d.environment))
        || d.approvals.contains(&caller.user)
    {
        return Ok(false);
    }
    let rules = state
        .engine
        .store()
        .protection(&d.project, &d.environment)
        .await?;
    Ok(match rules {
        Some(rules) => {
            !(rules.not_author && d.authors.contains(&caller.user))
                && (rules.reviewers.is_empty() || rules.reviewers.contains(&caller.user))
        }
        None => true,
    })
}

fn awaiting_approval(d: &DeploymentView) -> bool {
    d.status == DeploymentStatus::Pending && d.gates.iter().any(|g| g.contains("approval"))
}

pub async fn overview(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let store = state.engine.store();
    let readable = |p: &str| caller.may(Action::Read, Some(p), None);
    let cells = environments(&state, &caller, None).await?;
    let mut by_project: BTreeMap<String, Vec<EnvironmentCell>> = BTreeMap::new();
    for cell in cells {
        by_project
            .entry(cell.latest.project.clone())
            .or_default()
            .push(cell);
    }
    let mut projects = Vec::new();
    for p in store.projects().await?.into_iter().filter(|p| readable(&p.name)) {
        projects.push(ProjectRow {
            last_run: store.runs(Some(&p.name), 1).await?.pop(),
            environments: by_project.remove(&p.name).unwrap_or_default(),
            name: p.name,
        });
    }
    let in_progress: Vec<DeploymentView> = store
        .unfinished_deployments()
        .await?
        .into_iter()
        .filter(|d| readable(&d.project))
        .rev()
        .collect();
    let mut awaiting_me = Vec::new();
    for d in in_progress.iter().filter(|d| awaiting_approval(d)) {
        if may_approve(&state, &caller, d).await? {
            awaiting_me.push(d.clone());
        }
    }
    let chrome = chrome(&caller, &session, q.done.as_deref());
    ok(conveyor_ui::overview::render(
        &chrome,
        &Overview {
            projects,
            in_progress,
            awaiting_me,
        },
    ))
}

pub async fn project(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Params(name): Params<String>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let store = state.engine.store();
    let axum::Json(project) = api::get_project(State(state.clone()), Params(name.clone())).await?;
    let filter = conveyor_ui::project::RunFilter {
        status: blank_is_none(&q.status).map(String::from),
        branch: blank_is_none(&q.branch).map(String::from),
        before: q.before,
    };
    let mut runs = store
        .runs_where(
            &RunFilter {
                project: Some(&name),
                status: filter.status.as_deref(),
                branch: filter.branch.as_deref(),
                before: filter.before,
            },
            RUNS_PER_PAGE + 1,
        )
        .await?;
    let more = (runs.len() as i64 > RUNS_PER_PAGE).then(|| {
        runs.truncate(RUNS_PER_PAGE as usize);
        runs.last().map_or(0, |r| r.id)
    });
    let page = conveyor_ui::project::ProjectPage {
        can_run: caller.may(Action::Deploy, Some(&name), None),
        releases: store.releases(Some(&name), 20).await?,
        environments: environments(&state, &caller, Some(&name)).await?,
        project,
        runs,
        filter,
        more,
    };
    ok(conveyor_ui::project::render(
        &chrome(&caller, &session, q.done.as_deref()),
        &page,
    ))
}

pub async fn run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Params(id): Params<i64>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let axum::Json(detail) = api::get_run(State(state.clone()), Params(id)).await?;
    let run = detail.run;
    // The graph follows the run's own conveyor.yml; jobs it no longer parses to are listed as run.
    let needs = match conveyor_spec::parse("conveyor.yml", &run.pipeline) {
        Ok(pipeline) => pipeline
            .jobs
            .iter()
            .map(|j| (j.id.clone(), j.needs.clone()))
            .collect(),
        Err(_) => run.jobs.iter().map(|j| (j.job.clone(), Vec::new())).collect(),
    };
    let logs = state.engine.data().logs.clone();
    let (log, log_next, log_truncated) =
        tokio::task::spawn_blocking(move || logs.read_tail(LogOf::Run(id), LOG_BYTES))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Internal(format!("cannot read the log of run {id}: {e}")))?;
    let page = conveyor_ui::run::RunPage {
        can_deploy: caller.may(Action::Deploy, Some(&run.project), None),
        release_id: detail.release_id,
        run,
        needs,
        log,
        log_next,
        log_truncated,
    };
    ok(conveyor_ui::run::render(
        &chrome(&caller, &session, q.done.as_deref()),
        &page,
    ))
}

pub async fn release(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Params(id): Params<i64>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let store = state.engine.store();
    let axum::Json(release) = api::get_release(State(state.clone()), Params(id)).await?;
    let data = state.engine.data();
    let keys = data.public_keys();
    let problems = conveyor_engine::verify_stored(&release, &keys, &data.cas);
    // The statement as signed (none to show when the signature does not verify).
    let statement = serde_json::from_value::<conveyor_attest::Envelope>(release.envelope.clone())
        .ok()
        .and_then(|e| e.signer(&keys).and_then(|key| e.verify(key)).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(serde_json::Value::Null);
    let environments = match store.run(release.run_id).await? {
        Some(run) => conveyor_spec::parse("conveyor.yml", &run.pipeline)
            .map(|p| p.environments.into_iter().map(|e| e.name).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let promotable = environments
        .into_iter()
        .filter(|e: &String| caller.may(Action::Deploy, Some(&release.project), Some(e)))
        .collect();
    let others: Vec<_> = store
        .releases(Some(&release.project), 50)
        .await?
        .into_iter()
        .filter(|r| r.id != id)
        .collect();
    let comparison = match q.compare.filter(|c| *c != id) {
        Some(base) => Some(compare(&state, &release, base).await?),
        None => None,
    };
    let page = conveyor_ui::release::ReleasePage {
        deployments: store.deployments_of_release(id).await?,
        release,
        problems,
        statement,
        promotable,
        others,
        comparison,
    };
    ok(conveyor_ui::release::render(
        &chrome(&caller, &session, q.done.as_deref()),
        &page,
    ))
}

/// What changed between release `base` and `release`: commits (from the project's mirror) and
/// artifacts.
async fn compare(
    state: &AppState,
    release: &conveyor_store::Release,
    base: i64,
) -> Result<conveyor_ui::release::Comparison, ApiError> {
    let store = state.engine.store();
    let base = store
        .release(base)
        .await?
        .filter(|b| b.project == release.project)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "release {base} of project '{}' does not exist",
                release.project
            ))
        })?;
    let mirror = state.engine.data().mirror(&release.project);
    let (commits, commits_problem) =
        match conveyor_engine::source::commits_between(&mirror, &base.commit, &release.commit, 200).await {
            Ok(commits) => (
                commits
                    .into_iter()
                    .map(|c| (c.sha, c.author, c.subject))
                    .collect(),
                None,
            ),
            Err(error) => (Vec::new(), Some(format!("The commits cannot be listed: {error}"))),
        };
    let before: BTreeMap<&str, &str> = base
        .artifacts
        .iter()
        .map(|a| (a.path.as_str(), a.digest.as_str()))
        .collect();
    let after: BTreeMap<&str, &str> = release
        .artifacts
        .iter()
        .map(|a| (a.path.as_str(), a.digest.as_str()))
        .collect();
    let mut artifacts = Vec::new();
    for path in before
        .keys()
        .chain(after.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (b, a) = (before.get(path), after.get(path));
        if b != a {
            artifacts.push((
                path.to_string(),
                b.map(|d| d.to_string()),
                a.map(|d| d.to_string()),
            ));
        }
    }
    Ok(conveyor_ui::release::Comparison {
        base,
        commits,
        commits_problem,
        artifacts,
    })
}

pub async fn environment(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Params((project, environment)): Params<(String, String)>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let path = || Params((project.clone(), environment.clone()));
    let axum::Json(view) = delivery_api::environment(State(state.clone()), path()).await?;
    let axum::Json(history) =
        delivery_api::history(State(state.clone()), path(), Q(LimitQuery { limit: Some(50) })).await?;
    let protection = state.engine.store().protection(&project, &environment).await?;
    // Any release that succeeded here but the one serving as stable (a warm one included).
    let running: Vec<i64> = view
        .status
        .versions
        .iter()
        .filter(|v| v.role == conveyor_api::VersionRole::Stable)
        .map(|v| v.release_id)
        .collect();
    let mut rollback_to: Vec<i64> = Vec::new();
    for d in &history.deployments {
        if d.status == DeploymentStatus::Succeeded
            && !running.contains(&d.release_id)
            && !rollback_to.contains(&d.release_id)
        {
            rollback_to.push(d.release_id);
        }
    }
    let controls = conveyor_ui::environment::Controls {
        deploy: caller.may(Action::Deploy, Some(&project), Some(&environment)),
        approve: match &view.deployment {
            Some(d) => may_approve(&state, &caller, d).await?,
            None => false,
        },
    };
    let page = conveyor_ui::environment::EnvironmentPage {
        view,
        history,
        protection,
        controls,
        rollback_to,
    };
    ok(conveyor_ui::environment::render(
        &chrome(&caller, &session, q.done.as_deref()),
        &page,
    ))
}

/// Bytes of an instance's log a page shows (its end).
const INSTANCE_LOG_BYTES: u64 = 64 * 1024;

pub async fn instance_log(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Params((project, environment, version, index)): Params<(String, String, String, u32)>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let log = state
        .delivery
        .instance_log(&project, &environment, &version, index, INSTANCE_LOG_BYTES)
        .await?;
    ok(conveyor_ui::environment::render_instance_log(
        &chrome(&caller, &session, q.done.as_deref()),
        (&project, &environment),
        (&version, index),
        log.as_deref(),
    ))
}

pub async fn deployment(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Params(id): Params<i64>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let axum::Json(deployment) = delivery_api::deployment(State(state.clone()), Params(id)).await?;
    let axum::Json(report) = delivery_api::analysis(State(state.clone()), Params(id)).await?;
    let controls = conveyor_ui::environment::Controls {
        deploy: caller.may(
            Action::Deploy,
            Some(&deployment.project),
            Some(&deployment.environment),
        ),
        approve: may_approve(&state, &caller, &deployment).await?,
    };
    let page = conveyor_ui::environment::DeploymentPage {
        deployment,
        report,
        controls,
    };
    ok(conveyor_ui::environment::render_deployment(
        &chrome(&caller, &session, q.done.as_deref()),
        &page,
    ))
}

/// The flags page, with `edited` (text refused, and why) in the editor instead of the stored
/// definition.
pub(super) async fn flags_page(
    state: &AppState,
    caller: &Caller,
    session: &Session,
    (project, environment): (String, String),
    edited: Option<(String, String)>,
    done: Option<&str>,
) -> Result<conveyor_ui::Html, ApiError> {
    let path = || Params((project.clone(), environment.clone()));
    let axum::Json(list) = flags_api::list(State(state.clone()), path()).await?;
    let axum::Json(history) =
        flags_api::history(State(state.clone()), path(), Q(LimitQuery { limit: Some(50) })).await?;
    let axum::Json(schedules) = flags_api::list_schedules(State(state.clone()), path()).await?;
    let axum::Json(stale) = flags_api::stale(State(state.clone()), path(), Q(StaleQuery::default())).await?;
    let (definition, problem) = match edited {
        Some((text, problem)) => (text, Some(problem)),
        None => {
            let text = flags_api::live(state, &project, &environment)?
                .set
                .to_json_string();
            // Indented, to edit.
            let pretty = serde_json::from_str::<serde_json::Value>(&text)
                .and_then(|v| serde_json::to_string_pretty(&v))
                .unwrap_or(text);
            (pretty, None)
        }
    };
    let page = conveyor_ui::flags::FlagsPage {
        can_edit: caller.may(Action::Deploy, Some(&project), Some(&environment)),
        list,
        definition,
        problem,
        history: history.history,
        schedules: schedules.schedules,
        stale,
    };
    Ok(conveyor_ui::flags::render(&chrome(caller, session, done), &page))
}

pub async fn flags(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Params(path): Params<(String, String)>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    ok(flags_page(&state, &caller, &session, path, None, q.done.as_deref()).await?)
}

/// Weeks of trend the DORA page draws.
const DORA_WEEKS: i64 = 8;
const DORA_WINDOW_DAYS: u64 = 30;

pub async fn dora(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let now = Utc::now();
    let ends: Vec<_> = (0..DORA_WEEKS).rev().map(|w| now - Duration::weeks(w)).collect();
    let window = std::time::Duration::from_secs(DORA_WINDOW_DAYS * 86_400);
    let mut rows = Vec::new();
    for cell in environments(&state, &caller, blank_is_none(&q.project)).await? {
        let (project, environment) = (cell.latest.project.clone(), cell.environment.clone());
        let reports = state
            .delivery
            .dora_at(Some(&project), &environment, window, &ends)
            .await?;
        let now_report = reports.last().cloned().expect("one report per end");
        let trend = ends
            .iter()
            .zip(reports)
            .map(|(end, report)| (end.format("%b %d").to_string(), report))
            .collect();
        rows.push(conveyor_ui::dora::DoraRow {
            project,
            environment,
            now: now_report,
            trend,
        });
    }
    ok(conveyor_ui::dora::render(
        &chrome(&caller, &session, q.done.as_deref()),
        DORA_WINDOW_DAYS,
        &rows,
    ))
}

/// Events an audit page shows, and how many it looks through for a project filter.
const AUDIT_PAGE: usize = 100;
const AUDIT_SCAN: i64 = 2000;

pub async fn audit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let filter = conveyor_ui::audit::AuditFilter {
        kind: blank_is_none(&q.kind).map(String::from),
        project: blank_is_none(&q.project).map(String::from),
    };
    let scan = if filter.project.is_some() {
        AUDIT_SCAN
    } else {
        AUDIT_PAGE as i64 + 1
    };
    let stored = state
        .engine
        .store()
        .events_before(q.before, filter.kind.as_deref(), scan)
        .await?;
    let scanned_to = stored.last().map(|e| e.seq);
    let full_scan = stored.len() as i64 == scan;
    let mut events = Vec::new();
    for e in &stored {
        let shown = api::event_shown(&e.event);
        if filter
            .project
            .as_deref()
            .is_some_and(|p| shown["project"].as_str() != Some(p))
        {
            continue;
        }
        if events.len() == AUDIT_PAGE {
            break;
        }
        events.push(conveyor_api::EventRecord {
            seq: e.seq,
            at: e.at.parse().unwrap_or_default(),
            event: shown,
        });
    }
    let more = if events.len() == AUDIT_PAGE {
        events.last().map(|e| e.seq)
    } else if full_scan {
        scanned_to
    } else {
        None
    };
    let verification = match q.verify.as_deref() {
        Some(_) => Some(api::audit_verify(State(state.clone())).await?.0),
        None => None,
    };
    let page = conveyor_ui::audit::AuditPage {
        events,
        filter,
        more,
        verification,
    };
    ok(conveyor_ui::audit::render(
        &chrome(&caller, &session, q.done.as_deref()),
        &page,
    ))
}

/// The settings page, with `new_token` (just made) shown once.
pub(super) async fn settings_page(
    state: &AppState,
    caller: &Caller,
    session: &Session,
    new_token: Option<(String, String)>,
    done: Option<&str>,
) -> Result<conveyor_ui::Html, ApiError> {
    let admin = caller.may(Action::Administer, None, None);
    let users = if admin {
        state.engine.store().users().await?
    } else {
        Vec::new()
    };
    let axum::Json(tokens) =
        crate::access_api::list_tokens(State(state.clone()), Extension(caller.clone())).await?;
    let mut protections = Vec::new();
    for cell in environments(state, caller, None).await? {
        let (project, environment) = (cell.latest.project.clone(), cell.environment.clone());
        if caller.may(Action::Manage, Some(&project), Some(&environment)) {
            let rules = state.engine.store().protection(&project, &environment).await?;
            protections.push((project, environment, rules));
        }
    }
    // Sessions that ended are history (the audit trail has them), not tokens to manage.
    let now = Utc::now();
    let tokens = tokens
        .tokens
        .into_iter()
        .filter(|t| {
            !t.name.starts_with("session-")
                || (t.revoked_at.is_none() && t.expires_at.is_none_or(|at| at > now))
        })
        .collect();
    let page = conveyor_ui::settings::SettingsPage {
        users,
        tokens,
        new_token,
        protections,
        admin,
    };
    Ok(conveyor_ui::settings::render(
        &chrome(caller, session, done),
        &page,
    ))
}

pub async fn settings(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    ok(settings_page(&state, &caller, &session, None, q.done.as_deref()).await?)
}
