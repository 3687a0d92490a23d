//! Fills a fresh data directory with a realistic history, through the real event log, so that
//! `conveyor serve --data DATA_DIR` serves it: 3 projects, `--runs` runs (3 jobs of 2 steps each,
//! mostly successful), a signed release for every 10th successful run (its artifact in the
//! content store, so the release page verifies), `--deployments` deployments spread over each
//! project's staging and production (production ones gated, approved and judged by canary
//! analysis), feature flags in each production, and the admin token `--token`.
//!
//! ```sh
//! cargo run --release -p conveyor --example seed_store -- DATA_DIR [--runs 10000] [--deployments 1000] [--token bench-admin-token]
//! ```
//!
//! Each project also gets a git source (`DATA_DIR/sources/P.git`, one commit per run, commit
//! times spread over the last 60 days, made with `git fast-import`) and its mirror
//! (`DATA_DIR/repos/P.git`), so a release comparison lists real commits and the poller finds
//! nothing new. The log stamps every event's `at` itself: every run and deployment happened
//! "now" (within the seconds the seeding takes); only the commits carry times over 60 days
//! (`committed_at`, used for lead time). The last line printed is JSON: the projects and ids a
//! benchmark requests (`bench/ui_pages.py`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use conveyor_attest::dsse::IN_TOTO_PAYLOAD_TYPE;
use conveyor_attest::{Provenance, Subject};
use conveyor_engine::{DataDir, Engine, EngineConfig};
use conveyor_exec::LocalExecutor;
use conveyor_exec::sandbox::Sandbox;
use conveyor_store::logs::{LogLine, LogOf};
use conveyor_store::{ArtifactRef, DeploymentStatus, Event, JobStatus, RunStatus, StepStatus, Verdict};
use serde_json::json;
use sha2::Digest as _;

const PROJECTS: [&str; 3] = ["shop-api", "shop-web", "billing"];
const ENVIRONMENTS: [&str; 2] = ["staging", "production"];
const AUTHORS: [(&str, &str); 4] = [
    ("Ada Lovelace", "ada@example.com"),
    ("Grace Hopper", "grace@example.com"),
    ("Linus Pauling", "linus@example.com"),
    ("Barbara Liskov", "barbara@example.com"),
];
/// Events per transaction.
const BATCH: usize = 400;
/// How far back the commits go.
const HISTORY_DAYS: i64 = 60;

fn pipeline(project: &str) -> String {
    format!(
        r#"# {project}: build, then tests and lint in parallel; blue-green to staging, a canary to
# production judged by canary analysis.
name: {project}

on:
  push: {{ branches: [main] }}
  manual: true

jobs:
  build:
    timeout: 10m
    steps:
      - name: compile
        run: make build
      - name: package
        run: |
          mkdir -p dist
          tar --sort=name --mtime=@0 -czf dist/app.tar.gz -C build .
    artifacts: [dist/app.tar.gz]

  test:
    needs: [build]
    steps:
      - name: unit tests
        run: make test
      - name: integration tests
        run: make integration

  lint:
    needs: [build]
    steps:
      - name: format
        run: make fmt-check
      - name: vet
        run: make vet

release:
  from: [build]
  run: exec ./build/server
  health: {{ path: /healthz }}
  instances: 2

environments:
  staging:
    auto: true
    strategy: blue-green
  production:
    after: staging
    production: true
    strategy:
      canary:
        steps: [10, 50]
        interval: 60s
        analysis:
          metrics:
            - error_rate: {{}}
            - latency: {{}}
"#
    )
}

const JOBS: [(&str, [&str; 2]); 3] = [
    ("build", ["compile", "package"]),
    ("test", ["unit tests", "integration tests"]),
    ("lint", ["format", "vet"]),
];

struct Args {
    data: PathBuf,
    runs: usize,
    deployments: usize,
    token: String,
}

fn args() -> anyhow::Result<Args> {
    let mut data = None;
    let mut runs = 10_000;
    let mut deployments = 1_000;
    let mut token = "bench-admin-token".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--runs" => runs = value("--runs")?.parse()?,
            "--deployments" => deployments = value("--deployments")?.parse()?,
            "--token" => token = value("--token")?,
            "-h" | "--help" => {
                println!(
                    "usage: seed_store DATA_DIR [--runs 10000] [--deployments 1000] [--token bench-admin-token]"
                );
                std::process::exit(0);
            }
            other if other.starts_with('-') => bail!("unknown option {other}"),
            other => data = Some(PathBuf::from(other)),
        }
    }
    Ok(Args {
        data: data.context("usage: seed_store DATA_DIR [--runs N] [--deployments N] [--token T]")?,
        runs,
        deployments,
        token,
    })
}

