//! Users, roles and tokens: `/api/v1/users`, `/api/v1/tokens`, `/api/v1/whoami`. Admins manage
//! users and every grant; a project's maintainers grant roles on their project and manage the
//! tokens of automation users that act only on projects they maintain; everyone manages their
//! own tokens.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{Duration, Utc};
use conveyor_api::{
    ErrorBody, GrantRole, GrantScope, NewToken, NewUser, Role, TokenCreated, TokenInfo, TokenList,
    TokenRevoked, User, UserKind, UserList, WhoAmI,
};
use conveyor_store::Event;

use crate::auth::{self, Action, Caller};
use crate::extract::{Body, Params, Q};
use crate::{ApiError, AppState};

type ApiResult<T> = Result<T, ApiError>;

/// Names the server uses for itself in the audit trail, which no user may take.
const RESERVED: [&str; 4] = ["anonymous", "auto", "server", "schedule"];
const DEFAULT_TOKEN_DAYS: u32 = 90;
const MAX_TOKEN_DAYS: u32 = 3650;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
        && !RESERVED.contains(&name)
}

fn name_error(what: &str, name: &str) -> ApiError {
    ApiError::InvalidRequest(format!(
        "{what} name '{name}' must be 1-64 letters, digits, '-', '_', '.', '@', and not one of {}",
        RESERVED.join(", ")
    ))
}

async fn find_user(state: &AppState, name: &str) -> ApiResult<User> {
    state
        .engine
        .store()
        .user(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user '{name}' does not exist")))
}

/// May `caller` manage `user`'s tokens? Their own, any as an admin, and an automation user's
/// when every grant it has is on a project the caller maintains.
fn manages(caller: &Caller, user: &User) -> bool {
    user.name == caller.user
        || caller.may(Action::Administer, None, None)
        || (user.kind == UserKind::Automation
            && !user.grants.is_empty()
            && user.grants.iter().all(|g| {
                g.project
                    .as_deref()
                    .is_some_and(|p| caller.may(Action::Manage, Some(p), None))
            }))
}

/// Who the caller is and what they may do.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "auth",
    responses((status = 200, description = "The caller", body = WhoAmI)))]
pub async fn whoami(Extension(caller): Extension<Caller>) -> Json<WhoAmI> {
    Json(WhoAmI {
        user: caller.user,
        token: caller.token,
        grants: caller.grants,
        expires_at: caller.expires_at,
    })
}

/// Every user with their grants (admins).
#[utoipa::path(get, path = "/api/v1/users", tag = "auth",
    responses((status = 200, description = "Users, by name", body = UserList)))]
pub async fn list_users(State(state): State<AppState>) -> ApiResult<Json<UserList>> {
    Ok(Json(UserList {
        users: state.engine.store().users().await?,
    }))
}

/// A new user, without any role yet (admins).
#[utoipa::path(post, path = "/api/v1/users", tag = "auth", request_body = NewUser,
    responses((status = 201, description = "Added", body = User),
        (status = 409, description = "The name or email is taken", body = ErrorBody)))]
pub async fn add_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(body): Body<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    if !valid_name(&body.name) {
        return Err(name_error("user", &body.name));
    }
    let email = body.email.map(|e| e.trim().to_ascii_lowercase());
    if let Some(email) = &email {
        let plausible = email.len() <= 254
            && email
                .split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
            && !email.chars().any(char::is_whitespace);
        if !plausible {
            return Err(ApiError::InvalidRequest(format!(
                "'{email}' is not an email address"
            )));
        }
    }
    let store = state.engine.store();
    if store.user(&body.name).await?.is_some() {
        return Err(ApiError::Conflict(format!("user '{}' already exists", body.name)));
    }
    if let Some(email) = &email
        && let Some(owner) = store.user_by_email(email).await?
    {
        return Err(ApiError::Conflict(format!("{email} is already user '{owner}''s")));
    }
    state
        .engine
        .events()
        .append(Event::UserAdded {
            user: body.name.clone(),
            kind: body.kind.unwrap_or(UserKind::Person),
            email,
            by: caller.user,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(find_user(&state, &body.name).await?)))
}

/// Removes a user: their grants go, their tokens are revoked (admins).
#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "auth", params(("name" = String, Path)),
    responses((status = 204, description = "Removed"),
        (status = 409, description = "The caller itself", body = ErrorBody)))]
