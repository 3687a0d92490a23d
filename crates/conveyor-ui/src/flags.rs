//! An environment's feature flags: the definition to edit (problems shown beside it), each flag,
//! the history of changes with their diffs, scheduled changes and stale flags.

use conveyor_api::{FlagHistoryEntry, FlagList, FlagScheduleView, StaleReport};
use maud::{Markup, html};

use crate::{Chrome, Section, ago, badge, csrf, encode, environment_path, page};

#[derive(Debug, Clone)]
pub struct FlagsPage {
    pub list: FlagList,
    /// The definition (flagd JSON) in the editor: the stored one, or what was sent and refused.
    pub definition: String,
    /// Why the definition sent was refused.
    pub problem: Option<String>,
    pub history: Vec<FlagHistoryEntry>,
    pub schedules: Vec<FlagScheduleView>,
    pub stale: StaleReport,
    pub can_edit: bool,
}

pub fn render(chrome: &Chrome, p: &FlagsPage) -> Markup {
    let (project, environment) = (&p.list.project, &p.list.environment);
    let here = format!("{}/flags", environment_path(project, environment));
    let body = html! {
        p.crumbs { a href="/" { "Overview" } " / " a href={ "/projects/" (encode(project)) } { (project) } " / "
            a href=(environment_path(project, environment)) { (environment) } " / flags" }
        h1 { "Feature flags of " (project) " / " (environment) }
        p.muted { "Version " (p.list.version) " · served over OFREP at " code { "/ofrep/v1/evaluate/flags" } }
        @if p.list.flags.is_empty() { p.muted { "No flags yet." } } @else {
            div.scroll { table #flags {
                thead { tr { th scope="col" { "Flag" } th scope="col" { "State" } th scope="col" { "Default" } th scope="col" { "Variants" } th scope="col" .hide-narrow { "Type" } } }
                tbody { @for f in &p.list.flags { tr {
                    td { code { (f.key) } }
                    td { (badge(match f.state { conveyor_api::FlagState::Enabled => "success", conveyor_api::FlagState::Disabled => "skipped" })) " " (format!("{:?}", f.state).to_uppercase()) }
                    td { (f.default_variant.as_deref().unwrap_or("—")) }
                    td { (f.variants.join(", ")) }
                    td.hide-narrow { (f.lifecycle.as_ref().and_then(|l| l.kind.as_deref()).unwrap_or("")) }
                } } }
            } }
        }
        @if p.can_edit {
            h2 { "Edit" }
            form.stack method="post" action=(here) {
                (csrf(chrome))
                input type="hidden" name="etag" value=(p.list.etag);
                label for="definition" { "Definition (flagd JSON)" }
                @if let Some(problem) = &p.problem {
                    p #definition-problem .problem role="alert" { (problem) }
                }
                textarea #definition name="definition" spellcheck="false" aria-invalid=[p.problem.as_ref().map(|_| "true")]
                    aria-describedby=[p.problem.as_ref().map(|_| "definition-problem")] { (p.definition) }
                div { button.primary type="submit" { "Save flags" } }
            }
        } @else {
            details { summary { "Definition (flagd JSON)" } pre.mono { (p.definition) } }
        }
        h2 { "Scheduled changes" }
        @if p.schedules.is_empty() { p.muted { "None." } }
        ul { @for s in &p.schedules {
            li { code { (s.flag) } " at " (s.due_at) " " (badge(&s.status)) " by " (s.created_by)
                " " code { (s.patch.to_string()) } @if let Some(o) = &s.outcome { " — " (o) } }
        } }
        h2 { "Stale flags" }
        @if p.stale.stale.is_empty() { p.muted { "None idle for " (p.stale.idle_days) " days or past their expected lifetime." } }
        ul { @for s in &p.stale.stale { li { code { (s.key) } ": " (s.reason) } } }
        h2 { "History" }
        ol.timeline {
            @for entry in p.history.iter().rev() {
                @match entry {
                    FlagHistoryEntry::FlagsChanged { at, by, changes, .. } => li.flag {
                        "Changed by " (by) " · " (ago(chrome.now, *at))
                        ul.diff { @for c in changes { li { (c) } } }
                    },
                    FlagHistoryEntry::FlagKeyCreated { at, name, by, .. } => li {
                        "Evaluation key " code { (name) } " made by " (by) " · " (ago(chrome.now, *at))
                    },
                    FlagHistoryEntry::FlagChangeScheduled { at, flag, due_at, by, .. } => li {
                        code { (flag) } " scheduled for " (due_at) " by " (by) " · " (ago(chrome.now, *at))
                    },
                    FlagHistoryEntry::FlagScheduleFinished { at, schedule_id, status, outcome, .. } => li {
                        "Schedule " (schedule_id) " " (status) ": " (outcome) " · " (ago(chrome.now, *at))
                    },
                }
            }
        }
    };
    page(
        chrome,
        Section::Other,
        &format!("Flags of {project} / {environment}"),
        &format!("project:{project}"),
        body,
    )
}
