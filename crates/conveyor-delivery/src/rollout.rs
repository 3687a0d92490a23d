//! Walking one deployment through its gates and phases: the phase machine, traffic shifts,
//! starting and completing versions, pauses and controls, and how a rollout ends. Judging the
//! new version (canary analysis, the verify gate) is in `canary`, hooks and checks in `hooks`.

mod canary;
mod hooks;

use std::sync::Arc;
use std::time::Duration;

use conveyor_deploy::VersionSpec;
use conveyor_deploy::plan::{self, Phase};
use conveyor_engine::EngineError;
use conveyor_spec::delivery::CheckWhen;
use conveyor_store::{DeploymentStatus, Event, InstanceRef};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::analysis::Analysis;
use conveyor_api::VersionRole;

use crate::environment::{Active, Live};
use crate::instances::{self, version_name};
use crate::{Context, Control, Delivery};

/// How long requests already sent to a version that traffic has left may take to finish before
/// it is stopped.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// How often a rollout looks at the new version's health while it waits.
const HEALTH_WATCH: Duration = Duration::from_millis(500);

/// How a rollout stopped early: the reason recorded with the deployment's end.
enum Stop {
    Failed(String),
    /// By whom.
    Aborted(String),
}

impl Stop {
    fn failed(error: impl std::fmt::Display) -> Stop {
        Stop::Failed(error.to_string())
    }
}

struct Rollout<'a> {
    delivery: &'a Arc<Delivery>,
    cx: Context,
    live: Arc<Live>,
    id: i64,
    control: UnboundedReceiver<Control>,
    /// `promote --full`: go straight to 100%.
    full: bool,
    /// The canary analysis, from the first partial traffic shift to the shift to 100%.
    analysis: Option<Analysis>,
}

pub(crate) async fn drive(
    delivery: &Arc<Delivery>,
    id: i64,
    control: UnboundedReceiver<Control>,
) -> Result<(), EngineError> {
    let store = delivery.engine.store();
    let Some(d) = store.deployment(id).await? else {
        return Ok(());
    };
    let cx = match delivery.context(d.release_id, &d.environment).await {
        Ok(cx) => cx,
        Err(e) => return finish(delivery, id, DeploymentStatus::Failed, Some(e.to_string())).await,
    };
    let live = delivery.live(&cx.release.project, &cx.environment.name);
    let mut rollout = Rollout {
        delivery,
        cx,
        live,
        id,
        control,
        full: false,
        analysis: None,
    };
    if d.rollback_of.is_none()
        && let Err(stop) = rollout.gates().await
    {
        return rollout.end(Err(stop)).await;
    }
    let live = rollout.live.clone();
    let _turn = live.turn.lock().await;
    if d.rollback_of.is_some() && live.warm_release() == Some(rollout.cx.release.id) {
        return rollout.instant_rollback().await;
    }
    let phases = plan::plan(
        &rollout.cx.environment,
        rollout.cx.spec.instances,
        live.has_stable(),
        d.rollback_of.is_some(),
    );
    let outcome = rollout.walk(&phases).await;
    rollout.end(outcome).await
}

pub(crate) async fn finish(
    delivery: &Delivery,
    id: i64,
    status: DeploymentStatus,
    reason: Option<String>,
) -> Result<(), EngineError> {
    delivery.set_standings(id, None);
    delivery
        .engine
        .events()
        .append(Event::DeploymentFinished {
            deployment_id: id,
            status,
            reason,
        })
        .await?;
    Ok(())
}

