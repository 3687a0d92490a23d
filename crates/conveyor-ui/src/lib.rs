//! The web UI's pages, rendered on the server from the API's own views (`conveyor-api`): HTML
//! through maud (escaped by default), charts as inline SVG, one stylesheet and one small script,
//! all served by the binary itself — nothing is fetched from elsewhere. Every page and form works
//! without JavaScript; the script adds live updates, live logs and confirmations.
//!
//! Pure: the time (`Chrome::now`), who is looking and what they may do are passed in.

pub mod audit;
pub mod dora;
pub mod environment;
pub mod flags;
pub mod overview;
pub mod project;
pub mod release;
pub mod run;
pub mod settings;
pub mod svg;

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

pub use maud::Markup as Html;

/// The stylesheet, served at [`CSS_PATH`].
pub const CSS: &str = include_str!("assets/conveyor.css");
/// The script, served at [`JS_PATH`].
pub const JS: &str = include_str!("assets/conveyor.js");
pub const CSS_PATH: &str = "/ui/conveyor.css";
pub const JS_PATH: &str = "/ui/conveyor.js";

/// The name of the hidden field every form carries its CSRF token in.
pub const CSRF_FIELD: &str = "_csrf";

/// What every page around its content needs: who is signed in, the token their forms carry, what
/// they may see in the menu, and the time to measure ages against.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub user: String,
    /// The CSRF token of the session (empty when the caller used a bearer token).
    pub csrf: String,
    /// Show the settings page (admins and maintainers).
    pub settings: bool,
    /// Show the audit page (readers of every project).
    pub audit: bool,
    pub now: DateTime<Utc>,
    /// A message after an action (`?done=`).
    pub flash: Option<String>,
    /// The event log's head when the page was read: live updates follow from there, so an
    /// event appended while the page loads is not missed.
    pub seq: i64,
}

/// The menu's sections, to mark the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Dora,
    Audit,
    Settings,
    Other,
}

/// A whole page: the menu, the flash message and `body` in `<main>`. `live` names the topics of
/// events that make the page refresh itself (`run:5`, `deployment:7`, `project:shop`, `*`), or is
/// empty for a page that stays as it is.
pub fn page(chrome: &Chrome, section: Section, title: &str, live: &str, body: Markup) -> Markup {
    let current = |s: Section| (s == section).then_some("page");
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "Conveyor" }
                    nav aria-label="Main" {
                        ul {
                            li { a href="/" aria-current=[current(Section::Overview)] { "Overview" } }
                            li { a href="/dora" aria-current=[current(Section::Dora)] { "DORA" } }
                            @if chrome.audit {
                                li { a href="/audit" aria-current=[current(Section::Audit)] { "Audit" } }
                            }
                            @if chrome.settings {
                                li { a href="/settings" aria-current=[current(Section::Settings)] { "Settings" } }
                            }
                        }
                    }
                    div.who {
                        span { "Signed in as " strong { (chrome.user) } }
                        @if !chrome.csrf.is_empty() {
                            form method="post" action="/sign-out" {
                                (csrf(chrome))
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main data-live=[(!live.is_empty()).then_some(live)] data-seq=(chrome.seq) {
                    @if let Some(flash) = &chrome.flash {
                        p.flash role="status" { (flash) }
                    }
                    (body)
                }
                script src=(JS_PATH) defer {}
            }
        }
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Conveyor" }
            link rel="stylesheet" href=(CSS_PATH);
            link rel="icon" href="data:,";
        }
    }
}

/// The sign-in page: a token, exchanged for a session. `next` is where to go afterwards;
/// `signed_in` who has a session already (a sign-in link then asks before switching).
pub fn sign_in(next: &str, problem: Option<&str>, signed_in: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body {
                main #main .signin {
                    h1 { "Sign in to Conveyor" }
                    @if let Some(problem) = problem {
                        p.problem role="alert" { (problem) }
                    }
                    @if let Some(user) = signed_in {
                        p { "You are signed in as " strong { (user) } ". " a href=(next) { "Go on as " (user) } }
                    }
                    form #sign-in .stack method="post" action="/sign-in" data-signed-in=[signed_in] {
                        input type="hidden" name="next" value=(next);
                        label for="token" { "API token" }
                        input #token type="password" name="token" autocomplete="current-password" required
                            aria-describedby="token-help";
                        p #token-help .muted {
                            "A token of yours (" code { "conveyor token create" } "). It is exchanged for a session of 12 hours, which signing out ends."
                        }
                        button.primary type="submit" { "Sign in" }
                    }
                }
                script src=(JS_PATH) defer {}
            }
        }
    }
}

