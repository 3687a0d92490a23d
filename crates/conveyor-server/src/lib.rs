//! `conveyor-server` is the control plane's front: the JSON API under `/api/v1` (with its OpenAPI
//! document), health endpoints, bearer-token auth, live logs as server-sent events, and the
//! triggers that start runs (polling, manual, cron). Logic lives in the engine and the store;
//! this crate translates HTTP to calls on them.

mod access_api;
mod api;
pub mod auth;
mod delivery_api;
mod error;
mod extract;
pub mod flags;
mod flags_api;
mod ofrep;
pub mod openapi;
pub mod triggers;
pub mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::{Method, Uri};
use axum::middleware::from_fn_with_state;
use axum::routing::{MethodFilter, MethodRouter, on};
use conveyor_delivery::{Delivery, DeliveryConfig};
use conveyor_engine::Engine;
use conveyor_store::Event;

pub use error::ApiError;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How often the poller wakes to check projects that are due.
    pub poll_tick: Duration,
    /// Peers whose `X-Forwarded-*` headers the environments' routers believe (a load balancer
    /// in front of them); everyone else's are replaced.
    pub trusted_proxies: Vec<conveyor_router::Cidr>,
    /// Anonymous reads, the host names the API answers to.
    pub access: auth::AccessConfig,
}

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub delivery: Arc<Delivery>,
    pub flags: Arc<flags::Flags>,
    pub auth: Arc<auth::AuthState>,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the health checks, and this API's document (the same for every server).
    Anonymous,
    /// A caller whose grants cover the route's [`auth::Need`] (or anonymous read access, when
    /// the server allows it, for reads).
    Caller(auth::Need),
    /// OFREP: an evaluation key, checked by the handler, which answers in the protocol's own
    /// bodies. Not in the OpenAPI document (the protocol has its own).
    Ofrep,
    /// A page of the web UI (HTML, not in the OpenAPI document): anyone's (sign-in, the
    /// stylesheet), or a caller's — signed in with a session cookie, whose forms carry a CSRF
    /// token, or with a bearer token — whose grants cover the [`auth::Need`].
    Page(Option<auth::Need>),
}

/// Bodies larger than a route needs are refused before they are read: most take small JSON.
const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// One mounted route: the router is built from [`routes`], and the OpenAPI and access tests walk
/// the same table, so a route cannot be mounted without being checked.
pub struct Route {
    pub method: Method,
    /// As axum writes it (`{id}`, `{*path}`).
    pub path: String,
    pub access: Access,
    /// The largest body it reads, in bytes.
    pub body_limit: usize,
    handler: MethodRouter<AppState>,
}

impl Route {
    /// Part of the JSON API and its OpenAPI document (not OFREP, not a page).
    pub fn documented(&self) -> bool {
        matches!(self.access, Access::Anonymous | Access::Caller(_))
    }

    pub(crate) fn body_limit(mut self, bytes: usize) -> Route {
        self.body_limit = bytes;
        self
    }
}

pub(crate) fn route<H, T>(method: Method, path: impl Into<String>, access: Access, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("routes use standard methods");
    Route {
        method,
        path: path.into(),
        access,
        body_limit: DEFAULT_BODY_LIMIT,
        handler: on(filter, handler),
    }
}

