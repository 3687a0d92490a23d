//! What a local instance's processes use, read from `/proc` (Linux only): resident memory, CPU
//! time and open file descriptors, summed over the instance's whole process tree (its `sh -c`,
//! what that runs, and the workers they fork). One pass over `/proc/<pid>/stat` finds the trees;
//! only their members' `fd` directories are listed. A process that vanishes between the listing
//! and the reading is skipped: it no longer uses anything.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// The fields of one `/proc/<pid>/stat` line that are used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    pid: u32,
    ppid: u32,
    pgrp: u32,
    /// Exited, not yet waited for (`Z`, or `X` while being torn down).
    zombie: bool,
    /// `utime + stime + cutime + cstime` in clock ticks: the process's own CPU time and that of
    /// the children it has waited for (which the kernel folds into the waiter's `c…` fields).
    ticks: u64,
    rss_pages: u64,
}

/// Parses a stat line. The command name (field 2) is in parentheses and may itself contain
/// spaces and parentheses, so the fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let (head, rest) = text.rsplit_once(')')?;
    let pid = head.split_once(" (")?.0.trim().parse().ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // Counted from field 3 (state): utime is field 14, rss field 24.
    let field = |n: usize| fields.get(n - 3).copied();
    let number = |n: usize| field(n)?.parse::<u64>().ok();
    // cutime and cstime are signed in the kernel's format, never negative in practice.
    let signed = |n: usize| field(n)?.parse::<i64>().ok().map(|v| v.max(0).unsigned_abs());
    let state = field(3)?;
    Some(Stat {
        pid,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        zombie: state == "Z" || state == "X",
        ticks: number(14)? + number(15)? + signed(16)? + signed(17)?,
        rss_pages: number(24)?,
    })
}

fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `pid` runs (a zombie does not count: it has exited).
pub(crate) fn alive(pid: u32) -> bool {
    read_stat(pid).is_some_and(|s| !s.zombie)
}

/// Clock ticks per second of the `/proc` times. `sysconf` answers on every Linux; should it
/// not, the kernel's `USER_HZ` is 100 on every architecture Conveyor ships for.
fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| sysconf_or(nix::unistd::SysconfVar::CLK_TCK, 100) as f64)
}

/// Bytes per page of `rss`. 4 KiB is only the fallback: arm64 kernels may use 16 or 64 KiB.
fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| sysconf_or(nix::unistd::SysconfVar::PAGE_SIZE, 4096))
}

fn sysconf_or(var: nix::unistd::SysconfVar, fallback: u64) -> u64 {
    nix::unistd::sysconf(var)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(fallback)
}

/// What one process tree uses at a moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct TreeUsage {
    /// Live processes in the tree (exited ones waiting to be reaped are not counted).
    pub processes: u32,
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
    pub open_fds: u64,
}

/// Every process on the machine at one moment, by pid, with who forked whom.
pub(crate) struct ProcessTable {
    stats: HashMap<u32, Stat>,
    children: HashMap<u32, Vec<u32>>,
}

impl ProcessTable {
    /// One pass over `/proc`: a stat read per process.
    pub(crate) fn scan() -> Self {
        let stats: HashMap<u32, Stat> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(read_stat)
            .map(|s| (s.pid, s))
            .collect();
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for s in stats.values() {
            children.entry(s.ppid).or_default().push(s.pid);
        }
        Self { stats, children }
    }

    /// The tree rooted at `root`: the root, its process group (the local target starts each
    /// instance as the leader of its own group, so a member reparented to init when its parent
    /// died is still found), and every descendant of those by parent pid (so a worker that moved
    /// to a group or session of its own is found too). A daemon that both left the group and was
    /// reparented is out of reach; no supervised service should do that. `None` when the root
    /// does not run.
    fn tree(&self, root: u32) -> Option<Vec<&Stat>> {
        self.stats.get(&root).filter(|s| !s.zombie)?;
        let mut queue: Vec<u32> = std::iter::once(root)
            .chain(self.stats.values().filter(|s| s.pgrp == root).map(|s| s.pid))
            .collect();
        let mut seen = HashSet::new();
        let mut members = Vec::new();
        while let Some(pid) = queue.pop() {
            if !seen.insert(pid) {
                continue;
            }
            if let Some(stat) = self.stats.get(&pid) {
                members.push(stat);
            }
            queue.extend(self.children.get(&pid).into_iter().flatten());
        }
        Some(members)
    }

