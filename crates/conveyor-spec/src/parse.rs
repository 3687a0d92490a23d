//! Text → `Pipeline`, with budgets and located errors.
//!
//! The YAML is first loaded into a located tree (`crate::yaml`), then walked by hand: that is
//! what gives every error a precise `line:col` and lets us keep going after the first problem.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::SpecErrors;
use crate::expr::{Condition, Vocabulary, scan_templates};
use crate::model::{Concurrency, Job, Pipeline, PushTrigger, Step, Triggers};
use crate::yaml::{self, Kind, Node};

pub(crate) use checker::check_cron;
#[cfg(test)]
use checker::parse_duration;
use checker::{Checker, Fields, check_artifact, is_identifier, suggest};
use cycles::find_cycles;

/// Larger files are refused before parsing.
pub const MAX_SOURCE_BYTES: usize = 1024 * 1024;

const TOP_KEYS: &[&str] = &[
    "name",
    "on",
    "env",
    "concurrency",
    "jobs",
    "release",
    "environments",
];
const ON_KEYS: &[&str] = &["push", "manual", "schedule"];
const PUSH_KEYS: &[&str] = &["branches"];
const CONCURRENCY_KEYS: &[&str] = &["group", "cancel_in_progress"];
const JOB_KEYS: &[&str] = &["needs", "if", "env", "timeout", "retries", "steps", "artifacts"];
const STEP_KEYS: &[&str] = &["name", "run", "env", "timeout", "continue_on_error"];

const MAX_RETRIES: u32 = 10;
const MAX_STEP_NAME_CHARS: usize = 60;

/// `concurrency.group` is resolved before any job runs, so only run-wide values make sense.
const GROUP_REFS: &str = "branch, project";

/// Which `${{ }}` references a text may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refs {
    /// A step's `run` or an `env` value: the whole vocabulary and secrets.
    Run,
    /// `concurrency.group`, resolved before any job runs.
    Group,
    /// A command line that outlives a step (`release.run`): no secrets.
    CommandLine,
}

/// Parses and validates `source`; `file_name` prefixes every error.
pub fn parse(file_name: &str, source: &str) -> Result<Pipeline, SpecErrors> {
    let mut cx = Checker {
        file: file_name,
        errors: Vec::new(),
    };
    if source.len() > MAX_SOURCE_BYTES {
        cx.error_at(
            1,
            1,
            format!(
                "file is too large ({} bytes; the limit is {MAX_SOURCE_BYTES} bytes)",
                source.len()
            ),
        );
        return Err(SpecErrors(cx.errors));
    }
    let root = match yaml::load(source) {
        Ok(root) => root,
        Err(e) => {
            cx.error_at(e.line, e.col, e.message);
            return Err(SpecErrors(cx.errors));
        }
    };
    let pipeline = cx.pipeline(&root);
    if cx.errors.is_empty() {
        Ok(pipeline)
    } else {
        // Stable: errors at the same place keep the order they were found in.
        cx.errors.sort_by_key(|e| (e.line, e.col));
        Err(SpecErrors(cx.errors))
    }
}

