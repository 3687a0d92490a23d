//! Isolation of the server's local processes — steps, hooks, checks and deployed instances — from
//! the server itself, with bubblewrap (`bwrap`).
//!
//! Each process gets a new mount namespace holding only the host's system directories
//! (read-only), a fresh `/proc` and a minimal `/dev`, a private `/tmp` (and `HOME`/`TMPDIR`),
//! and one writable directory of the host: its workspace or release directory. The server's data
//! directory is covered by an empty tmpfs, so its database, keys, CAS, logs, other workspaces and
//! other releases do not exist in there. A new PID namespace hides every process outside the
//! sandbox (the server's `/proc/PID/environ` included); new IPC and UTS namespaces come along.
//! The network namespace is the host's on purpose: steps fetch dependencies, and instances
//! listen on the loopback ports that the router and the health checks reach. Capabilities are
//! dropped (a server running as root runs its sandboxed processes as uid 0 without any).
//!
//! Why bubblewrap rather than `unshare(1)` or Landlock: bubblewrap builds the whole mount table
//! from an argument list — nothing of the host is visible unless named — which is the policy we
//! want, as one pure function ([`bwrap_args`]) a table test can check; it works unprivileged
//! through user namespaces and as root alike, drops capabilities and sets `no_new_privs`, and it
//! is one Debian package. `unshare(1)` gives namespaces but leaves the mount table to a script of
//! `mount` calls (and needs root for most of them); Landlock restricts file access (and keeps
//! the host's view otherwise) but hides no processes, so `/proc/$PPID/environ` would need a
//! second mechanism, and older kernels lack it. This crate forbids `unsafe`, which rules out
//! calling `unshare(2)`/`clone(2)` between fork and exec ourselves.
//!
//! Whatever the isolation, a script never travels in argv (anyone can read
//! `/proc/PID/cmdline`): the shell gets it in the `CONVEYOR_SCRIPT` variable, which it removes
//! from its environment before running it (see [`RUN_SCRIPT`]).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The variable that carries a script to the shell.
pub const SCRIPT_VAR: &str = "CONVEYOR_SCRIPT";

/// What the shell runs (`sh -c RUN_SCRIPT`): the script from `$CONVEYOR_SCRIPT`, which is first
/// removed from the environment (the children of the script never see it) and then from the
/// shell's own variables by the first line of what `eval` runs.
pub const RUN_SCRIPT: &str = "__conveyor_script=$CONVEYOR_SCRIPT; unset CONVEYOR_SCRIPT; eval \"unset __conveyor_script\n$__conveyor_script\"";

/// The host's directories a sandboxed process may read, when they exist: programs, libraries and
/// the system's configuration. Nothing else of the host is visible.
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];

/// A path of the host shown read-only inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemPath {
    /// Bound as it is (a directory or a file).
    ReadOnly(PathBuf),
    /// Recreated as the same symlink (merged-`/usr` systems have `/bin -> usr/bin`).
    Symlink { path: PathBuf, target: PathBuf },
}

impl SystemPath {
    fn path(&self) -> &Path {
        match self {
            SystemPath::ReadOnly(path) | SystemPath::Symlink { path, .. } => path,
        }
    }
}

/// How long a sandboxed process may live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// No longer than the server (steps, hooks, checks): `--die-with-parent`, and its own session
    /// so it cannot push input into the terminal the server may run in.
    Server,
    /// Beyond the server (deployed instances, adopted after a restart by the marker in their
    /// environment): it stays in the process group it was started in, so the stop signal sent
    /// to that group reaches it.
    Detached,
}

/// What one sandboxed process may see: the input of [`bwrap_args`].
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    /// Shown read-only.
    pub system: &'a [SystemPath],
    /// Given a private, empty, writable tmpfs: `/tmp`, and the process's `HOME` and `TMPDIR`.
    pub private: &'a [PathBuf],
    /// Covered by an empty tmpfs: the server's data directory.
    pub hidden: &'a [PathBuf],
    /// The one host directory it may write, bound at the same path, where it starts.
    pub writable: &'a Path,
    pub lifetime: Lifetime,
}