/// A small deterministic generator (xorshift), so two seedings are alike.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A bare repository at `dir` whose `main` has `count` commits (the first adds `conveyor.yml`),
/// committed at `times`; returns their shas, oldest first.
fn git_history(dir: &Path, project: &str, times: &[i64], rng: &mut Rng) -> anyhow::Result<Vec<String>> {
    let status = Command::new("git")
        .args(["init", "--bare", "--quiet", "--initial-branch=main"])
        .arg(dir)
        .status()?;
    if !status.success() {
        bail!("git init {} failed", dir.display());
    }
    let marks = dir.join("seed-marks");
    let mut stream = Vec::new();
    let data = |stream: &mut Vec<u8>, text: &str| {
        stream.extend_from_slice(format!("data {}\n", text.len()).as_bytes());
        stream.extend_from_slice(text.as_bytes());
        stream.push(b'\n');
    };
    for (i, t) in times.iter().enumerate() {
        let (name, email) = AUTHORS[rng.below(AUTHORS.len() as u64) as usize];
        let mark = i + 1;
        stream.extend_from_slice(
            format!("commit refs/heads/main\nmark :{mark}\nauthor {name} <{email}> {t} +0000\ncommitter {name} <{email}> {t} +0000\n")
                .as_bytes(),
        );
        let subject = match i % 5 {
            0 => format!("handlers: answer 404 for unknown items (#{mark})"),
            1 => format!("deps: bump the HTTP client (#{mark})"),
            2 => format!("checkout: retry the payment call once (#{mark})"),
            3 => format!("docs: explain the cache settings (#{mark})"),
            _ => format!("tests: cover the empty cart (#{mark})"),
        };
        data(&mut stream, &subject);
        if i > 0 {
            stream.extend_from_slice(format!("from :{}\n", mark - 1).as_bytes());
        } else {
            stream.extend_from_slice(b"M 100644 inline conveyor.yml\n");
            data(&mut stream, &pipeline(project));
        }
        stream.extend_from_slice(b"M 100644 inline src/VERSION\n");
        data(&mut stream, &format!("{project} {mark}\n"));
    }
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(dir)
        .args(["fast-import", "--quiet"])
        .arg(format!("--export-marks={}", marks.display()))
        .stdin(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(child.stdin.as_mut().expect("piped"), &stream)?;
    drop(child.stdin.take());
    if !child.wait()?.success() {
        bail!("git fast-import into {} failed", dir.display());
    }
    let mut shas = vec![String::new(); times.len()];
    for line in std::fs::read_to_string(&marks)?.lines() {
        let (mark, sha) = line.split_once(' ').context("a marks line")?;
        let mark: usize = mark.trim_start_matches(':').parse()?;
        shas[mark - 1] = sha.to_string();
    }
    std::fs::remove_file(&marks)?;
    Ok(shas)
}

async fn flush(engine: &Engine, events: &mut Vec<Event>, appended: &mut usize) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    *appended += events.len();
    engine.events().append_all(std::mem::take(events)).await?;
    Ok(())
}

struct ReleaseMade {
    id: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let started = std::time::Instant::now();
    if args.data.join("conveyor.db").exists() {
        bail!(
            "{} already holds a store: seed a fresh data directory",
            args.data.display()
        );
    }
    for project in PROJECTS {
        if let Err(errors) = conveyor_spec::parse("conveyor.yml", &pipeline(project)) {
            bail!("the seeded conveyor.yml does not parse: {errors}");
        }
    }
    let data = DataDir::open(&args.data, &conveyor_store::Database::in_data_dir(&args.data)).await?;
    let engine = Engine::new(
        data,
        EngineConfig::new(Vec::new()),
        Arc::new(LocalExecutor::new(Sandbox::none("seeding only"))),
    );
    let data = engine.data();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut appended = 0usize;
    let mut events = Vec::new();

