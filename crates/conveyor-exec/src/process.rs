//! Finding local processes by a marker in their environment: how a restarted server tells the
//! processes a previous one left running (steps, deployed instances) from unrelated ones that may
//! have reused their pids. Linux only (`/proc`).

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Whether process `pid` has `marker` (`NAME=VALUE`) in its environment.
pub fn carries(pid: u32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|environ| environ.split(|b| *b == 0).any(|var| var == marker.as_bytes()))
}

/// Sends SIGKILL to every process carrying `marker`; returns how many were killed.
pub fn kill_marked(marker: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| carries(*pid, marker))
        .filter(|pid| i32::try_from(*pid).is_ok_and(|pid| kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()))
        .count()
}

/// Whether process group `group` still has a member that is not a zombie. A sandboxed instance's
/// group outlives its leader (`bwrap` dies of the stop signal at once, the instance inside takes
/// its grace period), so a graceful stop waits on this rather than on the leader.
pub fn group_alive(group: u32) -> bool {
    let Ok(id) = i32::try_from(group) else {
        return false;
    };
    if killpg(Pid::from_raw(id), None).is_err() {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|stat| {
            // After the parenthesised command name: state, ppid, pgrp.
            let mut fields = stat
                .rsplit_once(')')
                .map_or("", |(_, rest)| rest)
                .split_whitespace();
            let state = fields.next().unwrap_or("Z");
            let pgrp = fields.nth(1).and_then(|p| p.parse::<u32>().ok());
            pgrp == Some(group) && !matches!(state, "Z" | "X")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_kills_only_marked_processes() {
        let marker = format!("CONVEYOR_TEST_MARK={}", std::process::id());
        let spawn = |marked: bool| {
            let mut command = std::process::Command::new("sleep");
            command.arg("30");
            if marked {
                let (name, value) = marker.split_once('=').unwrap();
                command.env(name, value);
            }
            command.spawn().unwrap()
        };
        let (mut marked, mut other) = (spawn(true), spawn(false));
        assert!(carries(marked.id(), &marker));
        assert!(!carries(other.id(), &marker));
        assert_eq!(kill_marked(&marker), 1);
        assert!(!marked.wait().unwrap().success(), "killed");
        assert!(other.try_wait().unwrap().is_none(), "the unmarked one still runs");
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[test]
    fn a_group_lives_while_a_member_does() {
        use std::os::unix::process::CommandExt as _;
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & exit 0"])
            .process_group(0)
            .spawn()
            .unwrap();
        let group = leader.id();
        leader.wait().unwrap();
        assert!(group_alive(group), "the sleep outlives its leader");
        killpg(Pid::from_raw(group as i32), Signal::SIGKILL).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while group_alive(group) {
            assert!(
                std::time::Instant::now() < deadline,
                "the group is gone once killed"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
