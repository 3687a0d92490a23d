//! DORA's four keys per project and environment, with their levels and a trend over the weeks
//! before.

use conveyor_api::dora::{Level, Report};
use maud::{Markup, html};

use crate::svg::bars;
use crate::{Chrome, Section, duration, encode, page, trusted};

/// One project environment's keys now and, oldest first, over the windows before.
#[derive(Debug, Clone)]
pub struct DoraRow {
    pub project: String,
    pub environment: String,
    pub now: Report,
    /// `(label, report)` of each window end, oldest first, the last one now.
    pub trend: Vec<(String, Report)>,
}

fn level(level: Level) -> Markup {
    let class = match level {
        Level::Elite | Level::High => "success",
        Level::Medium => "warning",
        Level::Low => "failed",
    };
    html! { span class={ "badge s-" (class) } { (level.as_str()) } }
}

pub fn render(chrome: &Chrome, window_days: u64, rows: &[DoraRow]) -> Markup {
    let body = html! {
        h1 { "DORA: the four keys" }
        p.muted { "Deployments that finished in the last " (window_days) " days; the bars are the same window ending each week, the last one now." }
        @if rows.is_empty() { p.muted { "No deployments yet." } }
        @for row in rows {
            section.card .dora aria-label={ (row.project) " / " (row.environment) } {
                h2 { a href={ "/projects/" (encode(&row.project)) } { (row.project) } " / " (row.environment) }
                div.grid {
                    div {
                        h3 { "Deployment frequency " (level(row.now.deployment_frequency.level)) }
                        p { (format!("{:.2}", row.now.deployment_frequency.per_day)) " a day (" (row.now.deployment_frequency.bucket.as_str()) "), " (row.now.deployments) " deployments" }
                        (trusted(bars("Deployments a day", &row.trend.iter().map(|(l, r)| (l.clone(), r.deployment_frequency.per_day)).collect::<Vec<_>>(), "")))
                    }
                    div {
                        h3 { "Lead time for changes " @if let Some(m) = &row.now.lead_time { (level(m.level)) } }
                        p { @match &row.now.lead_time { Some(m) => { "median " (duration(m.median_seconds as i64)) " over " (m.samples) }, None => span.muted { "no data" } } }
                        (trusted(bars("Median lead time, hours", &row.trend.iter().map(|(l, r)| (l.clone(), r.lead_time.as_ref().map_or(0.0, |m| m.median_seconds as f64 / 3600.0))).collect::<Vec<_>>(), " h")))
                    }
                    div {
                        h3 { "Change failure rate " @if let Some(r) = &row.now.change_failure_rate { (level(r.level)) } }
                        p { @match &row.now.change_failure_rate { Some(r) => { (format!("{:.0}%", r.ratio * 100.0)) " (" (r.failed) " of " (r.total) ")" }, None => span.muted { "no data" } } }
                        (trusted(bars("Change failure rate", &row.trend.iter().map(|(l, r)| (l.clone(), r.change_failure_rate.as_ref().map_or(0.0, |c| c.ratio))).collect::<Vec<_>>(), "%")))
                    }
                    div {
                        h3 { "Time to restore " @if let Some(m) = &row.now.time_to_restore { (level(m.level)) } }
                        p { @match &row.now.time_to_restore { Some(m) => { "median " (duration(m.median_seconds as i64)) " over " (m.samples) }, None => span.muted { "no failures to restore from" } } }
                        (trusted(bars("Median time to restore, hours", &row.trend.iter().map(|(l, r)| (l.clone(), r.time_to_restore.as_ref().map_or(0.0, |m| m.median_seconds as f64 / 3600.0))).collect::<Vec<_>>(), " h")))
                    }
                }
                p.muted { "Levels as DORA's State of DevOps report has them: " (level(Level::Elite)) " is best, then high, medium and low." }
            }
        }
    };
    page(chrome, Section::Dora, "DORA", "", body)
}
