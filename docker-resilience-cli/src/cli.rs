//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::exit::EXIT_CODES_HELP;

/// Resilient Docker image prefetch and multi-service builds for flaky networks.
#[derive(Debug, Parser)]
#[command(name = "drbuild", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
    /// One JSON document on stdout (logs stay on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// More logs (-v debug, -vv trace); `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// `drbuild` commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every external image the tree needs, with where each comes from.
    Plan(PlanArgs),
    /// Pull every image of the plan that is not present, surviving flaky networks.
    Prefetch(PrefetchArgs),
    /// Build every service in dependency order, prefetching base images first.
    BuildAll(BuildAllArgs),
    /// Build the named services (and nothing else).
    Build(BuildArgs),
    /// Write the plan's images (or the named ones) to one verified bundle file.
    Export(ExportArgs),
    /// Verify a bundle, then load its images (a corrupt or truncated one loads nothing).
    Import(ImportArgs),
    /// Check why pulls and builds fail here: daemon, mirrors, upstreams, binaries, ports.
    Doctor(DoctorArgs),
}

/// `drbuild doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The tree.
    #[command(flatten)]
    pub tree: TreeArgs,
    /// The daemon's config file to validate.
    #[arg(long, default_value = "/etc/docker/daemon.json", value_name = "FILE")]
    pub daemon_json: PathBuf,
    /// Timeout of each network probe.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// `drbuild export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// `[ROOT] [IMAGE]...`: the tree whose plan's images to export (default `.`), or
    /// the images to export.
    #[arg(value_name = "ROOT|IMAGE")]
    pub args: Vec<String>,
    /// The bundle to write (atomically: it appears only when complete).
    #[arg(long, short)]
    pub output: PathBuf,
    /// `zstd` for slow links (then `drbuild import`, or `zstd -dc FILE | docker load`);
    /// `none` (default) keeps it loadable by `docker load -i`.
    #[arg(long, default_value = "none", value_name = "none|zstd")]
    pub compress: docker_resilience::Compression,
}

/// `drbuild import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The bundle to load.
    pub file: PathBuf,
}

/// Options of the commands that build.
#[derive(Debug, Clone, Args)]
pub struct BuildFlags {
    /// Services built at once (default 2, or `jobs` in drbuild.yaml).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Rebuild every service, without the build cache.
    #[arg(long)]
    pub force: bool,
    /// Skip services whose image already exists (reported `up-to-date`).
    #[arg(long, conflicts_with = "force")]
    pub missing_only: bool,
    /// Network for RUN steps (`none`, `host`, a network name).
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,
    /// Stop starting builds after the first failure.
    #[arg(long)]
    pub fail_fast: bool,
    /// Retries of a build that failed for a transient reason (network), per service.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub build_retries: u32,
    /// Pulls at once while prefetching.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub pull_jobs: usize,
    /// Do not prefetch base images first.
    #[arg(long)]
    pub no_prefetch: bool,
}

/// `drbuild build-all`.
#[derive(Debug, Args)]
pub struct BuildAllArgs {
    /// The tree.
    #[command(flatten)]
    pub tree: TreeArgs,
    /// Build only these services (repeatable).
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Do not build these services (repeatable).
    #[arg(long, value_name = "NAME")]
    pub skip: Vec<String>,
    /// How to build.
    #[command(flatten)]
    pub build: BuildFlags,
    /// How to pull.
    #[command(flatten)]
    pub pull: PullArgs,
}

/// `drbuild build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The services to build.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// The tree.
    #[arg(long, short = 'C', default_value = ".")]
    pub root: PathBuf,
    /// A build arg for every Dockerfile of the plan (`KEY=VALUE`).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// How to build.
    #[command(flatten)]
    pub build: BuildFlags,
    /// How to pull.
    #[command(flatten)]
    pub pull: PullArgs,
}

/// Options shared by commands that read a tree.
#[derive(Debug, Clone, Args)]
pub struct TreeArgs {
    /// The tree to work on.
    #[arg(default_value = ".")]
    pub root: PathBuf,
    /// A build arg for every Dockerfile (`KEY=VALUE`); compose `args:` win for their services.
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Target platform (`linux/amd64`); the host's by default.
    #[arg(long)]
    pub platform: Option<String>,
    /// Also read files that .gitignore / .drbuildignore exclude.
    #[arg(long)]
    pub no_ignore: bool,
}

/// `drbuild plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The tree.
    #[command(flatten)]
    pub tree: TreeArgs,
}

/// `drbuild prefetch`.
#[derive(Debug, Args)]
pub struct PrefetchArgs {
    /// The tree.
    #[command(flatten)]
    pub tree: TreeArgs,
    /// Pulls at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub jobs: usize,
    /// How to pull.
    #[command(flatten)]
    pub pull: PullArgs,
}

/// Options of pulling, shared by the commands that prefetch.
#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// Retries after the first attempt, per image (10 attempts in all by default,
    /// sized from measurement on flaky links).
    #[arg(long, default_value_t = 9, value_name = "N")]
    pub retries: u32,
    /// A mirror for Docker Hub images, `HOST[:PORT][/PREFIX]`, tried in order when an
    /// image's own registry fails; repeatable. `REGISTRY=MIRROR` mirrors another
    /// registry (`ghcr.io=ghcr-mirror.example.com`).
    #[arg(long = "mirror", value_name = "MIRROR")]
    pub mirrors: Vec<String>,
    /// Pull present images too (refresh them).
    #[arg(long)]
    pub always_pull: bool,
    /// Cancel and retry a pull that shows no progress for this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub stall_timeout: Duration,
    /// First delay between attempts (doubles each time, with jitter).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_delay: Duration,
    /// Longest delay between attempts.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub retry_max_delay: Duration,
    /// Give up on an image after this long.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub deadline: Duration,
    /// Do not send credentials from docker's config.
    #[arg(long)]
    pub no_credentials: bool,
}
