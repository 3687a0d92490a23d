//! Cron schedules, concurrency groups, live logs, first-start tokens, and the truth of what a
//! manual trigger runs (its commit on its branch, no pull-request refs, no credentials shown).

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

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
        .args([
            "logs",
            &run_id.to_string(),
            "--follow",
            "--server",
            &server.base,
            "--token",
            TOKEN,
        ])
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
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(data_args(&data))
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
    assert!(!database_holds(&data, &token), "only the token's hash is stored");
}

// === provenance tells the truth ===

const RELEASING: &str = "name: prov\njobs:\n  build:\n    steps:\n      - run: mkdir -p dist && echo built > dist/app.txt\n    artifacts: [dist/app.txt]\n";

async fn trigger_with(server: &Server, project: &str, body: Value) -> (u16, Value) {
    server
        .request(
            Method::POST,
            &format!("/api/v1/projects/{project}/runs"),
            Some(body),
            true,
        )
        .await
}

async fn read(server: &Server, path: &str) -> Value {
    let (status, body) = server.request(Method::GET, path, None, true).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// The signed statement of the release a successful run made.
async fn statement_of_run(server: &Server, run_id: i64) -> Value {
    let run = eventually(Duration::from_secs(60), || async {
        let run = read(server, &format!("/api/v1/runs/{run_id}")).await;
        (run["status"] != "running").then_some(run)
    })
    .await;
    assert_eq!(run["status"], "success", "{run:#}");
    let release = read(
        server,
        &format!("/api/v1/releases/{}", run["release_id"].as_i64().unwrap()),
    )
    .await;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(release["envelope"]["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

#[tokio::test]
async fn a_manual_run_of_a_commit_not_on_its_branch_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", RELEASING)]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    let on_feature = commit(&repo, &[("feature.txt", "f")], "feature only");
    git(&repo, &["checkout", "-q", "main"]);
    let server = Server::start(&tmp.path().join("data"));
    server.add_project("prov", &repo).await;

    let (status, answer) =
        trigger_with(&server, "prov", json!({ "branch": "main", "commit": on_feature })).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("invalid_request")),
        "{answer}"
    );
    assert_eq!(
        answer["message"],
        format!("commit {on_feature} is not on branch 'main' (its head is {head})")
    );
    let (status, answer) = trigger_with(&server, "prov", json!({ "branch": "nope", "commit": head })).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (404, Some("not_found")),
        "{answer}"
    );
    let runs = read(&server, "/api/v1/runs?project=prov").await;
    assert_eq!(runs["runs"], json!([]), "nothing was started");
}

#[tokio::test]
async fn a_manual_run_of_a_commit_on_its_branch_is_signed_as_that_branch() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", RELEASING)]);
    let older = git(&repo, &["rev-parse", "HEAD"]);
    commit(&repo, &[("README", "newer")], "newer");
    let server = Server::start(&tmp.path().join("data"));
    server.add_project("prov", &repo).await;
    let uri = repo.display().to_string();

    let (status, started) = trigger_with(&server, "prov", json!({ "branch": "main", "commit": older })).await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(
        (started["commit"].as_str(), started["branch"].as_str()),
        (Some(older.as_str()), Some("main"))
    );
    let statement = statement_of_run(&server, started["run_id"].as_i64().unwrap()).await;
    let definition = &statement["predicate"]["buildDefinition"];
    assert_eq!(
        definition["externalParameters"]["source"],
        json!({ "uri": uri, "ref": "refs/heads/main" })
    );
    assert_eq!(
        definition["resolvedDependencies"][0],
        json!({ "uri": format!("git+{uri}@refs/heads/main"), "digest": { "gitCommit": older } })
    );

    // A commit alone is no branch's build: the statement claims no ref.
    let (status, started) = trigger_with(&server, "prov", json!({ "commit": older })).await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["branch"], "");
    let statement = statement_of_run(&server, started["run_id"].as_i64().unwrap()).await;
    let definition = &statement["predicate"]["buildDefinition"];
    assert_eq!(definition["externalParameters"]["source"], json!({ "uri": uri }));
    assert_eq!(
        definition["resolvedDependencies"][0],
        json!({ "uri": format!("git+{uri}"), "digest": { "gitCommit": older } })
    );
}

