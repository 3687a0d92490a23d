//! A run: its jobs as a graph with their status, each job's steps and durations, artifacts with
//! digests, the log (what is written so far, then live), cancel and run again.

use conveyor_api::{LogLine, RunStatus, RunView};
use maud::{Markup, html};

use crate::svg::{Node, graph};
use crate::{Chrome, Section, ago, badge, button, commit, digest, encode, page, took, trusted};

#[derive(Debug, Clone)]
pub struct RunPage {
    pub run: RunView,
    /// Each job's `needs`, from the run's `conveyor.yml`, in its order.
    pub needs: Vec<(String, Vec<String>)>,
    pub release_id: Option<i64>,
    /// The log written so far, and the offset to follow it from.
    pub log: Vec<LogLine>,
    pub log_next: u64,
    /// Earlier lines were left out (a long log shows its end).
    pub log_truncated: bool,
    pub can_deploy: bool,
}

pub fn render(chrome: &Chrome, p: &RunPage) -> Markup {
    let run = &p.run;
    let nodes: Vec<Node> = p
        .needs
        .iter()
        .map(|(job, needs)| Node {
            name: job.clone(),
            status: run
                .jobs
                .iter()
                .find(|j| &j.job == job)
                .map_or("pending".to_string(), |j| j.status.as_str().to_string()),
            needs: needs.clone(),
            href: format!("#job-{}", encode(job)),
        })
        .collect();
    let running = run.status == RunStatus::Running;
    let body = html! {
        p.crumbs { a href="/" { "Overview" } " / " a href={ "/projects/" (encode(&run.project)) } { (run.project) } " / run " (run.id) }
        h1 { "Run #" (run.id) " " (badge(run.status.as_str())) }
        dl.kv {
            dt { "Commit" } dd { (commit(&run.commit)) }
            dt { "Branch" } dd { @if run.branch.is_empty() { span.muted { "none (a commit alone)" } } @else { (run.branch) } }
            dt { "Trigger" } dd { (run.event) }
            dt { "Started" } dd { (ago(chrome.now, run.created_at)) }
            dt { "Took" } dd { (took(chrome.now, Some(run.created_at), run.finished_at)) @if running { " so far" } }
            @if let Some(release) = p.release_id {
                dt { "Release" } dd { a href={ "/releases/" (release) } { "r" (release) } }
            }
        }
        @if p.can_deploy {
            div.actions {
                @if running {
                    (button(chrome, &format!("/runs/{}/cancel", run.id), "Cancel run", &format!("Cancel run #{}?", run.id), "danger", &[]))
                } @else {
                    (button(chrome, &format!("/projects/{}/runs", encode(&run.project)), "Run again",
                        &format!("Run commit {} again?", run.commit.get(..10).unwrap_or(&run.commit)), "",
                        &[("branch", run.branch.as_str()), ("commit", run.commit.as_str())]))
                }
            }
        }
        h2 { "Jobs" }
        div.scroll { (trusted(graph(&nodes))) }
        @for job in &run.jobs {
            section.card id={ "job-" (encode(&job.job)) } aria-label={ "Job " (job.job) } {
                h3 { (job.job) " " (badge(job.status.as_str())) @if job.attempt > 1 { span.muted { " attempt " (job.attempt) } } }
                @if let Some(reason) = &job.reason { p.muted { (reason) } }
                table {
                    thead { tr { th scope="col" { "Step" } th scope="col" { "Status" } th scope="col" { "Exit" } th scope="col" { "Took" } } }
                    tbody {
                        @for step in job.steps.iter().filter(|s| s.attempt == job.attempt) {
                            tr {
                                td { (step.name) }
                                td { (badge(step.status.as_str())) }
                                td { @if let Some(code) = step.exit_code { (code) } }
                                td { (took(chrome.now, Some(step.started_at), step.finished_at)) }
                            }
                        }
                    }
                }
                @if !job.artifacts.is_empty() {
                    h3 { "Artifacts" }
                    ul {
                        @for a in &job.artifacts {
                            li { code { (a.path) } " " (digest(&a.digest)) " " span.muted { (a.size) " bytes" } }
                        }
                    }
                }
            }
        }
        section #log-section data-keep aria-labelledby="log-title" {
            h2 #log-title { "Log" }
            div.logbar {
                label { "Search " input #log-filter type="search" aria-controls="log"; }
                label { input #log-follow type="checkbox" checked; " follow" }
            }
            @if p.log_truncated { p.muted { "Earlier output is not shown: this is the log's last MiB." } }
            pre #log .log aria-labelledby="log-title" tabindex="0"
                data-stream={ "/runs/" (run.id) "/log/stream?after=" (p.log_next) }
                data-loaded=(if p.log.is_empty() { "0" } else { "1" }) {
                @if p.log.is_empty() { @if running { "Waiting for output…" } @else { "(no output)" } }
                @for line in &p.log {
                    span class=(line.stream) {
                        span.t { (line.t.get(11..19).unwrap_or("")) " " (line.job) "#" (line.step) " " }
                        (line.line) "\n"
                    }
                }
            }
        }
    };
    page(
        chrome,
        Section::Other,
        &format!("Run #{}", run.id),
        &format!("run:{}", run.id),
        body,
    )
}
