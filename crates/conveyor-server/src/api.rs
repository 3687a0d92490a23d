//! Request handlers. Each turns HTTP into one call on the engine or the store.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::extract::rejection::StringRejection;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use conveyor_api::{
    AddProject, AuditReport, ErrorBody, EventList, EventRecord, EventStreamQuery, EventsQuery, LeaseView,
    ListQuery, LogPage, LogQuery, Project, ProjectList, Readiness, Release, ReleaseList, RunCancelled,
    RunDetail, RunList, RunStarted, RunStatus, SetSecret, SigningKey, TriggerRun, Validation,
};
use futures_util::Stream;

use conveyor_store::logs::LogOf;

use crate::auth::{Action, Caller, Scoped};
use crate::extract::{Body, Params, Q};
use crate::{ApiError, AppState, triggers};

type ApiResult<T> = Result<T, ApiError>;

/// Bodies are capped well below anything a legitimate request needs.
const MAX_NAME_LEN: usize = 64;
pub(crate) const MAX_SECRET_BYTES: usize = 64 * 1024;

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !name.starts_with('.')
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", content_type = "text/plain", body = String, example = "ok")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the store answers. The body also says how steps and instances are isolated from
/// the server, so that running without isolation is never silent.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready", body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Readiness>> {
    state.engine.store().projects().await?;
    Ok(Json(Readiness {
        ready: true,
        isolation: state.engine.sandbox().describe().to_string(),
    }))
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::json(),
    )
        .into_response()
}

// === projects ===

/// Registers a repository; its source must be reachable.
#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", request_body = AddProject,
    responses((status = 201, description = "Added", body = Project),
        (status = 409, description = "A project of that name exists", body = ErrorBody),
        (status = 502, description = "The source cannot be fetched", body = ErrorBody)))]
pub async fn add_project(
    State(state): State<AppState>,
    Body(body): Body<AddProject>,
) -> ApiResult<(StatusCode, Json<Project>)> {
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
    let remote = conveyor_engine::source::Remote::parse(&body.source);
    conveyor_engine::source::sync_mirror(&remote, &mirror).await?;
    let heads = conveyor_engine::source::branches(&mirror)
        .await?
        .into_iter()
        .collect();
    // The credentials go apart, so the log and all that is folded from it (views, runs, signed
    // provenance) only ever hold the URL without them, and a restarted server still fetches.
    let events = state.engine.events();
    events
        .set_source_credentials(&body.name, remote.credentials.as_deref())
        .await?;
    events
        .append(conveyor_store::Event::ProjectAdded {
            project: body.name.clone(),
            source_uri: remote.url,
            poll_seconds,
            heads,
        })
        .await?;
    let project = store
        .project(&body.name)
        .await?
        .ok_or_else(|| ApiError::Internal("project vanished".into()))?;
    Ok((StatusCode::CREATED, Json(project)))
}

#[utoipa::path(get, path = "/api/v1/projects", tag = "projects",
    responses((status = 200, description = "Every project, by name", body = ProjectList)))]
pub async fn list_projects(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<ProjectList>> {
    let mut projects = state.engine.store().projects().await?;
    projects.retain(|p| caller.may(Action::Read, Some(&p.name), None));
    Ok(Json(ProjectList {
        projects: projects.into_iter().map(shown).collect(),
    }))
}

/// A project as the API shows it: a project registered before credentials were kept apart has
/// them in its stored URL still.
fn shown(mut project: Project) -> Project {
    project.source_uri = conveyor_engine::source::redacted(&project.source_uri);
    project
}

async fn find_project(state: &AppState, name: &str) -> ApiResult<Project> {
    state
        .engine
        .store()
        .project(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("project '{name}' does not exist")))
}

#[utoipa::path(get, path = "/api/v1/projects/{project}", tag = "projects", params(("project" = String, Path)),
    responses((status = 200, description = "The project", body = Project)))]
pub async fn get_project(
    State(state): State<AppState>,
    Params(name): Params<String>,
) -> ApiResult<Json<Project>> {
    Ok(Json(shown(find_project(&state, &name).await?)))
}

/// Starts a run of a branch's head (or a given commit). The body is optional.
#[utoipa::path(post, path = "/api/v1/projects/{project}/runs", tag = "runs", params(("project" = String, Path)),
    request_body(content = Option<TriggerRun>),
    responses((status = 201, description = "Started", body = RunStarted),
        (status = 422, description = "conveyor.yml is invalid", body = ErrorBody),
        (status = 502, description = "The source cannot be fetched", body = ErrorBody)))]
