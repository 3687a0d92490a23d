//! The local target with real processes: a small Python HTTP service.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor_deploy::{
    Blobs, DeployError, InstanceId, InstanceStatus, LocalTarget, RecordedInstance, ReleaseFile, VersionSpec,
};
use conveyor_spec::delivery::{Health, StopSignal};

const APP: &str = r#"
import http.server, os, signal, sys, time
def bye(*_):
    print("stopping gracefully", flush=True)
    sys.exit(0)
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, bye)
if os.environ.get("EXIT_AT_ONCE"):
    sys.exit(3)
if os.environ.get("PEEK"):
    print("peek:", os.path.exists(os.environ["PEEK"]), flush=True)
held = []
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/grow":
            # Written, so resident: 32 MiB more.
            held.append(bytearray(b"\x01") * (32 << 20))
        elif self.path == "/burn":
            end = time.process_time() + 0.5
            while time.process_time() < end:
                pass
        elif self.path == "/open":
            held.extend(open(os.devnull) for _ in range(40))
        code = 500 if os.path.exists("unhealthy") else 200
        body = f"{os.environ.get('VERSION')} on {os.environ['PORT']}".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        print("request", self.path, flush=True)
print("listening", flush=True)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// A test's blobs: files of a directory, named by their digest.
struct BlobDir(PathBuf);

impl Blobs for BlobDir {
    fn path(&self, digest: &str) -> Option<PathBuf> {
        Some(self.0.join(digest)).filter(|p| p.is_file())
    }
}

/// A target laying versions out under `dir/releases`, from blobs in `dir/blobs` (the app is
/// blob `app`).
fn target(dir: &Path) -> LocalTarget {
    std::fs::create_dir_all(dir.join("blobs")).unwrap();
    std::fs::write(dir.join("blobs/app"), APP).unwrap();
    LocalTarget::new(dir.join("releases"), Arc::new(BlobDir(dir.join("blobs"))))
}

fn file(path: &str, digest: &str) -> ReleaseFile {
    ReleaseFile {
        path: path.into(),
        digest: digest.into(),
    }
}

fn spec(dir: &Path, extra_env: &[(&str, &str)]) -> VersionSpec {
    let mut env = vec![
        ("PATH".to_string(), "/usr/local/bin:/usr/bin:/bin".to_string()),
        ("VERSION".to_string(), "r1".to_string()),
    ];
    env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    VersionSpec {
        version: "r1".into(),
        identity: format!("{}/r1", dir.display()),
        slot: "r1".into(),
        files: vec![file("app.py", "app")],
        command: "exec python3 app.py".into(),
        env,
        instances: 2,
        health: Health {
            path: Some("/healthz".into()),
            interval: Duration::from_millis(100),
            start_timeout: Duration::from_secs(10),
            ..Health::default()
        },
        stop_signal: StopSignal::Term,
        stop_grace: Duration::from_secs(5),
    }
}

/// The local target names an instance by its process id.
fn pid(status: &InstanceStatus) -> Option<u32> {
    status.id.as_ref().and_then(|id| id.0.parse().ok())
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// SIGKILL to one process, as a crash or the OOM killer would.
fn kill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < end, "{what} did not happen in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get(addr: std::net::SocketAddr) -> String {
    get_path(addr, "/").await
}

async fn get_path(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn instances_start_healthy_serve_and_stop_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let version = target(dir.path()).start(spec(dir.path(), &[])).await.unwrap();
    let addrs = version.healthy_addrs();
    assert_eq!(addrs.len(), 2);
    assert_ne!(addrs[0], addrs[1]);
    for addr in &addrs {
        assert!(get(*addr).await.ends_with(&format!("r1 on {}", addr.port())));
    }
    let pids: Vec<u32> = version.status().iter().map(|s| pid(s).unwrap()).collect();
    version.stop().await;
    for pid in pids {
        assert!(!alive(pid), "instance {pid} outlived stop");
    }
    let log = std::fs::read_to_string(dir.path().join("releases/r1/.conveyor-logs/0.log")).unwrap();
    assert!(
        log.contains("listening") && log.contains("request /healthz"),
        "{log}"
    );
    assert!(
        log.contains("stopping gracefully"),
        "the stop signal came first: {log}"
    );
}

