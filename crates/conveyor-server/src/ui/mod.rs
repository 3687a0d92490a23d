//! The web UI: the pages of `conveyor-ui`, filled from the same handlers and reads as the JSON
//! API, behind sessions (a token exchanged for a session token in an `HttpOnly`,
//! `SameSite=Strict` cookie) and a CSRF token on every form. What a caller may not do is not
//! shown, and refused when forged all the same: the page routes are in the one route table with
//! the same needs as their API twins.

mod actions;
mod live;
mod pages;
mod session;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use conveyor_ui::Chrome;

use crate::auth::{Action, Caller};
use crate::{Access, ApiError, Route};

pub use session::{SESSION_COOKIE, authorize_page, csrf_token};

/// A page's answer to a refusal or failure: the error as HTML, with the API's status.
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl<E: Into<ApiError>> From<E> for PageError {
    fn from(e: E) -> Self {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (code, status) = self.0.code_and_status();
        let message = match &self.0 {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error answering a page");
                "something went wrong on the server; its log says what".to_string()
            }
            other => other.to_string(),
        };
        html(
            status,
            conveyor_ui::error_page(None, status.as_u16(), code, &message),
        )
    }
}

type PageResult = Result<Response, PageError>;

/// The security headers every page carries: nothing but this server's own script and styles,
/// never framed, no referrer to other sites.
fn html(status: StatusCode, markup: conveyor_ui::Html) -> Response {
    let mut response = (status, markup).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn ok(markup: conveyor_ui::Html) -> PageResult {
    Ok(html(StatusCode::OK, markup))
}

/// What a page around its content shows for `caller`.
fn chrome(caller: &Caller, session: &session::Session, done: Option<&str>) -> Chrome {
    Chrome {
        user: caller.user.clone(),
        csrf: session.csrf.clone(),
        settings: caller.token.is_some(),
        audit: caller.may(Action::Read, None, None),
        now: Utc::now(),
        flash: done.and_then(flash).map(String::from),
        seq: session.seq,
    }
}

/// The message after an action, by the code its redirect carries (never text from the URL).
fn flash(code: &str) -> Option<&'static str> {
    Some(match code {
        "approved" => "Approved.",
        "paused" => "Pausing: the deployment stops at its next step.",
        "resumed" => "Resumed.",
        "aborted" => "Aborting: traffic goes back to the stable version.",
        "rolled-back" => "Rolling back.",
        "cancelled" => "Cancelling the run.",
        "saved" => "Saved.",
        "revoked" => "Revoked.",
        "added" => "Added.",
        "granted" => "Granted.",
        "removed" => "Removed.",
        _ => return None,
    })
}

const ASSET_CACHE: &str = "public, max-age=300";

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        conveyor_ui::CSS,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        conveyor_ui::JS,
    )
        .into_response()
}

/// The UI's routes, for the one table.
pub(crate) fn routes() -> Vec<Route> {
    use crate::auth::Action::{Administer, Deploy, Manage, Read};
    use crate::auth::Scope::{Caller, Deployment, Environment, Project, Release, Run, Server};
    use axum::http::Method as M;
    let page = |action, scope| Access::Page(Some(crate::auth::Need { action, scope }));
    let anyone = Access::Page(None);
    const ENV: &str = "/projects/{project}/environments/{environment}";
    vec![
        crate::route(M::GET, conveyor_ui::CSS_PATH, anyone, stylesheet),
        crate::route(M::GET, conveyor_ui::JS_PATH, anyone, script),
        crate::route(M::GET, "/sign-in", anyone, session::sign_in_page),
        crate::route(M::POST, "/sign-in", anyone, session::sign_in),
        crate::route(M::POST, "/sign-out", page(Read, Caller), session::sign_out),
        crate::route(M::GET, "/live", page(Read, Caller), live::stream),
        crate::route(M::GET, "/", page(Read, Caller), pages::overview),
        crate::route(M::GET, "/projects/{project}", page(Read, Project), pages::project),
        crate::route(
            M::POST,
            "/projects/{project}/runs",
            page(Deploy, Project),
            actions::run,
        ),
        crate::route(M::GET, "/runs/{id}", page(Read, Run), pages::run),
        crate::route(
            M::GET,
            "/runs/{id}/log/stream",
            page(Read, Run),
            crate::api::stream_logs,
        ),
        crate::route(M::POST, "/runs/{id}/cancel", page(Deploy, Run), actions::cancel),
        crate::route(M::GET, "/releases/{id}", page(Read, Release), pages::release),
        crate::route(
            M::GET,
            "/releases/{id}/artifacts/{*path}",
            page(Read, Release),
            crate::api::get_artifact,
        ),
        crate::route(
            M::POST,
            "/releases/{id}/promote",
            page(Deploy, Release),
            actions::promote,
        ),
        crate::route(M::GET, ENV, page(Read, Environment), pages::environment),
        crate::route(
            M::POST,
            format!("{ENV}/rollback"),
            page(Deploy, Environment),
            actions::rollback,
        ),
        crate::route(
            M::POST,
            format!("{ENV}/protection"),
            page(Manage, Environment),
            actions::protect,
        ),
        crate::route(
            M::GET,
            format!("{ENV}/instances/{{version}}/{{index}}/log"),
            page(Read, Environment),
            pages::instance_log,
        ),
        crate::route(
            M::GET,
            format!("{ENV}/flags"),
            page(Read, Environment),
            pages::flags,
        ),
        crate::route(
            M::POST,
            format!("{ENV}/flags"),
            page(Deploy, Environment),
            actions::flags,
        )
        .body_limit(2 * crate::flags::MAX_DEFINITION_BYTES + 4096),
        crate::route(
            M::GET,
            "/deployments/{id}",
            page(Read, Deployment),
            pages::deployment,
        ),
        crate::route(
            M::POST,
            "/deployments/{id}/approve",
            page(Deploy, Deployment),
            actions::approve,
        ),
        crate::route(
            M::POST,
            "/deployments/{id}/pause",
            page(Deploy, Deployment),
            actions::pause,
        ),
        crate::route(
            M::POST,
            "/deployments/{id}/resume",
            page(Deploy, Deployment),
            actions::resume,
        ),
        crate::route(
            M::POST,
            "/deployments/{id}/abort",
            page(Deploy, Deployment),
            actions::abort,
        ),
        crate::route(M::GET, "/dora", page(Read, Caller), pages::dora),
        crate::route(M::GET, "/audit", page(Read, Server), pages::audit),
        crate::route(M::GET, "/settings", page(Read, Caller), pages::settings),
        crate::route(
            M::POST,
            "/settings/users",
            page(Administer, Server),
            actions::add_user,
        ),
        crate::route(
            M::POST,
            "/settings/users/{name}/remove",
            page(Administer, Server),
            actions::remove_user,
        ),
        crate::route(
            M::POST,
            "/settings/roles",
            page(Manage, Caller),
            actions::grant_role,
        ),
        crate::route(
            M::POST,
            "/settings/tokens",
            page(Read, Caller),
            actions::create_token,
        ),
        crate::route(
            M::POST,
            "/settings/tokens/{name}/revoke",
            page(Read, Caller),
            actions::revoke_token,
        ),
    ]
}