pub async fn trigger_run(
    State(state): State<AppState>,
    Params(name): Params<String>,
    body: Option<Body<TriggerRun>>,
) -> ApiResult<(StatusCode, Json<RunStarted>)> {
    let project = find_project(&state, &name).await?;
    let body = body.map(|Body(b)| b).unwrap_or_default();
    if let Some(branch) = &body.branch
        && (branch.is_empty() || branch.len() > 255 || branch.starts_with('-'))
    {
        return Err(ApiError::InvalidRequest(format!(
            "'{branch}' is not a branch name"
        )));
    }
    if let Some(commit) = &body.commit
        && (!(4..=64).contains(&commit.len()) || !commit.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::InvalidRequest(format!(
            "'{commit}' is not a commit id (4 to 64 hexadecimal digits)"
        )));
    }
    let started = triggers::trigger(
        &state.engine,
        &project,
        body.branch.as_deref(),
        body.commit.as_deref(),
        "manual",
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(RunStarted {
            run_id: started.run_id,
            commit: started.commit,
            branch: started.branch,
        }),
    ))
}

/// Sets a secret's value (masked in logs; the event log records only that it changed).
#[utoipa::path(put, path = "/api/v1/projects/{project}/secrets/{name}", tag = "projects",
    params(("project" = String, Path), ("name" = String, Path)), request_body = SetSecret,
    responses((status = 204, description = "Set")))]
pub async fn set_secret(
    State(state): State<AppState>,
    Params((project, name)): Params<(String, String)>,
    Body(body): Body<SetSecret>,
) -> ApiResult<StatusCode> {
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
    if body.value.len() > MAX_SECRET_BYTES {
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

/// Newest first, without their jobs.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(ListQuery),
    responses((status = 200, description = "Runs", body = RunList)))]
pub async fn list_runs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Q(q): Q<ListQuery>,
) -> ApiResult<Json<RunList>> {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let store = state.engine.store();
    let runs = readable(
        &caller,
        q.project,
        limit,
        |project| async move { store.runs(project.as_deref(), limit).await },
        |r| r.id,
    )
    .await?;
    let runs = runs
        .into_iter()
        .map(|mut run| {
            run.source_uri = conveyor_engine::source::redacted(&run.source_uri);
            run
        })
        .collect();
    Ok(Json(RunList { runs }))
}

/// A list's newest `limit` items the caller may read: of one project (which it must be allowed
/// to read), of everything, or merged from each project it may read.
async fn readable<T, F, Fut>(
    caller: &Caller,
    project: Option<String>,
    limit: i64,
    of: F,
    id: impl Fn(&T) -> i64,
) -> ApiResult<Vec<T>>
where
    F: Fn(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, conveyor_store::StoreError>>,
{
    if let Some(project) = project {
        caller.require(Action::Read, Some(&project), None)?;
        return Ok(of(Some(project)).await?);
    }
    let Some(projects) = caller.readable_projects() else {
        return Ok(of(None).await?);
    };
    let mut items = Vec::new();
    for project in &projects {
        items.extend(of(Some(project.clone())).await?);
    }
    items.sort_by_key(|item| std::cmp::Reverse(id(item)));
    items.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(items)
}

async fn find_run(state: &AppState, id: i64) -> ApiResult<conveyor_store::RunView> {
    state
        .engine
        .store()
        .run(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {id} does not exist")))
}

/// A run with its jobs, steps and artifacts.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs", params(("id" = i64, Path)),
    responses((status = 200, description = "The run", body = RunDetail)))]
pub async fn get_run(State(state): State<AppState>, Params(id): Params<i64>) -> ApiResult<Json<RunDetail>> {
    let mut run = find_run(&state, id).await?;
    run.source_uri = conveyor_engine::source::redacted(&run.source_uri);
    let release_id = state.engine.store().release_of_run(id).await?.map(|r| r.id);
    Ok(Json(RunDetail { run, release_id }))
}

#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "runs", params(("id" = i64, Path)),
    responses((status = 200, description = "Cancelling", body = RunCancelled),
        (status = 409, description = "The run already ended", body = ErrorBody)))]
pub async fn cancel_run(
    State(state): State<AppState>,
    Params(id): Params<i64>,
) -> ApiResult<Json<RunCancelled>> {
    let run = find_run(&state, id).await?;
    if run.status != RunStatus::Running {
        return Err(ApiError::Conflict(format!(
            "run {id} already ended ({})",
            run.status
        )));
    }
    let cancelled = state.engine.cancel(id, "cancelled through the API").await?;
    Ok(Json(RunCancelled {
        run_id: id,
        cancelling: cancelled,
    }))
}

/// Log lines from a byte offset on.
#[utoipa::path(get, path = "/api/v1/runs/{id}/logs", tag = "runs", params(("id" = i64, Path), LogQuery),
    responses((status = 200, description = "A page of lines", body = LogPage)))]