/// In the sandbox (bubblewrap, which CI installs): the instance cannot see the blobs beside its
/// release directory, still gets its stop signal and its grace period (its leader, `bwrap`, dies
/// of the signal at once), and nothing of it is left afterwards.
#[tokio::test]
async fn a_sandboxed_instance_sees_only_its_release_and_still_stops_gracefully() {
    use conveyor_exec::sandbox::Sandbox;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::bubblewrap("/usr/local/bin:/usr/bin:/bin", vec![dir.path().to_path_buf()])
        .await
        .expect("bubblewrap works here");
    let blob = dir.path().join("blobs/app");
    let mut s = spec(dir.path(), &[("PEEK", blob.to_str().unwrap())]);
    s.instances = 1;
    let marker = format!("CONVEYOR_INSTANCE_OF={}", s.identity);
    let version = target(dir.path()).with_sandbox(sandbox).start(s).await.unwrap();
    let addr = version.healthy_addrs()[0];
    assert!(get(addr).await.ends_with(&format!("r1 on {}", addr.port())));
    let leader = pid(&version.status()[0]).unwrap();
    assert!(
        conveyor_exec::process::carries(leader, &marker),
        "found again by its marker"
    );
    version.stop().await;
    assert_eq!(
        conveyor_exec::process::kill_marked(&marker),
        0,
        "nothing left running"
    );
    let log = std::fs::read_to_string(dir.path().join("releases/r1/.conveyor-logs/0.log")).unwrap();
    assert!(log.contains("peek: False"), "the blobs are hidden: {log}");
    assert!(
        log.contains("stopping gracefully"),
        "the stop signal came first: {log}"
    );
}

#[tokio::test]
async fn a_crashed_instance_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), &[]);
    s.instances = 1;
    let version = target(dir.path()).start(s).await.unwrap();
    let first = pid(&version.status()[0]).unwrap();
    kill(first);
    eventually("a restart", || {
        let st = &version.status()[0];
        st.restarts == 1 && st.healthy && pid(st).is_some_and(|p| p != first)
    })
    .await;
    version.stop().await;
}

#[tokio::test]
async fn an_instance_that_never_gets_healthy_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), &[]);
    s.files.push(file("unhealthy", "app"));
    s.health.start_timeout = Duration::from_secs(1);
    let err = target(dir.path()).start(s).await.err().expect("the start fails");
    let DeployError::Unhealthy {
        version,
        last,
        seconds,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!((version.as_str(), *seconds), ("r1", 1));
    assert_eq!(last, "GET /healthz answered 500");
}

#[tokio::test]
async fn an_instance_that_exits_at_once_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let err = target(dir.path())
        .start(spec(dir.path(), &[("EXIT_AT_ONCE", "1")]))
        .await
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(
        text.contains("it exited (code Some(3)) before becoming healthy"),
        "{text}"
    );
}

#[tokio::test]
async fn an_instance_ignoring_the_stop_signal_is_killed_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), &[("IGNORE_TERM", "1")]);
    s.instances = 1;
    s.stop_grace = Duration::from_millis(300);
    let version = target(dir.path()).start(s).await.unwrap();
    let pid = pid(&version.status()[0]).unwrap();
    version.stop().await;
    assert!(!alive(pid));
}

