//! The trust boundary through a real server: reads need a token, each role may do exactly what
//! `docs/security.md` says on every mounted route, tokens expire and are revoked and rotated,
//! the events API shows no hashes, the `Host` is checked and failed authentications are limited.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::delivery::Shop;
use crate::harness::*;

/// A row of the routes table in docs/security.md.
#[derive(Debug)]
struct Row {
    method: String,
    path: String,
    role: String,
    on: String,
}

fn security_table() -> Vec<Row> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/security.md"))
        .expect("docs/security.md");
    let table = doc
        .split("<!-- routes -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- /routes -->").next())
        .expect("the routes table between its markers");
    table
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(2)
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            Row {
                method: cells[0].to_string(),
                path: cells[1].trim_matches('`').to_string(),
                role: cells[2].to_string(),
                on: cells[3].to_string(),
            }
        })
        .collect()
}

fn rank(role: &str) -> u8 {
    match role {
        "viewer" => 1,
        "deployer" => 2,
        "maintainer" => 3,
        "admin" => 4,
        other => panic!("no role '{other}'"),
    }
}

/// A test user: their role, and whether it is on every project, on project `shop`, or only on
/// its `staging` environment.
struct Who {
    name: &'static str,
    role: &'static str,
    every_project: bool,
    staging_only: bool,
}

impl Who {
    /// Should this user pass the route's access check, by the table? The paths name project
    /// `shop` and its environment `production`.
    fn allowed(&self, row: &Row) -> bool {
        let rank = |r| rank(r);
        match row.on.as_str() {
            s if s.starts_with("every project") => self.every_project && rank(self.role) >= rank(&row.role),
            "any" => row.role == "viewer" || rank(self.role) >= rank(&row.role),
            "project" if self.staging_only => row.role == "viewer",
            "environment" if self.staging_only => row.role == "viewer",
            "project" | "environment" => rank(self.role) >= rank(&row.role),
            other => panic!("no scope '{other}'"),
        }
    }
}

const USERS: [Who; 5] = [
    Who {
        name: "vera",
        role: "viewer",
        every_project: false,
        staging_only: false,
    },
    Who {
        name: "walt",
        role: "viewer",
        every_project: true,
        staging_only: false,
    },
    Who {
        name: "stan",
        role: "deployer",
        every_project: false,
        staging_only: true,
    },
    Who {
        name: "dora",
        role: "deployer",
        every_project: false,
        staging_only: false,
    },
    Who {
        name: "mona",
        role: "maintainer",
        every_project: false,
        staging_only: false,
    },
];

