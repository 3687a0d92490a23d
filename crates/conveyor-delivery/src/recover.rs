//! After a restart: routers first, then the stable versions, then the interrupted deployments.

use std::collections::BTreeSet;
use std::sync::Arc;

use conveyor_deploy::RecordedInstance;
use conveyor_engine::EngineError;
use conveyor_store::{DeploymentStatus, DeploymentView};

use crate::environment::{Active, EnvironmentError, Live, SavedRouter};
use crate::instances::{self, SpecError, version_name};
use crate::rollout::finish;
use crate::{Delivery, DeliveryError};

/// After a restart: every environment's router serves its last config first; the stable
/// version's instances, which outlived the server, are adopted (or replaced if they died);
/// instances of any other version are stopped; interrupted deployments are recorded as failed —
/// traffic is already on the stable version — and gated ones wait again.
pub(crate) async fn recover(delivery: &Arc<Delivery>) -> Result<(), EngineError> {
    let store = delivery.engine.store();
    let history = store.deployments(None, None, 100_000).await?;
    let environments: BTreeSet<(String, String)> = history
        .iter()
        .map(|d| (d.project.clone(), d.environment.clone()))
        .collect();
    for (project, environment) in &environments {
        let live = delivery.live(project, environment);
        if let Ok(bytes) = std::fs::read(&live.router_file)
            && let Ok(saved) = serde_json::from_slice::<SavedRouter>(&bytes)
            && let Err(error) = live.start_router(saved.config, saved.listen).await
        {
            tracing::error!(%project, %environment, %error, "cannot restart the router");
        }
    }
    for (project, environment) in &environments {
        let live = delivery.live(project, environment);
        let ours: Vec<&DeploymentView> = history
            .iter()
            .filter(|d| &d.project == project && &d.environment == environment)
            .collect();
        let stable = store.current_release(project, environment).await?;
        if let Some(release_id) = stable
            && let Err(error) = readopt(delivery, &live, &ours, release_id).await
        {
            tracing::error!(%project, %environment, release = release_id, %error, "cannot bring the stable version back");
        }
        let stable_version = stable.map(version_name);
        let others: BTreeSet<&String> = ours
            .iter()
            .flat_map(|d| d.instances.keys())
            .filter(|v| Some(*v) != stable_version.as_ref())
            .collect();
        for version in others {
            let killed = delivery
                .target
                .reap(&instances::identity(delivery, project, environment, version));
            if killed > 0 {
                tracing::info!(%project, %environment, %version, killed, "stopped instances left by a restart");
            }
        }
    }
    for d in store.unfinished_deployments().await? {
        if d.phase_index.is_none() && d.rollback_of.is_none() {
            delivery.spawn(d.id);
            continue;
        }
        let back = store
            .current_release(&d.project, &d.environment)
            .await?
            .map(version_name);
        let reason = match back {
            Some(v) => format!("interrupted by a restart of the server; traffic is on {v}"),
            None => "interrupted by a restart of the server".to_string(),
        };
        finish(delivery, d.id, DeploymentStatus::Failed, Some(reason)).await?;
    }
    Ok(())
}

/// Why the stable version could not be brought back.
#[derive(Debug, thiserror::Error)]
enum ReadoptError {
    #[error("no instances of {0} were recorded")]
    NothingRecorded(String),
    #[error(transparent)]
    Context(#[from] DeliveryError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Target(#[from] conveyor_deploy::DeployError),
    #[error(transparent)]
    Route(#[from] EnvironmentError),
}

/// Brings back the instances of `release_id` through the target (adopted as they are when they
/// are all still there, started afresh otherwise), then routes all traffic to them.
async fn readopt(
    delivery: &Arc<Delivery>,
    live: &Arc<Live>,
    history: &[&DeploymentView],
    release_id: i64,
) -> Result<(), ReadoptError> {
    let version = version_name(release_id);
    // The newest deployment that started instances of this version.
    let Some(started) = history
        .iter()
        .find(|d| d.instances.get(&version).is_some_and(|i| !i.is_empty()))
    else {
        return Err(ReadoptError::NothingRecorded(version));
    };
    let cx = delivery.context(release_id, &live.name).await?;
    let spec = instances::version_spec(delivery, &cx, started.id, &version).await?;
    let recorded = started.instances[&version]
        .iter()
        .map(|i| RecordedInstance {
            addr: i.addr,
            id: i.id.clone(),
        })
        .collect();
    let running = delivery.target.recover(spec, recorded).await?;
    let adopted = running.status().iter().filter(|s| s.restarts == 0).count();
    tracing::info!(project = %live.project, environment = %live.name, %version, adopted, "stable version is back");
    live.set_stable(Active {
        release_id,
        version,
        running,
    });
    Ok(live.route(0, &cx.environment).await?)
}
