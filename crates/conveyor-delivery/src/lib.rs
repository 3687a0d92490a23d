//! `conveyor-delivery` delivers releases into environments: a deployment is a persisted state machine. A deployment
//! waits on its gates (approvals, freeze windows), then walks the phases its strategy plans
//! (`conveyor_deploy::plan`): start the new version on the target, check it, shift the router's
//! traffic step by step, and make it the stable version — the previous one staying warm for an
//! instant rollback. Every transition is an event. A failure or an abort sends all traffic back to
//! the stable version before anything else. After a restart, `recover` serves each environment's
//! last route config first, re-adopts the stable instances, and rolls back interrupted deployments.

mod analysis;
mod dora;
mod environment;
mod error;
mod instances;
mod protection;
mod recover;
mod rollout;
mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conveyor_deploy::{Target, plan};
use conveyor_spec::{Environment, ReleaseSpec};
use conveyor_store::{DeploymentStatus, DeploymentView, Event, IdKind, Release};
use tokio::sync::mpsc;

pub use analysis::evidence_warnings;
pub use error::{Category, DeliveryError};
pub use instances::CasBlobs;

use conveyor_engine::{Engine, EngineError};
use tracing::Instrument as _;

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// How long the previous version stays running after a deployment, for instant rollbacks.
    pub rollback_window: Duration,
    /// Peers whose `X-Forwarded-*` headers every environment's router believes: the server's
    /// setting, never a commit's (a `conveyor.yml` that could name them could spoof client
    /// addresses to its own upstreams).
    pub trusted_proxies: Vec<conveyor_router::Cidr>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            rollback_window: Duration::from_secs(300),
            trusted_proxies: Vec::new(),
        }
    }
}

/// What a person (or the system) asks of a running deployment.
#[derive(Debug, Clone)]
enum Control {
    /// Look at the gates again (an approval arrived).
    Wake,
    Pause {
        by: String,
    },
    Resume {
        by: String,
        full: bool,
    },
    Abort {
        by: String,
    },
}

pub struct Delivery {
    pub(crate) engine: Arc<Engine>,
    pub(crate) target: Arc<dyn Target>,
    pub(crate) config: DeliveryConfig,
    /// The server's data directory: release layouts, saved router configs, instance identities.
    pub(crate) root: std::path::PathBuf,
    environments: Mutex<HashMap<(String, String), Arc<environment::Live>>>,
    controls: Mutex<HashMap<i64, mpsc::UnboundedSender<Control>>>,
    /// Where each running deployment's canary metrics stand at the latest look (in memory:
    /// progress, not history — the judgements are the record).
    standings: Mutex<HashMap<i64, Vec<conveyor_api::MetricStanding>>>,
}

/// Everything a deployment needs to know about what it deploys and where.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub release: Release,
    pub spec: ReleaseSpec,
    /// As guarded: the release's rules made stricter by the server's protection.
    pub environment: Environment,
    /// Environments the release must have succeeded in first (the release's and the server's).
    pub after: Vec<String>,
    /// The server's protection `environment` was guarded with, to tell when it changes.
    pub protection: Option<conveyor_api::EnvironmentProtection>,
}

/// More approvals than this is a mistake, not a policy.
const MAX_REQUIRED_APPROVALS: u32 = 10;

impl Delivery {
    pub fn new(engine: Arc<Engine>, target: Arc<dyn Target>, config: DeliveryConfig) -> Arc<Self> {
        let delivery = Arc::new(Delivery {
            root: engine.data().root.clone(),
            engine: engine.clone(),
            target,
            config,
            environments: Mutex::new(HashMap::new()),
            controls: Mutex::new(HashMap::new()),
            standings: Mutex::new(HashMap::new()),
        });
        tokio::spawn(continuous_deployment(
            engine.events().subscribe(),
            Arc::downgrade(&delivery),
        ));
        delivery
    }

