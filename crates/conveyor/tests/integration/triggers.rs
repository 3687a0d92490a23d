//! Cron schedules, concurrency groups, live logs and first-start tokens.

use std::io::BufRead as _;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn a_cron_schedule_starts_runs_on_the_default_branch() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = "name: cron\non:\n  schedule: ['*/2 * * * * *']\njobs:\n  tick:\n    steps: [echo tick]\n";
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", pipeline)]);
    let server = Server::start(&tmp.path().join("data"));
    server.add_project("cron", &repo).await;
    let run = eventually(Duration::from_secs(30), || async {
        let runs = server.get("/api/v1/runs?project=cron").await;
        runs["runs"].as_array().and_then(|r| r.first().cloned())
    })
    .await;
    assert_eq!(
        (run["event"].as_str(), run["branch"].as_str()),
        (Some("schedule"), Some("main"))
    );
}

#[tokio::test]
async fn cancel_in_progress_cancels_the_older_run_of_a_concurrency_group() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = r#"
name: grouped
concurrency: { group: 'deploy-${{ branch }}', cancel_in_progress: true }
jobs:
  deploy:
    steps:
      - run: sleep 300
"#;
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", pipeline)]);
    let server = Server::start(&tmp.path().join("data"));
    server.add_project("grouped", &repo).await;
    let first = server.trigger("grouped").await;
    eventually(Duration::from_secs(30), || async {
        let run = server.get(&format!("/api/v1/runs/{first}")).await;
        (job(&run, "deploy")["status"] == "running").then_some(())
    })
    .await;
    let second = server.trigger("grouped").await;
    let first_run = server.finished_run(first).await;
    assert_eq!(first_run["status"], "cancelled");
    let events = server.get("/api/v1/events?limit=1000").await;
    let superseded = events["events"].as_array().unwrap().iter().any(|e| {
        e["event"]["type"] == "run_cancel_requested"
            && e["event"]["run_id"] == first
            && e["event"]["reason"]
                .as_str()
                .unwrap()
                .contains(&format!("superseded by run {second}"))
    });
    assert!(superseded, "{events}");
    eventually(Duration::from_secs(30), || async {
        let run = server.get(&format!("/api/v1/runs/{second}")).await;
        (job(&run, "deploy")["status"] == "running").then_some(())
    })
    .await;
    server
        .post(&format!("/api/v1/runs/{second}/cancel"), json!({}))
        .await;
    assert_eq!(server.finished_run(second).await["status"], "cancelled");
}

#[tokio::test]
async fn logs_follow_streams_lines_live_until_the_run_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let gate = tmp.path().join("gate");
    let pipeline = format!(
        "name: live\njobs:\n  talk:\n    steps:\n      - run: |\n          echo first line\n          until [ -e {gate} ]; do sleep 0.05; done\n          echo second line\n",
        gate = gate.display()
    );
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", &pipeline)]);
    let server = Server::start_with(&tmp.path().join("data"), UNSANDBOXED);
    server.add_project("live", &repo).await;
    let run_id = server.trigger("live").await;

    let mut follow = command()
        .args(["logs", &run_id.to_string(), "--follow", "--server", &server.base])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    // The first line arrives while the step is still blocked on the gate: it is streamed live.
    let first = lines.next().unwrap().unwrap();
    assert!(first.ends_with("talk │ first line"), "{first}");
    assert!(!gate.exists());
    std::fs::write(&gate, "").unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(rest[0].ends_with("talk │ second line"), "{rest:?}");
    assert_eq!(rest.last().unwrap(), &format!("run {run_id} success"));
    assert!(follow.wait().unwrap().success());
}

#[tokio::test]
async fn first_start_prints_a_generated_admin_token_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let start = || {
        let mut child = command()
            .args(["serve", "--addr", "127.0.0.1:0", "--data"])
            .arg(&data)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut token = None;
        let mut base = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(t) = line.strip_prefix("admin token (shown once — store it now): ") {
                token = Some(t.to_string());
            }
            if let Some(rest) = line.strip_prefix("conveyor listening on ") {
                base = rest.split_whitespace().next().unwrap().to_string();
                break;
            }
        }
        (child, token, base)
    };
    let (mut child, token, base) = start();
    let token = token.expect("a token is printed on first start");
    assert!(token.starts_with("cvy_") && token.len() == 68, "{token}");
    let http = reqwest::Client::new();
    let project = json!({ "name": "x", "source": "/nonexistent" });
    let wrong = http
        .post(format!("{base}/api/v1/projects"))
        .bearer_auth("cvy_wrong")
        .json(&project)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = http
        .post(format!("{base}/api/v1/projects"))
        .bearer_auth(&token)
        .json(&project)
        .send()
        .await
        .unwrap();
    assert_eq!(
        right.status(),
        502,
        "authorised; the source itself is unreachable"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut again, second_token, _) = start();
    assert_eq!(second_token, None, "the token is shown only once");
    again.kill().unwrap();
    again.wait().unwrap();
    let db = std::fs::read(data.join("conveyor.db")).unwrap();
    assert!(
        !db.windows(token.len()).any(|w| w == token.as_bytes()),
        "only the token's hash is stored"
    );
}
