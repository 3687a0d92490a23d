//! The audit trail: the event log a page at a time, filtered by kind and project, and the
//! hash-chain verification when asked for.

use conveyor_api::{AuditReport, EventRecord};
use maud::{Markup, html};

use crate::{Chrome, Section, badge, encode, page};

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub kind: Option<String>,
    pub project: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AuditPage {
    /// Newest first.
    pub events: Vec<EventRecord>,
    pub filter: AuditFilter,
    /// The seq to continue from (older events), when there are more.
    pub more: Option<i64>,
    pub verification: Option<AuditReport>,
}

pub fn render(chrome: &Chrome, p: &AuditPage) -> Markup {
    let query = |before: i64| {
        let mut q = format!("before={before}");
        if let Some(k) = &p.filter.kind {
            q.push_str(&format!("&kind={}", encode(k)));
        }
        if let Some(pr) = &p.filter.project {
            q.push_str(&format!("&project={}", encode(pr)));
        }
        q
    };
    let body = html! {
        h1 { "Audit trail" }
        section aria-labelledby="chain" {
            h2 #chain { "Hash chain" }
            @match &p.verification {
                Some(v) if v.problems.is_empty() => p #verification { (badge("pass")) " " (v.events) " events chained and " (v.checkpoints) " signed checkpoints verified." },
                Some(v) => div #verification .problem role="alert" { "The log does not verify:" ul { @for problem in &v.problems { li { (problem) } } } },
                None => form method="get" action="/audit" { input type="hidden" name="verify" value="1"; button type="submit" { "Verify the whole log" } },
            }
        }
        h2 { "Events" }
        form.inline method="get" action="/audit" aria-label="Filter events" {
            label { "Kind" input type="text" name="kind" value=[p.filter.kind.as_deref()] placeholder="deployment_approved" size="20"; }
            label { "Project" input type="text" name="project" value=[p.filter.project.as_deref()] size="14"; }
            button type="submit" { "Filter" }
        }
        div.scroll { table #events {
            thead { tr { th scope="col" { "#" } th scope="col" { "At" } th scope="col" { "Kind" } th scope="col" { "Event" } } }
            tbody { @for e in &p.events { tr {
                td { (e.seq) }
                td.mono { (e.at) }
                td { code { (e.event["type"].as_str().unwrap_or("")) } }
                td.mono { (e.event.to_string()) }
            } } }
        } }
        @if let Some(before) = p.more { p { a href={ "/audit?" (query(before)) } { "Older events →" } } }
    };
    page(chrome, Section::Audit, "Audit", "", body)
}
