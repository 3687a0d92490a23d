//! Runs through a real server: DAG scheduling, failures, timeouts, cancel, secrets, triggers.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn diamond_dag_runs_its_middle_jobs_in_parallel_and_makes_a_release() {
    let tmp = tempfile::tempdir().unwrap();
    let meet = tmp.path().join("meet");
    std::fs::create_dir_all(&meet).unwrap();
    // left and right each wait for the other to have started: they pass only if they overlap.
    let pipeline = format!(
        r#"
name: diamond
jobs:
  top:
    steps:
      - run: mkdir -p out && echo top > out/top.txt
    artifacts: [out/top.txt]
  left:
    needs: [top]
    timeout: 20s
    steps:
      - run: |
          test "$(cat out/top.txt)" = top
          touch {meet}/left
          until [ -e {meet}/right ]; do sleep 0.05; done
  right:
    needs: [top]
    timeout: 20s
    steps:
      - run: |
          touch {meet}/right
          until [ -e {meet}/left ]; do sleep 0.05; done
  bottom:
    needs: [left, right]
    steps:
      - run: mkdir -p dist && cat out/top.txt > dist/app.txt && echo "built $CONVEYOR_COMMIT_SHA" >> dist/app.txt
    artifacts: [dist/app.txt]
"#,
        meet = meet.display()
    );
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", &pipeline)]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let server = Server::start_with(&tmp.path().join("data"), UNSANDBOXED);
    server.add_project("diamond", &repo).await;
    let run_id = server.trigger("diamond").await;
    let run = server.finished_run(run_id).await;
    assert_eq!(run["status"], "success", "{run:#}");
    assert_eq!(run["commit"], head.as_str());
    for id in ["top", "left", "right", "bottom"] {
        assert_eq!(job(&run, id)["status"], "success");
    }
    let release_id = run["release_id"]
        .as_i64()
        .expect("a successful run makes a release");
    let release = server.get(&format!("/api/v1/releases/{release_id}")).await;
    let paths: Vec<&str> = release["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["dist/app.txt", "out/top.txt"]);
    assert_eq!(release["envelope"]["payloadType"], "application/vnd.in-toto+json");

    let verify = command()
        .args([
            "verify",
            &release_id.to_string(),
            "--server",
            &server.base,
            "--token",
            TOKEN,
        ])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(String::from_utf8_lossy(&verify.stdout).contains("verified"));
}

#[tokio::test]
async fn a_failed_job_skips_its_dependants_while_the_other_branch_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = r#"
name: branches
jobs:
  start:
    steps: [echo start]
  broken:
    needs: [start]
    steps:
      - run: echo about to fail; exit 3
  after_broken:
    needs: [broken]
    steps: [echo never]
  cleanup:
    needs: [broken]
    if: failure()
    steps: [echo cleaning up]
  healthy:
    needs: [start]
    steps: [sleep 0.3]
  after_healthy:
    needs: [healthy]
    steps: [echo fine]
"#;
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", pipeline)]);
    let server = Server::start(&tmp.path().join("data"));
    server.add_project("branches", &repo).await;
    let run = server.finished_run(server.trigger("branches").await).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(job(&run, "broken")["status"], "failed");
    assert_eq!(
        job(&run, "broken")["reason"],
        "step 'echo about to fail; exit 3' failed with exit code 3"
    );
    assert_eq!(job(&run, "broken")["steps"][0]["exit_code"], 3);
    assert_eq!(job(&run, "after_broken")["status"], "skipped");
    assert_eq!(
        job(&run, "after_broken")["reason"],
        "needed job(s) did not succeed: broken"
    );
    assert_eq!(
        job(&run, "cleanup")["status"],
        "success",
        "if: failure() runs after a failure"
    );
    assert_eq!(job(&run, "healthy")["status"], "success");
    assert_eq!(job(&run, "after_healthy")["status"], "success");
    assert!(run["release_id"].is_null(), "a failed run makes no release");
    insta::assert_json_snapshot!(run, {
        ".commit" => "[sha]",
        ".source_uri" => "[path]",
        ".created_at" => "[time]",
        ".finished_at" => "[time]",
        ".committed_at" => "[time]",
        ".jobs[].started_at" => "[time]",
        ".jobs[].finished_at" => "[time]",
        ".jobs[].steps[].started_at" => "[time]",
        ".jobs[].steps[].finished_at" => "[time]",
    });
    assert!(
        server
            .log_text(run["id"].as_i64().unwrap())
            .await
            .contains("broken about to fail")
    );
}

#[tokio::test]
async fn a_step_timeout_kills_the_steps_child_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let pidfile = tmp.path().join("child.pid");
    let pipeline = format!(
        r#"
name: slow
jobs:
  slow:
    steps:
      - run: |
          sh -c 'sleep 300' &
          echo $! > {pid}
          wait
        timeout: 1s
"#,
        pid = pidfile.display()
    );
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", &pipeline)]);
    let server = Server::start_with(&tmp.path().join("data"), UNSANDBOXED);
    server.add_project("slow", &repo).await;
    let run = server.finished_run(server.trigger("slow").await).await;
    assert_eq!(run["status"], "failed");
    let slow = job(&run, "slow");
    assert_eq!(slow["steps"][0]["status"], "timed_out");
    assert!(
        slow["reason"].as_str().unwrap().contains("timed out after 1s"),
        "{slow}"
    );
    wait_dead(read_pid(&pidfile).expect("the step wrote its child's pid")).await;
}