    // Projects, their git sources and mirrors: one commit per run.
    let now = chrono::Utc::now();
    let first = now - chrono::Duration::days(HISTORY_DAYS);
    let span = (now - first).num_seconds();
    let runs_of = |p: usize| (0..args.runs).filter(|i| i % PROJECTS.len() == p).count();
    let sources = args.data.join("sources");
    std::fs::create_dir_all(&sources)?;
    let mut commits: Vec<Vec<(String, chrono::DateTime<chrono::Utc>)>> = Vec::new();
    let mut source_digests = Vec::new();
    for (p, project) in PROJECTS.iter().enumerate() {
        let n = runs_of(p).max(1);
        let times: Vec<i64> = (0..n)
            .map(|i| first.timestamp() + (span * i as i64) / n as i64 + rng.below(600) as i64)
            .collect();
        let source = sources.join(format!("{project}.git"));
        let shas = git_history(&source, project, &times, &mut rng)?;
        let mirror = data.mirror(project);
        let status = Command::new("git")
            .args(["clone", "--bare", "--no-local", "--quiet", "--"])
            .arg(&source)
            .arg(&mirror)
            .status()?;
        if !status.success() {
            bail!("git clone {} failed", mirror.display());
        }
        commits.push(
            shas.into_iter()
                .zip(
                    times
                        .iter()
                        .map(|t| chrono::DateTime::from_timestamp(*t, 0).expect("a time")),
                )
                .collect(),
        );
        // The source snapshot every run of the project starts from (one small tar, shared).
        let snapshot = format!("{project} source tree\n").repeat(64);
        let (digest, _) = data.cas.put_reader(snapshot.as_bytes()).await?;
        source_digests.push(digest);
        events.push(Event::ProjectAdded {
            project: project.to_string(),
            source_uri: source.display().to_string(),
            poll_seconds: 60,
            heads: BTreeMap::new(),
        });
    }
    flush(&engine, &mut events, &mut appended).await?;

    // Runs, with a release for every 10th successful one.
    let pipelines: Vec<String> = PROJECTS.iter().map(|p| pipeline(p)).collect();
    let mut releases: Vec<Vec<ReleaseMade>> = PROJECTS.iter().map(|_| Vec::new()).collect();
    let mut next_commit = [0usize; PROJECTS.len()];
    let (mut succeeded, mut failed, mut release_id) = (0usize, 0usize, 0i64);
    let mut log_lines = 0usize;
    for i in 0..args.runs {
        let run_id = i as i64 + 1;
        let p = i % PROJECTS.len();
        let project = PROJECTS[p];
        let (commit, committed) = commits[p][next_commit[p]].clone();
        next_commit[p] += 1;
        let fails = rng.chance(8);
        events.push(Event::RunCreated {
            run_id,
            project: project.to_string(),
            source_uri: sources.join(format!("{project}.git")).display().to_string(),
            commit: commit.clone(),
            branch: "main".into(),
            event: if rng.chance(90) { "push" } else { "manual" }.into(),
            pipeline: pipelines[p].clone(),
            source_digest: source_digests[p].clone(),
            committed_at: Some(rfc3339(committed)),
            jobs: JOBS.iter().map(|(j, _)| j.to_string()).collect(),
        });
        let will_release = !fails && (succeeded + 1) % 10 == 0;
        let artifact = if will_release {
            let content = format!("{project} build of {commit} (run {run_id})\n").repeat(24);
            let (digest, size) = data.cas.put_reader(content.as_bytes()).await?;
            Some(ArtifactRef {
                path: "dist/app.tar.gz".into(),
                digest,
                size,
            })
        } else {
            None
        };
        let log = data.logs.open(LogOf::Run(run_id))?;
        let t = rfc3339(now);
        for (job, steps) in JOBS {
            events.push(Event::JobStarted {
                run_id,
                job: job.into(),
                attempt: 1,
            });
            let mut job_failed = None;
            for (step, name) in steps.iter().enumerate() {
                let step = step as u32;
                events.push(Event::StepStarted {
                    run_id,
                    job: job.into(),
                    attempt: 1,
                    step,
                    name: name.to_string(),
                });
                let this_fails = fails && job == "test" && step == 1;
                for n in 0..3 {
                    log.append(&LogLine {
                        t: t.clone(),
                        job: job.into(),
                        attempt: 1,
                        step,
                        stream: "stdout".into(),
                        line: format!("{name}: {project} {} ok ({n})", &commit[..8]),
                    })?;
                    log_lines += 1;
                }
                if this_fails {
                    log.append(&LogLine {
                        t: t.clone(),
                        job: job.into(),
                        attempt: 1,
                        step,
                        stream: "stderr".into(),
                        line: "FAIL: test_checkout_retries (tests.test_payment) — expected 1 retry, got 2"
                            .into(),
                    })?;
                    log_lines += 1;
                    job_failed = Some(format!("step '{name}' failed: exit code 1"));
                }
                events.push(Event::StepFinished {
                    run_id,
                    job: job.into(),
                    attempt: 1,
                    step,
                    outcome: if this_fails {
                        StepStatus::Failed
                    } else {
                        StepStatus::Success
                    },
                    exit_code: Some(if this_fails { 1 } else { 0 }),
                });
            }
            events.push(Event::JobFinished {
                run_id,
                job: job.into(),
                attempt: 1,
                status: if job_failed.is_some() {
                    JobStatus::Failed
                } else {
                    JobStatus::Success
                },
                reason: job_failed,
                artifacts: match (&artifact, job) {
                    (Some(a), "build") => vec![a.clone()],
                    _ => Vec::new(),
                },
            });
        }
        events.push(Event::RunFinished {
            run_id,
            status: if fails {
                RunStatus::Failed
            } else {
                RunStatus::Success
            },
        });
        if fails {
            failed += 1;
        } else {
            succeeded += 1;
        }
        if let Some(artifact) = artifact {
            release_id += 1;
            // What `Engine::create_release` signs: the run's SLSA provenance over its artifacts,
            // in a DSSE envelope by the data directory's key.
            let provenance = Provenance {
                subjects: vec![Subject::sha256(&artifact.path, &artifact.digest)],
                project: project.to_string(),
                source_uri: conveyor_engine::source::redacted(
                    &sources.join(format!("{project}.git")).display().to_string(),
                ),
                commit: commit.clone(),
                branch: Some("main".into()),
                event: "push".into(),
                pipeline_digest: sha256_hex(pipelines[p].as_bytes()),
                source_tree_digest: source_digests[p].clone(),
                builder_id: EngineConfig::new(Vec::new()).builder_id,
                builder_version: env!("CARGO_PKG_VERSION").to_string(),
                invocation_id: format!("{project}/runs/{run_id}"),
                started_on: rfc3339(now),
                finished_on: conveyor_store::now_rfc3339(),
            };
            let payload = serde_json::to_vec(&provenance.statement())?;
            let envelope = serde_json::to_value(data.signer.sign(IN_TOTO_PAYLOAD_TYPE, &payload))?;
            events.push(Event::ReleaseCreated {
                release_id,
                run_id,
                project: project.to_string(),
                commit,
                branch: "main".into(),
                artifacts: vec![artifact],
                envelope,
            });
            releases[p].push(ReleaseMade { id: release_id });
        }
        if events.len() >= BATCH {
            flush(&engine, &mut events, &mut appended).await?;
        }
    }
    flush(&engine, &mut events, &mut appended).await?;

