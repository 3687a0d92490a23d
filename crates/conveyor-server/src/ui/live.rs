//! `/live`: what the pages listen to. One `change` event per appended event the caller may read,
//! carrying only its topics (`project:shop`, `run:5`, `deployment:7`), so a page knows whether
//! to fetch itself again; the events' contents stay behind the pages' own checks. The stream ends
//! when the session does (token revoked or expired, user removed); it filters by the grants the
//! caller had when it opened.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::convert::Infallible;

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;

use super::PageError;
use crate::auth::{Action, Caller};
use crate::{AppState, api};

/// Events a stream replays at most before following the log.
const MAX_CATCH_UP: i64 = 1000;

/// Project of each run and deployment seen so far, to place their events without asking the
/// store each time.
#[derive(Default)]
struct Places {
    runs: HashMap<i64, Option<String>>,
    deployments: HashMap<i64, Option<String>>,
}

impl Places {
    /// The topics of `event` and the project it belongs to (None: the server's own, such as a
    /// user added).
    async fn topics(&mut self, state: &AppState, event: &serde_json::Value) -> (Vec<String>, Option<String>) {
        let store = state.engine.store();
        let mut topics = Vec::new();
        let mut project = event["project"].as_str().map(String::from);
        if let Some(run) = event["run_id"].as_i64() {
            topics.push(format!("run:{run}"));
            if project.is_none() {
                if let Entry::Vacant(place) = self.runs.entry(run) {
                    place.insert(store.run(run).await.ok().flatten().map(|r| r.project));
                }
                project = self.runs[&run].clone();
            }
        }
        if let Some(deployment) = event["deployment_id"].as_i64() {
            topics.push(format!("deployment:{deployment}"));
            if project.is_none() {
                if let Entry::Vacant(place) = self.deployments.entry(deployment) {
                    place.insert(
                        store
                            .deployment(deployment)
                            .await
                            .ok()
                            .flatten()
                            .map(|d| d.project),
                    );
                }
                project = self.deployments[&deployment].clone();
            }
        }
        if let Some(p) = &project {
            topics.push(format!("project:{p}"));
        }
        (topics, project)
    }
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct LiveQuery {
    /// Follow from after this event (the page's `data-seq`).
    after: Option<i64>,
}

pub async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(q): axum::extract::Query<LiveQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, PageError> {
    let permit = state.auth.open_stream(&caller)?;
    // A reconnecting browser says where it was; a page, where it was read.
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let log = state.engine.events();
    let events = match resumed.or(q.after) {
        // Never further back than a page's worth of catching up.
        Some(after) => log.subscribe_after(after.clamp(log.head().saturating_sub(MAX_CATCH_UP), log.head())),
        None => log.subscribe(),
    };
    let reader = (events, Places::default(), state.clone(), caller.clone());
    let stream = futures_util::stream::unfold(reader, |(mut events, mut places, state, caller)| async move {
        loop {
            let stored = match events.next().await {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::warn!(%error, "the live stream cannot read the event log");
                    return None;
                }
            };
            let shown = api::event_shown(&stored.event);
            let (topics, project) = places.topics(&state, &shown).await;
            if !caller.may(Action::Read, project.as_deref(), None) {
                continue;
            }
            let event = SseEvent::default()
                .event("change")
                .id(stored.seq.to_string())
                .data(serde_json::json!({ "topics": topics }).to_string());
            return Some((Ok(event), (events, places, state, caller)));
        }
    });
    Ok(Sse::new(permit.hold_while_valid(stream, state, caller)).keep_alive(KeepAlive::default()))
}
