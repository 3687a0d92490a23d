//! Tampering is detected: an edited or deleted event breaks the chain, a changed artifact fails
//! `conveyor verify`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use sqlx::Connection as _;

use crate::harness::*;

/// Runs the example-like pipeline locally (no server) into `data`; returns nothing but the data.
fn local_release(tmp: &Path) -> std::path::PathBuf {
    let project = tmp.join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("conveyor.yml"),
        "name: tamper\njobs:\n  build:\n    steps:\n      - run: mkdir -p dist && echo payload > dist/app.bin\n    artifacts: [dist/app.bin]\n",
    )
    .unwrap();
    let data = tmp.join("data");
    let out = command()
        .arg("run")
        .arg(&project)
        .args(data_args(&data))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    data
}

/// `DROP TRIGGER t` in the words of this run's backend.
fn backend_sql(sql: &str) -> String {
    match sql.strip_prefix("DROP TRIGGER ") {
        Some(trigger) => drop_trigger(trigger),
        None => sql.to_string(),
    }
}

fn cli(args: &[&str], data: &Path) -> (bool, String, String) {
    let out = command().args(args).args(data_args(data)).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What the database answers to `sql`: an error when a guard refuses it.
async fn refusal(data: &Path, sql: &str) -> String {
    let mut db = database(data).await;
    let answer = sqlx::query(&backend_sql(sql)).execute(&mut db).await;
    db.close().await.unwrap();
    answer.err().map(|e| e.to_string()).unwrap_or_default()
}

/// Runs `statements` on the database directly, as someone with access to it could.
async fn tamper(data: &Path, statements: &[&str]) {
    let mut db = database(data).await;
    for sql in statements {
        sqlx::query(&backend_sql(sql)).execute(&mut db).await.unwrap();
    }
    db.close().await.unwrap();
}

#[tokio::test]
async fn audit_verify_catches_an_edited_event() {
    let tmp = tempfile::tempdir().unwrap();
    let data = local_release(tmp.path());
    let (ok, out, _) = cli(&["audit", "verify"], &data);
    assert!(ok && out.contains("audit log intact"), "{out}");

    // The log refuses edits through SQL; an attacker with the file drops the guard first.
    assert!(
        refusal(&data, "UPDATE events SET data = '{}' WHERE seq = 3")
            .await
            .contains("append-only")
    );
    tamper(
        &data,
        &[
            "DROP TRIGGER events_no_update",
            "UPDATE events SET data = replace(data, 'build', 'bu1ld') WHERE seq = 3",
        ],
    )
    .await;
    let (ok, _, err) = cli(&["audit", "verify"], &data);
    assert!(!ok);
    assert!(
        err.contains("event 3: stored hash does not match its content: the row was edited"),
        "{err}"
    );
}

#[tokio::test]
async fn audit_verify_catches_deleted_events() {
    let tmp = tempfile::tempdir().unwrap();
    let data = local_release(tmp.path());
    tamper(
        &data,
        &[
            "DROP TRIGGER events_no_delete",
            "DELETE FROM events WHERE seq IN (4, 5)",
        ],
    )
    .await;
    let (ok, _, err) = cli(&["audit", "verify"], &data);
    assert!(!ok);
    assert!(err.contains("events 4..=5 are missing"), "{err}");

    tamper(
        &data,
        &["DELETE FROM events WHERE seq = (SELECT MAX(seq) FROM events)"],
    )
    .await;
    let (_, _, err) = cli(&["audit", "verify"], &data);
    assert!(err.contains("the newest events were deleted"), "{err}");
}

#[tokio::test]
async fn verify_catches_a_changed_artifact() {
    let tmp = tempfile::tempdir().unwrap();
    let data = local_release(tmp.path());
    let (ok, out, err) = cli(&["verify", "1"], &data);
    assert!(ok, "{out}{err}");
    assert!(out.contains("release 1 verified"), "{out}");

    let mut db = database(&data).await;
    let digest: String =
        sqlx::query_scalar("SELECT digest FROM release_artifacts WHERE release_id = 1 AND idx = 0")
            .fetch_one(&mut db)
            .await
            .unwrap();
    db.close().await.unwrap();
    let blob = data.join("cas/sha256").join(&digest[..2]).join(&digest[2..]);
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&blob, "tampered\n").unwrap();

    let (ok, _, err) = cli(&["verify", "1"], &data);
    assert!(!ok);
    assert!(err.contains("release 1 FAILED verification"), "{err}");
    assert!(
        err.contains("artifact dist/app.bin: content has sha256 ")
            && err.contains(&format!(
                "but the signed digest is {digest} — the file was changed"
            )),
        "{err}"
    );
}

