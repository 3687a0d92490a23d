//! The local target: each instance is `sh` running its command in its own process group, on its
//! own port, inside the server's `Sandbox` when it has one (the release directory its only
//! writable place; the PID namespace without `--die-with-parent`, so it outlives the server).

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conveyor_exec::process;
use conveyor_exec::sandbox::{Lifetime, Sandbox, ShellCommand};
use conveyor_spec::delivery::StopSignal;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::resources::{self, ProcessTable};
use crate::{
    Blobs, DeployError, InstanceId, InstanceResources, InstanceStatus, ReleaseFile, VersionSpec, health,
};

/// Longest wait between restarts of an instance that keeps dying.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// An instance's log is cut back to its newest half beyond this size.
const MAX_LOG_BYTES: u64 = 8 * 1024 * 1024;

/// Runs versions on this machine: each laid out under `root` (`<root>/<VersionSpec::slot>`) from
/// the blobs of `blobs`.
#[derive(Clone)]
pub struct LocalTarget {
    root: PathBuf,
    blobs: Arc<dyn Blobs>,
    sandbox: Sandbox,
}

/// Where an instance's output goes, inside its version's directory.
use crate::INSTANCE_LOG_DIR as LOG_DIR;

/// A version placed on this machine: its spec and the directory its files are laid out in.
struct Placed {
    spec: VersionSpec,
    dir: PathBuf,
    sandbox: Sandbox,
}

impl std::ops::Deref for Placed {
    type Target = VersionSpec;

    fn deref(&self) -> &VersionSpec {
        &self.spec
    }
}

/// A running version: its supervised instances.
pub struct LocalVersion {
    pub version: String,
    spec: Arc<Placed>,
    instances: Vec<Instance>,
    stop: CancellationToken,
}

/// One supervised instance: its status, its supervisor, and what stops it alone.
struct Instance {
    status: Arc<Mutex<InstanceStatus>>,
    task: JoinHandle<()>,
    stop: CancellationToken,
}

impl LocalTarget {
    /// A target whose instances run without isolation: see [`LocalTarget::with_sandbox`].
    pub fn new(root: PathBuf, blobs: Arc<dyn Blobs>) -> Self {
        LocalTarget {
            root,
            blobs,
            sandbox: Sandbox::none("not configured"),
        }
    }

    /// Runs the instances in `sandbox` (the server's, as for steps).
    pub fn with_sandbox(self, sandbox: Sandbox) -> Self {
        LocalTarget { sandbox, ..self }
    }

    /// Where a slot's files are laid out.
    pub fn dir_of(&self, slot: &str) -> PathBuf {
        self.root.join(slot)
    }

    /// Lays the version's files out afresh, starts every instance and waits until all are
    /// healthy; on failure, stops them all.
    pub async fn start(&self, spec: VersionSpec) -> Result<LocalVersion, DeployError> {
        let placed = self.place(spec)?;
        lay_out(&placed.dir, &placed.files, self.blobs.as_ref())?;
        let slots = (0..placed.instances)
            .map(|_| free_port().map(|addr| (addr, None)))
            .collect::<Result<_, _>>()?;
        launch(placed, slots).await
    }

    fn place(&self, spec: VersionSpec) -> Result<Placed, DeployError> {
        let relative = Path::new(&spec.slot);
        if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(DeployError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("slot '{}' is not a plain relative path", spec.slot),
            )));
        }
        Ok(Placed {
            dir: self.root.join(relative),
            spec,
            sandbox: self.sandbox.clone(),
        })
    }

    /// `Target::recover`: instances a previous server process started outlive it in their own
    /// process groups. When every recorded one still runs with this version's marker in its
    /// environment (not some process that reused the pid), each is supervised again from its pid
    /// and restarted on its port if it dies; otherwise the leftovers are killed and the version
    /// starts afresh. Returns once all are healthy, like `start`.
    pub async fn recover(
        &self,
        spec: VersionSpec,
        recorded: Vec<crate::RecordedInstance>,
    ) -> Result<LocalVersion, DeployError> {
        let marker = marker(&spec.identity);
        let ours: Vec<(SocketAddr, Option<u32>)> = recorded
            .iter()
            .filter_map(|i| {
                i.id.as_ref()
                    .and_then(pid_of)
                    .filter(|pid| process::carries(*pid, &marker))
                    .map(|pid| (i.addr, Some(pid)))
            })
            .collect();
        if !recorded.is_empty() && ours.len() == recorded.len() {
            // Files under running instances are left as they are.
            return launch(self.place(spec)?, ours).await;
        }
        self.reap(&spec.identity);
        self.start(spec).await
    }

    /// `Target::reap`: kills the processes carrying the marker of `identity`.
    pub fn reap(&self, identity: &str) -> usize {
        process::kill_marked(&marker(identity))
    }
}

