//! Starts real servers on temp dirs and free ports, makes git repositories, waits with deadlines.

use std::ffi::OsString;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const TOKEN: &str = "integration-test-token";

/// `serve` arguments for tests whose steps share files with the test outside their workspace or
/// report their pids to it: the sandbox would hide the one and renumber the other (isolation.rs
/// tests the sandbox itself).
pub const UNSANDBOXED: &[&str] = &["--isolation", "off"];

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_conveyor")
}

/// A clean environment for child processes: tests never hand over their own.
pub fn command() -> Command {
    let mut cmd = Command::new(binary());
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", std::env::temp_dir())
        .env("CONVEYOR_LOG", "warn");
    cmd
}

/// The socket directory of the local PostgreSQL server (`.ci/run` starts it).
const POSTGRES_SOCKET: &str = "/var/run/postgresql";

/// Whether this run of the suite keeps the servers' stores in PostgreSQL
/// (`CONVEYOR_TEST_DATABASE=postgres`) rather than SQLite in their data directories.
pub fn on_postgres() -> bool {
    // The one variable the suite reads: which backend it holds the servers to.
    #[allow(clippy::disallowed_methods)]
    match std::env::var("CONVEYOR_TEST_DATABASE").as_deref() {
        Err(_) | Ok("" | "sqlite") => false,
        Ok("postgres") => true,
        Ok(other) => panic!("CONVEYOR_TEST_DATABASE={other}: say sqlite or postgres"),
    }
}

/// The database of the data directory `data` on this run's backend: its SQLite file, or a
/// PostgreSQL database of its own, made on first use.
pub fn database_url(data: &Path) -> String {
    if !on_postgres() {
        return format!("sqlite://{}", data.join("conveyor.db").display());
    }
    postgres_database(data)
}

/// A PostgreSQL database of `data`'s own, whichever backend this run is on.
pub fn postgres_database(data: &Path) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::hash::DefaultHasher::new();
    data.hash(&mut hasher);
    let name = format!("conveyor_it_{}_{:016x}", std::process::id(), hasher.finish());
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(drop_databases_of_finished_tests);
    let made = Command::new("createdb")
        .args(["-h", POSTGRES_SOCKET, &name])
        .output()
        .expect("PostgreSQL's createdb runs");
    assert!(
        made.status.success() || String::from_utf8_lossy(&made.stderr).contains("already exists"),
        "createdb {name}: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    format!("postgres:///{name}?host={POSTGRES_SOCKET}")
}

/// Databases are named after the test process's pid (one per test under nextest, one for the
/// whole suite under `cargo test`): those of processes no longer running are dropped, so runs of
/// the suite do not pile them up.
fn drop_databases_of_finished_tests() {
    let listed = Command::new("psql")
        .args(["-h", POSTGRES_SOCKET, "-d", "postgres", "-Atc"])
        .arg("SELECT datname FROM pg_database WHERE datname LIKE 'conveyor\\_it\\_%'")
        .output()
        .expect("PostgreSQL's psql runs");
    for name in String::from_utf8_lossy(&listed.stdout).lines() {
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = Command::new("dropdb")
                .args(["--force", "-h", POSTGRES_SOCKET, name])
                .status();
        }
    }
}

/// `--data DATA`, and `--database` when this run's backend is not the directory's own SQLite.
pub fn data_args(data: &Path) -> Vec<OsString> {
    let mut args = vec![OsString::from("--data"), data.as_os_str().to_owned()];
    if on_postgres() {
        args.extend([OsString::from("--database"), database_url(data).into()]);
    }
    args
}

/// A connection to `data`'s database behind its server's back, as someone with access to it has.
pub async fn database(data: &Path) -> sqlx::AnyConnection {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(&database_url(data)).await.unwrap()
}

