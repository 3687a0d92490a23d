//! The OpenFeature Remote Evaluation Protocol (open-feature/protocol `service/openapi.yaml`):
//! single and bulk evaluation, and the provider configuration. OFREP has its own response
//! bodies (`{key, reason, variant, metadata, value}`, `{key, errorCode, errorDetails}`), so
//! this module builds them instead of going through `ApiError`. The hot path touches memory
//! only: the key's hash, its token bucket, the environment's compiled `FlagSet`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use conveyor_flags::{ContextLimits, ErrorCode, Evaluation, EvaluationContext, Metadata};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::AppState;
use crate::flags::{ApiKey, key_hash};

/// A request body is the context plus a little framing.
pub const MAX_BODY_BYTES: usize = 64 * 1024 + 1024;

type OfrepResult<T> = Result<T, Box<Response>>;

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).expect("OFREP bodies serialize");
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `generalErrorResponse`: for 401, 403, 429 and 500.
fn general(status: StatusCode, details: &str) -> Box<Response> {
    #[derive(Serialize)]
    struct General<'a> {
        #[serde(rename = "errorDetails")]
        error_details: &'a str,
    }
    Box::new(json(
        status,
        &General {
            error_details: details,
        },
    ))
}

/// `evaluationSuccess` (with `value` left out when the caller's code default applies: ADR 0006's
/// `codeDefaultFlag`) or `evaluationFailure` / `flagNotFound`.
#[derive(Serialize)]
#[serde(untagged)]
enum Item<'a> {
    Success {
        key: &'a str,
        reason: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        variant: Option<&'a str>,
        metadata: &'a Metadata,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<&'a Value>,
    },
    Failure {
        key: &'a str,
        #[serde(rename = "errorCode")]
        error_code: &'static str,
        #[serde(rename = "errorDetails")]
        error_details: &'a str,
    },
}

fn item(evaluation: &Evaluation) -> Item<'_> {
    match &evaluation.error {
        Some(error) => Item::Failure {
            key: &evaluation.key,
            error_code: error.code.as_str(),
            error_details: &error.message,
        },
        None => Item::Success {
            key: &evaluation.key,
            reason: evaluation.reason.as_str(),
            variant: evaluation.variant.as_deref(),
            metadata: &evaluation.metadata,
            value: evaluation.value.as_deref(),
        },
    }
}

/// `Authorization: Bearer <key>` or `X-API-Key: <key>`; 401 without one, 403 for a key that
/// is not an evaluation key; then the key's rate limit (429 with `Retry-After` in seconds).
fn authenticate(state: &AppState, headers: &HeaderMap) -> OfrepResult<Arc<ApiKey>> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let Some(presented) = presented else {
        return Err(general(
            StatusCode::UNAUTHORIZED,
            "an evaluation key is required: Authorization: Bearer <key> or X-API-Key: <key>",
        ));
    };
    let Some(key) = state.flags.key(&key_hash(presented)) else {
        return Err(general(
            StatusCode::FORBIDDEN,
            "this key may not evaluate flags: create one with `conveyor flags key create`",
        ));
    };
    if let Err(seconds) = key.take(state.flags.config.rate_per_second) {
        let mut response = general(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "key '{}' is over its limit of {} evaluations per second",
                key.name, state.flags.config.rate_per_second
            ),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return Err(response);
    }
    Ok(key)
}