/// An error as a page: its status, code and message, with a way back.
pub fn error_page(chrome: Option<&Chrome>, status: u16, code: &str, message: &str) -> Markup {
    let body = html! {
        h1 { "Error " (status) }
        p.problem role="alert" { (message) }
        p.muted { "code: " code { (code) } }
        p { a href="/" { "Back to the overview" } }
    };
    match chrome {
        Some(chrome) => page(chrome, Section::Other, "Error", "", body),
        None => html! {
            (DOCTYPE)
            html lang="en" { (head("Error")) body { main #main { (body) } } }
        },
    }
}

/// The page a form without JavaScript's confirmation lands on: the question, and the same form
/// again, confirmed.
pub fn confirm(
    chrome: &Chrome,
    question: &str,
    action: &str,
    fields: &[(String, String)],
    back: &str,
) -> Markup {
    page(
        chrome,
        Section::Other,
        "Confirm",
        "",
        html! {
            h1 { "Confirm" }
            p { (question) }
            div.actions {
                form method="post" action=(action) {
                    (csrf(chrome))
                    @for (name, value) in fields {
                        input type="hidden" name=(name) value=(value);
                    }
                    input type="hidden" name="confirmed" value="yes";
                    button.primary type="submit" { "Yes, go ahead" }
                }
                a.button href=(back) { "Cancel" }
            }
        },
    )
}

/// The hidden CSRF field of a form.
pub fn csrf(chrome: &Chrome) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(chrome.csrf); }
}

/// A one-button form that posts to `action` after confirming `question`, with `fields`.
pub fn button(
    chrome: &Chrome,
    action: &str,
    label: &str,
    question: &str,
    class: &str,
    fields: &[(&str, &str)],
) -> Markup {
    html! {
        form method="post" action=(action) data-confirm=(question) {
            (csrf(chrome))
            @for (name, value) in fields {
                input type="hidden" name=(name) value=(value);
            }
            button type="submit" class=(class) { (label) }
        }
    }
}

/// A status as a coloured badge (`success`, `failed`, `running`, …).
pub fn badge(status: &str) -> Markup {
    html! { span class={ "badge s-" (status) } { (status.replace('_', " ")) } }
}

/// How long ago `at` was, briefly (`3 min ago`), with the exact time as its title.
pub fn ago(now: DateTime<Utc>, at: DateTime<Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) title=(at.format("%Y-%m-%d %H:%M:%S UTC")) { (since(now, at)) " ago" } }
}

/// `now - at` in the largest unit that fits.
pub fn since(now: DateTime<Utc>, at: DateTime<Utc>) -> String {
    duration((now - at).num_seconds().max(0))
}

/// A span of seconds, briefly: `42 s`, `3 min`, `5 h`, `2 d`.
pub fn duration(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// How long something took or has been going: `finished - started`, or `now - started`.
pub fn took(now: DateTime<Utc>, started: Option<DateTime<Utc>>, finished: Option<DateTime<Utc>>) -> String {
    match started {
        Some(start) => duration((finished.unwrap_or(now) - start).num_seconds().max(0)),
        None => String::new(),
    }
}

/// A commit, shortened, with the full hash as its title.
pub fn commit(sha: &str) -> Markup {
    html! { code title=(sha) { (sha.get(..10).unwrap_or(sha)) } }
}

/// A digest (hex SHA-256), shortened.
pub fn digest(hex: &str) -> Markup {
    html! { code title={ "sha256:" (hex) } { "sha256:" (hex.get(..12).unwrap_or(hex)) "…" } }
}

/// Percent-encodes a path segment or query value.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path of a project environment's page.
pub fn environment_path(project: &str, environment: &str) -> String {
    format!(
        "/projects/{}/environments/{}",
        encode(project),
        encode(environment)
    )
}

/// JSON shown as indented text.
pub fn json(value: &serde_json::Value) -> Markup {
    html! { pre.mono { (serde_json::to_string_pretty(value).unwrap_or_default()) } }
}

/// Text that is already HTML (the inline SVG built by [`svg`], whose text is escaped there).
fn trusted(svg: String) -> PreEscaped<String> {
    PreEscaped(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_the_largest_unit_that_fits() {
        for (seconds, text) in [
            (0, "0 s"),
            (119, "119 s"),
            (120, "2 min"),
            (7199, "119 min"),
            (7200, "2 h"),
            (172_800, "2 d"),
        ] {
            assert_eq!(duration(seconds), text);
        }
    }

    #[test]
    fn encoding_leaves_only_unreserved_bytes() {
        assert_eq!(encode("shop/prod ü"), "shop%2Fprod%20%C3%BC");
        assert_eq!(
            environment_path("a b", "prod"),
            "/projects/a%20b/environments/prod"
        );
    }
}
