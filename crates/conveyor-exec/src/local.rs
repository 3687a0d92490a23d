//! The local executor: each step is `sh -e` running its script in its own process group, inside
//! the server's `Sandbox` when it has one, so a timeout or a cancel can kill everything the step
//! started, grandchildren included (in a sandbox, its PID namespace ends with it).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::lines::for_each_line;
use crate::sandbox::{Lifetime, Sandbox, ShellCommand};
use crate::{BoxFuture, Executor, LineSink, StepOutcome, StepSpec, Stream};

/// How long a step gets between SIGTERM and SIGKILL when it is stopped.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Runs steps as local processes, in `sandbox`.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    sandbox: Sandbox,
}

impl LocalExecutor {
    pub fn new(sandbox: Sandbox) -> Self {
        LocalExecutor { sandbox }
    }
}

impl Executor for LocalExecutor {
    fn run_step<'a>(
        &'a self,
        step: StepSpec,
        sink: LineSink,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, std::io::Result<StepOutcome>> {
        Box::pin(run_local(&self.sandbox, step, sink, cancel))
    }

    fn kill_leftovers(&self, marker: &str) -> usize {
        crate::process::kill_marked(marker)
    }
}

async fn run_local(
    sandbox: &Sandbox,
    step: StepSpec,
    sink: LineSink,
    cancel: CancellationToken,
) -> std::io::Result<StepOutcome> {
    let mut command: Command = sandbox.command(&ShellCommand {
        shell: &shell_path(&step.env),
        errexit: true,
        script: &step.script,
        env: &step.env,
        dir: &step.workdir,
        // A step belongs to the server's run: it ends with the server, recovery records it
        // interrupted.
        lifetime: Lifetime::Server,
    })?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let group = child
        .id()
        .map(|id| Pid::from_raw(id as i32))
        .expect("a freshly spawned child has a pid");

    let sink = Mutex::new(sink);
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let read_output = async {
        tokio::join!(
            for_each_line(stdout, |l| deliver(&sink, Stream::Stdout, l)),
            for_each_line(stderr, |l| deliver(&sink, Stream::Stderr, l)),
        )
    };
    let deadline = async {
        match step.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let supervise = async {
        let outcome = tokio::select! {
            status = child.wait() => match status {
                Ok(status) if status.success() => StepOutcome::Succeeded,
                Ok(status) => StepOutcome::Failed { exit_code: status.code() },
                Err(e) => return Err(e),
            },
            () = deadline => {
                stop_group(group, &mut child).await;
                StepOutcome::TimedOut
            }
            () = cancel.cancelled() => {
                stop_group(group, &mut child).await;
                StepOutcome::Cancelled
            }
        };
        // Whatever the step left running in the background would hold its output pipes open: a
        // step's processes never outlive it.
        let _ = killpg(group, Signal::SIGKILL);
        Ok(outcome)
    };
    // Output is read in this same task, alongside the supervision: no task spawn per step.
    let (outcome, _) = tokio::join!(supervise, read_output);
    let outcome = outcome?;
    Ok(outcome)
}

/// `sh` resolved on the step's own PATH. Spawning by absolute path lets std use its cheap spawn
/// (no fork of this multi-threaded process, no failed `execve` per PATH entry): see
/// docs/benchmarks.md.
fn shell_path(env: &[(String, String)]) -> PathBuf {
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or("/usr/bin:/bin", |(_, v)| v.as_str());
    std::env::split_paths(path)
        .map(|dir| dir.join("sh"))
        .find(|candidate| candidate.is_absolute() && candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("/bin/sh"))
}

fn deliver(sink: &Mutex<LineSink>, stream: Stream, line: String) {
    let mut sink = sink.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    (*sink)(stream, line);
}

/// SIGTERM the whole group, then SIGKILL it if the leader has not exited within the grace period.
/// A sandboxed step has no grace: its leader is `bwrap`, which dies of the SIGTERM and takes the
/// step's PID namespace with it (`--die-with-parent`).
async fn stop_group(group: Pid, child: &mut tokio::process::Child) {
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn spec(script: &str, dir: &std::path::Path) -> StepSpec {
        StepSpec {
            script: script.into(),
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("GREETING".into(), "hi".into()),
            ],
            workdir: dir.to_path_buf(),
            timeout: None,
        }
    }

    async fn run(step: StepSpec, cancel: CancellationToken) -> (StepOutcome, Vec<(Stream, String)>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink_lines = lines.clone();
        let outcome = LocalExecutor::new(Sandbox::none("unit tests"))
            .run_step(
                step,
                Box::new(move |s, l| sink_lines.lock().unwrap().push((s, l))),
                cancel,
            )
            .await
            .unwrap();
        let lines = lines.lock().unwrap().clone();
        (outcome, lines)
    }

    #[tokio::test]
    async fn captures_both_streams_with_only_the_given_env() {
        let dir = tempfile::tempdir().unwrap();
        let (outcome, lines) = run(
            spec("echo $GREETING; echo oops >&2; echo ${HOME:-nohome}", dir.path()),
            CancellationToken::new(),
        )
        .await;
        assert_eq!(outcome, StepOutcome::Succeeded);
        assert!(lines.contains(&(Stream::Stdout, "hi".into())));
        assert!(lines.contains(&(Stream::Stderr, "oops".into())));
        assert!(lines.contains(&(Stream::Stdout, "nohome".into())));
    }

    #[tokio::test]
    async fn sh_e_stops_at_the_first_failing_command() {
        let dir = tempfile::tempdir().unwrap();
        let (outcome, lines) = run(spec("false\necho after", dir.path()), CancellationToken::new()).await;
        assert_eq!(outcome, StepOutcome::Failed { exit_code: Some(1) });
        assert!(lines.is_empty());
    }

    #[tokio::test]
    async fn timeout_kills_grandchildren() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let mut step = spec(
            &format!("sh -c 'sleep 300' & echo $! > {}; wait", pidfile.display()),
            dir.path(),
        );
        step.timeout = Some(Duration::from_millis(300));
        let (outcome, _) = run(step, CancellationToken::new()).await;
        assert_eq!(outcome, StepOutcome::TimedOut);
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        assert!(dies_soon(pid).await, "grandchild {pid} survived the timeout");
    }

    /// Whether `pid` is gone (or a zombie waiting to be reaped) within a few seconds.
    async fn dies_soon(pid: i32) -> bool {
        for _ in 0..50 {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            // The state is the field after the parenthesised command name.
            let alive = state
                .as_deref()
                .and_then(|s| s.rsplit_once(')'))
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
            if !alive {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    #[tokio::test]
    async fn cancel_stops_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            trigger.cancel();
        });
        let (outcome, _) = run(spec("sleep 300", dir.path()), cancel).await;
        assert_eq!(outcome, StepOutcome::Cancelled);
    }
}
