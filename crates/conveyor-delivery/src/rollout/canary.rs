//! Judging the new version while it has traffic: the canary analysis (looked at every interval,
//! judged at the end of each step, with an optional fresh baseline) and the post-promotion
//! verify gate. Every judgement is recorded with its evidence.

use std::time::Duration;

use conveyor_spec::delivery::{Baseline, Command, MetricSource, Strategy};
use conveyor_store::{Event, Verdict};

use super::{DRAIN_LIMIT, Rollout, Stop};
use crate::analysis::{Analysis, CheckFailed, Judgement, StepEnd, Subjects};
use conveyor_api::VersionRole;

use crate::environment::Live;
use crate::instances::{self, version_name};
use crate::verify;

impl Rollout<'_> {
    /// Starts the canary analysis with the first partial shift; ends it when the new version
    /// takes all the traffic (there is no baseline left to compare with).
    pub(super) fn follow_analysis(&mut self, percent: u32) {
        if percent >= 100 {
            self.analysis = None;
            self.delivery.set_standings(self.id, None);
            return;
        }
        let Strategy::Canary(canary) = &self.cx.environment.strategy else {
            return;
        };
        let (Some(spec), None) = (&canary.analysis, &self.analysis) else {
            return;
        };
        let version = |role| self.live.with_role(role).map(|v| v.version);
        let baseline = version(VersionRole::Baseline).or_else(|| version(VersionRole::Stable));
        let (Some(baseline), Some(canary)) = (baseline, version(VersionRole::Canary)) else {
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
    pub(super) async fn start_fresh_baseline(&mut self, percent: u32) -> Result<(), Stop> {
        let Strategy::Canary(canary) = &self.cx.environment.strategy else {
            return Ok(());
        };
        let fresh = canary
            .analysis
            .as_ref()
            .is_some_and(|a| a.baseline == Baseline::Fresh);
        let Some(stable) = self.live.with_role(VersionRole::Stable) else {
            return Ok(());
        };
        if !fresh
            || percent >= 100
            || self.analysis.is_some()
            || self.live.with_role(VersionRole::Baseline).is_some()
        {
            return Ok(());
        }
        let stable_release = stable.release_id;
        let stable_cx = self
            .delivery
            .context(stable_release, &self.cx.environment.name)
            .await
            .map_err(|e| Stop::Failed(format!("cannot start a fresh baseline: {e}")))?;
        let version = format!("{}-baseline", version_name(stable_release));
        let mut spec = instances::version_spec(self.delivery, &stable_cx, self.id, &version)
            .await
            .map_err(Stop::failed)?;
        spec.instances = self.cx.spec.instances;
        self.start_version(spec, stable_release, "the fresh baseline", Live::set_baseline)
            .await
    }

    /// Takes the fresh baseline out of the router, drains and stops it.
    pub(super) async fn retire_baseline(&self) {
        let Some(baseline) = self.live.take_baseline() else {
            return;
        };
        match self.live.route(self.live.traffic(), &self.cx.environment).await {
            Ok(()) => self.live.drain(&baseline.version, DRAIN_LIMIT).await,
            Err(error) => {
                tracing::error!(%error, "cannot take the fresh baseline out of the router")
            }
        }
        baseline.running.stop().await;
    }

    /// One look at the metrics: a failure stops the rollout (a non-critical metric's is a warning).
    pub(super) async fn look(&mut self) -> Result<(), Stop> {
        let Some(analysis) = &mut self.analysis else {
            return Ok(());
        };
        let live = self.live.clone();
        let resources = tokio::task::spawn_blocking(move || live.version_resources())
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "sampling the instances' resources failed");
                None
            });
        let failed = analysis.look(self.live.version_metrics(), resources).await;
        self.delivery.set_standings(self.id, Some(analysis.standings()));
        self.judged(failed).await
    }

    /// Records judgements; the first failure stops the rollout with its summary.
    pub(super) async fn judged(&self, judgements: Vec<Judgement>) -> Result<(), Stop> {
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
    pub(super) async fn end_step(&mut self) -> Result<(), Stop> {
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
    pub(super) async fn verify(&mut self, duration: Duration) -> Result<(), Stop> {
        let Some(spec) = self.cx.environment.verify.clone() else {
            return Ok(());
        };
        let Some(version) = self.live.with_role(VersionRole::Canary).map(|v| v.version) else {
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
    pub(super) async fn analysis_command(
        &self,
        name: &str,
        run: &str,
        timeout: Duration,
        retries: u32,
        url: Option<String>,
    ) -> Result<(), CheckFailed> {
        let command = Command {
            name: name.to_string(),
            run: run.to_string(),
            timeout: Some(timeout),
        };
        let mut last = None;
        for _ in 0..=retries {
            match self
                .commands("analysis", std::slice::from_ref(&command), url.clone())
                .await
            {
                Ok(()) => return Ok(()),
                Err(Stop::Failed(reason) | Stop::Aborted(reason)) => {
                    last = Some(CheckFailed::Command(reason))
                }
            }
        }
        Err(last.expect("at least one try"))
    }
}
