//! Flags as managed data under `/api/v1/projects/{p}/environments/{e}/flags`: list, get,
//! replace (flagd JSON), change one flag, remove, export, history, stale report, evaluation
//! keys, scheduled changes and a server-sent event stream of changes. All behind a token; who
//! changed what is the token's name in the `flags_changed` event.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use conveyor_flags::{FlagInfo, FlagPatch, Lifecycle};
use conveyor_store::Event;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{ADMIN, Identity};
use crate::delivery_api::Limit;
use crate::flags::{MAX_DEFINITION_BYTES, Notice, no_flags};
use crate::{ApiError, AppState, api::valid_name};

type ApiResult<T> = Result<T, ApiError>;
type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// The project exists and the environment name is one Conveyor accepts.
async fn check_scope(state: &AppState, project: &str, environment: &str) -> ApiResult<()> {
    if !valid_name(environment) {
        return Err(ApiError::InvalidRequest(format!(
            "environment name '{environment}' must be 1-64 letters, digits, '-', '_' or '.'"
        )));
    }
    if state.engine.store().project(project).await?.is_none() {
        return Err(ApiError::NotFound(format!("project '{project}' does not exist")));
    }
    Ok(())
}

fn flag_json(flag: &FlagInfo<'_>) -> Value {
    json!({
        "key": flag.key,
        "state": flag.state,
        "defaultVariant": flag.default_variant,
        "variants": flag.variants,
        "type": flag.variant_type,
        "metadata": flag.metadata,
        "lifecycle": Lifecycle::from_metadata(flag.metadata).ok(),
    })
}

fn live(state: &AppState, project: &str, environment: &str) -> ApiResult<std::sync::Arc<crate::flags::Live>> {
    Ok(state
        .flags
        .environment(project, environment)
        .live()
        .ok_or_else(|| no_flags(project, environment))?)
}

pub async fn list(
    State(state): State<AppState>,
    Path((project, environment)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let live = live(&state, &project, &environment)?;
    let flags: Vec<Value> = live.set.flags().map(|f| flag_json(&f)).collect();
    Ok(Json(json!({
        "project": project,
        "environment": environment,
        "version": live.version,
        "etag": live.etag_hex(),
        "flags": flags,
    })))
}

pub async fn get_flag(
    State(state): State<AppState>,
    Path((project, environment, key)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let live = live(&state, &project, &environment)?;
    let flag = live.set.flag(&key).ok_or_else(|| {
        ApiError::NotFound(format!("flag '{key}' does not exist in {project}/{environment}"))
    })?;
    let mut body = flag_json(&flag);
    body["definition"] = live.set.to_json()["flags"][&key].clone();
    body["version"] = json!(live.version);
    Ok(Json(body))
}

/// The definition exactly as flagd reads it.
pub async fn export(
    State(state): State<AppState>,
    Path((project, environment)): Path<(String, String)>,
) -> ApiResult<Response> {
    let live = live(&state, &project, &environment)?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        live.set.to_json_string(),
    )
        .into_response())
}

/// Replaces the environment's whole definition (flagd JSON); refused whole with the JSON path
/// of the first mistake, the previous definition staying live.
pub async fn replace(
    State(state): State<AppState>,
    Extension(Identity(by)): Extension<Identity>,
    Path((project, environment)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    check_scope(&state, &project, &environment).await?;
    let body = body.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    if body.len() > MAX_DEFINITION_BYTES {
        return Err(ApiError::InvalidRequest(format!(
            "the definition is {} bytes; the limit is {MAX_DEFINITION_BYTES}",
            body.len()
        )));
    }
    let definition: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::FlagsInvalid(conveyor_flags::DefinitionError {
            path: String::new(),
            message: format!("not valid JSON: {e}"),
        })
    })?;
    let changed = state
        .flags
        .replace(&project, &environment, definition, &by)
        .await?;
    Ok(Json(json!(changed)))
}

