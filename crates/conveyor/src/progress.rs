//! Live progress of a local run on the terminal.

use std::io::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use conveyor_engine::Observer;
use conveyor_store::logs::LogLine;
use conveyor_store::{Event, JobStatus, Subscription};

pub struct Progress {
    started: Mutex<std::collections::HashMap<String, Instant>>,
    show_output: bool,
}

impl Progress {
    pub fn new(show_output: bool) -> Self {
        Progress {
            started: Mutex::new(Default::default()),
            show_output,
        }
    }

    fn say(&self, text: String) {
        if self.show_output {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{text}");
        }
    }
}

impl Progress {
    /// Prints the run's events as they are appended, until the run finishes.
    pub async fn follow(&self, mut events: Subscription) {
        while let Ok(stored) = events.next().await {
            self.event(&stored.event);
            if let Event::RunFinished { .. } = stored.event {
                return;
            }
        }
    }

    fn event(&self, event: &Event) {
        match event {
            Event::RunCreated {
                run_id,
                project,
                commit,
                branch,
                jobs,
                ..
            } => self.say(format!(
                "run {run_id} of {project} at {} ({branch}): {} job(s)",
                &commit[..commit.len().min(12)],
                jobs.len()
            )),
            Event::JobStarted { job, attempt, .. } => {
                self.started
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(job.clone(), Instant::now());
                let retry = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                self.say(format!("▶ {job}{retry}"));
            }
            Event::JobFinished {
                job, status, reason, ..
            } => {
                let took = self
                    .started
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(job)
                    .map(|t| format!(" in {:.1}s", t.elapsed().as_secs_f64()))
                    .unwrap_or_default();
                let mark = if *status == JobStatus::Success {
                    "✓"
                } else {
                    "✗"
                };
                let why = reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default();
                self.say(format!("{mark} {job} {status}{took}{why}"));
            }
            Event::JobSkipped { job, reason, .. } => self.say(format!("- {job} skipped: {reason}")),
            Event::RunFinished { run_id, status } => self.say(format!("run {run_id} {status}")),
            _ => {}
        }
    }
}

impl Observer for Progress {
    fn line(&self, line: &LogLine) {
        self.say(format!("  {} │ {}", line.job, line.line));
    }
}