    pub(crate) fn live(&self, project: &str, environment: &str) -> Arc<environment::Live> {
        let mut all = self.environments.lock().unwrap_or_else(|p| p.into_inner());
        all.entry((project.to_string(), environment.to_string()))
            .or_insert_with(|| {
                let router_file = self
                    .root
                    .join("routers")
                    .join(project)
                    .join(format!("{environment}.json"));
                Arc::new(environment::Live::new(
                    project,
                    environment,
                    router_file,
                    self.config.trusted_proxies.clone(),
                ))
            })
            .clone()
    }

    /// The release, its pipeline and the environment as that release's `conveyor.yml` defines it,
    /// under the server's protection of that environment.
    pub(crate) async fn context(&self, release_id: i64, environment: &str) -> Result<Context, DeliveryError> {
        let store = self.engine.store();
        let release = store
            .release(release_id)
            .await?
            .ok_or(DeliveryError::NoSuchRelease(release_id))?;
        let run = store
            .run(release.run_id)
            .await?
            .ok_or(DeliveryError::NoSuchRun(release.run_id))?;
        let pipeline = conveyor_spec::parse("conveyor.yml", &run.pipeline).map_err(EngineError::from)?;
        let spec = pipeline
            .release
            .clone()
            .ok_or(DeliveryError::NotDeployable(release_id))?;
        let env = pipeline.environment(environment).cloned().ok_or_else(|| {
            let known: Vec<&str> = pipeline.environments.iter().map(|e| e.name.as_str()).collect();
            DeliveryError::NoSuchEnvironment {
                release: release_id,
                environment: environment.to_string(),
                known: if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                },
            }
        })?;
        let mut env = env;
        let protection = store.protection(&release.project, environment).await?;
        let after = match &protection {
            Some(protection) => protection::protect(&mut env, protection),
            None => env.after.iter().cloned().collect(),
        };
        Ok(Context {
            release,
            spec,
            environment: env,
            after,
            protection,
        })
    }

    fn all_live(&self) -> Vec<Arc<environment::Live>> {
        self.environments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Asks for `release_id` to go into `environment`; returns the deployment id. It starts once
    /// its gates open and the environment's previous deployment has ended.
    pub async fn promote(
        self: &Arc<Self>,
        environment: &str,
        release_id: i64,
        by: &str,
        fixes: Option<i64>,
    ) -> Result<i64, DeliveryError> {
        let cx = self.context(release_id, environment).await?;
        let store = self.engine.store();
        if let Some(broken) = fixes {
            let fixable = store.deployment(broken).await?.is_some_and(|d| {
                d.project == cx.release.project
                    && d.environment == cx.environment.name
                    && d.status == DeploymentStatus::Succeeded
                    && d.release_id != release_id
            });
            if !fixable {
                return Err(DeliveryError::NotFixable {
                    deployment: broken,
                    environment: environment.to_string(),
                });
            }
        }
        for after in &cx.after {
            if !self.succeeded_in(&cx.release.project, after, release_id).await? {
                return Err(DeliveryError::OutOfOrder {
                    release: release_id,
                    environment: environment.to_string(),
                    after: after.clone(),
                });
            }
        }
        let authors = self.authors(&cx, by).await?;
        let id = self.request(&cx, by, authors, None).await?;
        if let Some(broken) = fixes {
            self.engine
                .events()
                .append(Event::DeploymentFixedForward {
                    deployment_id: broken,
                    fixed_by: id,
                    by: by.to_string(),
                })
                .await?;
        }
        Ok(id)
    }

    /// Has `release_id` been deployed into `environment` successfully?
    async fn succeeded_in(
        &self,
        project: &str,
        environment: &str,
        release_id: i64,
    ) -> Result<bool, DeliveryError> {
        Ok(self
            .engine
            .store()
            .deployments(Some(project), Some(environment), 1000)
            .await?
            .iter()
            .any(|d| d.release_id == release_id && d.status == DeploymentStatus::Succeeded))
    }

    /// Who a deployment of `cx`'s release is by: the people who wrote the commits it brings over
    /// what the environment runs (users matched by email; an email no user has, as it is), and
    /// whoever asked. None of them counts as a not-author approval.
    async fn authors(&self, cx: &Context, requested_by: &str) -> Result<Vec<String>, DeliveryError> {
        let store = self.engine.store();
        let project = &cx.release.project;
        let since = match store.current_release(project, &cx.environment.name).await? {
            Some(current) => store.release(current).await?.map(|r| r.commit),
            None => None,
        };
        let mirror = self.engine.data().mirror(project);
        let emails = conveyor_engine::source::commit_emails(&mirror, since.as_deref(), &cx.release.commit)
            .await
            .unwrap_or_else(|error| {
                // Without the mirror the commits are unknown: the requester still counts.
                tracing::warn!(%error, project, "cannot read the authors of a release's commits");
                Vec::new()
            });
        let mut authors = vec![requested_by.to_string()];
        for email in emails {
            let author = store.user_by_email(&email).await?.unwrap_or(email);
            if !authors.contains(&author) {
                authors.push(author);
            }
        }
        Ok(authors)
    }

    /// Rolls `environment` back to `to` (default: the release before the current one). Instant
    /// when that version is still warm; otherwise a blue-green deployment of it. A rollback to a
    /// release that succeeded in the environment before restores a known-good version, so it
    /// skips approvals and freeze windows; to any other release it is a promotion, gates and all.
    pub async fn rollback(
        self: &Arc<Self>,
        project: &str,
        environment: &str,
        to: Option<i64>,
        by: &str,
    ) -> Result<i64, DeliveryError> {
        let store = self.engine.store();
        let history = store.deployments(Some(project), Some(environment), 1000).await?;
        let mut succeeded = history.iter().filter(|d| d.status == DeploymentStatus::Succeeded);
        let current = succeeded
            .next()
            .ok_or_else(|| DeliveryError::NothingDeployed(environment.to_string()))?;
        let target = match to {
            Some(id) => id,
            None => succeeded
                .find(|d| d.release_id != current.release_id)
                .map(|d| d.release_id)
                .ok_or_else(|| DeliveryError::NothingToRollBackTo {
                    environment: environment.to_string(),
                    release: current.release_id,
                })?,
        };
        if target == current.release_id {
            return Err(DeliveryError::AlreadyRunning {
                environment: environment.to_string(),
                release: target,
            });
        }
        // Another project's release is refused before anything of it (its environments) is read.
        let release = store
            .release(target)
            .await?
            .ok_or(DeliveryError::NoSuchRelease(target))?;
        if release.project != project {
            return Err(DeliveryError::OtherProject {
                release: target,
                project: release.project,
            });
        }
        let cx = self.context(target, environment).await?;
        if !self.succeeded_in(project, environment, target).await? {
            return self.promote(environment, target, by, None).await;
        }
        let authors = self.authors(&cx, by).await?;
        self.request(&cx, by, authors, Some(current.id)).await
    }

    async fn request(
        self: &Arc<Self>,
        cx: &Context,
        by: &str,
        authors: Vec<String>,
        rollback_of: Option<i64>,
    ) -> Result<i64, DeliveryError> {
        let store = self.engine.store();
        let has_stable = store
            .current_release(&cx.release.project, &cx.environment.name)
            .await?
            .is_some();
        let phases = plan::plan(
            &cx.environment,
            cx.spec.instances,
            has_stable,
            rollback_of.is_some(),
        );
        let id = self
            .engine
            .events()
            .append_new(IdKind::Deployment, |deployment_id| Event::DeploymentRequested {
                deployment_id,
                project: cx.release.project.clone(),
                environment: cx.environment.name.clone(),
                release_id: cx.release.id,
                requested_by: by.to_string(),
                author: by.to_string(),
                authors,
                rollback_of,
                phases: phases.iter().map(ToString::to_string).collect(),
            })
            .await?;
        self.spawn(id);
        Ok(id)
    }

    fn spawn(self: &Arc<Self>, id: i64) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.controls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let delivery = self.clone();
        let span = tracing::info_span!("deployment", id);
        tokio::spawn(
            async move {
                if let Err(error) = rollout::drive(&delivery, id, rx).await {
                    tracing::error!(%error, "deployment failed to run");
                }
                delivery
                    .controls
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            }
            .instrument(span),
        );
    }

    fn send(&self, id: i64, control: Control) -> Result<(), DeliveryError> {
        let controls = self.controls.lock().unwrap_or_else(|p| p.into_inner());
        let sender = controls.get(&id).ok_or(DeliveryError::NotInProgress(id))?;
        sender.send(control).map_err(|_| DeliveryError::JustEnded(id))
    }

    async fn deployment(&self, id: i64) -> Result<DeploymentView, DeliveryError> {
        self.engine
            .store()
            .deployment(id)
            .await?
            .ok_or(DeliveryError::NoSuchDeployment(id))
    }

    async fn unfinished(&self, id: i64) -> Result<DeploymentView, DeliveryError> {
        let d = self.deployment(id).await?;
        if d.finished_at.is_some() {
            return Err(DeliveryError::Ended {
                id,
                status: d.status.to_string(),
            });
        }
        Ok(d)
    }

    /// Sets (or, with None, removes) the server's rules for a project environment, audited.
    /// Releases' `conveyor.yml` may make them stricter, never weaker.
    pub async fn protect(
        &self,
        project: &str,
        environment: &str,
        protection: Option<conveyor_api::EnvironmentProtection>,
        by: &str,
    ) -> Result<(), DeliveryError> {
        let store = self.engine.store();
        if store.project(project).await?.is_none() {
            return Err(DeliveryError::NoSuchProject(project.to_string()));
        }
        if let Some(p) = &protection {
            let invalid = |why: String| DeliveryError::InvalidProtection(why);
            protection::freeze_windows(p).map_err(invalid)?;
            if p.required_approvals > MAX_REQUIRED_APPROVALS {
                return Err(invalid(format!(
                    "required_approvals is at most {MAX_REQUIRED_APPROVALS}"
                )));
            }
            if p.freeze.len() > 32 || p.reviewers.len() > 100 {
                return Err(invalid("at most 32 freeze windows and 100 reviewers".into()));
            }
            for reviewer in &p.reviewers {
                if store.user(reviewer).await?.is_none() {
                    return Err(invalid(format!("reviewer '{reviewer}' is not a user")));
                }
            }
            if p.after.as_deref() == Some(environment) {
                return Err(invalid(format!("'{environment}' cannot come after itself")));
            }
        }
        self.engine
            .events()
            .append(Event::EnvironmentProtected {
                project: project.to_string(),
                environment: environment.to_string(),
                protection,
                by: by.to_string(),
            })
            .await?;
        Ok(())
    }

    /// Records `by`'s approval, if the environment's rules allow it.
    pub async fn approve(&self, id: i64, by: &str) -> Result<(), DeliveryError> {
        let d = self.unfinished(id).await?;
        let cx = self.context(d.release_id, &d.environment).await?;
        let Some(rules) = &cx.environment.approval else {
            return Err(DeliveryError::NoApprovalNeeded(d.environment));
        };
        // Logs from before `authors` name only the requester.
        let authors = if d.authors.is_empty() {
            std::slice::from_ref(&d.author)
        } else {
            &d.authors[..]
        };
        plan::may_approve(rules, by, authors, &d.approvals)?;
        let recorded = self
            .engine
            .events()
            .append(Event::DeploymentApproved {
                deployment_id: id,
                by: by.to_string(),
            })
            .await;
        if let Err(error) = recorded {
            // The store refuses a second approval by one person and any after the end, however
            // many ask at once: say which.
            let d = self.deployment(id).await?;
            if d.approvals.iter().any(|a| a == by) {
                return Err(plan::ApprovalRefused::AlreadyApproved { who: by.to_string() }.into());
            }
            if d.finished_at.is_some() {
                return Err(DeliveryError::Ended {
                    id,
                    status: d.status.to_string(),
                });
            }
            return Err(error.into());
        }
        let _ = self.send(id, Control::Wake);
        Ok(())
    }

    pub async fn pause(&self, id: i64, by: &str) -> Result<(), DeliveryError> {
        self.unfinished(id).await?;
        self.send(id, Control::Pause { by: by.to_string() })
    }

    /// Resumes a paused deployment, or goes past a manual pause (`promote`); `full` skips every
    /// remaining step to 100%.
    pub async fn resume(&self, id: i64, by: &str, full: bool) -> Result<(), DeliveryError> {
        self.unfinished(id).await?;
        self.send(
            id,
            Control::Resume {
                by: by.to_string(),
                full,
            },
        )
    }

    /// Stops a deployment now: all traffic back to the stable version, the new one stopped.
    pub async fn abort(&self, id: i64, by: &str) -> Result<(), DeliveryError> {
        self.unfinished(id).await?;
        self.send(id, Control::Abort { by: by.to_string() })
    }

    /// What runs in an environment now: versions, traffic split, instances, router address.
    /// Where a running deployment's canary metrics stand now; empty once it ended.
    pub fn standings(&self, deployment: i64) -> Vec<conveyor_api::MetricStanding> {
        let all = self.standings.lock().unwrap_or_else(|p| p.into_inner());
        all.get(&deployment).cloned().unwrap_or_default()
    }

    pub(crate) fn set_standings(&self, deployment: i64, now: Option<Vec<conveyor_api::MetricStanding>>) {
        let mut all = self.standings.lock().unwrap_or_else(|p| p.into_inner());
        match now {
            Some(now) => all.insert(deployment, now),
            None => all.remove(&deployment),
        };
    }

    pub fn status(&self, project: &str, environment: &str) -> conveyor_api::EnvironmentStatus {
        self.live(project, environment).status()
    }

    /// The environment's router metrics (per version: requests, 5xx, latency) in the Prometheus
    /// text format; `None` before its first deployment.
    /// The end of an instance's log (its output, at most `limit` bytes, the project's secrets
    /// masked): instance `index` of `version` as the newest deployment of the environment that
    /// started that version laid it out. None when there is no such log.
    pub async fn instance_log(
        &self,
        project: &str,
        environment: &str,
        version: &str,
        index: u32,
        limit: u64,
    ) -> Result<Option<String>, DeliveryError> {
        let store = self.engine.store();
        let Some(started) = store
            .deployments(Some(project), Some(environment), 1000)
            .await?
            .into_iter()
            .find(|d| d.instances.contains_key(version))
        else {
            return Ok(None);
        };
        let slot = format!("{project}/{environment}/{version}-d{}", started.id);
        let Some(dir) = self.target.local_dir(&slot) else {
            return Ok(None);
        };
        let path = dir
            .join(conveyor_deploy::INSTANCE_LOG_DIR)
            .join(format!("{index}.log"));
        let tail = tokio::task::spawn_blocking(move || -> std::io::Result<Option<Vec<u8>>> {
            use std::io::{Read as _, Seek as _};
            let mut file = match std::fs::File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let size = file.metadata()?.len();
            let start = size.saturating_sub(limit);
            file.seek(std::io::SeekFrom::Start(start))?;
            let mut bytes = Vec::new();
            file.take(limit).read_to_end(&mut bytes)?;
            if start > 0 {
                // Read from the middle, the first line is cut, and a secret in it would be cut
                // past recognising: leave it out.
                let cut = bytes
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(bytes.len(), |i| i + 1);
                bytes.drain(..cut);
            }
            Ok(Some(bytes))
        })
        .await
        .map_err(|e| DeliveryError::Internal(std::io::Error::other(e).into()))?
        .map_err(|e| DeliveryError::Internal(e.into()))?;
        let Some(bytes) = tail else {
            return Ok(None);
        };
        let secrets = store.secrets(project).await?;
        let masker = conveyor_engine::Masker::new(secrets.iter().map(|(_, v)| v.as_str()));
        let text = String::from_utf8_lossy(&bytes);
        Ok(Some(
            text.lines()
                .map(|l| masker.mask(l))
                .collect::<Vec<_>>()
                .join("\n"),
        ))
    }

    pub fn metrics_text(&self, project: &str, environment: &str) -> Option<String> {
        self.live(project, environment).router().map(|r| r.metrics_text())
    }

    /// Every environment router's metrics in one Prometheus text, labelled by project and
    /// environment: what `/metrics` serves.
    pub fn all_metrics_text(&self) -> String {
        let mut snapshots = Vec::new();
        for live in self.all_live() {
            let Some(router) = live.router() else { continue };
            let labels = vec![
                ("project".to_string(), live.project.clone()),
                ("environment".to_string(), live.name.clone()),
            ];
            snapshots.extend(router.metrics().into_iter().map(|m| (labels.clone(), m)));
        }
        conveyor_router::encode_labeled(snapshots)
    }

    /// Stops every version of every environment (their instances outlive a server otherwise, to
    /// keep serving across restarts): for demos and tests that must leave nothing behind.
    pub async fn stop_everything(&self) {
        for live in self.all_live() {
            for version in [live.take_canary(), live.take_stable(), live.take_warm()]
                .into_iter()
                .flatten()
            {
                version.running.stop().await;
            }
        }
    }

    /// Serves the last route config of every environment, re-adopts stable versions, and rolls
    /// back deployments a crash interrupted. Call before accepting requests.
    pub async fn recover(self: &Arc<Self>) -> Result<(), EngineError> {
        recover::recover(self).await
    }
}

