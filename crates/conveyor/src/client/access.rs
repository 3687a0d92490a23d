//! Users, their roles and tokens; `whoami`; environment protection.

use std::process::ExitCode;

use conveyor_api::{
    EnvironmentProtection, FreezeRule, Grant, GrantRole, NewToken, NewUser, Role, TokenCreated, TokenList,
    TokenRevoked, User, UserKind, UserList, WhoAmI,
};

use super::{Client, time};

/// A grant as people read it: `deployer of shop/production`, `admin of every project`.
fn grant_text(g: &Grant) -> String {
    match (&g.project, &g.environment) {
        (None, _) => format!("{} of every project", g.role),
        (Some(p), None) => format!("{} of {p}", g.role),
        (Some(p), Some(e)) => format!("{} of {p}/{e}", g.role),
    }
}

fn grants_text(grants: &[Grant]) -> String {
    if grants.is_empty() {
        return "no role".into();
    }
    grants.iter().map(grant_text).collect::<Vec<_>>().join(", ")
}

/// `?project=…&environment=…` of a grant's scope.
fn scope_query(project: Option<&str>, environment: Option<&str>) -> String {
    let pairs: Vec<String> = [("project", project), ("environment", environment)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

impl Client {
    pub async fn whoami(&self) -> anyhow::Result<ExitCode> {
        let me: WhoAmI = self.get("/api/v1/whoami").await?;
        let token = me
            .token
            .map_or_else(|| "no token".to_string(), |t| format!("token {t}"));
        let expiry = me.expires_at.map_or_else(
            || "never expires".to_string(),
            |at| format!("expires {}", time(&at)),
        );
        println!("{} ({token}, {expiry})", me.user);
        println!("  {}", grants_text(&me.grants));
        Ok(ExitCode::SUCCESS)
    }

    pub async fn add_user(
        &self,
        name: &str,
        email: Option<String>,
        automation: bool,
    ) -> anyhow::Result<ExitCode> {
        let user: User = self
            .post(
                "/api/v1/users",
                NewUser {
                    name: name.into(),
                    email,
                    kind: Some(if automation {
                        UserKind::Automation
                    } else {
                        UserKind::Person
                    }),
                },
            )
            .await?;
        println!(
            "user {} added ({}); grant a role with `conveyor user grant`",
            user.name, user.kind
        );
        Ok(ExitCode::SUCCESS)
    }

    pub async fn users(&self) -> anyhow::Result<ExitCode> {
        let list: UserList = self.get("/api/v1/users").await?;
        for u in list.users {
            let email = u.email.map(|e| format!(" <{e}>")).unwrap_or_default();
            println!(
                "{:<20} {:<10} {}{email}",
                u.name,
                u.kind.as_str(),
                grants_text(&u.grants)
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn remove_user(&self, name: &str) -> anyhow::Result<ExitCode> {
        self.send(self.http.delete(self.url(&format!("/api/v1/users/{name}"))))
            .await?;
        println!("user {name} removed; their tokens are revoked");
        Ok(ExitCode::SUCCESS)
    }

    pub async fn grant(
        &self,
        name: &str,
        role: Role,
        project: Option<String>,
        environment: Option<String>,
    ) -> anyhow::Result<ExitCode> {
        let user: User = self
            .put(
                &format!("/api/v1/users/{name}/roles"),
                GrantRole {
                    role,
                    project,
                    environment,
                },
            )
            .await?;
        println!("{}: {}", user.name, grants_text(&user.grants));
        Ok(ExitCode::SUCCESS)
    }

    pub async fn revoke_role(
        &self,
        name: &str,
        project: Option<&str>,
        environment: Option<&str>,
    ) -> anyhow::Result<ExitCode> {
        let path = format!("/api/v1/users/{name}/roles{}", scope_query(project, environment));
        let user: User = self.delete(&path).await?;
        println!("{}: {}", user.name, grants_text(&user.grants));
        Ok(ExitCode::SUCCESS)
    }

    pub async fn create_token(
        &self,
        name: &str,
        user: Option<String>,
        expires_in_days: Option<u32>,
    ) -> anyhow::Result<ExitCode> {
        let body: TokenCreated = self
            .post(
                "/api/v1/tokens",
                NewToken {
                    name: name.into(),
                    user,
                    expires_in_days,
                    expires_at: None,
                },
            )
            .await?;
        print_token(&body);
        Ok(ExitCode::SUCCESS)
    }

    pub async fn tokens(&self) -> anyhow::Result<ExitCode> {
        let list: TokenList = self.get("/api/v1/tokens").await?;
        for t in list.tokens {
            let state = match (t.revoked_at, t.expires_at) {
                (Some(at), _) => format!("revoked {}", time(&at)),
                (None, Some(at)) => format!("expires {}", time(&at)),
                (None, None) => "never expires".into(),
            };
            println!(
                "{:<24} {:<20} created {}  {state}",
                t.name,
                t.user,
                time(&t.created_at)
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn revoke_token(&self, name: &str) -> anyhow::Result<ExitCode> {
        let _: TokenRevoked = self.delete(&format!("/api/v1/tokens/{name}")).await?;
        println!("token {name} revoked");
        Ok(ExitCode::SUCCESS)
    }

    pub async fn rotate_token(&self, name: &str) -> anyhow::Result<ExitCode> {
        let body: TokenCreated = self
            .post(&format!("/api/v1/tokens/{name}/rotate"), serde_json::json!({}))
            .await?;
        print_token(&body);
        println!("the old value of {name} is refused from now on");
        Ok(ExitCode::SUCCESS)
    }
}

/// `START;END[;TIMEZONE[;REASON]]` → a freeze window (checked by the server).
pub fn parse_freeze(text: &str) -> anyhow::Result<FreezeRule> {
    let mut parts = text.split(';').map(str::trim);
    let (Some(start), Some(end)) = (parts.next(), parts.next()) else {
        anyhow::bail!("--freeze '{text}': expected START;END[;TIMEZONE[;REASON]] (cron START and END)");
    };
    let nonempty = |p: Option<&str>| p.filter(|p| !p.is_empty()).map(str::to_string);
    Ok(FreezeRule {
        start: start.to_string(),
        end: end.to_string(),
        timezone: nonempty(parts.next()),
        reason: nonempty(parts.next()),
    })
}

fn print_protection(project: &str, environment: &str, p: &EnvironmentProtection) {
    println!("{project}/{environment} protection (set on the server)");
    let reviewers = if p.reviewers.is_empty() {
        "any deployer".to_string()
    } else {
        p.reviewers.join(", ")
    };
    println!(
        "  approvals   {} ({reviewers}{})",
        p.required_approvals,
        if p.not_author { ", not the author" } else { "" }
    );
    for w in &p.freeze {
        println!(
            "  freeze      {} → {} {}{}",
            w.start,
            w.end,
            w.timezone.as_deref().unwrap_or("UTC"),
            w.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
        );
    }
    if let Some(after) = &p.after {
        println!("  after       {after}");
    }
}

impl Client {
    pub async fn protect(
        &self,
        project: Option<String>,
        environment: &str,
        protection: EnvironmentProtection,
    ) -> anyhow::Result<ExitCode> {
        let project = self.project_or_only(project).await?;
        let set: EnvironmentProtection = self
            .put(
                &format!("/api/v1/projects/{project}/environments/{environment}/protection"),
                protection,
            )
            .await?;
        print_protection(&project, environment, &set);
        Ok(ExitCode::SUCCESS)
    }

    pub async fn unprotect(&self, project: Option<String>, environment: &str) -> anyhow::Result<ExitCode> {
        let project = self.project_or_only(project).await?;
        let path = format!("/api/v1/projects/{project}/environments/{environment}/protection");
        self.send(self.http.delete(self.url(&path))).await?;
        println!("{project}/{environment}: no protection on the server any more");
        Ok(ExitCode::SUCCESS)
    }

    pub async fn protection(&self, project: Option<String>, environment: &str) -> anyhow::Result<ExitCode> {
        let project = self.project_or_only(project).await?;
        let p: EnvironmentProtection = self
            .get(&format!(
                "/api/v1/projects/{project}/environments/{environment}/protection"
            ))
            .await?;
        print_protection(&project, environment, &p);
        Ok(ExitCode::SUCCESS)
    }
}

fn print_token(t: &TokenCreated) {
    let expiry = t.expires_at.map_or_else(
        || "never expires".to_string(),
        |at| format!("expires {}", time(&at)),
    );
    println!(
        "token {} for {} ({expiry}) — shown once, store it now:",
        t.name, t.user
    );
    println!("{}", t.token);
}
