//! The delivery endpoints: promote, approve, pause, resume, abort, rollback, status, history
//! (deployments and flag changes), DORA. Identities are the caller's user.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use conveyor_api::dora::DoraReport;
use conveyor_api::{
    Aborting, AnalysisReport, Approved, DeploymentCreated, DeploymentHistory, DeploymentView, DoraQuery,
    EnvironmentProtection, EnvironmentView, ErrorBody, FlagChangeEntry, LimitQuery, Pausing, Promote, Resume,
    Resuming, Rollback,
};

use crate::auth::{Action, Caller, Scoped};
use crate::extract::{Body, Params, Q};
use crate::{ApiError, AppState};

type ApiResult<T> = Result<T, ApiError>;

/// The OpenMetrics text of the `metrics` endpoints.
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Deploys a release into an environment (gates, then the environment's strategy).
#[utoipa::path(post, path = "/api/v1/releases/{id}/promote", tag = "delivery", params(("id" = i64, Path)),
    request_body = Promote,
    responses((status = 201, description = "Deployment requested", body = DeploymentCreated),
        (status = 403, description = "Refused by a rule", body = ErrorBody),
        (status = 409, description = "Conflicts with the environment's state", body = ErrorBody)))]
pub async fn promote(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(Scoped { project, .. }): Extension<Scoped>,
    Params(release): Params<i64>,
    Body(body): Body<Promote>,
) -> ApiResult<(StatusCode, Json<DeploymentCreated>)> {
    caller.require(Action::Deploy, project.as_deref(), Some(&body.environment))?;
    let by = caller.user;
    let id = state
        .delivery
        .promote(&body.environment, release, &by, body.fixes)
        .await?;
    Ok((StatusCode::CREATED, Json(DeploymentCreated { deployment_id: id })))
}

/// Back to an earlier release (default: the previous one). The body is optional.
#[utoipa::path(post, path = "/api/v1/projects/{project}/environments/{environment}/rollback", tag = "delivery",
    params(("project" = String, Path), ("environment" = String, Path)),
    request_body(content = Option<Rollback>),
    responses((status = 201, description = "Rollback requested", body = DeploymentCreated),
        (status = 403, description = "Refused by a rule", body = ErrorBody),
        (status = 409, description = "Nothing to roll back to", body = ErrorBody)))]
pub async fn rollback(
    State(state): State<AppState>,
    Extension(Caller { user: by, .. }): Extension<Caller>,
    Params((project, environment)): Params<(String, String)>,
    body: Option<Body<Rollback>>,
) -> ApiResult<(StatusCode, Json<DeploymentCreated>)> {
    let to = body.and_then(|Body(b)| b.to);
    let id = state.delivery.rollback(&project, &environment, to, &by).await?;
    Ok((StatusCode::CREATED, Json(DeploymentCreated { deployment_id: id })))
}

/// What runs in an environment now, and its newest deployment.
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}", tag = "delivery",
    params(("project" = String, Path), ("environment" = String, Path)),
    responses((status = 200, description = "The environment", body = EnvironmentView)))]
pub async fn environment(
    State(state): State<AppState>,
    Params((project, environment)): Params<(String, String)>,
) -> ApiResult<Json<EnvironmentView>> {
    let status = state.delivery.status(&project, &environment);
    let latest = state
        .engine
        .store()
        .deployments(Some(&project), Some(&environment), 1)
        .await?;
    Ok(Json(EnvironmentView {
        status,
        deployment: latest.into_iter().next(),
    }))
}

/// The server's rules for the environment (what a release's `conveyor.yml` may only make
/// stricter): 404 when it has none.
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/protection", tag = "delivery",
    params(("project" = String, Path), ("environment" = String, Path)),
    responses((status = 200, description = "The protection", body = EnvironmentProtection)))]
pub async fn protection(
    State(state): State<AppState>,
    Params((project, environment)): Params<(String, String)>,
) -> ApiResult<Json<EnvironmentProtection>> {
    state
        .engine
        .store()
        .protection(&project, &environment)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("{project}/{environment} has no protection")))
}

