//! Client commands: talk to a Conveyor server's API and print the answers for people. Here the
//! HTTP client itself (requests, the token, `ApiError` for refusals); the commands by area in
//! `runs` (projects, runs, logs, releases, audit, secrets), `delivery` (deployments,
//! environments, analysis, DORA), `access` (users, roles, tokens) and `flags`.

mod access;
pub use access::parse_freeze;
mod delivery;
mod flags;
mod runs;

use anyhow::{Context as _, bail};
use conveyor_api::{ErrorBody, ProjectList};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use flags::{FlagChange, parse_rollout};

/// The server refused a request, with the `ErrorBody` it answered with (if it sent one).
#[derive(Debug)]
pub struct ApiError {
    /// The request's path and query.
    pub path: String,
    pub status: reqwest::StatusCode,
    pub body: Option<ErrorBody>,
}

impl ApiError {
    /// The server's sentence for people.
    pub fn message(&self) -> &str {
        self.body.as_ref().map_or("no message", |b| b.message.as_str())
    }
}

/// `code (status): message`, then the details and what to do about a missing token.
impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = self.body.as_ref().map_or("error", |b| b.code.as_str());
        write!(f, "{code} ({}): {}", self.status, self.message())?;
        let details = self.body.as_ref().and_then(|b| b.details.as_ref());
        if let Some(path) = details.and_then(|d| d.path.as_deref()).filter(|p| !p.is_empty()) {
            write!(f, "\n  at {path}")?;
        }
        for e in details.and_then(|d| d.errors.as_deref()).unwrap_or_default() {
            write!(f, "\n  {e}")?;
        }
        if self.status == reqwest::StatusCode::UNAUTHORIZED {
            f.write_str("\n  (set CONVEYOR_TOKEN or pass --token)")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> anyhow::Result<Self> {
        let base = server.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("--server must be an http:// or https:// URL, not '{server}'");
        }
        Ok(Client {
            base,
            token,
            http: reqwest::Client::new(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let url = response.url();
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        };
        let status = response.status();
        let body: Option<ErrorBody> = response.json().await.ok();
        Err(ApiError { path, status, body }.into())
    }

    /// A response body, read as the API type it is documented to be.
    async fn read<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let response = self.send(request).await?;
        let url = response.url().path().to_string();
        response
            .json()
            .await
            .with_context(|| format!("the server sent a malformed answer to {url}"))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.read(self.http.get(self.url(path))).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: impl Serialize) -> anyhow::Result<T> {
        self.read(self.http.post(self.url(path)).json(&body)).await
    }

    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: impl Serialize) -> anyhow::Result<T> {
        self.read(self.http.put(self.url(path)).json(&body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.read(self.http.delete(self.url(path))).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<T> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.read(request).await
    }

    /// The project to use: the given one, or the only one the server has.
    async fn project_or_only(&self, project: Option<String>) -> anyhow::Result<String> {
        if let Some(p) = project {
            return Ok(p);
        }
        let body: ProjectList = self.get("/api/v1/projects").await?;
        let names: Vec<&str> = body.projects.iter().map(|p| p.name.as_str()).collect();
        match names.as_slice() {
            [only] => Ok(only.to_string()),
            [] => bail!("the server has no project"),
            _ => bail!(
                "say which project with --project (the server has: {})",
                names.join(", ")
            ),
        }
    }
}

/// A time as the API's text (RFC 3339, UTC, milliseconds).
fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
