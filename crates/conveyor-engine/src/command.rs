//! What a step, hook or check runs with: its environment (the server's basics, the `CONVEYOR_*`
//! facts, the pipeline's `env` with `${{ }}` filled in from one `Vocabulary`), and commands the
//! server runs outside a pipeline (a deployment's hooks and checks), logged like steps.

use std::collections::BTreeMap;
use std::sync::Arc;

use conveyor_exec::{CancellationToken, StepOutcome, StepSpec};
use conveyor_spec::expr::{UnknownRef, Vocabulary};
use conveyor_store::logs::LogOf;

use crate::output::{Masker, StepLog};
use crate::{Engine, EngineError};

/// A `${{ }}` that cannot be filled in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("secret '{name}' is not set for project '{project}' (set it with `conveyor secret set`)")]
    MissingSecret { name: String, project: String },
    #[error(transparent)]
    Unknown(UnknownRef),
}

/// `text` with every `${{ }}` filled in from `vocabulary`.
pub fn fill(vocabulary: &Vocabulary<'_>, text: &str) -> Result<String, TemplateError> {
    vocabulary
        .interpolate(text)
        .map_err(|e| match e.0.strip_prefix("secrets.") {
            Some(name) => TemplateError::MissingSecret {
                name: name.to_string(),
                project: vocabulary.project.to_string(),
            },
            None => TemplateError::Unknown(e),
        })
}

/// A command's whole environment: `base` (PATH, HOME, …), then the `conveyor` facts, then each
/// `env` map of `layers` in order (later ones win), its values filled in from `vocabulary`.
pub fn environment<'a>(
    base: &[(String, String)],
    conveyor: impl IntoIterator<Item = (&'static str, String)>,
    layers: impl IntoIterator<Item = &'a BTreeMap<String, String>>,
    vocabulary: &Vocabulary<'_>,
) -> Result<BTreeMap<String, String>, TemplateError> {
    let mut env: BTreeMap<String, String> = base.iter().cloned().collect();
    env.extend(conveyor.into_iter().map(|(k, v)| (k.to_string(), v)));
    for layer in layers {
        for (k, v) in layer {
            env.insert(k.clone(), fill(vocabulary, v)?);
        }
    }
    Ok(env)
}

/// A command the server runs outside a pipeline run (a deployment's hook, check or analysis
/// command): through the same executor as steps, its output masked and capped like theirs.
pub struct LoggedCommand {
    /// The log its lines go to.
    pub log: LogOf,
    /// How its lines are labelled there (the `job` of each line), e.g. `check: smoke`.
    pub label: String,
    /// Its place among the commands under the same label.
    pub index: u32,
    pub step: StepSpec,
    /// Values masked in its output.
    pub secrets: Vec<String>,
}

impl Engine {
    /// The environment every command starts from (PATH, HOME, …).
    pub fn base_env(&self) -> &[(String, String)] {
        &self.config.base_env
    }

    /// Runs `command` to its end; `Err` only when it could not be logged or started.
    pub async fn run_logged(&self, command: LoggedCommand) -> Result<StepOutcome, EngineError> {
        let log = Arc::new(self.data.logs.open(command.log)?);
        let masker = Arc::new(Masker::new(command.secrets.iter().map(String::as_str)));
        let sink = StepLog::new(
            log,
            masker,
            Vec::new(),
            command.label,
            1,
            command.index,
            self.config.step_log_limit,
        );
        Ok(self
            .executor
            .run_step(command.step, sink.sink(), CancellationToken::new())
            .await?)
    }
}
