//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use docker_resilience::config::{Fallback, Via};
use docker_resilience::discover::DiscoverOptions;
use docker_resilience::vocab::{Platform, SecretSpec};
use docker_resilience::{Overrides, PlanOptions};

use crate::exit::EXIT_CODES_HELP;

/// `KEY=VALUE`.
fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}`: expected KEY=VALUE"))
}

/// At least 1.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Resilient Docker image prefetch and multi-service builds for flaky networks.
#[derive(Debug, Parser)]
#[command(name = "drbuild", version = env!("DRBUILD_VERSION"), after_help = EXIT_CODES_HELP)]
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
    /// Show the blob cache of registry-native pulls (`cache prune` empties it, `cache
    /// verify` checks every blob against its digest).
    Cache(CacheArgs),
    /// Copy the plan's images into a registry (a fleet's mirror), digests unchanged.
    Sync(SyncArgs),
    /// Print a completion script for a shell (`source <(drbuild completions bash)`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print drbuild's man page (roff: `drbuild man > drbuild.1; man -l drbuild.1`).
    Man,
}

/// `drbuild sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The tree whose plan's images to copy.
    #[arg(default_value = ".")]
    pub root: PathBuf,
    /// The registry to fill, `HOST[:PORT]`: Docker Hub images land under their Hub
    /// names (`library/nginx:stable`), others under their registry's host
    /// (`ghcr.io/org/app:tag`).
    #[arg(long, value_name = "REGISTRY")]
    pub to: String,
    /// Platforms to copy (repeatable) [default: those the plan needs each image for].
    #[arg(long = "platform", value_name = "OS/ARCH")]
    pub platforms: Vec<Platform>,
    /// Plain HTTP to a registry that is not on loopback.
    #[arg(long)]
    pub insecure: bool,
    /// A build arg for every Dockerfile (`KEY=VALUE`), over the services' own.
    #[arg(long = "build-arg", value_name = "KEY=VALUE", value_parser = key_value)]
    pub build_args: Vec<(String, String)>,
    /// Images copied at once [default: `pull-jobs` in drbuild.yaml, else
    /// `--connections`].
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub jobs: Option<usize>,
    /// How images are fetched.
    #[command(flatten)]
    pub pull: PullArgs,
}

/// `drbuild cache`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// `prune`: remove partial downloads and the least recently used blobs; `verify`:
    /// check every blob against its digest.
    #[command(subcommand)]
    pub command: Option<CacheCommand>,
    /// The cache [default: $XDG_CACHE_HOME/drbuild].
    #[arg(long, value_name = "DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
}

/// `drbuild cache …`.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Remove partial downloads, then the least recently used blobs down to a size.
    Prune {
        /// What the cache may still hold (`10GiB`, `500MB`) [default: 0, all of it].
        #[arg(long, value_name = "SIZE")]
        max_size: Option<bytesize::ByteSize>,
    },
    /// Hash every blob and compare it with its digest; exit 1 while a corrupt one is
    /// left.
    Verify {
        /// Remove the corrupt blobs (the next fetch brings them again).
        #[arg(long)]
        repair: bool,
    },
}

/// `drbuild doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The tree.
    #[command(flatten)]
    pub tree: TreeArgs,
    /// The daemon's config file to validate [default: /etc/docker/daemon.json].
    #[arg(long, value_name = "FILE")]
    pub daemon_json: Option<PathBuf>,
    /// Timeout of each network probe [default: 3s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// A daemon to check (`unix:///…`, `tcp://HOST:PORT`); repeatable [default:
    /// `hosts` in drbuild.yaml, else DOCKER_HOST].
    #[arg(long = "docker-host", value_name = "URL")]
    pub docker_hosts: Vec<String>,
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
    pub compress: docker_resilience::bundle::Compression,
    /// Every platform of each multi-platform image (fetched from the registries), not
    /// only those the plan needs: a bundle that `import --to` pushes into a registry
    /// with the images' digests unchanged.
    #[arg(long)]
    pub all_platforms: bool,
    /// Where the images come from when the daemon does not hold them (or with
    /// `--via registry`, or with no daemon at all): the registries, as for prefetch.
    #[command(flatten)]
    pub pull: PullArgs,
}

