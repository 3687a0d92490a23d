//! Text → `Pipeline`, with budgets and located errors.
//!
//! The YAML is first loaded into a located tree (`crate::yaml`), then walked by hand: that is
//! what gives every error a precise `line:col` and lets us keep going after the first problem.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::error::{SpecError, SpecErrors};
use crate::expr::{Condition, Vocabulary, scan_templates};
use crate::model::{Concurrency, Job, Pipeline, PushTrigger, Step, Triggers};
use crate::yaml::{self, Kind, Node};

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

struct Checker<'f> {
    file: &'f str,
    errors: Vec<SpecError>,
}

/// The known entries of a mapping, first occurrence of each key.
struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(_, _, v)| *v)
    }
}

/// A mapping key as text; `convert` makes every key a string.
fn key_text(key: &Node) -> &str {
    match &key.kind {
        Kind::Str(s) => s,
        _ => "",
    }
}

impl Checker<'_> {
    fn error_at(&mut self, line: usize, col: usize, message: impl Into<String>) {
        self.errors.push(SpecError {
            file: self.file.to_string(),
            line,
            col,
            message: message.into(),
        });
    }

    fn error(&mut self, node: &Node, message: impl Into<String>) {
        self.error_at(node.line, node.col, message);
    }

    fn type_error(&mut self, what: &str, expected: &str, node: &Node) {
        let found = node.describe();
        self.error(node, format!("{what}: expected {expected}, found {found}"));
    }

    /// Entries of a mapping with distinct keys; later duplicates are errors, except keys brought
    /// in by a `<<` merge, which explicit keys override as YAML intends.
    fn unique_entries<'n>(
        &mut self,
        entries: &'n [(Node, Node)],
        noun: &str,
    ) -> Vec<(&'n str, &'n Node, &'n Node)> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let name = key_text(key);
            if seen.insert(name) {
                out.push((name, key, value));
            } else if !key.via_alias {
                self.error(key, format!("duplicate {noun} '{name}'"));
            }
        }
        out
    }

    /// A mapping with a fixed key set: unknown keys are errors, with a suggestion.
    fn fields<'n>(&mut self, node: &'n Node, what: &str, allowed: &[&str]) -> Option<Fields<'n>> {
        let Kind::Map(entries) = &node.kind else {
            self.type_error(what, "a mapping", node);
            return None;
        };
        let mut known = Vec::new();
        for (name, key, value) in self.unique_entries(entries, "key") {
            if allowed.contains(&name) {
                known.push((name, key, value));
            } else {
                let message = match suggest(name, allowed.iter().copied()) {
                    Some(s) => format!("unknown key '{name}' — did you mean '{s}'?"),
                    None => format!("unknown key '{name}'; expected one of: {}", allowed.join(", ")),
                };
                self.error(key, message);
            }
        }
        Some(Fields { entries: known })
    }

    fn string(&mut self, what: &str, node: &Node) -> Option<String> {
        match &node.kind {
            Kind::Str(s) => Some(s.clone()),
            // A number where text is expected is almost always meant as text (`name: 2024`).
            Kind::Int(_, text) | Kind::Float(text) => Some(text.clone()),
            _ => {
                self.type_error(what, "a string", node);
                None
            }
        }
    }

    fn non_empty_string(&mut self, what: &str, node: &Node) -> Option<String> {
        let s = self.string(what, node)?;
        if s.trim().is_empty() {
            self.error(node, format!("{what} must not be empty"));
            return None;
        }
        Some(s)
    }

    fn boolean(&mut self, what: &str, node: &Node) -> Option<bool> {
        match node.kind {
            Kind::Bool(b) => Some(b),
            _ => {
                self.type_error(what, "true or false", node);
                None
            }
        }
    }

    /// `x` or `[x, y]`; returns each string with its node.
    fn string_list<'n>(&mut self, what: &str, node: &'n Node) -> Vec<(String, &'n Node)> {
        let expected = "a string or a list of strings";
        match &node.kind {
            Kind::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match &item.kind {
                        Kind::Str(_) | Kind::Int(..) | Kind::Float(_) => {
                            if let Some(s) = self.string(what, item) {
                                out.push((s, item));
                            }
                        }
                        _ => self.type_error(what, "a list of strings", item),
                    }
                }
                out
            }
            Kind::Str(_) | Kind::Int(..) | Kind::Float(_) => {
                self.string(what, node).map(|s| (s, node)).into_iter().collect()
            }
            _ => {
                self.type_error(what, expected, node);
                Vec::new()
            }
        }
    }

    fn templates(&mut self, what: &str, node: &Node, text: &str, group: bool) {
        let refs = match scan_templates(text) {
            Ok(refs) => refs,
            Err(_) => {
                self.error(node, format!("unterminated '${{{{' in {what} (missing '}}}}')"));
                return;
            }
        };
        for r in refs {
            let ok = if group {
                matches!(r.reference.as_str(), "branch" | "project")
            } else {
                is_run_ref(&r.reference)
            };
            if !ok {
                let allowed = if group {
                    GROUP_REFS.to_string()
                } else {
                    format!("secrets.NAME, {}", Vocabulary::NAMES.join(", "))
                };
                self.error(
                    node,
                    format!(
                        "unknown reference '${{{{ {} }}}}' in {what}; allowed: {allowed}",
                        r.reference
                    ),
                );
            }
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
            self.templates(&format!("{what}.{name}"), value, &text, false);
            out.insert(name.to_string(), text);
        }
        out
    }

    fn duration(&mut self, what: &str, node: &Node) -> Option<Duration> {
        let parsed = match &node.kind {
            Kind::Int(n, _) => u64::try_from(*n).ok().map(Duration::from_secs),
            Kind::Str(s) => parse_duration(s),
            _ => None,
        };
        match parsed {
            Some(d) if d.is_zero() => {
                self.error(node, format!("{what} must be greater than zero"));
                None
            }
            Some(d) => Some(d),
            None => {
                let shown = node.scalar_text().unwrap_or_else(|| node.describe().to_string());
                self.error(
                    node,
                    format!("invalid duration '{shown}' — use e.g. 90s, 10m, 1h30m"),
                );
                None
            }
        }
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
        self.templates("concurrency.group", group_node, &out.group, true);
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
        self.templates("run", run_node, &step.run, false);
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

/// Every distinct elementary cycle met by a depth-first search, each rotated to start at its
/// earliest job (in file order). Iterative, so a long chain of jobs cannot overflow the stack.
fn find_cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Grey,
        Black,
    }
    let mut color = vec![Color::White; edges.len()];
    let mut found: Vec<Vec<usize>> = Vec::new();
    for root in 0..edges.len() {
        if color[root] != Color::White {
            continue;
        }
        color[root] = Color::Grey;
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(top) = stack.last_mut() {
            let (node, next) = *top;
            let Some(&to) = edges[node].get(next) else {
                color[node] = Color::Black;
                stack.pop();
                continue;
            };
            top.1 += 1;
            match color[to] {
                Color::White => {
                    color[to] = Color::Grey;
                    stack.push((to, 0));
                }
                Color::Grey => {
                    let start = stack.iter().position(|(n, _)| *n == to).unwrap_or(0);
                    let mut cycle: Vec<usize> = stack[start..].iter().map(|(n, _)| *n).collect();
                    let min_at = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, n)| **n)
                        .map_or(0, |(i, _)| i);
                    cycle.rotate_left(min_at);
                    if !found.contains(&cycle) {
                        found.push(cycle);
                    }
                }
                Color::Black => {}
            }
        }
    }
    found
}

