//! Walking a deployment through its gates and phases, and recovering after a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use conveyor_deploy::plan::{self, Gate, Phase};
use conveyor_deploy::{RunningVersion, VersionSpec};
use conveyor_exec::{CancellationToken, StepOutcome, StepSpec};
use conveyor_spec::delivery::{Baseline, CheckWhen, Command, MetricSource, Strategy};
use conveyor_spec::expr;
use conveyor_store::logs::LogOf;
use conveyor_store::{DeploymentStatus, DeploymentView, Event, InstanceRef, Verdict};
use tokio::sync::mpsc::UnboundedReceiver;

use super::analysis::{Analysis, Judgement, StepEnd, Subjects};
use super::environment::{Active, Live};
use super::verify;
use super::{Context, Control, Delivery};
use crate::EngineError;
use crate::output::{Masker, StepLog};

/// Hooks and checks without a timeout of their own get this one.
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// How long requests already sent to a version that traffic has left may take to finish before
/// it is stopped.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// How often a rollout looks at the new version's health while it waits.
const HEALTH_WATCH: Duration = Duration::from_millis(500);

/// The plan of a deployment. A rollback is always blue-green without hooks: it restores a
/// known-good version as fast as safely possible.
pub(crate) fn plan_for(cx: &Context, has_stable: bool, rollback: bool) -> Vec<Phase> {
    if rollback {
        let mut env = cx.environment.clone();
        env.strategy = Strategy::BlueGreen;
        env.pre_deploy.clear();
        env.post_deploy.clear();
        return plan::phases(&env, cx.spec.instances, has_stable);
    }
    plan::phases(&cx.environment, cx.spec.instances, has_stable)
}

pub(crate) fn describe(phase: &Phase) -> String {
    match phase {
        Phase::PreDeployHooks => "run the pre_deploy hooks".into(),
        Phase::StopStable => "stop the stable version".into(),
        Phase::StartNew { instances } => format!("start {instances} instance(s) of the new version"),
        Phase::ScaleStable { remaining } => {
            format!("scale the stable version down to {remaining} instance(s)")
        }
        Phase::ChecksBeforeTraffic => "check the new version before it gets traffic".into(),
        Phase::Shift { percent } => format!("shift {percent}% of the traffic to the new version"),
        Phase::Wait(d) => format!("wait {}s", d.as_secs()),
        Phase::AwaitPromotion => "wait for promotion".into(),
        Phase::ChecksAfterTraffic => "check the new version through the router".into(),
        Phase::Verify(d) => format!("verify the new version for {}s", d.as_secs()),
        Phase::PostDeployHooks => "run the post_deploy hooks".into(),
        Phase::Complete => "make the new version stable".into(),
    }
}

fn gate_text(gate: &Gate) -> String {
    match gate {
        Gate::AwaitingApproval { have, need } => format!("waiting for approval ({have} of {need})"),
        Gate::Frozen { until, reason } => format!(
            "frozen until {}{}",
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
        ),
    }
}

fn version_name(release_id: i64) -> String {
    format!("r{release_id}")
}

/// Marks an instance's environment, so a restarted server can tell its instances from others.
fn instance_marker(delivery: &Delivery, project: &str, environment: &str, version: &str) -> String {
    // The data directory makes it unique to this server: two servers on one machine may well
    // both have a `shop/prod/r2`.
    let data = delivery.engine.data().root.display().to_string();
    format!("CONVEYOR_INSTANCE_OF={data}/{project}/{environment}/{version}")
}

/// How a rollout stopped early.
enum Stop {
    Failed(String),
    Aborted(String),
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
    let phases = plan_for(&rollout.cx, live.has_stable(), d.rollback_of.is_some());
    let outcome = rollout.walk(&phases).await;
    rollout.end(outcome).await
}

async fn finish(
    delivery: &Delivery,
    id: i64,
    status: DeploymentStatus,
    reason: Option<String>,
) -> Result<(), EngineError> {
    delivery
        .engine
        .record(Event::DeploymentFinished {
            deployment_id: id,
            status,
            reason,
        })
        .await?;
    Ok(())
}

