//! `canary.analysis:` — the metrics that judge a canary.

use std::time::Duration;

use conveyor_analysis::resources::{GrowthConfig, Quantity};

use super::{Checker, suggest};
use crate::delivery::*;
use crate::yaml::{Kind, Node};

const ANALYSIS_KEYS: &[&str] = &[
    "interval",
    "alpha",
    "confidence",
    "max_duration",
    "inconclusive",
    "baseline",
    "metrics",
];
/// Keys every metric may have, besides its one source key.
const METRIC_KEYS: &[&str] = &["name", "critical", "min_samples", "no_data"];
const SOURCES: &[&str] = &[
    "error_rate",
    "latency",
    "memory",
    "cpu",
    "fds",
    "restarts",
    "prometheus",
    "webhook",
    "command",
];
const ERROR_RATE_KEYS: &[&str] = &["tolerance", "absolute"];
const LATENCY_KEYS: &[&str] = &["quantile", "tolerance", "absolute"];
const RESOURCE_KEYS: &[&str] = &["tolerance", "absolute"];
const RESTARTS_KEYS: &[&str] = &["tolerance"];
const PROMETHEUS_KEYS: &[&str] = &["address", "query", "min", "max", "compare"];
const DIRECTIONS: &[&str] = &["increase", "decrease", "either"];
const WEBHOOK_KEYS: &[&str] = &["url", "timeout", "retries"];
const COMMAND_KEYS: &[&str] = &["run", "timeout", "retries"];
const INCONCLUSIVE: &[&str] = &["pause", "rollback"];
const NO_DATA: &[&str] = &["pass", "fail", "inconclusive"];
/// Words a Prometheus query may contain between `{{ }}`.
const QUERY_PLACEHOLDERS: &[&str] = &["version", "baseline", "project", "environment"];

const MAX_METRICS: usize = 32;
const MAX_RETRIES: u32 = 10;
const DEFAULT_LOOK_INTERVAL: Duration = Duration::from_secs(1);
/// Long enough for a step at 10% of 20 requests/s to show a canary failing 0.5% of its requests
/// within one point of the baseline (≈2,500 canary requests, docs/benchmarks.md): a canary held
/// at a small share waiting for evidence costs little; pausing it for a person costs a person.
const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(1800);
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_ALPHA: f64 = 0.01;
/// A pass is a claim that the canary is not worse: 95%, like a one-sided Kayenta interval.
const DEFAULT_CONFIDENCE: f64 = 0.95;
/// Up to 50% more errors, or one more failed request in a hundred — Flagger's documented
/// example holds a canary to a 99% success rate — whichever allows more: a relative margin
/// alone can never be shown when neither version fails, an absolute one alone is loose for a
/// service that fails 10% of its requests.
const DEFAULT_ERROR_TOLERANCE: f64 = 0.5;
const DEFAULT_ERROR_ABSOLUTE: f64 = 0.01;
/// Up to 25% slower at the quantile, or 5 ms: below a few milliseconds scheduling noise on a
/// shared host moves a fast service's p99 more than any release does.
const DEFAULT_LATENCY_TOLERANCE: f64 = 0.25;
const DEFAULT_LATENCY_ABSOLUTE: Duration = Duration::from_millis(5);

