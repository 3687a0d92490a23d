//! Steps and instances cannot touch the server: with `--isolation required` (bubblewrap, which
//! `.ci/run` installs), a step that goes after the signing key, the database, the server's
//! environment or another project's workspace is denied each time — while the same probe without
//! isolation succeeds, so the probes are real — and still writes its workspace and makes an
//! artifact; a secret never shows in any command line; a deployed instance cannot read the key;
//! a sandboxed step leaves nothing running when it times out or when the server dies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;

const SANDBOXED: &[&str] = &["--isolation", "required"];

// === reads, each with the token ===

async fn read(server: &Server, path: &str) -> Value {
    let (status, body) = server.request(Method::GET, path, None, true).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

async fn finished(server: &Server, id: i64) -> Value {
    eventually(Duration::from_secs(60), || async {
        let run = read(server, &format!("/api/v1/runs/{id}")).await;
        (run["status"] != "running").then_some(run)
    })
    .await
}

async fn log_of(server: &Server, id: i64) -> String {
    read(server, &format!("/api/v1/runs/{id}/logs")).await["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| format!("{}\n", l["line"].as_str().unwrap_or("")))
        .collect()
}

/// Every process of this machine whose command line or environment has `needle`.
fn processes_with(needle: &str, file: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/{file}"))
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .collect()
}

// === a step's reach ===

/// A step that reports, one line each, whether it could reach what belongs to the server. The
/// admin token and its variable's name are put together at run time, so that the script (which
/// the step's own shell has in its environment) does not contain them.
fn probe_pipeline(data: &Path, other_workspace: &Path) -> String {
    let (token_head, token_tail) = TOKEN.split_at(6);
    format!(
        r#"name: probe
jobs:
  build:
    steps:
      - run: |
          data=$(dirname "$(dirname "$(dirname "$CONVEYOR_WORKSPACE")")")
          t={token_head}; t="${{t}}{token_tail}"
          n=CONVEYOR_ADMIN; n="${{n}}_TOKEN="
          try() {{ if sh -c "$2" >/dev/null 2>&1; then echo "$1: allowed"; else echo "$1: denied"; fi; }}
          try "key via workspace" "cat '$data/keys/signing.key'"
          try "key by path" "cat '{data}/keys/signing.key'"
          try "database" "head -c 16 '{data}/conveyor.db' | grep -q SQLite || test -S /var/run/postgresql/.s.PGSQL.5432"
          try "server environment" "tr '\0' '\n' < /proc/$PPID/environ | grep -q '^$n'"
          try "token in any environment" "cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | grep -q '$t'"
          try "other workspace" "ls '{other}/other-was-here'"
          try "cas" "ls '{data}/cas/sha256' | grep -q ."
          try "write the system" "test -w /usr"
          mkdir -p dist && echo made > dist/out.txt && echo "workspace: written"
    artifacts: [dist/out.txt]
"#,
        data = data.display(),
        other = other_workspace.display(),
    )
}

const REACHES: &[&str] = &[
    "key via workspace",
    "key by path",
    "database",
    "server environment",
    "token in any environment",
    "other workspace",
    "cas",
];

/// Runs the probe on a server started with `args` while another project's job holds its
/// workspace open; returns the probe's log, its run and its release.
async fn probe(tmp: &Path, args: &[&str]) -> (String, Value, Value) {
    let data = tmp.join("data");
    let server = Server::start_with(&data, args);
    let other = repo(
        &tmp.join("other"),
        &[(
            "conveyor.yml",
            "name: other\njobs:\n  hold:\n    steps:\n      - run: touch other-was-here && sleep 120\n",
        )],
    );
    server.add_project("other", &other).await;
    let other_run = server.trigger("other").await;
    let other_workspace = data.join(format!("work/run-{other_run}/hold-1"));
    eventually(Duration::from_secs(30), || async {
        other_workspace.join("other-was-here").exists().then_some(())
    })
    .await;

    let repo = repo(
        &tmp.join("repo"),
        &[("conveyor.yml", &probe_pipeline(&data, &other_workspace))],
    );
    server.add_project("probe", &repo).await;
    let run = finished(&server, server.trigger("probe").await).await;
    let log = log_of(&server, run["id"].as_i64().unwrap()).await;
    let release = match run["release_id"].as_i64() {
        Some(id) => read(&server, &format!("/api/v1/releases/{id}")).await,
        None => Value::Null,
    };
    server
        .post(&format!("/api/v1/runs/{other_run}/cancel"), json!({}))
        .await;
    (log, run, release)
}

#[tokio::test]
async fn a_step_cannot_reach_the_servers_files_processes_or_other_workspaces() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, run, release) = probe(tmp.path(), SANDBOXED).await;
    for reach in REACHES.iter().chain(&["write the system"]) {
        assert!(log.contains(&format!("{reach}: denied")), "{reach}:\n{log}");
    }
    // It still works in its own workspace, and what it makes becomes the release.
    assert!(log.contains("workspace: written"), "{log}");
    assert_eq!(run["status"], "success", "{run:#}");
    assert_eq!(release["artifacts"][0]["path"], "dist/out.txt", "{release:#}");
}