/// Sets the environment's rules on the server, replacing the ones it had (audited).
#[utoipa::path(put, path = "/api/v1/projects/{project}/environments/{environment}/protection", tag = "delivery",
    params(("project" = String, Path), ("environment" = String, Path)), request_body = EnvironmentProtection,
    responses((status = 200, description = "The protection now", body = EnvironmentProtection)))]
pub async fn protect(
    State(state): State<AppState>,
    Extension(Caller { user: by, .. }): Extension<Caller>,
    Params((project, environment)): Params<(String, String)>,
    Body(body): Body<EnvironmentProtection>,
) -> ApiResult<Json<EnvironmentProtection>> {
    if !crate::api::valid_name(&environment) {
        return Err(ApiError::InvalidRequest(format!(
            "'{environment}' is not an environment name"
        )));
    }
    state
        .delivery
        .protect(&project, &environment, Some(body.clone()), &by)
        .await?;
    Ok(Json(body))
}

/// Removes the environment's rules on the server (audited): only the releases' own remain.
#[utoipa::path(delete, path = "/api/v1/projects/{project}/environments/{environment}/protection", tag = "delivery",
    params(("project" = String, Path), ("environment" = String, Path)),
    responses((status = 204, description = "Removed")))]
pub async fn unprotect(
    State(state): State<AppState>,
    Extension(Caller { user: by, .. }): Extension<Caller>,
    Params((project, environment)): Params<(String, String)>,
) -> ApiResult<StatusCode> {
    if state
        .engine
        .store()
        .protection(&project, &environment)
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound(format!(
            "{project}/{environment} has no protection"
        )));
    }
    state.delivery.protect(&project, &environment, None, &by).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An environment's timeline: deployments and flag changes, newest first.
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/deployments", tag = "delivery",
    params(("project" = String, Path), ("environment" = String, Path), LimitQuery),
    responses((status = 200, description = "The timeline", body = DeploymentHistory)))]
pub async fn history(
    State(state): State<AppState>,
    Params((project, environment)): Params<(String, String)>,
    Q(q): Q<LimitQuery>,
) -> ApiResult<Json<DeploymentHistory>> {
    let limit = q.get();
    let deployments = state
        .engine
        .store()
        .deployments(Some(&project), Some(&environment), limit)
        .await?;
    // The environment's timeline: flag changes beside the deployments.
    let flag_changes = state
        .engine
        .store()
        .flag_history(&project, &environment, limit)
        .await?
        .into_iter()
        .filter_map(|e| match e.event {
            conveyor_store::Event::FlagsChanged { by, changes, .. } => {
                Some(crate::api::timestamp(&e.at).map(|at| FlagChangeEntry {
                    seq: e.seq,
                    at,
                    by,
                    changes,
                }))
            }
            _ => None,
        })
        .collect::<ApiResult<_>>()?;
    Ok(Json(DeploymentHistory {
        deployments,
        flag_changes,
    }))
}

/// The environment router's metrics (requests, 5xx, latency per version).
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/metrics", tag = "delivery",
    params(("project" = String, Path), ("environment" = String, Path)),
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
pub async fn metrics(
    State(state): State<AppState>,
    Params((project, environment)): Params<(String, String)>,
) -> ApiResult<Response> {
    let text = state
        .delivery
        .metrics_text(&project, &environment)
        .ok_or_else(|| ApiError::NotFound(format!("{project}/{environment} has no router yet")))?;
    Ok(([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response())
}

/// Prometheus metrics of every environment's router (requests, 5xx, latency per version).
#[utoipa::path(get, path = "/metrics", tag = "delivery",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
pub async fn all_metrics(State(state): State<AppState>) -> Response {
    let text = state.delivery.all_metrics_text();
    ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response()
}

#[utoipa::path(get, path = "/api/v1/deployments/{id}", tag = "delivery", params(("id" = i64, Path)),
    responses((status = 200, description = "The deployment", body = DeploymentView)))]
pub async fn deployment(
    State(state): State<AppState>,
    Params(id): Params<i64>,
) -> ApiResult<Json<DeploymentView>> {
    let d = state
        .engine
        .store()
        .deployment(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("deployment {id} does not exist")))?;
    Ok(Json(d))
}