pub async fn remove_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Params(name): Params<String>,
) -> ApiResult<StatusCode> {
    find_user(&state, &name).await?;
    if name == caller.user {
        return Err(ApiError::Conflict("a user cannot remove themselves".into()));
    }
    state
        .engine
        .events()
        .append(Event::UserRemoved {
            user: name,
            by: caller.user,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Checks that `caller` may grant or take away a role on this scope: every project needs an
/// admin, a project (or one of its environments) a maintainer of it.
async fn check_grant_scope(
    state: &AppState,
    caller: &Caller,
    project: Option<&str>,
    environment: Option<&str>,
) -> ApiResult<()> {
    match project {
        None if environment.is_some() => Err(ApiError::InvalidRequest(
            "an environment is granted within a project: give 'project' too".into(),
        )),
        None => caller.require(Action::Administer, None, None),
        Some(project) => {
            state
                .engine
                .store()
                .project(project)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("project '{project}' does not exist")))?;
            caller.require(Action::Manage, Some(project), None)
        }
    }
}

/// Gives a user a role on every project, a project, or one environment of a project (replacing
/// the role they had on exactly that scope).
#[utoipa::path(put, path = "/api/v1/users/{name}/roles", tag = "auth", params(("name" = String, Path)),
    request_body = GrantRole,
    responses((status = 200, description = "The user with the grant", body = User),
        (status = 403, description = "Not an admin (every project) or maintainer (of the project)", body = ErrorBody)))]
pub async fn grant_role(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Params(name): Params<String>,
    Body(body): Body<GrantRole>,
) -> ApiResult<Json<User>> {
    find_user(&state, &name).await?;
    check_grant_scope(
        &state,
        &caller,
        body.project.as_deref(),
        body.environment.as_deref(),
    )
    .await?;
    if body.role == Role::Admin && body.project.is_some() {
        return Err(ApiError::InvalidRequest(
            "'admin' is a role on every project: leave out 'project'".into(),
        ));
    }
    if let Some(environment) = &body.environment
        && !crate::api::valid_name(environment)
    {
        return Err(ApiError::InvalidRequest(format!(
            "'{environment}' is not an environment name"
        )));
    }
    state
        .engine
        .events()
        .append(Event::RoleGranted {
            user: name.clone(),
            role: body.role,
            project: body.project,
            environment: body.environment,
            by: caller.user,
        })
        .await?;
    Ok(Json(find_user(&state, &name).await?))
}

/// Takes away the user's role on exactly the scope in the query.
#[utoipa::path(delete, path = "/api/v1/users/{name}/roles", tag = "auth", params(("name" = String, Path), GrantScope),
    responses((status = 200, description = "The user without the grant", body = User),
        (status = 403, description = "Not an admin (every project) or maintainer (of the project)", body = ErrorBody)))]
pub async fn revoke_role(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Params(name): Params<String>,
    Q(scope): Q<GrantScope>,
) -> ApiResult<Json<User>> {
    let user = find_user(&state, &name).await?;
    check_grant_scope(
        &state,
        &caller,
        scope.project.as_deref(),
        scope.environment.as_deref(),
    )
    .await?;
    if !user
        .grants
        .iter()
        .any(|g| g.project == scope.project && g.environment == scope.environment)
    {
        return Err(ApiError::NotFound(format!(
            "user '{name}' has no role on that scope"
        )));
    }
    if name == caller.user && scope.project.is_none() {
        return Err(ApiError::Conflict(
            "a user cannot take away their own role on every project".into(),
        ));
    }
    state
        .engine
        .events()
        .append(Event::RoleRevoked {
            user: name.clone(),
            project: scope.project,
            environment: scope.environment,
            by: caller.user,
        })
        .await?;
    Ok(Json(find_user(&state, &name).await?))
}

/// The caller's tokens (an admin's: everyone's); never their values.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "auth",
    responses((status = 200, description = "Tokens, by name", body = TokenList)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<TokenList>> {
    let all = caller.may(Action::Administer, None, None);
    let tokens = state
        .engine
        .store()
        .tokens((!all).then_some(caller.user.as_str()))
        .await?;
    Ok(Json(TokenList { tokens }))
}

/// A new token for the caller (or, for admins and the maintainers of its projects, for an
/// automation user); shown once.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "auth", request_body = NewToken,
    responses((status = 201, description = "The token, shown once", body = TokenCreated),
        (status = 403, description = "Not allowed to make tokens for that user", body = ErrorBody),
        (status = 409, description = "A token of that name exists", body = ErrorBody)))]
