//! An environment (its versions, the live traffic split, instances, gates, the timeline of
//! deployments and flag changes, and the buttons that steer it) and a deployment's report (per
//! metric, canary against baseline over time with the interval and the tolerance, each judgement
//! with its evidence, the decision and why).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use conveyor_api::{
    AnalysisReport, DeploymentHistory, DeploymentStatus, DeploymentView, EnvironmentProtection,
    EnvironmentView, JudgementView,
};
use maud::{Markup, html};

use crate::svg::{Extras, Series, line_chart};
use crate::{Chrome, Section, ago, badge, button, csrf, encode, environment_path, json, page, trusted};

/// What the viewer may do to a deployment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Controls {
    /// Pause, resume, abort, roll back (a deployer of the environment).
    pub deploy: bool,
    /// Approve it: a deployer who is none of its authors, has not approved yet and is a
    /// reviewer if there are any.
    pub approve: bool,
}

#[derive(Debug, Clone)]
pub struct EnvironmentPage {
    pub view: EnvironmentView,
    pub history: DeploymentHistory,
    pub protection: Option<EnvironmentProtection>,
    pub controls: Controls,
    /// Releases this environment ran before, newest first: what a rollback can go to.
    pub rollback_to: Vec<i64>,
}

/// The buttons for a deployment: approve while it waits, pause/resume/abort while it runs.
fn deployment_controls(chrome: &Chrome, d: &DeploymentView, controls: Controls) -> Markup {
    let at = |verb: &str| format!("/deployments/{}/{verb}", d.id);
    let waiting_for_approval =
        d.status == DeploymentStatus::Pending && d.gates.iter().any(|g| g.contains("approval"));
    html! {
        div.actions {
            @if controls.approve && waiting_for_approval {
                (button(chrome, &at("approve"), "Approve", &format!("Approve deployment #{} of r{} to {}?", d.id, d.release_id, d.environment), "primary", &[]))
            }
            @if controls.deploy {
                @match d.status {
                    DeploymentStatus::Running => {
                        (button(chrome, &at("pause"), "Pause", &format!("Pause deployment #{}?", d.id), "", &[]))
                        (button(chrome, &at("abort"), "Abort", &format!("Abort deployment #{}? Traffic goes back to the stable version.", d.id), "danger", &[]))
                    }
                    DeploymentStatus::Paused => {
                        (button(chrome, &at("resume"), "Resume", &format!("Resume deployment #{}?", d.id), "primary", &[]))
                        (button(chrome, &at("resume"), "Resume to 100%", &format!("Skip the remaining steps of deployment #{}: all traffic to r{}?", d.id, d.release_id), "", &[("full", "true")]))
                        (button(chrome, &at("abort"), "Abort", &format!("Abort deployment #{}? Traffic goes back to the stable version.", d.id), "danger", &[]))
                    }
                    DeploymentStatus::Pending => {
                        (button(chrome, &at("abort"), "Abort", &format!("Abort deployment #{}?", d.id), "danger", &[]))
                    }
                    _ => {}
                }
            }
        }
    }
}