#[tokio::test]
async fn verify_catches_edited_release_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let data = local_release(tmp.path());
    let refused = refusal(&data, "UPDATE releases SET commit_sha = 'x' WHERE id = 1").await;
    assert!(refused.contains("releases are immutable"), "{refused}");
    tamper(
        &data,
        &[
            "DROP TRIGGER releases_no_update",
            "UPDATE releases SET commit_sha = 'feedface' WHERE id = 1",
        ],
    )
    .await;
    let (ok, _, err) = cli(&["verify", "1"], &data);
    assert!(!ok);
    assert!(
        err.contains("release metadata says commit feedface but the signed provenance says"),
        "{err}"
    );
}

/// Stops a server the way an operator does (SIGTERM): it signs a last checkpoint on its way out.
fn stop(server: &mut Server) {
    let term = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(server.child.wait().unwrap().success());
}

/// Triggers a run of `project` and waits for its status.
async fn run_status(server: &Server, project: &str) -> String {
    let run = server.finished_run(server.trigger(project).await).await;
    run["status"].as_str().unwrap_or_default().to_string()
}

/// What someone who can write the database does to rewrite history so the chain still
/// verifies: the guard dropped, an event edited, every hash after it and the head recomputed.
async fn rewrite_history(data: &Path, kind: &str) {
    use sha2::Digest as _;
    let mut db = database(data).await;
    for sql in [
        drop_trigger("events_no_update"),
        format!("UPDATE events SET data = replace(data, 'sealed', 'seeled') WHERE kind = '{kind}'"),
    ] {
        sqlx::query(&sql).execute(&mut db).await.unwrap();
    }
    let rows: Vec<(i64, String, String, String)> =
        sqlx::query_as("SELECT seq, at, kind, data FROM events ORDER BY seq")
            .fetch_all(&mut db)
            .await
            .unwrap();
    let mut prev = "0".repeat(64);
    for (seq, at, kind, data) in rows {
        let mut h = sha2::Sha256::new();
        for part in [prev.as_str(), &seq.to_string(), &at, &kind, &data] {
            h.update(part.as_bytes());
            h.update(b"\n");
        }
        let hash = hex::encode(h.finalize());
        sqlx::query("UPDATE events SET prev_hash = $1, hash = $2 WHERE seq = $3")
            .bind(&prev)
            .bind(&hash)
            .bind(seq)
            .execute(&mut db)
            .await
            .unwrap();
        sqlx::query("UPDATE chain_head SET seq = $1, hash = $2")
            .bind(seq)
            .bind(&hash)
            .execute(&mut db)
            .await
            .unwrap();
        prev = hash;
    }
    db.close().await.unwrap();
}

