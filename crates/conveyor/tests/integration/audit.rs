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
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    data
}

async fn sqlite(data: &Path) -> sqlx::SqliteConnection {
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", data.join("conveyor.db").display()))
        .await
        .unwrap()
}

fn cli(args: &[&str], data: &Path) -> (bool, String, String) {
    let out = command().args(args).arg("--data").arg(data).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What SQLite answers to `sql`: an error when a guard refuses it.
async fn refusal(data: &Path, sql: &str) -> String {
    let mut db = sqlite(data).await;
    let answer = sqlx::query(sql).execute(&mut db).await;
    db.close().await.unwrap();
    answer.err().map(|e| e.to_string()).unwrap_or_default()
}

/// Runs `statements` on the database file directly, as someone with access to it could.
async fn tamper(data: &Path, statements: &[&str]) {
    let mut db = sqlite(data).await;
    for sql in statements {
        sqlx::query(sql).execute(&mut db).await.unwrap();
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

    let mut db = sqlite(&data).await;
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
