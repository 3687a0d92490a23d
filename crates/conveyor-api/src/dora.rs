//! DORA's four keys as the API reports them (computed by `conveyor-analysis::dora`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The DORA report's performance levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Elite,
    High,
    Medium,
    Low,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Elite => "elite",
            Level::High => "high",
            Level::Medium => "medium",
            Level::Low => "low",
        }
    }
}

/// The deployment-frequency bucket Four Keys shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Bucket {
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Daily => "daily",
            Bucket::Weekly => "weekly",
            Bucket::Monthly => "monthly",
            Bucket::Yearly => "yearly",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Report {
    pub window_days: u64,
    pub deployments: usize,
    pub deployment_frequency: Frequency,
    pub lead_time: Option<Measure>,
    pub change_failure_rate: Option<Rate>,
    pub time_to_restore: Option<Measure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Frequency {
    pub per_day: f64,
    pub bucket: Bucket,
    pub level: Level,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Measure {
    pub median_seconds: u64,
    pub samples: usize,
    pub level: Level,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Rate {
    pub failed: usize,
    pub total: usize,
    pub ratio: f64,
    pub level: Level,
}

/// `GET /api/v1/dora`: the report, for which environment and project.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DoraReport {
    #[serde(flatten)]
    pub report: Report,
    pub environment: String,
    pub project: Option<String>,
}