/// The control: the same probe, unsandboxed, reaches all of it — so the denials above are the
/// sandbox's doing, not a broken probe.
#[tokio::test]
async fn without_isolation_the_same_step_reaches_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _, _) = probe(tmp.path(), &["--isolation", "off"]).await;
    for reach in REACHES {
        assert!(log.contains(&format!("{reach}: allowed")), "{reach}:\n{log}");
    }
}

#[tokio::test]
async fn readyz_says_how_steps_are_isolated() {
    let tmp = tempfile::tempdir().unwrap();
    let sandboxed = Server::start_with(&tmp.path().join("a"), SANDBOXED);
    let body = read(&sandboxed, "/readyz").await;
    assert_eq!(body["ready"], true);
    assert!(
        body["isolation"].as_str().unwrap().starts_with("bwrap:"),
        "{body}"
    );
    let off = Server::start_with(&tmp.path().join("b"), &["--isolation", "off"]);
    let body = read(&off, "/readyz").await;
    assert!(
        body["isolation"]
            .as_str()
            .unwrap()
            .starts_with("none: turned off"),
        "{body}"
    );
}

// === secrets ===

#[tokio::test]
async fn a_secret_never_shows_in_any_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = "s3cr3t-in-no-argv-4711";
    let pipeline = r#"name: hush
jobs:
  use:
    steps:
      - run: |
          v='${{ secrets.PASSWORD }}'
          printf '%s\n' "$v" > pattern
          echo "inside: $(cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' '\n' | grep -c -F -f pattern || true) command lines"
          [ "$v" = "$(cat pattern)" ] && echo "step has the value"
          touch running
          sleep 3
"#;
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", pipeline)]);
    let data = tmp.path().join("data");
    let server = Server::start_with(&data, SANDBOXED);
    server.add_project("hush", &repo).await;
    let (status, body) = server
        .request(
            Method::PUT,
            "/api/v1/projects/hush/secrets/PASSWORD",
            Some(json!({ "value": secret })),
            true,
        )
        .await;
    assert!((200..300).contains(&status), "{status} {body}");
    let run_id = server.trigger("hush").await;
    let workspace = data.join(format!("work/run-{run_id}/use-1"));
    eventually(Duration::from_secs(30), || async {
        workspace.join("running").exists().then_some(())
    })
    .await;
    // From outside too, while the step runs: no process of this machine has it in argv.
    assert_eq!(processes_with(secret, "cmdline"), Vec::<u32>::new());
    let run = finished(&server, run_id).await;
    assert_eq!(run["status"], "success", "{run:#}");
    let log = log_of(&server, run_id).await;
    assert!(log.contains("inside: 0 command lines"), "{log}");
    assert!(log.contains("step has the value"), "{log}");
}

// === a deployed instance ===

