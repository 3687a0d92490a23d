//! Step logs: one JSON-lines file per run, appended as lines arrive, read back from an offset so
//! a follower can stream it live. Masking and size caps are applied before lines get here.

use std::io::{BufRead as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use conveyor_api::LogLine;

/// Whose log: a pipeline run's, or a deployment's (hooks and checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOf {
    Run(i64),
    Deployment(i64),
}

#[derive(Debug, Clone)]
pub struct LogDir {
    root: PathBuf,
}

/// An open log of one run; cheap to share between its jobs.
#[derive(Debug)]
pub struct RunLog {
    file: Mutex<std::fs::File>,
}

impl LogDir {
    pub fn new(root: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&root)?;
        Ok(LogDir { root })
    }

    pub fn path(&self, of: LogOf) -> PathBuf {
        match of {
            LogOf::Run(id) => self.root.join(format!("run-{id}.jsonl")),
            LogOf::Deployment(id) => self.root.join(format!("deployment-{id}.jsonl")),
        }
    }

    pub fn open(&self, of: LogOf) -> std::io::Result<RunLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(of))?;
        Ok(RunLog {
            file: Mutex::new(file),
        })
    }

    /// Whole lines written after byte `offset`; returns them and the offset to read from next.
    pub fn read_from(&self, of: LogOf, offset: u64) -> std::io::Result<(Vec<LogLine>, u64)> {
        read_from(&self.path(of), offset)
    }

    /// The whole lines of the last `max_bytes` of the log (a line cut at the start is left
    /// out), the offset to read from next, and whether earlier lines were left out.
    pub fn read_tail(&self, of: LogOf, max_bytes: u64) -> std::io::Result<(Vec<LogLine>, u64, bool)> {
        let path = self.path(of);
        let size = match std::fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0, false)),
            Err(e) => return Err(e),
        };
        let mut start = size.saturating_sub(max_bytes);
        if start > 0 {
            let mut file = std::fs::File::open(&path)?;
            file.seek(std::io::SeekFrom::Start(start - 1))?;
            let mut cut = Vec::new();
            std::io::BufReader::new(file).read_until(b'\n', &mut cut)?;
            start += cut.len() as u64 - 1;
        }
        let (lines, next) = read_from(&path, start)?;
        Ok((lines, next, start > 0))
    }
}

fn read_from(path: &Path, offset: u64) -> std::io::Result<(Vec<LogLine>, u64)> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(e),
    };
    file.seek(std::io::SeekFrom::Start(offset))?;
    let mut reader = std::io::BufReader::new(file);
    let mut lines = Vec::new();
    let mut next = offset;
    let mut buf = String::new();
    loop {
        buf.clear();
        let n = reader.read_line(&mut buf)?;
        // A line still being written has no newline yet: leave it for the next read.
        if n == 0 || !buf.ends_with('\n') {
            break;
        }
        next += n as u64;
        if let Ok(line) = serde_json::from_str(&buf) {
            lines.push(line);
        }
    }
    Ok((lines, next))
}

impl RunLog {
    pub fn append(&self, line: &LogLine) -> std::io::Result<()> {
        let mut text = serde_json::to_string(line).expect("log lines serialize");
        text.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_from_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogDir::new(dir.path().to_path_buf()).unwrap();
        let log = logs.open(LogOf::Run(1)).unwrap();
        let line = |s: &str| LogLine {
            t: "t".into(),
            job: "j".into(),
            attempt: 1,
            step: 0,
            stream: "stdout".into(),
            line: s.into(),
        };
        log.append(&line("a")).unwrap();
        let (first, off) = logs.read_from(LogOf::Run(1), 0).unwrap();
        assert_eq!(first, vec![line("a")]);
        log.append(&line("b")).unwrap();
        let (second, _) = logs.read_from(LogOf::Run(1), off).unwrap();
        assert_eq!(second, vec![line("b")]);
        assert_eq!(logs.read_from(LogOf::Run(2), 0).unwrap().0, vec![]);
    }
}