/// A local instance's id is its process id.
fn id_of(pid: u32) -> InstanceId {
    InstanceId(pid.to_string())
}

fn pid_of(id: &InstanceId) -> Option<u32> {
    id.0.parse().ok()
}

/// The variable in an instance's environment that names its version's identity.
const MARKER: &str = "CONVEYOR_INSTANCE_OF";

fn marker(identity: &str) -> String {
    format!("{MARKER}={identity}")
}

/// Supervises one instance per slot (its address, and the pid of a process to adopt).
async fn launch(spec: Placed, slots: Vec<(SocketAddr, Option<u32>)>) -> Result<LocalVersion, DeployError> {
    std::fs::create_dir_all(spec.dir.join(LOG_DIR))?;
    let spec = Arc::new(spec);
    let stop = CancellationToken::new();
    let mut version = LocalVersion {
        version: spec.version.clone(),
        spec,
        instances: Vec::new(),
        stop,
    };
    if let Err(error) = version.add(slots).await {
        version.stop().await;
        return Err(error);
    }
    Ok(version)
}

/// Starts a supervisor per slot, numbered from `first`; returns them with their readiness.
fn spawn_instances(
    spec: &Arc<Placed>,
    version_stop: &CancellationToken,
    first: usize,
    slots: Vec<(SocketAddr, Option<u32>)>,
) -> (Vec<Instance>, Vec<oneshot::Receiver<Result<(), StartFailure>>>) {
    let mut instances = Vec::new();
    let mut ready = Vec::new();
    for (offset, (addr, adopted)) in slots.into_iter().enumerate() {
        let status = Arc::new(Mutex::new(InstanceStatus {
            index: (first + offset) as u32,
            addr,
            id: adopted.map(id_of),
            healthy: false,
            restarts: 0,
        }));
        let (ready_tx, ready_rx) = oneshot::channel();
        let stop = version_stop.child_token();
        let task = tokio::spawn(supervise(
            spec.clone(),
            status.clone(),
            stop.clone(),
            ready_tx,
            adopted,
        ));
        instances.push(Instance { status, task, stop });
        ready.push(ready_rx);
    }
    (instances, ready)
}

/// Copies `files` (relative path, blob digest) out of `blobs` into a fresh `dir`, the versioned
/// directory a release runs from. Paths that are absolute or climb out with `..` are refused.
fn lay_out(dir: &Path, files: &[ReleaseFile], blobs: &dyn Blobs) -> Result<(), DeployError> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    for file in files {
        let relative = Path::new(&file.path);
        if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(DeployError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("release file '{}' is not a plain relative path", file.path),
            )));
        }
        let source = blobs.path(&file.digest).ok_or_else(|| DeployError::MissingFile {
            path: file.path.clone(),
            digest: file.digest.clone(),
        })?;
        let target = dir.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(source, &target)?;
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    Ok(())
}

impl crate::Target for LocalTarget {
    fn start<'a>(
        &'a self,
        spec: VersionSpec,
    ) -> crate::BoxFuture<'a, Result<Box<dyn crate::RunningVersion>, DeployError>> {
        Box::pin(async move {
            let version = LocalTarget::start(self, spec).await?;
            Ok(Box::new(version) as Box<dyn crate::RunningVersion>)
        })
    }

    fn recover<'a>(
        &'a self,
        spec: VersionSpec,
        recorded: Vec<crate::RecordedInstance>,
    ) -> crate::BoxFuture<'a, Result<Box<dyn crate::RunningVersion>, DeployError>> {
        Box::pin(async move {
            let version = LocalTarget::recover(self, spec, recorded).await?;
            Ok(Box::new(version) as Box<dyn crate::RunningVersion>)
        })
    }

    fn reap(&self, identity: &str) -> usize {
        LocalTarget::reap(self, identity)
    }

    fn local_dir(&self, slot: &str) -> Option<PathBuf> {
        Some(self.dir_of(slot))
    }
}

