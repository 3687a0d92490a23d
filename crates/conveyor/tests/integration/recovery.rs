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
        "name: crashy\njobs:\n{}  fragile:\n    steps:\n      - run: sleep 300 & echo $! > {}/fragile-started; wait\n",
        interrupted_once_jobs(&marks),
        marks.display()
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

    assert_interrupted_once(&run, &marks);

    let fragile = job(&run, "fragile");
    assert_eq!(fragile["status"], "failed");
    assert_eq!(
        fragile["reason"],
        "interrupted: the server stopped while this job ran"
    );
    assert_eq!(fragile["steps"][0]["status"], "interrupted");

    // The steps' processes outlived the killed server; the restart killed them.
    wait_dead(orphans.0).await;
    wait_dead(orphans.1).await;

    let audit = server.get("/api/v1/audit/verify").await;
    assert_eq!(audit["intact"], true, "{audit}");
}
