//! Sessions: signing in exchanges a token for a session token of the same user (at most 12 hours,
//! never longer than the token it came from; `token_created` in the audit trail), kept in an
//! `HttpOnly`, `SameSite=Strict` cookie; signing out revokes it. Every form carries a CSRF token
//! derived from the session's secret, checked before the handler runs. A page route also takes a
//! bearer token (then no CSRF token is needed: browsers never send one on their own).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{Duration, Utc};
use conveyor_store::Event;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::{PageError, PageResult, html};
use crate::auth::{self, Action, Caller, Need};
use crate::{ApiError, AppState};

pub const SESSION_COOKIE: &str = "conveyor_session";
/// How long a session lasts at most.
const SESSION_HOURS: i64 = 12;
/// The largest form a page posts but the flag editor's (whose route allows more).
const FORM_LIMIT: usize = 64 * 1024;

/// The session a page request came with: the CSRF token its forms carry (empty for a bearer
/// token), and the event log's head before the page read anything (where its live updates
/// start).
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub csrf: String,
    pub seq: i64,
}

/// The fields of the form a page posted, in order (empty for any other body).
#[derive(Debug, Clone, Default)]
pub struct Form(pub Vec<(String, String)>);

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A field that is present and not blank, trimmed.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(String::from)
    }
}

/// The CSRF token of a session: a digest of its secret, so it is known only to whoever holds
/// the cookie's value — and a page on another site cannot read that.
pub fn csrf_token(session_token: &str) -> String {
    let digest = Sha256::digest(format!("conveyor csrf\0{session_token}").as_bytes());
    hex::encode(&digest[..16])
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// A browser's `Origin`, when it sends one, names this server (the `Host` it asked for).
fn same_origin(headers: &HeaderMap, uri: &axum::http::Uri) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    // HTTP/2 has no Host header: the authority is in the URI.
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

/// Equal strings, compared in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn sign_in_redirect(request: &Request) -> Response {
    let next = request.uri().path_and_query().map_or("/", |p| p.as_str());
    Redirect::to(&format!("/sign-in?next={}", conveyor_ui::encode(next))).into_response()
}

/// The middleware of every page route: the `Host` is ours; the caller is known by their session
/// cookie or bearer token (a browser without one is sent to sign in); a form posted with a
/// session carries its CSRF token; and the caller may do what the route needs where it does it.
/// The [`Caller`], the [`Session`] and the posted [`Form`] are left in the request's extensions.
pub async fn authorize_page(
    State((state, need, limit)): State<(AppState, Need, usize)>,
    request: Request,
    next: Next,
) -> Response {
    match admit_page(&state, need, limit, request).await {
        Ok(Ok(request)) => next.run(request).await,
        Ok(Err(redirect)) => redirect,
        Err(error) => error.into_response(),
    }
}

async fn admit_page(
    state: &AppState,
    need: Need,
    limit: usize,
    request: Request,
) -> Result<Result<Request, Response>, PageError> {
    auth::check_host(state, &request)?;
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    let (token, from_cookie) = match (
        bearer(request.headers()),
        cookie(request.headers(), SESSION_COOKIE),
    ) {
        (Some(token), _) => (Some(token), false),
        (None, Some(token)) => (Some(token), true),
        (None, None) => (None, false),
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let caller = match token.clone() {
        None if state.auth.config.anonymous_read && need.action == Action::Read => Caller::anonymous(),
        None if reading => return Ok(Err(sign_in_redirect(&request))),
        None => return Err(PageError(ApiError::Unauthorized)),
        Some(token) => match auth::identify(state, peer, Some(token)).await {
            // An expired or revoked session: sign in again.
            Err(ApiError::Unauthorized) if reading && from_cookie => {
                let mut response = sign_in_redirect(&request);
                response
                    .headers_mut()
                    .insert(header::SET_COOKIE, clear_cookie().parse().expect("a cookie"));
                return Ok(Err(response));
            }
            other => other?,
        },
    };
    let (mut parts, body) = request.into_parts();
    let form_sent = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let bytes = axum::body::to_bytes(body, limit.max(FORM_LIMIT))
        .await
        .map_err(|_| {
            ApiError::TooLarge(format!("a form may have at most {} bytes", limit.max(FORM_LIMIT)))
        })?;
    let form = if form_sent {
        Form(
            serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
                .map_err(|e| ApiError::InvalidRequest(format!("the form cannot be read: {e}")))?,
        )
    } else {
        Form::default()
    };
    let csrf = match (&token, from_cookie) {
        (Some(token), true) => csrf_token(token),
        _ => String::new(),
    };
    if !reading && !same_origin(&parts.headers, &parts.uri) {
        return Err(PageError(ApiError::Forbidden(
            "a form from another site is refused".into(),
        )));
    }
    if !reading
        && from_cookie
        && !form
            .get(conveyor_ui::CSRF_FIELD)
            .is_some_and(|sent| same(sent, &csrf))
    {
        return Err(PageError(ApiError::Forbidden(
            "this form is out of date or from another site (its CSRF token does not match your session): reload the page and try again".into(),
        )));
    }
    let scoped = auth::admit(state, need, &caller, &mut parts).await?;
    let mut request = Request::from_parts(parts, axum::body::Body::from(bytes));
    request.extensions_mut().insert(caller);
    request.extensions_mut().insert(scoped);
    let seq = state.engine.events().head();
    request.extensions_mut().insert(Session { csrf, seq });
    request.extensions_mut().insert(form);
    Ok(Ok(request))
}

fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Secure when the browser reached us over TLS (a proxy in front says so).
fn session_cookie(token: &str, max_age: i64, headers: &HeaderMap) -> String {
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    )
}

