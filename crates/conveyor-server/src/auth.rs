//! Bearer tokens: only their SHA-256 is stored; every mutating endpoint requires one.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest as _, Sha256};

use crate::{ApiError, AppState};

/// Who made an authenticated request: its token's name. The first token is `admin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity(pub String);

pub const ADMIN: &str = "admin";

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random token, `cvy_` + 64 hex digits.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("cvy_{}", hex::encode(bytes)))
}

pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    let Some(name) = state.engine.store().token_name(&token_hash(token)).await? else {
        return Err(ApiError::Unauthorized);
    };
    let mut request = request;
    request.extensions_mut().insert(Identity(name));
    Ok(next.run(request).await)
}