    // The first release verifies as the release page checks it.
    if let Some(release) = engine.store().release(1).await? {
        let problems = conveyor_engine::verify_stored(&release, &data.public_keys(), &data.cas);
        if !problems.is_empty() {
            bail!("release 1 does not verify: {problems:?}");
        }
    }

    // Deployments: round-robin over the six environments, each walking its project's releases.
    let slots = PROJECTS.len() * ENVIRONMENTS.len();
    let per_environment = args.deployments.div_ceil(slots).max(1);
    let mut deployment_counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut judged_deployment = None;
    let mut judgements = 0usize;
    let mut deployments_made = 0usize;
    let (mut deploy_failed, mut deploy_succeeded) = (0usize, 0usize);
    for d in 0..args.deployments {
        let deployment_id = d as i64 + 1;
        let slot = d % slots;
        let (p, e) = (slot / ENVIRONMENTS.len(), slot % ENVIRONMENTS.len());
        let (project, environment) = (PROJECTS[p], ENVIRONMENTS[e]);
        let ours = &releases[p];
        if ours.is_empty() {
            continue;
        }
        let k = d / slots;
        let release = ours[(k * ours.len() / per_environment).min(ours.len() - 1)].id;
        let (_, email) = AUTHORS[rng.below(AUTHORS.len() as u64) as usize];
        let production = environment == "production";
        let phases: Vec<String> = if production {
            vec![
                "start 2 instance(s) of the new version".into(),
                "check the new version before it gets traffic".into(),
                "shift 10% of the traffic to the new version".into(),
                "wait 60s".into(),
                "shift 50% of the traffic to the new version".into(),
                "wait 60s".into(),
                "shift 100% of the traffic to the new version".into(),
                "verify the new version for 60s".into(),
                "make the new version stable".into(),
            ]
        } else {
            vec![
                "start 2 instance(s) of the new version".into(),
                "check the new version before it gets traffic".into(),
                "shift 100% of the traffic to the new version".into(),
                "make the new version stable".into(),
            ]
        };
        let requested_by = if production { "alice" } else { "auto" };
        events.push(Event::DeploymentRequested {
            deployment_id,
            project: project.into(),
            environment: environment.into(),
            release_id: release,
            requested_by: requested_by.into(),
            author: requested_by.into(),
            authors: vec![email.to_string(), requested_by.to_string()],
            rollback_of: None,
            phases: phases.clone(),
        });
        if production {
            events.push(Event::DeploymentGated {
                deployment_id,
                gates: vec!["approval: 1 of 1 from anyone but the authors".into()],
            });
            events.push(Event::DeploymentApproved {
                deployment_id,
                by: "bob".into(),
            });
        }
        let fails = rng.chance(if production { 8 } else { 4 });
        // Where a failure stops: staging's check, production's first canary step.
        let fail_at = if production { 3 } else { 1 };
        let mut traffic = 0u32;
        let mut reason = None;
        for (index, phase) in phases.iter().enumerate() {
            if let Some(rest) = phase.strip_prefix("shift ") {
                traffic = rest
                    .split('%')
                    .next()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(traffic);
            }
            events.push(Event::DeploymentPhase {
                deployment_id,
                index: index as u32,
                phase: phase.clone(),
                traffic,
            });
            // Canary analysis judges at the end of each canary step.
            if production && phase.starts_with("wait") {
                let failing = fails && index == fail_at;
                for metric in ["error_rate", "latency"] {
                    let bad = failing && metric == "error_rate";
                    let (summary, evidence) = judgement(metric, traffic, bad, release, &mut rng);
                    events.push(Event::DeploymentJudged {
                        deployment_id,
                        metric: metric.into(),
                        verdict: if bad { Verdict::Fail } else { Verdict::Pass },
                        traffic,
                        summary: summary.clone(),
                        evidence,
                    });
                    judgements += 1;
                    if bad {
                        reason = Some(format!("analysis failed: {summary}"));
                    }
                }
                judged_deployment = Some(deployment_id).filter(|_| p == 0).or(judged_deployment);
            }
            if fails && !production && index == fail_at {
                reason = Some("check failed: `python3 smoke.py` exited with code 1".into());
            }
            if reason.is_some() {
                break;
            }
        }
        events.push(Event::DeploymentFinished {
            deployment_id,
            status: if reason.is_some() {
                DeploymentStatus::Failed
            } else {
                DeploymentStatus::Succeeded
            },
            reason: reason.clone(),
        });
        if reason.is_some() {
            deploy_failed += 1;
        } else {
            deploy_succeeded += 1;
        }
        deployments_made += 1;
        *deployment_counts
            .entry(format!("{project}/{environment}"))
            .or_default() += 1;
        if events.len() >= BATCH {
            flush(&engine, &mut events, &mut appended).await?;
        }
    }