impl Checker<'_> {
    fn templates(&mut self, what: &str, node: &Node, text: &str, refs: Refs) {
        let found = match scan_templates(text) {
            Ok(found) => found,
            Err(_) => {
                self.error(node, format!("unterminated '${{{{' in {what} (missing '}}}}')"));
                return;
            }
        };
        for r in found {
            let reference = r.reference.as_str();
            let secret = reference.starts_with("secrets.");
            let ok = match refs {
                Refs::Group => matches!(reference, "branch" | "project"),
                Refs::Run => is_run_ref(reference),
                Refs::CommandLine => !secret && is_run_ref(reference),
            };
            if ok {
                continue;
            }
            let message = match refs {
                Refs::CommandLine if secret && is_run_ref(reference) => format!(
                    "'${{{{ {reference} }}}}' in {what}: a secret on a command line is readable by anyone who can list processes; pass it in release.env instead"
                ),
                Refs::Group => {
                    format!("unknown reference '${{{{ {reference} }}}}' in {what}; allowed: {GROUP_REFS}")
                }
                Refs::Run | Refs::CommandLine => format!(
                    "unknown reference '${{{{ {reference} }}}}' in {what}; allowed: {}{}",
                    if refs == Refs::Run { "secrets.NAME, " } else { "" },
                    Vocabulary::NAMES.join(", ")
                ),
            };
            self.error(node, message);
        }
    }

    fn env(&mut self, what: &str, node: &Node) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Kind::Map(entries) = &node.kind else {
            // `env:` with nothing under it is an empty map, not a mistake worth an error.
            if node.kind != Kind::Null {
                self.type_error(what, "a mapping of names to values", node);
            }
            return out;
        };
        for (name, key, value) in self.unique_entries(entries, "env variable") {
            if !is_identifier(name, false) {
                self.error(
                    key,
                    format!("invalid environment variable name '{name}' — use letters, digits and '_'"),
                );
                continue;
            }
            let text = match &value.kind {
                Kind::Null => String::new(),
                _ => match value.scalar_text() {
                    Some(text) => text,
                    None => {
                        self.type_error(&format!("{what}.{name}"), "a string", value);
                        continue;
                    }
                },
            };
            self.templates(&format!("{what}.{name}"), value, &text, Refs::Run);
            out.insert(name.to_string(), text);
        }
        out
    }

    fn pipeline(&mut self, root: &Node) -> Pipeline {
        let mut pipeline = Pipeline {
            name: String::new(),
            on: default_triggers(),
            env: BTreeMap::new(),
            concurrency: None,
            jobs: Vec::new(),
            release: None,
            environments: Vec::new(),
        };
        if root.kind == Kind::Null {
            // An empty document's position is its end; the start is more useful.
            self.error_at(1, 1, "the file is empty; a pipeline needs 'name' and 'jobs'");
            return pipeline;
        }
        let Some(fields) = self.fields(root, "the top level", TOP_KEYS) else {
            return pipeline;
        };
        match fields.get("name") {
            Some(node) => {
                pipeline.name = self.non_empty_string("name", node).unwrap_or_default();
            }
            None => self.error(root, "missing required key 'name'"),
        }
        if let Some(node) = fields.get("on") {
            pipeline.on = self.triggers(node);
        }
        if let Some(node) = fields.get("env") {
            pipeline.env = self.env("env", node);
        }
        if let Some(node) = fields.get("concurrency") {
            pipeline.concurrency = self.concurrency(node);
        }
        match fields.get("jobs") {
            Some(node) => pipeline.jobs = self.jobs(node),
            None => self.error(root, "missing required key 'jobs'"),
        }
        if let Some(node) = fields.get("release") {
            pipeline.release = self.release(node, &pipeline.jobs);
        }
        if let Some(node) = fields.get("environments") {
            pipeline.environments = self.environments(node);
            if pipeline.release.is_none() && !pipeline.environments.is_empty() {
                self.error(
                    node,
                    "environments need a 'release:' section saying how an instance runs",
                );
            }
        }
        pipeline
    }

    fn triggers(&mut self, node: &Node) -> Triggers {
        let mut on = Triggers {
            push: None,
            manual: false,
            schedule: Vec::new(),
        };
        match &node.kind {
            Kind::Str(_) | Kind::Seq(_) => {
                let mut seen = HashSet::new();
                for (name, item) in self.string_list("on", node) {
                    if !seen.insert(name.clone()) {
                        self.error(item, format!("duplicate trigger '{name}'"));
                        continue;
                    }
                    match name.as_str() {
                        "push" => on.push = Some(PushTrigger { branches: vec![] }),
                        "manual" => on.manual = true,
                        "schedule" => self.error(
                            item,
                            "schedule needs cron expressions: use on: { schedule: ['0 3 * * *'] }",
                        ),
                        _ => {
                            let message = match suggest(&name, ON_KEYS.iter().copied()) {
                                Some(s) => {
                                    format!("unknown trigger '{name}' — did you mean '{s}'?")
                                }
                                None => format!(
                                    "unknown trigger '{name}'; expected one of: {}",
                                    ON_KEYS.join(", ")
                                ),
                            };
                            self.error(item, message);
                        }
                    }
                }
            }
            Kind::Map(_) => {
                let Some(fields) = self.fields(node, "on", ON_KEYS) else {
                    return on;
                };
                if let Some(push) = fields.get("push") {
                    on.push = self.push(push);
                }
                if let Some(manual) = fields.get("manual") {
                    on.manual = self.boolean("manual", manual).unwrap_or(false);
                }
                if let Some(schedule) = fields.get("schedule") {
                    for (cron, item) in self.string_list("schedule", schedule) {
                        match check_cron(&cron) {
                            Ok(()) => on.schedule.push(cron),
                            Err(refused) => self.error(item, refused.to_string()),
                        }
                    }
                }
            }
            _ => self.type_error("on", "a mapping or a list of triggers", node),
        }
        on
    }

    fn push(&mut self, node: &Node) -> Option<PushTrigger> {
        let mut push = PushTrigger { branches: vec![] };
        // `push:` alone means every branch.
        if node.kind == Kind::Null {
            return Some(push);
        }
        let fields = self.fields(node, "push", PUSH_KEYS)?;
        if let Some(branches) = fields.get("branches") {
            for (pattern, item) in self.string_list("branches", branches) {
                match globset::Glob::new(&pattern) {
                    Ok(_) => push.branches.push(pattern),
                    Err(e) => self.error(item, format!("invalid branch pattern '{pattern}': {}", e.kind())),
                }
            }
        }
        Some(push)
    }

    fn concurrency(&mut self, node: &Node) -> Option<Concurrency> {
        let mut out = Concurrency {
            group: String::new(),
            cancel_in_progress: false,
        };
        let group_node = match &node.kind {
            Kind::Map(_) => {
                let fields = self.fields(node, "concurrency", CONCURRENCY_KEYS)?;
                if let Some(cancel) = fields.get("cancel_in_progress") {
                    out.cancel_in_progress = self.boolean("cancel_in_progress", cancel).unwrap_or(false);
                }
                match fields.get("group") {
                    Some(group) => group,
                    None => {
                        self.error(node, "concurrency has no 'group'");
                        return None;
                    }
                }
            }
            // Shorthand: `concurrency: some-group`.
            _ => node,
        };
        out.group = self.non_empty_string("concurrency.group", group_node)?;
        self.templates("concurrency.group", group_node, &out.group, Refs::Group);
        Some(out)
    }

    fn jobs(&mut self, node: &Node) -> Vec<Job> {
        let Kind::Map(entries) = &node.kind else {
            self.type_error("jobs", "a mapping of job ids to jobs", node);
            return Vec::new();
        };
        let entries = self.unique_entries(entries, "job");
        if entries.is_empty() {
            self.error(node, "jobs must define at least one job");
            return Vec::new();
        }
        let mut jobs = Vec::with_capacity(entries.len());
        // The node that names each need, for locating errors about it.
        let mut need_nodes: Vec<Vec<&Node>> = Vec::with_capacity(entries.len());
        let mut keys = Vec::with_capacity(entries.len());
        for (id, key, value) in entries {
            if !is_identifier(id, true) {
                self.error(
                    key,
                    format!(
                        "invalid job id '{id}' — use letters, digits, '_' and '-', starting with a letter or '_'"
                    ),
                );
            }
            let (job, needs) = self.job(id, key, value);
            jobs.push(job);
            need_nodes.push(needs);
            keys.push(key);
        }
        self.check_needs(&jobs, &need_nodes, &keys);
        jobs
    }

    fn job<'n>(&mut self, id: &str, key: &Node, node: &'n Node) -> (Job, Vec<&'n Node>) {
        let mut job = Job {
            id: id.to_string(),
            needs: Vec::new(),
            condition: None,
            env: BTreeMap::new(),
            timeout: None,
            retries: 0,
            steps: Vec::new(),
            artifacts: Vec::new(),
        };
        let mut need_nodes = Vec::new();
        if node.kind == Kind::Null {
            self.error(key, format!("job '{id}' has no steps"));
            return (job, need_nodes);
        }
        let Some(fields) = self.fields(node, &format!("job '{id}'"), JOB_KEYS) else {
            return (job, need_nodes);
        };
        if let Some(needs) = fields.get("needs") {
            for (need, item) in self.string_list("needs", needs) {
                if job.needs.contains(&need) {
                    self.error(item, format!("job '{id}' needs '{need}' twice"));
                    continue;
                }
                job.needs.push(need);
                need_nodes.push(item);
            }
        }
        if let Some(cond) = fields.get("if") {
            job.condition = self.condition(cond);
        }
        if let Some(env) = fields.get("env") {
            job.env = self.env("env", env);
        }
        if let Some(timeout) = fields.get("timeout") {
            job.timeout = self.duration("timeout", timeout);
        }
        if let Some(retries) = fields.get("retries") {
            match &retries.kind {
                Kind::Int(n, _) => match u32::try_from(*n) {
                    Ok(n) if n <= MAX_RETRIES => job.retries = n,
                    _ => self.error(
                        retries,
                        format!("retries must be between 0 and {MAX_RETRIES}, found {n}"),
                    ),
                },
                _ => self.type_error("retries", "an integer", retries),
            }
        }
        match fields.get("steps") {
            Some(steps) => job.steps = self.steps(id, steps),
            None => self.error(key, format!("job '{id}' has no steps")),
        }
        if let Some(artifacts) = fields.get("artifacts") {
            for (pattern, item) in self.string_list("artifacts", artifacts) {
                match check_artifact(&pattern) {
                    Ok(()) => job.artifacts.push(pattern),
                    Err(refused) => self.error(item, refused.to_string()),
                }
            }
        }
        (job, need_nodes)
    }

    fn condition(&mut self, node: &Node) -> Option<Condition> {
        let text = match &node.kind {
            Kind::Str(s) => s.clone(),
            Kind::Bool(b) => b.to_string(),
            _ => {
                self.type_error("if", "an expression", node);
                return None;
            }
        };
        match Condition::parse(&text) {
            Ok(cond) => Some(cond),
            Err(e) => {
                self.error(
                    node,
                    format!(
                        "invalid if expression \"{}\": {e} (at offset {})",
                        text.trim(),
                        e.offset
                    ),
                );
                None
            }
        }
    }

    fn steps(&mut self, job: &str, node: &Node) -> Vec<Step> {
        let items = match &node.kind {
            Kind::Seq(items) => items,
            Kind::Null => {
                self.error(node, format!("job '{job}' has no steps"));
                return Vec::new();
            }
            _ => {
                self.type_error("steps", "a list of steps", node);
                return Vec::new();
            }
        };
        if items.is_empty() {
            self.error(node, format!("job '{job}' has no steps"));
        }
        let mut steps = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if let Some(step) = self.step(job, i + 1, item) {
                steps.push(step);
            }
        }
        steps
    }

    fn step(&mut self, job: &str, number: usize, node: &Node) -> Option<Step> {
        let mut step = Step {
            name: String::new(),
            run: String::new(),
            env: BTreeMap::new(),
            timeout: None,
            continue_on_error: false,
        };
        let run_node = match &node.kind {
            // Shorthand: `- ./build.sh`.
            Kind::Str(_) => node,
            Kind::Map(_) => {
                let fields = self.fields(node, "step", STEP_KEYS)?;
                if let Some(name) = fields.get("name") {
                    step.name = self.non_empty_string("name", name).unwrap_or_default();
                }
                if let Some(env) = fields.get("env") {
                    step.env = self.env("env", env);
                }
                if let Some(timeout) = fields.get("timeout") {
                    step.timeout = self.duration("timeout", timeout);
                }
                if let Some(flag) = fields.get("continue_on_error") {
                    step.continue_on_error = self.boolean("continue_on_error", flag).unwrap_or(false);
                }
                match fields.get("run") {
                    Some(run) => run,
                    None => {
                        self.error(node, format!("step {number} of job '{job}' has no 'run'"));
                        return None;
                    }
                }
            }
            _ => {
                self.type_error(
                    &format!("step {number} of job '{job}'"),
                    "a command or a mapping with 'run'",
                    node,
                );
                return None;
            }
        };
        step.run = self.string("run", run_node)?;
        if step.run.trim().is_empty() {
            self.error(
                run_node,
                format!("step {number} of job '{job}' has an empty 'run'"),
            );
            return None;
        }
        self.templates("run", run_node, &step.run, Refs::Run);
        if step.name.is_empty() {
            step.name = default_step_name(&step.run);
        }
        Some(step)
    }

    /// Unknown needs, self-needs and cycles. `need_nodes[i][k]` locates `jobs[i].needs[k]`.
    fn check_needs(&mut self, jobs: &[Job], need_nodes: &[Vec<&Node>], keys: &[&Node]) {
        let index: HashMap<&str, usize> = jobs.iter().enumerate().map(|(i, j)| (j.id.as_str(), i)).collect();
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); jobs.len()];
        for (i, job) in jobs.iter().enumerate() {
            for (need, node) in job.needs.iter().zip(&need_nodes[i]) {
                match index.get(need.as_str()) {
                    Some(&j) if j == i => {
                        self.error(node, format!("job '{}' needs itself", job.id));
                    }
                    Some(&j) => edges[i].push(j),
                    None => {
                        let others = jobs.iter().map(|j| j.id.as_str()).filter(|o| *o != job.id);
                        let message = match suggest(need, others) {
                            Some(s) => format!(
                                "job '{}' needs '{need}', which is not a job — did you mean '{s}'?",
                                job.id
                            ),
                            None => format!("job '{}' needs '{need}', which is not a job", job.id),
                        };
                        self.error(node, message);
                    }
                }
            }
        }
        for cycle in find_cycles(&edges) {
            let names: Vec<&str> = cycle
                .iter()
                .chain(cycle.first())
                .map(|&i| jobs[i].id.as_str())
                .collect();
            let first = keys[cycle[0]];
            self.error(first, format!("needs cycle: {}", names.join(" → ")));
        }
    }
}

fn default_triggers() -> Triggers {
    Triggers {
        push: Some(PushTrigger { branches: vec![] }),
        manual: true,
        schedule: Vec::new(),
    }
}

fn is_run_ref(reference: &str) -> bool {
    match reference.strip_prefix("secrets.") {
        Some(name) => is_identifier(name, false),
        None => Vocabulary::NAMES.contains(&reference),
    }
}

/// The first non-blank line of `run`, trimmed to at most 60 characters.
fn default_step_name(run: &str) -> String {
    let line = run.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    line.chars().take(MAX_STEP_NAME_CHARS).collect()
}

mod analysis;
mod checker;
mod cycles;
mod delivery;
mod verify;

#[cfg(test)]
mod tests;