pub fn render(chrome: &Chrome, p: &EnvironmentPage) -> Markup {
    let status = &p.view.status;
    let (project, environment) = (&status.project, &status.environment);
    let body = html! {
        p.crumbs { a href="/" { "Overview" } " / " a href={ "/projects/" (encode(project)) } { (project) } " / " (environment) }
        h1 { (project) " / " (environment) }
        @if let Some(url) = &status.url { p { "Router: " code { (url) } } }
        h2 { "Traffic" }
        @if status.versions.is_empty() {
            p.muted { "No version is running." }
        } @else {
            div.split #split role="img" aria-label={ @for v in &status.versions { (v.version) " " (v.role) " " (v.traffic) "%; " } } {
                @for v in status.versions.iter().filter(|v| v.traffic > 0) {
                    span class={ "r-" (v.role) } style={ "width:" (v.traffic) "%" } data-version=(v.version) data-traffic=(v.traffic) {
                        (v.version) " " (v.traffic) "%"
                    }
                }
            }
            div.scroll { table #versions {
                thead { tr { th scope="col" { "Version" } th scope="col" { "Role" } th scope="col" { "Traffic" } th scope="col" { "Instances" } } }
                tbody { @for v in &status.versions { tr {
                    td { a href={ "/releases/" (v.release_id) } { (v.version) } }
                    td { (v.role) }
                    td { (v.traffic) "%" }
                    td { @for i in &v.instances {
                        span.mono { (i.addr) } " " (badge(if i.healthy { "healthy" } else { "unhealthy" }))
                        " " a href={ (environment_path(project, environment)) "/instances/" (encode(&v.version)) "/" (i.index) "/log" } aria-label={ "Log of " (v.version) " instance " (i.index) } { "log" }
                        @if i.restarts > 0 { span.muted { " " (i.restarts) " restarts" } }
                        br;
                    } }
                } } }
            } }
        }
        h2 { "Current deployment" }
        @match &p.view.deployment {
            Some(d) => {
                p { a href={ "/deployments/" (d.id) } { "#" (d.id) } " of " a href={ "/releases/" (d.release_id) } { "r" (d.release_id) } " " (badge(d.status.as_str()))
                    @if let Some(phase) = &d.phase { " · " (phase) } " · requested by " (d.requested_by) " " (ago(chrome.now, d.created_at)) }
                @if !d.gates.is_empty() { p { "Waiting for: " (d.gates.join("; ")) } }
                @if !d.approvals.is_empty() { p { "Approved by " (d.approvals.join(", ")) } }
                @if let Some(reason) = &d.reason { p.muted { (reason) } }
                (deployment_controls(chrome, d, p.controls))
            }
            None => p.muted { "None yet." },
        }
        @if p.controls.deploy && !p.rollback_to.is_empty() {
            h2 { "Roll back" }
            form.inline method="post" action={ (environment_path(project, environment)) "/rollback" }
                data-confirm={ "Roll " (environment) " back?" } {
                (csrf(chrome))
                label { "To release"
                    select name="to" { @for r in &p.rollback_to { option value=(r) { "r" (r) } } }
                }
                button.danger type="submit" { "Roll back" }
            }
        }
        h2 { "Gates" }
        @match &p.protection {
            Some(rules) => (protection(rules)),
            None => p.muted { "The server adds no rules here; each release's " code { "conveyor.yml" } " has its own." },
        }
        p { a href={ (environment_path(project, environment)) "/flags" } { "Feature flags of " (environment) " →" } }
        h2 { "Timeline" }
        (timeline(chrome, &p.history))
    };
    page(
        chrome,
        Section::Other,
        &format!("{project} / {environment}"),
        &format!("project:{project}"),
        body,
    )
}

/// An environment's server rules, as a list.
pub fn protection(rules: &EnvironmentProtection) -> Markup {
    html! {
        ul {
            li { (rules.required_approvals) " approvals needed"
                @if !rules.reviewers.is_empty() { ", from " (rules.reviewers.join(", ")) } }
            @if rules.not_author { li { "nobody who wrote the change or asked for it may approve it" } }
            @if let Some(after) = &rules.after { li { "a release must have succeeded in " (after) " first" } }
            @for f in &rules.freeze {
                li { "frozen from " code { (f.start) } " to " code { (f.end) } " (" (f.timezone.as_deref().unwrap_or("UTC")) ")"
                    @if let Some(reason) = &f.reason { ": " (reason) } }
            }
        }
    }
}

/// Deployments and flag changes, newest first.
fn timeline(chrome: &Chrome, history: &DeploymentHistory) -> Markup {
    enum Entry<'a> {
        Deployment(&'a DeploymentView),
        Flags(&'a conveyor_api::FlagChangeEntry),
    }
    let mut entries: Vec<(DateTime<Utc>, Entry<'_>)> = history
        .deployments
        .iter()
        .map(|d| (d.created_at, Entry::Deployment(d)))
        .chain(history.flag_changes.iter().map(|f| (f.at, Entry::Flags(f))))
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    html! {
        ol.timeline #timeline {
            @for (at, entry) in &entries {
                @match entry {
                    Entry::Deployment(d) => li.deploy {
                        a href={ "/deployments/" (d.id) } { "Deployment #" (d.id) } " of r" (d.release_id) " " (badge(d.status.as_str()))
                        @if d.rollback_of.is_some() { " (rollback)" }
                        " by " (d.requested_by) " · " (ago(chrome.now, *at))
                        @if let Some(reason) = &d.reason { br; span.muted { (reason) } }
                    },
                    Entry::Flags(f) => li.flag {
                        "Flags changed by " (f.by) " · " (ago(chrome.now, *at))
                        ul { @for c in &f.changes { li { (c) } } }
                    },
                }
            }
        }
    }
}

/// The end of one instance's log.
pub fn render_instance_log(
    chrome: &Chrome,
    (project, environment): (&str, &str),
    (version, index): (&str, u32),
    log: Option<&str>,
) -> Markup {
    let body = html! {
        p.crumbs { a href="/" { "Overview" } " / " a href=(environment_path(project, environment)) { (project) " / " (environment) } " / " (version) " instance " (index) }
        h1 { "Log of " (version) " instance " (index) }
        p.muted { "Its output (standard output and error), the newest 64 KiB, the project's secrets masked. "
            a href={ (environment_path(project, environment)) "/instances/" (encode(version)) "/" (index) "/log" } { "Read again" } }
        @match log {
            Some(text) if !text.is_empty() => pre #instance-log .log tabindex="0" { (text) },
            Some(_) => p.muted { "Nothing written yet." },
            None => p.muted { "No log: this version's instances were not started on this server, or are gone." },
        }
    };
    page(
        chrome,
        Section::Other,
        &format!("{version} instance {index}"),
        "",
        body,
    )
}

#[derive(Debug, Clone)]
pub struct DeploymentPage {
    pub deployment: DeploymentView,
    pub report: AnalysisReport,
    pub controls: Controls,
}

/// One look of a judged metric, as numbers a chart can draw.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Look {
    pub canary: Option<f64>,
    pub baseline: Option<f64>,
    /// The interval on the canary's value.
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    /// What the canary must stay within.
    pub tolerance: Option<f64>,
    pub unit: &'static str,
}