    // Feature flags in each production (the flags page has something to show).
    for project in PROJECTS {
        let definition = json!({
            "flags": {
                "new-checkout": {
                    "state": "ENABLED",
                    "variants": {"on": true, "off": false},
                    "defaultVariant": "off",
                    "targeting": {"fractional": [["on", 10], ["off", 90]]},
                    "metadata": {"type": "release", "owner": "payments"}
                },
                "banner-text": {"state": "ENABLED", "variants": {"a": "Welcome", "b": "Hello"}, "defaultVariant": "a"},
                "max-items": {"state": "ENABLED", "variants": {"few": 10, "many": 250}, "defaultVariant": "many"},
                "legacy-search": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                    "metadata": {"type": "operational", "expectedLifetimeDays": 30}}
            }
        });
        let touched = ["new-checkout", "banner-text", "max-items", "legacy-search"];
        events.push(Event::FlagsChanged {
            project: project.into(),
            environment: "production".into(),
            by: "admin".into(),
            definition,
            changes: touched.iter().map(|f| format!("flag '{f}' added")).collect(),
            touched: touched.iter().map(|f| f.to_string()).collect(),
            removed: Vec::new(),
        });
    }
    flush(&engine, &mut events, &mut appended).await?;

    conveyor_server::ensure_admin_token(&engine, Some(&args.token))
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the admin token: {e}"))?;
    appended += 3;

    let latest_release = releases[0].last().map(|r| r.id);
    let compare_release = releases[0].len().checked_sub(11).map(|i| releases[0][i].id);
    let latest_run = (1..=args.runs as i64)
        .rev()
        .find(|id| ((id - 1) as usize).is_multiple_of(PROJECTS.len()));
    println!(
        "seeded {} in {:.1}s: {} projects, {} runs ({} succeeded, {} failed; {} log lines), {} releases, \
         {} deployments ({} succeeded, {} failed; {} judgements), {} flag sets, {} events (head {})",
        args.data.display(),
        started.elapsed().as_secs_f64(),
        PROJECTS.len(),
        args.runs,
        succeeded,
        failed,
        log_lines,
        release_id,
        deployments_made,
        deploy_succeeded,
        deploy_failed,
        judgements,
        PROJECTS.len(),
        appended,
        engine.events().head(),
    );
    for (environment, count) in &deployment_counts {
        println!("  {environment}: {count} deployments");
    }
    println!(
        "{}",
        json!({
            "projects": PROJECTS,
            "project": PROJECTS[0],
            "runs": args.runs,
            "releases": release_id,
            "deployments": deployments_made,
            "events": engine.events().head(),
            "run": latest_run,
            "release": latest_release,
            "compare": compare_release,
            "deployment": judged_deployment,
            "token": args.token,
        })
    );
    Ok(())
}

