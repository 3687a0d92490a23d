//! A project: its runs (filtered by status and branch, a page at a time), its triggers, releases
//! and environments.

use conveyor_api::{Project, Release, RunView};
use maud::{Markup, html};

use crate::overview::EnvironmentCell;
use crate::{Chrome, Section, ago, badge, commit, csrf, encode, environment_path, page, took};

/// Which runs the list shows.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub status: Option<String>,
    pub branch: Option<String>,
    /// Runs older than this id (the next page).
    pub before: Option<i64>,
}

impl RunFilter {
    /// The query string of this filter with `before` replaced.
    pub fn query(&self, before: Option<i64>) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.status {
            parts.push(format!("status={}", encode(s)));
        }
        if let Some(b) = &self.branch {
            parts.push(format!("branch={}", encode(b)));
        }
        if let Some(before) = before {
            parts.push(format!("before={before}"));
        }
        parts.join("&")
    }
}

#[derive(Debug, Clone)]
pub struct ProjectPage {
    pub project: Project,
    pub runs: Vec<RunView>,
    pub filter: RunFilter,
    /// The id to continue from, when there are older runs.
    pub more: Option<i64>,
    pub releases: Vec<Release>,
    pub environments: Vec<EnvironmentCell>,
    /// The viewer may start runs.
    pub can_run: bool,
}

const STATUSES: [&str; 4] = ["running", "success", "failed", "cancelled"];

pub fn render(chrome: &Chrome, p: &ProjectPage) -> Markup {
    let name = &p.project.name;
    let body = html! {
        p.crumbs { a href="/" { "Overview" } " / " (name) }
        h1 { "Project " (name) }
        dl.kv {
            dt { "Source" } dd { code { (p.project.source_uri) } }
            dt { "Triggers" } dd {
                "polls every " (p.project.poll_seconds) " s for new commits on "
                @for (i, branch) in p.project.heads.keys().enumerate() {
                    @if i > 0 { ", " } code { (branch) }
                }
                "; schedules and manual runs as " code { "conveyor.yml" } " says"
            }
        }
        @if p.can_run {
            form.inline method="post" action={ "/projects/" (encode(name)) "/runs" } {
                (csrf(chrome))
                label { "Branch"
                    select name="branch" {
                        @for branch in p.project.heads.keys() { option value=(branch) { (branch) } }
                    }
                }
                button.primary type="submit" { "Run now" }
            }
        }
        h2 { "Environments" }
        @if p.environments.is_empty() {
            p.muted { "Nothing deployed yet." }
        } @else {
            div.grid {
                @for e in &p.environments {
                    div.card {
                        h3 { a href=(environment_path(name, &e.environment)) { (e.environment) } }
                        @match e.current {
                            Some((release, since)) => p { a href={ "/releases/" (release) } { "r" (release) } " since " (ago(chrome.now, since)) },
                            None => p.muted { "nothing running" },
                        }
                        p { "latest: " a href={ "/deployments/" (e.latest.id) } { "#" (e.latest.id) } " " (badge(e.latest.status.as_str())) }
                    }
                }
            }
        }
        h2 #runs { "Runs" }
        form.inline method="get" action={ "/projects/" (encode(name)) } aria-label="Filter runs" {
            label { "Status"
                select name="status" {
                    option value="" { "any" }
                    @for s in STATUSES {
                        option value=(s) selected[p.filter.status.as_deref() == Some(s)] { (s) }
                    }
                }
            }
            label { "Branch"
                input type="text" name="branch" value=[p.filter.branch.as_deref()] size="16";
            }
            button type="submit" { "Filter" }
        }
        (runs_table(chrome, &p.runs))
        @if let Some(before) = p.more {
            p { a href={ "/projects/" (encode(name)) "?" (p.filter.query(Some(before))) "#runs" } { "Older runs →" } }
        }
        h2 { "Releases" }
        (releases_table(chrome, &p.releases))
    };
    page(chrome, Section::Other, name, &format!("project:{name}"), body)
}

pub fn runs_table(chrome: &Chrome, runs: &[RunView]) -> Markup {
    html! {
        @if runs.is_empty() { p.muted { "No runs." } } @else {
            div.scroll { table.runs {
                thead { tr {
                    th scope="col" { "Run" } th scope="col" { "Status" } th scope="col" { "Branch" }
                    th scope="col" { "Commit" } th scope="col" .hide-narrow { "Trigger" } th scope="col" { "Started" } th scope="col" .hide-narrow { "Took" }
                } }
                tbody {
                    @for r in runs {
                        tr {
                            td { a href={ "/runs/" (r.id) } { "#" (r.id) } }
                            td { (badge(r.status.as_str())) }
                            td { (r.branch) }
                            td { (commit(&r.commit)) }
                            td.hide-narrow { (r.event) }
                            td { (ago(chrome.now, r.created_at)) }
                            td.hide-narrow { (took(chrome.now, Some(r.created_at), r.finished_at)) }
                        }
                    }
                }
            } }
        }
    }
}

pub fn releases_table(chrome: &Chrome, releases: &[Release]) -> Markup {
    html! {
        @if releases.is_empty() { p.muted { "No releases yet." } } @else {
            div.scroll { table {
                thead { tr { th scope="col" { "Release" } th scope="col" { "Commit" } th scope="col" { "Branch" } th scope="col" { "Artifacts" } th scope="col" { "Made" } } }
                tbody {
                    @for r in releases {
                        tr {
                            td { a href={ "/releases/" (r.id) } { "r" (r.id) } }
                            td { (commit(&r.commit)) }
                            td { (r.branch) }
                            td { (r.artifacts.len()) }
                            td { (ago(chrome.now, r.created_at)) }
                        }
                    }
                }
            } }
        }
    }
}