impl crate::RunningVersion for LocalVersion {
    fn version(&self) -> &str {
        &self.version
    }

    fn status(&self) -> Vec<InstanceStatus> {
        LocalVersion::status(self)
    }

    fn healthy_addrs(&self) -> Vec<SocketAddr> {
        LocalVersion::healthy_addrs(self)
    }

    fn stop(self: Box<Self>) -> crate::BoxFuture<'static, ()> {
        Box::pin(LocalVersion::stop(*self))
    }

    fn grow<'a>(&'a mut self, to: u32) -> crate::BoxFuture<'a, Result<(), DeployError>> {
        Box::pin(LocalVersion::grow(self, to))
    }

    fn shrink(&mut self, to: u32) -> crate::BoxFuture<'static, ()> {
        Box::pin(LocalVersion::shrink(self, to))
    }

    fn resources(&self) -> Vec<InstanceResources> {
        LocalVersion::resources(self)
    }
}

impl LocalVersion {
    pub fn status(&self) -> Vec<InstanceStatus> {
        self.instances.iter().map(|i| lock(&i.status).clone()).collect()
    }

    /// What each instance's process tree uses now: one pass over `/proc` for them all. An
    /// instance between processes (exited, or replaced since its status was read) shows no
    /// processes and zero figures.
    pub fn resources(&self) -> Vec<InstanceResources> {
        let table = ProcessTable::scan();
        self.status()
            .into_iter()
            .map(|status| {
                let usage = status
                    .id
                    .as_ref()
                    .and_then(pid_of)
                    .and_then(|pid| table.usage(pid));
                let usage = usage.unwrap_or_default();
                InstanceResources {
                    index: status.index,
                    id: status.id.filter(|_| usage.processes > 0),
                    processes: usage.processes,
                    rss_bytes: usage.rss_bytes,
                    cpu_seconds: usage.cpu_seconds,
                    open_fds: usage.open_fds,
                    restarts: status.restarts,
                }
            })
            .collect()
    }

    /// Adds instances on `slots` and waits until they are healthy; on failure they are stopped
    /// again and the version is as it was.
    async fn add(&mut self, slots: Vec<(SocketAddr, Option<u32>)>) -> Result<(), DeployError> {
        let (added, ready) = spawn_instances(&self.spec, &self.stop, self.instances.len(), slots);
        let mut failure = None;
        for rx in ready {
            let outcome = rx
                .await
                .unwrap_or_else(|_| Err("the instance's supervisor stopped".into()));
            if let Err(error) = outcome {
                failure = Some(error);
                break;
            }
        }
        match failure {
            None => {
                self.instances.extend(added);
                Ok(())
            }
            Some(error) => {
                stop_all(added).await;
                Err(error.into_deploy_error(&self.spec))
            }
        }
    }

    /// Grows to `to` instances (new ones on free ports), returning once they are healthy.
    pub async fn grow(&mut self, to: u32) -> Result<(), DeployError> {
        let missing = (to as usize).saturating_sub(self.instances.len());
        let slots = (0..missing)
            .map(|_| free_port().map(|addr| (addr, None)))
            .collect::<Result<_, _>>()?;
        self.add(slots).await
    }

    /// Takes the instances beyond `to` out of the version at once (its status and addresses no
    /// longer list them) and returns what stops them, so traffic can be moved off them first.
    pub fn shrink(&mut self, to: u32) -> impl std::future::Future<Output = ()> + Send + 'static {
        let retired = self.instances.split_off((to as usize).min(self.instances.len()));
        stop_all(retired)
    }

    /// Addresses of the instances that are healthy now: what the router should send traffic to.
    pub fn healthy_addrs(&self) -> Vec<SocketAddr> {
        self.status()
            .into_iter()
            .filter(|s| s.healthy)
            .map(|s| s.addr)
            .collect()
    }

    /// Stops every instance gracefully (stop signal, grace period, SIGKILL) and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        stop_all(self.instances).await;
    }
}