pub async fn run_logs(
    State(state): State<AppState>,
    Params(id): Params<i64>,
    Q(q): Q<LogQuery>,
) -> ApiResult<Json<LogPage>> {
    find_run(&state, id).await?;
    let (lines, next) = state
        .engine
        .data()
        .logs
        .read_from(LogOf::Run(id), q.after)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(LogPage { lines, next }))
}

/// Server-sent events: one `line` event per log line as it is written, then `end` with the run's
/// status once it has finished and everything was sent.
#[utoipa::path(get, path = "/api/v1/runs/{id}/logs/stream", tag = "runs", params(("id" = i64, Path), LogQuery),
    responses((status = 200, description = "Server-sent events: `line` (a LogLine as JSON) per line, then `end` (a StreamEnd)",
        content_type = "text/event-stream", body = String)))]
pub async fn stream_logs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<Scoped>,
    Params(id): Params<i64>,
    Q(q): Q<LogQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    find_run(&state, id).await?;
    let permit = state.auth.open_stream(&caller)?;
    struct Cursor {
        state: AppState,
        offset: u64,
        pending: std::collections::VecDeque<SseEvent>,
        done: bool,
    }
    let cursor = Cursor {
        state: state.clone(),
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
                // The run cannot be read any more: nothing will end it; stop here.
                Ok(None) | Err(_) => return None,
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
            if status != RunStatus::Running && c.pending.is_empty() {
                c.done = true;
                c.pending.push_back(
                    SseEvent::default().event("end").data(
                        serde_json::to_string(&conveyor_api::StreamEnd { status })
                            .expect("the end event serializes"),
                    ),
                );
                continue;
            }
            if c.pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    Ok(Sse::new(permit.hold(stream, state, caller, scope)).keep_alive(KeepAlive::default()))
}

// === releases ===

/// Newest first.
#[utoipa::path(get, path = "/api/v1/releases", tag = "releases", params(ListQuery),
    responses((status = 200, description = "Releases", body = ReleaseList)))]
pub async fn list_releases(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Q(q): Q<ListQuery>,
) -> ApiResult<Json<ReleaseList>> {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let store = state.engine.store();
    let releases = readable(
        &caller,
        q.project,
        limit,
        |project| async move { store.releases(project.as_deref(), limit).await },
        |r| r.id,
    )
    .await?;
    Ok(Json(ReleaseList { releases }))
}

async fn find_release(state: &AppState, id: i64) -> ApiResult<Release> {
    state
        .engine
        .store()
        .release(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("release {id} does not exist")))
}

/// A release: artifacts, commit and the signed provenance envelope.
#[utoipa::path(get, path = "/api/v1/releases/{id}", tag = "releases", params(("id" = i64, Path)),
    responses((status = 200, description = "The release", body = Release)))]
pub async fn get_release(State(state): State<AppState>, Params(id): Params<i64>) -> ApiResult<Json<Release>> {
    Ok(Json(find_release(&state, id).await?))
}

/// Streams an artifact's bytes from the store, as stored (the client checks the digest).
#[utoipa::path(get, path = "/api/v1/releases/{id}/artifacts/{path}", tag = "releases",
    params(("id" = i64, Path), ("path" = String, Path, description = "The artifact's path, `/`-separated")),
    responses((status = 200, description = "The artifact's bytes", content_type = "application/octet-stream", body = Vec<u8>)))]
pub async fn get_artifact(
    State(state): State<AppState>,
    Params((id, path)): Params<(i64, String)>,
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
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    // A download, never a page of this origin (the web UI serves artifacts with its session).
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CONTENT_DISPOSITION, "attachment"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, "sandbox"),
        ],
        body,
    )
        .into_response())
}

/// The server's release-signing public key, and those rotations retired.
#[utoipa::path(get, path = "/api/v1/keys/signing", tag = "releases",
    responses((status = 200, description = "The key", body = SigningKey)))]
pub async fn signing_key(State(state): State<AppState>) -> Json<SigningKey> {
    let data = state.engine.data();
    let key = data.signer.public();
    Json(SigningKey {
        key_id: key.key_id(),
        algorithm: "ed25519".into(),
        public_key: key.to_hex(),
        retired: data
            .retired
            .iter()
            .map(conveyor_attest::PublicKey::to_hex)
            .collect(),
    })
}

// === audit and events ===

/// Who does what among the servers sharing the database: every lease by name, its holder and
/// until when.
#[utoipa::path(get, path = "/api/v1/leases", tag = "audit",
    responses((status = 200, description = "Every lease, by name", body = [LeaseView])))]
