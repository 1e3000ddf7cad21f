//! Project: the pipeline end to end. A tree is opened once ([`Project::open`]): its
//! plan, its `drbuild.yaml`, and the settings resolved from the caller's overrides over
//! the file over the defaults. Prefetch and build then run from it. `drbuild` and the
//! [`DockerBuild`] runner both go through here, so one tree behaves the same from either.
//!
//! May import: every stage.

mod error;
mod runner;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{Error, ErrorKind};
pub use runner::{DockerBuild, DockerBuildReport};

use crate::build::{BuildEvent, BuildOptions, BuildReport, Builder};
use crate::bundle::{
    export_bundle, export_fetched, BundleError, BundleManifest, BytesProgress, Compression,
};
use crate::cache::BlobCache;
use crate::config::Via;
use crate::config::{Overrides, Settings};
use crate::engine::{DockerEngine, EngineError};
use crate::plan::{Plan, PlanOptions, ServiceError, ServiceSet};
use crate::prefetch::{PrefetchEvent, PrefetchOptions, PrefetchReport, Prefetcher};
use crate::vocab::Wanted;
use tokio_util::sync::CancellationToken;

/// A tree with its plan and resolved settings.
#[derive(Debug, Clone)]
pub struct Project {
    /// The tree's root, as given.
    pub root: PathBuf,
    /// What it needs and builds.
    pub plan: Plan,
    /// Settings: overrides over `drbuild.yaml` over defaults.
    pub settings: Settings,
}

/// How a run of [`Project::build`] goes, beyond the settings.
#[derive(Debug, Clone, Default)]
pub struct BuildRun {
    /// Build only these services (all when empty).
    pub only: Vec<String>,
    /// Do not build these.
    pub skip: Vec<String>,
    /// Rebuild without the cache.
    pub no_cache: bool,
    /// Skip services whose image exists.
    pub missing_only: bool,
    /// Stop starting builds after the first failure.
    pub fail_fast: bool,
    /// Do not prefetch the base images first.
    pub no_prefetch: bool,
    /// Pull images even when present.
    pub always_pull: bool,
}

/// What a [`Project::build`] did.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// The prefetch of base images (unless turned off, or nothing to pull).
    pub prefetch: Option<PrefetchReport>,
    /// The builds; `None` when the prefetch was interrupted.
    pub build: Option<BuildReport>,
}

/// What a [`Project::export`] did.
#[derive(Debug, Clone)]
pub struct ExportOutcome {
    /// The bundle's manifest.
    pub manifest: BundleManifest,
    /// The fetch from registries, when the images did not come from the daemon.
    pub fetched: Option<PrefetchReport>,
}

impl Project {
    /// Plans `root` and resolves the settings (`overrides` over its `drbuild.yaml`
    /// over the defaults). Unknown keys of the file are logged as warnings.
    pub fn open(
        root: &Path,
        plan_options: &PlanOptions,
        overrides: &Overrides,
    ) -> Result<Project, Error> {
        let plan = Plan::for_tree(root, plan_options)?;
        if let Some(file) = &plan.config {
            for w in &file.warnings {
                tracing::warn!("{}:{}: {}", w.path.display(), w.line, w.value);
            }
        }
        let settings = Settings::resolve(
            overrides,
            plan.config.as_ref().map(|c| &c.config),
            Settings::default(),
        )?;
        Ok(Project {
            root: root.to_path_buf(),
            plan,
            settings,
        })
    }

    /// A project whose tree is not planned (the images are named, not read from it):
    /// its `drbuild.yaml` and settings only.
    pub fn settings_only(root: &Path, overrides: &Overrides) -> Result<Project, Error> {
        let config = crate::config::ConfigFile::find(root).map_err(crate::plan::PlanError::from)?;
        let settings = Settings::resolve(
            overrides,
            config.as_ref().map(|c| &c.config),
            Settings::default(),
        )?;
        Ok(Project {
            root: root.to_path_buf(),
            plan: Plan {
                config,
                ..Plan::default()
            },
            settings,
        })
    }

    /// The services to build: all, or `only`, minus `skip`; their dependencies must
    /// not form a cycle.
    pub fn services(&self, only: &[String], skip: &[String]) -> Result<ServiceSet, ServiceError> {
        let mut set = self.plan.services.clone();
        set.order()?;
        set.select(only, skip)?;
        Ok(set)
    }

    /// Pull options for a daemon: the settings, with the daemon's own mirrors.
    pub async fn prefetch_options(
        &self,
        engine: &DockerEngine,
    ) -> Result<PrefetchOptions, EngineError> {
        let info = engine.info().await?;
        Ok(PrefetchOptions {
            daemon_mirrors: info.mirrors,
            ..PrefetchOptions::from(&self.settings)
        })
    }

