//! The delivery endpoints: promote, approve, pause, resume, abort, rollback, status, history
//! (deployments and flag changes), tokens. Identities come from the caller's token name.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{ADMIN, Identity};
use crate::{ApiError, AppState};

type ApiResult<T> = Result<T, ApiError>;
type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    environment: String,
    /// A deployment of this environment that this one fixes forward (DORA: a change failure).
    #[serde(default)]
    fixes: Option<i64>,
}

pub async fn promote(
    State(state): State<AppState>,
    Extension(Identity(by)): Extension<Identity>,
    Path(release): Path<i64>,
    body: JsonBody<Promote>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body?;
    let id = state
        .delivery
        .promote(&body.environment, release, &by, body.fixes)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "deployment_id": id }))))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    to: Option<i64>,
}

pub async fn rollback(
    State(state): State<AppState>,
    Extension(Identity(by)): Extension<Identity>,
    Path((project, environment)): Path<(String, String)>,
    body: Option<Json<Rollback>>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let to = body.and_then(|Json(b)| b.to);
    let id = state.delivery.rollback(&project, &environment, to, &by).await?;
    Ok((StatusCode::CREATED, Json(json!({ "deployment_id": id }))))
}

pub async fn environment(
    State(state): State<AppState>,
    Path((project, environment)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let mut body = json!(state.delivery.status(&project, &environment));
    let latest = state
        .engine
        .store()
        .deployments(Some(&project), Some(&environment), 1)
        .await?;
    body["deployment"] = json!(latest.first());
    Ok(Json(body))
}

#[derive(Deserialize)]
pub struct Limit {
    limit: Option<i64>,
}

impl Limit {
    /// The `limit` asked for, 50 by default, within 1..=1000.
    pub fn get(&self) -> i64 {
        self.limit.unwrap_or(50).clamp(1, 1000)
    }
}

pub async fn history(
    State(state): State<AppState>,
    Path((project, environment)): Path<(String, String)>,
    Query(q): Query<Limit>,
) -> ApiResult<Json<Value>> {
    let limit = q.get();
    let deployments = state
        .engine
        .store()
        .deployments(Some(&project), Some(&environment), limit)
        .await?;
    // The environment's timeline: flag changes beside the deployments.
    let flag_changes: Vec<Value> = state
        .engine
        .store()
        .flag_history(&project, &environment, limit)
        .await?
        .into_iter()
        .filter_map(|e| match e.event {
            conveyor_store::Event::FlagsChanged { by, changes, .. } => {
                Some(json!({ "seq": e.seq, "at": e.at, "by": by, "changes": changes }))
            }
            _ => None,
        })
        .collect();
    Ok(Json(
        json!({ "deployments": deployments, "flag_changes": flag_changes }),
    ))
}

pub async fn metrics(
    State(state): State<AppState>,
    Path((project, environment)): Path<(String, String)>,
) -> ApiResult<Response> {
    let text = state
        .delivery
        .metrics_text(&project, &environment)
        .ok_or_else(|| ApiError::NotFound(format!("{project}/{environment} has no router yet")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Prometheus metrics of every environment's router (requests, 5xx, latency per version).
pub async fn all_metrics(State(state): State<AppState>) -> Response {
    let text = state.delivery.all_metrics_text();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub async fn deployment(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    let d = state
        .engine
        .store()
        .deployment(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("deployment {id} does not exist")))?;
    Ok(Json(json!(d)))
}

/// The judgements of a deployment's canary analysis, with their evidence.
pub async fn analysis(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    let store = state.engine.store();
    let d = store
        .deployment(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("deployment {id} does not exist")))?;
    let judgements = store.judgements(id).await?;
    Ok(Json(json!({
        "deployment_id": id,
        "status": d.status,
        "reason": d.reason,
        "judgements": judgements,
    })))
}

pub async fn approve(
    State(state): State<AppState>,
    Extension(Identity(by)): Extension<Identity>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    state.delivery.approve(id, &by).await?;
    Ok(Json(json!({ "deployment_id": id, "approved_by": by })))
}

pub async fn pause(
    State(state): State<AppState>,
    Extension(Identity(by)): Extension<Identity>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    state.delivery.pause(id, &by).await?;
    Ok(Json(json!({ "deployment_id": id, "pausing": true })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    #[serde(default)]
    full: bool,
}

pub async fn resume(
    State(state): State<AppState>,
    Extension(Identity(by)): Extension<Identity>,
    Path(id): Path<i64>,
    body: Option<Json<Resume>>,
) -> ApiResult<Json<Value>> {
    let full = body.is_some_and(|Json(b)| b.full);
    state.delivery.resume(id, &by, full).await?;
    Ok(Json(
        json!({ "deployment_id": id, "resuming": true, "full": full }),
    ))
}

pub async fn abort(
    State(state): State<AppState>,
    Extension(Identity(by)): Extension<Identity>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    state.delivery.abort(id, &by).await?;
    Ok(Json(json!({ "deployment_id": id, "aborting": true })))
}

#[derive(Deserialize)]
pub struct DoraQuery {
    project: Option<String>,
    environment: Option<String>,
    window_days: Option<u64>,
}

/// DORA's four keys for an environment (default `production`) over a window (default 90 days).
pub async fn dora(State(state): State<AppState>, Query(q): Query<DoraQuery>) -> ApiResult<Json<Value>> {
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
    let mut body = json!(report);
    body["environment"] = json!(environment);
    body["project"] = json!(q.project);
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
}

/// A new named token (the name is the identity approvals and the audit trail show). Admin only.
pub async fn create_token(
    State(state): State<AppState>,
    Extension(Identity(by)): Extension<Identity>,
    body: JsonBody<NewToken>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body?;
    if by != ADMIN {
        return Err(ApiError::Forbidden(
            "only the admin token can create tokens".into(),
        ));
    }
    let valid = !body.name.is_empty()
        && body.name.len() <= 64
        && body
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if !valid || body.name == ADMIN || body.name == "auto" {
        return Err(ApiError::InvalidRequest(format!(
            "token name '{}' must be 1-64 letters, digits, '-', '_', '.', '@', and not 'admin' or 'auto'",
            body.name
        )));
    }
    let token = crate::auth::new_token().map_err(|e| ApiError::Internal(e.to_string()))?;
    state
        .engine
        .events()
        .append(conveyor_store::Event::TokenCreated {
            name: body.name.clone(),
            hash: crate::auth::token_hash(&token),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": body.name, "token": token })),
    ))
}