fn default_triggers() -> Triggers {
    Triggers {
        push: Some(PushTrigger { branches: vec![] }),
        manual: true,
        schedule: Vec::new(),
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`, plus `-` after the first character when `dash` is set.
fn is_identifier(s: &str, dash: bool) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (dash && c == '-'))
}

fn is_run_ref(reference: &str) -> bool {
    match reference.strip_prefix("secrets.") {
        Some(name) => is_identifier(name, false),
        None => Vocabulary::NAMES.contains(&reference),
    }
}

/// The closest candidate, if it is close enough to be a plausible typo.
fn suggest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (c, strsim::jaro_winkler(word, c), strsim::levenshtein(word, c)))
        // Short words are all within 2 edits of each other, so edit distance needs some length.
        .filter(|(_, jw, lev)| *jw > 0.8 || (*lev <= 2 && word.chars().count() > 3))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _, _)| c)
}

/// `90s`, `10m`, `1h30m`, `500ms`, or a bare number of seconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok().map(Duration::from_secs);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let amount: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // `ms` before `m`, or `500ms` would read as 500 minutes followed by junk.
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        let part = unit.checked_mul(u32::try_from(amount).ok()?)?;
        total = total.checked_add(part)?;
    }
    Some(total)
}

/// A cron expression refused (`on.schedule`, a freeze window's `start`/`end`). Like everything
/// this parser reports, the author's mistake: parsing has no internal failures.
#[derive(Debug, thiserror::Error)]
enum CronError {
    #[error(
        "invalid cron expression '{expr}': expected 5 fields (minute hour day month weekday) or 6 with seconds, found {fields}"
    )]
    FieldCount { expr: String, fields: usize },
    #[error("invalid cron expression '{expr}': {}", .source.to_string().trim_end_matches('.'))]
    Invalid {
        expr: String,
        source: croner::errors::CronError,
    },
}

/// An `artifacts` pattern refused: the author's mistake.
#[derive(Debug, thiserror::Error)]
enum ArtifactError {
    #[error("artifact pattern must not be empty")]
    Empty,
    #[error("artifact pattern '{0}' must be relative to the workspace")]
    Absolute(String),
    #[error("artifact pattern '{0}' must not contain '..'")]
    ParentDir(String),
    #[error("invalid artifact pattern '{pattern}': {}", .source.kind())]
    Glob { pattern: String, source: globset::Error },
}

fn check_cron(expr: &str) -> Result<(), CronError> {
    let trimmed = expr.trim();
    let fields = trimmed.split_whitespace().count();
    // croner also takes 7 fields (years); the model promises 5 or 6.
    if !trimmed.starts_with('@') && !(5..=6).contains(&fields) {
        return Err(CronError::FieldCount {
            expr: expr.to_owned(),
            fields,
        });
    }
    trimmed
        .parse::<croner::Cron>()
        .map(|_| ())
        .map_err(|source| CronError::Invalid {
            expr: expr.to_owned(),
            source,
        })
}

fn check_artifact(pattern: &str) -> Result<(), ArtifactError> {
    if pattern.trim().is_empty() {
        return Err(ArtifactError::Empty);
    }
    let bytes = pattern.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if pattern.starts_with('/') || pattern.starts_with('\\') || drive {
        return Err(ArtifactError::Absolute(pattern.to_owned()));
    }
    if pattern.split(['/', '\\']).any(|part| part == "..") {
        return Err(ArtifactError::ParentDir(pattern.to_owned()));
    }
    globset::Glob::new(pattern)
        .map(|_| ())
        .map_err(|source| ArtifactError::Glob {
            pattern: pattern.to_owned(),
            source,
        })
}

/// The first non-blank line of `run`, trimmed to at most 60 characters.
fn default_step_name(run: &str) -> String {
    let line = run.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    line.chars().take(MAX_STEP_NAME_CHARS).collect()
}

mod analysis;
mod delivery;
mod verify;

#[cfg(test)]
mod tests;
