//! What the pages' forms do: each calls the API's own handler (so the same rules, checks and
//! audit trail apply) and goes back to the page it came from. A form that changes a deployment,
//! a run or who may do what is confirmed first — by the script, or without it by a page that
//! asks.

use axum::Extension;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use conveyor_api::{
    EnvironmentProtection, GrantRole, NewToken, NewUser, Promote, Resume, Rollback, TriggerRun,
};

use super::session::{Form, Session};
use super::{PageError, PageResult, chrome, html};
use crate::auth::{Caller, Scoped};
use crate::extract::{Body, Params};
use crate::{ApiError, AppState, access_api, api, delivery_api, flags_api};

/// A form as a page posted it, with who posted it: what every action reads.
pub struct Posted {
    caller: Caller,
    session: Session,
    form: Form,
    uri: Uri,
    headers: HeaderMap,
}

impl<S: Send + Sync> FromRequestParts<S> for Posted {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, PageError> {
        // `authorize_page` leaves these in every page request; missing is a mounting mistake.
        let missing = || PageError(ApiError::Internal("a page route without its middleware".into()));
        Ok(Posted {
            caller: parts.extensions.get::<Caller>().cloned().ok_or_else(missing)?,
            session: parts.extensions.get::<Session>().cloned().ok_or_else(missing)?,
            form: parts.extensions.get::<Form>().cloned().ok_or_else(missing)?,
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        })
    }
}

impl Posted {
    /// The confirmation page for a form posted without `confirmed=yes` (no script asked), or
    /// None.
    fn unconfirmed(&self, question: &str) -> Option<Response> {
        if self.form.get("confirmed") == Some("yes") {
            return None;
        }
        let fields: Vec<(String, String)> = self
            .form
            .0
            .iter()
            .filter(|(k, _)| k != conveyor_ui::CSRF_FIELD && k != "confirmed")
            .cloned()
            .collect();
        let chrome = chrome(&self.caller, &self.session, None);
        let markup = conveyor_ui::confirm(&chrome, question, self.uri.path(), &fields, "/");
        Some(html(StatusCode::OK, markup))
    }

    /// Back to the page the form was on (the `Referer`, when it is one of ours), else
    /// `fallback`, with what was done for its message.
    fn back(&self, fallback: &str, done: &str) -> Response {
        let host = self
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let page = self
            .headers
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.split_once("://"))
            .and_then(|(_, rest)| rest.strip_prefix(host))
            .filter(|path| path.starts_with('/') && !path.starts_with("//"))
            // Confirmed on the page that asked (no script): that page is this form's address.
            .filter(|path| path.split(['?', '#']).next() != Some(self.uri.path()))
            .map(|path| path.split('#').next().unwrap_or(path))
            .unwrap_or(fallback);
        let (path, query) = page.split_once('?').unwrap_or((page, ""));
        let mut kept: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("done="))
            .collect();
        let done = format!("done={done}");
        kept.push(&done);
        Redirect::to(&format!("{path}?{}", kept.join("&"))).into_response()
    }
}

pub async fn run(
    State(state): State<AppState>,
    posted: Posted,
    Params(project): Params<String>,
) -> PageResult {
    let commit = posted.form.text("commit");
    if let Some(commit) = &commit
        && let Some(ask) = posted.unconfirmed(&format!("Run commit {commit} again?"))
    {
        return Ok(ask);
    }
    let body = TriggerRun {
        branch: posted.form.text("branch"),
        commit,
    };
    let (_, axum::Json(started)) = api::trigger_run(State(state), Params(project), Some(Body(body))).await?;
    Ok(Redirect::to(&format!("/runs/{}", started.run_id)).into_response())
}

pub async fn cancel(State(state): State<AppState>, posted: Posted, Params(id): Params<i64>) -> PageResult {
    if let Some(ask) = posted.unconfirmed(&format!("Cancel run #{id}?")) {
        return Ok(ask);
    }
    let _ = api::cancel_run(State(state), Params(id)).await?;
    Ok(posted.back(&format!("/runs/{id}"), "cancelled"))
}

