//! The OpenAPI 3.1 document, generated from the `conveyor-api` types and the handlers'
//! `#[utoipa::path]` attributes, and served at `/api/v1/openapi.json`. What every route shares is
//! added from the route table ([`crate::routes`]), so it cannot drift from what is mounted: the
//! bearer scheme and 401 on routes behind a token, 400 where a path, query or body can be
//! malformed, 404 where a path names something, 500 everywhere. OFREP's routes are left out:
//! the protocol has its own document.

use std::sync::OnceLock;

use axum::http::Method;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::{Access, access_api, api, delivery_api, flags_api};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Conveyor",
        description = "A self-hosted continuous delivery server. Every route but the health checks, \
            this document and OFREP needs `Authorization: Bearer <token>`, and the token's user a role \
            (viewer, deployer, maintainer, admin) on what the route touches. Every error is \
            `{code, message}` JSON."
    ),
    paths(
        api::healthz, api::readyz, api::openapi,
        api::list_projects, api::add_project, api::get_project, api::trigger_run, api::set_secret,
        api::list_runs, api::get_run, api::cancel_run, api::run_logs, api::stream_logs, api::validate,
        api::list_releases, api::get_release, api::get_artifact, api::signing_key,
        api::audit_verify, api::list_leases, api::list_events, api::stream_events,
        access_api::whoami, access_api::list_users, access_api::add_user, access_api::remove_user,
        access_api::grant_role, access_api::revoke_role, access_api::list_tokens,
        access_api::create_token, access_api::revoke_token, access_api::rotate_token,
        delivery_api::promote, delivery_api::environment,
        delivery_api::history, delivery_api::metrics, delivery_api::rollback,
        delivery_api::protection, delivery_api::protect, delivery_api::unprotect,
        delivery_api::deployment, delivery_api::analysis, delivery_api::approve,
        delivery_api::pause, delivery_api::resume, delivery_api::abort, delivery_api::dora,
        delivery_api::all_metrics,
        flags_api::list, flags_api::replace, flags_api::export, flags_api::history,
        flags_api::stale, flags_api::stream, flags_api::list_keys, flags_api::create_key,
        flags_api::list_schedules, flags_api::get_flag, flags_api::patch_flag,
        flags_api::remove_flag, flags_api::schedule, flags_api::cancel_schedule,
    ),
    components(schemas(conveyor_api::ErrorBody, conveyor_api::LogLine, conveyor_api::StreamEnd)),
    modifiers(&Shared),
)]
struct ApiDoc;

/// The name of the bearer security scheme.
pub const BEARER: &str = "bearer";

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as served (built once).
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| document().to_pretty_json().expect("the document serializes"))
}

/// `{*path}` (axum) → `{path}` (OpenAPI).
pub fn openapi_path(axum_path: &str) -> String {
    axum_path.replace("{*", "{")
}

struct Shared;

const ERRORS: [(&str, &str, &str); 8] = [
    (
        "400",
        "BadRequest",
        "A malformed path, query or body, or a value out of range",
    ),
    (
        "401",
        "Unauthorized",
        "Missing, unknown, expired or revoked bearer token",
    ),
    ("403", "Forbidden", "The token's user lacks the role this needs"),
    ("404", "NotFound", "What the path names does not exist"),
    ("413", "TooLarge", "The body is larger than this route takes"),
    (
        "421",
        "MisdirectedHost",
        "The Host header names a server this is not",
    ),
    (
        "429",
        "TooManyRequests",
        "Too many failed authentications from this address, or too many open streams",
    ),
    ("500", "Internal", "An internal error (logged by the server)"),
];

impl Modify for Shared {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token: the admin token printed on first start, or one from `POST /api/v1/tokens`",
                    ))
                    .build(),
            ),
        );
        for (_, name, description) in ERRORS {
            let response = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                )
                .build();
            components.responses.insert(name.to_string(), RefOr::T(response));
        }
        for route in crate::routes() {
            if !route.documented() {
                continue;
            }
            let path = openapi_path(&route.path);
            let Some(op) = doc
                .paths
                .paths
                .get_mut(&path)
                .and_then(|item| operation(item, &route.method))
            else {
                continue; // The route test names what is missing.
            };
            let token = matches!(route.access, Access::Caller(_));
            if token {
                op.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
            }
            let malformed =
                op.parameters.as_ref().is_some_and(|p| !p.is_empty()) || op.request_body.is_some();
            for (status, name, _) in ERRORS {
                let applies = match status {
                    "400" => malformed,
                    "401" | "403" | "421" | "429" => token,
                    "404" => path.contains('{'),
                    "413" => op.request_body.is_some(),
                    _ => path != "/healthz",
                };
                if applies {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
                }
            }
        }
    }
}

fn operation<'a>(item: &'a mut utoipa::openapi::PathItem, method: &Method) -> Option<&'a mut Operation> {
    match *method {
        Method::GET => item.get.as_mut(),
        Method::POST => item.post.as_mut(),
        Method::PUT => item.put.as_mut(),
        Method::PATCH => item.patch.as_mut(),
        Method::DELETE => item.delete.as_mut(),
        _ => None,
    }
}
