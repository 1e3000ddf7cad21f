//! Project: the pipeline end to end. A tree is opened once ([`Project::open`]): its
//! plan, its `drbuild.yaml`, and the settings resolved from the caller's overrides over
//! the file over the defaults. Prefetch and build then run from it. `drbuild` and the
//! [`DockerBuild`] runner both go through here, so one tree behaves the same from either.
//!
//! May import: every stage.

mod error;
#[cfg(feature = "bundle")]
mod export;
mod runner;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{Error, ErrorKind};
#[cfg(feature = "bundle")]
pub use export::{ExportOptions, ExportOutcome};
pub use runner::{DockerBuild, DockerBuildReport};

use crate::build::{BuildEvent, BuildOptions, BuildReport, Builder};
use crate::config::{Overrides, Settings};
use crate::engine::{DaemonInfo, DockerEngine, EngineError};
use crate::plan::{Plan, PlanOptions, ServiceError, ServiceSet};
use crate::prefetch::{PrefetchEvent, PrefetchOptions, PrefetchReport, Prefetcher};
use crate::registry::client::Endpoint;
use crate::vocab::{SecretSpec, SecretValue, Wanted};
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
    /// Build secrets for every service (`--secret`), over the services' own; relative
    /// files relative to the current directory.
    pub secrets: Vec<SecretSpec>,
}

/// What a [`Project::build`] did.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// The prefetch of base images (unless turned off, or nothing to pull).
    pub prefetch: Option<PrefetchReport>,
    /// The builds; `None` when the prefetch was interrupted.
    pub build: Option<BuildReport>,
}