/// Stops instances gracefully, all at once, and waits for them.
async fn stop_all(instances: Vec<Instance>) {
    for instance in &instances {
        instance.stop.cancel();
    }
    for instance in instances {
        let _ = instance.task.await;
    }
}

fn lock(status: &Mutex<InstanceStatus>) -> std::sync::MutexGuard<'_, InstanceStatus> {
    status.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why an instance never became ready.
enum StartFailure {
    Spawn(std::io::Error, u32),
    Unhealthy(String, u32),
}

impl From<&str> for StartFailure {
    fn from(text: &str) -> Self {
        StartFailure::Unhealthy(text.to_string(), 0)
    }
}

impl StartFailure {
    fn into_deploy_error(self, spec: &Placed) -> DeployError {
        match self {
            StartFailure::Spawn(error, index) => DeployError::Start {
                version: spec.version.clone(),
                index,
                error,
            },
            StartFailure::Unhealthy(last, index) => DeployError::Unhealthy {
                version: spec.version.clone(),
                index,
                seconds: spec.health.start_timeout.as_secs(),
                last,
            },
        }
    }
}

/// A port nothing listens on right now (the instance binds it a moment later).
fn free_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn signal_of(stop: StopSignal) -> Signal {
    match stop {
        StopSignal::Term => Signal::SIGTERM,
        StopSignal::Int => Signal::SIGINT,
        StopSignal::Quit => Signal::SIGQUIT,
        StopSignal::Hup => Signal::SIGHUP,
        StopSignal::Usr1 => Signal::SIGUSR1,
        StopSignal::Usr2 => Signal::SIGUSR2,
        StopSignal::Kill => Signal::SIGKILL,
    }
}

