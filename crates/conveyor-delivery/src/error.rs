//! What delivery refuses, and why: each a sentence for the person who asked, apart from
//! internal failures.

use conveyor_deploy::plan::ApprovalRefused;
use conveyor_engine::EngineError;

/// How the API reports a `DeliveryError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// What was named does not exist.
    NotFound,
    /// The request cannot be carried out as asked.
    Invalid,
    /// A rule of the environment forbids it.
    Refused,
    /// The state of things does not allow it now.
    Conflict,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("release {0} does not exist")]
    NoSuchRelease(i64),
    #[error("run {0} does not exist")]
    NoSuchRun(i64),
    #[error("deployment {0} does not exist")]
    NoSuchDeployment(i64),
    #[error("release {release}'s conveyor.yml has no environment '{environment}' (it has: {known})")]
    NoSuchEnvironment {
        release: i64,
        environment: String,
        /// The environments it has, comma-separated, or `none`.
        known: String,
    },
    #[error("release {0}'s conveyor.yml has no 'release:' section: it cannot be deployed")]
    NotDeployable(i64),
    #[error("release {release} belongs to project {project}")]
    OtherProject { release: i64, project: String },
    #[error(
        "deployment {deployment} is not a successful deployment of another release to {environment}: only a change that went out can be fixed forward"
    )]
    NotFixable { deployment: i64, environment: String },
    #[error("release {release} has not been deployed to {after} yet; {environment} comes after {after}")]
    OutOfOrder {
        release: i64,
        environment: String,
        after: String,
    },
    #[error(transparent)]
    Approval(#[from] ApprovalRefused),
    #[error("{0} has no successful deployment to roll back from")]
    NothingDeployed(String),
    #[error("{environment} has run only release {release}: there is nothing to roll back to")]
    NothingToRollBackTo { environment: String, release: i64 },
    #[error("{environment} already runs release {release}")]
    AlreadyRunning { environment: String, release: i64 },
    #[error("deployment {0} is not in progress")]
    NotInProgress(i64),
    #[error("deployment {0} has just ended")]
    JustEnded(i64),
    #[error("deployment {id} already ended ({status})")]
    Ended { id: i64, status: String },
    #[error("{0} needs no approval")]
    NoApprovalNeeded(String),
    #[error("project '{0}' does not exist")]
    NoSuchProject(String),
    #[error("invalid protection: {0}")]
    InvalidProtection(String),
    #[error(transparent)]
    Internal(#[from] EngineError),
}

impl DeliveryError {
    pub fn category(&self) -> Category {
        use DeliveryError as E;
        match self {
            E::NoSuchRelease(_)
            | E::NoSuchRun(_)
            | E::NoSuchDeployment(_)
            | E::NoSuchEnvironment { .. }
            | E::NoSuchProject(_) => Category::NotFound,
            E::NotDeployable(_) | E::OtherProject { .. } | E::InvalidProtection(_) => Category::Invalid,
            E::NotFixable { .. } | E::OutOfOrder { .. } | E::Approval(_) => Category::Refused,
            E::NothingDeployed(_)
            | E::NothingToRollBackTo { .. }
            | E::AlreadyRunning { .. }
            | E::NotInProgress(_)
            | E::JustEnded(_)
            | E::Ended { .. }
            | E::NoApprovalNeeded(_) => Category::Conflict,
            E::Internal(_) => Category::Internal,
        }
    }
}

impl From<conveyor_store::StoreError> for DeliveryError {
    fn from(e: conveyor_store::StoreError) -> Self {
        DeliveryError::Internal(e.into())
    }
}