impl Rollout<'_> {
    async fn record(&self, event: Event) -> Result<(), Stop> {
        self.delivery
            .engine
            .events()
            .append(event)
            .await
            .map(|_| ())
            .map_err(|e| Stop::Failed(format!("cannot record the deployment: {e}")))
    }

    /// Waits until approvals and freeze windows let the deployment start.
    async fn gates(&mut self) -> Result<(), Stop> {
        let store = self.delivery.engine.store();
        let mut shown: Vec<String> = Vec::new();
        loop {
            let approvals = match store.deployment(self.id).await {
                Ok(Some(d)) => d.approvals.len() as u32,
                _ => 0,
            };
            // The server's protection may change while the deployment waits: the rules of now
            // (the release's file is read again only when they changed).
            let now = store
                .protection(&self.cx.release.project, &self.cx.environment.name)
                .await;
            if now.is_ok_and(|now| now != self.cx.protection)
                && let Ok(cx) = self
                    .delivery
                    .context(self.cx.release.id, &self.cx.environment.name)
                    .await
            {
                self.cx = cx;
            }
            let gates: Vec<String> = plan::closed_gates(&self.cx.environment, approvals, chrono::Utc::now())
                .iter()
                .map(ToString::to_string)
                .collect();
            if gates.is_empty() {
                return Ok(());
            }
            if gates != shown {
                self.record(Event::DeploymentGated {
                    deployment_id: self.id,
                    gates: gates.clone(),
                })
                .await?;
                shown = gates;
            }
            tokio::select! {
                control = self.control.recv() => match control {
                    Some(Control::Abort { by }) => return Err(Stop::Aborted(by)),
                    None => return Err(Stop::Failed("the server is stopping".into())),
                    _ => {}
                },
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn walk(&mut self, phases: &[Phase]) -> Result<(), Stop> {
        for (index, phase) in phases.iter().enumerate() {
            self.handle_controls().await?;
            let skipped = self.full
                && matches!(
                    phase,
                    Phase::Wait(_) | Phase::AwaitPromotion | Phase::Shift { percent: 1..=99 }
                );
            if skipped {
                continue;
            }
            if let Phase::Shift { percent } = phase {
                self.start_fresh_baseline(*percent).await?;
                self.shift(*percent).await?;
                self.follow_analysis(*percent);
                if *percent >= 100 {
                    self.retire_baseline().await;
                }
            }
            let traffic = self.live.with_role(VersionRole::Canary).map_or(0, |v| v.traffic);
            self.record(Event::DeploymentPhase {
                deployment_id: self.id,
                index: index as u32,
                phase: phase.to_string(),
                traffic,
            })
            .await?;
            self.run_phase(phase).await?;
        }
        Ok(())
    }

    async fn run_phase(&mut self, phase: &Phase) -> Result<(), Stop> {
        let env = self.cx.environment.clone();
        match phase {
            Phase::PreDeployHooks => self.commands("pre_deploy", &env.pre_deploy, None).await,
            Phase::PostDeployHooks => self.commands("post_deploy", &env.post_deploy, None).await,
            Phase::StopStable => {
                if let Some(stable) = self.live.take_stable() {
                    stable.running.stop().await;
                }
                Ok(())
            }
            Phase::StartNew { instances } => self.start_new(*instances).await,
            Phase::ScaleStable { remaining: 0 } => {
                if let Some(stable) = self.live.take_stable() {
                    self.live.route(100, &env).await.map_err(Stop::failed)?;
                    self.live.drain(&stable.version, DRAIN_LIMIT).await;
                    stable.running.stop().await;
                }
                Ok(())
            }
            // Rolling: traffic first leaves the instances that go, then they stop.
            Phase::ScaleStable { remaining } => {
                if let Some(stopping) = self.live.shrink_stable(*remaining) {
                    self.live
                        .route(self.live.traffic(), &env)
                        .await
                        .map_err(Stop::failed)?;
                    stopping.await;
                }
                Ok(())
            }
            Phase::ChecksBeforeTraffic => {
                let url = self.live.canary_addr().map(|a| format!("http://{a}"));
                let checks = self.checks(CheckWhen::AfterTraffic);
                self.commands("check", &checks, url).await
            }
            Phase::ChecksAfterTraffic => {
                let url = self.live.router_url();
                let checks = self.checks(CheckWhen::BeforeTraffic);
                self.commands("check", &checks, url).await
            }
            Phase::Verify(d) => self.verify(*d).await,
            Phase::Shift { .. } => Ok(()),
            Phase::Wait(d) => {
                self.wait(Some(*d)).await?;
                self.end_step().await
            }
            Phase::AwaitPromotion => {
                self.record(Event::DeploymentPaused {
                    deployment_id: self.id,
                    by: "canary step".into(),
                })
                .await?;
                self.wait(None).await
            }
            Phase::Complete => self.complete().await,
        }
    }

    /// Applies pending controls; a pause holds here until resumed or aborted.
    async fn handle_controls(&mut self) -> Result<(), Stop> {
        while let Ok(control) = self.control.try_recv() {
            self.apply(control).await?;
        }
        Ok(())
    }

    async fn apply(&mut self, control: Control) -> Result<(), Stop> {
        match control {
            Control::Wake => Ok(()),
            Control::Abort { by } => Err(Stop::Aborted(by)),
            Control::Resume { full, .. } => {
                self.full |= full;
                Ok(())
            }
            Control::Pause { by } => {
                self.record(Event::DeploymentPaused {
                    deployment_id: self.id,
                    by,
                })
                .await?;
                self.wait(None).await
            }
        }
    }

    /// Waits `d` (or, with `None`, until resumed), watching the new version's health and
    /// obeying controls. A resume ends the wait.
    async fn wait(&mut self, d: Option<Duration>) -> Result<(), Stop> {
        let now = tokio::time::Instant::now();
        let deadline = d.map(|d| now + d);
        let mut next_look = self.analysis.as_ref().map(|a| now + a.interval());
        loop {
            let mut tick = HEALTH_WATCH;
            if let Some(look) = next_look {
                tick = tick.min(look.saturating_duration_since(tokio::time::Instant::now()));
            }
            tokio::select! {
                control = self.control.recv() => match control {
                    Some(Control::Resume { by, full }) => {
                        self.full |= full;
                        if d.is_none() {
                            self.record(Event::DeploymentResumed { deployment_id: self.id, by, full }).await?;
                        }
                        return Ok(());
                    }
                    Some(Control::Abort { by }) => return Err(Stop::Aborted(by)),
                    Some(Control::Pause { by }) if d.is_some() => {
                        self.record(Event::DeploymentPaused { deployment_id: self.id, by }).await?;
                        return Box::pin(self.wait(None)).await;
                    }
                    Some(_) => {}
                    None => return Err(Stop::Failed("the server is stopping".into())),
                },
                () = tokio::time::sleep(tick) => {
                    if !self.live.canary_healthy() && self.live.with_role(VersionRole::Canary).is_some() {
                        return Err(Stop::Failed("the new version has no healthy instance left".into()));
                    }
                    let now = tokio::time::Instant::now();
                    if let (Some(look), Some(analysis)) = (next_look, &self.analysis)
                        && now >= look
                    {
                        next_look = Some(now + analysis.interval());
                        self.look().await?;
                    }
                    if deadline.is_some_and(|end| now >= end) {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn shift(&self, percent: u32) -> Result<(), Stop> {
        if !self.live.canary_healthy() {
            return Err(Stop::Failed(
                "the new version has no healthy instance: traffic not shifted".into(),
            ));
        }
        self.live
            .route(percent, &self.cx.environment)
            .await
            .map_err(Stop::failed)
    }

    async fn start_new(&mut self, instances: u32) -> Result<(), Stop> {
        if self.live.with_role(VersionRole::Canary).is_some() {
            // Rolling: the next batch joins the instances already started.
            let grown = self.live.grow_canary(instances).await.map_err(Stop::failed)?;
            self.live
                .route(self.live.traffic(), &self.cx.environment)
                .await
                .map_err(Stop::failed)?;
            let version = version_name(self.cx.release.id);
            let instances = grown
                .iter()
                .map(|s| InstanceRef {
                    addr: s.addr,
                    id: s.id.clone(),
                })
                .collect();
            return self
                .record(Event::DeploymentInstances {
                    deployment_id: self.id,
                    version,
                    instances,
                })
                .await;
        }
        let version = version_name(self.cx.release.id);
        let mut spec = instances::version_spec(self.delivery, &self.cx, self.id, &version)
            .await
            .map_err(Stop::failed)?;
        spec.instances = instances;
        self.start_version(spec, self.cx.release.id, "the new version", Live::set_canary)
            .await
    }

    /// Starts a version on the target, gives it its place in the environment, and records where
    /// its instances run (so a restarted server finds them).
    async fn start_version(
        &self,
        spec: VersionSpec,
        release_id: i64,
        what: &str,
        place: fn(&Live, Active),
    ) -> Result<(), Stop> {
        let version = spec.version.clone();
        let running = self
            .delivery
            .target
            .start(spec)
            .await
            .map_err(|e| Stop::Failed(format!("{what} did not start: {e}")))?;
        let instances = running
            .status()
            .iter()
            .map(|s| InstanceRef {
                addr: s.addr,
                id: s.id.clone(),
            })
            .collect();
        place(
            &self.live,
            Active {
                release_id,
                version: version.clone(),
                running,
            },
        );
        self.record(Event::DeploymentInstances {
            deployment_id: self.id,
            version,
            instances,
        })
        .await
    }

    async fn complete(&mut self) -> Result<(), Stop> {
        if let Some(replaced) = self.live.promote_canary() {
            replaced.running.stop().await;
        }
        self.live
            .route(0, &self.cx.environment)
            .await
            .map_err(Stop::failed)?;
        if let Some(warm) = self.live.warm_release() {
            let (live, window) = (self.live.clone(), self.delivery.config.rollback_window);
            tokio::spawn(async move {
                tokio::time::sleep(window).await;
                let _turn = live.turn.lock().await;
                if live.warm_release() == Some(warm)
                    && let Some(expired) = live.take_warm()
                {
                    tracing::info!(
                        release = warm,
                        "rollback window over; stopping the previous version"
                    );
                    expired.running.stop().await;
                }
            });
        }
        Ok(())
    }

    /// Rollback to the version still warm: one route change.
    async fn instant_rollback(&mut self) -> Result<(), EngineError> {
        self.live.swap_warm();
        let routed = self.live.route(0, &self.cx.environment).await;
        let outcome = match routed {
            Ok(()) => {
                let phase = Event::DeploymentPhase {
                    deployment_id: self.id,
                    index: 0,
                    phase: "send all traffic to the warm version".into(),
                    traffic: 100,
                };
                self.delivery.engine.events().append(phase).await?;
                Ok(())
            }
            Err(e) => Err(Stop::failed(e)),
        };
        self.end(outcome).await
    }

    /// Records how the deployment ended; on a failure or an abort, traffic first goes back to
    /// the stable version and the new one is stopped.
    async fn end(&mut self, outcome: Result<(), Stop>) -> Result<(), EngineError> {
        let (status, reason) = match outcome {
            Ok(()) => (DeploymentStatus::Succeeded, None),
            Err(Stop::Failed(reason)) => (DeploymentStatus::Failed, Some(reason)),
            Err(Stop::Aborted(by)) => (DeploymentStatus::Aborted, Some(format!("aborted by {by}"))),
        };
        self.retire_baseline().await;
        if status != DeploymentStatus::Succeeded
            && let Some(canary) = self.live.take_canary()
        {
            if self.live.has_stable() {
                match self.live.route(0, &self.cx.environment).await {
                    Ok(()) => self.live.drain(&canary.version, DRAIN_LIMIT).await,
                    Err(error) => {
                        tracing::error!(%error, "cannot send traffic back to the stable version");
                    }
                }
            }
            canary.running.stop().await;
        }
        finish(self.delivery, self.id, status, reason).await
    }
}