/// `docs/security.md`'s table is the route table (each mounted route once), and every route
/// answers a token of each role (and none) as the table says: refused with 401/403 exactly when
/// the role is not enough, whatever else the request then does.
#[tokio::test]
async fn every_route_answers_each_role_as_this_table_says() {
    let shop = Shop::new("  staging:\n  production:\n").await;
    let server = &shop.server;
    let release = shop.deployed("v1", "production").await;
    let deployment = server
        .get("/api/v1/projects/shop/environments/production/deployments")
        .await["deployments"][0]["id"]
        .as_i64()
        .unwrap();
    let run = server.get("/api/v1/runs?project=shop").await["runs"][0]["id"]
        .as_i64()
        .unwrap();
    const ENV: &str = "/api/v1/projects/shop/environments/production/flags";
    let (status, _) = server
        .request(
            Method::PUT,
            ENV,
            Some(json!({"flags": {"greeting": {"state": "ENABLED", "variants": {"a": "hi"}, "defaultVariant": "a"}}})),
            true,
        )
        .await;
    assert_eq!(status, 200);
    let later = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let schedule = server
        .post(
            &format!("{ENV}/greeting/schedule"),
            json!({"at": later, "change": {"state": "DISABLED"}}),
        )
        .await["schedule_id"]
        .as_i64()
        .unwrap();

    let table = security_table();
    let routes = conveyor_server::routes();
    let mut seen = BTreeMap::new();
    for row in &table {
        *seen.entry((row.method.clone(), row.path.clone())).or_insert(0) += 1;
    }
    for route in &routes {
        let key = (route.method.to_string(), route.path.clone());
        assert_eq!(seen.remove(&key), Some(1), "{key:?}: one row in docs/security.md");
    }
    assert!(seen.is_empty(), "rows for routes that are not mounted: {seen:?}");

    let mut tokens = Vec::new();
    for who in &USERS {
        let grant = match (who.every_project, who.staging_only) {
            (true, _) => (who.role, None, None),
            (false, true) => (who.role, Some("shop"), Some("staging")),
            (false, false) => (who.role, Some("shop"), None),
        };
        tokens.push((who, server.user(who.name, &[grant]).await));
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for row in &table {
        if row.role == "anyone" || row.role == "evaluation key" {
            continue;
        }
        let path = row
            .path
            .replace("{project}", "shop")
            .replace("{environment}", "production")
            .replace("{key}", "greeting")
            .replace("{*path}", "dist/VERSION")
            .replace("{name}", "nobody")
            .replace("{version}", "r1")
            .replace("{index}", "0");
        // The web UI's pages have the API's paths without its prefix.
        let bare = path.trim_start_matches("/api/v1");
        let id = if bare.starts_with("/runs/") {
            run
        } else if bare.starts_with("/releases/") {
            release
        } else if bare.starts_with("/deployments/") {
            deployment
        } else {
            schedule
        };
        let path = path.replace("{id}", &id.to_string());
        // Bodies that name the scope, or do nothing harmful when allowed.
        let body = match (row.method.as_str(), row.path.as_str()) {
            (_, p) if p.ends_with("/promote") => Some(json!({"environment": "production"})),
            (_, p) if p.ends_with("/runs") && row.method == "POST" => {
                Some(json!({"branch": "no-such-branch"}))
            }
            (_, "/api/v1/users/{name}/roles") => Some(json!({"role": "viewer", "project": "shop"})),
            ("POST" | "PUT" | "PATCH", _) => Some(json!({})),
            _ => None,
        };
        // A page's form: the same fields, unconfirmed (so an allowed action only asks).
        let page = routes
            .iter()
            .any(|r| r.path == row.path && matches!(r.access, conveyor_server::Access::Page(_)));
        let form: Vec<(&str, &str)> = match row.path.as_str() {
            p if p.ends_with("/promote") => vec![("environment", "production")],
            p if p.ends_with("/runs") => vec![("branch", "no-such-branch")],
            _ => Vec::new(),
        };
        let method: Method = row.method.parse().unwrap();
        let send = |token: Option<&str>| {
            let mut request = http.request(method.clone(), format!("{}{path}", server.base));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if page && method == Method::POST {
                request = request.form(&form);
            } else if let Some(body) = &body {
                request = request.json(body);
            }
            async move { request.send().await.unwrap().status().as_u16() }
        };
        let status = send(None).await;
        // A browser without a session is sent to sign in; anything else is told a token is missing.
        let without = if page && method == Method::GET { 303 } else { 401 };
        assert_eq!(status, without, "{} {path} without a token", row.method);
        for (who, token) in &tokens {
            let status = send(Some(token)).await;
            let refused = status == 401 || status == 403;
            assert_eq!(
                refused,
                !who.allowed(row),
                "{} {path} as {} ({} {}): {status}",
                row.method,
                who.name,
                who.role,
                row.on
            );
        }
        let status = send(Some(TOKEN)).await;
        assert!(
            status != 401 && status != 403,
            "{} {path} as admin: {status}",
            row.method
        );
    }
}

async fn status_of(
    server: &Server,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", server.base))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A deployer of staging ships to staging and not to production; a viewer changes nothing.
#[tokio::test]
async fn a_staging_deployer_cannot_touch_production() {
    let shop = Shop::new("  staging:\n  production:\n").await;
    let release = shop.release("v1").await;
    let stan = shop
        .server
        .user("stan", &[("deployer", Some("shop"), Some("staging"))])
        .await;
    let promote = format!("/api/v1/releases/{release}/promote");
    let (status, body) = status_of(
        &shop.server,
        Method::POST,
        &promote,
        &stan,
        Some(json!({"environment": "production"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["message"],
        "stan needs the role 'deployer' on environment 'production' of project 'shop'"
    );
    let (status, body) = status_of(
        &shop.server,
        Method::POST,
        &promote,
        &stan,
        Some(json!({"environment": "staging"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let done = shop.finished(body["deployment_id"].as_i64().unwrap()).await;
    assert_eq!(
        (done["status"].as_str(), done["requested_by"].as_str()),
        (Some("succeeded"), Some("stan"))
    );
    // Rolling production back is shipping to production, too.
    let (status, _) = status_of(
        &shop.server,
        Method::POST,
        "/api/v1/projects/shop/environments/production/rollback",
        &stan,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 403);
}

/// Tokens: an expired one and a revoked one are refused, a rotated one's old value too, a
/// removed user's tokens with them; whoami says who a token is.
#[tokio::test]
async fn expired_revoked_and_rotated_tokens_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let alice = server.user("alice", &[("viewer", None, None)]).await;
    let me = status_of(&server, Method::GET, "/api/v1/whoami", &alice, None).await;
    assert_eq!(me.0, 200);
    assert_eq!(me.1["user"], "alice");
    assert_eq!(me.1["grants"], json!([{"role": "viewer"}]));

    // Expiry.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let (status, short) = status_of(
        &server,
        Method::POST,
        "/api/v1/tokens",
        &alice,
        Some(json!({"name": "alice-short", "expires_at": soon})),
    )
    .await;
    assert_eq!(status, 201, "{short}");
    let short = short["token"].as_str().unwrap().to_string();
    assert_eq!(
        status_of(&server, Method::GET, "/api/v1/runs", &short, None)
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = status_of(&server, Method::GET, "/api/v1/runs", &short, None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));

    // Revocation, by its owner; a stream opened with the token ends with it.
    let mut stream = reqwest::Client::new()
        .get(format!("{}/api/v1/events/stream", server.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let (status, body) = status_of(&server, Method::DELETE, "/api/v1/tokens/alice", &alice, None).await;
    assert_eq!((status, body["revoked"].as_bool()), (200, Some(true)), "{body}");
    assert_eq!(
        status_of(&server, Method::GET, "/api/v1/runs", &alice, None)
            .await
            .0,
        401
    );
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while stream.chunk().await.unwrap().is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its revoked token");
    let listed = server.get("/api/v1/tokens").await;
    let alice_token = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "alice")
        .unwrap();
    assert!(alice_token["revoked_at"].is_string(), "{listed}");
    assert!(!listed.to_string().contains("hash"), "{listed}");

    // Someone else's token is not yours to revoke.
    let bob = server.user("bob", &[("deployer", None, None)]).await;
    let carol = server.user("carol", &[("viewer", None, None)]).await;
    let (status, _) = status_of(&server, Method::DELETE, "/api/v1/tokens/bob", &carol, None).await;
    assert_eq!(status, 403);
    // Removing a user revokes their tokens.
    let (status, _) = server
        .request(Method::DELETE, "/api/v1/users/bob", None, true)
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        status_of(&server, Method::GET, "/api/v1/runs", &bob, None)
            .await
            .0,
        401
    );

    // The admin token rotates: the old value is refused, the new one works.
    let (status, rotated) = server
        .request(Method::POST, "/api/v1/tokens/admin/rotate", None, true)
        .await;
    assert_eq!(status, 201, "{rotated}");
    let new_admin = rotated["token"].as_str().unwrap().to_string();
    assert!(rotated["expires_at"].is_null(), "{rotated}");
    let (status, _) = server.request(Method::GET, "/api/v1/runs", None, true).await;
    assert_eq!(status, 401);
    let (status, me) = status_of(&server, Method::GET, "/api/v1/whoami", &new_admin, None).await;
    assert_eq!((status, me["user"].as_str()), (200, Some("admin")));

    // The log says who did what, and never a token's hash.
    let (_, events) = status_of(
        &server,
        Method::GET,
        "/api/v1/events?limit=1000",
        &new_admin,
        None,
    )
    .await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["type"].as_str().unwrap())
        .collect();
    for kind in [
        "user_added",
        "role_granted",
        "token_created",
        "token_revoked",
        "user_removed",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    assert!(!events.to_string().contains("\"hash\""), "{events}");
}

/// Without a token only the health checks and the API document answer; `--anonymous-read`
/// opens reads (not changes); a `Host` the server does not know is refused; guessing tokens is
/// slowed down.
#[tokio::test]
async fn reads_are_private_hosts_are_checked_and_guessing_is_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    for path in [
        "/api/v1/projects",
        "/api/v1/events",
        "/api/v1/runs",
        "/metrics",
        "/api/v1/dora",
    ] {
        let (status, body) = server.request(Method::GET, path, None, false).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("unauthorized")),
            "{path}"
        );
    }
    for path in ["/healthz", "/readyz", "/api/v1/openapi.json"] {
        assert_eq!(
            server.request(Method::GET, path, None, false).await.0,
            200,
            "{path}"
        );
    }

    // DNS rebinding: a name that resolves here but is not ours.
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/projects", server.base))
        .header("host", "attacker.example")
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 421);

    // Guessing: after a burst of failures the address waits.
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..25 {
        let response = http
            .get(format!("{}/api/v1/runs", server.base))
            .bearer_auth(format!("cvy_guess_{i}"))
            .send()
            .await
            .unwrap();
        statuses.push((
            response.status().as_u16(),
            response.headers().contains_key("retry-after"),
        ));
    }
    assert_eq!(&statuses[..20], &[(401, false); 20]);
    assert_eq!(statuses[24], (429, true));
    // A valid token still works from that address.
    assert_eq!(
        server.request(Method::GET, "/api/v1/runs", None, true).await.0,
        200
    );
    drop(server);

    let tmp = tempfile::tempdir().unwrap();
    let open = Server::start_with(&tmp.path().join("data"), &["--anonymous-read"]);
    assert_eq!(
        open.request(Method::GET, "/api/v1/projects", None, false).await.0,
        200
    );
    let (status, _) = open
        .request(
            Method::POST,
            "/api/v1/projects",
            Some(json!({"name": "x", "source": "/nonexistent"})),
            false,
        )
        .await;
    assert_eq!(status, 401);
}

async fn protect(server: &Server, environment: &str, protection: Value) {
    let (status, body) = server
        .request(
            Method::PUT,
            &format!("/api/v1/projects/shop/environments/{environment}/protection"),
            Some(protection),
            true,
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn approve(server: &Server, deployment: i64, token: &str) -> (u16, Value) {
    status_of(
        server,
        Method::POST,
        &format!("/api/v1/deployments/{deployment}/approve"),
        token,
        None,
    )
    .await
}

/// The server's protection holds whatever a commit's conveyor.yml says: a commit that removes
/// its own approval gate still waits for one, the commit's author cannot approve it even when
/// someone else promoted it, one person's parallel approvals count once, and a rollback to a
/// release that never ran in the environment waits at the gates.
#[tokio::test]
async fn gates_belong_to_the_server_not_to_the_commit() {
    let shop = Shop::new("  staging:\n  production:\n    approval: { required: 1 }\n").await;
    let server = &shop.server;
    let alice = server.user("alice", &[("deployer", Some("shop"), None)]).await;
    let bob = server.user("bob", &[("deployer", Some("shop"), None)]).await;
    let carol = server.user("carol", &[("deployer", Some("shop"), None)]).await;
    // A viewer cannot change the rules; a maintainer can (audited).
    let vera = server.user("vera", &[("viewer", Some("shop"), None)]).await;
    let rules = json!({"required_approvals": 2, "not_author": true, "after": "staging"});
    let (status, _) = status_of(
        server,
        Method::PUT,
        "/api/v1/projects/shop/environments/production/protection",
        &vera,
        Some(rules.clone()),
    )
    .await;
    assert_eq!(status, 403);
    protect(server, "production", rules).await;

    // Alice writes a commit that drops its own approval gate; bob builds and promotes it.
    commit(
        &shop.repo,
        &[(
            "conveyor.yml",
            &crate::delivery::pipeline("  staging:\n  production:\n    approval: { required: 0 }\n"),
        )],
        "no more approvals",
    );
    let alice_commit = git(&shop.repo, &["rev-parse", "HEAD"]);
    git(
        &shop.repo,
        &[
            "commit",
            "-q",
            "--amend",
            "--no-edit",
            "--author",
            "alice <alice@example.com>",
        ],
    );
    assert_ne!(alice_commit, git(&shop.repo, &["rev-parse", "HEAD"]));
    let release = shop.release("v1").await;
    // The server's `after: staging` holds too.
    let promote = format!("/api/v1/releases/{release}/promote");
    let to_production = json!({"environment": "production"});
    let (status, body) = status_of(server, Method::POST, &promote, &bob, Some(to_production.clone())).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["message"].as_str().unwrap().contains("staging"), "{body}");
    let (status, body) = status_of(
        server,
        Method::POST,
        &promote,
        &bob,
        Some(json!({"environment": "staging"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        shop.finished(body["deployment_id"].as_i64().unwrap()).await["status"],
        "succeeded"
    );
    let (status, body) = status_of(server, Method::POST, &promote, &bob, Some(to_production)).await;
    assert_eq!(status, 201, "{body}");
    let id = body["deployment_id"].as_i64().unwrap();
    let gated = shop
        .until_deployment(id, "the server's approval gate", |d| {
            d["gates"] == json!(["waiting for approval (0 of 2)"])
        })
        .await;
    // Bob asked; alice wrote it (the committer is no user: their email stands for them).
    assert_eq!(
        gated["authors"],
        json!(["bob", "alice", "test@example.com"]),
        "{gated:#}"
    );

    // The commit's author cannot approve, nor can whoever asked.
    for token in [&alice, &bob] {
        let (status, body) = approve(server, id, token).await;
        assert_eq!(status, 403, "{body}");
        assert!(body["message"].as_str().unwrap().contains("four-eyes"), "{body}");
    }
    // Four approvals by carol at once count once.
    let tries = futures_util::future::join_all((0..4).map(|_| approve(server, id, &carol))).await;
    let accepted = tries.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(accepted, 1, "{tries:?}");
    let d = shop.deployment(id).await;
    assert_eq!(
        (d["approvals"].clone(), d["status"].as_str()),
        (json!(["carol"]), Some("pending")),
        "{d:#}"
    );
    let admin_approved = approve(server, id, TOKEN).await;
    assert_eq!(admin_approved.0, 200, "{admin_approved:?}");
    assert_eq!(shop.finished(id).await["status"], "succeeded");
    // An approval after the end is refused.
    let (status, _) = approve(server, id, &vera).await;
    assert_eq!(status, 403);
    let late = shop
        .server
        .user("dave", &[("deployer", Some("shop"), None)])
        .await;
    let (status, body) = approve(server, id, &late).await;
    assert_eq!(status, 409, "{body}");

    // A rollback to a release that never ran in production is a promotion: gates and all.
    let never = shop.release("v2").await;
    let (status, body) = status_of(
        server,
        Method::POST,
        "/api/v1/projects/shop/environments/production/rollback",
        &bob,
        Some(json!({"to": never})),
    )
    .await;
    // Not even past `after`: v2 has not been to staging.
    assert_eq!(status, 403, "{body}");
    let staged = shop.promote(never, "staging").await;
    assert_eq!(shop.finished(staged).await["status"], "succeeded");
    let (status, body) = status_of(
        server,
        Method::POST,
        "/api/v1/projects/shop/environments/production/rollback",
        &bob,
        Some(json!({"to": never})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let held = body["deployment_id"].as_i64().unwrap();
    let held = shop
        .until_deployment(held, "the gates of a rollback to a new release", |d| {
            d["gates"] == json!(["waiting for approval (0 of 2)"])
        })
        .await;
    assert_eq!(held["rollback_of"], Value::Null, "{held:#}");

    // The rules are audited.
    assert!(
        server
            .logged(|e| e["type"] == "environment_protected" && e["by"] == "admin")
            .await
    );
}