/// Whether `needle` is anywhere in what `data`'s database keeps (its server stopped): the SQLite
/// file with its journal, or a dump of its PostgreSQL database.
pub fn database_holds(data: &Path, needle: &str) -> bool {
    let found = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    if !on_postgres() {
        return ["conveyor.db", "conveyor.db-wal", "conveyor.db-shm"]
            .iter()
            .any(|file| std::fs::read(data.join(file)).is_ok_and(|bytes| found(&bytes)));
    }
    let url = database_url(data);
    let name = url
        .strip_prefix("postgres:///")
        .and_then(|rest| rest.split('?').next())
        .expect("a database of the suite's own");
    let dump = Command::new("pg_dump")
        .args(["-h", POSTGRES_SOCKET, name])
        .output()
        .expect("PostgreSQL's pg_dump runs");
    assert!(dump.status.success(), "pg_dump {name}");
    found(&dump.stdout)
}

/// What drops the append-only guard `trigger` (`{table}_no_{change}`) on this run's backend.
pub fn drop_trigger(trigger: &str) -> String {
    match trigger.rsplit_once("_no_") {
        Some((table, _)) if on_postgres() => format!("DROP TRIGGER {trigger} ON {table}"),
        _ => format!("DROP TRIGGER {trigger}"),
    }
}

pub struct Server {
    pub child: Child,
    pub base: String,
    pub data: PathBuf,
    http: reqwest::Client,
    /// Killed like a crash: its instances must stay up for the next server to adopt.
    crashed: bool,
}

impl Server {
    pub fn start(data: &Path) -> Server {
        Server::start_with(data, &[])
    }

