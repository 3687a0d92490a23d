//! Turns a step's raw output into log lines: secrets masked, timestamped, capped per step.

use std::sync::Arc;

use conveyor_exec::Stream;
use conveyor_store::logs::{LogLine, RunLog};

use crate::Observer;

pub const MASK: &str = "***";

/// Replaces every occurrence of every secret value. Multi-line secrets are masked line by line,
/// since output arrives a line at a time.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    needles: Vec<String>,
}

impl Masker {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut needles: Vec<String> = secrets
            .into_iter()
            .flat_map(|s| {
                s.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        // Longest first so a secret containing another is masked whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Masker { needles }
    }

    pub fn mask(&self, line: &str) -> String {
        let mut out = line.to_string();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), MASK);
            }
        }
        out
    }
}

/// Where one step's lines go.
pub struct StepLog {
    log: Arc<RunLog>,
    masker: Arc<Masker>,
    observers: Vec<Arc<dyn Observer>>,
    job: String,
    attempt: u32,
    step: u32,
    limit: u64,
    written: u64,
    truncated: bool,
}

impl StepLog {
    /// The lines of step `step` of `job`'s `attempt`, at most `limit` bytes of them.
    pub fn new(
        log: Arc<RunLog>,
        masker: Arc<Masker>,
        observers: Vec<Arc<dyn Observer>>,
        job: String,
        attempt: u32,
        step: u32,
        limit: u64,
    ) -> Self {
        StepLog {
            log,
            masker,
            observers,
            job,
            attempt,
            step,
            limit,
            written: 0,
            truncated: false,
        }
    }

    pub fn line(&mut self, stream: &str, text: &str) {
        if self.truncated {
            return;
        }
        let masked = self.masker.mask(text);
        self.written += masked.len() as u64 + 1;
        if self.written > self.limit {
            self.truncated = true;
            let notice = format!(
                "output truncated: this step wrote more than {} bytes; the rest is discarded",
                self.limit
            );
            self.write("conveyor", notice);
            return;
        }
        self.write(stream, masked);
    }

    pub fn notice(&mut self, text: String) {
        self.write("conveyor", text);
    }

    fn write(&self, stream: &str, line: String) {
        let entry = LogLine {
            t: conveyor_store::now_rfc3339(),
            job: self.job.clone(),
            attempt: self.attempt,
            step: self.step,
            stream: stream.to_string(),
            line,
        };
        if let Err(error) = self.log.append(&entry) {
            tracing::warn!(job = %self.job, %error, "cannot write step log");
        }
        for o in &self.observers {
            o.line(&entry);
        }
    }

    pub fn sink(mut self) -> conveyor_exec::LineSink {
        Box::new(move |stream: Stream, text: String| self.line(stream.as_str(), &text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_secret_and_every_line_of_multiline_ones() {
        let m = Masker::new(["hunter2", "abc\ndefgh\n", "hunter2-long"]);
        let cases = [
            ("password=hunter2", "password=***"),
            ("hunter2-long!", "***!"),
            ("x defgh y abc", "x *** y ***"),
            ("nothing here", "nothing here"),
        ];
        for (input, want) in cases {
            assert_eq!(m.mask(input), want, "{input}");
        }
        assert_eq!(Masker::new([""]).mask("a"), "a");
    }
}