impl Checker<'_> {
    pub(super) fn analysis(&mut self, node: &Node) -> Option<Analysis> {
        let fields = match node.kind {
            // `analysis: {}` or `analysis:` alone: the defaults.
            Kind::Null => None,
            _ => Some(self.fields(node, "analysis", ANALYSIS_KEYS)?),
        };
        let get = |key: &str| fields.as_ref().and_then(|f| f.get(key));
        let mut analysis = default_analysis();
        if let Some(d) = get("interval").and_then(|n| self.duration("analysis.interval", n)) {
            analysis.interval = d;
        }
        if let Some(alpha) = get("alpha").and_then(|n| self.number("analysis.alpha", n, 1e-6, 0.5)) {
            analysis.alpha = alpha;
        }
        if let Some(confidence) =
            get("confidence").and_then(|n| self.number("analysis.confidence", n, 0.5, 0.999999))
        {
            analysis.confidence = confidence;
        }
        if let Some(d) = get("max_duration").and_then(|n| self.duration("analysis.max_duration", n)) {
            analysis.max_duration = d;
        }
        if let Some(n) = get("inconclusive") {
            analysis.inconclusive = match self.one_of("inconclusive", n, INCONCLUSIVE) {
                Some("rollback") => Inconclusive::Rollback,
                _ => Inconclusive::Pause,
            };
        }
        if let Some(n) = get("baseline") {
            analysis.baseline = match self.one_of("baseline", n, &["stable", "fresh"]) {
                Some("fresh") => Baseline::Fresh,
                _ => Baseline::Stable,
            };
        }
        if let Some(list) = get("metrics") {
            analysis.metrics.clear();
            let Kind::Seq(items) = &list.kind else {
                self.type_error("analysis.metrics", "a list of metrics", list);
                return Some(analysis);
            };
            if items.is_empty() {
                self.error(
                    list,
                    "analysis.metrics must not be empty (leave it out for the defaults)",
                );
            }
            if items.len() > MAX_METRICS {
                self.error(
                    list,
                    format!("at most {MAX_METRICS} metrics, found {}", items.len()),
                );
            }
            for item in items.iter().take(MAX_METRICS) {
                let Some(metric) = self.metric(item) else {
                    continue;
                };
                if analysis.metrics.iter().any(|m| m.name == metric.name) {
                    self.error(
                        item,
                        format!("two metrics are named '{}'; give one a 'name'", metric.name),
                    );
                    continue;
                }
                analysis.metrics.push(metric);
            }
        }
        Some(analysis)
    }

    fn metric(&mut self, node: &Node) -> Option<Metric> {
        let Kind::Map(_) = &node.kind else {
            self.type_error(
                "metric",
                "a mapping with one of: error_rate, latency, memory, cpu, fds, restarts, prometheus, webhook, command",
                node,
            );
            return None;
        };
        let mut allowed: Vec<&str> = METRIC_KEYS.to_vec();
        allowed.extend_from_slice(SOURCES);
        let fields = self.fields(node, "metric", &allowed)?;
        let sources: Vec<&str> = SOURCES
            .iter()
            .copied()
            .filter(|s| fields.get(s).is_some())
            .collect();
        let kind = match sources.as_slice() {
            [one] => *one,
            [] => {
                self.error(
                    node,
                    format!("metric has no source: add one of {}", SOURCES.join(", ")),
                );
                return None;
            }
            many => {
                self.error(
                    node,
                    format!(
                        "metric has several sources ({}); split it in two",
                        many.join(", ")
                    ),
                );
                return None;
            }
        };
        let options = fields.get(kind).filter(|n| n.kind != Kind::Null);
        let source = match kind {
            "error_rate" => {
                let f = options.and_then(|o| self.fields(o, "error_rate", ERROR_RATE_KEYS));
                let f = f.as_ref();
                let tolerance = f
                    .and_then(|f| f.get("tolerance"))
                    .and_then(|n| self.number("tolerance", n, 0.0, 10.0))
                    .unwrap_or(DEFAULT_ERROR_TOLERANCE);
                let absolute = f
                    .and_then(|f| f.get("absolute"))
                    .and_then(|n| self.share("error_rate.absolute", n))
                    .unwrap_or(DEFAULT_ERROR_ABSOLUTE);
                MetricSource::ErrorRate { tolerance, absolute }
            }
            "latency" => {
                let f = options.and_then(|o| self.fields(o, "latency", LATENCY_KEYS));
                let f = f.as_ref();
                let quantile = f
                    .and_then(|f| f.get("quantile"))
                    .and_then(|n| self.number("quantile", n, 0.5, 0.9999))
                    .unwrap_or(0.99);
                let tolerance = f
                    .and_then(|f| f.get("tolerance"))
                    .and_then(|n| self.number("tolerance", n, 0.0, 10.0))
                    .unwrap_or(DEFAULT_LATENCY_TOLERANCE);
                let absolute = f
                    .and_then(|f| f.get("absolute"))
                    .and_then(|n| self.duration("latency.absolute", n))
                    .unwrap_or(DEFAULT_LATENCY_ABSOLUTE);
                MetricSource::Latency {
                    quantile,
                    tolerance,
                    absolute,
                }
            }
            "memory" | "cpu" | "fds" => {
                let quantity = match kind {
                    "memory" => Quantity::Memory,
                    "cpu" => Quantity::Cpu,
                    _ => Quantity::Fds,
                };
                let defaults = GrowthConfig::defaults(quantity, DEFAULT_ALPHA);
                let f = options.and_then(|o| self.fields(o, kind, RESOURCE_KEYS));
                let f = f.as_ref();
                let tolerance = f
                    .and_then(|f| f.get("tolerance"))
                    .and_then(|n| self.number("tolerance", n, 0.0, 100.0))
                    .unwrap_or(defaults.ratio - 1.0);
                let what = format!("{kind}.absolute");
                let absolute = f.and_then(|f| f.get("absolute")).and_then(|n| match quantity {
                    // CPU time per request is a duration: `1ms`.
                    Quantity::Cpu => self.duration(&what, n).map(|d| d.as_secs_f64()),
                    _ => self.number(&what, n, 0.0, 1e12),
                });
                MetricSource::Resource {
                    quantity,
                    tolerance,
                    absolute: absolute.unwrap_or(defaults.absolute),
                }
            }
            "restarts" => {
                let f = options.and_then(|o| self.fields(o, "restarts", RESTARTS_KEYS));
                let tolerance = f
                    .as_ref()
                    .and_then(|f| f.get("tolerance"))
                    .and_then(|n| self.int_in("restarts.tolerance", n, 0, 1000))
                    .unwrap_or(0);
                MetricSource::Restarts {
                    tolerance: u64::from(tolerance),
                }
            }
            "prometheus" => MetricSource::Prometheus(self.prometheus(fields.get(kind)?)?),
            "webhook" => {
                let f = self.fields(fields.get(kind)?, "webhook", WEBHOOK_KEYS)?;
                let Some(url) = f.get("url").and_then(|n| self.http_url("webhook.url", n)) else {
                    if f.get("url").is_none() {
                        self.error(node, "webhook has no 'url'");
                    }
                    return None;
                };
                let (timeout, retries) = self.timeout_and_retries(&f);
                MetricSource::Webhook {
                    url,
                    timeout,
                    retries,
                }
            }
            _ => {
                let command = fields.get(kind)?;
                let (run, timeout, retries) = match &command.kind {
                    Kind::Map(_) => {
                        let f = self.fields(command, "command", COMMAND_KEYS)?;
                        let Some(run) = f.get("run").and_then(|n| self.non_empty_string("command.run", n))
                        else {
                            if f.get("run").is_none() {
                                self.error(command, "command has no 'run'");
                            }
                            return None;
                        };
                        let (timeout, retries) = self.timeout_and_retries(&f);
                        (run, timeout, retries)
                    }
                    _ => (
                        self.non_empty_string("command", command)?,
                        DEFAULT_CHECK_TIMEOUT,
                        0,
                    ),
                };
                MetricSource::Command {
                    run,
                    timeout,
                    retries,
                }
            }
        };
        let name = match fields.get("name") {
            Some(n) => self.non_empty_string("metric name", n)?,
            None => kind.to_string(),
        };
        let critical = fields
            .get("critical")
            .and_then(|n| self.boolean("critical", n))
            .unwrap_or(true);
        let default_samples = match source {
            MetricSource::ErrorRate { .. } | MetricSource::Latency { .. } => 100,
            // The resource tests need their blocks: they say when they have enough.
            MetricSource::Resource { .. } | MetricSource::Restarts { .. } => 0,
            // A rank test needs a few points per side.
            MetricSource::Prometheus(PrometheusQuery { compare: Some(_), .. }) => 10,
            _ => 1,
        };
        let min_samples = fields
            .get("min_samples")
            .and_then(|n| self.number("min_samples", n, 0.0, 1e9))
            .map_or(default_samples, |n| n as u64);
        let no_data = match fields
            .get("no_data")
            .and_then(|n| self.one_of("no_data", n, NO_DATA))
        {
            Some("pass") => NoData::Pass,
            Some("fail") => NoData::Fail,
            _ => NoData::Inconclusive,
        };
        Some(Metric {
            name,
            source,
            critical,
            min_samples,
            no_data,
        })
    }

    fn prometheus(&mut self, node: &Node) -> Option<PrometheusQuery> {
        let f = self.fields(node, "prometheus", PROMETHEUS_KEYS)?;
        let address = match f.get("address") {
            Some(n) => self.http_url("prometheus.address", n)?,
            None => {
                self.error(node, "prometheus has no 'address' (e.g. http://127.0.0.1:9090)");
                return None;
            }
        };
        let Some(query_node) = f.get("query") else {
            self.error(node, "prometheus has no 'query'");
            return None;
        };
        let query = self.non_empty_string("prometheus.query", query_node)?;
        for placeholder in placeholders(&query) {
            let placeholder = placeholder.as_str();
            if !QUERY_PLACEHOLDERS.contains(&placeholder) {
                let message = match suggest(placeholder, QUERY_PLACEHOLDERS.iter().copied()) {
                    Some(s) => format!(
                        "unknown placeholder '{{{{{placeholder}}}}}' in the query — did you mean '{s}'?"
                    ),
                    None => format!(
                        "unknown placeholder '{{{{{placeholder}}}}}' in the query; allowed: {}",
                        QUERY_PLACEHOLDERS.join(", ")
                    ),
                };
                self.error(query_node, message);
            }
        }
        let min = f
            .get("min")
            .and_then(|n| self.number("min", n, f64::MIN, f64::MAX));
        let max = f
            .get("max")
            .and_then(|n| self.number("max", n, f64::MIN, f64::MAX));
        let compare = f
            .get("compare")
            .and_then(|n| match self.one_of("compare", n, DIRECTIONS)? {
                "increase" => Some(Direction::Increase),
                "decrease" => Some(Direction::Decrease),
                _ => Some(Direction::Either),
            });
        match (min.is_some() || max.is_some(), f.get("compare").is_some()) {
            (false, false) => self.error(
                node,
                "prometheus needs 'min' and/or 'max' (the range the canary's value must stay in), or 'compare' (increase, decrease or either: judged against the baseline)",
            ),
            (true, true) => self.error(
                node,
                "prometheus has both a range ('min'/'max') and 'compare'; choose one",
            ),
            _ => {}
        }
        if let (Some(lo), Some(hi)) = (min, max)
            && lo > hi
        {
            self.error(node, format!("prometheus min {lo} is above max {hi}"));
        }
        Some(PrometheusQuery {
            address,
            query,
            min,
            max,
            compare,
        })
    }

    fn timeout_and_retries(&mut self, f: &super::Fields<'_>) -> (Duration, u32) {
        let timeout = f
            .get("timeout")
            .and_then(|n| self.duration("timeout", n))
            .unwrap_or(DEFAULT_CHECK_TIMEOUT);
        let retries = f
            .get("retries")
            .and_then(|n| self.int_in("retries", n, 0, MAX_RETRIES))
            .unwrap_or(0);
        (timeout, retries)
    }

    fn http_url(&mut self, what: &str, node: &Node) -> Option<String> {
        let url = self.non_empty_string(what, node)?;
        if url.starts_with("http://") || url.starts_with("https://") {
            Some(url.trim_end_matches('/').to_string())
        } else {
            self.error(
                node,
                format!("{what} must start with http:// or https://, found '{url}'"),
            );
            None
        }
    }

    /// A share of requests in `0..=1`: a number (`0.005`) or a percentage (`'0.5%'`).
    fn share(&mut self, what: &str, node: &Node) -> Option<f64> {
        if let Kind::Str(text) = &node.kind
            && let Some(percent) = text.trim().strip_suffix('%')
        {
            return match percent.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Some(p / 100.0),
                _ => {
                    self.error(
                        node,
                        format!("{what} must be a percentage from 0% to 100%, found '{text}'"),
                    );
                    None
                }
            };
        }
        self.number(what, node, 0.0, 1.0)
    }

    /// A number in `min..=max`.
    pub(super) fn number(&mut self, what: &str, node: &Node, min: f64, max: f64) -> Option<f64> {
        let value = match &node.kind {
            Kind::Int(n, _) => Some(*n as f64),
            Kind::Float(text) => text.parse::<f64>().ok(),
            _ => None,
        };
        match value {
            Some(v) if v.is_finite() && (min..=max).contains(&v) => Some(v),
            Some(v) => {
                self.error(node, format!("{what} must be between {min} and {max}, found {v}"));
                None
            }
            None => {
                self.type_error(what, "a number", node);
                None
            }
        }
    }
}

