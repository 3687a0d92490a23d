//! The overview: projects × environments (what runs where, since when, how healthy), the
//! deployments in progress, and the approvals waiting for the one looking.

use chrono::{DateTime, Utc};
use conveyor_api::{DeploymentView, RunView};
use maud::{Markup, html};

use crate::{Chrome, Section, ago, badge, encode, environment_path, page};

/// One environment of a project, as the overview shows it.
#[derive(Debug, Clone)]
pub struct EnvironmentCell {
    pub environment: String,
    /// The release it runs (its newest succeeded deployment's) and since when.
    pub current: Option<(i64, DateTime<Utc>)>,
    /// Its newest deployment, whatever its status.
    pub latest: DeploymentView,
    /// Every instance of every version healthy; None when nothing runs.
    pub healthy: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct ProjectRow {
    pub name: String,
    pub environments: Vec<EnvironmentCell>,
    pub last_run: Option<RunView>,
}

#[derive(Debug, Clone, Default)]
pub struct Overview {
    pub projects: Vec<ProjectRow>,
    pub in_progress: Vec<DeploymentView>,
    /// Deployments waiting for an approval the viewer may give.
    pub awaiting_me: Vec<DeploymentView>,
}

/// Environment names in the order they first appear (staging before production, as deployed).
fn columns(projects: &[ProjectRow]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for p in projects {
        for e in &p.environments {
            if !names.contains(&e.environment) {
                names.push(e.environment.clone());
            }
        }
    }
    names
}

pub fn render(chrome: &Chrome, overview: &Overview) -> Markup {
    let columns = columns(&overview.projects);
    let body = html! {
        h1 { "Overview" }
        @if !overview.awaiting_me.is_empty() {
            section aria-labelledby="awaiting" {
                h2 #awaiting { "Waiting for your approval" }
                (deployments(chrome, &overview.awaiting_me))
            }
        }
        section aria-labelledby="in-progress" {
            h2 #in-progress { "Deployments in progress" }
            @if overview.in_progress.is_empty() {
                p.muted { "None right now." }
            } @else {
                (deployments(chrome, &overview.in_progress))
            }
        }
        section aria-labelledby="projects" {
            h2 #projects { "Projects" }
            @if overview.projects.is_empty() {
                p.muted { "No projects yet. Add one with " code { "conveyor project add" } "." }
            } @else {
                div.scroll {
                    table #matrix {
                        thead { tr {
                            th scope="col" { "Project" }
                            th scope="col" .hide-narrow { "Last run" }
                            @for name in &columns { th scope="col" { (name) } }
                        } }
                        tbody {
                            @for p in &overview.projects {
                                tr {
                                    th scope="row" { a href={ "/projects/" (encode(&p.name)) } { (p.name) } }
                                    td.hide-narrow {
                                        @if let Some(run) = &p.last_run {
                                            a href={ "/runs/" (run.id) } { "#" (run.id) } " " (badge(run.status.as_str()))
                                            br; span.muted { (ago(chrome.now, run.created_at)) }
                                        } @else { span.muted { "—" } }
                                    }
                                    @for name in &columns {
                                        td { (cell(chrome, &p.name, p.environments.iter().find(|e| &e.environment == name))) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(chrome, Section::Overview, "Overview", "*", body)
}

fn cell(chrome: &Chrome, project: &str, cell: Option<&EnvironmentCell>) -> Markup {
    let Some(cell) = cell else {
        return html! { span.muted { "—" } };
    };
    html! {
        a href=(environment_path(project, &cell.environment)) {
            @match cell.current {
                Some((release, _)) => { "r" (release) }
                None => { "nothing yet" }
            }
        }
        @if let Some(healthy) = cell.healthy {
            " " (badge(if healthy { "healthy" } else { "unhealthy" }))
        }
        @if let Some((_, since)) = cell.current {
            br; span.muted { "for " (crate::since(chrome.now, since)) }
        }
        @if cell.current.map(|c| c.0) != Some(cell.latest.release_id) || cell.latest.finished_at.is_none() {
            br;
            a href={ "/deployments/" (cell.latest.id) } { "r" (cell.latest.release_id) } " " (badge(cell.latest.status.as_str()))
        }
    }
}

/// A table of deployments: where, what, status, phase, since when.
pub fn deployments(chrome: &Chrome, list: &[DeploymentView]) -> Markup {
    html! {
        div.scroll { table {
            thead { tr {
                th scope="col" { "Deployment" } th scope="col" { "Where" } th scope="col" { "Release" }
                th scope="col" { "Status" } th scope="col" .hide-narrow { "Phase" } th scope="col" { "Started" }
            } }
            tbody {
                @for d in list {
                    tr {
                        td { a href={ "/deployments/" (d.id) } { "#" (d.id) } }
                        td { a href=(environment_path(&d.project, &d.environment)) { (d.project) " / " (d.environment) } }
                        td { a href={ "/releases/" (d.release_id) } { "r" (d.release_id) } }
                        td { (badge(d.status.as_str())) @if !d.gates.is_empty() { br; span.muted { (d.gates.join("; ")) } } }
                        td.hide-narrow { (d.phase.as_deref().unwrap_or("")) @if d.traffic > 0 { " · " (d.traffic) "%" } }
                        td { (ago(chrome.now, d.created_at)) }
                    }
                }
            }
        } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use conveyor_api::DeploymentStatus;

    fn chrome() -> Chrome {
        Chrome {
            user: "rita".into(),
            csrf: "c5rf".into(),
            settings: true,
            audit: false,
            now: Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap(),
            flash: None,
            seq: 41,
        }
    }

    fn deployment(project: &str, environment: &str, status: DeploymentStatus) -> DeploymentView {
        DeploymentView {
            id: 7,
            project: project.into(),
            environment: environment.into(),
            release_id: 3,
            status,
            requested_by: "admin".into(),
            author: "admin".into(),
            authors: vec![],
            rollback_of: None,
            fixed_by: None,
            phases: vec!["canary 20%".into()],
            phase_index: Some(0),
            phase: Some("canary 20%".into()),
            traffic: 20,
            gates: vec!["waiting for approval (0 of 1)".into()],
            approvals: vec![],
            instances: Default::default(),
            reason: None,
            created_at: Utc.with_ymd_and_hms(2026, 12, 1, 11, 57, 0).unwrap(),
            finished_at: None,
        }
    }

    #[test]
    fn names_from_users_are_escaped_and_cells_say_what_runs_where() {
        let evil = "<script>alert(1)</script>";
        let latest = deployment(evil, "production", DeploymentStatus::Pending);
        let overview = Overview {
            projects: vec![ProjectRow {
                name: evil.into(),
                environments: vec![EnvironmentCell {
                    environment: "production".into(),
                    current: Some((2, Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap())),
                    latest: latest.clone(),
                    healthy: Some(true),
                }],
                last_run: None,
            }],
            in_progress: vec![latest.clone()],
            awaiting_me: vec![latest],
        };
        let html = render(&chrome(), &overview).into_string();
        assert!(!html.contains("<script>alert"), "escaped");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            html.contains(
                "href=\"/projects/%3Cscript%3Ealert%281%29%3C%2Fscript%3E/environments/production\""
            )
        );
        // The cell: r2 for a day, healthy, and r3 pending beside it.
        assert!(html.contains(">r2</a> <span class=\"badge s-healthy\">healthy</span><br><span class=\"muted\">for 24 h</span>"), "{html}");
        assert!(html.contains("Waiting for your approval"));
        assert!(html.contains("3 min ago"));
        // The form to sign out carries the session's CSRF token; the page listens to everything.
        assert!(html.contains("name=\"_csrf\" value=\"c5rf\""));
        assert!(html.contains("data-live=\"*\""));
        assert!(!html.contains("href=\"/audit\""), "not offered");
    }
}