/// The judgements of a deployment's canary analysis, with their evidence.
#[utoipa::path(get, path = "/api/v1/deployments/{id}/analysis", tag = "delivery", params(("id" = i64, Path)),
    responses((status = 200, description = "The judgements, oldest first", body = AnalysisReport)))]
pub async fn analysis(
    State(state): State<AppState>,
    Params(id): Params<i64>,
) -> ApiResult<Json<AnalysisReport>> {
    let store = state.engine.store();
    let d = store
        .deployment(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("deployment {id} does not exist")))?;
    let judgements = store.judgements(id).await?;
    Ok(Json(AnalysisReport {
        deployment_id: id,
        status: d.status,
        reason: d.reason,
        judgements,
        live: state.delivery.standings(id),
    }))
}

/// Approves a gated deployment (four eyes: not its author).
#[utoipa::path(post, path = "/api/v1/deployments/{id}/approve", tag = "delivery", params(("id" = i64, Path)),
    responses((status = 200, description = "Approved", body = Approved),
        (status = 403, description = "Not allowed to approve it", body = ErrorBody),
        (status = 409, description = "Not waiting for approval", body = ErrorBody)))]
pub async fn approve(
    State(state): State<AppState>,
    Extension(Caller { user: by, .. }): Extension<Caller>,
    Params(id): Params<i64>,
) -> ApiResult<Json<Approved>> {
    state.delivery.approve(id, &by).await?;
    Ok(Json(Approved {
        deployment_id: id,
        approved_by: by,
    }))
}

#[utoipa::path(post, path = "/api/v1/deployments/{id}/pause", tag = "delivery", params(("id" = i64, Path)),
    responses((status = 200, description = "Pausing", body = Pausing),
        (status = 409, description = "Not running", body = ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    Extension(Caller { user: by, .. }): Extension<Caller>,
    Params(id): Params<i64>,
) -> ApiResult<Json<Pausing>> {
    state.delivery.pause(id, &by).await?;
    Ok(Json(Pausing {
        deployment_id: id,
        pausing: true,
    }))
}

/// Resumes a paused deployment (`full`: all traffic now). The body is optional.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/resume", tag = "delivery", params(("id" = i64, Path)),
    request_body(content = Option<Resume>),
    responses((status = 200, description = "Resuming", body = Resuming),
        (status = 409, description = "Not paused", body = ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    Extension(Caller { user: by, .. }): Extension<Caller>,
    Params(id): Params<i64>,
    body: Option<Body<Resume>>,
) -> ApiResult<Json<Resuming>> {
    let full = body.is_some_and(|Body(b)| b.full);
    state.delivery.resume(id, &by, full).await?;
    Ok(Json(Resuming {
        deployment_id: id,
        resuming: true,
        full,
    }))
}

/// Aborts a deployment: traffic back to stable, the new version stopped.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/abort", tag = "delivery", params(("id" = i64, Path)),
    responses((status = 200, description = "Aborting", body = Aborting),
        (status = 409, description = "Already finished", body = ErrorBody)))]
pub async fn abort(
    State(state): State<AppState>,
    Extension(Caller { user: by, .. }): Extension<Caller>,
    Params(id): Params<i64>,
) -> ApiResult<Json<Aborting>> {
    state.delivery.abort(id, &by).await?;
    Ok(Json(Aborting {
        deployment_id: id,
        aborting: true,
    }))
}

/// DORA's four keys for an environment (default `production`) over a window (default 90 days).
#[utoipa::path(get, path = "/api/v1/dora", tag = "delivery", params(DoraQuery),
    responses((status = 200, description = "The four keys", body = DoraReport)))]
pub async fn dora(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Q(q): Q<DoraQuery>,
) -> ApiResult<Json<DoraReport>> {
    caller.require(Action::Read, q.project.as_deref(), None)?;
    let days = q.window_days.unwrap_or(90);
    if !(1..=3650).contains(&days) {
        return Err(ApiError::InvalidRequest(
            "window_days must be between 1 and 3650".into(),
        ));
    }
    let environment = q.environment.unwrap_or_else(|| "production".into());
    let window = std::time::Duration::from_secs(days * 86_400);
    let report = state
        .delivery
        .dora(q.project.as_deref(), &environment, window)
        .await?;
    Ok(Json(DoraReport {
        report,
        environment,
        project: q.project,
    }))
}