/// The words between `{{` and `}}` in a query, trimmed.
fn placeholders(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    fill_placeholders(query, |name| {
        names.push(name.to_string());
        None
    });
    names
}

/// `analysis:` with nothing under it.
pub(super) fn default_analysis() -> Analysis {
    Analysis {
        interval: DEFAULT_LOOK_INTERVAL,
        alpha: DEFAULT_ALPHA,
        confidence: DEFAULT_CONFIDENCE,
        max_duration: DEFAULT_MAX_DURATION,
        inconclusive: Inconclusive::Pause,
        baseline: Baseline::Stable,
        metrics: default_metrics(),
    }
}

/// Without `metrics:`, a canary is judged on the router's error rate and p99 latency, and on
/// what its instances use: memory growth and CPU per request, and restarts.
fn default_metrics() -> Vec<Metric> {
    let metric = |name: &str, source| Metric {
        name: name.into(),
        source,
        critical: true,
        min_samples: 100,
        no_data: NoData::Inconclusive,
    };
    vec![
        metric(
            "error_rate",
            MetricSource::ErrorRate {
                tolerance: DEFAULT_ERROR_TOLERANCE,
                absolute: DEFAULT_ERROR_ABSOLUTE,
            },
        ),
        metric(
            "latency",
            MetricSource::Latency {
                quantile: 0.99,
                tolerance: DEFAULT_LATENCY_TOLERANCE,
                absolute: DEFAULT_LATENCY_ABSOLUTE,
            },
        ),
        resource("memory", Quantity::Memory),
        resource("cpu", Quantity::Cpu),
        Metric {
            min_samples: 0,
            ..metric("restarts", MetricSource::Restarts { tolerance: 0 })
        },
    ]
}

