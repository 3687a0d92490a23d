//! Hooks and checks: commands run in the release directory, logged like steps with the
//! project's secrets masked; the first failure fails the deployment.

use std::time::Duration;

use conveyor_engine::command::LoggedCommand;
use conveyor_exec::StepSpec;
use conveyor_spec::delivery::{CheckWhen, Command};
use conveyor_store::logs::LogOf;

use super::{Rollout, Stop};
use crate::instances::{self, version_name};

/// Hooks and checks without a timeout of their own get this one.
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

impl Rollout<'_> {
    /// Checks except those of the `not` kind.
    pub(super) fn checks(&self, not: CheckWhen) -> Vec<Command> {
        self.cx
            .environment
            .checks
            .iter()
            .filter(|c| c.when != not)
            .map(|c| c.command.clone())
            .collect()
    }

    /// Runs hooks or checks in the release directory; the first failure fails the deployment.
    pub(super) async fn commands(
        &self,
        kind: &str,
        commands: &[Command],
        url: Option<String>,
    ) -> Result<(), Stop> {
        if commands.is_empty() {
            return Ok(());
        }
        let (env, secrets) =
            instances::environment_of(self.delivery, &self.cx, &version_name(self.cx.release.id))
                .await
                .map_err(Stop::failed)?;
        let dir = instances::release_dir(self.delivery, &self.cx, self.id);
        std::fs::create_dir_all(&dir).map_err(Stop::failed)?;
        for (index, command) in commands.iter().enumerate() {
            let mut vars = env.clone();
            if let Some(url) = &url {
                vars.push(("URL".into(), url.clone()));
            }
            let what = format!("{kind} '{}'", command.name);
            let outcome = self
                .delivery
                .engine
                .run_logged(LoggedCommand {
                    log: LogOf::Deployment(self.id),
                    label: format!("{kind}: {}", command.name),
                    index: index as u32,
                    step: StepSpec {
                        script: command.run.clone(),
                        env: vars,
                        workdir: dir.clone(),
                        timeout: Some(command.timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT)),
                    },
                    secrets: secrets.clone(),
                })
                .await
                .map_err(|e| Stop::Failed(format!("{what} did not start: {e}")))?;
            if let Some(failure) = outcome.failure(&what) {
                return Err(Stop::Failed(failure));
            }
        }
        Ok(())
    }
}
