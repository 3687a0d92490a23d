//! `release:` and `environments:`: the release spec, each environment's keys, strategies,
//! approvals, freeze windows, hooks and checks.
//!
//! Long on purpose: it is the grammar of one section, read top to bottom in the order of
//! `docs/pipeline.md`; the canary analysis and the verify gate, which stand on their own, are
//! `parse::analysis` and `parse::verify`.

use std::collections::HashSet;
use std::time::Duration;

use super::{Checker, Fields, Refs, default_step_name, is_identifier, suggest};
use crate::delivery::*;
use crate::model::Job;
use crate::yaml::{Kind, Node};

const RELEASE_KEYS: &[&str] = &[
    "from",
    "run",
    "health",
    "instances",
    "stop_signal",
    "stop_grace",
    "env",
];
const HEALTH_KEYS: &[&str] = &[
    "path",
    "interval",
    "timeout",
    "healthy_threshold",
    "unhealthy_threshold",
    "start_timeout",
];
const ENVIRONMENT_KEYS: &[&str] = &[
    "after",
    "target",
    "strategy",
    "approval",
    "production",
    "auto",
    "freeze",
    "hooks",
    "checks",
    "listen",
    "response_timeout",
    "sticky",
    "env",
    "verify",
];
const STRATEGIES: &[&str] = &["recreate", "rolling", "blue-green", "canary"];
const MAX_RESPONSE_TIMEOUT: Duration = Duration::from_secs(3600);
const TARGETS: &[&str] = &["local"];
const ROLLING_KEYS: &[&str] = &["max_surge"];
const CANARY_KEYS: &[&str] = &["steps", "interval", "analysis"];
const CANARY_STEP_KEYS: &[&str] = &["weight", "pause"];
const APPROVAL_KEYS: &[&str] = &["required", "reviewers", "not_author"];
const FREEZE_KEYS: &[&str] = &["start", "end", "timezone", "reason"];
const HOOK_KEYS: &[&str] = &["pre_deploy", "post_deploy"];
const COMMAND_KEYS: &[&str] = &["name", "run", "timeout"];
const CHECK_KEYS: &[&str] = &["name", "run", "timeout", "when"];
const CHECK_WHEN: &[&str] = &["before_traffic", "after_traffic", "both"];

const MAX_INSTANCES: u32 = 64;
const DEFAULT_CANARY_INTERVAL: Duration = Duration::from_secs(60);