/// `drbuild import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The bundle to load.
    pub file: PathBuf,
    /// Push the bundle's images into this registry (`HOST[:PORT]`) instead of loading
    /// them into a daemon: an air-gapped site's registry, which every machine then
    /// pulls from. Digests stay as the bundle holds them.
    #[arg(long, value_name = "REGISTRY")]
    pub to: Option<String>,
    /// Plain HTTP to a `--to` registry that is not on loopback.
    #[arg(long, requires = "to")]
    pub insecure: bool,
    /// A daemon to load into (`unix:///…`, `tcp://HOST:PORT`); repeatable: the bundle
    /// is verified once and loaded into every daemon in parallel [default: DOCKER_HOST].
    #[arg(long = "docker-host", value_name = "URL", conflicts_with = "to")]
    pub docker_hosts: Vec<String>,
    /// Load a plain tar (`docker save`) without a bundle's proof of size and sha256;
    /// its entries' names are still checked.
    #[arg(long, conflicts_with_all = ["to", "docker_hosts"])]
    pub unverified: bool,
}

/// Options of the commands that build.
#[derive(Debug, Clone, Args)]
pub struct BuildFlags {
    /// Services built at once [default: `jobs` in drbuild.yaml, else 2].
    #[arg(long, value_name = "N", value_parser = at_least_one)]
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
    /// Retries of a build that failed for a transient reason (network), per service
    /// [default: `retry.attempts` in drbuild.yaml minus one, else 2].
    #[arg(long, value_name = "N")]
    pub build_retries: Option<u32>,
    /// Pulls at once while prefetching [default: `pull-jobs` in drbuild.yaml, else 4
    /// through the daemon and `--connections` registry-native].
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub pull_jobs: Option<usize>,
    /// Do not prefetch base images first.
    #[arg(long)]
    pub no_prefetch: bool,
    /// A daemon to build on (`unix:///…`, `tcp://…`); repeatable: services are spread
    /// over them, `--jobs` each, base images prefetched into each [default: `builders`
    /// in drbuild.yaml, else DOCKER_HOST alone].
    #[arg(long = "builder", value_name = "HOST")]
    pub builders: Vec<String>,
    /// A build secret for every service, mounted with `RUN --mount=type=secret,id=ID`
    /// (never in the image, nor printed): `id=ID,src=FILE` or `id=ID,env=VAR`;
    /// repeatable.
    #[arg(long = "secret", value_name = "id=ID[,src=FILE|,env=VAR]", value_parser = secret_spec)]
    pub secrets: Vec<SecretSpec>,
}

/// `--secret`: a file made absolute here (it is relative to where drbuild runs).
fn secret_spec(text: &str) -> Result<SecretSpec, String> {
    let spec: SecretSpec = text
        .parse()
        .map_err(|e: docker_resilience::vocab::SecretSpecError| e.to_string())?;
    let cwd = std::env::current_dir().unwrap_or_default();
    Ok(spec.relative_to(&cwd))
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
    #[arg(long = "build-arg", value_name = "KEY=VALUE", value_parser = key_value)]
    pub build_args: Vec<(String, String)>,
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
    /// A build arg for every Dockerfile (`KEY=VALUE`), over the services' own.
    #[arg(long = "build-arg", value_name = "KEY=VALUE", value_parser = key_value)]
    pub build_args: Vec<(String, String)>,
    /// Target platform (`linux/amd64`); the host's by default.
    #[arg(long)]
    pub platform: Option<Platform>,
    /// Also read files that .gitignore / .drbuildignore exclude.
    #[arg(long)]
    pub no_ignore: bool,
    /// A compose profile to activate; repeatable, `*` for every one [default:
    /// COMPOSE_PROFILES from the environment (not from a `.env` file), else every profile,
    /// so that nothing a profile needs is missed].
    #[arg(long = "profile", value_name = "NAME")]
    pub profiles: Vec<String>,
    /// The root project's compose file, relative to the tree; repeatable, merged in
    /// order as `docker compose -f` does [default: COMPOSE_FILE, else compose.yaml and
    /// its override].
    #[arg(long = "compose-file", value_name = "FILE")]
    pub compose_files: Vec<PathBuf>,
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
    /// Pulls at once [default: `pull-jobs` in drbuild.yaml, else 4 through the daemon
    /// and `--connections` registry-native].
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub jobs: Option<usize>,
    /// A daemon to prefetch into (`unix:///…`, `tcp://HOST:PORT`); repeatable: each
    /// blob is fetched once and loaded into every daemon [default: `hosts` in
    /// drbuild.yaml, else DOCKER_HOST].
    #[arg(long = "docker-host", value_name = "URL")]
    pub docker_hosts: Vec<String>,
    /// How to pull.
    #[command(flatten)]
    pub pull: PullArgs,
}

