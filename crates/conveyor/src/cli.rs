//! The command line: `Cli` and its subcommands, with the help texts `conveyor --help` shows.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Conveyor — continuous delivery in one binary: pipelines as code, signed releases, an audited
/// event log.
///
/// Start here:
///   conveyor demo                        the whole path: build, release, staging, canary to production
///   conveyor run examples/hello          run a project's pipeline locally, print its release
///   conveyor validate conveyor.yml       check a pipeline file
///   conveyor serve                       start the server (API on 127.0.0.1:8080)
#[derive(Parser, Debug)]
#[command(name = "conveyor", version, verbatim_doc_comment)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Server URL for client commands.
    #[arg(
        long,
        global = true,
        env = "CONVEYOR_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// API token for client commands that change something.
    #[arg(long, global = true, env = "CONVEYOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct DataArgs {
    /// Data directory (database, artifacts, logs, signing key). Default: ~/.local/share/conveyor.
    #[arg(long, env = "CONVEYOR_DATA")]
    pub data: Option<PathBuf>,
    /// The database, when not the data directory's SQLite file: postgres://USER@HOST/NAME for
    /// one several servers share (the data directory still holds the keys).
    #[arg(long, env = "CONVEYOR_DATABASE", hide_env_values = true)]
    pub database: Option<conveyor_store::Database>,
    /// Configuration file (TOML); values there are overridden by environment and flags.
    #[arg(long, env = "CONVEYOR_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The whole path in one command: a server, the example project, two changes built into
    /// signed releases and delivered — blue-green to staging, approval and canary to production.
    Demo {
        /// The example project to use.
        #[arg(default_value = "examples/hello")]
        example: PathBuf,
        /// Stop at the end instead of serving until Ctrl-C (the default when not run from a terminal).
        #[arg(long)]
        exit: bool,
    },
    /// Check a conveyor.yml; prints FILE:LINE:COL: message per problem, exit 1 when invalid.
    Validate {
        /// Pipeline file (default: ./conveyor.yml).
        file: Option<PathBuf>,
    },
    /// Run DIR's pipeline here, without a server; exit 0 only when it passed.
    Run {
        /// Project directory holding conveyor.yml (default: .).
        dir: Option<PathBuf>,
        #[command(flatten)]
        data: DataArgs,
        /// Secret for ${{ secrets.NAME }}: NAME=VALUE, or NAME to take it from your environment.
        #[arg(long = "secret", value_name = "NAME[=VALUE]")]
        secrets: Vec<String>,
        /// Jobs run at once (default: number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Print the release as JSON instead of a summary.
        #[arg(long)]
        json: bool,
        /// Sandbox the steps with bubblewrap: `required`, `auto` (default: when the machine can,
        /// with a warning when it cannot) or `off`.
        #[arg(long, env = "CONVEYOR_ISOLATION", value_enum)]
        isolation: Option<crate::config::Isolation>,
    },
    /// Start the server: API, triggers (polling, manual, cron), runs.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long, env = "CONVEYOR_ADDR")]
        addr: Option<SocketAddr>,
        #[command(flatten)]
        data: DataArgs,
        /// Seconds between checks for projects due to be polled (default 5).
        #[arg(long)]
        poll_tick: Option<u64>,
        /// Jobs run at once (default: number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Flag evaluations per second allowed per evaluation key (default 1000; 0: unlimited).
        #[arg(long)]
        flag_rate_limit: Option<u32>,
        /// A proxy in front of the environments' routers (address or CIDR block, repeatable):
        /// its X-Forwarded-For/-Proto/-Host are believed; everyone else's are replaced.
        #[arg(long = "trusted-proxy", value_name = "CIDR")]
        trusted_proxies: Vec<String>,
        /// Let anyone who reaches the API read everything without a token (a viewer of every
        /// project). Off by default.
        #[arg(long)]
        anonymous_read: bool,
        /// A host name the API answers to (repeatable), e.g. the name of a proxy in front of it.
        /// IP addresses and localhost always work; other names are refused (DNS rebinding).
        #[arg(long = "allowed-host", value_name = "NAME")]
        allowed_hosts: Vec<String>,
        /// Sandbox steps, hooks and instances with bubblewrap: `required` refuses to start
        /// without it, `auto` (default) runs unsandboxed with a warning when it is missing, `off`.
        #[arg(long, env = "CONVEYOR_ISOLATION", value_enum)]
        isolation: Option<crate::config::Isolation>,
    },
    /// Manage projects on the server.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Start a run of a project now.
    Trigger {
        project: String,
        /// Branch to run (default: the repository's default branch).
        #[arg(long)]
        branch: Option<String>,
        /// Exact commit to run.
        #[arg(long)]
        commit: Option<String>,
    },
    /// List runs, or show one run with its jobs and steps.
    Runs {
        /// A run id to show in detail.
        id: Option<i64>,
        #[arg(long)]
        project: Option<String>,
    },
    /// Print a run's log; --follow streams it live until the run ends.
    Logs {
        run: i64,
        #[arg(long, short)]
        follow: bool,
    },
    /// Cancel a running run (kills its steps).
    Cancel { run: i64 },
    /// List releases.
    Releases {
        #[arg(long)]
        project: Option<String>,
    },
    /// Check a release: its signature and every artifact's digest.
    Verify {
        release: i64,
        /// Verify against a local data directory instead of a server.
        #[arg(long, env = "CONVEYOR_DATA")]
        data: Option<PathBuf>,
        /// The data directory's database, when not its SQLite file (postgres://…).
        #[arg(long, env = "CONVEYOR_DATABASE", hide_env_values = true, requires = "data")]
        database: Option<conveyor_store::Database>,
    },
    /// Deploy a release to an environment (`promote 3 --to staging`), or advance a paused
    /// deployment (`promote --deployment 7`, `--full` to skip the remaining canary steps).
    Promote {
        /// The release to deploy.
        release: Option<i64>,
        /// The environment to deploy it to.
        #[arg(long, requires = "release")]
        to: Option<String>,
        /// A deployment in progress to move on.
        #[arg(long, conflicts_with = "release")]
        deployment: Option<i64>,
        /// With --deployment: go straight to 100%.
        #[arg(long, requires = "deployment")]
        full: bool,
        /// This release fixes forward the change shipped by deployment N of the same environment:
        /// DORA counts N as a change failure, restored when this deployment succeeds.
        #[arg(long, value_name = "N", requires = "release")]
        fixes: Option<i64>,
    },
    /// Approve a deployment waiting for approval (not as its author: four-eyes).
    Approve { deployment: i64 },
    /// Pause a deployment between steps.
    Pause { deployment: i64 },
    /// Resume a paused deployment.
    Resume { deployment: i64 },
    /// Stop a deployment now: all traffic back to the stable version.
    Abort { deployment: i64 },
    /// Roll an environment back to the previous release (or --to RELEASE).
    Rollback {
        environment: String,
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        to: Option<i64>,
    },
    /// The server's protection of an environment: required approvals, reviewers, not-author,
    /// freeze windows, `after`. A release's conveyor.yml may make it stricter, never weaker.
    #[command(subcommand)]
    Env(EnvCommand),
    /// What runs in an environment: versions, traffic split, instances, URL.
    Status {
        environment: String,
        #[arg(long)]
        project: Option<String>,
    },
    /// An environment's deployments, newest first.
    History {
        environment: String,
        #[arg(long)]
        project: Option<String>,
    },
    /// A deployment's canary analysis: each judgement, its verdict and evidence.
    Analysis {
        /// The deployment's id (`conveyor history ENV` lists them).
        deployment: i64,
        /// Print the evidence as JSON too (queries, values per version, statistics).
        #[arg(long)]
        evidence: bool,
    },
    /// Which server drives which run, and which does the polling, cron and flag schedules:
    /// the leases of the servers sharing the database (docs/scale-out.md).
    Leases,
    /// DORA metrics of an environment: deployment frequency, lead time, change failure rate,
    /// time to restore, each with its level.
    Dora {
        /// Environment measured.
        #[arg(long = "env", default_value = "production")]
        environment: String,
        /// Window: days (`90d`), weeks (`12w`) or a number of days.
        #[arg(long, default_value = "90d")]
        window: String,
        #[arg(long)]
        project: Option<String>,
    },
    /// Manage API tokens: each belongs to a user and carries their roles; it expires and can be
    /// revoked or rotated.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage users and their roles (viewer, deployer, maintainer, admin) on every project, a
    /// project, or one environment of it.
    #[command(subcommand)]
    User(UserCommand),
    /// Show who the token is and what it may do.
    Whoami,
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Manage secrets (write-only).
    #[command(subcommand, visible_alias = "secrets")]
    Secret(SecretCommand),
    /// Feature flags of an environment (flagd format), served to OpenFeature SDKs over OFREP.
    ///
    /// Each environment has one flagd definition; every change is an audited event and reaches
    /// evaluations within 100 ms. See docs/flags.md.
    ///
    /// Start here:
    ///   conveyor flags import flags.json --env staging     load a flagd definition (all or nothing)
    ///   conveyor flags key create web --env staging         an evaluation key for an OpenFeature SDK
    ///   conveyor flags list --env staging                   what is defined, on or off
    ///   conveyor flags disable new-checkout --env staging   the kill switch
    ///   conveyor flags set new-checkout --env staging --rollout on=10,off=90
    ///   conveyor flags enable new-checkout --env staging --at 2030-01-31T09:00:00Z
    #[command(subcommand, verbatim_doc_comment)]
    Flags(FlagsCommand),
    /// Maintenance on a local data directory.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Copy a store to another database, then verify it there: the hash chain, and the signed
    /// checkpoints against the data directory's keys and export. For moving from SQLite to
    /// PostgreSQL: `conveyor migrate --data /var/lib/conveyor --to postgres://conveyor@db/conveyor`.
    /// The target must hold no events; the source is only read (stop its server first). The
    /// data directory keeps the keys; serve it with `--database` the target from then on.
    Migrate {
        /// The store to copy (default: the data directory's database).
        #[arg(long, value_name = "DATABASE")]
        from: Option<conveyor_store::Database>,
        /// Where to copy it: postgres://USER@HOST/NAME (an empty database) or sqlite:PATH.
        #[arg(long, value_name = "DATABASE")]
        to: conveyor_store::Database,
        #[command(flatten)]
        data: DataArgs,
    },
}

