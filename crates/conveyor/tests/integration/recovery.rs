//! kill -9 in the middle of a run, then a restart: the log says what happened, nothing is lost,
//! and nothing runs twice silently.

use std::time::Duration;

use crate::harness::*;

#[tokio::test]
async fn a_server_killed_mid_run_restarts_into_a_consistent_state() {
    let tmp = tempfile::tempdir().unwrap();
    let marks = tmp.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // `flaky` allows a retry: its first attempt is interrupted by the crash, the second completes.
    // `fragile` allows none: it is failed by the interruption. `after` runs once flaky succeeds.
    let pipeline = format!(
        r#"
name: crashy
jobs:
  flaky:
    retries: 1
    steps:
      - run: |
          echo "attempt $CONVEYOR_ATTEMPT" >> {marks}/flaky
          if [ "$CONVEYOR_ATTEMPT" = 1 ]; then sleep 300 & echo $! > {marks}/flaky-started; wait; fi
  fragile:
    steps:
      - run: sleep 300 & echo $! > {marks}/fragile-started; wait
  after:
    needs: [flaky]
    steps:
      - run: echo after >> {marks}/after
"#,
        marks = marks.display()
    );
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", &pipeline)]);
    let data = tmp.path().join("data");
    let mut server = Server::start_with(&data, UNSANDBOXED);
    server.add_project("crashy", &repo).await;
    let run_id = server.trigger("crashy").await;
    let orphans = eventually(Duration::from_secs(30), || async {
        Some((
            read_pid(&marks.join("flaky-started"))?,
            read_pid(&marks.join("fragile-started"))?,
        ))
    })
    .await;
    server.kill9();

    let server = Server::start_with(&data, UNSANDBOXED);
    let run = server.finished_run(run_id).await;
    assert_eq!(run["status"], "failed", "fragile could not be retried: {run:#}");

    let flaky = job(&run, "flaky");
    assert_eq!(flaky["status"], "success");
    assert_eq!(flaky["attempt"], 2);
    let statuses: Vec<(u64, &str)> = flaky["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["attempt"].as_u64().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, vec![(1, "interrupted"), (2, "success")]);

    let fragile = job(&run, "fragile");
    assert_eq!(fragile["status"], "failed");
    assert_eq!(
        fragile["reason"],
        "interrupted: the server stopped while this job ran"
    );
    assert_eq!(fragile["steps"][0]["status"], "interrupted");

    assert_eq!(job(&run, "after")["status"], "success");
    assert_eq!(
        std::fs::read_to_string(marks.join("flaky")).unwrap(),
        "attempt 1\nattempt 2\n"
    );
    assert_eq!(
        std::fs::read_to_string(marks.join("after")).unwrap(),
        "after\n",
        "ran exactly once"
    );

    // The steps' processes outlived the killed server; the restart killed them.
    wait_dead(orphans.0).await;
    wait_dead(orphans.1).await;

    let audit = server.get("/api/v1/audit/verify").await;
    assert_eq!(audit["intact"], true, "{audit}");
}