/// Runs one instance until `stop`: starts it, checks its health, restarts it with backoff when it
/// exits. `ready` gets the outcome of the first start.
async fn supervise(
    spec: Arc<Placed>,
    status: Arc<Mutex<InstanceStatus>>,
    stop: CancellationToken,
    ready: oneshot::Sender<Result<(), StartFailure>>,
    mut adopted: Option<u32>,
) {
    let (index, addr) = {
        let s = lock(&status);
        (s.index, s.addr)
    };
    let log_path = spec.dir.join(LOG_DIR).join(format!("{index}.log"));
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(500);
    loop {
        let spawned = match adopted.take() {
            Some(pid) => Ok(Process::Adopted(pid)),
            None => spawn(&spec, addr, &log_path).map(Process::Child),
        };
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(StartFailure::Spawn(error, index)));
                    return;
                }
                tracing::warn!(version = %spec.version, index, %error, "cannot restart instance");
                if sleep_or_stop(&stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let group = child.id().map(|id| Pid::from_raw(id as i32));
        lock(&status).id = child.id().map(id_of);
        let started = tokio::time::Instant::now();
        let (mut ok_streak, mut fail_streak) = (0u32, 0u32);
        let mut last_error = String::from("not checked yet");
        let mut interval = tokio::time::interval(spec.health.interval);
        let exit = loop {
            tokio::select! {
                code = child.wait() => break code,
                () = stop.cancelled() => {
                    if let Some(group) = group {
                        stop_group(group, &mut child, signal_of(spec.stop_signal), spec.stop_grace).await;
                    }
                    lock(&status).healthy = false;
                    return;
                }
                _ = interval.tick() => {
                    match health::check(addr, spec.health.path.as_deref(), spec.health.timeout).await {
                        Ok(()) => {
                            ok_streak += 1;
                            fail_streak = 0;
                        }
                        Err(error) => {
                            fail_streak += 1;
                            ok_streak = 0;
                            last_error = error.to_string();
                        }
                    }
                    let (became_healthy, became_unhealthy) = {
                        let mut s = lock(&status);
                        let up = ok_streak >= spec.health.healthy_threshold && !s.healthy;
                        let down = fail_streak >= spec.health.unhealthy_threshold && s.healthy;
                        if up || down {
                            s.healthy = up;
                        }
                        (up, down)
                    };
                    if became_healthy {
                        backoff = Duration::from_millis(500);
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(Ok(()));
                        }
                    }
                    if became_unhealthy {
                        tracing::warn!(version = %spec.version, index, error = %last_error, "instance unhealthy");
                    }
                    if ready.is_some() && started.elapsed() >= spec.health.start_timeout {
                        if let Some(group) = group {
                            stop_group(group, &mut child, Signal::SIGKILL, Duration::ZERO).await;
                        }
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(Err(StartFailure::Unhealthy(last_error.clone(), index)));
                        }
                        return;
                    }
                    trim_log(&log_path);
                }
            }
        };
        // Whatever it left behind in its group goes with it.
        if let Some(group) = group {
            let _ = killpg(group, Signal::SIGKILL);
        }
        {
            // The restart is counted as the process goes, so that no status (nor resource
            // sample) shows the instance gone without the restart that replaces it.
            let mut s = lock(&status);
            s.healthy = false;
            s.id = None;
            if ready.is_none() {
                s.restarts += 1;
            }
        }
        let code = exit;
        if let Some(ready) = ready.take() {
            let why = format!(
                "it exited (code {code:?}) before becoming healthy; see {}",
                log_path.display()
            );
            let _ = ready.send(Err(StartFailure::Unhealthy(why, index)));
            return;
        }
        tracing::warn!(version = %spec.version, index, ?code, backoff_ms = backoff.as_millis() as u64, "instance exited; restarting");
        if sleep_or_stop(&stop, backoff).await {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// An instance's process: a child of this server, or one adopted from a previous server process
/// (not our child, so its exit is noticed by polling).
enum Process {
    Child(tokio::process::Child),
    Adopted(u32),
}

impl Process {
    fn id(&self) -> Option<u32> {
        match self {
            Process::Child(child) => child.id(),
            Process::Adopted(pid) => Some(*pid),
        }
    }

    /// Waits for the process to end; its exit code when known.
    async fn wait(&mut self) -> Option<i32> {
        match self {
            Process::Child(child) => child.wait().await.ok().and_then(|s| s.code()),
            Process::Adopted(pid) => {
                while resources::alive(*pid) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                None
            }
        }
    }
}

/// Sleeps; true when `stop` fired meanwhile.
async fn sleep_or_stop(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = stop.cancelled() => true,
    }
}

fn spawn(
    spec: &Placed,
    addr: SocketAddr,
    log_path: &std::path::Path,
) -> std::io::Result<tokio::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)?;
    let err = log.try_clone()?;
    spec.sandbox
        .command(&ShellCommand {
            shell: Path::new("/bin/sh"),
            errexit: false,
            script: &spec.command,
            env: &spec.env,
            dir: &spec.dir,
            lifetime: Lifetime::Detached,
        })?
        // The marker reaches every process of the instance, `bwrap` included: a restarted
        // server finds them all by it.
        .env(MARKER, &spec.identity)
        .env("PORT", addr.port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

/// The stop signal to the whole group, then SIGKILL after the grace period. The grace lasts
/// until the whole group is gone, not just its leader: a sandboxed instance's leader is `bwrap`,
/// which dies of the signal at once while the instance inside shuts down.
async fn stop_group(group: Pid, child: &mut Process, signal: Signal, grace: Duration) {
    let _ = killpg(group, signal);
    let drained = async {
        let _ = child.wait().await;
        let group = group.as_raw() as u32;
        while process::group_alive(group) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    let _ = killpg(group, Signal::SIGKILL);
}

/// Keeps an instance's log bounded: beyond the cap, the file is cut to empty after a copy of it
/// is kept as `N.log.1` (instances append, so they carry on writing at the new end).
fn trim_log(path: &std::path::Path) {
    let too_big = std::fs::metadata(path).is_ok_and(|m| m.len() > MAX_LOG_BYTES);
    if too_big {
        let _ = std::fs::copy(path, path.with_extension("log.1"));
        if let Ok(file) = std::fs::OpenOptions::new().write(true).open(path) {
            let _ = file.set_len(0);
        }
    }
}
