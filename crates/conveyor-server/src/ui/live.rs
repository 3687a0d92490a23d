//! `/live`: what the pages listen to. One `change` event per appended event the caller may read,
//! carrying only its topics (`project:shop`, `run:5`, `deployment:7`), so a page knows whether
//! to fetch itself again; the events' contents stay behind the pages' own checks.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;

use super::PageError;
use crate::auth::{Action, Caller, Scoped};
use crate::{AppState, api};

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
                if !self.runs.contains_key(&run) {
                    let found = store.run(run).await.ok().flatten().map(|r| r.project);
                    self.runs.insert(run, found);
                }
                project = self.runs[&run].clone();
            }
        }
        if let Some(deployment) = event["deployment_id"].as_i64() {
            topics.push(format!("deployment:{deployment}"));
            if project.is_none() {
                if !self.deployments.contains_key(&deployment) {
                    let found = store.deployment(deployment).await.ok().flatten().map(|d| d.project);
                    self.deployments.insert(deployment, found);
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

pub async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<Scoped>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, PageError> {
    let permit = state.auth.open_stream(&caller)?;
    let events = state.engine.events().subscribe();
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
    Ok(Sse::new(permit.hold(stream, state, caller, scope)).keep_alive(KeepAlive::default()))
}