/// Reads a judgement's evidence: the rate tests (errors, the share of slow requests), the
/// resource growth tests and restarts; None for evidence of another shape (a webhook's).
pub fn look(evidence: &serde_json::Value) -> Option<Look> {
    let s = &evidence["statistic"];
    let num = |v: &serde_json::Value| v.as_f64();
    let rate = if s.get("rate").is_some() { &s["rate"] } else { s };
    if let Some(baseline) = rate.get("baseline_rate") {
        let b = num(baseline);
        let margin = &rate["margin"];
        let tolerance = match (b, num(&margin["relative"]), num(&margin["absolute"])) {
            (Some(b), Some(rel), Some(abs)) => Some((b * (1.0 + rel)).max(b + abs)),
            _ => None,
        };
        return Some(Look {
            canary: num(&rate["canary_rate"]),
            baseline: b,
            lower: b
                .zip(num(&rate["difference"]["lower"]))
                .map(|(b, d)| (b + d).max(0.0)),
            upper: b.zip(num(&rate["difference"]["upper"])).map(|(b, d)| b + d),
            tolerance,
            unit: "%",
        });
    }
    if s.get("fail_above").is_some() {
        return Some(Look {
            canary: num(&s["canary"]["median"]),
            baseline: num(&s["baseline"]["median"]),
            lower: num(&s["canary"]["lower"]),
            upper: num(&s["canary"]["upper"]),
            tolerance: num(&s["fail_above"]),
            unit: "",
        });
    }
    if s.get("tolerance").is_some() && s["canary"].get("during").is_some() {
        return Some(Look {
            canary: num(&s["canary"]["during"]),
            baseline: num(&s["baseline"]["during"]),
            tolerance: num(&s["tolerance"]),
            ..Look::default()
        });
    }
    None
}

fn metric_chart(metric: &str, judgements: &[&JudgementView], start: DateTime<Utc>) -> Option<String> {
    let looks: Vec<(f64, Look)> = judgements
        .iter()
        .filter_map(|j| look(&j.evidence).map(|l| ((j.at - start).num_milliseconds() as f64 / 1000.0, l)))
        .collect();
    let unit = looks.first()?.1.unit;
    let series = vec![
        Series {
            name: "canary".into(),
            color: "#bc4c00",
            points: looks.iter().map(|(x, l)| (*x, l.canary)).collect(),
        },
        Series {
            name: "baseline".into(),
            color: "#0a58ca",
            points: looks.iter().map(|(x, l)| (*x, l.baseline)).collect(),
        },
    ];
    let extras = Extras {
        band: looks
            .iter()
            .filter_map(|(x, l)| Some((*x, l.lower?, l.upper?)))
            .collect(),
        limit: looks
            .iter()
            .filter_map(|(x, l)| Some((*x, l.tolerance?)))
            .collect(),
        unit,
        x_label: "since the deployment started",
    };
    Some(line_chart(
        &format!("{metric}: canary against baseline"),
        &series,
        &extras,
    ))
}

