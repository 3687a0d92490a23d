//! The one API error table: code → HTTP status → JSON `{code, message}` (`conveyor_api::ErrorBody`).
//! Handlers, the extractors' rejections and the router's fallbacks return `ApiError`; nothing
//! else builds error responses (OFREP's protocol bodies aside).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use conveyor_api::{ErrorBody, ErrorDetails};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidRequest(String),
    /// The pipeline file is invalid; each entry is one `file:line:col: message`.
    #[error("conveyor.yml is invalid")]
    PipelineInvalid(Vec<String>),
    /// A flag definition was refused; `path` is the JSON path of the mistake.
    #[error("the flag definition is invalid: {0}")]
    FlagsInvalid(conveyor_flags::DefinitionError),
    #[error("{0}")]
    Conflict(String),
    /// The path exists, not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Authenticated, but not allowed (e.g. four-eyes approval).
    #[error("{0}")]
    Forbidden(String),
    /// Fetching or reading the project's repository failed.
    #[error("{0}")]
    Source(String),
    /// The `Host` header names a server this is not (DNS rebinding).
    #[error("{0}")]
    MisdirectedHost(String),
    /// Too many of something (failed authentications, open streams); try again after a while.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after: std::time::Duration,
    },
    /// The body is larger than the route takes.
    #[error("{0}")]
    TooLarge(String),
    /// The server could not answer in time.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The table.
    pub fn code_and_status(&self) -> (&'static str, StatusCode) {
        match self {
            ApiError::Unauthorized => ("unauthorized", StatusCode::UNAUTHORIZED),
            ApiError::NotFound(_) => ("not_found", StatusCode::NOT_FOUND),
            ApiError::InvalidRequest(_) => ("invalid_request", StatusCode::BAD_REQUEST),
            ApiError::PipelineInvalid(_) => ("pipeline_invalid", StatusCode::UNPROCESSABLE_ENTITY),
            ApiError::FlagsInvalid(_) => ("flags_invalid", StatusCode::UNPROCESSABLE_ENTITY),
            ApiError::Conflict(_) => ("conflict", StatusCode::CONFLICT),
            ApiError::MethodNotAllowed(_) => ("method_not_allowed", StatusCode::METHOD_NOT_ALLOWED),
            ApiError::Forbidden(_) => ("forbidden", StatusCode::FORBIDDEN),
            ApiError::Source(_) => ("source_unavailable", StatusCode::BAD_GATEWAY),
            ApiError::MisdirectedHost(_) => ("misdirected_host", StatusCode::MISDIRECTED_REQUEST),
            ApiError::TooManyRequests { .. } => ("too_many_requests", StatusCode::TOO_MANY_REQUESTS),
            ApiError::TooLarge(_) => ("too_large", StatusCode::PAYLOAD_TOO_LARGE),
            ApiError::Unavailable(_) => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
            ApiError::Internal(_) => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, status) = self.code_and_status();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error answering a request");
        }
        let details = match &self {
            ApiError::PipelineInvalid(errors) => Some(ErrorDetails {
                errors: Some(errors.clone()),
                ..ErrorDetails::default()
            }),
            ApiError::FlagsInvalid(error) => Some(ErrorDetails {
                path: Some(error.path.clone()),
                error: Some(error.message.clone()),
                ..ErrorDetails::default()
            }),
            _ => None,
        };
        let body = ErrorBody {
            code: code.to_string(),
            message: self.to_string(),
            details,
        };
        let mut response = (status, Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after, .. } = &self {
            let seconds = retry_after.as_secs().max(1).to_string();
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                seconds.parse().expect("digits are a header value"),
            );
        }
        response
    }
}

impl From<conveyor_store::StoreError> for ApiError {
    fn from(e: conveyor_store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<conveyor_engine::EngineError> for ApiError {
    fn from(e: conveyor_engine::EngineError) -> Self {
        use conveyor_engine::EngineError as E;
        match e {
            E::Pipeline(errors) => {
                ApiError::PipelineInvalid(errors.0.iter().map(ToString::to_string).collect())
            }
            E::Source(error) => ApiError::Source(error.to_string()),
            E::NoSuchRun(id) => ApiError::NotFound(format!("run {id} does not exist")),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<conveyor_delivery::DeliveryError> for ApiError {
    fn from(e: conveyor_delivery::DeliveryError) -> Self {
        use conveyor_delivery::Category;
        if let conveyor_delivery::DeliveryError::Internal(e) = e {
            return e.into();
        }
        let message = e.to_string();
        match e.category() {
            Category::NotFound => ApiError::NotFound(message),
            Category::Invalid => ApiError::InvalidRequest(message),
            Category::Refused => ApiError::Forbidden(message),
            Category::Conflict => ApiError::Conflict(message),
            Category::Internal => ApiError::Internal(message),
        }
    }
}

/// The extractors' rejections (malformed JSON, path or query; a body over its limit; no JSON
/// content type): a bad request (or one too large), said in axum's words.
macro_rules! rejections {
    ($($rejection:ident),+) => {$(
        impl From<axum::extract::rejection::$rejection> for ApiError {
            fn from(e: axum::extract::rejection::$rejection) -> Self {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge(e.body_text())
                } else {
                    ApiError::InvalidRequest(e.body_text())
                }
            }
        }
    )+};
}

rejections!(
    JsonRejection,
    PathRejection,
    QueryRejection,
    BytesRejection,
    StringRejection
);

impl From<crate::flags::FlagsError> for ApiError {
    fn from(e: crate::flags::FlagsError) -> Self {
        use crate::flags::FlagsError as E;
        match e {
            E::Invalid(error) => ApiError::FlagsInvalid(error),
            E::NotFound(m) => ApiError::NotFound(m),
            E::Request(m) => ApiError::InvalidRequest(m),
            E::Store(e) => e.into(),
        }
    }
}