pub async fn promote(
    State(state): State<AppState>,
    posted: Posted,
    Extension(scoped): Extension<Scoped>,
    Params(id): Params<i64>,
) -> PageResult {
    let environment = posted
        .form
        .text("environment")
        .ok_or_else(|| ApiError::InvalidRequest("choose an environment to promote to".into()))?;
    // The environment is in the form: check it before asking anything.
    posted.caller.require(
        crate::auth::Action::Deploy,
        scoped.project.as_deref(),
        Some(&environment),
    )?;
    if let Some(ask) = posted.unconfirmed(&format!("Promote r{id} to {environment}?")) {
        return Ok(ask);
    }
    let (_, axum::Json(created)) = delivery_api::promote(
        State(state),
        Extension(posted.caller.clone()),
        Extension(scoped),
        Params(id),
        Body(Promote {
            environment,
            fixes: None,
        }),
    )
    .await?;
    Ok(Redirect::to(&format!("/deployments/{}", created.deployment_id)).into_response())
}

/// Approve, pause, resume or abort deployment `id`.
async fn steer(state: AppState, posted: Posted, id: i64, verb: &str) -> PageResult {
    let full = posted.form.get("full") == Some("true");
    let question = match verb {
        "approve" => format!("Approve deployment #{id}?"),
        "resume" if full => {
            format!("Skip the remaining steps of deployment #{id}: all traffic to the new version?")
        }
        other => format!("{}{} deployment #{id}?", other[..1].to_uppercase(), &other[1..]),
    };
    if let Some(ask) = posted.unconfirmed(&question) {
        return Ok(ask);
    }
    let caller = Extension(posted.caller.clone());
    let done = match verb {
        "approve" => {
            let _ = delivery_api::approve(State(state), caller, Params(id)).await?;
            "approved"
        }
        "pause" => {
            let _ = delivery_api::pause(State(state), caller, Params(id)).await?;
            "paused"
        }
        "resume" => {
            let _ =
                delivery_api::resume(State(state), caller, Params(id), Some(Body(Resume { full }))).await?;
            "resumed"
        }
        _ => {
            let _ = delivery_api::abort(State(state), caller, Params(id)).await?;
            "aborted"
        }
    };
    Ok(posted.back(&format!("/deployments/{id}"), done))
}

macro_rules! steering {
    ($($name:ident),+) => {$(
        pub async fn $name(State(state): State<AppState>, posted: Posted, Params(id): Params<i64>) -> PageResult {
            steer(state, posted, id, stringify!($name)).await
        }
    )+};
}
steering!(approve, pause, resume, abort);

pub async fn rollback(
    State(state): State<AppState>,
    posted: Posted,
    Params((project, environment)): Params<(String, String)>,
) -> PageResult {
    let to = match posted.form.text("to") {
        Some(to) => Some(
            to.trim_start_matches('r')
                .parse::<i64>()
                .map_err(|_| ApiError::InvalidRequest(format!("'{to}' is not a release")))?,
        ),
        None => None,
    };
    let target = to.map_or("the previous release".to_string(), |r| format!("r{r}"));
    if let Some(ask) = posted.unconfirmed(&format!("Roll {environment} back to {target}?")) {
        return Ok(ask);
    }
    let fallback = conveyor_ui::environment_path(&project, &environment);
    let _ = delivery_api::rollback(
        State(state),
        Extension(posted.caller.clone()),
        Params((project, environment)),
        Some(Body(Rollback { to })),
    )
    .await?;
    Ok(posted.back(&fallback, "rolled-back"))
}

pub async fn protect(
    State(state): State<AppState>,
    posted: Posted,
    Params((project, environment)): Params<(String, String)>,
) -> PageResult {
    let required_approvals = match posted.form.text("required_approvals") {
        Some(n) => n
            .parse()
            .map_err(|_| ApiError::InvalidRequest(format!("'{n}' approvals is not a number")))?,
        None => 0,
    };
    // Freeze windows are kept as they are: the form does not edit them.
    let freeze = state
        .engine
        .store()
        .protection(&project, &environment)
        .await?
        .map(|p| p.freeze)
        .unwrap_or_default();
    let rules = EnvironmentProtection {
        required_approvals,
        reviewers: posted
            .form
            .get("reviewers")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(String::from)
            .collect(),
        not_author: posted.form.get("not_author") == Some("true"),
        freeze,
        after: posted.form.text("after"),
    };
    let _ = delivery_api::protect(
        State(state),
        Extension(posted.caller.clone()),
        Params((project, environment)),
        Body(rules),
    )
    .await?;
    Ok(posted.back("/settings", "saved"))
}