#[tokio::test]
async fn through_the_target_trait_the_release_is_laid_out_from_its_blobs() {
    use conveyor_deploy::Target;
    let dir = tempfile::tempdir().unwrap();
    let target: Box<dyn Target> = Box::new(target(dir.path()));
    for (files, refused) in [
        (vec![file("../evil", "app")], "not a plain relative path"),
        (
            vec![file("app.py", "nope")],
            "release file app.py (nope) is missing from the store",
        ),
    ] {
        let mut s = spec(dir.path(), &[]);
        s.files = files;
        let error = target.start(s).await.err().expect("refused").to_string();
        assert!(error.contains(refused), "{error}");
    }
    assert!(!dir.path().join("evil").exists());

    let mut s = spec(dir.path(), &[]);
    s.files = vec![file("build/app.py", "app")];
    s.command = "exec python3 build/app.py".into();
    s.instances = 1;
    let running = target.start(s).await.unwrap();
    assert_eq!(running.version(), "r1");
    assert_eq!(running.healthy_addrs().len(), 1);
    assert_eq!(target.local_dir("r1"), Some(dir.path().join("releases/r1")));
    assert!(dir.path().join("releases/r1/build/app.py").is_file());
    let sampled = running.resources();
    assert_eq!(sampled.len(), 1);
    assert_eq!(sampled[0].processes, 1);
    running.stop().await;
}

/// What a killed server leaves behind: the version laid out in `dir/releases/r1` and an instance
/// running from there in its own process group, on a port of its own, carrying `marker`
/// (`NAME=VALUE`) in its environment when given.
fn leftover(dir: &Path, marker: Option<&str>) -> (std::net::SocketAddr, u32) {
    use std::os::unix::process::CommandExt as _;
    let laid_out = dir.join("releases/r1");
    std::fs::create_dir_all(&laid_out).unwrap();
    std::fs::write(laid_out.join("app.py"), APP).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = std::process::Command::new("python3");
    command
        .arg("app.py")
        .current_dir(&laid_out)
        .env("PORT", port.to_string())
        .env("VERSION", "r1")
        .process_group(0);
    if let Some((name, value)) = marker.and_then(|m| m.split_once('=')) {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let pid = child.id();
    // The test process is its parent; reap it when it dies, as init would have.
    std::thread::spawn(move || child.wait());
    (format!("127.0.0.1:{port}").parse().unwrap(), pid)
}

#[tokio::test]
async fn a_process_that_is_not_ours_is_never_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), &[]);
    s.instances = 1;
    // A process on the recorded pid without the version's marker: it reused the pid.
    let target = target(dir.path());
    let (addr, stranger) = leftover(dir.path(), None);
    // Started, as a leftover long has: else laying the version out afresh could remove its
    // script before it was read, and it would exit by itself.
    eventually("the stranger listening", || {
        std::net::TcpStream::connect(addr).is_ok()
    })
    .await;
    let recorded = vec![RecordedInstance {
        addr,
        id: Some(InstanceId(stranger.to_string())),
    }];
    let version = target.recover(s, recorded).await.unwrap();
    let started = pid(&version.status()[0]).unwrap();
    assert_ne!(started, stranger, "started afresh");
    assert!(alive(stranger), "a process that is not ours is left alone");
    version.stop().await;
    kill(stranger);
}

#[tokio::test]
async fn instances_left_by_a_previous_server_are_adopted_and_supervised() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), &[]);
    s.instances = 1;
    let target = target(dir.path());
    let (addr, leftover_pid) = leftover(dir.path(), Some(&format!("CONVEYOR_INSTANCE_OF={}", s.identity)));
    let port = addr.port();
    // Until it has exec'd, a just-forked process shows its parent's environment: wait for it to
    // serve, as a leftover of a crashed server long has.
    eventually("the leftover listening", || {
        std::net::TcpStream::connect(addr).is_ok()
    })
    .await;
    let recorded = vec![RecordedInstance {
        addr,
        id: Some(InstanceId(leftover_pid.to_string())),
    }];
    let version = target.recover(s, recorded).await.unwrap();
    assert_eq!(version.healthy_addrs(), vec![addr]);
    assert_eq!(
        pid(&version.status()[0]),
        Some(leftover_pid),
        "the same process, not a new one"
    );

    // Adopted processes are supervised too: killed, it is replaced on the same port.
    kill(leftover_pid);
    eventually("a replacement", || {
        let st = &version.status()[0];
        st.restarts == 1 && st.healthy && pid(st).is_some_and(|p| p != leftover_pid)
    })
    .await;
    assert!(get(addr).await.ends_with(&format!("r1 on {port}")));
    let pid = pid(&version.status()[0]).unwrap();
    version.stop().await;
    assert!(!alive(pid));
}

