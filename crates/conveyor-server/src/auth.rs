//! Who is calling and what they may do. Bearer tokens are stored as SHA-256 only; each belongs
//! to a user whose grants (a role on every project, one project or one environment) decide every
//! route. The route table names what a route needs ([`Need`]); [`authorize`] resolves the
//! project and environment the route touches from its path and checks the caller's grants, before
//! the handler runs. Handlers whose scope is in the body check it again, precisely.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, RawPathParams, Request, State};
use axum::http::header::{AUTHORIZATION, HOST};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use conveyor_api::{Grant, Role};
use sha2::{Digest as _, Sha256};

use crate::{ApiError, AppState};

/// The user the first start creates, whose token `CONVEYOR_ADMIN_TOKEN` is.
pub const ADMIN: &str = "admin";

/// What a route does, from least to most powerful; each needs the role of the same rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Read anything of the scope.
    Read,
    /// Ship: start and cancel runs, promote, approve, pause/resume/abort, roll back, change flags.
    Deploy,
    /// Manage the project: secrets, members, its automation tokens, flag evaluation keys.
    Manage,
    /// The server itself: projects, users, the whole event log.
    Administer,
}

impl Action {
    pub fn least_role(self) -> Role {
        match self {
            Action::Read => Role::Viewer,
            Action::Deploy => Role::Deployer,
            Action::Manage => Role::Maintainer,
            Action::Administer => Role::Admin,
        }
    }
}

/// Where a route's project and environment come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The whole server: the action is needed on every project.
    Server,
    /// Any authenticated caller; the handler narrows what it shows or does (lists, own tokens).
    Caller,
    /// `{project}` in the path.
    Project,
    /// `{project}` and `{environment}` in the path.
    Environment,
    /// `{id}` of a run, a release, a deployment or a flag schedule: their project (and
    /// environment).
    Run,
    /// The release's project; the environment is in the body, and the handler checks it.
    Release,
    Deployment,
    FlagSchedule,
}

/// What a route needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub action: Action,
    pub scope: Scope,
}

/// The project and environment a request's path named, as [`authorize`] resolved them (for
/// handlers whose body names the environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scoped {
    pub project: Option<String>,
    pub environment: Option<String>,
}

/// Who made a request, and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user (for the audit trail, approvals and not-author rules).
    pub user: String,
    /// The token's name; none for anonymous read access.
    pub token: Option<String>,
    pub grants: Vec<Grant>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Caller {
    /// Anonymous read access (when the server allows it): viewer of everything.
    pub(crate) fn anonymous() -> Caller {
        Caller {
            user: "anonymous".into(),
            token: None,
            grants: vec![Grant {
                role: Role::Viewer,
                project: None,
                environment: None,
            }],
            expires_at: None,
        }
    }

    /// May the caller do `action` on `project` (None: every project) and `environment` (None:
    /// the whole project)? A grant on one environment gives its role there, and read access to
    /// the rest of the project; `admin` is only ever granted on every project.
    pub fn may(&self, action: Action, project: Option<&str>, environment: Option<&str>) -> bool {
        self.grants.iter().any(|g| {
            let role_enough = g.role >= action.least_role();
            let project_covered = match (&g.project, project) {
                (None, _) => true,
                (Some(granted), Some(asked)) => granted == asked,
                (Some(_), None) => false,
            };
            let environment_covered = match (&g.environment, environment) {
                (None, _) => true,
                _ if action == Action::Read => true,
                (Some(granted), Some(asked)) => granted == asked,
                (Some(_), None) => false,
            };
            role_enough && project_covered && environment_covered
        })
    }

    /// May the caller do `action` in at least one environment of `project`? (The check before
    /// a handler reads which environment the body names.)
    pub fn may_somewhere(&self, action: Action, project: &str) -> bool {
        self.grants
            .iter()
            .any(|g| g.role >= action.least_role() && g.project.as_deref().is_none_or(|p| p == project))
    }

    /// [`Caller::may`], or a refusal that says what was missing.
    pub fn require(
        &self,
        action: Action,
        project: Option<&str>,
        environment: Option<&str>,
    ) -> Result<(), ApiError> {
        if self.may(action, project, environment) {
            return Ok(());
        }
        let scope = match (project, environment) {
            (None, _) => "every project".to_string(),
            (Some(p), None) => format!("project '{p}'"),
            (Some(p), Some(e)) => format!("environment '{e}' of project '{p}'"),
        };
        Err(ApiError::Forbidden(format!(
            "{} needs the role '{}' on {scope}",
            self.user,
            action.least_role()
        )))
    }

    /// Every project it may read, or None when it may read them all.
    pub fn readable_projects(&self) -> Option<Vec<String>> {
        if self.may(Action::Read, None, None) {
            return None;
        }
        let mut projects: Vec<String> = self.grants.iter().filter_map(|g| g.project.clone()).collect();
        projects.sort();
        projects.dedup();
        Some(projects)
    }
}

