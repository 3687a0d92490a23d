//! DORA's four keys from the deployments read model: what went out, what failed, how long from
//! commit to production and back to health.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use conveyor_store::DeploymentStatus;

use crate::{Delivery, DeliveryError};

impl Delivery {
    /// DORA's four keys for deployments into `environment` (of `project`, or of every project)
    /// that finished within `window` before now.
    pub async fn dora(
        &self,
        project: Option<&str>,
        environment: &str,
        window: Duration,
    ) -> Result<conveyor_analysis::dora::Report, DeliveryError> {
        use conveyor_analysis::dora::{Deployment, Outcome};
        let store = self.engine.store();
        let mut records = Vec::new();
        let mut commit_times: HashMap<i64, Option<DateTime<Utc>>> = HashMap::new();
        for d in store.deployments(project, Some(environment), 100_000).await? {
            let Some(finished) = d.finished_at else {
                continue;
            };
            let outcome = match (d.status, d.phase_index) {
                (DeploymentStatus::Succeeded, _) => Outcome::Succeeded,
                (_, Some(_)) => Outcome::Failed,
                _ => Outcome::NotStarted,
            };
            let committed = match commit_times.get(&d.release_id) {
                Some(known) => *known,
                None => {
                    let run = match store.release(d.release_id).await? {
                        Some(release) => store.run(release.run_id).await?,
                        None => None,
                    };
                    let time = run.and_then(|r| r.committed_at);
                    commit_times.insert(d.release_id, time);
                    time
                }
            };
            records.push(Deployment {
                id: d.id,
                outcome,
                started: d.created_at,
                finished,
                committed,
                rollback_of: d.rollback_of,
                fixed_by: d.fixed_by,
            });
        }
        Ok(conveyor_analysis::dora::report(
            &records,
            chrono::Utc::now(),
            window,
        ))
    }
}
