//! Finding local processes by a marker in their environment: how a restarted server tells the
//! processes a previous one left running (steps, deployed instances) from unrelated ones that may
//! have reused their pids. Linux only (`/proc`).

use nix::sys::signal::{Signal, kill};
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
}
