//! Flags as managed data under `/api/v1/projects/{p}/environments/{e}/flags`: list, get,
//! replace (flagd JSON), change one flag, remove, export, history, stale report, evaluation
//! keys, scheduled changes and a server-sent event stream of changes. All behind a token; who
//! changed what is the token's name in the `flags_changed` event.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use conveyor_api::{
    ErrorBody, FlagDetail, FlagHistory, FlagHistoryEntry, FlagKeyList, FlagLifecycle, FlagList, FlagSummary,
    FlagsChanged, KeyCreated, LimitQuery, NewKey, NewSchedule, ScheduleCancelled, ScheduleCreated,
    ScheduleList, StaleFlag, StaleQuery, StaleReport,
};
use conveyor_flags::{FlagInfo, FlagPatch, Lifecycle};
use conveyor_store::Event;
use futures_util::Stream;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::extract::{Body, Params, Q};
use crate::flags::{MAX_DEFINITION_BYTES, Notice, no_flags};
use crate::{ApiError, AppState, api::valid_name};

type ApiResult<T> = Result<T, ApiError>;

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

/// A unit enum's serde name (`kill-switch`, `boolean`).
fn name_of(value: impl serde::Serialize) -> Option<String> {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
}

fn lifecycle(lifecycle: Lifecycle) -> FlagLifecycle {
    FlagLifecycle {
        kind: lifecycle.kind.and_then(name_of),
        expected_lifetime_days: lifecycle.expected_lifetime_days,
    }
}

fn flag_summary(flag: &FlagInfo<'_>) -> FlagSummary {
    FlagSummary {
        key: flag.key.to_string(),
        state: flag.state,
        default_variant: flag.default_variant.map(String::from),
        variants: flag.variants.iter().map(|v| v.to_string()).collect(),
        variant_type: flag.variant_type.and_then(name_of),
        metadata: flag.metadata.clone().into_iter().collect(),
        lifecycle: Lifecycle::from_metadata(flag.metadata).ok().map(lifecycle),
    }
}

pub(crate) fn live(
    state: &AppState,
    project: &str,
    environment: &str,
) -> ApiResult<std::sync::Arc<crate::flags::Live>> {
    Ok(state
        .flags
        .environment(project, environment)
        .live()
        .ok_or_else(|| no_flags(project, environment))?)
}

#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/flags", tag = "flags", params(("project" = String, Path), ("environment" = String, Path)),
    responses((status = 200, description = "The environment's flags", body = FlagList)))]
pub async fn list(
    State(state): State<AppState>,
    Params((project, environment)): Params<(String, String)>,
) -> ApiResult<Json<FlagList>> {
    let live = live(&state, &project, &environment)?;
    Ok(Json(FlagList {
        project,
        environment,
        version: live.version,
        etag: live.etag_hex(),
        flags: live.set.flags().map(|f| flag_summary(&f)).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/flags/{key}", tag = "flags", params(("project" = String, Path), ("environment" = String, Path), ("key" = String, Path)),
    responses((status = 200, description = "The flag and its definition", body = FlagDetail)))]
pub async fn get_flag(
    State(state): State<AppState>,
    Params((project, environment, key)): Params<(String, String, String)>,
) -> ApiResult<Json<FlagDetail>> {
    let live = live(&state, &project, &environment)?;
    let flag = live.set.flag(&key).ok_or_else(|| {
        ApiError::NotFound(format!("flag '{key}' does not exist in {project}/{environment}"))
    })?;
    Ok(Json(FlagDetail {
        flag: flag_summary(&flag),
        definition: live.set.to_json()["flags"][&key].clone(),
        version: live.version,
    }))
}

/// The definition exactly as flagd reads it.
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/flags/export", tag = "flags", params(("project" = String, Path), ("environment" = String, Path)),
    responses((status = 200, description = "flagd JSON", body = Object)))]
pub async fn export(
    State(state): State<AppState>,
    Params((project, environment)): Params<(String, String)>,
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
#[utoipa::path(put, path = "/api/v1/projects/{project}/environments/{environment}/flags", tag = "flags", params(("project" = String, Path), ("environment" = String, Path)),
    request_body(content = Object, description = "A flagd definition: `{\"flags\": {...}}`"),
    responses((status = 200, description = "Replaced", body = FlagsChanged),
        (status = 422, description = "The definition is invalid", body = ErrorBody)))]
