//! DORA's four keys from the deployments read model: what went out, what failed, how long from
//! commit to production and back to health.

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
        let mut reports = self.dora_at(project, environment, window, &[Utc::now()]).await?;
        Ok(reports.remove(0))
    }

    /// [`Delivery::dora`] for the windows ending at each of `ends` (a trend), from one read of
    /// the deployments.
    pub async fn dora_at(
        &self,
        project: Option<&str>,
        environment: &str,
        window: Duration,
        ends: &[DateTime<Utc>],
    ) -> Result<Vec<conveyor_analysis::dora::Report>, DeliveryError> {
        use conveyor_analysis::dora::{Deployment, Outcome};
        let records: Vec<Deployment> = self
            .engine
            .store()
            .deployment_outcomes(project, environment)
            .await?
            .into_iter()
            .map(|d| Deployment {
                id: d.id,
                outcome: match (d.status, d.phase_index) {
                    (DeploymentStatus::Succeeded, _) => Outcome::Succeeded,
                    (_, Some(_)) => Outcome::Failed,
                    _ => Outcome::NotStarted,
                },
                started: d.created_at,
                finished: d.finished_at,
                committed: d.committed_at,
                rollback_of: d.rollback_of,
                fixed_by: d.fixed_by,
            })
            .collect();
        Ok(ends
            .iter()
            .map(|end| conveyor_analysis::dora::report(&records, *end, window))
            .collect())
    }
}