/// A resource metric with the defaults of its test (`GrowthConfig::defaults`).
fn resource(name: &str, quantity: Quantity) -> Metric {
    let defaults = GrowthConfig::defaults(quantity, DEFAULT_ALPHA);
    Metric {
        name: name.into(),
        source: MetricSource::Resource {
            quantity,
            tolerance: defaults.ratio - 1.0,
            absolute: defaults.absolute,
        },
        critical: true,
        min_samples: 0,
        no_data: NoData::Inconclusive,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use conveyor_analysis::resources::Quantity;

    use crate::delivery::*;
    use crate::{SpecErrors, parse};

    const HEAD: &str = "name: app\njobs:\n  build:\n    steps: [make]\nrelease: { run: ./app }\nenvironments:\n  prod:\n    strategy:\n      canary:\n        steps: [10, 50]\n        analysis:\n";

    fn parse_analysis(body: &str) -> Result<Analysis, SpecErrors> {
        let source = format!("{HEAD}{body}");
        let pipeline = parse("conveyor.yml", &source)?;
        let Strategy::Canary(canary) = &pipeline.environments[0].strategy else {
            panic!("canary")
        };
        Ok(canary.analysis.clone().expect("analysis"))
    }

    #[test]
    fn an_analysis_with_every_source_parses_into_its_model() {
        let analysis = parse_analysis(
            "          interval: 2s
          alpha: 0.05
          max_duration: 5m
          inconclusive: rollback
          baseline: fresh
          metrics:
            - error_rate: { tolerance: 0.1, absolute: '0.5%' }
            - name: p95
              latency: { quantile: 0.95 }
              critical: false
            - name: checkout
              prometheus:
                address: http://127.0.0.1:9090/
                query: 'sum(rate(errors{version=\"{{ version }}\"}[1m]))'
                max: 0.05
              min_samples: 3
              no_data: fail
            - name: cpu
              prometheus: { address: 'http://p:9090', query: 'cpu{v=\"{{version}}\"}', compare: increase }
            - webhook: { url: 'https://hooks.example/check', timeout: 3s, retries: 2 }
            - command: ./smoke.sh
",
        )
        .unwrap();
        assert_eq!(analysis.interval, Duration::from_secs(2));
        assert_eq!(analysis.alpha, 0.05);
        assert_eq!(analysis.max_duration, Duration::from_secs(300));
        assert_eq!(analysis.inconclusive, Inconclusive::Rollback);
        assert_eq!(analysis.baseline, Baseline::Fresh);
        let names: Vec<&str> = analysis.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["error_rate", "p95", "checkout", "cpu", "webhook", "command"]
        );
        assert_eq!(
            analysis.metrics[0].source,
            MetricSource::ErrorRate {
                tolerance: 0.1,
                absolute: 0.005
            }
        );
        assert_eq!(
            analysis.metrics[1].source,
            MetricSource::Latency {
                quantile: 0.95,
                tolerance: 0.25,
                absolute: Duration::from_millis(5)
            }
        );
        assert!(!analysis.metrics[1].critical);
        assert_eq!(analysis.metrics[1].min_samples, 100);
        let MetricSource::Prometheus(query) = &analysis.metrics[2].source else {
            panic!("prometheus")
        };
        assert_eq!(query.address, "http://127.0.0.1:9090");
        assert_eq!((query.min, query.max, query.compare), (None, Some(0.05), None));
        let MetricSource::Prometheus(cpu) = &analysis.metrics[3].source else {
            panic!("prometheus")
        };
        assert_eq!(cpu.compare, Some(Direction::Increase));
        assert_eq!(analysis.metrics[2].min_samples, 3);
        assert_eq!(analysis.metrics[2].no_data, NoData::Fail);
        assert_eq!(
            analysis.metrics[4].source,
            MetricSource::Webhook {
                url: "https://hooks.example/check".into(),
                timeout: Duration::from_secs(3),
                retries: 2
            }
        );
        assert_eq!(analysis.metrics[5].no_data, NoData::Inconclusive);
    }

    #[test]
    fn resource_metrics_take_a_relative_and_an_absolute_margin_per_request() {
        let analysis = parse_analysis(
            "          metrics:\n            - memory: { tolerance: 1, absolute: 2048 }\n            - cpu: { absolute: 2ms }\n            - fds: {}\n            - restarts: { tolerance: 1 }\n",
        )
        .unwrap();
        let sources: Vec<MetricSource> = analysis.metrics.into_iter().map(|m| m.source).collect();
        let resource = |quantity, tolerance, absolute| MetricSource::Resource {
            quantity,
            tolerance,
            absolute,
        };
        assert_eq!(
            sources,
            [
                resource(Quantity::Memory, 1.0, 2048.0),
                resource(Quantity::Cpu, 0.5, 0.002),
                resource(Quantity::Fds, 1.0, 0.1),
                MetricSource::Restarts { tolerance: 1 },
            ]
        );
    }

    #[test]
    fn an_empty_analysis_judges_error_rate_and_p99_latency() {
        let analysis = parse_analysis("").unwrap();
        assert_eq!(analysis.interval, Duration::from_secs(1));
        assert_eq!(analysis.alpha, 0.01);
        assert_eq!(analysis.inconclusive, Inconclusive::Pause);
        let names: Vec<&str> = analysis.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["error_rate", "latency", "memory", "cpu", "restarts"]);
    }

    #[test]
    fn analysis_error_table() {
        let cases = [
            (
                "          alpha: 2\n",
                "conveyor.yml:12:18: analysis.alpha must be between 0.000001 and 0.5, found 2",
            ),
            (
                "          metrics: [{ eror_rate: {} }]\n",
                "conveyor.yml:12:21: metric has no source: add one of error_rate, latency, memory, cpu, fds, restarts, prometheus, webhook, command\nconveyor.yml:12:23: unknown key 'eror_rate' — did you mean 'error_rate'?",
            ),
            (
                "          metrics: [{ error_rate: {}, latency: {} }]\n",
                "conveyor.yml:12:21: metric has several sources (error_rate, latency); split it in two",
            ),
            (
                "          metrics: [error_rate, { error_rate: {} }]\n",
                "conveyor.yml:12:21: metric: expected a mapping with one of: error_rate, latency, memory, cpu, fds, restarts, prometheus, webhook, command, found a string",
            ),
            (
                "          metrics: [{ error_rate: }, { error_rate: {} }]\n",
                "conveyor.yml:12:38: two metrics are named 'error_rate'; give one a 'name'",
            ),
            (
                "          metrics: [{ prometheus: { address: localhost:9090, query: up, max: 1 } }]\n",
                "conveyor.yml:12:46: prometheus.address must start with http:// or https://, found 'localhost:9090'",
            ),
            (
                "          metrics: [{ prometheus: { address: 'http://p', query: 'up{v=\"{{ verison }}\"}' } }]\n",
                "conveyor.yml:12:35: prometheus needs 'min' and/or 'max' (the range the canary's value must stay in), or 'compare' (increase, decrease or either: judged against the baseline)\nconveyor.yml:12:65: unknown placeholder '{{verison}}' in the query — did you mean 'version'?",
            ),
            (
                "          metrics: [{ prometheus: { address: 'http://p', query: up, max: 1, compare: increase } }]\n",
                "conveyor.yml:12:35: prometheus has both a range ('min'/'max') and 'compare'; choose one",
            ),
            (
                "          metrics: [{ prometheus: { address: 'http://p', query: up, compare: up } }]\n",
                "conveyor.yml:12:78: unknown compare 'up'; expected one of: increase, decrease, either",
            ),
            (
                "          metrics: [{ latency: { quantile: 99 } }]\n",
                "conveyor.yml:12:44: quantile must be between 0.5 and 0.9999, found 99",
            ),
            (
                "          metrics: [{ error_rate: { absolute: '150%' } }]\n",
                "conveyor.yml:12:47: error_rate.absolute must be a percentage from 0% to 100%, found '150%'",
            ),
            (
                "          metrics: [{ error_rate: { absolute: 2 } }]\n",
                "conveyor.yml:12:47: error_rate.absolute must be between 0 and 1, found 2",
            ),
            (
                "          confidence: 0.2\n",
                "conveyor.yml:12:23: analysis.confidence must be between 0.5 and 0.999999, found 0.2",
            ),
            (
                "          inconclusive: wait\n",
                "conveyor.yml:12:25: unknown inconclusive 'wait'; expected one of: pause, rollback",
            ),
            (
                "          metrics: [{ webhook: { timeout: 1s } }]\n",
                "conveyor.yml:12:21: webhook has no 'url'",
            ),
        ];
        let wrong: Vec<String> = cases
            .iter()
            .filter_map(|(body, want)| {
                let got = parse_analysis(body).unwrap_err().to_string();
                (got != *want).then(|| format!("{body}  got: {got}\n want: {want}"))
            })
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