/// Serves its health endpoint after trying to read the signing key, and says how that went in
/// its log and in a file of its release directory.
const INSTANCE: &str = r#"
import http.server, os, pathlib
try:
    pathlib.Path(os.environ["KEY"]).read_bytes()
    seen = "key: allowed"
except OSError as error:
    seen = "key: denied (%s)" % error.strerror
print(seen, flush=True)
pathlib.Path("probe.txt").write_text(seen)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

#[tokio::test]
async fn a_deployed_instance_cannot_read_the_signing_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let pipeline = format!(
        r#"name: svc
jobs:
  build:
    steps:
      - run: mkdir -p dist && cp app.py dist/
    artifacts: [dist/app.py]
release:
  run: exec python3 dist/app.py
  env: {{ KEY: {key} }}
  health: {{ path: /healthz, interval: 100ms, start_timeout: 10s }}
  instances: 1
environments:
  prod:
    strategy: blue-green
"#,
        key = data.join("keys/signing.key").display()
    );
    let repo = repo(
        &tmp.path().join("repo"),
        &[("conveyor.yml", &pipeline), ("app.py", INSTANCE)],
    );
    let server = Server::start_with(&data, SANDBOXED);
    server.add_project("svc", &repo).await;
    let run = finished(&server, server.trigger("svc").await).await;
    assert_eq!(run["status"], "success", "{run:#}");
    let promoted = server
        .post(
            &format!("/api/v1/releases/{}/promote", run["release_id"]),
            json!({ "environment": "prod" }),
        )
        .await;
    let id = promoted["deployment_id"].as_i64().unwrap();
    let done = eventually(Duration::from_secs(60), || async {
        let d = read(&server, &format!("/api/v1/deployments/{id}")).await;
        (!d["finished_at"].is_null()).then_some(d)
    })
    .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let probe = find_file(&data.join("releases"), "probe.txt").expect("the instance wrote probe.txt");
    let seen = std::fs::read_to_string(&probe).unwrap();
    assert!(seen.starts_with("key: denied"), "{seen}");
    let log = std::fs::read_to_string(probe.with_file_name(".conveyor-logs").join("0.log")).unwrap();
    assert!(log.contains("key: denied"), "{log}");
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if path.is_dir()
            && let Some(found) = find_file(&path, name)
        {
            return Some(found);
        }
    }
    None
}

// === nothing left running ===

#[tokio::test]
async fn a_sandboxed_step_that_times_out_leaves_nothing_running() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = "name: slow\njobs:\n  slow:\n    steps:\n      - run: |\n          setsid sleep 31337 &\n          sleep 31338 &\n          wait\n        timeout: 1s\n";
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", pipeline)]);
    let server = Server::start_with(&tmp.path().join("data"), SANDBOXED);
    server.add_project("slow", &repo).await;
    let run = finished(&server, server.trigger("slow").await).await;
    assert_eq!(job(&run, "slow")["steps"][0]["status"], "timed_out", "{run:#}");
    // Even the one that left the process group: the PID namespace ended with the step.
    for needle in ["sleep\x0031337", "sleep\x0031338"] {
        eventually(Duration::from_secs(10), || async {
            processes_with(needle, "cmdline").is_empty().then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn sandboxed_steps_die_with_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = "name: orphan\njobs:\n  long:\n    steps:\n      - run: touch started && sleep 31339\n";
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", pipeline)]);
    let data = tmp.path().join("data");
    let mut server = Server::start_with(&data, SANDBOXED);
    server.add_project("orphan", &repo).await;
    let run_id = server.trigger("orphan").await;
    let started = data.join(format!("work/run-{run_id}/long-1/started"));
    eventually(Duration::from_secs(30), || async {
        started.exists().then_some(())
    })
    .await;
    assert!(
        !processes_with("sleep\x0031339", "cmdline").is_empty(),
        "the step runs"
    );
    server.kill9();
    eventually(Duration::from_secs(10), || async {
        processes_with("sleep\x0031339", "cmdline")
            .is_empty()
            .then_some(())
    })
    .await;
}