#[derive(Debug, Deserialize, Default)]
pub struct SignInQuery {
    #[serde(default)]
    next: Option<String>,
}

/// Where to go after signing in: a path of ours, never another site.
fn local(next: Option<&str>) -> &str {
    match next {
        // Browsers drop tabs and newlines from URLs (`/\t/evil` is `//evil`): no control
        // characters, and nothing but a path after the first `/`.
        Some(n)
            if n.starts_with('/')
                && !n.chars().any(char::is_control)
                && !matches!(n.chars().nth(1), Some('/' | '\\')) =>
        {
            n
        }
        _ => "/",
    }
}

pub async fn sign_in_page(State(state): State<AppState>, request: Request) -> Result<Response, PageError> {
    auth::check_host(&state, &request)?;
    let query: SignInQuery = request
        .uri()
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    // Who is signed in already, so that a sign-in link (`#token=`) does not switch accounts
    // unasked: a link with someone else's token would sign a victim in as them.
    let mut signed_in = None;
    if let Some(session) = cookie(request.headers(), SESSION_COOKIE)
        && let Some(owner) = state
            .engine
            .store()
            .token_owner(&auth::token_hash(&session))
            .await?
        && owner.user_exists
        && owner.revoked_at.is_none()
        && owner.expires_at.is_none_or(|at| at > Utc::now())
    {
        signed_in = Some(owner.user);
    }
    Ok(html(
        StatusCode::OK,
        conveyor_ui::sign_in(local(query.next.as_deref()), None, signed_in.as_deref()),
    ))
}

/// Exchanges a token (the form's `token`) for a session, then goes to `next`.
pub async fn sign_in(State(state): State<AppState>, request: Request) -> PageResult {
    auth::check_host(&state, &request)?;
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let headers = request.headers().clone();
    if !same_origin(&headers, request.uri()) {
        return Err(PageError(ApiError::Forbidden(
            "a sign-in from another site is refused".into(),
        )));
    }
    let bytes = axum::body::to_bytes(request.into_body(), FORM_LIMIT)
        .await
        .map_err(|_| ApiError::TooLarge("the sign-in form is too large".into()))?;
    let form = Form(serde_urlencoded::from_bytes(&bytes).unwrap_or_default());
    let next = local(form.get("next")).to_string();
    let Some(token) = form.text("token") else {
        return Ok(html(
            StatusCode::BAD_REQUEST,
            conveyor_ui::sign_in(&next, Some("Enter a token."), None),
        ));
    };
    let caller = match auth::identify(&state, peer, Some(token)).await {
        Ok(caller) => caller,
        Err(ApiError::Unauthorized) => {
            return Ok(html(
                StatusCode::UNAUTHORIZED,
                conveyor_ui::sign_in(&next, Some("That token is unknown, expired or revoked."), None),
            ));
        }
        Err(other) => return Err(PageError(other)),
    };
    let now = Utc::now();
    let expires_at = caller
        .expires_at
        .map_or(now + Duration::hours(SESSION_HOURS), |at| {
            at.min(now + Duration::hours(SESSION_HOURS))
        });
    let secret = auth::new_token().map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut id = [0u8; 6];
    getrandom::fill(&mut id).map_err(|e| ApiError::Internal(e.to_string()))?;
    let name: String = format!("session-{}-{}", hex::encode(id), caller.user)
        .chars()
        .take(64)
        .collect();
    state
        .engine
        .events()
        .append(Event::TokenCreated {
            name,
            hash: auth::token_hash(&secret),
            user: Some(caller.user.clone()),
            expires_at: Some(expires_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            by: Some(caller.user.clone()),
        })
        .await
        .map_err(ApiError::from)?;
    tracing::info!(user = %caller.user, "signed in to the web UI");
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&secret, (expires_at - now).num_seconds().max(1), &headers)
            .parse()
            .expect("a cookie"),
    );
    Ok(response)
}

/// Ends the session: its token revoked, the cookie cleared.
pub async fn sign_out(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> PageResult {
    if let Some(name) = caller.token.as_ref().filter(|n| n.starts_with("session-")) {
        state
            .engine
            .events()
            .append(Event::TokenRevoked {
                name: name.clone(),
                by: caller.user.clone(),
            })
            .await
            .map_err(ApiError::from)?;
    }
    let mut response = Redirect::to("/sign-in").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_cookie().parse().expect("a cookie"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_paths_are_places_to_go_after_signing_in() {
        for (next, to) in [
            (Some("/runs/5"), "/runs/5"),
            (Some("//evil.example/"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("https://evil.example/"), "/"),
            // Browsers drop tabs and newlines: `/\t/evil.example` is `//evil.example`.
            (Some("/\t/evil.example"), "/"),
            (Some("/\n"), "/"),
            (
                Some("/projects/shop?status=failed"),
                "/projects/shop?status=failed",
            ),
            (None, "/"),
        ] {
            assert_eq!(local(next), to);
        }
    }

    #[test]
    fn csrf_tokens_are_per_session_and_compared_whole() {
        assert_ne!(csrf_token("a"), csrf_token("b"));
        assert_eq!(csrf_token("a").len(), 32);
        assert!(same(&csrf_token("a"), &csrf_token("a")));
        assert!(!same(&csrf_token("a"), &csrf_token("a")[..31]));
    }

    #[test]
    fn the_session_cookie_is_read_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "theme=dark; conveyor_session=cvy_abc; x=1".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("cvy_abc"));
        assert!(session_cookie("t", 60, &headers).contains("HttpOnly; SameSite=Strict"));
    }
}