/// Which project environment's flags (`--env` is required; `--project` may be left out when
/// the server has one project).
#[derive(Args, Debug, Clone)]
pub struct FlagScope {
    /// The environment whose flags these are, e.g. production.
    #[arg(long = "env")]
    pub environment: String,
    /// The project (default: the server's only project).
    #[arg(long)]
    pub project: Option<String>,
}

/// `conveyor flags …`.
#[derive(Subcommand, Debug)]
pub enum FlagsCommand {
    /// List the flags: state, default variant, variants, type.
    List {
        #[command(flatten)]
        scope: FlagScope,
    },
    /// Show one flag with its definition.
    Get {
        /// The flag's key.
        key: String,
        #[command(flatten)]
        scope: FlagScope,
    },
    /// Change one flag: its default variant, a percentage rollout, or its whole definition
    /// (a new flag is added). With --at, schedule the change instead.
    Set {
        /// The flag's key.
        key: String,
        #[command(flatten)]
        scope: FlagScope,
        /// Serve this variant by default.
        #[arg(long)]
        variant: Option<String>,
        /// Percentage rollout by targeting key, e.g. on=25,off=75 (flagd's fractional).
        #[arg(long, value_name = "VARIANT=WEIGHT,...")]
        rollout: Option<String>,
        /// The whole flag as flagd JSON (a file, or - for stdin).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["variant", "rollout"])]
        definition: Option<PathBuf>,
        /// Apply at this time (RFC 3339, e.g. 2030-01-31T09:00:00Z) instead of now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Turn a flag on (now, or --at a time).
    Enable {
        key: String,
        #[command(flatten)]
        scope: FlagScope,
        #[arg(long)]
        at: Option<String>,
    },
    /// Turn a flag off: SDKs get their code default (now, or --at a time).
    Disable {
        key: String,
        #[command(flatten)]
        scope: FlagScope,
        #[arg(long)]
        at: Option<String>,
    },
    /// Remove a flag.
    Remove {
        key: String,
        #[command(flatten)]
        scope: FlagScope,
    },
    /// Replace the environment's definition with a flagd JSON file (- for stdin); refused whole,
    /// with the JSON path of the mistake, if anything in it is wrong.
    Import {
        file: PathBuf,
        #[command(flatten)]
        scope: FlagScope,
    },
    /// Print the definition as flagd JSON (flagd can load it as is).
    Export {
        #[command(flatten)]
        scope: FlagScope,
    },
    /// Who changed what, when (newest first).
    History {
        #[command(flatten)]
        scope: FlagScope,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Flags past their expected lifetime (metadata `type`: release 40 days, experiment 40,
    /// operational 7; kill-switch and permission are permanent; or `expectedLifetimeDays`), or
    /// unchanged for longer than --idle-days.
    Stale {
        #[command(flatten)]
        scope: FlagScope,
        #[arg(long, default_value_t = 30)]
        idle_days: u32,
    },
    /// Scheduled changes of the environment.
    Schedules {
        #[command(flatten)]
        scope: FlagScope,
    },
    /// Cancel a scheduled change.
    Cancel { schedule: i64 },
    /// Evaluation keys (what OpenFeature SDKs authenticate with).
    #[command(subcommand)]
    Key(FlagKeyCommand),
}

#[derive(Subcommand, Debug)]
pub enum FlagKeyCommand {
    /// Create an evaluation key for an environment (admin only); prints it once.
    Create {
        name: String,
        #[command(flatten)]
        scope: FlagScope,
    },
    /// List an environment's evaluation keys (names only).
    List {
        #[command(flatten)]
        scope: FlagScope,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProjectCommand {
    /// Register a project by git URL or local path; its watched branches are polled.
    Add {
        name: String,
        source: String,
        /// Seconds between polls for new commits (default 60).
        #[arg(long)]
        poll: Option<u64>,
    },
    /// List projects.
    List,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token named NAME (for yourself, or --user: an admin for anyone, a maintainer for
    /// an automation user of their project); prints it once.
    Create {
        name: String,
        /// Whose roles it carries (default: yours).
        #[arg(long)]
        user: Option<String>,
        /// Days until it expires (1-3650, default 90).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List your tokens (an admin: everyone's), never their values.
    List,
    /// Revoke a token: refused from now on.
    Revoke { name: String },
    /// Give a token a new value (the old one is refused from now on); `rotate admin` rotates the
    /// first start's admin token.
    Rotate { name: String },
}

#[derive(Subcommand, Debug)]
pub enum EnvCommand {
    /// Set the environment's rules on the server (maintainers), replacing the ones it had.
    Protect {
        environment: String,
        #[arg(long)]
        project: Option<String>,
        /// Approvals a deployment needs before it starts.
        #[arg(long, default_value_t = 0)]
        approvals: u32,
        /// Who may approve (repeatable); default: any deployer of the environment.
        #[arg(long = "reviewer", value_name = "USER")]
        reviewers: Vec<String>,
        /// Nobody who wrote the change, nor who asked for it, may approve it.
        #[arg(long)]
        not_author: bool,
        /// A freeze window, `START;END[;TIMEZONE[;REASON]]` with cron START and END, e.g.
        /// `0 18 * * FRI;0 8 * * MON;Europe/Paris;weekend` (repeatable).
        #[arg(long = "freeze", value_name = "WINDOW")]
        freeze: Vec<String>,
        /// An environment a release must have succeeded in first.
        #[arg(long)]
        after: Option<String>,
    },
    /// Remove the environment's rules on the server: only the releases' own remain.
    Unprotect {
        environment: String,
        #[arg(long)]
        project: Option<String>,
    },
    /// Show the environment's rules on the server.
    Protection {
        environment: String,
        #[arg(long)]
        project: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user (admins), without any role yet.
    Add {
        name: String,
        /// Commits authored with this email are this user's (an author never approves their own
        /// change).
        #[arg(long)]
        email: Option<String>,
        /// A bot or CI job rather than a person: tokens only.
        #[arg(long)]
        automation: bool,
    },
    /// List users and their roles (admins).
    List,
    /// Remove a user (admins): their roles go, their tokens are revoked.
    Remove { name: String },
    /// Give NAME a ROLE (viewer, deployer, maintainer, admin) on every project, --project, or
    /// --project and --env; replaces their role on exactly that scope.
    Grant {
        name: String,
        role: conveyor_api::Role,
        #[arg(long)]
        project: Option<String>,
        #[arg(long = "env")]
        environment: Option<String>,
    },
    /// Take away NAME's role on exactly that scope.
    Revoke {
        name: String,
        #[arg(long)]
        project: Option<String>,
        #[arg(long = "env")]
        environment: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the event log's hash chain and its signed checkpoints; exit 1 if any event was
    /// edited or deleted, or history was rewritten before a checkpoint.
    Verify {
        /// Check a local data directory instead of a server (stopped, or a copy).
        #[arg(long, env = "CONVEYOR_DATA")]
        data: Option<PathBuf>,
        /// The data directory's database, when not its SQLite file (postgres://…).
        #[arg(long, env = "CONVEYOR_DATABASE", hide_env_values = true, requires = "data")]
        database: Option<conveyor_store::Database>,
        /// Exported checkpoints to check the database against, e.g. a copy kept elsewhere
        /// (default: DATA/checkpoints.jsonl).
        #[arg(long, value_name = "FILE", requires = "data")]
        checkpoints: Option<PathBuf>,
        /// The server's public key, hex (default: DATA/keys/signing.pub; `GET /api/v1/keys/signing`).
        #[arg(long, value_name = "FILE", requires = "data")]
        public_key: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Set a secret of a project; the value is read from stdin unless --value is given.
    Set {
        project: String,
        name: String,
        #[arg(long)]
        value: Option<String>,
    },
    /// Re-encrypt every secret value under a new key (keys/secrets.key) and retire the old
    /// one; on a local data directory, with the server stopped. Recorded in the event log.
    RotateKey {
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Rebuild every read model from the event log.
    Rebuild {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Replace the release signing key (keys/signing.key) with a fresh one, on a local data
    /// directory with the server stopped. The old public key is kept under keys/retired/, so
    /// releases and audit checkpoints it signed still verify. Recorded in the event log.
    RotateSigningKey {
        #[command(flatten)]
        data: DataArgs,
    },
}