/// How the server checks callers, from its configuration.
#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    /// Reads without a token (viewer of everything): off unless asked for.
    pub anonymous_read: bool,
    /// Host names (besides IP addresses and `localhost`) the API answers to; a request for any
    /// other name is refused, so a page on another site cannot reach it through DNS rebinding.
    pub allowed_hosts: Vec<String>,
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random token, `cvy_` + 64 hex digits.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("cvy_{}", hex::encode(bytes)))
}

/// Failed authentications per client address: a token bucket each, so guessing tokens is slow.
#[derive(Debug, Default)]
pub struct FailedAuth {
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl FailedAuth {
    /// Burst of failures allowed, and how many more per minute.
    const BURST: f64 = 20.0;
    const PER_MINUTE: f64 = 10.0;
    /// Addresses tracked at most; the fullest buckets are forgotten first.
    const MAX_ADDRESSES: usize = 10_000;

    /// Seconds until `ip` may try again, if it is out of tries.
    fn blocked_for(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let buckets = self.buckets.lock().expect("failed-auth buckets");
        let (tokens, at) = *buckets.get(&ip)?;
        let tokens = Self::refilled(tokens, at, now);
        (tokens < 1.0).then(|| ((1.0 - tokens) * 60.0 / Self::PER_MINUTE).ceil() as u64)
    }

    fn failed(&self, ip: IpAddr, now: Instant) {
        let mut buckets = self.buckets.lock().expect("failed-auth buckets");
        if buckets.len() >= Self::MAX_ADDRESSES && !buckets.contains_key(&ip) {
            buckets.retain(|_, (tokens, at)| Self::refilled(*tokens, *at, now) < Self::BURST);
        }
        let (tokens, at) = buckets.get(&ip).copied().unwrap_or((Self::BURST, now));
        buckets.insert(ip, ((Self::refilled(tokens, at, now) - 1.0).max(0.0), now));
    }

    fn refilled(tokens: f64, at: Instant, now: Instant) -> f64 {
        let minutes = now.saturating_duration_since(at).as_secs_f64() / 60.0;
        (tokens + minutes * Self::PER_MINUTE).min(Self::BURST)
    }
}

/// Is `host` (a `Host` header: name or address, maybe a port) one the API answers to?
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => return v6.split(']').next().is_some_and(|a| a.parse::<IpAddr>().is_ok()),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

fn bearer(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Who is calling: their token's user and grants, or anonymous read access, or a refusal.
/// `peer` is the client's address, `token` the bearer token it sent.
pub(crate) async fn identify(
    state: &AppState,
    peer: Option<IpAddr>,
    token: Option<String>,
) -> Result<Caller, ApiError> {
    let Some(token) = token else {
        return if state.auth.config.anonymous_read {
            Ok(Caller::anonymous())
        } else {
            Err(ApiError::Unauthorized)
        };
    };
    let store = state.engine.store();
    let owner = store.token_owner(&token_hash(&token)).await?;
    let refusal = match &owner {
        None => Some("unknown token"),
        Some(o) if o.revoked_at.is_some() || !o.user_exists => Some("revoked token"),
        Some(o) if o.expires_at.is_some_and(|at| at <= Utc::now()) => Some("expired token"),
        Some(_) => None,
    };
    if let Some(why) = refusal {
        tracing::info!(peer = ?peer, why, "authentication refused");
        // A valid token always works; an address that keeps failing is told to wait, so
        // guessing is slow, while the people behind the same proxy are not locked out.
        if let Some(ip) = peer {
            let now = Instant::now();
            if let Some(seconds) = state.auth.failed.blocked_for(ip, now) {
                return Err(ApiError::TooManyRequests {
                    message: "too many failed authentications from this address".into(),
                    retry_after: Duration::from_secs(seconds),
                });
            }
            state.auth.failed.failed(ip, now);
        }
        return Err(ApiError::Unauthorized);
    }
    let owner = owner.expect("a refusal otherwise");
    Ok(Caller {
        grants: store.grants(&owner.user).await?,
        user: owner.user,
        token: Some(owner.token),
        expires_at: owner.expires_at,
    })
}

/// The project and environment the request's path points at, or a 404 when it names nothing.
async fn scope_of(
    state: &AppState,
    scope: Scope,
    params: &RawPathParams,
) -> Result<(Option<String>, Option<String>), ApiError> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let id = || {
        param("id")
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| ApiError::InvalidRequest("the id in the path must be a number".into()))
    };
    let store = state.engine.store();
    Ok(match scope {
        Scope::Server | Scope::Caller => (None, None),
        Scope::Project => (param("project"), None),
        Scope::Environment => (param("project"), param("environment")),
        Scope::Run => {
            let id = id()?;
            let run = store.run(id).await?;
            (
                Some(
                    run.ok_or_else(|| ApiError::NotFound(format!("run {id} does not exist")))?
                        .project,
                ),
                None,
            )
        }
        Scope::Release => {
            let id = id()?;
            let release = store.release(id).await?;
            let release =
                release.ok_or_else(|| ApiError::NotFound(format!("release {id} does not exist")))?;
            (Some(release.project), None)
        }
        Scope::Deployment => {
            let id = id()?;
            let d = store.deployment(id).await?;
            let d = d.ok_or_else(|| ApiError::NotFound(format!("deployment {id} does not exist")))?;
            (Some(d.project), Some(d.environment))
        }
        Scope::FlagSchedule => {
            let id = id()?;
            let s = store.flag_schedule(id).await?;
            let s = s.ok_or_else(|| ApiError::NotFound(format!("flag schedule {id} does not exist")))?;
            (Some(s.project), Some(s.environment))
        }
    })
}