/// The arguments of `bwrap` (before `--` and the command) for `policy`. Later mounts go over
/// earlier ones: system, then private scratch, then the hidden data directory, then the writable
/// directory (usually inside it).
pub fn bwrap_args(policy: &Policy<'_>) -> Vec<OsString> {
    let flag = OsStr::new;
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |parts: &[&OsStr]| args.extend(parts.iter().map(OsString::from));
    if policy.lifetime == Lifetime::Server {
        push(&[flag("--die-with-parent"), flag("--new-session")]);
    }
    push(&[
        flag("--unshare-pid"),
        flag("--unshare-ipc"),
        flag("--unshare-uts"),
        flag("--unshare-cgroup-try"),
        flag("--cap-drop"),
        flag("ALL"),
    ]);
    for path in policy.system {
        match path {
            SystemPath::ReadOnly(p) => push(&[flag("--ro-bind"), p.as_os_str(), p.as_os_str()]),
            SystemPath::Symlink { path, target } => {
                push(&[flag("--symlink"), target.as_os_str(), path.as_os_str()])
            }
        }
    }
    push(&[flag("--proc"), flag("/proc"), flag("--dev"), flag("/dev")]);
    for dir in policy.private.iter().chain(policy.hidden) {
        push(&[flag("--tmpfs"), dir.as_os_str()]);
    }
    let writable = policy.writable.as_os_str();
    push(&[flag("--bind"), writable, writable, flag("--chdir"), writable]);
    args
}

/// The private scratch directories of a process with environment `env`: `/tmp`, and its `HOME`
/// and `TMPDIR` when they are absolute and apart from the system directories (a tmpfs over
/// `/usr` would hide the programs; one inside `/etc` needs a mount point there).
pub fn private_dirs(env: &[(String, String)], system: &[SystemPath]) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/tmp")];
    for (_, value) in env.iter().filter(|(k, _)| k == "HOME" || k == "TMPDIR") {
        let dir = PathBuf::from(value);
        let apart = system
            .iter()
            .all(|s| !dir.starts_with(s.path()) && !s.path().starts_with(&dir));
        if dir.is_absolute() && apart && !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// Why a sandbox cannot be had on this machine.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("bwrap not found on PATH (install bubblewrap)")]
    NotFound,
    #[error("bwrap cannot create a sandbox here: {0}")]
    Refused(String),
    #[error("cannot try bwrap: {0}")]
    Io(#[from] std::io::Error),
}

/// A shell command to start: `script` run by `shell` in `dir`, with exactly `env`.
#[derive(Debug, Clone)]
pub struct ShellCommand<'a> {
    pub shell: &'a Path,
    /// `sh -e`: stop at the first failing command (steps, hooks, checks).
    pub errexit: bool,
    pub script: &'a str,
    pub env: &'a [(String, String)],
    /// Its working directory, the only one it may write when sandboxed.
    pub dir: &'a Path,
    pub lifetime: Lifetime,
}

/// How this server starts its local processes: inside bubblewrap, or (when the machine cannot
/// provide it, or the operator turned it off) as plain children with the server's privileges.
#[derive(Debug, Clone)]
pub struct Sandbox {
    bwrap: Option<Bwrap>,
    /// What `/readyz` and the start-up log say about it.
    description: String,
}

#[derive(Debug, Clone)]
struct Bwrap {
    program: PathBuf,
    system: Vec<SystemPath>,
    hidden: Vec<PathBuf>,
}

impl Sandbox {
    /// No isolation, for `reason` (e.g. `bwrap not found`).
    pub fn none(reason: impl std::fmt::Display) -> Sandbox {
        Sandbox {
            bwrap: None,
            description: format!("none: {reason} — steps and instances run with the server's privileges"),
        }
    }