pub async fn flags(
    State(state): State<AppState>,
    posted: Posted,
    Params((project, environment)): Params<(String, String)>,
) -> PageResult {
    let definition = posted.form.get("definition").unwrap_or("").to_string();
    let path = (project.clone(), environment.clone());
    // Someone else saved since this page was made: say so rather than overwrite their change.
    // The page again, the text as it was sent beside what is wrong with it.
    let refused = |status: StatusCode, problem: String| {
        let (state, posted, path, definition) = (&state, &posted, path.clone(), definition.clone());
        async move {
            let page = super::pages::flags_page(
                state,
                &posted.caller,
                &posted.session,
                path,
                Some((definition, problem)),
                None,
            )
            .await?;
            Ok(html(status, page))
        }
    };
    let current = flags_api::live(&state, &project, &environment)?.etag_hex();
    if posted.form.get("etag").is_some_and(|sent| sent != current) {
        let problem = "The flags changed since you opened this page: reload it, then make your change again.";
        return refused(StatusCode::CONFLICT, problem.to_string()).await;
    }
    let saved = flags_api::replace(
        State(state.clone()),
        Extension(posted.caller.clone()),
        Params(path.clone()),
        Ok(Bytes::from(definition.clone())),
    )
    .await;
    match saved {
        Ok(_) => Ok(Redirect::to(&format!(
            "{}/flags?done=saved",
            conveyor_ui::environment_path(&project, &environment)
        ))
        .into_response()),
        Err(error @ (ApiError::FlagsInvalid(_) | ApiError::InvalidRequest(_))) => {
            let (_, status) = error.code_and_status();
            let problem = match &error {
                ApiError::FlagsInvalid(e) => format!("{}: {}", e.path, e.message),
                other => other.to_string(),
            };
            refused(status, problem).await
        }
        Err(other) => Err(PageError(other)),
    }
}

pub async fn add_user(State(state): State<AppState>, posted: Posted) -> PageResult {
    let kind = match posted.form.text("kind") {
        Some(k) => Some(
            k.parse()
                .map_err(|e: conveyor_api::UnknownStatus| ApiError::InvalidRequest(e.to_string()))?,
        ),
        None => None,
    };
    let body = NewUser {
        name: posted.form.text("name").unwrap_or_default(),
        email: posted.form.text("email"),
        kind,
    };
    let _ = access_api::add_user(State(state), Extension(posted.caller.clone()), Body(body)).await?;
    Ok(posted.back("/settings", "added"))
}

pub async fn remove_user(
    State(state): State<AppState>,
    posted: Posted,
    Params(name): Params<String>,
) -> PageResult {
    if let Some(ask) = posted.unconfirmed(&format!("Remove user {name} and revoke their tokens?")) {
        return Ok(ask);
    }
    access_api::remove_user(State(state), Extension(posted.caller.clone()), Params(name)).await?;
    Ok(posted.back("/settings", "removed"))
}

pub async fn grant_role(State(state): State<AppState>, posted: Posted) -> PageResult {
    let user = posted.form.text("user").unwrap_or_default();
    let role = posted.form.text("role").unwrap_or_default();
    let body = GrantRole {
        role: role
            .parse()
            .map_err(|e: conveyor_api::UnknownStatus| ApiError::InvalidRequest(e.to_string()))?,
        project: posted.form.text("project"),
        environment: posted.form.text("environment"),
    };
    let _ = access_api::grant_role(
        State(state),
        Extension(posted.caller.clone()),
        Params(user),
        Body(body),
    )
    .await?;
    Ok(posted.back("/settings", "granted"))
}

pub async fn create_token(State(state): State<AppState>, posted: Posted) -> PageResult {
    let days = match posted.form.text("expires_in_days") {
        Some(d) => Some(
            d.parse()
                .map_err(|_| ApiError::InvalidRequest(format!("'{d}' days is not a number")))?,
        ),
        None => None,
    };
    let body = NewToken {
        name: posted.form.text("name").unwrap_or_default(),
        user: None,
        expires_in_days: days,
        expires_at: None,
    };
    let (_, axum::Json(made)) =
        access_api::create_token(State(state.clone()), Extension(posted.caller.clone()), Body(body)).await?;
    // Shown once, on this answer: never in a URL.
    let page = super::pages::settings_page(
        &state,
        &posted.caller,
        &posted.session,
        Some((made.name, made.token)),
        None,
    )
    .await?;
    Ok(html(StatusCode::CREATED, page))
}

pub async fn revoke_token(
    State(state): State<AppState>,
    posted: Posted,
    Params(name): Params<String>,
) -> PageResult {
    if let Some(ask) = posted.unconfirmed(&format!("Revoke token {name}?")) {
        return Ok(ask);
    }
    let _ = access_api::revoke_token(State(state), Extension(posted.caller.clone()), Params(name)).await?;
    Ok(posted.back("/settings", "revoked"))
}
