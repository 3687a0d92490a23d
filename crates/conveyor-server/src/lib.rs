//! `conveyor-server` is the control plane's front: the JSON API under `/api/v1` (with its OpenAPI
//! document), health endpoints, bearer-token auth, live logs as server-sent events, and the
//! triggers that start runs (polling, manual, cron). Logic lives in the engine and the store;
//! this crate translates HTTP to calls on them.

mod api;
pub mod auth;
mod delivery_api;
mod error;
pub mod flags;
mod flags_api;
mod ofrep;
pub mod triggers;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post, put};
use conveyor_delivery::{Delivery, DeliveryConfig};
use conveyor_engine::Engine;
use conveyor_store::Event;

pub use error::ApiError;

/// The OpenAPI 3.1 document of the API, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How often the poller wakes to check projects that are due.
    pub poll_tick: Duration,
}

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub delivery: Arc<Delivery>,
    pub flags: Arc<flags::Flags>,
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let mutating = Router::new()
        .route("/api/v1/projects", post(api::add_project))
        .route("/api/v1/projects/{project}/runs", post(api::trigger_run))
        .route("/api/v1/projects/{project}/secrets/{name}", put(api::set_secret))
        .route("/api/v1/runs/{id}/cancel", post(api::cancel_run))
        .route("/api/v1/releases/{id}/promote", post(delivery_api::promote))
        .route(
            "/api/v1/projects/{project}/environments/{environment}/rollback",
            post(delivery_api::rollback),
        )
        .route("/api/v1/deployments/{id}/approve", post(delivery_api::approve))
        .route("/api/v1/deployments/{id}/pause", post(delivery_api::pause))
        .route("/api/v1/deployments/{id}/resume", post(delivery_api::resume))
        .route("/api/v1/deployments/{id}/abort", post(delivery_api::abort))
        .route("/api/v1/tokens", post(delivery_api::create_token))
        .merge(flag_routes())
        .route_layer(from_fn_with_state(state.clone(), auth::require_token));
    // OFREP: evaluation keys, not tokens; bodies are a context, capped before they are read.
    let ofrep = Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(ofrep::evaluate_flag))
        .route("/ofrep/v1/evaluate/flags", post(ofrep::evaluate_flags))
        .route("/ofrep/v1/configuration", get(ofrep::configuration))
        .layer(DefaultBodyLimit::max(ofrep::MAX_BODY_BYTES + 1));
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/api/v1/projects", get(api::list_projects))
        .route("/api/v1/projects/{project}", get(api::get_project))
        .route("/api/v1/runs", get(api::list_runs))
        .route("/api/v1/runs/{id}", get(api::get_run))
        .route("/api/v1/runs/{id}/logs", get(api::run_logs))
        .route("/api/v1/runs/{id}/logs/stream", get(api::stream_logs))
        .route("/api/v1/releases", get(api::list_releases))
        .route("/api/v1/releases/{id}", get(api::get_release))
        .route("/api/v1/releases/{id}/artifacts/{*path}", get(api::get_artifact))
        .route("/api/v1/keys/signing", get(api::signing_key))
        .route("/api/v1/audit/verify", get(api::audit_verify))
        .route("/api/v1/events", get(api::list_events))
        .route("/api/v1/events/stream", get(api::stream_events))
        .route("/api/v1/validate", post(api::validate))
        .route(
            "/api/v1/projects/{project}/environments/{environment}",
            get(delivery_api::environment),
        )
        .route(
            "/api/v1/projects/{project}/environments/{environment}/deployments",
            get(delivery_api::history),
        )
        .route(
            "/api/v1/projects/{project}/environments/{environment}/metrics",
            get(delivery_api::metrics),
        )
        .route("/api/v1/deployments/{id}", get(delivery_api::deployment))
        .route("/api/v1/deployments/{id}/analysis", get(delivery_api::analysis))
        .route("/api/v1/dora", get(delivery_api::dora))
        .route("/metrics", get(delivery_api::all_metrics))
        .merge(mutating)
        .merge(ofrep)
        .with_state(state)
}

/// Flags as managed data (behind a token, reads included: rules name users).
fn flag_routes() -> Router<AppState> {
    const ENV: &str = "/api/v1/projects/{project}/environments/{environment}/flags";
    Router::new()
        .route(ENV, get(flags_api::list).put(flags_api::replace))
        .route(&format!("{ENV}/export"), get(flags_api::export))
        .route(&format!("{ENV}/history"), get(flags_api::history))
        .route(&format!("{ENV}/stale"), get(flags_api::stale))
        .route(&format!("{ENV}/stream"), get(flags_api::stream))
        .route(
            &format!("{ENV}/keys"),
            get(flags_api::list_keys).post(flags_api::create_key),
        )
        .route(&format!("{ENV}/schedules"), get(flags_api::list_schedules))
        .route(
            &format!("{ENV}/{{key}}"),
            get(flags_api::get_flag)
                .patch(flags_api::patch_flag)
                .delete(flags_api::remove_flag),
        )
        .route(&format!("{ENV}/{{key}}/schedule"), post(flags_api::schedule))
        .route("/api/v1/flag-schedules/{id}", delete(flags_api::cancel_schedule))
        .layer(DefaultBodyLimit::max(flags::MAX_DEFINITION_BYTES + 1))
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
    let delivery = Delivery::new(
        engine.clone(),
        Arc::new(conveyor_deploy::LocalTarget),
        DeliveryConfig::default(),
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