/// Every route the server mounts, with what it needs from its caller.
pub fn routes() -> Vec<Route> {
    use Method as M;
    use auth::Action::{Administer, Deploy, Manage, Read};
    use auth::Scope::{Caller, Deployment, Environment, FlagSchedule, Project, Release, Run, Server};
    let need = |action, scope| Access::Caller(auth::Need { action, scope });
    const ENV: &str = "/api/v1/projects/{project}/environments/{environment}";
    let flags = format!("{ENV}/flags");
    let flag_body = flags::MAX_DEFINITION_BYTES + 1;
    let mut table = vec![
        route(M::GET, "/healthz", Access::Anonymous, api::healthz),
        route(M::GET, "/readyz", Access::Anonymous, api::readyz),
        route(M::GET, "/api/v1/openapi.json", Access::Anonymous, api::openapi),
        route(M::GET, "/metrics", need(Read, Server), delivery_api::all_metrics),
        // === projects and runs ===
        route(M::GET, "/api/v1/projects", need(Read, Caller), api::list_projects),
        route(
            M::POST,
            "/api/v1/projects",
            need(Administer, Server),
            api::add_project,
        ),
        route(
            M::GET,
            "/api/v1/projects/{project}",
            need(Read, Project),
            api::get_project,
        ),
        route(
            M::POST,
            "/api/v1/projects/{project}/runs",
            need(Deploy, Project),
            api::trigger_run,
        ),
        route(
            M::PUT,
            "/api/v1/projects/{project}/secrets/{name}",
            need(Manage, Project),
            api::set_secret,
        )
        .body_limit(2 * api::MAX_SECRET_BYTES),
        route(M::GET, "/api/v1/runs", need(Read, Caller), api::list_runs),
        route(M::GET, "/api/v1/runs/{id}", need(Read, Run), api::get_run),
        route(
            M::POST,
            "/api/v1/runs/{id}/cancel",
            need(Deploy, Run),
            api::cancel_run,
        ),
        route(M::GET, "/api/v1/runs/{id}/logs", need(Read, Run), api::run_logs),
        route(
            M::GET,
            "/api/v1/runs/{id}/logs/stream",
            need(Read, Run),
            api::stream_logs,
        ),
        route(M::POST, "/api/v1/validate", need(Read, Caller), api::validate)
            .body_limit(conveyor_spec::MAX_SOURCE_BYTES + 1),
        // === releases, audit ===
        route(M::GET, "/api/v1/releases", need(Read, Caller), api::list_releases),
        route(
            M::GET,
            "/api/v1/releases/{id}",
            need(Read, Release),
            api::get_release,
        ),
        route(
            M::GET,
            "/api/v1/releases/{id}/artifacts/{*path}",
            need(Read, Release),
            api::get_artifact,
        ),
        route(
            M::GET,
            "/api/v1/keys/signing",
            need(Read, Caller),
            api::signing_key,
        ),
        route(
            M::GET,
            "/api/v1/audit/verify",
            need(Read, Server),
            api::audit_verify,
        ),
        route(M::GET, "/api/v1/leases", need(Read, Server), api::list_leases),
        route(M::GET, "/api/v1/events", need(Read, Server), api::list_events),
        route(
            M::GET,
            "/api/v1/events/stream",
            need(Read, Server),
            api::stream_events,
        ),
        // === users and tokens ===
        route(M::GET, "/api/v1/whoami", need(Read, Caller), access_api::whoami),
        route(
            M::GET,
            "/api/v1/users",
            need(Administer, Server),
            access_api::list_users,
        ),
        route(
            M::POST,
            "/api/v1/users",
            need(Administer, Server),
            access_api::add_user,
        ),
        route(
            M::DELETE,
            "/api/v1/users/{name}",
            need(Administer, Server),
            access_api::remove_user,
        ),
        route(
            M::PUT,
            "/api/v1/users/{name}/roles",
            need(Manage, Caller),
            access_api::grant_role,
        ),
        route(
            M::DELETE,
            "/api/v1/users/{name}/roles",
            need(Manage, Caller),
            access_api::revoke_role,
        ),
        route(
            M::GET,
            "/api/v1/tokens",
            need(Read, Caller),
            access_api::list_tokens,
        ),
        route(
            M::POST,
            "/api/v1/tokens",
            need(Read, Caller),
            access_api::create_token,
        ),
        route(
            M::DELETE,
            "/api/v1/tokens/{name}",
            need(Read, Caller),
            access_api::revoke_token,
        ),
        route(
            M::POST,
            "/api/v1/tokens/{name}/rotate",
            need(Read, Caller),
            access_api::rotate_token,
        ),
        // === delivery ===
        route(
            M::POST,
            "/api/v1/releases/{id}/promote",
            need(Deploy, Release),
            delivery_api::promote,
        ),
        route(M::GET, ENV, need(Read, Environment), delivery_api::environment),
        route(
            M::GET,
            format!("{ENV}/deployments"),
            need(Read, Environment),
            delivery_api::history,
        ),
        route(
            M::GET,
            format!("{ENV}/metrics"),
            need(Read, Environment),
            delivery_api::metrics,
        ),
        route(
            M::GET,
            format!("{ENV}/protection"),
            need(Read, Environment),
            delivery_api::protection,
        ),
        route(
            M::PUT,
            format!("{ENV}/protection"),
            need(Manage, Environment),
            delivery_api::protect,
        ),
        route(
            M::DELETE,
            format!("{ENV}/protection"),
            need(Manage, Environment),
            delivery_api::unprotect,
        ),
        route(
            M::POST,
            format!("{ENV}/rollback"),
            need(Deploy, Environment),
            delivery_api::rollback,
        ),
        route(
            M::GET,
            "/api/v1/deployments/{id}",
            need(Read, Deployment),
            delivery_api::deployment,
        ),
        route(
            M::GET,
            "/api/v1/deployments/{id}/analysis",
            need(Read, Deployment),
            delivery_api::analysis,
        ),
        route(
            M::POST,
            "/api/v1/deployments/{id}/approve",
            need(Deploy, Deployment),
            delivery_api::approve,
        ),
        route(
            M::POST,
            "/api/v1/deployments/{id}/pause",
            need(Deploy, Deployment),
            delivery_api::pause,
        ),
        route(
            M::POST,
            "/api/v1/deployments/{id}/resume",
            need(Deploy, Deployment),
            delivery_api::resume,
        ),
        route(
            M::POST,
            "/api/v1/deployments/{id}/abort",
            need(Deploy, Deployment),
            delivery_api::abort,
        ),
        route(M::GET, "/api/v1/dora", need(Read, Caller), delivery_api::dora),
        // === flags ===
        route(M::GET, flags.clone(), need(Read, Environment), flags_api::list),
        route(
            M::PUT,
            flags.clone(),
            need(Deploy, Environment),
            flags_api::replace,
        )
        .body_limit(flag_body),
        route(
            M::GET,
            format!("{flags}/export"),
            need(Read, Environment),
            flags_api::export,
        ),
        route(
            M::GET,
            format!("{flags}/history"),
            need(Read, Environment),
            flags_api::history,
        ),
        route(
            M::GET,
            format!("{flags}/stale"),
            need(Read, Environment),
            flags_api::stale,
        ),
        route(
            M::GET,
            format!("{flags}/stream"),
            need(Read, Environment),
            flags_api::stream,
        ),
        route(
            M::GET,
            format!("{flags}/keys"),
            need(Read, Environment),
            flags_api::list_keys,
        ),
        route(
            M::POST,
            format!("{flags}/keys"),
            need(Manage, Environment),
            flags_api::create_key,
        ),
        route(
            M::GET,
            format!("{flags}/schedules"),
            need(Read, Environment),
            flags_api::list_schedules,
        ),
        route(
            M::GET,
            format!("{flags}/{{key}}"),
            need(Read, Environment),
            flags_api::get_flag,
        ),
        route(
            M::PATCH,
            format!("{flags}/{{key}}"),
            need(Deploy, Environment),
            flags_api::patch_flag,
        )
        .body_limit(flag_body),
        route(
            M::DELETE,
            format!("{flags}/{{key}}"),
            need(Deploy, Environment),
            flags_api::remove_flag,
        ),
        route(
            M::POST,
            format!("{flags}/{{key}}/schedule"),
            need(Deploy, Environment),
            flags_api::schedule,
        )
        .body_limit(flag_body),
        route(
            M::DELETE,
            "/api/v1/flag-schedules/{id}",
            need(Deploy, FlagSchedule),
            flags_api::cancel_schedule,
        ),
        // === OFREP ===
        route(
            M::POST,
            "/ofrep/v1/evaluate/flags/{key}",
            Access::Ofrep,
            ofrep::evaluate_flag,
        ),
        route(
            M::POST,
            "/ofrep/v1/evaluate/flags",
            Access::Ofrep,
            ofrep::evaluate_flags,
        ),
        route(
            M::GET,
            "/ofrep/v1/configuration",
            Access::Ofrep,
            ofrep::configuration,
        ),
    ];
    table.extend(ui::routes());
    for r in &mut table {
        if r.access == Access::Ofrep {
            // OFREP bodies are a context, capped before they are read.
            r.body_limit = ofrep::MAX_BODY_BYTES + 1;
        }
    }
    table
}