/// The `wanted` images a daemon of one of `systems` (`linux`, `windows`; empty: not
/// known) runs: those for another OS (a Windows Dockerfile's bases, on a Linux daemon)
/// are left out, said in one line.
fn for_daemon_os(wanted: &[Wanted], systems: &[&str]) -> Vec<Wanted> {
    let runs = |w: &Wanted| {
        w.platform
            .as_ref()
            .is_none_or(|p| systems.iter().any(|os| p.runs_on(os)))
    };
    let (kept, other): (Vec<Wanted>, Vec<Wanted>) = wanted.iter().cloned().partition(runs);
    if !other.is_empty() {
        let names: Vec<String> = other.iter().map(ToString::to_string).collect();
        tracing::warn!(
            "not pulling {} image(s) for another OS than the daemon's ({}): {}",
            other.len(),
            systems.join(", "),
            names.join(", ")
        );
    }
    kept
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
        if let Some(filter) = &plan.profiles {
            tracing::info!("{filter}");
        }
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

    /// Pull options: the settings, with the daemons' own mirrors.
    pub fn prefetch_options(
        &self,
        daemon_mirrors: Vec<String>,
        always_pull: bool,
    ) -> PrefetchOptions {
        PrefetchOptions {
            always_pull,
            daemon_mirrors,
            ..PrefetchOptions::from(&self.settings)
        }
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
        // What the daemon can do is asked meanwhile (the run needs it first).
        let (info, _) = tokio::join!(engine.info(), engine.features());
        let info = info?;
        let wanted = for_daemon_os(wanted, &[info.os.as_str()]);
        let options = self.prefetch_options(info.mirrors, always_pull);
        Prefetcher::new(engine, options)
            .on_event(events)
            .cancel_on(cancel)
            .run(&wanted)
            .await
    }

    /// Pulls the `wanted` images into every daemon of `hosts` at once: each blob is
    /// fetched once (one cache, one source health) and handed to every daemon in
    /// parallel; the sources are every daemon's registry mirrors, then the settings'.
    /// A daemon that cannot be reached fails its own items, not the run.
    pub async fn prefetch_hosts(
        &self,
        hosts: &[String],
        wanted: &[Wanted],
        always_pull: bool,
        events: impl Fn(&PrefetchEvent) + Send + Sync + 'static,
        cancel: CancellationToken,
    ) -> HostsReport {
        let started = std::time::Instant::now();
        let connected = futures_util::future::join_all(hosts.iter().map(|h| async move {
            let engine = DockerEngine::connect_to(h)
                .await
                .map(|e| e.with_credentials(self.settings.credentials));
            let info = match &engine {
                Ok(e) => e.info().await.unwrap_or_default(),
                Err(_) => DaemonInfo::default(),
            };
            (h.clone(), engine, info)
        }))
        .await;
        let mut daemon_mirrors: Vec<String> = Vec::new();
        for (_, _, info) in &connected {
            for m in &info.mirrors {
                if !daemon_mirrors.contains(m) {
                    daemon_mirrors.push(m.clone());
                }
            }
        }
        let systems: Vec<&str> = connected.iter().map(|(_, _, i)| i.os.as_str()).collect();
        let kept = for_daemon_os(wanted, &systems);
        let wanted = kept.as_slice();
        let options = self.prefetch_options(daemon_mirrors, always_pull);
        let events = std::sync::Arc::new(events);
        let mut first: Option<Prefetcher<DockerEngine>> = None;
        let mut runs = Vec::new();
        for (host, engine, _) in connected {
            match engine {
                Ok(engine) => {
                    let sink = std::sync::Arc::clone(&events);
                    let mut prefetcher = Prefetcher::new(engine, options.clone())
                        .on_event(move |e| sink(e))
                        .cancel_on(cancel.clone());
                    if let Some(first) = &first {
                        prefetcher = prefetcher.sharing_fetch_with(first).await;
                    }
                    if first.is_none() {
                        first = Some(prefetcher);
                        runs.push((host, Ok(None)));
                    } else {
                        runs.push((host, Ok(Some(prefetcher))));
                    }
                }
                Err(e) => runs.push((host, Err(e.to_string()))),
            }
        }
        let reports = futures_util::future::join_all(runs.iter().map(|(host, run)| {
            let first = first.as_ref();
            async move {
                let prefetcher = match run {
                    Ok(Some(p)) => Some(p),
                    Ok(None) => first,
                    Err(_) => None,
                };
                let result = match (prefetcher, run) {
                    (Some(p), _) => p.run(wanted).await.map_err(|e| e.to_string()),
                    (None, Err(e)) => Err(e.clone()),
                    (None, Ok(_)) => Err("no daemon".into()),
                };
                match result {
                    Ok(report) => HostReport {
                        host: host.clone(),
                        error: None,
                        report,
                    },
                    Err(error) => HostReport {
                        host: host.clone(),
                        report: PrefetchReport::failed(wanted, &error),
                        error: Some(error),
                    },
                }
            }
        }))
        .await;
        let endpoints = reports
            .iter()
            .find(|r| r.error.is_none())
            .map(|r| r.report.endpoints.clone())
            .unwrap_or_default();
        HostsReport::new(reports, endpoints, started.elapsed())
    }

    /// Copies the `wanted` images into the registry `target` (`host[:port]`), digests
    /// unchanged, through the registry-native fetch path and its cache. A daemon, when
    /// one answers, lends its registry mirrors (used first, as it uses them) and its
    /// insecure registries (plain HTTP to them); `insecure` allows plain HTTP anyway.
    pub async fn sync(
        &self,
        wanted: &[Wanted],
        target: &str,
        insecure: bool,
    ) -> crate::sync::SyncReport {
        let (_, insecure, daemon_mirrors) = registry_target(target, insecure).await;
        let options = crate::sync::SyncOptions {
            target: target.to_owned(),
            insecure,
            fetch: PrefetchOptions {
                daemon_mirrors,
                ..PrefetchOptions::from(&self.settings)
            },
        };
        crate::sync::sync(wanted, options).await
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
        // Every secret is read before anything starts: a missing one is an input error.
        let secrets = self.read_secrets(&set, &run.secrets)?;
        // Several builders (`--builder`, `builders:`), else `engine` alone.
        let mut builders = Vec::new();
        for host in &self.settings.builders {
            let builder = DockerEngine::connect_to(host)
                .await?
                .with_credentials(engine.uses_credentials());
            builders.push(builder);
        }
        if builders.is_empty() {
            builders.push(engine);
        }
        let mut prefetch = None;
        let prefetch_events = Arc::new(prefetch_events);
        if !run.no_prefetch {
            let images = self.plan.images_for(&set);
            for builder in builders.iter().filter(|_| !images.is_empty()) {
                tracing::info!(
                    "prefetching {} base image(s) into {}",
                    images.len(),
                    builder.host()
                );
                let events = Arc::clone(&prefetch_events);
                let report = self
                    .prefetch(
                        builder.clone(),
                        &images,
                        run.always_pull,
                        move |e| events(e),
                        cancel.clone(),
                    )
                    .await?;
                let s = &report.summary;
                tracing::info!(
                    "prefetch into {}: pulled {}, present {}, failed {} of {}",
                    builder.host(),
                    s.pulled,
                    s.present,
                    s.failed,
                    s.total
                );
                let interrupted = report.interrupted;
                // The report is the first builder's; the others' are in the log.
                prefetch.get_or_insert(report);
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
            secrets,
            ..BuildOptions::from(&self.settings)
        };
        let builder = if self.settings.builders.is_empty() {
            Builder::with_shared_engine(Arc::new(builders.remove(0)), options)
        } else {
            Builder::on_builders(
                builders
                    .into_iter()
                    .map(|b| (b.host().to_owned(), Arc::new(b)))
                    .collect(),
                options,
            )
        };
        let build = builder
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

impl Project {
    /// The values of the secrets each service of `set` may mount: its own (files
    /// relative to the root), then `extra` (the run's, which win by id).
    fn read_secrets(
        &self,
        set: &ServiceSet,
        extra: &[SecretSpec],
    ) -> Result<BTreeMap<String, BTreeMap<String, SecretValue>>, Error> {
        let mut out = BTreeMap::new();
        for service in set.services.values() {
            let specs = service
                .secrets
                .iter()
                .map(|s| s.clone().relative_to(&self.root))
                .chain(extra.iter().cloned());
            let mut values = BTreeMap::new();
            for spec in specs {
                let value = spec
                    .read(|name| std::env::var(name).ok())
                    .map_err(|message| Error::Secret {
                        service: service.name.clone(),
                        id: spec.id.clone(),
                        message,
                    })?;
                values.insert(spec.id.clone(), value);
            }
            if !values.is_empty() {
                out.insert(service.name.clone(), values);
            }
        }
        Ok(out)
    }
}

/// One daemon's part of [`Project::prefetch_hosts`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostReport {
    /// The daemon (`unix:///var/run/docker.sock`).
    pub host: String,
    /// Why it could not be used at all (its items then all failed with it).
    pub error: Option<String>,
    /// Its images and totals.
    #[serde(flatten)]
    pub report: PrefetchReport,
}

/// A prefetch into several daemons.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostsReport {
    /// Each daemon's images and totals.
    pub hosts: Vec<HostReport>,
    /// Totals over every daemon.
    pub summary: crate::prefetch::PrefetchSummary,
    /// What each registry endpoint did (blobs fetched once for all daemons).
    pub endpoints: Vec<crate::fetch::EndpointStats>,
}

impl HostsReport {
    fn new(
        hosts: Vec<HostReport>,
        endpoints: Vec<crate::fetch::EndpointStats>,
        elapsed: std::time::Duration,
    ) -> Self {
        let mut summary = crate::prefetch::PrefetchSummary::default();
        for h in &hosts {
            let s = &h.report.summary;
            summary.total += s.total;
            summary.pulled += s.pulled;
            summary.present += s.present;
            summary.failed += s.failed;
            summary.retries += s.retries;
        }
        summary.elapsed_ms = crate::support::millis(elapsed);
        HostsReport {
            hosts,
            summary,
            endpoints,
        }
    }

    /// Whether some daemon's run was interrupted.
    pub fn interrupted(&self) -> bool {
        self.hosts.iter().any(|h| h.report.interrupted)
    }
}

/// The registry `target` to push to: plain HTTP when it is on loopback, when
/// `insecure` says so, or when the daemon (if one answers) lists it among its insecure
/// registries (said in the log). Returns the endpoint, whether plain HTTP was allowed
/// beyond loopback, and the daemon's registry mirrors.
pub async fn registry_target(target: &str, insecure: bool) -> (Endpoint, bool, Vec<String>) {
    let (daemon_mirrors, daemon_insecure) = match DockerEngine::connect().await {
        Ok(engine) => match engine.info().await {
            Ok(info) => (info.mirrors, info.insecure_registries),
            Err(_) => (Vec::new(), Vec::new()),
        },
        Err(_) => (Vec::new(), Vec::new()),
    };
    let listed = daemon_insecure.iter().any(|r| r == target);
    if crate::vocab::is_loopback_host(target) {
        tracing::info!("pushing to {target} over plain HTTP (a loopback address)");
    } else if insecure {
        tracing::warn!("pushing to {target} over plain HTTP (--insecure)");
    } else if listed {
        tracing::warn!(
            "pushing to {target} over plain HTTP (the daemon lists it among its insecure registries)"
        );
    }
    let insecure = insecure || listed;
    (Endpoint::target(target, insecure), insecure, daemon_mirrors)
}