#[tokio::test]
async fn a_version_grows_and_shrinks_one_instance_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), &[]);
    s.instances = 1;
    let mut version = target(dir.path()).start(s).await.unwrap();
    version.grow(3).await.unwrap();
    let all = version.status();
    assert_eq!(all.iter().map(|i| i.index).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(all.iter().all(|i| i.healthy));
    let stopping = version.shrink(1);
    // Out of the version at once, before they are stopped: traffic can move off them first.
    assert_eq!(version.healthy_addrs(), vec![all[0].addr]);
    stopping.await;
    for gone in &all[1..] {
        assert!(!alive(pid(gone).unwrap()));
    }
    assert!(alive(pid(&all[0]).unwrap()));
    version.stop().await;
}

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn resources_are_summed_over_each_instances_process_tree() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), &[]);
    // Under `sh -c`: a child that burns 0.3 s of CPU and exits (waited for by the shell, which
    // then becomes the app), and a worker forked beside the app that holds 16 MiB.
    s.command = "python3 -c 'import time
end = time.process_time() + 0.3
while time.process_time() < end: pass'
python3 -c 'import time; held = bytearray(b\"\\1\") * (16 << 20); time.sleep(600)' &
exec python3 app.py"
        .into();
    let version = target(dir.path()).start(s).await.unwrap();
    let addrs = version.healthy_addrs();
    eventually("both trees with their worker", || {
        version
            .resources()
            .iter()
            .all(|r| r.processes == 2 && r.rss_bytes > 16 * MIB)
    })
    .await;
    let before = version.resources();
    assert_eq!(before.iter().map(|r| r.index).collect::<Vec<_>>(), vec![0, 1]);
    for r in &before {
        assert!(
            r.cpu_seconds >= 0.29,
            "the exited burner's CPU time counts: {r:?}"
        );
        assert!(r.open_fds >= 3 * 2, "stdio of both processes at least: {r:?}");
        assert_eq!(r.restarts, 0);
        assert_eq!(r.id, version.status()[r.index as usize].id);
    }

    get_path(addrs[0], "/grow").await;
    get_path(addrs[0], "/open").await;
    get_path(addrs[1], "/burn").await;
    let after = version.resources();
    let grown = after[0].rss_bytes as f64 - before[0].rss_bytes as f64;
    assert!(
        (31.0..40.0).contains(&(grown / MIB as f64)),
        "32 MiB allocated, RSS grew by {} MiB",
        grown / MIB as f64
    );
    let other = after[1].rss_bytes as f64 - before[1].rss_bytes as f64;
    assert!(other.abs() < 4.0 * MIB as f64, "the other instance: {other}");
    let opened = after[0].open_fds - before[0].open_fds;
    assert!(
        (40..=43).contains(&opened),
        "40 files opened, {opened} more descriptors"
    );
    let burnt = after[1].cpu_seconds - before[1].cpu_seconds;
    assert!(burnt >= 0.45, "0.5 s of CPU burnt, {burnt} s counted");
    let idle = after[0].cpu_seconds - before[0].cpu_seconds;
    assert!(idle < burnt / 2.0, "the other one {idle} s, the burner {burnt} s");

    // Killed, the instance is replaced: a new tree whose counters start again, and a restart.
    let first = pid(&version.status()[1]).unwrap();
    kill(first);
    eventually("a restarted tree", || {
        let r = &version.resources()[1];
        r.restarts == 1 && r.processes == 2 && r.id.as_ref().is_some_and(|id| id.0 != first.to_string())
    })
    .await;
    let restarted = &version.resources()[1];
    assert!(restarted.cpu_seconds < after[1].cpu_seconds, "{restarted:?}");
    assert_eq!(version.resources()[0].restarts, 0);
    version.stop().await;
}