    /// What the tree rooted at `root` uses. CPU time counts the tree's live processes, the
    /// exited ones not yet reaped, and every descendant that a member of the tree has reaped
    /// (through its `cutime`/`cstime`), so it only grows while the root runs; it starts from
    /// zero with each new root (an instance's restart). Descendants reaped by init are lost.
    /// RSS is summed per process, so pages shared between forked workers count once per
    /// worker: what matters here is growth, and canary and baseline are measured alike.
    pub(crate) fn usage(&self, root: u32) -> Option<TreeUsage> {
        let members = self.tree(root)?;
        let mut usage = TreeUsage::default();
        let mut ticks = 0;
        for stat in members {
            ticks += stat.ticks;
            if stat.zombie {
                continue;
            }
            usage.processes += 1;
            usage.rss_bytes += stat.rss_pages * page_size();
            usage.open_fds += std::fs::read_dir(format!("/proc/{}/fd", stat.pid))
                .map_or(0, |entries| entries.count() as u64);
        }
        usage.cpu_seconds = ticks as f64 / ticks_per_second();
        Some(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_from_the_last_parenthesis() {
        let line = |comm: &str, state: &str| {
            format!(
                "4242 ({comm}) {state} 17 4242 4242 0 -1 4194560 900 0 0 0 150 30 12 8 20 0 1 0 \
                 123456 20000000 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0"
            )
        };
        let expected = Stat {
            pid: 4242,
            ppid: 17,
            pgrp: 4242,
            zombie: false,
            ticks: 150 + 30 + 12 + 8,
            rss_pages: 2560,
        };
        let table = [
            (line("python3", "S"), Some(expected)),
            (line("a) (b", "R"), Some(expected)),
            (
                line("sh", "Z"),
                Some(Stat {
                    zombie: true,
                    ..expected
                }),
            ),
            (
                line("sh", "X"),
                Some(Stat {
                    zombie: true,
                    ..expected
                }),
            ),
            ("4242 (sh) S 17 4242".to_string(), None),
            ("garbage".to_string(), None),
            (String::new(), None),
        ];
        for (text, want) in table {
            assert_eq!(parse_stat(&text), want, "{text}");
        }
    }

    #[test]
    fn the_own_process_is_alive_and_a_reaped_one_is_not() {
        assert!(alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!alive(pid));
    }

    #[test]
    fn a_tree_is_found_through_its_group_and_its_parents() {
        use std::os::unix::process::CommandExt as _;
        // A group leader whose shell forks a worker into a session of its own (out of the
        // group, found by its parent) and a background sleeper (in the group).
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("setsid sleep 30 & sleep 30 & wait")
            .process_group(0)
            .spawn()
            .unwrap();
        let root = child.id();
        let mut tree = Vec::new();
        for _ in 0..200 {
            let table = ProcessTable::scan();
            tree = table
                .tree(root)
                .unwrap_or_default()
                .iter()
                .map(|s| s.pid)
                .collect();
            if tree.len() == 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let usage = ProcessTable::scan().usage(root);
        for pid in &tree {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        child.wait().unwrap();
        assert_eq!(tree.len(), 3, "the shell and both sleepers: {tree:?}");
        assert_eq!(usage.map(|u| u.processes), Some(3));
        assert!(
            usage.is_some_and(|u| u.rss_bytes > 0 && u.open_fds >= 3),
            "{usage:?}"
        );
        assert_eq!(
            ProcessTable::scan().usage(root),
            None,
            "a root that exited has no tree"
        );
    }
}