/// The whole HTTP surface: [`routes`], each behind its access rule and body limit; any other
/// path or method answers with the same `{code, message}` JSON as every other error.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for r in routes() {
        let mut handler = r.handler.layer(DefaultBodyLimit::max(r.body_limit));
        match r.access {
            Access::Caller(need) => {
                handler = handler.route_layer(from_fn_with_state((state.clone(), need), auth::authorize));
            }
            Access::Page(Some(need)) => {
                handler = handler.route_layer(from_fn_with_state(
                    (state.clone(), need, r.body_limit),
                    ui::authorize_page,
                ));
            }
            Access::Anonymous | Access::Ofrep | Access::Page(None) => {}
        }
        router = router.route(&r.path, handler);
    }
    router
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state)
}

async fn unknown_route(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no such endpoint: {}", uri.path()))
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{} does not answer {method}", uri.path()))
}

/// What first start produced: the admin token to print once (None when it was given, or exists).
/// The first start creates the `admin` user, an admin of everything, and its token `admin`,
/// which never expires (rotate it with `conveyor token rotate admin`).
pub async fn ensure_admin_token(engine: &Engine, given: Option<&str>) -> Result<Option<String>, ApiError> {
    if engine.store().has_tokens().await? {
        return Ok(None);
    }
    let (token, generated) = match given {
        Some(t) => (t.to_string(), false),
        None => (
            auth::new_token().map_err(|e| ApiError::Internal(e.to_string()))?,
            true,
        ),
    };
    let by = || "server".to_string();
    engine
        .events()
        .append_all(vec![
            Event::UserAdded {
                user: auth::ADMIN.into(),
                kind: conveyor_api::UserKind::Person,
                email: None,
                by: by(),
            },
            Event::RoleGranted {
                user: auth::ADMIN.into(),
                role: conveyor_api::Role::Admin,
                project: None,
                environment: None,
                by: by(),
            },
            Event::TokenCreated {
                name: auth::ADMIN.into(),
                hash: auth::token_hash(&token),
                user: Some(auth::ADMIN.into()),
                expires_at: None,
                by: Some(by()),
            },
        ])
        .await?;
    Ok(generated.then_some(token))
}

