//! Several `conveyor serve` replicas on one PostgreSQL database: one drives each run (its
//! lease), and when that one is killed -9 another takes the run over and finishes it, every
//! step recorded once per attempt. Always on PostgreSQL, whichever backend the suite runs on:
//! servers share only a PostgreSQL database.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// The pid in a lease holder's name (`host/pid/nonce`).
fn holder_pid(holder: &str) -> Option<u32> {
    holder.split('/').nth(1)?.parse().ok()
}

#[tokio::test]
async fn a_replica_killed_mid_run_has_its_run_taken_over_and_finished_by_another() {
    let tmp = tempfile::tempdir().unwrap();
    let marks = tmp.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // `flaky`'s first attempt is interrupted by the kill, its second completes on the other
    // replica.
    let pipeline = format!("name: shared\njobs:\n{}", interrupted_once_jobs(&marks));
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", &pipeline)]);
    let data = tmp.path().join("data");
    let database = postgres_database(&tmp.path().join("shared"));
    let args = |extra: &'static [&'static str]| {
        let mut args = vec!["--database", database.as_str()];
        args.extend(extra);
        args
    };
    let mut replicas = [
        Server::start_with(&data, &args(UNSANDBOXED)),
        Server::start_with(&data, &args(UNSANDBOXED)),
    ];
    replicas[0].add_project("shared", &repo).await;
    let run_id = replicas[1].trigger("shared").await;
    let orphan = eventually(Duration::from_secs(30), || async {
        read_pid(&marks.join("flaky-started"))
    })
    .await;

    // Kill the replica driving the run, as its lease says (either replica lists them all).
    let leases = replicas[0].get("/api/v1/leases").await;
    let holder = leases
        .as_array()
        .unwrap_or_else(|| panic!("leases: {leases}"))
        .iter()
        .find(|l| l["name"] == format!("run:{run_id}") && l["live"] == true)
        .and_then(|l| l["holder"].as_str())
        .unwrap_or_else(|| panic!("the run is leased: {leases}"))
        .to_string();
    let driver = replicas
        .iter()
        .position(|r| Some(r.child.id()) == holder_pid(&holder))
        .unwrap_or_else(|| panic!("the run's lease ({holder}) is one of the replicas'"));
    replicas[driver].kill9();
    let survivor = &replicas[1 - driver];

    let run = survivor.finished_run(run_id).await;
    assert_eq!(run["status"], "success", "{run:#}");
    assert_interrupted_once(&run, &marks);
    // The killed replica's step outlived it; the survivor killed it before retrying.
    wait_dead(orphan).await;

    // Every step's start and end is in the log exactly once per attempt.
    let events = survivor.get("/api/v1/events?limit=1000").await;
    let mut steps: Vec<(String, String, u64)> = events["events"]
        .as_array()
        .unwrap_or_else(|| panic!("events: {events}"))
        .iter()
        .map(|e| &e["event"])
        .filter(|e| {
            e["run_id"] == run_id && matches!(e["type"].as_str(), Some("step_started" | "step_finished"))
        })
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["job"].as_str().unwrap().to_string(),
                e["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    steps.sort();
    let expected: Vec<(String, String, u64)> = [
        ("step_finished", "after", 1),
        ("step_finished", "flaky", 1),
        ("step_finished", "flaky", 2),
        ("step_started", "after", 1),
        ("step_started", "flaky", 1),
        ("step_started", "flaky", 2),
    ]
    .iter()
    .map(|(k, j, a)| (k.to_string(), j.to_string(), *a))
    .collect();
    assert_eq!(steps, expected);
    let audit = survivor.get("/api/v1/audit/verify").await;
    assert_eq!(audit["intact"], true, "{audit}");
}

/// `value` of flag `flag` as `server` evaluates it over OFREP with evaluation key `key`.
async fn evaluate(server: &Server, key: &str, flag: &str) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/ofrep/v1/evaluate/flags/{flag}", server.base))
        .header("authorization", format!("Bearer {key}"))
        .json(&json!({"context": {"targetingKey": "user-1"}}))
        .send()
        .await
        .unwrap();
    response.json::<Value>().await.unwrap()["value"].clone()
}

#[tokio::test]
async fn flags_changed_through_one_replica_are_served_and_changed_further_by_another() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo(
        &tmp.path().join("repo"),
        &[("conveyor.yml", "name: shop\njobs: {build: {steps: [true]}}\n")],
    );
    let data = tmp.path().join("data");
    let database = postgres_database(&tmp.path().join("shared"));
    let a = Server::start_with(&data, &["--database", &database]);
    let b = Server::start_with(&data, &["--database", &database]);
    const FLAGS: &str = "/api/v1/projects/shop/environments/production/flags";
    a.add_project("shop", &repo).await;
    let definition = json!({"flags": {
        "banner": {"state": "ENABLED", "variants": {"a": "Welcome", "b": "Hello", "c": "Hi"}, "defaultVariant": "a"}
    }});
    let (status, body) = a
        .request(reqwest::Method::PUT, FLAGS, Some(definition), true)
        .await;
    assert_eq!(status, 200, "{body}");
    // A key made through one server opens the other's OFREP, which serves the same flags.
    let key = a.post(&format!("{FLAGS}/keys"), json!({"name": "web"})).await;
    let key = key["key"].as_str().expect("a key").to_string();
    let served = eventually(Duration::from_secs(10), || async {
        Some(evaluate(&b, &key, "banner").await).filter(|v| v == "Welcome")
    })
    .await;
    assert_eq!(served, "Welcome");

    // A change through either server starts from the newest definition, whichever stored it,
    // and both serve it.
    for (through, other, variant, value, version) in [(&b, &a, "b", "Hello", 2), (&a, &b, "c", "Hi", 3)] {
        let (status, changed) = through
            .request(
                reqwest::Method::PATCH,
                &format!("{FLAGS}/banner"),
                Some(json!({ "defaultVariant": variant })),
                true,
            )
            .await;
        assert_eq!(
            (status, changed["version"].as_i64()),
            (200, Some(version)),
            "{changed}"
        );
        assert_eq!(evaluate(through, &key, "banner").await, value);
        eventually(Duration::from_secs(10), || async {
            (evaluate(other, &key, "banner").await == value).then_some(())
        })
        .await;
    }
}
