//! `conveyor-server` is the control plane's front: the JSON API under `/api/v1` (with its OpenAPI
//! document), health endpoints, bearer-token auth, live logs as server-sent events, and the
//! triggers that start runs (polling, manual, cron). Logic lives in the engine and the store;
//! this crate translates HTTP to calls on them.

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
}

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub delivery: Arc<Delivery>,
    pub flags: Arc<flags::Flags>,
}

/// Who may call a route, and how big its body may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (reads).
    Public,
    /// A bearer token (every change, and flag reads: rules name users).
    Token,
    /// A bearer token; the body is a flag definition, capped before it is read.
    FlagToken,
    /// OFREP: an evaluation key, checked by the handler, which answers in the protocol's own
    /// bodies. Not in the OpenAPI document (the protocol has its own).
    Ofrep,
}

/// One mounted route: the router is built from [`routes`], and the OpenAPI test walks the same
/// table, so a route cannot be mounted without being checked against the document.
pub struct Route {
    pub method: Method,
    /// As axum writes it (`{id}`, `{*path}`).
    pub path: String,
    pub access: Access,
    handler: MethodRouter<AppState>,
}

fn route<H, T>(method: Method, path: impl Into<String>, access: Access, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("routes use standard methods");
    Route {
        method,
        path: path.into(),
        access,
        handler: on(filter, handler),
    }
}

/// Every route the server mounts.
pub fn routes() -> Vec<Route> {
    use Access::{FlagToken, Ofrep, Public, Token};
    use Method as M;
    const ENV: &str = "/api/v1/projects/{project}/environments/{environment}";
    let flags = format!("{ENV}/flags");
    vec![
        route(M::GET, "/healthz", Public, api::healthz),
        route(M::GET, "/readyz", Public, api::readyz),
        route(M::GET, "/metrics", Public, delivery_api::all_metrics),
        route(M::GET, "/api/v1/openapi.json", Public, api::openapi),
        // === projects and runs ===
        route(M::GET, "/api/v1/projects", Public, api::list_projects),
        route(M::POST, "/api/v1/projects", Token, api::add_project),
        route(M::GET, "/api/v1/projects/{project}", Public, api::get_project),
        route(
            M::POST,
            "/api/v1/projects/{project}/runs",
            Token,
            api::trigger_run,
        ),
        route(
            M::PUT,
            "/api/v1/projects/{project}/secrets/{name}",
            Token,
            api::set_secret,
        ),
        route(M::GET, "/api/v1/runs", Public, api::list_runs),
        route(M::GET, "/api/v1/runs/{id}", Public, api::get_run),
        route(M::POST, "/api/v1/runs/{id}/cancel", Token, api::cancel_run),
        route(M::GET, "/api/v1/runs/{id}/logs", Public, api::run_logs),
        route(M::GET, "/api/v1/runs/{id}/logs/stream", Public, api::stream_logs),
        route(M::POST, "/api/v1/validate", Public, api::validate),
        // === releases, audit ===
        route(M::GET, "/api/v1/releases", Public, api::list_releases),
        route(M::GET, "/api/v1/releases/{id}", Public, api::get_release),
        route(
            M::GET,
            "/api/v1/releases/{id}/artifacts/{*path}",
            Public,
            api::get_artifact,
        ),
        route(M::GET, "/api/v1/keys/signing", Public, api::signing_key),
        route(M::GET, "/api/v1/audit/verify", Public, api::audit_verify),
        route(M::GET, "/api/v1/events", Public, api::list_events),
        route(M::GET, "/api/v1/events/stream", Public, api::stream_events),
        route(M::POST, "/api/v1/tokens", Token, delivery_api::create_token),
        // === delivery ===
        route(
            M::POST,
            "/api/v1/releases/{id}/promote",
            Token,
            delivery_api::promote,
        ),
        route(M::GET, ENV, Public, delivery_api::environment),
        route(
            M::GET,
            format!("{ENV}/deployments"),
            Public,
            delivery_api::history,
        ),
        route(M::GET, format!("{ENV}/metrics"), Public, delivery_api::metrics),
        route(M::POST, format!("{ENV}/rollback"), Token, delivery_api::rollback),
        route(
            M::GET,
            "/api/v1/deployments/{id}",
            Public,
            delivery_api::deployment,
        ),
        route(
            M::GET,
            "/api/v1/deployments/{id}/analysis",
            Public,
            delivery_api::analysis,
        ),
        route(
            M::POST,
            "/api/v1/deployments/{id}/approve",
            Token,
            delivery_api::approve,
        ),
        route(
            M::POST,
            "/api/v1/deployments/{id}/pause",
            Token,
            delivery_api::pause,
        ),
        route(
            M::POST,
            "/api/v1/deployments/{id}/resume",
            Token,
            delivery_api::resume,
        ),
        route(
            M::POST,
            "/api/v1/deployments/{id}/abort",
            Token,
            delivery_api::abort,
        ),
        route(M::GET, "/api/v1/dora", Public, delivery_api::dora),
        // === flags ===
        route(M::GET, flags.clone(), FlagToken, flags_api::list),
        route(M::PUT, flags.clone(), FlagToken, flags_api::replace),
        route(M::GET, format!("{flags}/export"), FlagToken, flags_api::export),
        route(M::GET, format!("{flags}/history"), FlagToken, flags_api::history),
        route(M::GET, format!("{flags}/stale"), FlagToken, flags_api::stale),
        route(M::GET, format!("{flags}/stream"), FlagToken, flags_api::stream),
        route(M::GET, format!("{flags}/keys"), FlagToken, flags_api::list_keys),
        route(M::POST, format!("{flags}/keys"), FlagToken, flags_api::create_key),
        route(
            M::GET,
            format!("{flags}/schedules"),
            FlagToken,
            flags_api::list_schedules,
        ),
        route(M::GET, format!("{flags}/{{key}}"), FlagToken, flags_api::get_flag),
        route(
            M::PATCH,
            format!("{flags}/{{key}}"),
            FlagToken,
            flags_api::patch_flag,
        ),
        route(
            M::DELETE,
            format!("{flags}/{{key}}"),
            FlagToken,
            flags_api::remove_flag,
        ),
        route(
            M::POST,
            format!("{flags}/{{key}}/schedule"),
            FlagToken,
            flags_api::schedule,
        ),
        route(
            M::DELETE,
            "/api/v1/flag-schedules/{id}",
            FlagToken,
            flags_api::cancel_schedule,
        ),
        // === OFREP ===
        route(
            M::POST,
            "/ofrep/v1/evaluate/flags/{key}",
            Ofrep,
            ofrep::evaluate_flag,
        ),
        route(M::POST, "/ofrep/v1/evaluate/flags", Ofrep, ofrep::evaluate_flags),
        route(M::GET, "/ofrep/v1/configuration", Ofrep, ofrep::configuration),
    ]
}

