//! The web UI in a real browser: Debian's headless Chromium driven through chromedriver
//! (WebDriver) against a real server — signing in, a run's log arriving live, a second user
//! approving a production deployment, the traffic split moving during a canary, a rollback from
//! the environment page, a bad canary's report, a viewer without buttons whose forged form is
//! refused. Every page is shot at desktop and phone width into `target/ui-screenshots/`, and no
//! page references anything outside the server.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::delivery::{Load, Shop};
use crate::harness::*;

/// A headless Chromium behind its own chromedriver, gone (both) when dropped.
struct Browser {
    driver: Child,
    client: Client,
    base: String,
}

impl Browser {
    async fn open(base: &str) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = {
            use std::os::unix::process::CommandExt as _;
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("chromedriver runs (Debian's chromium-driver)")
        };
        let url = format!("http://127.0.0.1:{port}");
        eventually(Duration::from_secs(20), || async {
            reqwest::get(format!("{url}/status"))
                .await
                .ok()
                .filter(|r| r.status().is_success())
        })
        .await;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                // Root in CI: Chromium's own sandbox needs a user namespace it may not get.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", "--hide-scrollbars"],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .expect("a Chromium session");
        Browser {
            driver,
            client,
            base: base.to_string(),
        }
    }

    async fn goto(&self, path: &str) {
        self.client.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    /// The page's path and query.
    async fn current(&self) -> String {
        let at = self
            .client
            .execute("return location.pathname + location.search;", Vec::new())
            .await
            .unwrap();
        at.as_str().unwrap_or_default().to_string()
    }

    /// Signs in through the form with `token`; lands on `next`.
    async fn sign_in(&self, token: &str, next: &str) {
        self.goto(next).await;
        assert!(
            self.current().await.starts_with("/sign-in?next="),
            "{}",
            self.current().await
        );
        self.type_into("#token", token).await;
        self.click("#sign-in button").await;
        eventually(Duration::from_secs(10), || async {
            (self.current().await == next).then_some(())
        })
        .await;
    }

    /// Clicks the first element matching `css`.
    async fn click(&self, css: &str) {
        let element = self.client.find(Locator::Css(css)).await;
        element
            .unwrap_or_else(|_| panic!("no {css} on the page"))
            .click()
            .await
            .unwrap();
    }

    /// Types `text` into the first element matching `css`.
    async fn type_into(&self, css: &str, text: &str) {
        let element = self.client.find(Locator::Css(css)).await;
        element
            .unwrap_or_else(|_| panic!("no {css} on the page"))
            .send_keys(text)
            .await
            .unwrap();
    }

    /// Signs out with the header's button; lands on the sign-in page.
    async fn sign_out(&self) {
        self.click("header form button").await;
        eventually(Duration::from_secs(10), || async {
            self.current().await.starts_with("/sign-in").then_some(())
        })
        .await;
    }

    async fn script(&self, js: &str) -> Value {
        self.client.execute(js, Vec::new()).await.unwrap()
    }

    /// The text of the first element matching `css`, or None.
    async fn text(&self, css: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.text().await.ok()
    }

    async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    /// Waits until `check` of the page's state (a script's value) holds.
    async fn until(&self, what: &str, limit: Duration, js: &str, check: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let found = tokio::time::timeout(limit, async {
            loop {
                last = self.script(js).await;
                if check(&last) {
                    return last.clone();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("{what} did not happen; last: {last}"))
    }

    /// Marks the page, to tell later that it was updated in place rather than loaded again.
    async fn mark(&self) {
        self.script("window.stayed = true;").await;
    }

    async fn still_marked(&self) -> bool {
        self.script("return window.stayed === true;").await == json!(true)
    }

    /// Clicks the button of the form posting to `action` and accepts the confirmation it asks.
    async fn confirm_click(&self, action: &str) {
        let button = self
            .client
            .find(Locator::Css(&format!("form[action=\"{action}\"] button")))
            .await
            .unwrap_or_else(|_| panic!("a form posting to {action}"));
        button.click().await.unwrap();
        eventually(Duration::from_secs(5), || async {
            self.client.accept_alert().await.ok()
        })
        .await;
    }

    /// POSTs a form from the page (as a forger in the page would), returning the status.
    async fn forge(&self, action: &str, fields: &str) -> u16 {
        let js = format!(
            "return fetch({action:?}, {{method: 'POST', headers: {{'Content-Type': 'application/x-www-form-urlencoded'}}, body: {fields:?}, redirect: 'manual'}}).then(r => r.status);"
        );
        self.script(&js).await.as_u64().unwrap() as u16
    }

    /// Every `src`, `href` and `action` of the page is the server's own.
    async fn assert_only_local_references(&self) {
        let refs = self
            .script(
                "return Array.from(document.querySelectorAll('[src],[href],[action]')).flatMap(e =>
                    ['src', 'href', 'action'].map(a => e.getAttribute(a)).filter(v => v !== null));",
            )
            .await;
        let page = self.current().await;
        for r in refs.as_array().unwrap() {
            let r = r.as_str().unwrap();
            let local = (r.starts_with('/') && !r.starts_with("//"))
                || r.starts_with('#')
                || r.starts_with('?')
                || r.starts_with("data:");
            assert!(local, "{page} references {r}");
        }
    }

    /// A screenshot of the page as it is, at desktop and at phone width, named `name`.
    async fn shoot(&self, name: &str) {
        self.assert_only_local_references().await;
        let dir = screenshots();
        for (width, height, suffix) in [(1280, 900, "desktop"), (390, 844, "phone")] {
            self.client.set_window_size(width, height).await.unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(dir.join(format!("{name}-{suffix}.png")), png).unwrap();
        }
        self.client.set_window_size(1280, 900).await.unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the Chromium it started share its process group. (Not through
        // `kill -KILL -PGID`: procps-ng 4.0.2 reads that as `kill(-1)`, everything.)
        let group = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A POST with `token` as someone other than the harness's admin.
async fn post_as(server: &Server, token: &str, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn signing_in_then_watching_a_runs_log_arrive_live() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = "name: slow\njobs:\n  count:\n    steps:\n      - run: for i in 1 2 3 4 5 6; do echo \"line $i\"; sleep 1; done\n  after:\n    needs: [count]\n    steps:\n      - run: echo done\n";
    let repo = repo(&tmp.path().join("repo"), &[("conveyor.yml", pipeline)]);
    let server = Server::start(&tmp.path().join("data"));
    server.add_project("slow", &repo).await;
    let browser = Browser::open(&server.base).await;
    // A wrong token is refused on the page itself.
    browser.goto("/sign-in").await;
    browser.type_into("#token", "cvy_wrong").await;
    browser.click("#sign-in button").await;
    assert!(
        browser
            .text(".problem")
            .await
            .unwrap()
            .contains("unknown, expired or revoked")
    );

    let run = server.trigger("slow").await;
    browser.sign_in(TOKEN, &format!("/runs/{run}")).await;
    assert!(browser.text("header .who").await.unwrap().contains("admin"));
    browser.mark().await;
    let first = browser.text("#log").await.unwrap();
    assert!(!first.contains("line 6"), "the run had not finished: {first}");
    // The lines arrive as they are written, and the page follows the run to its end.
    browser
        .until(
            "the log's last line",
            Duration::from_secs(30),
            "return document.querySelector('#log').textContent;",
            |t| t.as_str().is_some_and(|t| t.contains("line 6")),
        )
        .await;
    browser
        .until(
            "the run's success on the page",
            Duration::from_secs(30),
            "return document.querySelector('h1').textContent;",
            |t| t.as_str().is_some_and(|t| t.contains("success")),
        )
        .await;
    assert!(browser.still_marked().await, "updated in place, not reloaded");
    let log = browser.text("#log").await.unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("line ")).collect();
    assert_eq!(lines.len(), 6, "each line once: {log}");
    // The graph shows both jobs, `after` after `count`, both succeeded.
    assert_eq!(browser.count("g.job[data-status=success]").await, 2);
    // Searching the log hides the other lines.
    browser.type_into("#log-filter", "line 3").await;
    let shown = browser
        .script("return Array.from(document.querySelectorAll('#log > span')).filter(s => !s.classList.contains('hidden')).length;")
        .await;
    assert_eq!(shown, json!(1));
    browser.shoot("run").await;
    // Signed out, a link with the token in its fragment (what the demo prints) signs in again.
    browser.sign_out().await;
    // (From elsewhere: a fragment changed on the same page loads nothing.)
    browser.client.goto("about:blank").await.unwrap();
    browser.goto(&format!("/sign-in#token={TOKEN}")).await;
    eventually(Duration::from_secs(10), || async {
        (browser.current().await == "/").then_some(())
    })
    .await;
    assert!(browser.text("header .who").await.unwrap().contains("admin"));
    browser.client.clone().close().await.unwrap();
}

/// The forms work without a script: an action posted unconfirmed gets a page that asks, and
/// the same form confirmed does it.
#[tokio::test]
async fn without_javascript_a_page_asks_before_an_action() {
    let shop = Shop::new("  production:\n").await;
    let server = &shop.server;
    let first = shop.deployed("v1", "production").await;
    shop.deployed("v2", "production").await;
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed_in = http
        .post(format!("{}/sign-in", server.base))
        .form(&[
            ("token", TOKEN),
            ("next", "/projects/shop/environments/production"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let page = http
        .get(format!("{}/projects/shop/environments/production", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .split(';')
            .next(),
        Some("default-src 'none'")
    );
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"_csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let rollback = format!("{}/projects/shop/environments/production/rollback", server.base);
    let to = first.to_string();
    let asked = http
        .post(&rollback)
        .form(&[("_csrf", csrf.as_str()), ("to", to.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 200);
    let question = asked.text().await.unwrap();
    assert!(
        question.contains(&format!("Roll production back to r{first}?")),
        "{question}"
    );
    assert!(
        question.contains("name=\"confirmed\" value=\"yes\""),
        "{question}"
    );
    let before = server
        .get("/api/v1/projects/shop/environments/production/deployments")
        .await["deployments"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, 2, "asking did nothing");
    let done = http
        .post(&rollback)
        // Confirmed on the page that asked, whose address is the form's own: back to the
        // environment, not to the form's address.
        .header("referer", &rollback)
        .form(&[
            ("_csrf", csrf.as_str()),
            ("to", to.as_str()),
            ("confirmed", "yes"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    assert_eq!(
        done.headers()["location"],
        "/projects/shop/environments/production?done=rolled-back"
    );
    let history = server
        .get("/api/v1/projects/shop/environments/production/deployments")
        .await;
    assert_eq!(history["deployments"][0]["release_id"], json!(first));
    assert_eq!(history["deployments"][0]["requested_by"], "admin");
}

/// Production as a canary in two steps (without `production: true`, so without the default
/// analysis: no load needed), guarded on the server by one approval from someone who did not
/// ask for it.
const STEPPED: &str = "  production:\n    strategy:\n      canary:\n        steps: [{ weight: 20, pause: 4s }, { weight: 60, pause: 4s }]\n";

#[tokio::test]
async fn a_second_user_approves_watches_the_canary_move_then_rolls_back() {
    let shop = Shop::new(STEPPED).await;
    let server = &shop.server;
    let first = shop.deployed("v1", "production").await;
    let (status, _) = server
        .request(
            reqwest::Method::PUT,
            "/api/v1/projects/shop/environments/production/protection",
            Some(json!({ "required_approvals": 1, "not_author": true })),
            true,
        )
        .await;
    assert_eq!(status, 200);
    let rita = server
        .user("rita", &[("deployer", Some("shop"), Some("production"))])
        .await;
    let second = shop.release("v2").await;
    let deployment = shop.promote(second, "production").await;

    let browser = Browser::open(&server.base).await;
    browser.sign_in(&rita, "/").await;
    // The overview lists what waits for her.
    let waiting = browser
        .text("#awaiting + div")
        .await
        .expect("approvals waiting for rita");
    assert!(waiting.contains(&format!("#{deployment}")), "{waiting}");
    browser.goto("/projects/shop/environments/production").await;
    browser.mark().await;
    browser
        .confirm_click(&format!("/deployments/{deployment}/approve"))
        .await;
    eventually(Duration::from_secs(10), || async {
        browser.current().await.ends_with("done=approved").then_some(())
    })
    .await;
    assert_eq!(browser.text(".flash").await.as_deref(), Some("Approved."));
    let approved = shop.deployment(deployment).await;
    assert_eq!(approved["approvals"], json!(["rita"]), "{approved:#}");

    // The split moves on the page while the canary steps through 20% and 60%.
    browser.mark().await;
    let mut seen = Vec::new();
    let js = format!(
        "const s = document.querySelector('#split span[data-version=\"r{second}\"]'); return s ? Number(s.dataset.traffic) : 0;"
    );
    let moved = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let share = browser.script(&js).await.as_u64().unwrap();
            if seen.last() != Some(&share) {
                seen.push(share);
            }
            if share == 100 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if moved.is_err() {
        let d = shop.deployment(deployment).await;
        let html = browser.text("main").await.unwrap_or_default();
        panic!("the canary did not reach 100% on the page: {seen:?}\n{d:#}\n{html}");
    }
    assert!(seen.contains(&20) && seen.contains(&60), "shares seen: {seen:?}");
    assert!(browser.still_marked().await, "updated in place, not reloaded");
    shop.finished(deployment).await;
    browser.shoot("environment-after-canary").await;

    // Back to v1 from the same page.
    browser.goto("/projects/shop/environments/production").await;
    let choice = browser
        .text("form[action$=\"/rollback\"] select option")
        .await
        .unwrap();
    assert_eq!(choice, format!("r{first}"));
    browser
        .confirm_click("/projects/shop/environments/production/rollback")
        .await;
    eventually(Duration::from_secs(10), || async {
        browser
            .current()
            .await
            .ends_with("done=rolled-back")
            .then_some(())
    })
    .await;
    let history = server
        .get("/api/v1/projects/shop/environments/production/deployments")
        .await;
    let rollback = &history["deployments"][0];
    assert_eq!(rollback["release_id"], json!(first), "{history:#}");
    assert_eq!(rollback["requested_by"], "rita");
    shop.finished(rollback["id"].as_i64().unwrap()).await;
    browser
        .until(
            "v1 serving all traffic on the page",
            Duration::from_secs(30),
            &format!("const s = document.querySelector('#split span[data-version=\"r{first}\"]'); return s ? Number(s.dataset.traffic) : 0;"),
            |v| v == &json!(100),
        )
        .await;
    browser.client.clone().close().await.unwrap();
}

/// A canary at 30% that only its error-rate analysis can end early.
const ANALYSED: &str = "  staging:\n  prod:\n    strategy:\n      canary:\n        steps: [{ weight: 30, pause: 10m }]\n        analysis:\n          metrics: [{ error_rate: {} }]\n";

#[tokio::test]
async fn a_bad_canarys_report_shows_the_failed_metric_and_every_page_is_shot() {
    let shop = Shop::new(ANALYSED).await;
    let server = &shop.server;
    shop.deployed("v1", "staging").await;
    let first = shop.deployed("v1", "prod").await;
    let bad = shop.release("v2 ERRORS").await;
    let (status, _) = server
        .request(
            reqwest::Method::PUT,
            "/api/v1/projects/shop/environments/prod/flags",
            Some(json!({"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}}})),
            true,
        )
        .await;
    assert_eq!(status, 200);

    let browser = Browser::open(&server.base).await;
    browser.sign_in(TOKEN, "/").await;
    let load = Load::start(shop.url("prod").await);
    let deployment = shop.promote(bad, "prod").await;
    browser.goto(&format!("/deployments/{deployment}")).await;
    browser.mark().await;
    // The report fills in as the analysis judges: the failed metric, the decision and why.
    let failed = browser
        .until(
            "the failed metric on the report",
            Duration::from_secs(90),
            "const f = document.querySelector('#failed-metrics'); return f ? f.textContent : '';",
            |t| t.as_str().is_some_and(|t| !t.is_empty()),
        )
        .await;
    load.stop().await;
    assert!(failed.as_str().unwrap().contains("error_rate"), "{failed}");
    browser
        .until(
            "the decision",
            Duration::from_secs(30),
            "return document.querySelector('#decision').textContent;",
            |t| {
                t.as_str()
                    .is_some_and(|t| t.contains("analysis failed: error_rate"))
            },
        )
        .await;
    assert!(browser.still_marked().await, "updated in place, not reloaded");
    assert_eq!(
        browser.count(".metric[data-metric=error_rate] svg.chart").await,
        1
    );
    browser.shoot("deployment-report").await;

    // A form without the session's CSRF token is refused, and does nothing.
    let before = server
        .get("/api/v1/projects/shop/environments/prod/deployments")
        .await;
    assert_eq!(
        browser
            .forge("/projects/shop/environments/prod/rollback", "confirmed=yes")
            .await,
        403
    );
    assert_eq!(
        browser
            .forge(
                "/projects/shop/environments/prod/rollback",
                "_csrf=0000&confirmed=yes"
            )
            .await,
        403
    );
    let after = server
        .get("/api/v1/projects/shop/environments/prod/deployments")
        .await;
    assert_eq!(
        before["deployments"].as_array().unwrap().len(),
        after["deployments"].as_array().unwrap().len()
    );

    // Every page, at desktop and phone width, referencing nothing outside the server.
    let run = server.get("/api/v1/runs?project=shop&limit=1").await["runs"][0]["id"]
        .as_i64()
        .unwrap();
    let pages = [
        ("overview", "/".to_string()),
        ("project", "/projects/shop".to_string()),
        ("run-finished", format!("/runs/{run}")),
        ("release", format!("/releases/{bad}?compare={first}")),
        ("environment", "/projects/shop/environments/prod".to_string()),
        ("flags", "/projects/shop/environments/prod/flags".to_string()),
        ("dora", "/dora".to_string()),
        ("audit", "/audit?verify=1".to_string()),
        ("settings", "/settings".to_string()),
    ];
    for (name, path) in &pages {
        browser.goto(path).await;
        assert!(browser.text("h1").await.is_some(), "{path} has a heading");
        browser.shoot(name).await;
    }
    // Each instance's log is a click away from the environment.
    browser.goto("/projects/shop/environments/prod").await;
    browser.click("#versions a[href$=\"/log\"]").await;
    browser
        .until(
            "the instance's log page",
            Duration::from_secs(10),
            "return document.querySelector('h1').textContent;",
            |t| t.as_str().is_some_and(|t| t.starts_with("Log of r")),
        )
        .await;
    browser.shoot("instance-log").await;
    // The release page checks the signature, and lists the commit between the two releases.
    browser.goto(&format!("/releases/{bad}?compare={first}")).await;
    let page = browser.text("main").await.unwrap();
    assert!(page.contains("The signature verifies"), "{page}");
    assert!(page.contains("v2 ERRORS"), "the commit's subject: {page}");
    // Its artifacts download with the session, byte for byte.
    let version = browser
        .script(&format!(
            "return fetch('/releases/{bad}/artifacts/dist/VERSION').then(r => r.text());"
        ))
        .await;
    assert_eq!(version, json!("v2 ERRORS"));
    browser.goto("/audit?verify=1").await;
    assert!(browser.text("#verification").await.unwrap().contains("verified"));
    // A flag definition that does not validate is shown beside the editor, as sent.
    browser.goto("/projects/shop/environments/prod/flags").await;
    browser
        .script("document.querySelector('#definition').value = '{\"flags\": {\"x\": {\"state\": \"ON\"}}}';")
        .await;
    browser.click("form[action$=\"/flags\"] button").await;
    let problem = browser
        .until(
            "the problem beside the editor",
            Duration::from_secs(10),
            "const p = document.querySelector('#definition-problem'); return p ? p.textContent : '';",
            |t| t.as_str().is_some_and(|t| !t.is_empty()),
        )
        .await;
    assert!(problem.as_str().unwrap().contains("state"), "{problem}");
    assert!(
        browser
            .text("#definition")
            .await
            .unwrap_or_default()
            .contains("\"ON\""),
        "kept as sent"
    );
    browser.shoot("flags-invalid").await;
    let signed_out = Browser::open(&server.base).await;
    signed_out.goto("/sign-in").await;
    signed_out.shoot("sign-in").await;
    signed_out.client.clone().close().await.unwrap();
    browser.client.clone().close().await.unwrap();
}

#[tokio::test]
async fn a_viewer_sees_no_buttons_and_a_forged_form_is_refused() {
    let shop = Shop::new("  production:\n").await;
    let server = &shop.server;
    let first = shop.deployed("v1", "production").await;
    shop.deployed("v2", "production").await;
    let vic = server.user("vic", &[("viewer", Some("shop"), None)]).await;
    let browser = Browser::open(&server.base).await;
    browser
        .sign_in(&vic, "/projects/shop/environments/production")
        .await;
    let deployment = server
        .get("/api/v1/projects/shop/environments/production/deployments")
        .await["deployments"][0]["id"]
        .as_i64()
        .unwrap();
    for path in [
        "/projects/shop/environments/production".to_string(),
        format!("/deployments/{deployment}"),
        format!("/releases/{first}"),
        "/projects/shop".to_string(),
    ] {
        browser.goto(&path).await;
        // Only signing out posts anything.
        assert_eq!(
            browser.count("main form[method=post]").await,
            0,
            "{path} shows a button"
        );
        assert_eq!(browser.count("form[method=post]").await, 1, "{path}");
    }
    assert_eq!(
        browser.count("nav a[href=\"/audit\"]").await,
        0,
        "a project viewer has no audit page"
    );
    // Forged with the session's own CSRF token: refused for the role.
    let csrf = browser
        .script("return document.querySelector('input[name=_csrf]').value;")
        .await;
    let fields = format!("_csrf={}&confirmed=yes&to={first}", csrf.as_str().unwrap());
    assert_eq!(
        browser
            .forge("/projects/shop/environments/production/rollback", &fields)
            .await,
        403
    );
    assert_eq!(
        browser
            .forge(&format!("/deployments/{deployment}/abort"), &fields)
            .await,
        403
    );
    assert_eq!(
        browser
            .forge("/settings/users", &format!("{fields}&name=mallory"))
            .await,
        403
    );
    let history = server
        .get("/api/v1/projects/shop/environments/production/deployments")
        .await;
    assert_eq!(
        history["deployments"][0]["id"],
        json!(deployment),
        "nothing was rolled back"
    );
    // The API says the same to the viewer's own token.
    let (status, _) = post_as(
        server,
        &vic,
        "/api/v1/projects/shop/environments/production/rollback",
        json!({}),
    )
    .await;
    assert_eq!(status, 403);
    // Signing out ends the session: its token is revoked.
    browser.sign_out().await;
    browser.goto("/projects/shop").await;
    assert!(browser.current().await.starts_with("/sign-in?next="));
    assert!(
        server
            .logged(|e| e["type"] == "token_revoked"
                && e["by"] == "vic"
                && e["name"].as_str().unwrap_or("").starts_with("session-"))
            .await
    );
    browser.client.clone().close().await.unwrap();
}
