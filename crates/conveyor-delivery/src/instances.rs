//! A version's instances as the target sees them: their name, where their files are laid out,
//! the environment they run with, and the marker that tells them apart after a restart.

use std::collections::BTreeMap;
use std::path::PathBuf;

use conveyor_deploy::{ReleaseFile, VersionSpec};
use conveyor_engine::command::{self, TemplateError};
use conveyor_spec::expr::Vocabulary;
use conveyor_store::StoreError;

use crate::{Context, Delivery};

/// Why a version's instances cannot be described.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpecError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what}: {error}")]
    Template { what: String, error: TemplateError },
}

/// The CAS as a target reads release files from it.
pub struct CasBlobs(pub conveyor_store::Cas);

impl conveyor_deploy::Blobs for CasBlobs {
    fn path(&self, digest: &str) -> Option<PathBuf> {
        self.0.path(digest).filter(|p| p.is_file())
    }
}

/// How the router and the markers name a release's version.
pub(crate) fn version_name(release_id: i64) -> String {
    format!("r{release_id}")
}

/// The target tags a version's instances with it, so a restarted server tells its instances from
/// others.
pub(crate) fn identity(delivery: &Delivery, project: &str, environment: &str, version: &str) -> String {
    // The data directory makes it unique to this server: two servers on one machine may well
    // both have a `shop/prod/r2`.
    let data = delivery.root.display();
    format!("{data}/{project}/{environment}/{version}")
}

/// Where deployment `deployment` has the release laid out: `<project>/<environment>/r<id>-d<n>`.
pub(crate) fn slot(cx: &Context, deployment: i64) -> String {
    format!(
        "{}/{}/{}-d{deployment}",
        cx.release.project,
        cx.environment.name,
        version_name(cx.release.id)
    )
}

/// Where deployment `deployment`'s hooks and checks run: the target's local copy of the
/// release when it keeps one, else a directory of their own.
pub(crate) fn release_dir(delivery: &Delivery, cx: &Context, deployment: i64) -> PathBuf {
    let slot = slot(cx, deployment);
    delivery
        .target
        .local_dir(&slot)
        .unwrap_or_else(|| delivery.root.join("hooks").join(slot))
}

/// The `${{ }}` vocabulary of a deployment of `cx`'s release.
fn vocabulary<'a>(cx: &'a Context, secrets: &'a BTreeMap<String, String>) -> Vocabulary<'a> {
    Vocabulary {
        project: &cx.release.project,
        branch: &cx.release.branch,
        sha: &cx.release.commit,
        run_id: cx.release.run_id,
        event: "deploy",
        job: "",
        secrets,
    }
}

/// The environment of the version's instances and commands (PATH and the like, `CONVEYOR_*`,
/// `release.env`, the environment's `env`, with `${{ }}` resolved) and the secret values to mask.
pub(crate) async fn environment_of(
    delivery: &Delivery,
    cx: &Context,
    version: &str,
) -> Result<(Vec<(String, String)>, Vec<String>), SpecError> {
    let secrets: BTreeMap<String, String> = delivery
        .engine
        .store()
        .secrets(&cx.release.project)
        .await?
        .into_iter()
        .collect();
    let env = command::environment(
        delivery.engine.base_env(),
        [
            ("CONVEYOR_PROJECT", cx.release.project.clone()),
            ("CONVEYOR_ENVIRONMENT", cx.environment.name.clone()),
            ("CONVEYOR_RELEASE", cx.release.id.to_string()),
            ("CONVEYOR_VERSION", version.to_string()),
            ("CONVEYOR_COMMIT_SHA", cx.release.commit.clone()),
        ],
        [&cx.spec.env, &cx.environment.env],
        &vocabulary(cx, &secrets),
    )
    .map_err(|error| SpecError::Template {
        what: "env".into(),
        error,
    })?;
    Ok((env.into_iter().collect(), secrets.into_values().collect()))
}

/// Describes the instances of `version` of `cx`'s release as deployment `deployment` runs them:
/// the target lays their files out from the digests. `version` is how the router and the
/// markers name it: `r<release>`, or `r<release>-baseline` for a fresh baseline.
pub(crate) async fn version_spec(
    delivery: &Delivery,
    cx: &Context,
    deployment: i64,
    version: &str,
) -> Result<VersionSpec, SpecError> {
    // No secrets on a command line: anyone who can list processes would read them.
    let command = command::fill(&vocabulary(cx, &BTreeMap::new()), &cx.spec.run).map_err(|error| {
        SpecError::Template {
            what: "release.run".into(),
            error,
        }
    })?;
    let (env, _) = environment_of(delivery, cx, version).await?;
    Ok(VersionSpec {
        version: version.to_string(),
        identity: identity(delivery, &cx.release.project, &cx.environment.name, version),
        slot: slot(cx, deployment),
        files: files(delivery, cx).await?,
        command,
        env,
        instances: cx.spec.instances,
        health: cx.spec.health.clone(),
        stop_signal: cx.spec.stop_signal,
        stop_grace: cx.spec.stop_grace,
    })
}

/// The release's files: the artifacts of `release.from`'s jobs, or all of them.
async fn files(delivery: &Delivery, cx: &Context) -> Result<Vec<ReleaseFile>, SpecError> {
    let artifacts = if cx.spec.from.is_empty() {
        cx.release.artifacts.clone()
    } else {
        let mut picked = Vec::new();
        for job in &cx.spec.from {
            picked.extend(
                delivery
                    .engine
                    .store()
                    .artifacts_of(cx.release.run_id, job)
                    .await?,
            );
        }
        picked
    };
    Ok(artifacts
        .into_iter()
        .map(|a| ReleaseFile {
            path: a.path,
            digest: a.digest,
        })
        .collect())
}