/// The middleware of every route but the health checks and OFREP: the `Host` is ours, the
/// caller is known (or anonymous reads are allowed) and may do what the route needs where it
/// does it. The [`Caller`] is left in the request's extensions for the handler.
pub async fn authorize(
    State((state, need)): State<(AppState, Need)>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check_host(&state, &request)?;
    if need.action > Action::Read && bearer(&request).is_none() {
        // Anonymous read access never extends to changes: say a token is missing.
        return Err(ApiError::Unauthorized);
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let token = bearer(&request).map(str::to_string);
    let caller = identify(&state, peer, token).await?;
    let (mut parts, body) = request.into_parts();
    let scoped = admit(&state, need, &caller, &mut parts).await?;
    let mut request = Request::from_parts(parts, body);
    request.extensions_mut().insert(caller);
    request.extensions_mut().insert(scoped);
    Ok(next.run(request).await)
}

/// The project and environment a request's path names, once `caller` is known to be allowed to
/// do there what the route needs.
pub(crate) async fn admit(
    state: &AppState,
    need: Need,
    caller: &Caller,
    parts: &mut axum::http::request::Parts,
) -> Result<Scoped, ApiError> {
    let params = axum::RequestPartsExt::extract::<RawPathParams>(parts)
        .await
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let (project, environment) = scope_of(state, need.scope, &params).await?;
    match (need.scope, &project) {
        // Lists and the caller's own things: the handler narrows them; a route that changes
        // something needs the role somewhere.
        (Scope::Caller, _) => {
            if need.action > Action::Read && !caller.grants.iter().any(|g| g.role >= need.action.least_role())
            {
                return Err(ApiError::Forbidden(format!(
                    "{} needs the role '{}' on some project",
                    caller.user,
                    need.action.least_role()
                )));
            }
        }
        // The environment is in the body: the handler checks it once it has read it.
        (Scope::Release, Some(project)) if need.action > Action::Read => {
            if !caller.may_somewhere(need.action, project) {
                caller.require(need.action, Some(project), None)?;
            }
        }
        _ => caller.require(need.action, project.as_deref(), environment.as_deref())?,
    }
    Ok(Scoped { project, environment })
}

/// Refuses a request whose `Host` names a server we are not (DNS rebinding).
pub fn check_host(state: &AppState, request: &Request) -> Result<(), ApiError> {
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    match host {
        Some(host) if !host_allowed(host, &state.auth.config.allowed_hosts) => {
            Err(ApiError::MisdirectedHost(format!(
                "this server does not answer to '{host}' (allowed: IP addresses, localhost and --allowed-host names)"
            )))
        }
        _ => Ok(()),
    }
}

/// Kept by the server: how it authenticates, who failed to, and the streams each token has open.
pub struct AuthState {
    pub config: AccessConfig,
    pub failed: FailedAuth,
    streams: Mutex<HashMap<String, usize>>,
}

/// Streams (SSE) one token may have open at once.
pub const MAX_STREAMS_PER_TOKEN: usize = 32;

impl AuthState {
    pub fn new(config: AccessConfig) -> Arc<AuthState> {
        Arc::new(AuthState {
            config,
            failed: FailedAuth::default(),
            streams: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more stream of `caller`'s, held until the permit is dropped (the stream
    /// ends or its client goes), or a refusal when the token has all it may.
    pub fn open_stream(self: &Arc<Self>, caller: &Caller) -> Result<StreamPermit, ApiError> {
        let key = caller.token.clone().unwrap_or_else(|| caller.user.clone());
        let mut streams = self.streams.lock().expect("stream counts");
        let open = streams.entry(key.clone()).or_default();
        if *open >= MAX_STREAMS_PER_TOKEN {
            return Err(ApiError::TooManyRequests {
                message: format!("this token has {MAX_STREAMS_PER_TOKEN} streams open already"),
                retry_after: Duration::from_secs(10),
            });
        }
        *open += 1;
        Ok(StreamPermit {
            auth: self.clone(),
            key,
        })
    }
}

/// One open stream of a token's; see [`AuthState::open_stream`].
pub struct StreamPermit {
    auth: Arc<AuthState>,
    key: String,
}

/// How often an open stream checks that its caller may still read it.
const STREAM_RECHECK: Duration = Duration::from_secs(2);

impl StreamPermit {
    /// `stream`, holding this permit for as long as it lasts, and ending as soon as its caller
    /// may no longer read `scope`: the token revoked or expired, the user removed, the role taken
    /// away.
    pub fn hold<S: futures_util::Stream>(
        self,
        stream: S,
        state: AppState,
        caller: Caller,
        scope: Scoped,
    ) -> impl futures_util::Stream<Item = S::Item> {
        self.hold_reading(stream, state, caller, Some(scope))
    }

    /// [`StreamPermit::hold`] for a stream that filters what it sends by the caller's grants
    /// itself (`/live`): it ends when the token or the user does.
    pub fn hold_while_valid<S: futures_util::Stream>(
        self,
        stream: S,
        state: AppState,
        caller: Caller,
    ) -> impl futures_util::Stream<Item = S::Item> {
        self.hold_reading(stream, state, caller, None)
    }

    fn hold_reading<S: futures_util::Stream>(
        self,
        stream: S,
        state: AppState,
        caller: Caller,
        scope: Option<Scoped>,
    ) -> impl futures_util::Stream<Item = S::Item> {
        let lost = async move {
            loop {
                tokio::time::sleep(STREAM_RECHECK).await;
                if !still_reads(&state, &caller, scope.as_ref()).await {
                    tracing::info!(user = %caller.user, "closing a stream its caller may no longer read");
                    return;
                }
            }
        };
        let stream = futures_util::StreamExt::take_until(stream, Box::pin(lost));
        futures_util::StreamExt::map(stream, move |item| {
            let _held = &self;
            item
        })
    }
}

/// May `caller` (as the store has their token and grants now) still read `scope` (None: is
/// their token still good)?
async fn still_reads(state: &AppState, caller: &Caller, scope: Option<&Scoped>) -> bool {
    let Some(token) = &caller.token else {
        return state.auth.config.anonymous_read;
    };
    let store = state.engine.store();
    let valid = match store.token(token).await {
        Ok(Some(t)) => {
            t.user == caller.user
                && t.revoked_at.is_none()
                && t.expires_at.is_none_or(|at| at > Utc::now())
                && matches!(store.user(&t.user).await, Ok(Some(_)))
        }
        // A store that cannot answer now is not a revocation.
        Err(_) => return true,
        Ok(None) => false,
    };
    if !valid {
        return false;
    }
    let Some(scope) = scope else {
        return true;
    };
    let Ok(grants) = store.grants(&caller.user).await else {
        return true;
    };
    let now = Caller {
        grants,
        ..caller.clone()
    };
    now.may(
        Action::Read,
        scope.project.as_deref(),
        scope.environment.as_deref(),
    )
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut streams = self.auth.streams.lock().expect("stream counts");
        if let Some(open) = streams.get_mut(&self.key) {
            *open -= 1;
            if *open == 0 {
                streams.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(role: Role, project: Option<&str>, environment: Option<&str>) -> Grant {
        Grant {
            role,
            project: project.map(Into::into),
            environment: environment.map(Into::into),
        }
    }

    fn caller(grants: Vec<Grant>) -> Caller {
        Caller {
            user: "u".into(),
            token: None,
            grants,
            expires_at: None,
        }
    }

    #[test]
    fn grants_cover_their_scope_and_rank() {
        use Action::*;
        let staging = caller(vec![grant(Role::Deployer, Some("shop"), Some("staging"))]);
        let maintainer = caller(vec![grant(Role::Maintainer, Some("shop"), None)]);
        let viewer_all = caller(vec![grant(Role::Viewer, None, None)]);
        let admin = caller(vec![grant(Role::Admin, None, None)]);
        type Case<'a> = (&'a Caller, Action, Option<&'a str>, Option<&'a str>, bool);
        let cases: &[Case<'_>] = &[
            (&staging, Deploy, Some("shop"), Some("staging"), true),
            (&staging, Deploy, Some("shop"), Some("production"), false),
            (&staging, Read, Some("shop"), Some("production"), true),
            (&staging, Read, Some("shop"), None, true),
            (&staging, Deploy, Some("shop"), None, false),
            (&staging, Read, Some("other"), None, false),
            (&staging, Read, None, None, false),
            (&maintainer, Manage, Some("shop"), None, true),
            (&maintainer, Deploy, Some("shop"), Some("production"), true),
            (&maintainer, Manage, Some("other"), None, false),
            (&maintainer, Administer, Some("shop"), None, false),
            (&viewer_all, Read, None, None, true),
            (&viewer_all, Read, Some("any"), Some("env"), true),
            (&viewer_all, Deploy, Some("any"), Some("env"), false),
            (&admin, Administer, None, None, true),
            (&admin, Deploy, Some("x"), Some("y"), true),
        ];
        for (i, (who, action, project, environment, expected)) in cases.iter().enumerate() {
            assert_eq!(who.may(*action, *project, *environment), *expected, "case {i}");
        }
        assert!(staging.may_somewhere(Deploy, "shop"));
        assert!(!staging.may_somewhere(Deploy, "other"));
        assert!(!staging.may_somewhere(Manage, "shop"));
        assert_eq!(staging.readable_projects(), Some(vec!["shop".to_string()]));
        assert_eq!(viewer_all.readable_projects(), None);
    }

    #[test]
    fn refusals_say_what_is_missing() {
        let staging = caller(vec![grant(Role::Deployer, Some("shop"), Some("staging"))]);
        let err = staging
            .require(Action::Deploy, Some("shop"), Some("production"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "u needs the role 'deployer' on environment 'production' of project 'shop'"
        );
    }

    #[test]
    fn hosts_are_addresses_localhost_or_configured_names() {
        let allowed = vec!["ci.example.com".to_string()];
        for (host, ok) in [
            ("127.0.0.1:8080", true),
            ("10.1.2.3", true),
            ("[::1]:8080", true),
            ("localhost:8080", true),
            ("LOCALHOST", true),
            ("ci.example.com", true),
            ("ci.example.com:443", true),
            ("attacker.example", false),
            ("attacker.example:8080", false),
            ("[not-an-address]", false),
        ] {
            assert_eq!(host_allowed(host, &allowed), ok, "{host}");
        }
    }

    #[test]
    fn failed_authentications_run_out_and_refill() {
        let limits = FailedAuth::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let start = Instant::now();
        for _ in 0..20 {
            assert_eq!(limits.blocked_for(ip, start), None);
            limits.failed(ip, start);
        }
        assert_eq!(limits.blocked_for(ip, start), Some(6));
        assert_eq!(limits.blocked_for("192.0.2.2".parse().unwrap(), start), None);
        assert_eq!(limits.blocked_for(ip, start + Duration::from_secs(6)), None);
    }
}