pub async fn replace(
    State(state): State<AppState>,
    Extension(Caller { user: by, .. }): Extension<Caller>,
    Params((project, environment)): Params<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<FlagsChanged>> {
    check_scope(&state, &project, &environment).await?;
    let body = body?;
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
    Ok(Json(changed))
}

/// Changes one flag: `{"state": "DISABLED"}`, `{"defaultVariant": "on"}`,
/// `{"fractional": [["on", 25], ["off", 75]]}` or `{"definition": {...}}` (adds it if new).
#[utoipa::path(patch, path = "/api/v1/projects/{project}/environments/{environment}/flags/{key}", tag = "flags", params(("project" = String, Path), ("environment" = String, Path), ("key" = String, Path)),
    request_body = FlagPatch,
    responses((status = 200, description = "Changed", body = FlagsChanged),
        (status = 422, description = "The change makes the definition invalid", body = ErrorBody)))]
pub async fn patch_flag(
    State(state): State<AppState>,
    Extension(Caller { user: by, .. }): Extension<Caller>,
    Params((project, environment, key)): Params<(String, String, String)>,
    Body(patch): Body<FlagPatch>,
) -> ApiResult<Json<FlagsChanged>> {
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
    Ok(Json(changed))
}

#[utoipa::path(delete, path = "/api/v1/projects/{project}/environments/{environment}/flags/{key}", tag = "flags", params(("project" = String, Path), ("environment" = String, Path), ("key" = String, Path)),
    responses((status = 200, description = "Removed", body = FlagsChanged),
        (status = 422, description = "Removing it makes the definition invalid", body = ErrorBody)))]
pub async fn remove_flag(
    State(state): State<AppState>,
    Extension(Caller { user: by, .. }): Extension<Caller>,
    Params((project, environment, key)): Params<(String, String, String)>,
) -> ApiResult<Json<FlagsChanged>> {
    live(&state, &project, &environment)?;
    let changed = state.flags.remove(&project, &environment, &key, &by).await?;
    Ok(Json(changed))
}

/// Changes, keys and schedules of an environment, newest first: who, when, what.
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/flags/history", tag = "flags", params(("project" = String, Path), ("environment" = String, Path), LimitQuery),
    responses((status = 200, description = "Newest first", body = FlagHistory)))]
pub async fn history(
    State(state): State<AppState>,
    Params((project, environment)): Params<(String, String)>,
    Q(q): Q<LimitQuery>,
) -> ApiResult<Json<FlagHistory>> {
    let limit = q.get();
    let events = state
        .engine
        .store()
        .flag_history(&project, &environment, limit)
        .await?;
    let history = events
        .into_iter()
        .map(|e| {
            let mut entry = json!(e.event);
            if let Some(map) = entry.as_object_mut() {
                // The definition is in `export`; history shows the diff. Key hashes stay inside.
                map.remove("definition");
                map.remove("hash");
                map.insert("seq".into(), json!(e.seq));
                map.insert("at".into(), json!(e.at));
            }
            serde_json::from_value::<FlagHistoryEntry>(entry)
                .map_err(|error| ApiError::Internal(format!("flag event {}: {error}", e.seq)))
        })
        .collect::<ApiResult<_>>()?;
    Ok(Json(FlagHistory { history }))
}

fn days_since(at: &str, now: chrono::DateTime<chrono::Utc>) -> u32 {
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|t| (now - t.with_timezone(&chrono::Utc)).num_days().max(0) as u32)
        .unwrap_or(0)
}

/// Flags past their expected lifetime (by `type` / `expectedLifetimeDays`), unchanged for longer
/// than `idle_days`, or not evaluated for longer than `idle_days` (evaluations are counted since
/// the server started: code that no longer asks for a flag leaves it dead).
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/flags/stale", tag = "flags", params(("project" = String, Path), ("environment" = String, Path), StaleQuery),
    responses((status = 200, description = "Stale flags, with why", body = StaleReport)))]
pub async fn stale(
    State(state): State<AppState>,
    Params((project, environment)): Params<(String, String)>,
    Q(q): Q<StaleQuery>,
) -> ApiResult<Json<StaleReport>> {
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
            report.push(StaleFlag {
                key: age.flag,
                kind: lifecycle.kind.and_then(name_of),
                expected_lifetime_days: lifecycle.expected_lifetime_days,
                age_days,
                idle_days,
                last_evaluated,
                state: flag.state,
                reason: reasons.join("; "),
            });
        }
    }
    Ok(Json(StaleReport {
        idle_days: idle_limit,
        stale: report,
    }))
}

/// A new evaluation key for the environment (maintainers); shown once.
#[utoipa::path(post, path = "/api/v1/projects/{project}/environments/{environment}/flags/keys", tag = "flags", params(("project" = String, Path), ("environment" = String, Path)),
    request_body = NewKey,
    responses((status = 201, description = "The key, shown once", body = KeyCreated),
        (status = 403, description = "Not a maintainer of the project", body = ErrorBody)))]