#[tokio::test]
async fn a_commit_only_in_a_pull_request_ref_is_never_run() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", RELEASING)]);
    let pull = git(
        &repo,
        &["commit-tree", "HEAD^{tree}", "-p", "HEAD", "-m", "someone's PR"],
    );
    git(&repo, &["update-ref", "refs/pull/1/head", &pull]);
    git(&repo, &["update-ref", "refs/merge-requests/2/head", &pull]);
    let server = Server::start(&tmp.path().join("data"));
    server.add_project("prov", &repo).await;
    // Made after the clone too: the fetches leave it out as well.
    let later = git(
        &repo,
        &["commit-tree", "HEAD^{tree}", "-p", "HEAD", "-m", "a later PR"],
    );
    git(&repo, &["update-ref", "refs/pull/3/head", &later]);

    for sha in [&pull, &later] {
        for body in [
            json!({ "branch": "main", "commit": sha }),
            json!({ "commit": sha }),
        ] {
            let (status, answer) = trigger_with(&server, "prov", body.clone()).await;
            assert_eq!(
                (status, answer["code"].as_str()),
                (404, Some("not_found")),
                "{body}: {answer}"
            );
            assert!(
                answer["message"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("commit {sha} does not exist")),
                "{answer}"
            );
        }
    }
    let mirror = server.data.join("repos/prov.git");
    let refs = git(&mirror, &["for-each-ref", "--format=%(refname)"]);
    assert_eq!(refs, "refs/heads/main", "only branches and tags are mirrored");
}

/// Serves `dir` (a repository's `.git`, `update-server-info` done) over git's dumb HTTP protocol
/// as `/repo.git/…`, to `alice:s3cr3t` only; once `down` is set, every request fails with 503.
fn serve_dumb_http(dir: PathBuf, down: Arc<AtomicBool>) -> u16 {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let expected = format!(
        "authorization: basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cr3t")
    )
    .to_lowercase();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_lowercase();
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let path = path.split('?').next().unwrap_or("");
            let file = path.strip_prefix("/repo.git/").map(|p| dir.join(p));
            let (status, body) = if down.load(Ordering::SeqCst) {
                ("503 Service Unavailable", Vec::new())
            } else if !head.lines().any(|l| l.trim() == expected) {
                ("401 Unauthorized", Vec::new())
            } else {
                match file.and_then(|f| std::fs::read(f).ok()) {
                    Some(body) => ("200 OK", body),
                    None => ("404 Not Found", Vec::new()),
                }
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nWWW-Authenticate: Basic realm=\"git\"\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    port
}

#[tokio::test]
async fn source_credentials_are_in_no_view_event_provenance_or_error() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", RELEASING)]);
    git(&repo, &["update-server-info"]);
    let down = Arc::new(AtomicBool::new(false));
    let port = serve_dumb_http(repo.join(".git"), down.clone());
    let shown = format!("http://127.0.0.1:{port}/repo.git");
    let data = tmp.path().join("data");
    let mut server = Server::start(&data);
    server
        .post(
            "/api/v1/projects",
            json!({ "name": "creds", "source": format!("http://alice:s3cr3t@127.0.0.1:{port}/repo.git"), "poll_seconds": 3600 }),
        )
        .await;
    let project = read(&server, "/api/v1/projects/creds").await;
    assert_eq!(project["source_uri"], shown.as_str());

    // The credentials outlive a restart: the new server fetches with them (every request needs
    // them). No new commit: the poller would race the trigger for the mirror with a push run.
    server.kill9();
    let server = Server::start(&data);
    let (status, started) = trigger_with(&server, "creds", json!({ "branch": "main" })).await;
    assert_eq!(status, 201, "{started}");
    let run_id = started["run_id"].as_i64().unwrap();
    let statement = statement_of_run(&server, run_id).await;
    assert_eq!(
        statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]["uri"],
        format!("git+{shown}@refs/heads/main")
    );

    down.store(true, Ordering::SeqCst);
    let (status, failed) = trigger_with(&server, "creds", json!({ "branch": "main" })).await;
    assert_eq!(
        (status, failed["code"].as_str()),
        (502, Some("source_unavailable")),
        "{failed}"
    );
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{port}")),
        "{failed}"
    );

    let mut seen = vec![failed, statement];
    for path in [
        "/api/v1/projects".to_string(),
        "/api/v1/projects/creds".to_string(),
        "/api/v1/events?limit=1000".to_string(),
        format!("/api/v1/runs/{run_id}"),
        format!("/api/v1/runs/{run_id}/logs"),
        "/api/v1/releases?project=creds".to_string(),
    ] {
        seen.push(read(&server, &path).await);
    }
    for answer in seen {
        let text = answer.to_string();
        assert!(!text.contains("s3cr3t") && !text.contains("alice"), "{text}");
    }
    let config = std::fs::read_to_string(data.join("repos/creds.git/config")).unwrap();
    assert!(!config.contains("s3cr3t"), "{config}");
}