/// Changes one flag: `{"state": "DISABLED"}`, `{"defaultVariant": "on"}`,
/// `{"fractional": [["on", 25], ["off", 75]]}` or `{"definition": {...}}` (adds it if new).
pub async fn patch_flag(
    State(state): State<AppState>,
    Extension(Identity(by)): Extension<Identity>,
    Path((project, environment, key)): Path<(String, String, String)>,
    body: JsonBody<FlagPatch>,
) -> ApiResult<Json<Value>> {
    let Json(patch) = body?;
    check_scope(&state, &project, &environment).await?;
    let changed = match state.flags.environment(&project, &environment).live() {
        Some(_) => {
            state
                .flags
                .patch(&project, &environment, &key, &patch, &by)
                .await?
        }
        // The first flag of an environment starts its definition.
        None => {
            let start = conveyor_flags::apply_patch(&json!({"flags": {}}), &key, &patch)
                .map_err(ApiError::FlagsInvalid)?;
            state.flags.replace(&project, &environment, start, &by).await?
        }
    };
    Ok(Json(json!(changed)))
}

pub async fn remove_flag(
    State(state): State<AppState>,
    Extension(Identity(by)): Extension<Identity>,
    Path((project, environment, key)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    live(&state, &project, &environment)?;
    let changed = state.flags.remove(&project, &environment, &key, &by).await?;
    Ok(Json(json!(changed)))
}

/// Changes, keys and schedules of an environment, newest first: who, when, what.
pub async fn history(
    State(state): State<AppState>,
    Path((project, environment)): Path<(String, String)>,
    Query(q): Query<Limit>,
) -> ApiResult<Json<Value>> {
    let limit = q.get();
    let events = state
        .engine
        .store()
        .flag_history(&project, &environment, limit)
        .await?;
    let entries: Vec<Value> = events
        .into_iter()
        .map(|e| {
            let mut entry = json!(e.event);
            if let Some(map) = entry.as_object_mut() {
                // The definition is in `export`; history shows the diff.
                map.remove("definition");
                map.remove("hash");
                map.insert("seq".into(), json!(e.seq));
                map.insert("at".into(), json!(e.at));
            }
            entry
        })
        .collect();
    Ok(Json(json!({ "history": entries })))
}

#[derive(Deserialize)]
pub struct StaleQuery {
    /// Flags unchanged for longer than this are reported too (default 30).
    idle_days: Option<u32>,
}

fn days_since(at: &str, now: chrono::DateTime<chrono::Utc>) -> u32 {
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|t| (now - t.with_timezone(&chrono::Utc)).num_days().max(0) as u32)
        .unwrap_or(0)
}

/// Flags past their expected lifetime (by `type` / `expectedLifetimeDays`), unchanged for longer
/// than `idle_days`, or not evaluated for longer than `idle_days` (evaluations are counted since
/// the server started: code that no longer asks for a flag leaves it dead).
pub async fn stale(
    State(state): State<AppState>,
    Path((project, environment)): Path<(String, String)>,
    Query(q): Query<StaleQuery>,
) -> ApiResult<Json<Value>> {
    let idle_limit = q.idle_days.unwrap_or(30);
    let live = live(&state, &project, &environment)?;
    let ages = state.engine.store().flag_ages(&project, &environment).await?;
    let now = chrono::Utc::now();
    let mut report = Vec::new();
    for age in ages {
        let Some(flag) = live.set.flag(&age.flag) else {
            continue;
        };
        let Ok(lifecycle) = Lifecycle::from_metadata(flag.metadata) else {
            continue;
        };
        let (age_days, idle_days) = (days_since(&age.created_at, now), days_since(&age.changed_at, now));
        let last_evaluated = live
            .last_evaluated(&age.flag)
            .and_then(|at| chrono::DateTime::from_timestamp(at, 0));
        let unevaluated_days = (now - last_evaluated.unwrap_or(state.flags.started))
            .num_days()
            .max(0) as u32;
        let reasons: Vec<String> = lifecycle
            .stale(age_days, idle_days, idle_limit)
            .into_iter()
            .chain((unevaluated_days > idle_limit).then(|| match last_evaluated {
                Some(_) => format!("not evaluated for {unevaluated_days} days"),
                None => format!("not evaluated since the server started {unevaluated_days} days ago"),
            }))
            .collect();
        if !reasons.is_empty() {
            report.push(json!({
                "key": age.flag,
                "type": lifecycle.kind,
                "expected_lifetime_days": lifecycle.expected_lifetime_days,
                "age_days": age_days,
                "idle_days": idle_days,
                "last_evaluated": last_evaluated.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                "state": flag.state,
                "reason": reasons.join("; "),
            }));
        }
    }
    Ok(Json(json!({ "idle_days": idle_limit, "stale": report })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    name: String,
}

/// A new evaluation key for the environment (admin only); shown once.
pub async fn create_key(
    State(state): State<AppState>,
    Extension(Identity(by)): Extension<Identity>,
    Path((project, environment)): Path<(String, String)>,
    body: JsonBody<NewKey>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body?;
    if by != ADMIN {
        return Err(ApiError::Forbidden(
            "only the admin token can create evaluation keys".into(),
        ));
    }
    check_scope(&state, &project, &environment).await?;
    if !valid_name(&body.name) {
        return Err(ApiError::InvalidRequest(format!(
            "key name '{}' must be 1-64 letters, digits, '-', '_' or '.'",
            body.name
        )));
    }
    let key = state
        .flags
        .create_key(&project, &environment, &body.name, &by)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": body.name, "project": project, "environment": environment, "key": key })),
    ))
}