/// Brings the control plane back: environments first (routers serving again, stable versions
/// re-adopted, interrupted deployments rolled back), then unfinished runs; then starts the
/// triggers. Returns the API's state, ready to serve.
pub async fn start(engine: Arc<Engine>, config: ServerConfig) -> AppState {
    start_with_flags(engine, config, flags::FlagsConfig::default()).await
}

/// [`start`] with flag settings (evaluation rate limit).
pub async fn start_with_flags(
    engine: Arc<Engine>,
    config: ServerConfig,
    flags: flags::FlagsConfig,
) -> AppState {
    let target = conveyor_deploy::LocalTarget::new(
        engine.data().root.join("releases"),
        Arc::new(conveyor_delivery::CasBlobs(engine.data().cas.clone())),
    )
    .with_sandbox(engine.sandbox().clone());
    let delivery = Delivery::new(
        engine.clone(),
        Arc::new(target),
        DeliveryConfig {
            trusted_proxies: config.trusted_proxies.clone(),
            ..DeliveryConfig::default()
        },
    );
    if let Err(error) = delivery.recover().await {
        tracing::error!(%error, "cannot recover environments");
    }
    match engine.recover().await {
        Ok(resumed) if !resumed.is_empty() => tracing::info!(runs = resumed.len(), "resumed unfinished runs"),
        Ok(_) => {}
        Err(error) => tracing::error!(%error, "cannot resume unfinished runs"),
    }
    tokio::spawn(engine.clone().keep_leases());
    tokio::spawn(triggers::poll_forever(engine.clone(), config.poll_tick));
    tokio::spawn(triggers::schedule_forever(engine.clone(), config.poll_tick));
    // Flags are served from memory, rebuilt from the read models before the API answers.
    let flags = match flags::Flags::load(engine.clone(), flags).await {
        Ok(flags) => flags,
        Err(error) => panic!("cannot load feature flags from the store: {error}"),
    };
    tokio::spawn(flags.clone().run_schedules());
    tokio::spawn(flags.clone().follow());
    AppState {
        engine,
        delivery,
        flags,
        auth: auth::AuthState::new(config.access),
    }
}

/// How long a client may take to send a request's headers (slow clients hold no connection).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may take until its response starts (streams then go on as long as they
/// last).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How long requests in flight get to finish once the server stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves the API until `shutdown` resolves, then lets requests in flight finish. Each connection
/// has a header-read timeout and each request a timeout to its response; the handlers see the
/// client's address (for failed-authentication limits).
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let app = router(state).layer(axum::middleware::from_fn(request_timeout));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, say: wait rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                app.clone().oneshot(request.map(axum::body::Body::new))
            });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Streams (logs, events) never end by themselves: give the rest a moment, then go.
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("closing the connections still open after the grace period");
    }
    Ok(())
}

async fn request_timeout(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<axum::response::Response, ApiError> {
    tokio::time::timeout(REQUEST_TIMEOUT, next.run(request))
        .await
        .map_err(|_| ApiError::Unavailable(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())))
}
