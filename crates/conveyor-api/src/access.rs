//! Users, their roles and their tokens: who may do what.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::status::{Role, UserKind};

/// A role on every project (`project` absent), one project, or one environment of a project.
/// A grant on one environment gives its role's powers there and read access to the project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Grant {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub name: String,
    pub kind: UserKind,
    /// Commits authored with this email are this user's (for not-author approval rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub grants: Vec<Grant>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserList {
    pub users: Vec<User>,
}

/// `POST /api/v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// 1-64 letters, digits, `-`, `_`, `.`, `@`.
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    /// `person` (default) or `automation`.
    #[serde(default)]
    pub kind: Option<UserKind>,
}

/// `PUT /api/v1/users/{name}/roles`: grants `role` (replacing the user's role on that scope);
/// `DELETE` with the same scope in the query takes it away.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRole {
    pub role: Role,
    /// Absent: every project (admins only).
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub environment: Option<String>,
}

/// The scope of a grant to take away.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GrantScope {
    pub project: Option<String>,
    pub environment: Option<String>,
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// The token's own name (unique): what audit events and `token list` show.
    pub name: String,
    /// Whose powers it carries; absent: the caller's own.
    #[serde(default)]
    pub user: Option<String>,
    /// 1-3650 days; default 90.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
    /// Or an exact time, within the next 3650 days (not with `expires_in_days`).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new token, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    pub name: String,
    pub user: String,
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A token as listed: never its value nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub name: String,
    pub user: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenRevoked {
    pub name: String,
    pub revoked: bool,
}

/// `GET /api/v1/whoami`: the caller as the server sees them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    pub user: String,
    /// The token used (absent for anonymous read access).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub grants: Vec<Grant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}
