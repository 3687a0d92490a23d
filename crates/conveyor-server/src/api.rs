//! Request handlers. Each turns HTTP into one call on the engine or the store.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use conveyor_store::logs::LogOf;

use crate::{ApiError, AppState, triggers};

type ApiResult<T> = Result<T, ApiError>;

/// Bodies are capped well below anything a legitimate request needs.
const MAX_NAME_LEN: usize = 64;

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !name.starts_with('.')
}

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(state): State<AppState>) -> ApiResult<&'static str> {
    state.engine.store().projects().await?;
    Ok("ready")
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::OPENAPI).into_response()
}

// === projects ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddProject {
    name: String,
    /// Git URL or local path.
    source: String,
    #[serde(default)]
    poll_seconds: Option<u64>,
}

pub async fn add_project(
    State(state): State<AppState>,
    body: Result<Json<AddProject>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body?;
    if !valid_name(&body.name) {
        return Err(ApiError::InvalidRequest(format!(
            "project name '{}' must be 1-{MAX_NAME_LEN} characters of letters, digits, '-', '_' or '.'",
            body.name
        )));
    }
    let poll_seconds = body.poll_seconds.unwrap_or(60);
    if !(1..=86_400).contains(&poll_seconds) {
        return Err(ApiError::InvalidRequest(
            "poll_seconds must be between 1 and 86400".into(),
        ));
    }
    let store = state.engine.store();
    if store.project(&body.name).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "project '{}' already exists",
            body.name
        )));
    }
    // Check the source is reachable before accepting it.
    let mirror = triggers::mirror_path(&state.engine, &body.name);
    conveyor_engine::source::sync_mirror(&body.source, &mirror).await?;
    let heads = conveyor_engine::source::branches(&mirror)
        .await?
        .into_iter()
        .collect();
    state
        .engine
        .events()
        .append(conveyor_store::Event::ProjectAdded {
            project: body.name.clone(),
            source_uri: body.source,
            poll_seconds,
            heads,
        })
        .await?;
    let project = store
        .project(&body.name)
        .await?
        .ok_or_else(|| ApiError::Internal("project vanished".into()))?;
    Ok((StatusCode::CREATED, Json(json!(project))))
}

pub async fn list_projects(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(
        json!({ "projects": state.engine.store().projects().await? }),
    ))
}

async fn find_project(state: &AppState, name: &str) -> ApiResult<conveyor_store::Project> {
    state
        .engine
        .store()
        .project(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("project '{name}' does not exist")))
}

