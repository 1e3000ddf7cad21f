//! A runner for `build.rs` scripts and `cargo xtask`, in the spirit of `cc::Build`:
//! prefetch a tree's base images and build its services in a few lines.
//!
//! ```no_run
//! // build.rs, or an xtask's `docker` command
//! docker_resilience::DockerBuild::new("docker")
//!     .jobs(2)
//!     .run()
//!     .expect("docker images built");
//! ```
//!
//! Under a build script (`OUT_DIR` is set), it prints `cargo:rerun-if-changed=` for
//! every Dockerfile, compose or config file, `.env` and build context it used, and a
//! `cargo:warning=` line for each service that failed. Settings resolve as for
//! `drbuild build-all`: what is set here over `drbuild.yaml` over the defaults.

use std::path::{Path, PathBuf};

use super::{BuildRun, Error, Project};
use crate::build::{BuildReport, ServiceStatus};
use crate::config::{Overrides, Settings};
use crate::engine::DockerEngine;
use crate::plan::PlanOptions;
use crate::prefetch::PrefetchReport;
use crate::vocab::SecretSpec;
use tokio_util::sync::CancellationToken;

/// What a [`DockerBuild`] run did.
#[derive(Debug, Clone)]
pub struct DockerBuildReport {
    /// The prefetch of base images (unless turned off).
    pub prefetch: Option<PrefetchReport>,
    /// The builds.
    pub build: BuildReport,
}

/// Prefetches and builds a tree's services, for a `build.rs` or an xtask.
///
/// ```no_run
/// docker_resilience::DockerBuild::new("docker")
///     .jobs(2)
///     .run()
///     .expect("docker images built");
/// ```
///
/// Under a build script (`OUT_DIR` is set), it prints `cargo:rerun-if-changed=` for
/// every Dockerfile, compose or config file, `.env` and build context it used, and a
/// `cargo:warning=` line for each service not built.
#[derive(Debug, Clone)]
pub struct DockerBuild {
    root: PathBuf,
    overrides: Overrides,
    run: BuildRun,
    cargo: Option<bool>,
}

impl DockerBuild {
    /// A run over the tree at `root` (relative paths are relative to the current
    /// directory, which is the package's directory under a build script).
    pub fn new(root: impl AsRef<Path>) -> Self {
        DockerBuild {
            root: root.as_ref().to_path_buf(),
            overrides: Overrides::default(),
            run: BuildRun::default(),
            cargo: None,
        }
    }

    /// Services built at once (default 2, or `jobs` in drbuild.yaml).
    pub fn jobs(&mut self, jobs: usize) -> &mut Self {
        self.overrides.build_jobs = Some(jobs.max(1));
        self
    }

    /// Rebuild without the cache.
    pub fn force(&mut self, force: bool) -> &mut Self {
        self.run.no_cache = force;
        self
    }

    /// Build only this service (call again for more); all by default.
    pub fn service(&mut self, name: impl Into<String>) -> &mut Self {
        self.run.only.push(name.into());
        self
    }

    /// Network for every build's `RUN` steps, over the services' own.
    pub fn network(&mut self, network: impl Into<String>) -> &mut Self {
        self.overrides.network = Some(network.into());
        self
    }

    /// A mirror, tried before drbuild.yaml's (`HOST[:PORT][/PREFIX]`, or
    /// `REGISTRY=MIRROR` for another registry than Docker Hub).
    pub fn mirror(&mut self, spec: impl Into<String>) -> &mut Self {
        self.overrides.mirrors.push(spec.into());
        self
    }

    /// Every setting at once (what a caller of `drbuild` gives as flags).
    pub fn overrides(&mut self, overrides: Overrides) -> &mut Self {
        self.overrides = overrides;
        self
    }

    /// A build secret for every service (`id=ID,src=FILE` or `id=ID,env=VAR`, as
    /// `drbuild build --secret` takes it), mounted with `RUN --mount=type=secret,id=ID`.
    pub fn secret(&mut self, spec: SecretSpec) -> &mut Self {
        self.run.secrets.push(spec);
        self
    }

    /// Whether to prefetch base images first (default yes).
    pub fn prefetch(&mut self, prefetch: bool) -> &mut Self {
        self.run.no_prefetch = !prefetch;
        self
    }

    /// Whether to print `cargo:` lines (default: when `OUT_DIR` is set, as under a
    /// build script).
    pub fn cargo_metadata(&mut self, cargo: bool) -> &mut Self {
        self.cargo = Some(cargo);
        self
    }

    /// The settings a run would use: this runner's over drbuild.yaml's over defaults.
    pub fn settings(&self) -> Result<Settings, Error> {
        Ok(self.open()?.settings)
    }

    fn open(&self) -> Result<Project, Error> {
        Project::open(&self.root, &PlanOptions::default(), &self.overrides)
    }

    /// Runs: plan, prefetch, build. Blocks; starts its own async runtime.
    pub fn run(&self) -> Result<DockerBuildReport, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        runtime.block_on(self.run_async())
    }

    /// Runs inside an existing async runtime.
    pub async fn run_async(&self) -> Result<DockerBuildReport, Error> {
        let cargo = self
            .cargo
            .unwrap_or_else(|| std::env::var_os("OUT_DIR").is_some());
        let project = self.open()?;
        let set = project.services(&self.run.only, &[])?;
        if cargo {
            for input in set.inputs(&project.plan) {
                println!("cargo:rerun-if-changed={}", self.root.join(input).display());
            }
        }
        let engine = DockerEngine::connect().await?;
        let outcome = project
            .build(engine, &self.run, |_| {}, |_| {}, CancellationToken::new())
            .await?;
        let build = outcome.build.unwrap_or_default();
        let not_built: Vec<_> = build
            .services
            .iter()
            .filter(|r| matches!(r.status, ServiceStatus::Failed | ServiceStatus::Skipped))
            .collect();
        if cargo {
            for r in &not_built {
                let why = r.error.as_deref().unwrap_or("not built").replace('\n', " ");
                let why = crate::vocab::redact(&why);
                println!(
                    "cargo:warning=docker service `{}` {}: {why}",
                    r.name,
                    r.status.as_str()
                );
            }
        }
        let failed: Vec<String> = not_built.iter().map(|r| r.name.clone()).collect();
        let report = DockerBuildReport {
            prefetch: outcome.prefetch,
            build,
        };
        if failed.is_empty() {
            Ok(report)
        } else {
            Err(Error::NotBuilt {
                failed,
                report: Box::new(report),
            })
        }
    }
}