    /// Bubblewrap, found on `search_path` (the server's `PATH`), hiding `hidden` (the data
    /// directory, which must exist); checked by starting one sandboxed `true`, so a machine
    /// that refuses namespaces is known at start rather than at the first step.
    pub async fn bubblewrap(search_path: &str, hidden: Vec<PathBuf>) -> Result<Sandbox, Unavailable> {
        let program = std::env::split_paths(search_path)
            .map(|dir| dir.join("bwrap"))
            .find(|candidate| candidate.is_absolute() && candidate.is_file())
            .ok_or(Unavailable::NotFound)?;
        let mut hidden = hidden
            .into_iter()
            .map(|dir| std::path::absolute(&dir))
            .collect::<std::io::Result<Vec<_>>>()?;
        hidden.sort();
        hidden.dedup();
        let probe_dir = hidden.first().cloned().unwrap_or_else(|| PathBuf::from("/tmp"));
        let sandbox = Sandbox {
            bwrap: Some(Bwrap {
                program,
                system: system_paths(),
                hidden,
            }),
            description: "bwrap: new mount, PID, IPC and UTS namespaces, host network; only the \
                          workspace or release directory is writable, the data directory is hidden"
                .into(),
        };
        let output = sandbox
            .command(&ShellCommand {
                shell: Path::new("/bin/sh"),
                errexit: true,
                script: "true",
                env: &[("PATH".into(), "/usr/bin:/bin".into())],
                dir: &probe_dir,
                lifetime: Lifetime::Server,
            })?
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            return Err(Unavailable::Refused(match stderr.is_empty() {
                true => format!("it exited with {}", output.status),
                false => stderr,
            }));
        }
        Ok(sandbox)
    }

    pub fn is_isolated(&self) -> bool {
        self.bwrap.is_some()
    }

    /// One sentence on how local processes are isolated (or why they are not).
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// The command that starts `shell` — inside the sandbox when there is one — with nothing
    /// but `shell.env` (and the script, in `CONVEYOR_SCRIPT`) in its environment: the caller
    /// adds stdio, its process group and any variable of its own.
    pub fn command(&self, shell: &ShellCommand<'_>) -> std::io::Result<tokio::process::Command> {
        let flags: &[&str] = if shell.errexit { &["-e", "-c"] } else { &["-c"] };
        let mut command = match &self.bwrap {
            None => {
                let mut command = tokio::process::Command::new(shell.shell);
                command.current_dir(shell.dir);
                command
            }
            Some(bwrap) => {
                // bwrap mounts at absolute paths; the variables that name the directory (the
                // workspace marker) keep the path as given, which is the same directory.
                let writable = std::path::absolute(shell.dir)?;
                let private = private_dirs(shell.env, &bwrap.system);
                let mut command = tokio::process::Command::new(&bwrap.program);
                command
                    .args(bwrap_args(&Policy {
                        system: &bwrap.system,
                        private: &private,
                        hidden: &bwrap.hidden,
                        writable: &writable,
                        lifetime: shell.lifetime,
                    }))
                    .arg("--")
                    .arg(shell.shell);
                command
            }
        };
        command
            .args(flags)
            .arg(RUN_SCRIPT)
            .env_clear()
            .envs(shell.env.iter().map(|(k, v)| (k, v)))
            .env(SCRIPT_VAR, shell.script);
        Ok(command)
    }
}