/// Options of pulling, shared by the commands that prefetch.
#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// Retries after the first attempt, per image [default: `retry.attempts` in
    /// drbuild.yaml minus one, else 9: 10 attempts, sized from measurement on flaky links].
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// A mirror for Docker Hub images, `HOST[:PORT][/PREFIX]`, tried in order when an
    /// image's own registry fails; repeatable. `REGISTRY=MIRROR` mirrors another
    /// registry (`ghcr.io=ghcr-mirror.example.com`).
    #[arg(long = "mirror", value_name = "MIRROR")]
    pub mirrors: Vec<String>,
    /// Pull present images too (refresh them).
    #[arg(long)]
    pub always_pull: bool,
    /// Cancel and retry a pull that shows no progress for this long [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub stall_timeout: Option<Duration>,
    /// First delay between attempts, doubling each time, with jitter [default: 1s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub retry_delay: Option<Duration>,
    /// Longest delay between attempts [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub retry_max_delay: Option<Duration>,
    /// A hard bound on the whole prefetch, enforced mid-download (each image also
    /// gives up after 15m of retries).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub deadline: Option<Duration>,
    /// Do not send credentials from docker's config.
    #[arg(long)]
    pub no_credentials: bool,
    /// `registry`: drbuild fetches (resuming cut layers, verifying blobs) and loads
    /// into the daemon; `daemon`: `docker pull`; `auto` (the default): `registry` where
    /// drbuild reaches the image's registry or a mirror.
    #[arg(long, value_name = "registry|daemon|auto")]
    pub via: Option<Via>,
    /// `ordered` (the default): a failing source falls back to the next (the daemon's
    /// mirrors, `--mirror`s, the registry); `never`: only the first is used.
    #[arg(long, value_name = "ordered|never")]
    pub fallback: Option<Fallback>,
    /// The blob cache of registry-native pulls [default: $XDG_CACHE_HOME/drbuild].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Ranged parts of one big blob fetched at once, over as many connections (1: one
    /// stream per blob) [default: 16].
    #[arg(long, value_name = "N")]
    pub parts: Option<usize>,
    /// Blobs at least this big are fetched in parts when one connection brings them
    /// slowly (`16MiB`; 0: none) [default: 16MiB].
    #[arg(long, value_name = "SIZE")]
    pub part_threshold: Option<bytesize::ByteSize>,
    /// Requests on the wire to one registry or mirror at once, for every image and
    /// part of a run together [default: 24].
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,
}

impl PullArgs {
    /// The settings these flags ask for; `pull_jobs` and `build` from the command's own.
    pub fn overrides(&self, pull_jobs: Option<usize>, build: Option<&BuildFlags>) -> Overrides {
        Overrides {
            build_jobs: build.and_then(|b| b.jobs),
            pull_jobs,
            network: build.and_then(|b| b.network.clone()),
            pull_attempts: self.retries.map(|r| r.saturating_add(1)),
            build_attempts: build
                .and_then(|b| b.build_retries)
                .map(|r| r.saturating_add(1)),
            retry_delay: self.retry_delay,
            retry_max_delay: self.retry_max_delay,
            deadline: self.deadline,
            stall_timeout: self.stall_timeout,
            mirrors: self.mirrors.clone(),
            via: self.via,
            fallback: self.fallback,
            cache_dir: self.cache_dir.clone(),
            credentials: self.no_credentials.then_some(false),
            hosts: None,
            builders: build.map(|b| b.builders.clone()).filter(|b| !b.is_empty()),
            parts: self.parts,
            part_threshold: self.part_threshold.map(|s| s.as_u64()),
            connections: self.connections,
        }
    }
}

impl TreeArgs {
    /// The tree at `root` with these build args, everything else as by default (for
    /// the commands that take no other tree flags).
    pub fn at(root: impl Into<PathBuf>, build_args: Vec<(String, String)>) -> Self {
        TreeArgs {
            root: root.into(),
            build_args,
            platform: None,
            no_ignore: false,
            profiles: Vec::new(),
            compose_files: Vec::new(),
        }
    }

    /// How to plan the tree these flags name.
    pub fn plan_options(&self) -> PlanOptions {
        PlanOptions {
            discover: DiscoverOptions {
                respect_ignore_files: !self.no_ignore,
                ..DiscoverOptions::default()
            },
            build_args: self.build_args.iter().cloned().collect(),
            platform: self.platform.clone(),
            env: None,
            profiles: (!self.profiles.is_empty()).then(|| self.profiles.clone()),
            compose_files: (!self.compose_files.is_empty()).then(|| self.compose_files.clone()),
        }
    }
}
