//! Reads of users, their grants and their tokens.

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use crate::backend::{Row, time};
use crate::db::{Store, StoreError};
use crate::query::status;

pub use conveyor_api::{Grant, TokenInfo, User};

/// Who a token belongs to, as the server checks it on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub token: String,
    pub user: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The user still exists (removing a user revokes their tokens, but say it twice).
    pub user_exists: bool,
}

/// '' in a grant's key is "every project" / "every environment".
fn scope(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn grant_from_row(row: &Row) -> Result<Grant, StoreError> {
    Ok(Grant {
        role: status(row, "role")?,
        project: scope(row.try_get("project")?),
        environment: scope(row.try_get("environment")?),
    })
}

/// A `name, kind, email, created_at` row of `users`, its grants still to be read.
fn user_from_row(row: &Row) -> Result<User, StoreError> {
    Ok(User {
        name: row.try_get("name")?,
        kind: status(row, "kind")?,
        email: row.try_get("email")?,
        grants: Vec::new(),
        created_at: time(row, "created_at")?,
    })
}

fn token_from_row(row: &Row) -> Result<TokenInfo, StoreError> {
    Ok(TokenInfo {
        name: row.try_get("name")?,
        user: row.try_get("user_name")?,
        created_at: time(row, "created_at")?,
        expires_at: time(row, "expires_at")?,
        revoked_at: time(row, "revoked_at")?,
    })
}

const TOKEN_COLUMNS: &str = "name, user_name, created_at, expires_at, revoked_at";

impl Store {
    /// The token with this hash and its user.
    pub async fn token_owner(&self, hash: &str) -> Result<Option<TokenOwner>, StoreError> {
        let row = sqlx::query(
            "SELECT t.name, t.user_name, t.expires_at, t.revoked_at, u.name AS known
             FROM tokens t LEFT JOIN users u ON u.name = t.user_name WHERE t.hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(TokenOwner {
                token: row.try_get("name")?,
                user: row.try_get("user_name")?,
                expires_at: time(&row, "expires_at")?,
                revoked_at: time(&row, "revoked_at")?,
                user_exists: row.try_get::<Option<String>, _>("known")?.is_some(),
            })
        })
        .transpose()
    }

    pub async fn has_tokens(&self) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 FROM tokens LIMIT 1")
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// A user's grants, broadest scope first.
    pub async fn grants(&self, user: &str) -> Result<Vec<Grant>, StoreError> {
        let rows = sqlx::query(
            "SELECT project, environment, role FROM user_grants WHERE user_name = $1 ORDER BY project, environment",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(grant_from_row).collect()
    }

    /// Every user with their grants, by name.
    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query("SELECT name, kind, email, created_at FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        let grants = sqlx::query(
            "SELECT user_name, project, environment, role FROM user_grants ORDER BY user_name, project, environment",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut users = rows
            .iter()
            .map(user_from_row)
            .collect::<Result<Vec<_>, StoreError>>()?;
        for row in &grants {
            let name: String = row.try_get("user_name")?;
            if let Ok(i) = users.binary_search_by(|u| u.name.cmp(&name)) {
                users[i].grants.push(grant_from_row(row)?);
            }
        }
        Ok(users)
    }

    pub async fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT name, kind, email, created_at FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        let Some(mut user) = row.as_ref().map(user_from_row).transpose()? else {
            return Ok(None);
        };
        user.grants = self.grants(name).await?;
        Ok(Some(user))
    }

    /// The user whose email this is (commit authors are matched by email).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT name FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Tokens (all, or one user's), by name; never their hashes.
    pub async fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE $1 IS NULL OR user_name = $1 ORDER BY name"
        ))
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    pub async fn token(&self, name: &str) -> Result<Option<TokenInfo>, StoreError> {
        let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }
}