pub async fn create_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(body): Body<NewToken>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    if caller.token.is_none() {
        return Err(ApiError::Unauthorized);
    }
    if !valid_name(&body.name) {
        return Err(name_error("token", &body.name));
    }
    let now = Utc::now();
    let longest = now + Duration::days(i64::from(MAX_TOKEN_DAYS));
    let expires_at = match (body.expires_in_days, body.expires_at) {
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidRequest(
                "give expires_in_days or expires_at, not both".into(),
            ));
        }
        (None, Some(at)) if at <= now || at > longest => {
            return Err(ApiError::InvalidRequest(format!(
                "expires_at must be in the next {MAX_TOKEN_DAYS} days"
            )));
        }
        (None, Some(at)) => at,
        (days, None) => {
            let days = days.unwrap_or(DEFAULT_TOKEN_DAYS);
            if !(1..=MAX_TOKEN_DAYS).contains(&days) {
                return Err(ApiError::InvalidRequest(format!(
                    "expires_in_days must be between 1 and {MAX_TOKEN_DAYS}"
                )));
            }
            now + Duration::days(i64::from(days))
        }
    };
    let user = find_user(&state, body.user.as_deref().unwrap_or(&caller.user)).await?;
    if !manages(&caller, &user) {
        return Err(ApiError::Forbidden(format!(
            "{} may not make tokens for '{}'",
            caller.user, user.name
        )));
    }
    if state.engine.store().token(&body.name).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "a token named '{}' exists",
            body.name
        )));
    }
    issue(&state, &caller, &body.name, &user.name, Some(expires_at)).await
}

async fn issue(
    state: &AppState,
    caller: &Caller,
    name: &str,
    user: &str,
    expires_at: Option<chrono::DateTime<Utc>>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    let token = auth::new_token().map_err(|e| ApiError::Internal(e.to_string()))?;
    state
        .engine
        .events()
        .append(Event::TokenCreated {
            name: name.to_string(),
            hash: auth::token_hash(&token),
            user: Some(user.to_string()),
            expires_at: expires_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            by: Some(caller.user.clone()),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            name: name.to_string(),
            user: user.to_string(),
            token,
            expires_at,
        }),
    ))
}

/// The token named in the path, if the caller manages its user.
async fn managed_token(state: &AppState, caller: &Caller, name: &str) -> ApiResult<TokenInfo> {
    let token = state
        .engine
        .store()
        .token(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("token '{name}' does not exist")))?;
    let allowed = match state.engine.store().user(&token.user).await? {
        Some(user) => manages(caller, &user),
        None => caller.may(Action::Administer, None, None),
    };
    if !allowed {
        return Err(ApiError::Forbidden(format!(
            "{} may not manage the tokens of '{}'",
            caller.user, token.user
        )));
    }
    Ok(token)
}

/// Revokes a token: it is refused from now on.
#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "auth", params(("name" = String, Path)),
    responses((status = 200, description = "Revoked (or already was)", body = TokenRevoked)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Params(name): Params<String>,
) -> ApiResult<Json<TokenRevoked>> {
    let token = managed_token(&state, &caller, &name).await?;
    if token.revoked_at.is_none() {
        state
            .engine
            .events()
            .append(Event::TokenRevoked {
                name: name.clone(),
                by: caller.user,
            })
            .await?;
    }
    Ok(Json(TokenRevoked { name, revoked: true }))
}

/// A new value for a token (the old one is refused from now on), with as long a life as it had;
/// the admin's bootstrap token is rotated this way.
#[utoipa::path(post, path = "/api/v1/tokens/{name}/rotate", tag = "auth", params(("name" = String, Path)),
    responses((status = 201, description = "The new value, shown once", body = TokenCreated),
        (status = 409, description = "The token was revoked", body = ErrorBody)))]
pub async fn rotate_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Params(name): Params<String>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    let token = managed_token(&state, &caller, &name).await?;
    if token.revoked_at.is_some() {
        return Err(ApiError::Conflict(format!(
            "token '{name}' was revoked: make a new one"
        )));
    }
    let expires_at = token.expires_at.map(|at| Utc::now() + (at - token.created_at));
    issue(&state, &caller, &name, &token.user, expires_at).await
}