pub async fn list_keys(
    State(state): State<AppState>,
    Path((project, environment)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let keys: Vec<_> = state
        .engine
        .store()
        .flag_keys()
        .await?
        .into_iter()
        .filter(|k| k.project == project && k.environment == environment)
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    /// RFC 3339.
    at: String,
    change: FlagPatch,
}

/// Schedules a change of one flag (turn on, set a rollout percentage, ...) at a given time.
pub async fn schedule(
    State(state): State<AppState>,
    Extension(Identity(by)): Extension<Identity>,
    Path((project, environment, key)): Path<(String, String, String)>,
    body: JsonBody<NewSchedule>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body?;
    let at = chrono::DateTime::parse_from_rfc3339(&body.at)
        .map_err(|e| {
            ApiError::InvalidRequest(format!(
                "'at' must be an RFC 3339 time such as 2030-01-31T09:00:00Z: {e}"
            ))
        })?
        .with_timezone(&chrono::Utc);
    let id = state
        .flags
        .schedule(&project, &environment, &key, at, &body.change, &by)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "schedule_id": id, "at": at.to_rfc3339() })),
    ))
}

pub async fn list_schedules(
    State(state): State<AppState>,
    Path((project, environment)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let schedules = state
        .engine
        .store()
        .flag_schedules(Some((&project, &environment)), false)
        .await?;
    Ok(Json(json!({ "schedules": schedules })))
}

pub async fn cancel_schedule(
    State(state): State<AppState>,
    Extension(Identity(by)): Extension<Identity>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    state.flags.cancel_schedule(id, &by).await?;
    Ok(Json(json!({ "schedule_id": id, "cancelled": true })))
}

/// Server-sent events: `configuration` (the current version and ETag) first, then one
/// `refetchEvaluation` per change with its diff — OFREP's event-stream name for "evaluate again".
pub async fn stream(
    State(state): State<AppState>,
    Path((project, environment)): Path<(String, String)>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    // Listening first, then reading the current set: no change falls in between.
    let events = state.engine.events().subscribe();
    let env = state.flags.environment(&project, &environment);
    let first = env.live().map_or_else(
        || json!({ "version": 0, "etag": null }),
        |l| json!({ "version": l.version, "etag": l.etag_hex() }),
    );
    let first = SseEvent::default().event("configuration").data(first.to_string());
    let changes = futures_util::stream::unfold((events, env), |(mut events, env)| async move {
        loop {
            let stored = match events.next().await {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::warn!(%error, "flag change stream cannot read the event log");
                    return None;
                }
            };
            let Event::FlagsChanged {
                project,
                environment,
                by,
                changes,
                ..
            } = &stored.event
            else {
                continue;
            };
            if project != &env.project || environment != &env.environment {
                continue;
            }
            // The set was swapped in before the event was told: this is the changed one (or newer).
            let live = env.live()?;
            let notice = Notice {
                kind: "refetchEvaluation",
                version: live.version,
                etag: live.etag_hex(),
                by: by.clone(),
                changes: changes.clone(),
            };
            let event = SseEvent::default()
                .event("refetchEvaluation")
                .data(serde_json::to_string(&notice).expect("notices serialize"));
            return Some((Ok(event), (events, env)));
        }
    });
    let stream = futures_util::StreamExt::chain(futures_util::stream::once(async { Ok(first) }), changes);
    Sse::new(stream).keep_alive(KeepAlive::default())
}