    /// Pulls the `wanted` images that are not present for their platform (all of them
    /// with `always_pull`).
    pub async fn prefetch(
        &self,
        engine: DockerEngine,
        wanted: &[Wanted],
        always_pull: bool,
        events: impl Fn(&PrefetchEvent) + Send + Sync + 'static,
        cancel: CancellationToken,
    ) -> Result<PrefetchReport, EngineError> {
        let options = PrefetchOptions {
            always_pull,
            ..self.prefetch_options(&engine).await?
        };
        Prefetcher::new(engine, options)
            .on_event(events)
            .cancel_on(cancel)
            .run(wanted)
            .await
    }

    /// Writes the `wanted` images to a bundle at `output`: from the daemon (`docker
    /// save`) when it is reachable and holds them all (unless `--via registry`), else
    /// straight from the registries through the registry-native path and its cache —
    /// no daemon needed, and nothing already in the cache is downloaded again.
    pub async fn export(
        &self,
        wanted: &[Wanted],
        output: &Path,
        compression: Compression,
        events: impl Fn(&PrefetchEvent) + Send + Sync + 'static,
        progress: BytesProgress,
        cancel: CancellationToken,
    ) -> Result<ExportOutcome, Error> {
        // The daemon, when there is one, names its registry mirrors (the registry path
        // uses them first, as the daemon would) and may hold the images already.
        let engine = match DockerEngine::connect().await {
            Ok(engine) => Some(engine),
            Err(e) if self.settings.via == Via::Daemon => return Err(e.into()),
            Err(e) => {
                tracing::info!("{e}: fetching from the registries instead");
                None
            }
        };
        let mut daemon_mirrors = Vec::new();
        if let Some(engine) = &engine {
            if self.settings.via != Via::Registry {
                let references: Vec<_> = wanted.iter().map(|w| w.reference.clone()).collect();
                let present = crate::engine::Engine::present_images(engine, &references).await?;
                let all = wanted
                    .iter()
                    .all(|w| present.contains_for(&w.reference, w.platform.as_ref()));
                if all || self.settings.via == Via::Daemon {
                    let manifest =
                        export_bundle(engine, wanted, output, compression, &cancel, progress)
                            .await?;
                    return Ok(ExportOutcome {
                        manifest,
                        fetched: None,
                    });
                }
            }
            daemon_mirrors = engine.info().await.map(|i| i.mirrors).unwrap_or_default();
        }
        let options = PrefetchOptions {
            daemon_mirrors,
            ..PrefetchOptions::from(&self.settings)
        };
        let cache_dir = options
            .cache_dir
            .clone()
            .unwrap_or_else(BlobCache::default_dir);
        let report = Prefetcher::fetch_only(options)
            .on_event(events)
            .cancel_on(cancel.clone())
            .run(wanted)
            .await?;
        if report.interrupted {
            return Err(BundleError::Interrupted.into());
        }
        let failed: Vec<String> = report
            .images
            .iter()
            .filter_map(|r| r.error.clone())
            .collect();
        if !failed.is_empty() {
            return Err(BundleError::NotFetched { errors: failed }.into());
        }
        let cache = BlobCache::open(&cache_dir).map_err(|e| BundleError::Io {
            path: cache_dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let manifest = export_fetched(
            &cache,
            &report.fetched,
            output,
            compression,
            &cancel,
            progress,
        )
        .await?;
        Ok(ExportOutcome {
            manifest,
            fetched: Some(report),
        })
    }

    /// Prefetches the base images of the selected services, then builds them in
    /// dependency order. An interrupted prefetch builds nothing.
    pub async fn build(
        &self,
        engine: DockerEngine,
        run: &BuildRun,
        prefetch_events: impl Fn(&PrefetchEvent) + Send + Sync + 'static,
        build_events: impl Fn(&BuildEvent) + Send + Sync + 'static,
        cancel: CancellationToken,
    ) -> Result<BuildOutcome, Error> {
        let set = self.services(&run.only, &run.skip)?;
        let mut prefetch = None;
        if !run.no_prefetch {
            let images = self.plan.images_for(&set);
            if !images.is_empty() {
                tracing::info!("prefetching {} base image(s)", images.len());
                let report = self
                    .prefetch(
                        engine.clone(),
                        &images,
                        run.always_pull,
                        prefetch_events,
                        cancel.clone(),
                    )
                    .await?;
                let s = &report.summary;
                tracing::info!(
                    "prefetch: pulled {}, present {}, failed {} of {}",
                    s.pulled,
                    s.present,
                    s.failed,
                    s.total
                );
                let interrupted = report.interrupted;
                prefetch = Some(report);
                if interrupted {
                    return Ok(BuildOutcome {
                        prefetch,
                        build: None,
                    });
                }
            }
        }
        let options = BuildOptions {
            no_cache: run.no_cache,
            missing_only: run.missing_only,
            fail_fast: run.fail_fast,
            ..BuildOptions::from(&self.settings)
        };
        let build = Builder::with_shared_engine(Arc::new(engine), options)
            .on_event(build_events)
            .cancel_on(cancel)
            .run(&set)
            .await?;
        Ok(BuildOutcome {
            prefetch,
            build: Some(build),
        })
    }
}