pub fn render_deployment(chrome: &Chrome, p: &DeploymentPage) -> Markup {
    let d = &p.deployment;
    let mut by_metric: BTreeMap<&str, Vec<&JudgementView>> = BTreeMap::new();
    for j in &p.report.judgements {
        by_metric.entry(j.metric.as_str()).or_default().push(j);
    }
    let failed: Vec<&str> = p
        .report
        .judgements
        .iter()
        .filter(|j| j.verdict == conveyor_api::Verdict::Fail)
        .map(|j| j.metric.as_str())
        .collect();
    let body = html! {
        p.crumbs { a href="/" { "Overview" } " / " a href=(environment_path(&d.project, &d.environment)) { (d.project) " / " (d.environment) } " / deployment " (d.id) }
        h1 { "Deployment #" (d.id) " " (badge(d.status.as_str())) }
        dl.kv {
            dt { "Release" } dd { a href={ "/releases/" (d.release_id) } { "r" (d.release_id) } }
            dt { "Requested by" } dd { (d.requested_by) " " (ago(chrome.now, d.created_at)) }
            dt { "Phases" } dd { (d.phases.join(" → ")) }
            @if let (Some(phase), None) = (&d.phase, d.finished_at) { dt { "Now" } dd { (phase) " · " (d.traffic) "% of traffic" } }
            @if !d.approvals.is_empty() { dt { "Approved by" } dd { (d.approvals.join(", ")) } }
            @if let Some(of) = d.rollback_of { dt { "Rolls back" } dd { a href={ "/deployments/" (of) } { "#" (of) } } }
        }
        (deployment_controls(chrome, d, p.controls))
        h2 { "Decision" }
        @if d.finished_at.is_some() {
            p #decision { (badge(d.status.as_str())) " " (d.reason.as_deref().unwrap_or(match d.status { DeploymentStatus::Succeeded => "every step passed", _ => "" })) }
        } @else {
            p #decision .muted { "Not decided yet: " (d.phase.as_deref().unwrap_or("waiting")) }
        }
        @if !failed.is_empty() { p.problem #failed-metrics { "Failed: " (failed.join(", ")) } }
        @if !p.report.live.is_empty() {
            h2 { "Where each metric stands" }
            table { thead { tr { th scope="col" { "Metric" } th scope="col" { "Standing" } th scope="col" { "Why" } } }
                tbody { @for s in &p.report.live { tr { td { (s.metric) } td { (badge(&s.standing)) } td { (s.summary) } } } } }
        }
        h2 { "Canary analysis" }
        @if by_metric.is_empty() { p.muted { "No judgements: this deployment has no canary analysis, or none has been made yet." } }
        @for (metric, judgements) in &by_metric {
            section.card .metric data-metric=(metric) aria-label={ "Metric " (metric) } {
                h3 { (metric) " " (badge(judgements.last().map_or("pending", |j| j.verdict.as_str()))) }
                @if let Some(svg) = metric_chart(metric, judgements, d.created_at) { div.scroll { (trusted(svg)) } }
                details {
                    summary { (judgements.len()) " judgements with their evidence" }
                    table {
                        thead { tr { th scope="col" { "At" } th scope="col" { "Traffic" } th scope="col" { "Verdict" } th scope="col" { "Summary" } } }
                        tbody { @for j in judgements { tr {
                            td { (ago(chrome.now, j.at)) } td { (j.traffic) "%" } td { (badge(j.verdict.as_str())) }
                            td { (j.summary) details { summary { "evidence" } (json(&j.evidence)) } }
                        } } }
                    }
                }
            }
        }
    };
    page(
        chrome,
        Section::Other,
        &format!("Deployment #{}", d.id),
        &format!("deployment:{}", d.id),
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evidence_of_each_test_reads_as_a_look() {
        let rate = json!({"statistic": {"canary_rate": 0.02, "baseline_rate": 0.01,
            "margin": {"relative": 0.5, "absolute": 0.005}, "difference": {"lower": 0.004, "upper": 0.02}}});
        let l = look(&rate).unwrap();
        assert_eq!((l.canary, l.baseline, l.unit), (Some(0.02), Some(0.01), "%"));
        assert!((l.tolerance.unwrap() - 0.015).abs() < 1e-12);
        assert!((l.lower.unwrap() - 0.014).abs() < 1e-12 && (l.upper.unwrap() - 0.03).abs() < 1e-12);
        let latency = json!({"statistic": {"rate": rate["statistic"].clone(), "quantile": 0.99}});
        assert_eq!(look(&latency), Some(l));
        let growth = json!({"statistic": {"canary": {"median": 3.0, "lower": 2.0, "upper": 4.0},
            "baseline": {"median": 0.1}, "fail_above": 1.5}});
        assert_eq!(look(&growth).unwrap().tolerance, Some(1.5));
        let restarts =
            json!({"statistic": {"canary": {"during": 2}, "baseline": {"during": 0}, "tolerance": 0}});
        assert_eq!(look(&restarts).unwrap().canary, Some(2.0));
        assert_eq!(look(&json!({"status": 200})), None);
    }
}