/// The system directories of this machine, as they are: directories bound, symlinks recreated.
/// `/etc/resolv.conf` often points outside them (systemd-resolved's `/run/...`): its target is
/// bound too, or steps would have no DNS.
fn system_paths() -> Vec<SystemPath> {
    let mut paths: Vec<SystemPath> = SYSTEM_DIRS
        .iter()
        .map(PathBuf::from)
        .filter_map(|path| {
            let meta = std::fs::symlink_metadata(&path).ok()?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).ok()?;
                Some(SystemPath::Symlink { path, target })
            } else {
                Some(SystemPath::ReadOnly(path))
            }
        })
        .collect();
    if let Ok(resolv) = std::fs::canonicalize("/etc/resolv.conf") {
        let covered = paths
            .iter()
            .any(|p| matches!(p, SystemPath::ReadOnly(dir) if resolv.starts_with(dir)));
        if !covered {
            paths.push(SystemPath::ReadOnly(resolv));
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn merged_usr() -> Vec<SystemPath> {
        vec![
            SystemPath::ReadOnly("/usr".into()),
            SystemPath::Symlink {
                path: "/bin".into(),
                target: "usr/bin".into(),
            },
            SystemPath::ReadOnly("/etc".into()),
        ]
    }

    #[test]
    fn policies_become_bwrap_arguments() {
        let system = merged_usr();
        let data = [PathBuf::from("/srv/conveyor")];
        let tmp = [PathBuf::from("/tmp")];
        let cases: &[(&str, Policy<'_>, &str)] = &[
            (
                "a step: dies with the server, only its workspace writable",
                Policy {
                    system: &system,
                    private: &tmp,
                    hidden: &data,
                    writable: Path::new("/srv/conveyor/work/run-1/build-1"),
                    lifetime: Lifetime::Server,
                },
                "--die-with-parent --new-session --unshare-pid --unshare-ipc --unshare-uts \
                 --unshare-cgroup-try --cap-drop ALL --ro-bind /usr /usr --symlink usr/bin /bin \
                 --ro-bind /etc /etc --proc /proc --dev /dev --tmpfs /tmp --tmpfs /srv/conveyor \
                 --bind /srv/conveyor/work/run-1/build-1 /srv/conveyor/work/run-1/build-1 \
                 --chdir /srv/conveyor/work/run-1/build-1",
            ),
            (
                "an instance: outlives the server, in its process group; its release directory writable",
                Policy {
                    system: &system[..1],
                    private: &tmp,
                    hidden: &data,
                    writable: Path::new("/srv/conveyor/releases/shop/prod/r1-d1"),
                    lifetime: Lifetime::Detached,
                },
                "--unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup-try --cap-drop ALL \
                 --ro-bind /usr /usr --proc /proc --dev /dev --tmpfs /tmp --tmpfs /srv/conveyor \
                 --bind /srv/conveyor/releases/shop/prod/r1-d1 /srv/conveyor/releases/shop/prod/r1-d1 \
                 --chdir /srv/conveyor/releases/shop/prod/r1-d1",
            ),
        ];
        for (what, policy, expected) in cases {
            let args = bwrap_args(policy);
            assert_eq!(
                words(&args),
                expected.split_whitespace().collect::<Vec<_>>().join(" "),
                "{what}"
            );
            assert!(
                !args.iter().any(|a| a == "--share-net" || a == "--unshare-net"),
                "{what}: the host network stays"
            );
        }
    }

    #[test]
    fn the_data_directory_is_hidden_before_the_workspace_is_bound() {
        let system = merged_usr();
        let args = bwrap_args(&Policy {
            system: &system,
            private: &[PathBuf::from("/tmp")],
            hidden: &[PathBuf::from("/tmp/x/data")],
            writable: Path::new("/tmp/x/data/work/run-1/a-1"),
            lifetime: Lifetime::Server,
        });
        let at = |flag: &str, path: &str| {
            args.windows(2)
                .position(|w| w[0] == flag && w[1] == path)
                .unwrap_or_else(|| panic!("{flag} {path} in {}", words(&args)))
        };
        assert!(at("--tmpfs", "/tmp") < at("--tmpfs", "/tmp/x/data"));
        assert!(at("--tmpfs", "/tmp/x/data") < at("--bind", "/tmp/x/data/work/run-1/a-1"));
    }

    #[test]
    fn home_and_tmpdir_get_private_scratch_unless_they_touch_the_system() {
        let system = merged_usr();
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        // (the process's variables, its private directories)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case<'_>] = &[
            (&[], &["/tmp"]),
            (
                &[("HOME", "/home/ci"), ("TMPDIR", "/var/tmp")],
                &["/tmp", "/home/ci", "/var/tmp"],
            ),
            (&[("HOME", "/tmp"), ("TMPDIR", "/tmp")], &["/tmp"]),
            (&[("HOME", "/")], &["/tmp"]),
            (&[("HOME", "/usr")], &["/tmp"]),
            (&[("HOME", "/etc/ci")], &["/tmp"]),
            (&[("HOME", "relative")], &["/tmp"]),
            (&[("OTHER", "/srv")], &["/tmp"]),
        ];
        for (vars, expected) in cases {
            let dirs = private_dirs(&env(vars), &system);
            let expected: Vec<PathBuf> = expected.iter().map(PathBuf::from).collect();
            assert_eq!(dirs, expected, "{vars:?}");
        }
    }

    fn std_of(command: tokio::process::Command) -> (Vec<String>, Vec<(String, String)>) {
        let command = command.as_std();
        let args = std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let env = command
            .get_envs()
            .filter_map(|(k, v)| {
                Some((
                    k.to_string_lossy().into_owned(),
                    v?.to_string_lossy().into_owned(),
                ))
            })
            .collect();
        (args, env)
    }

    #[test]
    fn the_script_travels_in_the_environment_not_in_argv() {
        let env = [("PATH".to_string(), "/usr/bin:/bin".to_string())];
        let shell = ShellCommand {
            shell: Path::new("/bin/sh"),
            errexit: true,
            script: "echo hunter2",
            env: &env,
            dir: Path::new("/tmp"),
            lifetime: Lifetime::Server,
        };
        let (args, vars) = std_of(Sandbox::none("test").command(&shell).unwrap());
        assert_eq!(args, ["/bin/sh", "-e", "-c", RUN_SCRIPT]);
        assert!(vars.contains(&(SCRIPT_VAR.to_string(), "echo hunter2".to_string())));
        assert!(vars.contains(&env[0]));
        assert!(!args.iter().any(|a| a.contains("hunter2")));
    }

    #[tokio::test]
    async fn the_shell_runs_the_script_without_passing_it_on() {
        let env = [("PATH".to_string(), "/usr/bin:/bin".to_string())];
        let script = "set -u\nfirst=1\necho \"${CONVEYOR_SCRIPT:-gone} ${__conveyor_script:-gone} $first\"\nsh -c 'echo child ${CONVEYOR_SCRIPT:-gone}'\nfalse\necho unreachable";
        let output = Sandbox::none("test")
            .command(&ShellCommand {
                shell: Path::new("/bin/sh"),
                errexit: true,
                script,
                env: &env,
                dir: Path::new("/"),
                lifetime: Lifetime::Server,
            })
            .unwrap()
            .output()
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "gone gone 1\nchild gone\n"
        );
        assert_eq!(output.status.code(), Some(1), "sh -e stops at `false`");
    }
}