pub async fn create_key(
    State(state): State<AppState>,
    Extension(Caller { user: by, .. }): Extension<Caller>,
    Params((project, environment)): Params<(String, String)>,
    Body(body): Body<NewKey>,
) -> ApiResult<(StatusCode, Json<KeyCreated>)> {
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
        Json(KeyCreated {
            name: body.name,
            project,
            environment,
            key,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/flags/keys", tag = "flags", params(("project" = String, Path), ("environment" = String, Path)),
    responses((status = 200, description = "The environment's evaluation keys (hashes only)", body = FlagKeyList)))]
pub async fn list_keys(
    State(state): State<AppState>,
    Params((project, environment)): Params<(String, String)>,
) -> ApiResult<Json<FlagKeyList>> {
    let keys: Vec<_> = state
        .engine
        .store()
        .flag_keys()
        .await?
        .into_iter()
        .filter(|k| k.project == project && k.environment == environment)
        .collect();
    Ok(Json(FlagKeyList { keys }))
}

/// Schedules a change of one flag (turn on, set a rollout percentage, ...) at a given time.
#[utoipa::path(post, path = "/api/v1/projects/{project}/environments/{environment}/flags/{key}/schedule", tag = "flags", params(("project" = String, Path), ("environment" = String, Path), ("key" = String, Path)),
    request_body = NewSchedule,
    responses((status = 201, description = "Scheduled", body = ScheduleCreated),
        (status = 422, description = "The change is invalid", body = ErrorBody)))]
pub async fn schedule(
    State(state): State<AppState>,
    Extension(Caller { user: by, .. }): Extension<Caller>,
    Params((project, environment, key)): Params<(String, String, String)>,
    Body(body): Body<NewSchedule>,
) -> ApiResult<(StatusCode, Json<ScheduleCreated>)> {
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
    Ok((StatusCode::CREATED, Json(ScheduleCreated { schedule_id: id, at })))
}

#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/flags/schedules", tag = "flags", params(("project" = String, Path), ("environment" = String, Path)),
    responses((status = 200, description = "Pending scheduled changes", body = ScheduleList)))]
pub async fn list_schedules(
    State(state): State<AppState>,
    Params((project, environment)): Params<(String, String)>,
) -> ApiResult<Json<ScheduleList>> {
    let schedules = state
        .engine
        .store()
        .flag_schedules(Some((&project, &environment)), false)
        .await?;
    Ok(Json(ScheduleList { schedules }))
}

#[utoipa::path(delete, path = "/api/v1/flag-schedules/{id}", tag = "flags", params(("id" = i64, Path)),
    responses((status = 200, description = "Cancelled", body = ScheduleCancelled)))]
pub async fn cancel_schedule(
    State(state): State<AppState>,
    Extension(Caller { user: by, .. }): Extension<Caller>,
    Params(id): Params<i64>,
) -> ApiResult<Json<ScheduleCancelled>> {
    state.flags.cancel_schedule(id, &by).await?;
    Ok(Json(ScheduleCancelled {
        schedule_id: id,
        cancelled: true,
    }))
}

/// Server-sent events: `configuration` (the current version and ETag) first, then one
/// `refetchEvaluation` per change with its diff — OFREP's event-stream name for "evaluate again".
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/flags/stream", tag = "flags", params(("project" = String, Path), ("environment" = String, Path)),
    responses((status = 200, description = "Server-sent events: `configuration`, then `refetchEvaluation` per change",
        content_type = "text/event-stream", body = String)))]
pub async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<crate::auth::Scoped>,
    Params((project, environment)): Params<(String, String)>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let permit = state.auth.open_stream(&caller)?;
    // Listening first, then reading the current set: no change falls in between.
    let events = state.engine.events().subscribe();
    let env = state.flags.environment(&project, &environment);
    let first = env.live().map_or_else(
        || json!({ "version": 0, "etag": null }),
        |l| json!({ "version": l.version, "etag": l.etag_hex() }),
    );
    let first = SseEvent::default().event("configuration").data(first.to_string());
    let flags = state.flags.clone();
    let changes = futures_util::stream::unfold((events, env, flags), |(mut events, env, flags)| async move {
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
            // Another server's change is loaded (`Flags::follow`) before clients are told to
            // evaluate again; this server's own was swapped in before the event was told.
            flags.caught_up(stored.seq).await;
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
            return Some((Ok(event), (events, env, flags)));
        }
    });
    let stream = futures_util::StreamExt::chain(futures_util::stream::once(async { Ok(first) }), changes);
    Ok(Sse::new(permit.hold(stream, state, caller, scope)).keep_alive(KeepAlive::default()))
}