impl Checker<'_> {
    /// An integer in `min..=max`.
    pub(super) fn int_in(&mut self, what: &str, node: &Node, min: u32, max: u32) -> Option<u32> {
        match &node.kind {
            Kind::Int(n, _) => match u32::try_from(*n) {
                Ok(n) if (min..=max).contains(&n) => Some(n),
                _ => {
                    self.error(node, format!("{what} must be between {min} and {max}, found {n}"));
                    None
                }
            },
            _ => {
                self.type_error(what, "an integer", node);
                None
            }
        }
    }

    pub(super) fn one_of<'a>(&mut self, what: &str, node: &Node, allowed: &[&'a str]) -> Option<&'a str> {
        let text = self.string(what, node)?;
        if let Some(found) = allowed.iter().find(|a| **a == text) {
            return Some(found);
        }
        let message = match suggest(&text, allowed.iter().copied()) {
            Some(s) => format!("unknown {what} '{text}' — did you mean '{s}'?"),
            None => format!("unknown {what} '{text}'; expected one of: {}", allowed.join(", ")),
        };
        self.error(node, message);
        None
    }

    pub(super) fn release(&mut self, node: &Node, jobs: &[Job]) -> Option<ReleaseSpec> {
        let fields = self.fields(node, "release", RELEASE_KEYS)?;
        let mut spec = ReleaseSpec {
            from: Vec::new(),
            run: String::new(),
            health: Health::default(),
            instances: 1,
            stop_signal: StopSignal::Term,
            stop_grace: Duration::from_secs(10),
            env: Default::default(),
        };
        if let Some(from) = fields.get("from") {
            for (job, item) in self.string_list("release.from", from) {
                if jobs.iter().any(|j| j.id == job) {
                    spec.from.push(job);
                    continue;
                }
                let message = match suggest(&job, jobs.iter().map(|j| j.id.as_str())) {
                    Some(s) => {
                        format!("release.from names '{job}', which is not a job — did you mean '{s}'?")
                    }
                    None => format!("release.from names '{job}', which is not a job"),
                };
                self.error(item, message);
            }
        }
        match fields.get("run") {
            Some(run) => {
                spec.run = self.non_empty_string("release.run", run).unwrap_or_default();
                self.templates("release.run", run, &spec.run, Refs::CommandLine);
            }
            None => self.error(
                node,
                "release has no 'run' (the command that starts an instance; it gets $PORT)",
            ),
        }
        if let Some(health) = fields.get("health") {
            spec.health = self.health(health);
        }
        if let Some(instances) = fields.get("instances") {
            spec.instances = self.int_in("instances", instances, 1, MAX_INSTANCES).unwrap_or(1);
        }
        if let Some(signal) = fields.get("stop_signal") {
            let text = self.string("stop_signal", signal).unwrap_or_default();
            match StopSignal::parse(&text) {
                Some(s) => spec.stop_signal = s,
                None => self.error(
                    signal,
                    format!(
                        "unknown stop_signal '{text}'; expected one of: {}",
                        StopSignal::NAMES.join(", ")
                    ),
                ),
            }
        }
        if let Some(grace) = fields.get("stop_grace") {
            spec.stop_grace = self.duration("stop_grace", grace).unwrap_or(spec.stop_grace);
        }
        if let Some(env) = fields.get("env") {
            spec.env = self.env("release.env", env);
        }
        Some(spec)
    }

    fn health(&mut self, node: &Node) -> Health {
        let mut health = Health::default();
        // Shorthand: `health: /healthz`.
        if let Kind::Str(_) = node.kind {
            health.path = self.health_path(node);
            return health;
        }
        let Some(fields) = self.fields(node, "health", HEALTH_KEYS) else {
            return health;
        };
        if let Some(path) = fields.get("path") {
            health.path = self.health_path(path);
        }
        for (key, slot) in [
            ("interval", &mut health.interval),
            ("timeout", &mut health.timeout),
            ("start_timeout", &mut health.start_timeout),
        ] {
            if let Some(value) = fields.get(key) {
                *slot = self.duration(key, value).unwrap_or(*slot);
            }
        }
        for (key, slot) in [
            ("healthy_threshold", &mut health.healthy_threshold),
            ("unhealthy_threshold", &mut health.unhealthy_threshold),
        ] {
            if let Some(value) = fields.get(key) {
                *slot = self.int_in(key, value, 1, 100).unwrap_or(*slot);
            }
        }
        health
    }

    fn health_path(&mut self, node: &Node) -> Option<String> {
        let path = self.non_empty_string("health.path", node)?;
        if !path.starts_with('/') {
            self.error(node, format!("health path '{path}' must start with '/'"));
            return None;
        }
        Some(path)
    }

    pub(super) fn environments(&mut self, node: &Node) -> Vec<Environment> {
        let Kind::Map(entries) = &node.kind else {
            self.type_error(
                "environments",
                "a mapping of environment names to environments",
                node,
            );
            return Vec::new();
        };
        let mut out: Vec<Environment> = Vec::new();
        for (name, key, value) in self.unique_entries(entries, "environment") {
            if !is_identifier(name, true) {
                self.error(
                    key,
                    format!("invalid environment name '{name}' — use letters, digits, '_' and '-'"),
                );
                continue;
            }
            let env = self.environment(name, value, &out);
            out.push(env);
        }
        let mut listens = HashSet::new();
        for env in &out {
            if let Some(addr) = env.listen
                && !listens.insert(addr)
            {
                self.error(node, format!("environments share the listen address {addr}"));
            }
        }
        out
    }

    fn environment(&mut self, name: &str, node: &Node, earlier: &[Environment]) -> Environment {
        let mut env = Environment {
            name: name.to_string(),
            after: None,
            target: Target::Local,
            strategy: Strategy::Recreate,
            approval: None,
            production: false,
            auto: false,
            freeze: Vec::new(),
            pre_deploy: Vec::new(),
            post_deploy: Vec::new(),
            checks: Vec::new(),
            listen: None,
            response_timeout: None,
            sticky: Sticky::Cookie,
            env: Default::default(),
            verify: None,
        };
        // `staging:` with nothing under it: all defaults.
        if node.kind == Kind::Null {
            return env;
        }
        let Some(fields) = self.fields(node, &format!("environment '{name}'"), ENVIRONMENT_KEYS) else {
            return env;
        };
        if let Some(after) = fields.get("after") {
            env.after = self.after(name, after, earlier);
        }
        if let Some(target) = fields.get("target") {
            self.one_of("target", target, TARGETS);
        }
        if let Some(production) = fields.get("production") {
            env.production = self.boolean("production", production).unwrap_or(false);
        }
        if let Some(strategy) = fields.get("strategy") {
            env.strategy = self
                .strategy(strategy, env.production)
                .unwrap_or(Strategy::Recreate);
        }
        env.approval = match fields.get("approval") {
            Some(approval) => self.approval(approval),
            // Production deploys need a second pair of eyes unless the file says otherwise.
            None if env.production => Some(Approval {
                required: 1,
                reviewers: Vec::new(),
                not_author: true,
            }),
            None => None,
        };
        if let Some(auto) = fields.get("auto") {
            env.auto = self.boolean("auto", auto).unwrap_or(false);
        }
        if let Some(freeze) = fields.get("freeze") {
            env.freeze = self.freeze(freeze);
        }
        if let Some(hooks) = fields.get("hooks")
            && let Some(hook_fields) = self.fields(hooks, "hooks", HOOK_KEYS)
        {
            if let Some(pre) = hook_fields.get("pre_deploy") {
                env.pre_deploy = self
                    .commands("pre_deploy", pre, COMMAND_KEYS)
                    .into_iter()
                    .map(|c| c.0)
                    .collect();
            }
            if let Some(post) = hook_fields.get("post_deploy") {
                env.post_deploy = self
                    .commands("post_deploy", post, COMMAND_KEYS)
                    .into_iter()
                    .map(|c| c.0)
                    .collect();
            }
        }
        if let Some(checks) = fields.get("checks") {
            for (command, extra) in self.commands("checks", checks, CHECK_KEYS) {
                let when = match extra.and_then(|f| f.get("when")) {
                    Some(when) => match self.one_of("when", when, CHECK_WHEN) {
                        Some("before_traffic") => CheckWhen::BeforeTraffic,
                        Some("after_traffic") => CheckWhen::AfterTraffic,
                        _ => CheckWhen::Both,
                    },
                    None => CheckWhen::Both,
                };
                env.checks.push(Check { command, when });
            }
        }
        if let Some(listen) = fields.get("listen") {
            let text = self.string("listen", listen).unwrap_or_default();
            match text.parse() {
                Ok(addr) => env.listen = Some(addr),
                Err(_) => self.error(
                    listen,
                    format!("listen '{text}' is not an address like 127.0.0.1:8081"),
                ),
            }
        }
        if let Some(sticky) = fields.get("sticky") {
            env.sticky = self.sticky(sticky);
        }
        if let Some(timeout) = fields.get("response_timeout")
            && let Some(d) = self.duration("response_timeout", timeout)
        {
            if d.is_zero() || d > MAX_RESPONSE_TIMEOUT {
                self.error(timeout, "response_timeout must be between 1ms and 1h");
            } else {
                env.response_timeout = Some(d);
            }
        }
        let keeps_previous = !matches!(env.strategy, Strategy::Recreate | Strategy::Rolling { .. });
        env.verify = match fields.get("verify") {
            // `verify: false` switches the production default off.
            Some(Node {
                kind: Kind::Bool(false),
                ..
            }) => None,
            Some(verify) => {
                if !keeps_previous {
                    self.error(
                        verify,
                        "verify needs a strategy that keeps the previous version running to take the traffic back: blue-green or canary",
                    );
                }
                self.verify(verify)
            }
            // Production is held to an error budget once the new version has all the traffic.
            None if env.production && keeps_previous => Some(super::verify::production_default()),
            None => None,
        };
        if let Some(vars) = fields.get("env") {
            env.env = self.env("env", vars);
        }
        env
    }

    /// `cookie`, `none` or `{ header: NAME }`.
    fn sticky(&mut self, node: &Node) -> Sticky {
        if let Kind::Map(_) = node.kind {
            let Some(fields) = self.fields(node, "sticky", &["header"]) else {
                return Sticky::Cookie;
            };
            let Some(header) = fields
                .get("header")
                .and_then(|h| self.non_empty_string("sticky.header", h))
            else {
                self.error(node, "sticky needs 'header: NAME' (or use 'cookie' or 'none')");
                return Sticky::Cookie;
            };
            let valid = header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                self.error(
                    node,
                    format!("sticky header '{header}' is not a valid header name"),
                );
                return Sticky::Cookie;
            }
            return Sticky::Header(header.to_ascii_lowercase());
        }
        match self.one_of("sticky", node, &["cookie", "none"]) {
            Some("none") => Sticky::None,
            _ => Sticky::Cookie,
        }
    }

    fn after(&mut self, name: &str, node: &Node, earlier: &[Environment]) -> Option<String> {
        let after = self.non_empty_string("after", node)?;
        if after == name {
            self.error(node, format!("environment '{name}' comes after itself"));
            return None;
        }
        if earlier.iter().any(|e| e.name == after) {
            return Some(after);
        }
        let message = match suggest(&after, earlier.iter().map(|e| e.name.as_str())) {
            Some(s) => format!(
                "environment '{name}' comes after '{after}', which is not an environment listed before it — did you mean '{s}'?"
            ),
            None => format!(
                "environment '{name}' comes after '{after}', which is not an environment listed before it (list environments in promotion order)"
            ),
        };
        self.error(node, message);
        None
    }

    /// `production`: a canary without `analysis:` gets the default analysis.
    fn strategy(&mut self, node: &Node, production: bool) -> Option<Strategy> {
        let (name, options) = match &node.kind {
            Kind::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                (self.one_of("strategy", key, STRATEGIES)?, Some(value))
            }
            Kind::Map(_) => {
                self.error(
                    node,
                    format!("strategy: expected exactly one of: {}", STRATEGIES.join(", ")),
                );
                return None;
            }
            _ => (self.one_of("strategy", node, STRATEGIES)?, None),
        };
        let options = options.filter(|o| o.kind != Kind::Null);
        Some(match name {
            "recreate" | "blue-green" => {
                if let Some(options) = options {
                    self.fields(options, name, &[]);
                }
                if name == "recreate" {
                    Strategy::Recreate
                } else {
                    Strategy::BlueGreen
                }
            }
            "rolling" => {
                let mut max_surge = 1;
                if let Some(fields) = options.and_then(|o| self.fields(o, "rolling", ROLLING_KEYS))
                    && let Some(surge) = fields.get("max_surge")
                {
                    max_surge = self.int_in("max_surge", surge, 1, MAX_INSTANCES).unwrap_or(1);
                }
                Strategy::Rolling { max_surge }
            }
            _ => Strategy::Canary(self.canary(options, production)),
        })
    }

    fn canary(&mut self, options: Option<&Node>, production: bool) -> Canary {
        let default_weights = [10, 50, 100];
        let fields = options.and_then(|o| self.fields(o, "canary", CANARY_KEYS));
        let fields = fields.as_ref();
        let interval = fields
            .and_then(|f| f.get("interval"))
            .and_then(|i| self.duration("interval", i))
            .unwrap_or(DEFAULT_CANARY_INTERVAL);
        let mut steps: Vec<CanaryStep> = Vec::new();
        match fields.and_then(|f| f.get("steps")) {
            None => {
                steps = default_weights
                    .iter()
                    .map(|&weight| CanaryStep {
                        weight,
                        pause: Pause::For(interval),
                    })
                    .collect();
            }
            Some(list) => {
                let Kind::Seq(items) = &list.kind else {
                    self.type_error("canary.steps", "a list of weights or {weight, pause}", list);
                    return Canary {
                        steps: vec![CanaryStep {
                            weight: 100,
                            pause: Pause::For(interval),
                        }],
                        analysis: None,
                    };
                };
                if items.is_empty() {
                    self.error(list, "canary.steps must not be empty");
                }
                for item in items {
                    let Some(step) = self.canary_step(item, interval) else {
                        continue;
                    };
                    if let Some(previous) = steps.last()
                        && step.weight <= previous.weight
                    {
                        self.error(
                            item,
                            format!(
                                "canary weights must increase: {}% comes after {}%",
                                step.weight, previous.weight
                            ),
                        );
                        continue;
                    }
                    steps.push(step);
                }
            }
        }
        // Like Argo Rollouts: after the last step the new version takes all the traffic.
        if steps.last().is_none_or(|s| s.weight < 100) {
            steps.push(CanaryStep {
                weight: 100,
                pause: Pause::For(Duration::ZERO),
            });
        }
        let analysis = match fields.and_then(|f| f.get("analysis")) {
            // `analysis: false` switches the production default off.
            Some(Node {
                kind: Kind::Bool(false),
                ..
            }) => None,
            Some(a) => self.analysis(a),
            // A production canary advances on evidence unless told otherwise.
            None if production => Some(super::analysis::default_analysis()),
            None => None,
        };
        Canary { steps, analysis }
    }

    fn canary_step(&mut self, node: &Node, interval: Duration) -> Option<CanaryStep> {
        let (weight_node, pause) = match &node.kind {
            Kind::Map(_) => {
                let fields = self.fields(node, "canary step", CANARY_STEP_KEYS)?;
                let Some(weight) = fields.get("weight") else {
                    self.error(node, "canary step has no 'weight'");
                    return None;
                };
                let pause = match fields.get("pause") {
                    None => Pause::For(interval),
                    Some(p) if p.scalar_text().as_deref() == Some("manual") => Pause::UntilPromoted,
                    Some(p) => Pause::For(self.duration("pause", p)?),
                };
                (weight, pause)
            }
            _ => (node, Pause::For(interval)),
        };
        let weight = self.percent(weight_node)?;
        Some(CanaryStep { weight, pause })
    }

    /// `25` or `'25%'`.
    fn percent(&mut self, node: &Node) -> Option<u32> {
        let text = node.scalar_text().unwrap_or_default();
        match text.trim().trim_end_matches('%').trim().parse::<u32>() {
            Ok(n) if (1..=100).contains(&n) => Some(n),
            _ => {
                self.error(
                    node,
                    format!("canary weight must be a percentage from 1 to 100, found '{text}'"),
                );
                None
            }
        }
    }

    fn approval(&mut self, node: &Node) -> Option<Approval> {
        let fields = self.fields(node, "approval", APPROVAL_KEYS)?;
        let mut approval = Approval {
            required: 1,
            reviewers: Vec::new(),
            not_author: true,
        };
        if let Some(required) = fields.get("required") {
            approval.required = self.int_in("required", required, 0, 10)?;
        }
        if let Some(reviewers) = fields.get("reviewers") {
            approval.reviewers = self
                .string_list("reviewers", reviewers)
                .into_iter()
                .map(|r| r.0)
                .collect();
        }
        if let Some(not_author) = fields.get("not_author") {
            approval.not_author = self.boolean("not_author", not_author).unwrap_or(true);
        }
        if !approval.reviewers.is_empty() && (approval.reviewers.len() as u32) < approval.required {
            self.error(
                node,
                format!(
                    "approval needs {} approvals but lists only {} reviewer(s)",
                    approval.required,
                    approval.reviewers.len()
                ),
            );
        }
        // `required: 0` switches approval off, even for production.
        (approval.required > 0).then_some(approval)
    }

    fn freeze(&mut self, node: &Node) -> Vec<FreezeWindow> {
        let items: Vec<&Node> = match &node.kind {
            Kind::Seq(items) => items.iter().collect(),
            Kind::Map(_) => vec![node],
            _ => {
                self.type_error("freeze", "a list of {start, end, timezone}", node);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for item in items {
            let Some(fields) = self.fields(item, "freeze window", FREEZE_KEYS) else {
                continue;
            };
            let cron = |this: &mut Self, key: &str| -> Option<String> {
                let Some(value) = fields.get(key) else {
                    this.error(item, format!("freeze window has no '{key}' (a cron expression)"));
                    return None;
                };
                let text = this.string(key, value)?;
                match super::check_cron(&text) {
                    Ok(()) => Some(text),
                    Err(refused) => {
                        this.error(value, refused.to_string());
                        None
                    }
                }
            };
            let start = cron(self, "start");
            let end = cron(self, "end");
            let timezone = match fields.get("timezone") {
                None => Some(chrono_tz::UTC),
                Some(tz) => {
                    let text = self.string("timezone", tz).unwrap_or_default();
                    match text.parse::<chrono_tz::Tz>() {
                        Ok(tz) => Some(tz),
                        Err(_) => {
                            self.error(
                                tz,
                                format!(
                                    "unknown timezone '{text}' — use an IANA name such as Europe/Paris or UTC"
                                ),
                            );
                            None
                        }
                    }
                }
            };
            let reason = fields.get("reason").and_then(|r| self.string("reason", r));
            if let (Some(start), Some(end), Some(timezone)) = (start, end, timezone) {
                out.push(FreezeWindow {
                    start,
                    end,
                    timezone,
                    reason,
                });
            }
        }
        out
    }

    /// A list of commands: bare strings or mappings with `allowed` keys. Returns each command
    /// with its mapping's fields (for keys beyond name/run/timeout).
    fn commands<'n>(
        &mut self,
        what: &str,
        node: &'n Node,
        allowed: &[&str],
    ) -> Vec<(Command, Option<Fields<'n>>)> {
        let Kind::Seq(items) = &node.kind else {
            self.type_error(what, "a list of commands", node);
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            match &item.kind {
                Kind::Map(_) => {
                    let Some(fields) = self.fields(item, what, allowed) else {
                        continue;
                    };
                    let Some(run_node) = fields.get("run") else {
                        self.error(item, format!("{what} entry has no 'run'"));
                        continue;
                    };
                    let Some(run) = self.non_empty_string("run", run_node) else {
                        continue;
                    };
                    self.templates("run", run_node, &run, Refs::Run);
                    let name = match fields.get("name") {
                        Some(n) => self.string("name", n).unwrap_or_else(|| default_step_name(&run)),
                        None => default_step_name(&run),
                    };
                    let timeout = fields.get("timeout").and_then(|t| self.duration("timeout", t));
                    out.push((Command { name, run, timeout }, Some(fields)));
                }
                _ => {
                    let Some(run) = self.non_empty_string(what, item) else {
                        continue;
                    };
                    self.templates(what, item, &run, Refs::Run);
                    out.push((
                        Command {
                            name: default_step_name(&run),
                            run,
                            timeout: None,
                        },
                        None,
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::delivery::*;
    use crate::parse;

    const HEAD: &str = "name: app\njobs:\n  build:\n    steps: [make]\n";

    fn ok(rest: &str) -> crate::Pipeline {
        parse("conveyor.yml", &format!("{HEAD}{rest}")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn errors(rest: &str) -> String {
        match parse("conveyor.yml", &format!("{HEAD}{rest}")) {
            Ok(p) => panic!("expected errors, parsed {p:#?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn release_run_may_use_the_vocabulary_but_no_secret() {
        let p = ok("release:\n  run: ./app --name ${{ project }}-${{ sha }} --run ${{ run_id }}\n");
        assert_eq!(
            p.release.unwrap().run,
            "./app --name ${{ project }}-${{ sha }} --run ${{ run_id }}"
        );
        let e = errors("release:\n  run: ./app --token ${{ secrets.TOKEN }}\n");
        assert!(
            e.contains("a secret on a command line is readable by anyone who can list processes"),
            "{e}"
        );
        let e = errors("release:\n  run: ./app ${{ nope }}\n");
        assert!(
            e.contains("allowed: branch, sha, event, run_id, project, job"),
            "{e}"
        );
        // In release.env a secret is fine: the environment is not on the command line.
        ok("release:\n  run: ./app\n  env: { TOKEN: '${{ secrets.TOKEN }}' }\n");
    }

    #[test]
    fn a_full_delivery_section_parses_into_its_model() {
        let p = ok(r#"release:
  from: [build]
  run: ./app --port $PORT
  health: { path: /healthz, interval: 500ms, healthy_threshold: 2 }
  instances: 2
  stop_signal: SIGINT
  stop_grace: 5s
  env: { MODE: prod }
environments:
  staging:
    auto: true
    strategy: blue-green
    checks:
      - ./smoke.sh $URL
      - { name: acceptance, run: ./accept.sh $URL, when: after_traffic, timeout: 2m }
    listen: 127.0.0.1:8081
    sticky: { header: X-User-Id }
  production:
    after: staging
    production: true
    strategy:
      canary:
        steps: [5, { weight: 25, pause: manual }, { weight: 50, pause: 30s }]
        interval: 10s
    hooks:
      pre_deploy: [./migrate.sh]
    freeze:
      - { start: '0 18 * * FRI', end: '0 8 * * MON', timezone: Europe/Paris, reason: weekend }
"#);
        let release = p.release.unwrap();
        assert_eq!(release.from, vec!["build"]);
        assert_eq!(release.run, "./app --port $PORT");
        assert_eq!(release.health.path.as_deref(), Some("/healthz"));
        assert_eq!(release.health.interval, Duration::from_millis(500));
        assert_eq!(release.health.healthy_threshold, 2);
        assert_eq!((release.instances, release.stop_signal), (2, StopSignal::Int));
        assert_eq!(release.stop_grace, Duration::from_secs(5));

        let [staging, production] = &p.environments[..] else {
            panic!("two environments")
        };
        assert_eq!(
            (staging.name.as_str(), staging.auto, staging.after.as_deref()),
            ("staging", true, None)
        );
        assert_eq!(staging.strategy, Strategy::BlueGreen);
        assert_eq!(staging.approval, None);
        assert_eq!(staging.checks[0].when, CheckWhen::Both);
        assert_eq!(staging.checks[1].command.name, "acceptance");
        assert_eq!(staging.checks[1].when, CheckWhen::AfterTraffic);
        assert_eq!(staging.checks[1].command.timeout, Some(Duration::from_secs(120)));
        assert_eq!(staging.listen, Some("127.0.0.1:8081".parse().unwrap()));
        assert_eq!(staging.sticky, Sticky::Header("x-user-id".into()));
        assert_eq!(production.sticky, Sticky::Cookie);

        assert_eq!(production.after.as_deref(), Some("staging"));
        assert_eq!(
            production.approval,
            Some(Approval {
                required: 1,
                reviewers: vec![],
                not_author: true
            }),
            "production defaults to four-eyes"
        );
        let Strategy::Canary(canary) = &production.strategy else {
            panic!("canary")
        };
        let steps: Vec<(u32, Pause)> = canary.steps.iter().map(|s| (s.weight, s.pause)).collect();
        assert_eq!(
            steps,
            vec![
                (5, Pause::For(Duration::from_secs(10))),
                (25, Pause::UntilPromoted),
                (50, Pause::For(Duration::from_secs(30))),
                (100, Pause::For(Duration::ZERO)),
            ]
        );
        assert_eq!(production.pre_deploy[0].run, "./migrate.sh");
        assert_eq!(production.freeze[0].timezone, chrono_tz::Europe::Paris);
        assert_eq!(production.freeze[0].reason.as_deref(), Some("weekend"));
    }

    #[test]
    fn defaults() {
        let p = ok(
            "release:\n  run: ./app\n  health: /up\nenvironments:\n  dev:\n  prod:\n    after: dev\n    strategy: canary\n    approval: { required: 0 }\n    production: true\n",
        );
        let release = p.release.unwrap();
        assert_eq!(release.health.path.as_deref(), Some("/up"));
        assert_eq!(
            (release.instances, release.stop_grace),
            (1, Duration::from_secs(10))
        );
        assert_eq!(p.environments[0].strategy, Strategy::Recreate);
        let Strategy::Canary(canary) = &p.environments[1].strategy else {
            panic!()
        };
        assert_eq!(
            canary.steps.iter().map(|s| s.weight).collect::<Vec<_>>(),
            vec![10, 50, 100]
        );
        assert_eq!(p.environments[1].approval, None, "required: 0 turns approval off");
    }

    #[test]
    fn production_is_judged_on_evidence_and_held_to_an_error_budget_unless_told_otherwise() {
        let environment = |body: &str| {
            let p = ok(&format!(
                "release:\n  run: ./app\nenvironments:\n  prod:\n    approval: {{ required: 0 }}\n{body}"
            ));
            let env = p.environments[0].clone();
            let analysis = match &env.strategy {
                Strategy::Canary(canary) => canary.analysis.clone(),
                _ => None,
            };
            (analysis, env.verify)
        };
        // (environment body, analysis expected, verify expected)
        let table = [
            ("    production: true\n    strategy: canary\n", true, true),
            ("    production: true\n    strategy: blue-green\n", false, true),
            ("    production: true\n    strategy: rolling\n", false, false),
            ("    strategy: canary\n", false, false),
            (
                "    production: true\n    strategy: { canary: { analysis: false } }\n    verify: false\n",
                false,
                false,
            ),
        ];
        for (body, analysis, verify) in table {
            let (got_analysis, got_verify) = environment(body);
            assert_eq!(got_analysis.is_some(), analysis, "{body}");
            assert_eq!(got_verify.is_some(), verify, "{body}");
        }
        let (analysis, verify) = environment("    production: true\n    strategy: canary\n");
        let names: Vec<String> = analysis.unwrap().metrics.into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["error_rate", "latency", "memory", "cpu", "restarts"]);
        let budget = verify.unwrap().error_budget.unwrap();
        assert_eq!((budget.target, budget.max_burn_rate), (0.99, 5.0));
    }

    #[test]
    fn delivery_error_table() {
        let cases: &[(&str, &str)] = &[
            (
                "release:\n  runn: ./app\n",
                "conveyor.yml:6:3: unknown key 'runn' — did you mean 'run'?\nconveyor.yml:6:3: release has no 'run' (the command that starts an instance; it gets $PORT)",
            ),
            (
                "release:\n  run: ./app\n  from: [biuld]\n",
                "conveyor.yml:7:10: release.from names 'biuld', which is not a job — did you mean 'build'?",
            ),
            (
                "release:\n  run: ./app\n  instances: 0\n",
                "conveyor.yml:7:14: instances must be between 1 and 64, found 0",
            ),
            (
                "release:\n  run: ./app\n  stop_signal: STOP\n",
                "conveyor.yml:7:16: unknown stop_signal 'STOP'; expected one of: TERM, INT, QUIT, HUP, USR1, USR2, KILL",
            ),
            (
                "release:\n  run: ./app\n  health: healthz\n",
                "conveyor.yml:7:11: health path 'healthz' must start with '/'",
            ),
            (
                "environments:\n  staging:\n",
                "conveyor.yml:6:3: environments need a 'release:' section saying how an instance runs",
            ),
            (
                "release: { run: ./app }\nenvironments:\n  prod:\n    after: stagign\n  staging:\n",
                "conveyor.yml:8:12: environment 'prod' comes after 'stagign', which is not an environment listed before it (list environments in promotion order)",
            ),
            (
                "release: { run: ./app }\nenvironments:\n  staging:\n  prod:\n    after: stagign\n",
                "conveyor.yml:9:12: environment 'prod' comes after 'stagign', which is not an environment listed before it — did you mean 'staging'?",
            ),
            (
                "release: { run: ./app }\nenvironments:\n  prod:\n    strategy: blue-gren\n",
                "conveyor.yml:8:15: unknown strategy 'blue-gren' — did you mean 'blue-green'?",
            ),
            (
                "release: { run: ./app }\nenvironments:\n  prod:\n    strategy: { canary: { steps: [50, 20, 150] } }\n",
                "conveyor.yml:8:39: canary weights must increase: 20% comes after 50%\nconveyor.yml:8:43: canary weight must be a percentage from 1 to 100, found '150'",
            ),
            (
                "release: { run: ./app }\nenvironments:\n  prod:\n    approval: { required: 2, reviewers: [alice] }\n",
                "conveyor.yml:8:15: approval needs 2 approvals but lists only 1 reviewer(s)",
            ),
            (
                "release: { run: ./app }\nenvironments:\n  prod:\n    freeze: [{ start: '0 18 * * FRI', end: 'nope', timezone: Mars/Olympus }]\n",
                "conveyor.yml:8:44: invalid cron expression 'nope': expected 5 fields (minute hour day month weekday) or 6 with seconds, found 1\nconveyor.yml:8:62: unknown timezone 'Mars/Olympus' — use an IANA name such as Europe/Paris or UTC",
            ),
            (
                "release: { run: ./app }\nenvironments:\n  prod:\n    checks: [{ run: ./smoke.sh, when: always }]\n",
                "conveyor.yml:8:39: unknown when 'always'; expected one of: before_traffic, after_traffic, both",
            ),
            (
                "release: { run: ./app }\nenvironments:\n  prod:\n    listen: localhost\n",
                "conveyor.yml:8:13: listen 'localhost' is not an address like 127.0.0.1:8081",
            ),
            (
                "release: { run: ./app }\nenvironments:\n  prod:\n    response_timeout: 2h\n",
                "conveyor.yml:8:23: response_timeout must be between 1ms and 1h",
            ),
            (
                "release: { run: ./app }\nenvironments:\n  prod:\n    target: ssh\n",
                "conveyor.yml:8:13: unknown target 'ssh'; expected one of: local",
            ),
        ];
        for (rest, want) in cases {
            assert_eq!(errors(rest), *want, "{rest}");
        }
    }
}