/// The request's `context`; the error is an OFREP error code and its details.
fn context(body: Result<Bytes, BytesRejection>) -> Result<EvaluationContext, (ErrorCode, String)> {
    let body = body.map_err(|e| {
        (
            ErrorCode::InvalidContext,
            format!("cannot read the request: {}", e.body_text()),
        )
    })?;
    if body.len() > MAX_BODY_BYTES {
        return Err((
            ErrorCode::InvalidContext,
            format!(
                "the request is {} bytes; the limit is {MAX_BODY_BYTES}",
                body.len()
            ),
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(EvaluationContext::empty());
    }
    let request: Value = serde_json::from_slice(&body).map_err(|e| {
        (
            ErrorCode::ParseError,
            format!("the request is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(mut request) = request else {
        return Err((
            ErrorCode::ParseError,
            "the request must be a JSON object: {\"context\": {...}}".into(),
        ));
    };
    let context = request.remove("context").unwrap_or(Value::Null);
    EvaluationContext::from_value_with_limits(context, &ContextLimits::default())
        .map_err(|e| (e.code(), e.to_string()))
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `POST /ofrep/v1/evaluate/flags/{key}`.
pub async fn evaluate_flag(
    State(state): State<AppState>,
    Path(flag): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let key = match authenticate(&state, &headers) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    let live = key.environment.live();
    let evaluation = match (context(body), &live) {
        (Err((code, details)), _) => {
            let failure = Item::Failure {
                key: &flag,
                error_code: code.as_str(),
                error_details: &details,
            };
            return json(StatusCode::BAD_REQUEST, &failure);
        }
        (Ok(context), Some(live)) => {
            let now = now_unix();
            live.mark_evaluated(&flag, now);
            live.set.evaluate(&flag, &context, now)
        }
        (Ok(_), None) => {
            let details = format!("flag '{flag}' does not exist");
            let failure = Item::Failure {
                key: &flag,
                error_code: ErrorCode::FlagNotFound.as_str(),
                error_details: &details,
            };
            return json(StatusCode::NOT_FOUND, &failure);
        }
    };
    let status = match evaluation.error_code() {
        None => StatusCode::OK,
        Some(ErrorCode::FlagNotFound) => StatusCode::NOT_FOUND,
        Some(_) => StatusCode::BAD_REQUEST,
    };
    json(status, &item(&evaluation))
}

/// `POST /ofrep/v1/evaluate/flags`: every flag, errors inline; `ETag` over the flag
/// configuration and the context, `If-None-Match` → 304.
pub async fn evaluate_flags(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    #[derive(Serialize)]
    struct Bulk<'a> {
        flags: Vec<Item<'a>>,
    }
    #[derive(Serialize)]
    struct BulkFailure {
        #[serde(rename = "errorCode")]
        error_code: &'static str,
        #[serde(rename = "errorDetails")]
        error_details: String,
    }
    let key = match authenticate(&state, &headers) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    let context = match context(body) {
        Ok(context) => context,
        Err((code, details)) => {
            let failure = BulkFailure {
                error_code: code.as_str(),
                error_details: details,
            };
            return json(StatusCode::BAD_REQUEST, &failure);
        }
    };
    let live = key.environment.live();
    let etag = etag(live.as_ref().map_or(&[0; 32], |l| &l.digest), &context);
    if not_modified(&headers, &etag) {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response.headers_mut().insert(header::ETAG, etag);
        return response;
    }
    let now = now_unix();
    let evaluations = live
        .as_ref()
        .map(|l| {
            l.mark_all_evaluated(now);
            l.set.evaluate_all(&context, now)
        })
        .unwrap_or_default();
    let mut response = json(
        StatusCode::OK,
        &Bulk {
            flags: evaluations.iter().map(item).collect(),
        },
    );
    response.headers_mut().insert(header::ETAG, etag);
    response
}

/// A strong ETag over the configuration digest and the context as evaluated: a changed
/// context never matches an old tag.
fn etag(config: &[u8; 32], context: &EvaluationContext) -> HeaderValue {
    let mut h = Sha256::new();
    h.update(config);
    h.update(context.as_json().to_string().as_bytes());
    let digest = h.finalize();
    HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..16])))
        .expect("hex is a valid header value")
}

fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else { return false };
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// `GET /ofrep/v1/configuration`: what providers may rely on.
pub async fn configuration(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(response) = authenticate(&state, &headers) {
        return *response;
    }
    json(
        StatusCode::OK,
        &serde_json::json!({
            "name": "Conveyor",
            "capabilities": {
                "cacheInvalidation": { "polling": { "enabled": true, "minPollingIntervalMs": 1000 } },
                "flagEvaluation": { "supportedTypes": ["int", "float", "string", "boolean", "object"] }
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_cover_the_context_and_if_none_match_lists() {
        let a = EvaluationContext::from_value(serde_json::json!({"targetingKey": "a"})).unwrap();
        let b = EvaluationContext::from_value(serde_json::json!({"targetingKey": "b"})).unwrap();
        let config = [7; 32];
        let (ea, eb) = (etag(&config, &a), etag(&config, &b));
        assert_ne!(ea, eb);
        assert_ne!(ea, etag(&[8; 32], &a));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", W/{}", ea.to_str().unwrap())).unwrap(),
        );
        assert!(not_modified(&headers, &ea));
        assert!(!not_modified(&headers, &eb));
    }

    #[test]
    fn request_bodies() {
        let ok = |text: &str| context(Ok(Bytes::from(text.to_string())));
        assert_eq!(ok("").unwrap(), EvaluationContext::empty());
        assert_eq!(ok("{}").unwrap(), EvaluationContext::empty());
        assert_eq!(
            ok(r#"{"context": {"targetingKey": "u"}}"#)
                .unwrap()
                .targeting_key(),
            Some("u")
        );
        assert_eq!(ok("{").unwrap_err().0, ErrorCode::ParseError);
        assert_eq!(ok("[]").unwrap_err().0, ErrorCode::ParseError);
        assert_eq!(ok(r#"{"context": 3}"#).unwrap_err().0, ErrorCode::InvalidContext);
        let big = format!(r#"{{"context": {{"x": "{}"}}}}"#, "a".repeat(MAX_BODY_BYTES));
        assert_eq!(ok(&big).unwrap_err().0, ErrorCode::InvalidContext);
    }
}
