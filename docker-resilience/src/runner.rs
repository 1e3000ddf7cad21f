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
//! every Dockerfile, compose or config file and build context it used, and a
//! `cargo:warning=` line for each service that failed.

use std::path::{Path, PathBuf};

use crate::build::{BuildOptions, BuildReport, Builder, ServiceStatus};
use crate::engine::{DockerEngine, EngineError};
use crate::plan::{Plan, PlanError, PlanOptions};
use crate::prefetch::{PrefetchOptions, PrefetchReport, Prefetcher};
use crate::service::{ServiceError, ServiceSet};

/// Why a [`DockerBuild`] run did not build everything.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// The tree cannot be planned.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The services are invalid.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The daemon cannot be used.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Some services were not built; the report says why.
    #[error("{} service(s) not built: {}", failed.len(), failed.join(", "))]
    Failed {
        /// The services that failed or were skipped.
        failed: Vec<String>,
        /// The whole report.
        report: Box<DockerBuildReport>,
    },
}

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
/// every Dockerfile, compose or config file and build context it used, and a
/// `cargo:warning=` line for each service not built.
#[derive(Debug, Clone)]
pub struct DockerBuild {
    root: PathBuf,
    options: BuildOptions,
    only: Vec<String>,
    prefetch: bool,
    cargo: Option<bool>,
}

impl DockerBuild {
    /// A run over the tree at `root` (relative paths are relative to the current
    /// directory, which is the package's directory under a build script).
    pub fn new(root: impl AsRef<Path>) -> Self {
        DockerBuild {
            root: root.as_ref().to_path_buf(),
            options: BuildOptions::default(),
            only: Vec::new(),
            prefetch: true,
            cargo: None,
        }
    }

    /// Services built at once (default 2).
    pub fn jobs(&mut self, jobs: usize) -> &mut Self {
        self.options.jobs = jobs.max(1);
        self
    }

    /// Rebuild without the cache.
    pub fn force(&mut self, force: bool) -> &mut Self {
        self.options.no_cache = force;
        self
    }

    /// Build only this service (call again for more); all by default.
    pub fn service(&mut self, name: impl Into<String>) -> &mut Self {
        self.only.push(name.into());
        self
    }

    /// Network for `RUN` steps.
    pub fn network(&mut self, network: impl Into<String>) -> &mut Self {
        self.options.network = Some(network.into());
        self
    }

    /// Whether to prefetch base images first (default yes).
    pub fn prefetch(&mut self, prefetch: bool) -> &mut Self {
        self.prefetch = prefetch;
        self
    }

    /// Whether to print `cargo:` lines (default: when `OUT_DIR` is set, as under a
    /// build script).
    pub fn cargo_metadata(&mut self, cargo: bool) -> &mut Self {
        self.cargo = Some(cargo);
        self
    }

    /// Runs: plan, prefetch, build. Blocks; starts its own async runtime.
    pub fn run(&self) -> Result<DockerBuildReport, RunnerError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(RunnerError::Runtime)?;
        runtime.block_on(self.run_async())
    }

    /// Runs inside an existing async runtime.
    pub async fn run_async(&self) -> Result<DockerBuildReport, RunnerError> {
        let cargo = self
            .cargo
            .unwrap_or_else(|| std::env::var_os("OUT_DIR").is_some());
        let plan = Plan::for_tree(&self.root, &PlanOptions::default())?;
        let mut set = ServiceSet::load(&self.root, &plan)?;
        set.select(&self.only, &[])?;
        if cargo {
            for input in set.inputs(&plan) {
                println!("cargo:rerun-if-changed={}", self.root.join(input).display());
            }
        }
        let engine = DockerEngine::connect().await?;
        let prefetch = if self.prefetch {
            let info = engine.info().await?;
            let options = PrefetchOptions {
                daemon_mirrors: info.mirrors,
                ..PrefetchOptions::default()
            };
            let images: Vec<_> = plan.references().cloned().collect();
            Some(
                Prefetcher::new(engine.clone(), options)
                    .run(&images)
                    .await?,
            )
        } else {
            None
        };
        let build = Builder::new(engine, self.options.clone()).run(&set).await?;
        let failed: Vec<String> = build
            .services
            .iter()
            .filter(|r| matches!(r.status, ServiceStatus::Failed | ServiceStatus::Skipped))
            .map(|r| r.name.clone())
            .collect();
        if cargo {
            for r in build
                .services
                .iter()
                .filter(|r| r.status != ServiceStatus::Built && r.status != ServiceStatus::UpToDate)
            {
                let why = r.error.as_deref().unwrap_or("not built").replace('\n', " ");
                println!(
                    "cargo:warning=docker service `{}` {}: {why}",
                    r.name,
                    r.status.as_str()
                );
            }
        }
        let report = DockerBuildReport { prefetch, build };
        if failed.is_empty() {
            Ok(report)
        } else {
            Err(RunnerError::Failed {
                failed,
                report: Box::new(report),
            })
        }
    }
}