impl Rollout<'_> {
    fn data(&self) -> std::path::PathBuf {
        self.delivery.engine.data().root.clone()
    }

    async fn record(&self, event: Event) -> Result<(), Stop> {
        self.delivery
            .engine
            .record(event)
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
            let gates: Vec<String> = plan::closed_gates(&self.cx.environment, approvals, chrono::Utc::now())
                .iter()
                .map(gate_text)
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
            let traffic = self
                .live
                .status()
                .versions
                .iter()
                .find(|v| v.role == "canary")
                .map_or(0, |v| v.traffic);
            self.record(Event::DeploymentPhase {
                deployment_id: self.id,
                index: index as u32,
                phase: describe(phase),
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
                    self.live
                        .route(100, &env, &self.data())
                        .await
                        .map_err(Stop::Failed)?;
                    self.live.drain(&stable.version, DRAIN_LIMIT).await;
                    stable.running.stop().await;
                }
                Ok(())
            }
            // Rolling: traffic first leaves the instances that go, then they stop.
            Phase::ScaleStable { remaining } => {
                if let Some(stopping) = self.live.shrink_stable(*remaining) {
                    self.live
                        .route(self.live.traffic(), &env, &self.data())
                        .await
                        .map_err(Stop::Failed)?;
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

    /// Checks except those of the `not` kind.
    fn checks(&self, not: CheckWhen) -> Vec<Command> {
        self.cx
            .environment
            .checks
            .iter()
            .filter(|c| c.when != not)
            .map(|c| c.command.clone())
            .collect()
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
                    if !self.live.canary_healthy() && self.live.status().versions.iter().any(|v| v.role == "canary") {
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

    /// Starts the canary analysis with the first partial shift; ends it when the new version
    /// takes all the traffic (there is no baseline left to compare with).
    fn follow_analysis(&mut self, percent: u32) {
        if percent >= 100 {
            self.analysis = None;
            return;
        }
        let Strategy::Canary(canary) = &self.cx.environment.strategy else {
            return;
        };
        let (Some(spec), None) = (&canary.analysis, &self.analysis) else {
            return;
        };
        let status = self.live.status();
        let version = |role: &str| {
            status
                .versions
                .iter()
                .find(|v| v.role == role)
                .map(|v| v.version.clone())
        };
        let baseline = version("baseline").or_else(|| version("stable"));
        let (Some(baseline), Some(canary)) = (baseline, version("canary")) else {
            return;
        };
        let subjects = Subjects {
            project: self.cx.release.project.clone(),
            environment: self.cx.environment.name.clone(),
            canary,
            baseline,
        };
        self.analysis = Some(Analysis::new(spec.clone(), subjects, self.live.version_metrics()));
    }

    /// With `baseline: fresh`, before the first partial shift: starts a copy of the stable
    /// version (as many instances as the canary) for the analysis to compare with.
    async fn start_fresh_baseline(&mut self, percent: u32) -> Result<(), Stop> {
        let Strategy::Canary(canary) = &self.cx.environment.strategy else {
            return Ok(());
        };
        let fresh = canary
            .analysis
            .as_ref()
            .is_some_and(|a| a.baseline == Baseline::Fresh);
        let status = self.live.status();
        let has = |role: &str| status.versions.iter().find(|v| v.role == role);
        let Some(stable) = has("stable") else {
            return Ok(());
        };
        if !fresh || percent >= 100 || self.analysis.is_some() || has("baseline").is_some() {
            return Ok(());
        }
        let stable_release = stable.release_id;
        let stable_cx = self
            .delivery
            .context(stable_release, &self.cx.environment.name)
            .await
            .map_err(|e| Stop::Failed(format!("cannot start a fresh baseline: {e}")))?;
        let version = format!("{}-baseline", version_name(stable_release));
        let mut spec = version_spec(self.delivery, &stable_cx, self.id, &version)
            .await
            .map_err(Stop::Failed)?;
        spec.instances = self.cx.spec.instances;
        self.start_version(spec, stable_release, "the fresh baseline", Live::set_baseline)
            .await
    }

    /// Takes the fresh baseline out of the router, drains and stops it.
    async fn retire_baseline(&self) {
        let Some(baseline) = self.live.take_baseline() else {
            return;
        };
        match self
            .live
            .route(self.live.traffic(), &self.cx.environment, &self.data())
            .await
        {
            Ok(()) => self.live.drain(&baseline.version, DRAIN_LIMIT).await,
            Err(error) => {
                tracing::error!(deployment = self.id, %error, "cannot take the fresh baseline out of the router")
            }
        }
        baseline.running.stop().await;
    }

    /// One look at the metrics: a failure stops the rollout (a non-critical metric's is a warning).
    async fn look(&mut self) -> Result<(), Stop> {
        let Some(analysis) = &mut self.analysis else {
            return Ok(());
        };
        let failed = analysis.look(self.live.version_metrics()).await;
        self.judged(failed).await
    }

    /// Records judgements; the first failure stops the rollout with its summary.
    async fn judged(&self, judgements: Vec<Judgement>) -> Result<(), Stop> {
        let mut stop = None;
        for judgement in judgements {
            if judgement.verdict == Verdict::Fail && stop.is_none() {
                stop = Some(format!("analysis failed: {}", judgement.summary));
            }
            self.record(Event::DeploymentJudged {
                deployment_id: self.id,
                metric: judgement.metric,
                verdict: judgement.verdict,
                traffic: self.live.traffic(),
                summary: judgement.summary,
                evidence: judgement.evidence,
            })
            .await?;
        }
        stop.map_or(Ok(()), |reason| Err(Stop::Failed(reason)))
    }

    /// At the end of a canary step: runs the step's checks, then waits (looking) until every
    /// metric can be judged or `max_duration` is over, and acts on the verdict.
    async fn end_step(&mut self) -> Result<(), Stop> {
        let Some(analysis) = &self.analysis else {
            return Ok(());
        };
        let url = self.live.canary_addr().map(|a| format!("http://{a}"));
        let mut outcomes = Vec::new();
        for (name, source) in analysis.checks() {
            let outcome = match source {
                MetricSource::Webhook {
                    url,
                    timeout,
                    retries,
                } => analysis.webhook(&url, timeout, retries).await,
                MetricSource::Command {
                    run,
                    timeout,
                    retries,
                } => {
                    self.analysis_command(&name, &run, timeout, retries, url.clone())
                        .await
                }
                _ => continue,
            };
            outcomes.push((name, outcome));
        }
        let analysis = self.analysis.as_mut().expect("checked above");
        let failed: Vec<Judgement> = outcomes
            .into_iter()
            .filter_map(|(name, outcome)| analysis.check_ran(&name, outcome))
            .collect();
        self.judged(failed).await?;
        let started = tokio::time::Instant::now();
        loop {
            let Some(analysis) = &self.analysis else {
                return Ok(());
            };
            let out_of_time = started.elapsed() >= analysis.max_duration();
            match analysis.end_step(out_of_time) {
                StepEnd::Pass(judgements) => return self.judged(judgements).await,
                StepEnd::Fail(judgements) => {
                    let failed: Vec<String> = judgements
                        .iter()
                        .filter(|j| j.verdict == Verdict::Fail)
                        .map(|j| j.summary.clone())
                        .collect();
                    self.judged(judgements).await?;
                    return Err(Stop::Failed(format!("analysis failed: {}", failed.join("; "))));
                }
                StepEnd::NeedMoreData => {
                    let interval = analysis.interval();
                    self.wait(Some(interval)).await?;
                }
                StepEnd::Inconclusive(judgements) => {
                    let rollback = analysis.inconclusive_rolls_back();
                    let reason: Vec<String> = judgements
                        .iter()
                        .filter(|j| j.verdict == Verdict::Inconclusive)
                        .map(|j| j.summary.clone())
                        .collect();
                    let reason = format!("analysis inconclusive: {}", reason.join("; "));
                    self.judged(judgements).await?;
                    if rollback {
                        return Err(Stop::Failed(reason));
                    }
                    self.record(Event::DeploymentPaused {
                        deployment_id: self.id,
                        by: reason,
                    })
                    .await?;
                    return self.wait(None).await;
                }
            }
        }
    }

    /// The post-promotion gate: watches the new version, with all the traffic, for `duration`
    /// (the burn rate every second), then evaluates the SLO against earlier releases' results.
    async fn verify(&mut self, duration: Duration) -> Result<(), Stop> {
        let Some(spec) = self.cx.environment.verify.clone() else {
            return Ok(());
        };
        let status = self.live.status();
        let Some(version) = status
            .versions
            .iter()
            .find(|v| v.role == "canary")
            .map(|v| v.version.clone())
        else {
            return Ok(());
        };
        let Some(start) = self.live.metrics_of(&version) else {
            return Ok(());
        };
        let mut watch = verify::Watch::new(start);
        let began = tokio::time::Instant::now();
        while began.elapsed() < duration {
            let left = duration.saturating_sub(began.elapsed());
            self.wait(Some(left.min(Duration::from_secs(1)))).await?;
            if let Some(now) = self.live.metrics_of(&version) {
                watch.record(began.elapsed(), now);
            }
            if let Some(budget) = &spec.error_budget
                && let Some(burning) = watch.burning(budget)
            {
                return self.judged(vec![burning.into()]).await;
            }
        }
        let mut outcomes = Vec::new();
        if let Some(budget) = &spec.error_budget {
            outcomes.push(verify::Outcome {
                metric: "error_budget",
                verdict: Verdict::Pass,
                summary: format!(
                    "error_budget: never burning faster than {}× (SLO {}) over {}s",
                    budget.max_burn_rate,
                    budget.target,
                    duration.as_secs()
                ),
                evidence: serde_json::json!({ "test": "multi-window burn rate", "target": budget.target, "max_burn_rate": budget.max_burn_rate }),
            });
        }
        if let Some(slo) = &spec.slo {
            let earlier = self
                .delivery
                .engine
                .store()
                .environment_judgements(&self.cx.release.project, &self.cx.environment.name, "slo", 100)
                .await
                .map_err(|e| Stop::Failed(format!("cannot read earlier SLO results: {e}")))?;
            let evidence: Vec<serde_json::Value> = earlier.into_iter().map(|j| j.evidence).collect();
            let previous = verify::previous_results(&evidence);
            outcomes.push(verify::evaluate(slo, &watch.slis(duration), &previous));
        }
        self.judged(outcomes.into_iter().map(Into::into).collect()).await
    }

    /// Runs an analysis command (exit 0 passes), `retries` more times after a failure.
    async fn analysis_command(
        &self,
        name: &str,
        run: &str,
        timeout: Duration,
        retries: u32,
        url: Option<String>,
    ) -> Result<(), String> {
        let command = Command {
            name: name.to_string(),
            run: run.to_string(),
            timeout: Some(timeout),
        };
        let mut last = String::new();
        for _ in 0..=retries {
            match self
                .commands("analysis", std::slice::from_ref(&command), url.clone())
                .await
            {
                Ok(()) => return Ok(()),
                Err(Stop::Failed(reason) | Stop::Aborted(reason)) => last = reason,
            }
        }
        Err(last)
    }

    async fn shift(&self, percent: u32) -> Result<(), Stop> {
        if !self.live.canary_healthy() {
            return Err(Stop::Failed(
                "the new version has no healthy instance: traffic not shifted".into(),
            ));
        }
        self.live
            .route(percent, &self.cx.environment, &self.data())
            .await
            .map_err(Stop::Failed)
    }

    async fn start_new(&mut self, instances: u32) -> Result<(), Stop> {
        if self.live.status().versions.iter().any(|v| v.role == "canary") {
            // Rolling: the next batch joins the instances already started.
            let grown = self.live.grow_canary(instances).await.map_err(Stop::Failed)?;
            self.live
                .route(self.live.traffic(), &self.cx.environment, &self.data())
                .await
                .map_err(Stop::Failed)?;
            let version = version_name(self.cx.release.id);
            let instances = grown
                .iter()
                .map(|s| InstanceRef {
                    addr: s.addr,
                    pid: s.pid,
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
        let mut spec = version_spec(
            self.delivery,
            &self.cx,
            self.id,
            &version_name(self.cx.release.id),
        )
        .await
        .map_err(Stop::Failed)?;
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
                pid: s.pid,
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
            .route(0, &self.cx.environment, &self.data())
            .await
            .map_err(Stop::Failed)?;
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
        let routed = self.live.route(0, &self.cx.environment, &self.data()).await;
        let outcome = match routed {
            Ok(()) => {
                let phase = Event::DeploymentPhase {
                    deployment_id: self.id,
                    index: 0,
                    phase: "send all traffic to the warm version".into(),
                    traffic: 100,
                };
                self.delivery.engine.record(phase).await?;
                Ok(())
            }
            Err(e) => Err(Stop::Failed(e)),
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
                match self.live.route(0, &self.cx.environment, &self.data()).await {
                    Ok(()) => self.live.drain(&canary.version, DRAIN_LIMIT).await,
                    Err(error) => {
                        tracing::error!(deployment = self.id, %error, "cannot send traffic back to the stable version");
                    }
                }
            }
            canary.running.stop().await;
        }
        finish(self.delivery, self.id, status, reason).await
    }

    /// Runs hooks or checks in the release directory; the first failure fails the deployment.
    async fn commands(&self, kind: &str, commands: &[Command], url: Option<String>) -> Result<(), Stop> {
        if commands.is_empty() {
            return Ok(());
        }
        let engine = &self.delivery.engine;
        let log = Arc::new(
            engine
                .data()
                .logs
                .open(LogOf::Deployment(self.id))
                .map_err(|e| Stop::Failed(e.to_string()))?,
        );
        let (env, secrets) = environment_of(self.delivery, &self.cx, &version_name(self.cx.release.id))
            .await
            .map_err(Stop::Failed)?;
        let dir = release_dir(self.delivery, &self.cx, self.id);
        std::fs::create_dir_all(&dir).map_err(|e| Stop::Failed(e.to_string()))?;
        let masker = Arc::new(Masker::new(secrets.iter().map(String::as_str)));
        for (index, command) in commands.iter().enumerate() {
            let mut vars = env.clone();
            if let Some(url) = &url {
                vars.push(("URL".into(), url.clone()));
            }
            let sink = StepLog {
                log: log.clone(),
                masker: masker.clone(),
                observers: Vec::new(),
                job: format!("{kind}: {}", command.name),
                attempt: 1,
                step: index as u32,
                limit: engine.config.step_log_limit,
                written: 0,
                truncated: false,
            };
            let spec = StepSpec {
                script: command.run.clone(),
                env: vars,
                workdir: dir.clone(),
                timeout: Some(command.timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT)),
            };
            let outcome = engine
                .executor
                .run_step(spec, sink.sink(), CancellationToken::new())
                .await
                .map_err(|e| Stop::Failed(format!("{kind} '{}' did not start: {e}", command.name)))?;
            match outcome {
                StepOutcome::Succeeded => {}
                StepOutcome::Failed { exit_code } => {
                    return Err(Stop::Failed(format!(
                        "{kind} '{}' failed (exit code {})",
                        command.name,
                        exit_code.map_or("none".into(), |c| c.to_string())
                    )));
                }
                StepOutcome::TimedOut => {
                    return Err(Stop::Failed(format!("{kind} '{}' timed out", command.name)));
                }
                StepOutcome::Cancelled => {
                    return Err(Stop::Failed(format!("{kind} '{}' was cancelled", command.name)));
                }
            }
        }
        Ok(())
    }
}

fn release_dir(delivery: &Delivery, cx: &Context, deployment: i64) -> std::path::PathBuf {
    delivery
        .engine
        .data()
        .root
        .join("releases")
        .join(&cx.release.project)
        .join(&cx.environment.name)
        .join(format!("{}-d{deployment}", version_name(cx.release.id)))
}

/// The instances' environment (PATH and the like, `CONVEYOR_*`, `release.env`, the
/// environment's `env`, with `${{ }}` resolved) and the secret values to mask.
async fn environment_of(
    delivery: &Delivery,
    cx: &Context,
    version: &str,
) -> Result<(Vec<(String, String)>, Vec<String>), String> {
    let store = delivery.engine.store();
    let secrets: BTreeMap<String, String> = store
        .secrets(&cx.release.project)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    let lookup = |reference: &str| -> Option<String> {
        if let Some(name) = reference.strip_prefix("secrets.") {
            return secrets.get(name).cloned();
        }
        match reference {
            "branch" => Some(cx.release.branch.clone()),
            "sha" => Some(cx.release.commit.clone()),
            "project" => Some(cx.release.project.clone()),
            "run_id" => Some(cx.release.run_id.to_string()),
            "event" => Some("deploy".into()),
            "job" => Some(String::new()),
            _ => None,
        }
    };
    let mut env: BTreeMap<String, String> = delivery.engine.config.base_env.iter().cloned().collect();
    for (k, v) in [
        ("CONVEYOR_PROJECT", cx.release.project.clone()),
        ("CONVEYOR_ENVIRONMENT", cx.environment.name.clone()),
        ("CONVEYOR_RELEASE", cx.release.id.to_string()),
        ("CONVEYOR_VERSION", version.to_string()),
        ("CONVEYOR_COMMIT_SHA", cx.release.commit.clone()),
    ] {
        env.insert(k.to_string(), v);
    }
    for (k, v) in cx.spec.env.iter().chain(&cx.environment.env) {
        let value = expr::interpolate(v, lookup).map_err(|e| format!("{k}: {e}"))?;
        env.insert(k.clone(), value);
    }
    let marker = instance_marker(delivery, &cx.release.project, &cx.environment.name, version);
    let (name, value) = marker.split_once('=').expect("markers are NAME=VALUE");
    env.insert(name.to_string(), value.to_string());
    Ok((env.into_iter().collect(), secrets.into_values().collect()))
}

/// Lays the release's files out in a fresh directory and describes its instances.
/// `version` is how the router and the instance markers name it: `r<release>`, or
/// `r<release>-baseline` for a fresh baseline.
async fn version_spec(
    delivery: &Delivery,
    cx: &Context,
    deployment: i64,
    version: &str,
) -> Result<VersionSpec, String> {
    let store = delivery.engine.store();
    let artifacts = if cx.spec.from.is_empty() {
        cx.release.artifacts.clone()
    } else {
        let mut picked = Vec::new();
        for job in &cx.spec.from {
            picked.extend(
                store
                    .artifacts_of(cx.release.run_id, job)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        picked
    };
    let cas = &delivery.engine.data().cas;
    let files: Vec<(String, std::path::PathBuf)> = artifacts
        .iter()
        .map(|a| {
            cas.path(&a.digest)
                .filter(|p| p.is_file())
                .map(|p| (a.path.clone(), p))
                .ok_or_else(|| {
                    format!(
                        "artifact {} of release {} is missing from the store",
                        a.path, cx.release.id
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    let dir = release_dir(delivery, cx, deployment);
    let _ = std::fs::remove_dir_all(&dir);
    conveyor_deploy::lay_out(&dir, &files).map_err(|e| e.to_string())?;
    let command = expr::interpolate(&cx.spec.run, |r| match r {
        "project" => Some(cx.release.project.clone()),
        "sha" => Some(cx.release.commit.clone()),
        "branch" => Some(cx.release.branch.clone()),
        _ => None,
    })
    .map_err(|e| format!("release.run: {e}"))?;
    let (env, _) = environment_of(delivery, cx, version).await?;
    Ok(VersionSpec {
        version: version.to_string(),
        log_dir: dir.join(".conveyor-logs"),
        dir,
        command,
        env,
        instances: cx.spec.instances,
        health: cx.spec.health.clone(),
        stop_signal: cx.spec.stop_signal,
        stop_grace: cx.spec.stop_grace,
    })
}

/// After a restart: every environment's router serves its last config first; the stable
/// version's instances, which outlived the server, are adopted (or replaced if they died);
/// instances of any other version are stopped; interrupted deployments are recorded as failed —
/// traffic is already on the stable version — and gated ones wait again.
pub(crate) async fn recover(delivery: &Arc<Delivery>) -> Result<(), EngineError> {
    let data = delivery.engine.data().root.clone();
    let store = delivery.engine.store();
    let history = store.deployments(None, None, 100_000).await?;
    let environments: BTreeSet<(String, String)> = history
        .iter()
        .map(|d| (d.project.clone(), d.environment.clone()))
        .collect();
    for (project, environment) in &environments {
        let live = delivery.live(project, environment);
        if let Ok(bytes) = std::fs::read(live.router_file(&data))
            && let Ok(saved) = serde_json::from_slice::<super::environment::SavedRouter>(&bytes)
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
            let killed = delivery.engine.executor.kill_leftovers(&instance_marker(
                delivery,
                project,
                environment,
                version,
            ));
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

/// Brings back the instances of `release_id`: adopted when every recorded instance is still ours
/// and alive, started afresh otherwise; then routes all traffic to them.
async fn readopt(
    delivery: &Arc<Delivery>,
    live: &Arc<Live>,
    history: &[&DeploymentView],
    release_id: i64,
) -> Result<(), String> {
    let version = version_name(release_id);
    // The newest deployment that started instances of this version.
    let Some(started) = history
        .iter()
        .find(|d| d.instances.get(&version).is_some_and(|i| !i.is_empty()))
    else {
        return Err(format!("no instances of {version} were recorded"));
    };
    let cx = delivery
        .context(release_id, &live.name)
        .await
        .map_err(|e| e.to_string())?;
    let marker = instance_marker(delivery, &live.project, &live.name, &version);
    let recorded = &started.instances[&version];
    let ours: Vec<(std::net::SocketAddr, u32)> = recorded
        .iter()
        .filter_map(|i| {
            i.pid
                .filter(|pid| has_marker(*pid, &marker))
                .map(|pid| (i.addr, pid))
        })
        .collect();
    let running: Box<dyn RunningVersion> = if ours.len() == recorded.len() {
        let spec = adopted_spec(delivery, &cx, started.id).await?;
        delivery
            .target
            .adopt(spec, ours)
            .await
            .map_err(|e| e.to_string())?
    } else {
        delivery.engine.executor.kill_leftovers(&marker);
        let spec = version_spec(delivery, &cx, started.id, &version_name(release_id)).await?;
        delivery.target.start(spec).await.map_err(|e| e.to_string())?
    };
    let adopted = running.status().iter().filter(|s| s.restarts == 0).count();
    tracing::info!(project = %live.project, environment = %live.name, %version, adopted, "stable version is back");
    live.set_stable(Active {
        release_id,
        version,
        running,
    });
    live.route(0, &cx.environment, &delivery.engine.data().root).await
}

/// The spec of instances already laid out by deployment `deployment` (nothing is rewritten).
async fn adopted_spec(delivery: &Delivery, cx: &Context, deployment: i64) -> Result<VersionSpec, String> {
    let dir = release_dir(delivery, cx, deployment);
    let (env, _) = environment_of(delivery, cx, &version_name(cx.release.id)).await?;
    Ok(VersionSpec {
        version: version_name(cx.release.id),
        log_dir: dir.join(".conveyor-logs"),
        dir,
        command: cx.spec.run.clone(),
        env,
        instances: cx.spec.instances,
        health: cx.spec.health.clone(),
        stop_signal: cx.spec.stop_signal,
        stop_grace: cx.spec.stop_grace,
    })
}

/// Whether process `pid` carries `marker` in its environment (and so is one of ours, not a
/// process that reused the pid).
fn has_marker(pid: u32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == marker.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_and_phases_read_as_sentences() {
        let until = "2026-11-23T08:00:00Z".parse().unwrap();
        let cases = [
            (
                Gate::AwaitingApproval { have: 1, need: 2 },
                "waiting for approval (1 of 2)",
            ),
            (
                Gate::Frozen { until, reason: None },
                "frozen until 2026-11-23T08:00:00Z",
            ),
            (
                Gate::Frozen {
                    until,
                    reason: Some("weekend".into()),
                },
                "frozen until 2026-11-23T08:00:00Z (weekend)",
            ),
        ];
        for (gate, want) in cases {
            assert_eq!(gate_text(&gate), want);
        }
        assert_eq!(
            describe(&Phase::Shift { percent: 25 }),
            "shift 25% of the traffic to the new version"
        );
        assert_eq!(describe(&Phase::Wait(Duration::from_secs(30))), "wait 30s");
        assert_eq!(version_name(12), "r12");
    }
}