pub async fn get_project(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(json!(find_project(&state, &name).await?)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TriggerRun {
    branch: Option<String>,
    commit: Option<String>,
}

pub async fn trigger_run(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Option<Json<TriggerRun>>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let project = find_project(&state, &name).await?;
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let branch = match body.branch {
        Some(b) => b,
        None => triggers::default_branch(&triggers::mirror_path(&state.engine, &name)).await,
    };
    if branch.is_empty() || branch.len() > 255 || branch.starts_with('-') {
        return Err(ApiError::InvalidRequest(format!(
            "'{branch}' is not a branch name"
        )));
    }
    let started =
        triggers::trigger(&state.engine, &project, &branch, body.commit.as_deref(), "manual").await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "run_id": started.run_id, "commit": started.commit, "branch": branch })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSecret {
    value: String,
}

pub async fn set_secret(
    State(state): State<AppState>,
    Path((project, name)): Path<(String, String)>,
    body: Result<Json<SetSecret>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(body) = body?;
    find_project(&state, &project).await?;
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if !valid {
        return Err(ApiError::InvalidRequest(format!(
            "secret name '{name}' must be letters, digits and '_', not starting with a digit"
        )));
    }
    if body.value.len() > 64 * 1024 {
        return Err(ApiError::InvalidRequest(
            "secret values are limited to 64 KiB".into(),
        ));
    }
    state
        .engine
        .events()
        .set_secret(&project, &name, &body.value)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// === runs ===

#[derive(Deserialize)]
pub struct ListQuery {
    project: Option<String>,
    limit: Option<i64>,
}

pub async fn list_runs(State(state): State<AppState>, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    let runs = state
        .engine
        .store()
        .runs(q.project.as_deref(), q.limit.unwrap_or(50).clamp(1, 1000))
        .await?;
    Ok(Json(json!({ "runs": runs })))
}

async fn find_run(state: &AppState, id: i64) -> ApiResult<conveyor_store::RunView> {
    state
        .engine
        .store()
        .run(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {id} does not exist")))
}

pub async fn get_run(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    let run = find_run(&state, id).await?;
    let release = state.engine.store().release_of_run(id).await?.map(|r| r.id);
    let mut body = json!(run);
    body["release_id"] = json!(release);
    Ok(Json(body))
}

pub async fn cancel_run(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    let run = find_run(&state, id).await?;
    if run.status != "running" {
        return Err(ApiError::Conflict(format!(
            "run {id} already ended ({})",
            run.status
        )));
    }
    let cancelled = state.engine.cancel(id, "cancelled through the API").await?;
    Ok(Json(json!({ "run_id": id, "cancelling": cancelled })))
}

#[derive(Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    after: u64,
}

pub async fn run_logs(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<Value>> {
    find_run(&state, id).await?;
    let (lines, next) = state
        .engine
        .data()
        .logs
        .read_from(LogOf::Run(id), q.after)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(json!({ "lines": lines, "next": next })))
}

/// Server-sent events: one `line` event per log line as it is written, then `end` with the run's
/// status once it has finished and everything was sent.
pub async fn stream_logs(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    find_run(&state, id).await?;
    struct Cursor {
        state: AppState,
        offset: u64,
        pending: std::collections::VecDeque<SseEvent>,
        done: bool,
    }
    let cursor = Cursor {
        state,
        offset: q.after,
        pending: Default::default(),
        done: false,
    };
    let stream = futures_util::stream::unfold(cursor, move |mut c| async move {
        loop {
            if let Some(event) = c.pending.pop_front() {
                return Some((Ok(event), c));
            }
            if c.done {
                return None;
            }
            // Read the status first: lines written before a run ends are all on disk by then.
            let status = match c.state.engine.store().run(id).await {
                Ok(Some(run)) => run.status,
                _ => "unknown".into(),
            };
            let (lines, next) = c
                .state
                .engine
                .data()
                .logs
                .read_from(LogOf::Run(id), c.offset)
                .unwrap_or((Vec::new(), c.offset));
            c.offset = next;
            for line in lines {
                let data = serde_json::to_string(&line).expect("log lines serialize");
                c.pending
                    .push_back(SseEvent::default().event("line").id(next.to_string()).data(data));
            }
            if status != "running" && c.pending.is_empty() {
                c.done = true;
                c.pending.push_back(
                    SseEvent::default()
                        .event("end")
                        .data(json!({ "status": status }).to_string()),
                );
                continue;
            }
            if c.pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

// === releases ===

pub async fn list_releases(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let releases = state
        .engine
        .store()
        .releases(q.project.as_deref(), q.limit.unwrap_or(50).clamp(1, 1000))
        .await?;
    Ok(Json(json!({ "releases": releases })))
}

async fn find_release(state: &AppState, id: i64) -> ApiResult<conveyor_store::Release> {
    state
        .engine
        .store()
        .release(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("release {id} does not exist")))
}

pub async fn get_release(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    Ok(Json(json!(find_release(&state, id).await?)))
}

/// Streams an artifact's bytes from the store, as stored (the client checks the digest).
pub async fn get_artifact(
    State(state): State<AppState>,
    Path((id, path)): Path<(i64, String)>,
) -> ApiResult<Response> {
    let release = find_release(&state, id).await?;
    let artifact = release
        .artifacts
        .iter()
        .find(|a| a.path == path)
        .ok_or_else(|| ApiError::NotFound(format!("release {id} has no artifact '{path}'")))?;
    let blob = state
        .engine
        .data()
        .cas
        .path(&artifact.digest)
        .ok_or_else(|| ApiError::Internal(format!("bad digest {}", artifact.digest)))?;
    let file = tokio::fs::File::open(&blob)
        .await
        .map_err(|e| ApiError::Internal(format!("artifact blob {}: {e}", artifact.digest)))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}

pub async fn signing_key(State(state): State<AppState>) -> Json<Value> {
    let key = state.engine.data().signer.public();
    Json(json!({ "key_id": key.key_id(), "algorithm": "ed25519", "public_key": key.to_hex() }))
}

// === audit and events ===

pub async fn audit_verify(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let (events, problems) = state.engine.store().audit().await?;
    Ok(Json(json!({
        "events": events,
        "intact": problems.is_empty(),
        "problems": problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    after: i64,
    limit: Option<i64>,
}

pub async fn list_events(
    State(state): State<AppState>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<Value>> {
    let events = state
        .engine
        .store()
        .events(q.after, q.limit.unwrap_or(100).clamp(1, 1000))
        .await?;
    Ok(Json(json!({ "events": events })))
}

#[derive(Deserialize)]
pub struct StreamQuery {
    /// Replay the events after this sequence number first (default: only new ones).
    after: Option<i64>,
}

/// Server-sent events: one per appended event, in order, `id` its sequence number and `event`
/// its kind, the data shaped as in `GET /api/v1/events`. A client that reconnects with
/// `Last-Event-ID` (or `?after=`) misses nothing; a slow one is caught up from the log.
pub async fn stream_events(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Query(q): Query<StreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let resume = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::InvalidRequest("Last-Event-ID must be an event's sequence number".into())
                })
        })
        .transpose()?;
    let log = state.engine.events();
    let events = match resume.or(q.after) {
        Some(after) => log.subscribe_after(after.max(0)),
        None => log.subscribe(),
    };
    let stream = futures_util::stream::unfold(events, |mut events| async move {
        match events.next().await {
            Ok(stored) => {
                let event = SseEvent::default()
                    .id(stored.seq.to_string())
                    .event(stored.event.kind())
                    .data(serde_json::to_string(&*stored).expect("events serialize"));
                Some((Ok(event), events))
            }
            Err(error) => {
                tracing::warn!(%error, "event stream cannot read the event log");
                None
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Validates a `conveyor.yml` sent as the request body.
pub async fn validate(body: String) -> Json<Value> {
    match conveyor_spec::parse("conveyor.yml", &body) {
        Ok(_) => Json(json!({ "valid": true, "errors": [] })),
        Err(errors) => Json(json!({
            "valid": false,
            "errors": errors.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })),
    }
}
