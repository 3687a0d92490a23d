//! A release: its commit, artifacts and digests, the signature and provenance as checked when the
//! page was made, where it has gone (commit → release → each environment), a comparison with
//! another release, and promotion.

use conveyor_api::{DeploymentView, Release};
use maud::{Markup, html};

use crate::{Chrome, Section, ago, badge, commit, csrf, digest, encode, environment_path, json, page};

#[derive(Debug, Clone)]
pub struct ReleasePage {
    pub release: Release,
    /// What the check of its signature and subjects found wrong; empty: verified.
    pub problems: Vec<String>,
    /// The in-toto statement the envelope carries.
    pub statement: serde_json::Value,
    /// Its deployments, newest first.
    pub deployments: Vec<DeploymentView>,
    /// Environments it may be promoted to by the viewer.
    pub promotable: Vec<String>,
    /// Other releases of the project, to compare with.
    pub others: Vec<Release>,
    pub comparison: Option<Comparison>,
}

/// What changed from `base` to this release.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub base: Release,
    /// Commits in this release and not in `base`, newest first: `(sha, author, subject)`.
    pub commits: Vec<(String, String, String)>,
    /// Why the commits cannot be listed (the mirror is gone, say).
    pub commits_problem: Option<String>,
    /// `(path, before, after)` digests of artifacts that differ.
    pub artifacts: Vec<(String, Option<String>, Option<String>)>,
}

pub fn render(chrome: &Chrome, p: &ReleasePage) -> Markup {
    let r = &p.release;
    // The newest deployment of each environment, in the order they were first deployed.
    let mut reached: Vec<&DeploymentView> = Vec::new();
    for d in p.deployments.iter().rev() {
        match reached.iter_mut().find(|x| x.environment == d.environment) {
            Some(slot) => *slot = d,
            None => reached.push(d),
        }
    }
    let body = html! {
        p.crumbs { a href="/" { "Overview" } " / " a href={ "/projects/" (encode(&r.project)) } { (r.project) } " / release r" (r.id) }
        h1 { "Release r" (r.id) }
        ol.path aria-label="Where this release has gone" {
            li.card { "commit " (commit(&r.commit)) @if !r.branch.is_empty() { " on " (r.branch) } }
            li.card { "release " a href={ "/runs/" (r.run_id) } { "from run #" (r.run_id) } }
            @for d in &reached {
                li.card {
                    a href=(environment_path(&d.project, &d.environment)) { (d.environment) } " "
                    a href={ "/deployments/" (d.id) } { (badge(d.status.as_str())) }
                }
            }
        }
        h2 { "Signature and provenance" }
        @if p.problems.is_empty() {
            p { (badge("pass")) " The signature verifies with the server's key, the provenance names exactly these artifacts, and the content store holds each under its digest." }
        } @else {
            div.problem role="alert" { "Verification failed:" ul { @for problem in &p.problems { li { (problem) } } } }
        }
        details { summary { "Provenance statement (SLSA v1)" } (json(&p.statement)) }
        h2 { "Artifacts" }
        table {
            thead { tr { th scope="col" { "Path" } th scope="col" { "Digest" } th scope="col" { "Size" } } }
            tbody { @for a in &r.artifacts { tr {
                td { a href={ "/releases/" (r.id) "/artifacts/" (a.path.split('/').map(encode).collect::<Vec<_>>().join("/")) } { code { (a.path) } } }
                td { (digest(&a.digest)) } td { (a.size) }
            } } }
        }
        @if !p.promotable.is_empty() {
            h2 { "Promote" }
            form.inline method="post" action={ "/releases/" (r.id) "/promote" } data-confirm={ "Promote r" (r.id) "?" } {
                (csrf(chrome))
                label { "Environment"
                    select name="environment" { @for e in &p.promotable { option value=(e) { (e) } } }
                }
                button.primary type="submit" { "Promote" }
            }
        }
        h2 { "Deployments" }
        (crate::overview::deployments(chrome, &p.deployments))
        h2 #compare { "Compare" }
        form.inline method="get" action={ "/releases/" (r.id) } {
            label { "With release"
                select name="compare" { @for o in &p.others { option value=(o.id) selected[p.comparison.as_ref().is_some_and(|c| c.base.id == o.id)] { "r" (o.id) " · " (o.commit.get(..10).unwrap_or(&o.commit)) } } }
            }
            button type="submit" { "Compare" }
        }
        @if let Some(c) = &p.comparison {
            h3 { "Commits in r" (r.id) " since r" (c.base.id) }
            @if let Some(problem) = &c.commits_problem { p.muted { (problem) } }
            @if c.commits.is_empty() && c.commits_problem.is_none() { p.muted { "None." } }
            ul { @for (sha, author, subject) in &c.commits { li { (commit(sha)) " " (subject) " " span.muted { "— " (author) } } } }
            h3 { "Artifacts that changed" }
            @if c.artifacts.is_empty() { p.muted { "None: the artifacts are byte for byte the same." } }
            ul { @for (path, before, after) in &c.artifacts {
                li { code { (path) } ": "
                    @match before { Some(d) => (digest(d)), None => span.muted { "absent" } }
                    " → "
                    @match after { Some(d) => (digest(d)), None => span.muted { "removed" } }
                }
            } }
        }
        p.muted { "Made " (ago(chrome.now, r.created_at)) }
    };
    page(
        chrome,
        Section::Other,
        &format!("Release r{}", r.id),
        &format!("project:{}", r.project),
        body,
    )
}