pub async fn list_leases(State(state): State<AppState>) -> ApiResult<Json<Vec<LeaseView>>> {
    let now = chrono::Utc::now();
    Ok(Json(
        state
            .engine
            .store()
            .leases()
            .await?
            .into_iter()
            .map(|lease| {
                let expires_at =
                    chrono::DateTime::from_timestamp_millis(lease.expires_ms).unwrap_or_default();
                LeaseView {
                    name: lease.name,
                    holder: lease.holder,
                    live: expires_at > now,
                    expires_at,
                }
            })
            .collect(),
    ))
}

/// Checks the event log's hash chain and its signed checkpoints (the database's and the
/// exported file's), a page of events at a time.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "What the check found", body = AuditReport)))]
pub async fn audit_verify(State(state): State<AppState>) -> ApiResult<Json<AuditReport>> {
    let audit = state.engine.data().audit().await?;
    Ok(Json(AuditReport {
        events: audit.events,
        checkpoints: audit.checkpoints,
        exported: audit.exported,
        intact: audit.problems.is_empty(),
        problems: audit.problems.iter().map(ToString::to_string).collect(),
    }))
}

/// A page of events stops after this many bytes of event data (one event at least), so a
/// page of large pipelines stays bounded; the next page starts after its last `seq`.
const EVENT_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Events of the log, oldest first; token and key hashes are never shown.
#[utoipa::path(get, path = "/api/v1/events", tag = "audit", params(EventsQuery),
    responses((status = 200, description = "Events (a page: at most `limit`, and at most 4 MiB of them)", body = EventList)))]
pub async fn list_events(State(state): State<AppState>, Q(q): Q<EventsQuery>) -> ApiResult<Json<EventList>> {
    let events = state
        .engine
        .store()
        .events(q.after, q.limit.unwrap_or(100).clamp(1, 1000))
        .await?;
    let mut page = Vec::new();
    let mut bytes = 0;
    for e in events {
        let event = event_shown(&e.event);
        bytes += event.to_string().len();
        if bytes > EVENT_PAGE_BYTES && !page.is_empty() {
            break;
        }
        page.push(EventRecord {
            seq: e.seq,
            at: timestamp(&e.at)?,
            event,
        });
    }
    Ok(Json(EventList { events: page }))
}

/// An event as the API shows it: no hashes, and no credentials in a source URL (events from
/// before credentials were kept apart have them in theirs).
pub(crate) fn event_shown(event: &conveyor_store::Event) -> serde_json::Value {
    let mut value = event.shown();
    if let Some(uri) = value.get_mut("source_uri")
        && let Some(text) = uri.as_str()
    {
        *uri = serde_json::Value::String(conveyor_engine::source::redacted(text));
    }
    value
}

/// A stored RFC 3339 time, typed.
pub(crate) fn timestamp(text: &str) -> ApiResult<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| ApiError::Internal(format!("stored time '{text}': {e}")))
}

/// Server-sent events: one per appended event, in order, `id` its sequence number and `event`
/// its kind, the data shaped as in `GET /api/v1/events`. A client that reconnects with
/// `Last-Event-ID` (or `?after=`) misses nothing; a slow one is caught up from the log.
#[utoipa::path(get, path = "/api/v1/events/stream", tag = "audit",
    params(EventStreamQuery, ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event")),
    responses((status = 200, description = "Server-sent events: one per appended event (`id` its sequence number, `event` its kind)",
        content_type = "text/event-stream", body = String)))]
pub async fn stream_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<Scoped>,
    headers: axum::http::HeaderMap,
    Q(q): Q<EventStreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let permit = state.auth.open_stream(&caller)?;
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
                    .data(
                        serde_json::json!({ "seq": stored.seq, "at": stored.at, "event": event_shown(&stored.event) })
                            .to_string(),
                    );
                Some((Ok(event), events))
            }
            Err(error) => {
                tracing::warn!(%error, "event stream cannot read the event log");
                None
            }
        }
    });
    Ok(Sse::new(permit.hold(stream, state, caller, scope)).keep_alive(KeepAlive::default()))
}

/// Validates a `conveyor.yml` sent as the request body.
#[utoipa::path(post, path = "/api/v1/validate", tag = "runs",
    request_body(content = String, content_type = "application/yaml", description = "A conveyor.yml"),
    responses((status = 200, description = "Whether it is valid, and every problem", body = Validation)))]
pub async fn validate(body: Result<String, StringRejection>) -> ApiResult<Json<Validation>> {
    let body = body?;
    Ok(Json(match conveyor_spec::parse("conveyor.yml", &body) {
        Ok(_) => Validation {
            valid: true,
            errors: Vec::new(),
        },
        Err(errors) => Validation {
            valid: false,
            errors: errors.0.iter().map(ToString::to_string).collect(),
        },
    }))
}
