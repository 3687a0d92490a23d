//! Settings: users and their roles, tokens (the new one shown once), and each environment's
//! protection rules. Admins see everyone; a maintainer sees their own tokens and their
//! projects' rules.

use conveyor_api::{EnvironmentProtection, TokenInfo, User};
use maud::{Markup, html};

use crate::{Chrome, Section, ago, badge, button, csrf, encode, environment_path, page};

#[derive(Debug, Clone)]
pub struct SettingsPage {
    /// Every user, for admins; empty otherwise.
    pub users: Vec<User>,
    pub tokens: Vec<TokenInfo>,
    /// A token just made: `(name, secret)`, shown this once.
    pub new_token: Option<(String, String)>,
    /// `(project, environment, rules)` the viewer may change.
    pub protections: Vec<(String, String, Option<EnvironmentProtection>)>,
    pub admin: bool,
}

const ROLES: [&str; 4] = ["viewer", "deployer", "maintainer", "admin"];

pub fn render(chrome: &Chrome, p: &SettingsPage) -> Markup {
    let body = html! {
        h1 { "Settings" }
        @if let Some((name, secret)) = &p.new_token {
            div.flash role="status" { "Token " code { (name) } " — copy it now, it is not shown again:" pre.mono #new-token { (secret) } }
        }
        @if p.admin {
            h2 { "Users" }
            div.scroll { table #users {
                thead { tr { th scope="col" { "User" } th scope="col" { "Kind" } th scope="col" { "Roles" } th scope="col" { "" } } }
                tbody { @for u in &p.users { tr {
                    td { (u.name) @if let Some(e) = &u.email { br; span.muted { (e) } } }
                    td { (u.kind) }
                    td { @for g in &u.grants {
                        (g.role) " on " (g.project.as_deref().unwrap_or("every project"))
                        @if let Some(env) = &g.environment { " / " (env) }
                        br;
                    } }
                    td { @if u.name != chrome.user {
                        (button(chrome, &format!("/settings/users/{}/remove", encode(&u.name)), "Remove", &format!("Remove user {} and revoke their tokens?", u.name), "danger", &[]))
                    } }
                } } }
            } }
            h3 { "Add a user" }
            form.inline method="post" action="/settings/users" {
                (csrf(chrome))
                label { "Name" input type="text" name="name" required size="14"; }
                label { "Email" input type="email" name="email" size="20"; }
                label { "Kind" select name="kind" { option value="person" { "person" } option value="automation" { "automation" } } }
                button type="submit" { "Add user" }
            }
            h3 { "Grant a role" }
            form.inline method="post" action="/settings/roles" {
                (csrf(chrome))
                label { "User" select name="user" { @for u in &p.users { option value=(u.name) { (u.name) } } } }
                label { "Role" select name="role" { @for r in ROLES { option value=(r) { (r) } } } }
                label { "Project" input type="text" name="project" placeholder="every project" size="12"; }
                label { "Environment" input type="text" name="environment" placeholder="every environment" size="12"; }
                button type="submit" { "Grant" }
            }
        }
        h2 { "Tokens" }
        div.scroll { table #tokens {
            thead { tr { th scope="col" { "Token" } th scope="col" { "User" } th scope="col" { "Made" } th scope="col" { "Expires" } th scope="col" { "" } } }
            tbody { @for t in &p.tokens { tr {
                td { code { (t.name) } }
                td { (t.user) }
                td { (ago(chrome.now, t.created_at)) }
                td { @match t.expires_at { Some(at) => { (at.format("%Y-%m-%d %H:%M")) }, None => span.muted { "never" } } }
                td { @if t.revoked_at.is_some() { (badge("cancelled")) " revoked" } @else {
                    (button(chrome, &format!("/settings/tokens/{}/revoke", encode(&t.name)), "Revoke", &format!("Revoke token {}?", t.name), "danger", &[]))
                } }
            } } }
        } }
        h3 { "Make a token" }
        form.inline method="post" action="/settings/tokens" {
            (csrf(chrome))
            label { "Name" input type="text" name="name" required size="16"; }
            label { "Days" input type="number" name="expires_in_days" value="90" min="1" max="3650"; }
            button type="submit" { "Make token" }
        }
        h2 { "Environment protection" }
        @if p.protections.is_empty() { p.muted { "No environments you maintain yet." } }
        @for (project, environment, rules) in &p.protections {
            section.card aria-label={ "Protection of " (project) " / " (environment) } {
                h3 { a href=(environment_path(project, environment)) { (project) " / " (environment) } }
                @let rules = rules.clone().unwrap_or_default();
                form.inline method="post" action={ (environment_path(project, environment)) "/protection" } {
                    (csrf(chrome))
                    label { "Approvals" input type="number" name="required_approvals" min="0" max="10" value=(rules.required_approvals); }
                    label { "Reviewers" input type="text" name="reviewers" value=(rules.reviewers.join(", ")) placeholder="any deployer" size="16"; }
                    label { "After" input type="text" name="after" value=[rules.after.as_deref()] placeholder="staging" size="10"; }
                    label { input type="checkbox" name="not_author" value="true" checked[rules.not_author]; " not the author" }
                    button type="submit" { "Save rules" }
                }
                @if !rules.freeze.is_empty() { p.muted { (rules.freeze.len()) " freeze windows (change them with " code { "conveyor env protect" } ")" } }
            }
        }
    };
    page(chrome, Section::Settings, "Settings", "", body)
}