#[tokio::test]
async fn cancel_kills_the_running_steps_and_cancels_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let pidfile = tmp.path().join("child.pid");
    let pipeline = format!(
        r#"
name: cancel
jobs:
  long:
    steps:
      - run: |
          sleep 300 &
          echo $! > {pid}
          wait
  next:
    needs: [long]
    steps: [echo unreachable]
"#,
        pid = pidfile.display()
    );
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", &pipeline)]);
    let server = Server::start_with(&tmp.path().join("data"), UNSANDBOXED);
    server.add_project("cancel", &repo).await;
    let run_id = server.trigger("cancel").await;
    let pid = eventually(Duration::from_secs(30), || async { read_pid(&pidfile) }).await;

    let (status, body) = server
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/runs/{run_id}/cancel"),
            None,
            false,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthorized")),
        "cancel needs a token"
    );
    server
        .post(&format!("/api/v1/runs/{run_id}/cancel"), json!({}))
        .await;

    let run = server.finished_run(run_id).await;
    assert_eq!(run["status"], "cancelled");
    assert_eq!(job(&run, "long")["status"], "cancelled");
    assert_eq!(job(&run, "long")["steps"][0]["status"], "cancelled");
    assert_eq!(job(&run, "next")["status"], "cancelled");
    wait_dead(pid).await;
}

#[tokio::test]
async fn secrets_reach_steps_but_never_any_stored_log() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = "s3cr3t-Value-98765";
    let pipeline = r#"
name: secretive
jobs:
  use:
    env:
      TOKEN: ${{ secrets.API_TOKEN }}
    steps:
      - run: |
          echo "token is $TOKEN"
          echo "inline ${{ secrets.API_TOKEN }} too" >&2
          test "$(printf %s "$TOKEN" | sha256sum | cut -c1-16)" = 6a75a83aeefc9701
"#;
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", pipeline)]);
    let server = Server::start(&tmp.path().join("data"));
    server.add_project("secretive", &repo).await;

    let (status, body) = server
        .request(
            reqwest::Method::POST,
            "/api/v1/projects/secretive/runs",
            Some(json!({})),
            true,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let missing = server.finished_run(body["run_id"].as_i64().unwrap()).await;
    assert_eq!(job(&missing, "use")["status"], "failed");
    assert_eq!(
        job(&missing, "use")["reason"],
        "secret 'API_TOKEN' is not set for project 'secretive' (set it with `conveyor secret set`)"
    );

    let set = command()
        .args([
            "secret",
            "set",
            "secretive",
            "API_TOKEN",
            "--value",
            secret,
            "--server",
            &server.base,
            "--token",
            TOKEN,
        ])
        .output()
        .unwrap();
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let run_id = server.trigger("secretive").await;
    let run = server.finished_run(run_id).await;
    assert_eq!(run["status"], "success", "the step saw the secret's real value");
    let log = server.log_text(run_id).await;
    assert!(log.contains("token is ***"), "{log}");
    assert!(log.contains("inline *** too"), "{log}");
    assert!(!log.contains(secret));

    // Nothing persisted holds the value in the clear: not the log files, not the event log (the
    // secrets table holds it encrypted, see audit.rs).
    for entry in walkdir(&server.data.join("logs")) {
        assert!(
            !std::fs::read_to_string(&entry).unwrap().contains(secret),
            "{}",
            entry.display()
        );
    }
    let events = server.get("/api/v1/events?limit=1000").await.to_string();
    assert!(events.contains("secret_set") && !events.contains(secret));
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[tokio::test]
async fn a_new_commit_on_a_watched_branch_starts_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline =
        "name: watched\non:\n  push: { branches: [main] }\njobs:\n  build:\n    steps: [echo built]\n";
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", pipeline)]);
    let server = Server::start(&tmp.path().join("data"));
    server
        .post(
            "/api/v1/projects",
            json!({ "name": "watched", "source": repo.display().to_string(), "poll_seconds": 1 }),
        )
        .await;
    let (status, answer) = server
        .request(
            reqwest::Method::POST,
            "/api/v1/projects/watched/runs",
            Some(json!({})),
            true,
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (409, Some("conflict")),
        "{answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("does not allow manual runs")
    );
    // Heads at registration are not built; each commit after is.
    let second = commit(&repo, &[("README", "more")], "second");
    let run = eventually(Duration::from_secs(30), || async {
        let runs = server.get("/api/v1/runs?project=watched").await;
        runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["commit"] == second.as_str())
            .cloned()
    })
    .await;
    assert_eq!(
        (run["branch"].as_str(), run["event"].as_str()),
        (Some("main"), Some("push"))
    );
    let runs = server.get("/api/v1/runs?project=watched").await;
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        1,
        "the registered head was not built: {runs}"
    );
    // Other branches are not watched: a feature commit starts nothing, while a later commit on
    // main (seen in the same or a later poll) does.
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    let on_feature = commit(&repo, &[("README", "feature")], "feature work");
    git(&repo, &["checkout", "-q", "main"]);
    let fourth = commit(&repo, &[("README", "main again")], "fourth");
    eventually(Duration::from_secs(30), || async {
        let runs = server.get("/api/v1/runs?project=watched").await;
        runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["commit"] == fourth.as_str())
            .then_some(())
    })
    .await;
    let runs = server.get("/api/v1/runs?project=watched").await;
    assert!(
        !runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["commit"] == on_feature.as_str())
    );
}