#[tokio::test]
async fn secrets_are_encrypted_at_rest_and_a_rewritten_log_fails_its_checkpoints() {
    use sha2::Digest as _;
    let tmp = tempfile::tempdir().unwrap();
    let secret = "at-rest-S3cret-Value-24680";
    let fingerprint = &hex::encode(sha2::Sha256::digest(secret))[..16];
    let pipeline = format!(
        "name: sealed\njobs:\n  use:\n    env:\n      TOKEN: ${{{{ secrets.API_TOKEN }}}}\n    steps:\n      - run: test \"$(printf %s \"$TOKEN\" | sha256sum | cut -c1-16)\" = {fingerprint}\n"
    );
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", &pipeline)]);
    let data = tmp.path().join("data");
    let mut server = Server::start(&data);
    server.add_project("sealed", &repo).await;
    let (status, body) = server
        .request(
            reqwest::Method::PUT,
            "/api/v1/projects/sealed/secrets/API_TOKEN",
            Some(serde_json::json!({ "value": secret })),
            true,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        run_status(&server, "sealed").await,
        "success",
        "the step saw the value"
    );

    // Owner-only, from the first start.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data.join("keys")), 0o700);
    for entry in std::fs::read_dir(data.join("keys")).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    if !on_postgres() {
        assert_eq!(mode(&data.join("conveyor.db")), 0o600);
    }

    // A rotation is refused while the server holds the key.
    let (ok, _, err) = cli(&["secret", "rotate-key"], &data);
    assert!(!ok && err.contains("open in another process"), "{err}");
    let (_, report) = server
        .request(reqwest::Method::GET, "/api/v1/audit/verify", None, true)
        .await;
    assert_eq!(report["intact"], true, "{report}");

    stop(&mut server);
    assert!(
        !database_holds(&data, secret),
        "the database holds the secret's value"
    );
    let exported = std::fs::read_to_string(data.join("checkpoints.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(exported.lines().last().unwrap()).unwrap();
    assert_eq!(last["payloadType"], "application/vnd.conveyor.checkpoint+json");
    let (ok, out, err) = cli(&["audit", "verify"], &data);
    assert!(ok && out.contains("signed checkpoint(s) match"), "{out}{err}");

    // Rotated with the server stopped, the value still reaches steps.
    let (ok, out, err) = cli(&["secrets", "rotate-key"], &data);
    assert!(ok && out.contains("1 secret value(s) re-encrypted"), "{out}{err}");
    let server = Server::start(&data);
    assert_eq!(run_status(&server, "sealed").await, "success");
    drop(server);

    // Copies of the key and the checkpoints kept elsewhere, as an auditor would.
    let trusted = tmp.path().join("trusted");
    std::fs::create_dir_all(&trusted).unwrap();
    std::fs::copy(data.join("checkpoints.jsonl"), trusted.join("checkpoints.jsonl")).unwrap();
    std::fs::copy(data.join("keys/signing.pub"), trusted.join("signing.pub")).unwrap();
    let copies = |args: &mut Vec<String>| {
        args.extend(
            [
                "--checkpoints",
                "trusted/checkpoints.jsonl",
                "--public-key",
                "trusted/signing.pub",
            ]
            .map(|a| a.replace("trusted", &trusted.display().to_string())),
        );
    };

    // The project's registration rewritten, every hash after it recomputed: the chain holds,
    // the signed checkpoints do not.
    rewrite_history(&data, "project_added").await;
    let (ok, _, err) = cli(&["audit", "verify"], &data);
    assert!(!ok, "{err}");
    assert!(
        err.contains("does not have the hash a signed checkpoint records for it"),
        "{err}"
    );
    assert!(
        !err.contains("stored hash does not match"),
        "the chain itself was made consistent: {err}"
    );

    // The attacker removes the checkpoints too: only the copies kept elsewhere tell.
    tamper(
        &data,
        &["DROP TRIGGER checkpoints_no_delete", "DELETE FROM checkpoints"],
    )
    .await;
    std::fs::remove_file(data.join("checkpoints.jsonl")).unwrap();
    let (ok, _, _) = cli(&["audit", "verify"], &data);
    assert!(ok, "nothing signed is left on the machine");
    let mut args: Vec<String> = vec!["audit".into(), "verify".into()];
    copies(&mut args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = cli(&args, &data);
    assert!(!ok);
    assert!(
        err.contains("is not in the database: checkpoints were removed"),
        "{err}"
    );
    assert!(err.contains("history was rewritten"), "{err}");
}

/// The signing key rotates with the server stopped: releases and checkpoints the old key signed
/// still verify (locally, through the API's key list, and in `audit verify`), new ones are
/// signed by the new key, and the rotation is in the log.
#[tokio::test]
async fn the_signing_key_rotates_and_what_it_signed_still_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline =
        "name: keyed\njobs:\n  build:\n    steps: [echo built > out.txt]\n    artifacts: [out.txt]\n";
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", pipeline)]);
    let data = tmp.path().join("data");
    let mut server = Server::start(&data);
    server.add_project("keyed", &repo).await;
    assert_eq!(run_status(&server, "keyed").await, "success");
    let old_key = server.get("/api/v1/keys/signing").await["key_id"].clone();
    let (ok, _, err) = cli(&["admin", "rotate-signing-key"], &data);
    assert!(!ok && err.contains("open in another process"), "{err}");
    stop(&mut server);

    let (ok, out, err) = cli(&["admin", "rotate-signing-key"], &data);
    assert!(ok && out.contains("is retired"), "{out}{err}");
    let mut server = Server::start(&data);
    commit(&repo, &[("README", "second")], "second");
    assert_eq!(run_status(&server, "keyed").await, "success");
    let keys = server.get("/api/v1/keys/signing").await;
    assert_ne!(keys["key_id"], old_key);
    assert_eq!(keys["retired"].as_array().unwrap().len(), 1, "{keys}");
    let releases = server.get("/api/v1/releases?project=keyed").await;
    let ids: Vec<i64> = releases["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    // The restarted server's poller may have built the new commit too.
    assert!(ids.len() >= 2, "{releases}");
    for id in &ids {
        let out = command()
            .args([
                "verify",
                &id.to_string(),
                "--server",
                &server.base,
                "--token",
                TOKEN,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "release {id}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        server
            .logged(|e| e["type"] == "signing_key_rotated" && e["previous"] == old_key)
            .await
    );
    stop(&mut server);
    // Checkpoints of both keys verify; the old release verifies locally too.
    let (ok, out, err) = cli(&["audit", "verify"], &data);
    assert!(ok && out.contains("signed checkpoint(s) match"), "{out}{err}");
    let oldest = ids.last().unwrap();
    let out = command()
        .args(["verify", &oldest.to_string()])
        .args(data_args(&data))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("(a retired key)"), "{text}");
}
