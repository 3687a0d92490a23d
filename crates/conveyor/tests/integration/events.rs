//! The event stream: every appended event, in order, whoever wrote it (the engine, the API, the
//! flags), resumable from `Last-Event-ID` without a gap.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// Reads server-sent events from `response` until `until` holds for one; returns them all
/// (each as `(id, event, data)`).
async fn read_events(
    response: &mut reqwest::Response,
    until: impl Fn(&str, &Value) -> bool,
) -> Vec<(i64, String, Value)> {
    let mut buffer = String::new();
    let mut seen = Vec::new();
    let read = async {
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name).map(|v| v.trim_start().to_string()))
                };
                let (Some(id), Some(kind), Some(data)) = (field("id:"), field("event:"), field("data:"))
                else {
                    continue;
                };
                let data: Value = serde_json::from_str(&data).unwrap();
                let done = until(&kind, &data);
                seen.push((id.parse().unwrap(), kind, data));
                if done {
                    return;
                }
            }
            let chunk = response.chunk().await.unwrap().expect("the stream stays open");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap_or_else(|_| panic!("the awaited event did not come; saw {seen:?}"));
    seen
}

#[tokio::test]
async fn the_event_stream_carries_every_writer_in_order_and_resumes_without_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo(
        &tmp.path().join("repo"),
        &[(
            "conveyor.yml",
            "name: told\njobs:\n  build:\n    steps: [echo built]\n",
        )],
    );
    let server = Server::start(&tmp.path().join("data"));
    let http = reqwest::Client::new();
    let mut live = http
        .get(format!("{}/api/v1/events/stream", server.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.headers()["content-type"], "text/event-stream");

    // Written by the API (a project), the engine (a run) and the flags.
    server.add_project("told", &repo).await;
    let run_id = server.trigger("told").await;
    assert_eq!(server.finished_run(run_id).await["status"], "success");
    let flags = json!({ "flags": { "banner": { "state": "ENABLED", "variants": { "on": true, "off": false }, "defaultVariant": "on" } } });
    let (status, body) = server
        .request(
            reqwest::Method::PUT,
            "/api/v1/projects/told/environments/production/flags",
            Some(flags),
            true,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let seen = read_events(&mut live, |kind, _| kind == "flags_changed").await;
    let kinds: Vec<&str> = seen.iter().map(|(_, kind, _)| kind.as_str()).collect();
    for kind in [
        "project_added",
        "run_created",
        "job_started",
        "run_finished",
        "flags_changed",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    // In order, none left out, each event's data as `GET /api/v1/events` shows it.
    let first = seen[0].0;
    assert!(
        seen.iter()
            .enumerate()
            .all(|(i, (id, _, _))| *id == first + i as i64),
        "{seen:?}"
    );
    let listed = server
        .get(&format!("/api/v1/events?after={}&limit=1000", first - 1))
        .await;
    let listed: Vec<Value> = listed["events"].as_array().unwrap()[..seen.len()].to_vec();
    assert_eq!(
        seen.iter().map(|(_, _, data)| data.clone()).collect::<Vec<_>>(),
        listed
    );

    // A reconnecting client names the last event it saw and gets the rest, from the log.
    let middle = seen[seen.len() / 2].0;
    let mut resumed = http
        .get(format!("{}/api/v1/events/stream", server.base))
        .bearer_auth(TOKEN)
        .header("Last-Event-ID", middle.to_string())
        .send()
        .await
        .unwrap();
    let last = seen.last().unwrap().0;
    let replayed = read_events(&mut resumed, |_, data| data["seq"] == last).await;
    assert_eq!(replayed.first().unwrap().0, middle + 1);
    assert_eq!(replayed.len() as i64, last - middle);

    let (status, body) = server
        .request(reqwest::Method::GET, "/api/v1/events/stream?after=x", None, true)
        .await;
    assert_eq!(status, 400, "{body}");
}