    /// [`Server::start`] with more `serve` arguments.
    pub fn start_with(data: &Path, args: &[&str]) -> Server {
        let mut child = command()
            .args(["serve", "--addr", "127.0.0.1:0", "--poll-tick", "1"])
            .args(if args.contains(&"--database") {
                vec![OsString::from("--data"), data.as_os_str().to_owned()]
            } else {
                data_args(data)
            })
            .args(args)
            .env("CONVEYOR_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("conveyor serve starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("the server prints its address before exiting")
                .expect("stdout is readable");
            if let Some(rest) = line.strip_prefix("conveyor listening on ") {
                break rest
                    .split_whitespace()
                    .next()
                    .expect("an address follows")
                    .to_string();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            base,
            data: data.to_path_buf(),
            http: reqwest::Client::new(),
            crashed: false,
        }
    }

    /// SIGKILL, like a crash: the deployed instances keep running, as they would.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
        self.crashed = true;
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        auth: bool,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if auth {
            req = req.bearer_auth(TOKEN);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("the server answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("a body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.request(reqwest::Method::GET, path, None, true).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Whether the event log (its first 1000 events) has an event that `matches`.
    pub async fn logged(&self, matches: impl Fn(&Value) -> bool) -> bool {
        let events = self.get("/api/v1/events?limit=1000").await;
        events["events"]
            .as_array()
            .expect("a list of events")
            .iter()
            .any(|e| matches(&e["event"]))
    }

    /// Adds user `name` with `grants` (role, project, environment) and returns a token of theirs.
    pub async fn user(&self, name: &str, grants: &[(&str, Option<&str>, Option<&str>)]) -> String {
        self.post(
            "/api/v1/users",
            json!({ "name": name, "email": format!("{name}@example.com") }),
        )
        .await;
        for (role, project, environment) in grants {
            let grant = json!({ "role": role, "project": project, "environment": environment });
            let (status, body) = self
                .request(
                    reqwest::Method::PUT,
                    &format!("/api/v1/users/{name}/roles"),
                    Some(grant),
                    true,
                )
                .await;
            assert_eq!(status, 200, "grant {role} to {name}: {body}");
        }
        self.post("/api/v1/tokens", json!({ "name": name, "user": name }))
            .await["token"]
            .as_str()
            .expect("a token")
            .to_string()
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.request(reqwest::Method::POST, path, Some(body), true).await;
        assert!((200..300).contains(&status), "POST {path}: {status} {answer}");
        answer
    }

    pub async fn add_project(&self, name: &str, repo: &Path) {
        self.post(
            "/api/v1/projects",
            json!({ "name": name, "source": repo.display().to_string(), "poll_seconds": 3600 }),
        )
        .await;
    }

    pub async fn trigger(&self, project: &str) -> i64 {
        let body = self
            .post(
                &format!("/api/v1/projects/{project}/runs"),
                json!({ "branch": "main" }),
            )
            .await;
        body["run_id"].as_i64().expect("a run id")
    }

    /// Waits until the run has ended and returns it.
    pub async fn finished_run(&self, id: i64) -> Value {
        eventually(Duration::from_secs(60), || async {
            let run = self.get(&format!("/api/v1/runs/{id}")).await;
            (run["status"] != "running").then_some(run)
        })
        .await
    }

    /// The concatenated log text of a run.
    pub async fn log_text(&self, id: i64) -> String {
        let body = self.get(&format!("/api/v1/runs/{id}/logs")).await;
        body["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                format!(
                    "{} {}\n",
                    l["job"].as_str().unwrap_or(""),
                    l["line"].as_str().unwrap_or("")
                )
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.crashed {
            kill_instances(&self.data);
        }
    }
}

/// Deployed instances outlive their server by design; a test leaves none behind. They carry
/// `CONVEYOR_INSTANCE_OF=<data dir>/…` in their environment.
fn kill_instances(data: &Path) {
    let marker = format!("CONVEYOR_INSTANCE_OF={}/", data.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| var.starts_with(marker.as_bytes()))
        {
            // A sandboxed instance's inner processes carry the marker but lead no group.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The jobs of a pipeline whose server dies under it: `flaky` allows a retry, and its first
/// attempt sleeps (its pid in `MARKS/flaky-started`) until the server is killed; `after` needs
/// it. Each records its attempts in `MARKS/flaky` and `MARKS/after`.
pub fn interrupted_once_jobs(marks: &Path) -> String {
    format!(
        r#"  flaky:
    retries: 1
    steps:
      - run: |
          echo "attempt $CONVEYOR_ATTEMPT" >> {marks}/flaky
          if [ "$CONVEYOR_ATTEMPT" = 1 ]; then sleep 300 & echo $! > {marks}/flaky-started; wait; fi
  after:
    needs: [flaky]
    steps:
      - run: echo after >> {marks}/after
"#,
        marks = marks.display()
    )
}

/// What the jobs of [`interrupted_once_jobs`] show once their run was resumed: `flaky`'s first
/// attempt interrupted, its second a success, and `after` run exactly once.
pub fn assert_interrupted_once(run: &Value, marks: &Path) {
    let flaky = job(run, "flaky");
    assert_eq!(flaky["status"], "success");
    assert_eq!(flaky["attempt"], 2);
    let statuses: Vec<(u64, &str)> = flaky["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["attempt"].as_u64().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, vec![(1, "interrupted"), (2, "success")]);
    assert_eq!(job(run, "after")["status"], "success");
    assert_eq!(
        std::fs::read_to_string(marks.join("flaky")).unwrap(),
        "attempt 1\nattempt 2\n"
    );
    assert_eq!(
        std::fs::read_to_string(marks.join("after")).unwrap(),
        "after\n",
        "ran exactly once"
    );
}

/// Polls `check` until it returns `Some`, or panics at the deadline.
pub async fn eventually<T, F, Fut>(deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < end, "condition not met within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A git repository on branch `main` with `files` committed.
pub fn repo(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    commit(dir, files, "initial");
    dir.to_path_buf()
}

pub fn commit(dir: &Path, files: &[(&str, &str)], message: &str) -> String {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

/// The job named `id` of a run's JSON.
pub fn job<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == id)
        .unwrap_or_else(|| panic!("no job {id}"))
}

/// Whether a process is gone (or a zombie awaiting its reaper).
pub fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// The process of an instance in the API's JSON (the local target names instances by pid).
pub fn instance_pid(instance: &Value) -> u64 {
    instance["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("a running local instance has its pid as id: {instance}"))
}

/// SIGKILL to one process, like a crash.
pub fn kill9_pid(pid: i32) {
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success(), "kill -KILL {pid}");
}

pub async fn wait_dead(pid: i32) {
    eventually(Duration::from_secs(10), || async { is_dead(pid).then_some(()) }).await
}

pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