/// A judgement shaped like canary analysis's (`conveyor-delivery`'s `describe`): the summary
/// line and the evidence of an anytime-valid rate test (errors) or latency test (slow share).
fn judgement(
    metric: &str,
    traffic: u32,
    bad: bool,
    release: i64,
    rng: &mut Rng,
) -> (String, serde_json::Value) {
    let canary_requests = 120 * u64::from(traffic) + rng.below(200);
    let baseline_requests = 120 * u64::from(100 - traffic) + rng.below(200);
    let canary_events = if bad {
        canary_requests / 15
    } else {
        rng.below(canary_requests / 200 + 1)
    };
    let baseline_events = rng.below(baseline_requests / 200 + 1);
    let rate = |e: u64, n: u64| (n > 0).then(|| e as f64 / n as f64);
    let (cr, br) = (
        rate(canary_events, canary_requests),
        rate(baseline_events, baseline_requests),
    );
    let diff = cr.unwrap_or(0.0) - br.unwrap_or(0.0);
    let statistic = json!({
        "canary": {"requests": canary_requests, "events": canary_events},
        "baseline": {"requests": baseline_requests, "events": baseline_events},
        "canary_rate": cr,
        "baseline_rate": br,
        "margin": {"relative": 0.5, "absolute": 0.01},
        "difference": {"lower": diff - 0.004, "upper": diff + 0.004},
        "ratio": {"lower": 0.6, "upper": if bad { 9.5 } else { 1.3 }},
        "e_value": if bad { 133.7 } else { 0.42 },
        "threshold": 100.0,
        "safety_e_value": if bad { 0.01 } else { 48.2 },
        "safety_threshold": 20.0,
        "p_value": if bad { 0.0075 } else { 1.0 },
        "alpha": 0.01,
        "confidence": 0.95,
        "needed": null,
        "looks": 60,
    });
    let percent = |r: Option<f64>| r.map_or("–".to_string(), |r| format!("{:.2}%", r * 100.0));
    let versions = json!({"canary": format!("r{release}"), "baseline": format!("r{}", release.saturating_sub(1).max(1))});
    let (summary, mut evidence) = if metric == "latency" {
        let mut s = statistic;
        s["quantile"] = json!(0.99);
        s["baseline_threshold"] = json!(0.048);
        s["canary_threshold"] = json!(0.061);
        (
            format!(
                "latency: p99 — canary {canary_events} of {canary_requests} requests slower than 61 ms ({}) vs baseline {baseline_events} slower than 48 ms ({}); passes",
                percent(cr),
                percent(br)
            ),
            json!({"test": "anytime-valid latency test (share of slow requests)", "statistic": s}),
        )
    } else {
        (
            format!(
                "error_rate: canary {canary_events} of {canary_requests} requests failed ({}) vs baseline {baseline_events} ({}); {}",
                percent(cr),
                percent(br),
                if bad {
                    "e = 133.681 (fails at 100)"
                } else {
                    "within the margin"
                }
            ),
            json!({"test": "anytime-valid rate test (5xx / requests)", "statistic": statistic}),
        )
    };
    evidence["versions"] = versions;
    evidence["critical"] = json!(true);
    evidence["min_samples"] = json!(100);
    (summary, evidence)
}