/// The whole HTTP surface: [`routes`] behind their access rules; any other path or method
/// answers with the same `{code, message}` JSON as every other error.
pub fn router(state: AppState) -> Router {
    let (mut public, mut token, mut flag_token, mut ofrep) =
        (Router::new(), Router::new(), Router::new(), Router::new());
    for r in routes() {
        let group = match r.access {
            Access::Public => &mut public,
            Access::Token => &mut token,
            Access::FlagToken => &mut flag_token,
            Access::Ofrep => &mut ofrep,
        };
        *group = std::mem::take(group).route(&r.path, r.handler);
    }
    let auth = from_fn_with_state(state.clone(), auth::require_token);
    let token = token
        .merge(flag_token.layer(DefaultBodyLimit::max(flags::MAX_DEFINITION_BYTES + 1)))
        .route_layer(auth);
    // OFREP bodies are a context, capped before they are read.
    let ofrep = ofrep.layer(DefaultBodyLimit::max(ofrep::MAX_BODY_BYTES + 1));
    public
        .merge(token)
        .merge(ofrep)
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
    engine
        .events()
        .append(Event::TokenCreated {
            name: "admin".into(),
            hash: auth::token_hash(&token),
        })
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
    tokio::spawn(triggers::poll_forever(engine.clone(), config.poll_tick));
    tokio::spawn(triggers::schedule_forever(engine.clone(), config.poll_tick));
    // Flags are served from memory, rebuilt from the read models before the API answers.
    let flags = match flags::Flags::load(engine.clone(), flags).await {
        Ok(flags) => flags,
        Err(error) => panic!("cannot load feature flags from the store: {error}"),
    };
    tokio::spawn(flags.clone().run_schedules());
    AppState {
        engine,
        delivery,
        flags,
    }
}

/// Serves the API until `shutdown` resolves.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