/// Continuous deployment: environments with `auto: true` receive each release that is new (first
/// environment) or that passed the environment before them. Runs as long as the delivery does.
async fn continuous_deployment(
    mut events: conveyor_store::Subscription,
    delivery: std::sync::Weak<Delivery>,
) {
    loop {
        let stored = match events.next().await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::error!(%error, "continuous deployment cannot read the event log; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(delivery) = delivery.upgrade() else {
            return;
        };
        let trigger = match &stored.event {
            Event::ReleaseCreated { release_id, .. } => Some((*release_id, None)),
            Event::DeploymentFinished {
                deployment_id,
                status: DeploymentStatus::Succeeded,
                ..
            } => Some((0, Some(*deployment_id))),
            _ => None,
        };
        let Some((release_id, after_deployment)) = trigger else {
            continue;
        };
        tokio::spawn(async move {
            if let Err(error) = auto_promote(&delivery, release_id, after_deployment).await {
                tracing::warn!(%error, "continuous deployment did not start");
            }
        });
    }
}

async fn auto_promote(
    delivery: &Arc<Delivery>,
    release_id: i64,
    after: Option<i64>,
) -> Result<(), DeliveryError> {
    let store = delivery.engine.store();
    let (release_id, passed) = match after {
        None => (release_id, None),
        Some(deployment) => match store.deployment(deployment).await? {
            // A rollback is not a release passing an environment.
            Some(d) if d.rollback_of.is_none() => (d.release_id, Some(d.environment)),
            _ => return Ok(()),
        },
    };
    let Some(release) = store.release(release_id).await? else {
        return Ok(());
    };
    let Some(run) = store.run(release.run_id).await? else {
        return Ok(());
    };
    let Ok(pipeline) = conveyor_spec::parse("conveyor.yml", &run.pipeline) else {
        return Ok(());
    };
    for env in pipeline
        .environments
        .iter()
        .filter(|e| e.auto && e.after == passed)
    {
        let cx = delivery.context(release_id, &env.name).await?;
        // The server's protection may ask for more environments first.
        let mut ready = true;
        for after in &cx.after {
            ready &= delivery
                .succeeded_in(&cx.release.project, after, release_id)
                .await?;
        }
        if !ready {
            continue;
        }
        let authors = delivery.authors(&cx, "auto").await?;
        let id = delivery.request(&cx, "auto", authors, None).await?;
        tracing::info!(release = release_id, environment = %env.name, deployment = id, "continuous deployment");
    }
    Ok(())
}
