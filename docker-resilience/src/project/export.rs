//! `Project::export`: the plan's images into a bundle (feature `bundle`).

use std::path::Path;
use std::sync::Arc;

use super::{Error, Project};
use crate::bundle::{
    export_bundle, export_fetched, BundleError, BundleManifest, BytesProgress, Compression,
};
use crate::cache::BlobCache;
use crate::config::Via;
use crate::engine::DockerEngine;
use crate::fetch::{FetchEvent, FetchReport, FetchRun, FetchedImage};
use crate::prefetch::{PrefetchEvent, PrefetchOptions};
use crate::vocab::{ImageReference, Wanted};
use tokio_util::sync::CancellationToken;

/// What is said when a bundle comes from the daemon's `docker save` though the caller
/// did not ask for it.
const SAVED_BUNDLE: &str = "writing the bundle from the daemon (`docker save`): it loads into any daemon, but on a graph-driver store it holds no registry manifests, so `drbuild import --to REGISTRY` cannot push it";

/// What a [`Project::export`] did.
#[derive(Debug, Clone)]
pub struct ExportOutcome {
    /// The bundle's manifest.
    pub manifest: BundleManifest,
    /// The fetch from registries, when the images did not come from the daemon.
    pub fetched: Option<FetchReport>,
}

impl Project {
    /// Writes the `wanted` images to a bundle at `output`: through the registry-native
    /// fetch path and its cache (digests and registry manifests kept, so the bundle can
    /// also be pushed into a registry with `import --to`; nothing already in the cache
    /// is downloaded again; no daemon needed) whenever a source of the images answers;
    /// from the daemon (`docker save`) with `--via daemon`, or when no source answers
    /// and the daemon holds them all — saying that such a bundle cannot go into a
    /// registry.
    pub async fn export(
        &self,
        wanted: &[Wanted],
        output: &Path,
        how: ExportOptions,
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
        let daemon_mirrors = match &engine {
            Some(engine) => engine.info().await.map(|i| i.mirrors).unwrap_or_default(),
            None => Vec::new(),
        };
        let options = PrefetchOptions {
            daemon_mirrors,
            ..PrefetchOptions::from(&self.settings)
        };
        // Whether the daemon can write the bundle when the registries cannot.
        let daemon_holds_all = match &engine {
            Some(engine) if self.settings.via != Via::Registry && !how.all_platforms => {
                let references: Vec<_> = wanted.iter().map(|w| w.reference.clone()).collect();
                let present = crate::engine::Engine::present_images(engine, &references).await?;
                wanted
                    .iter()
                    .all(|w| present.contains_for(&w.reference, w.platform.as_ref()))
            }
            _ => false,
        };
        if let (Via::Daemon, Some(engine)) = (self.settings.via, &engine) {
            let manifest =
                export_bundle(engine, wanted, output, how.compression, &cancel, progress).await?;
            return Ok(ExportOutcome {
                manifest,
                fetched: None,
            });
        }
        let cache_dir = options
            .cache_dir
            .clone()
            .unwrap_or_else(BlobCache::default_dir);
        let cache = BlobCache::open(&cache_dir).map_err(|e| BundleError::Io {
            path: cache_dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let fetcher = options.fetcher(Arc::new(options.transport()), cache.clone());
        let sources = |image: &ImageReference| options.sources(image);
        let sink = |e: &FetchEvent<'_>| events(&PrefetchEvent::from_fetch(e));
        let run = FetchRun {
            jobs: options.registry_jobs,
            deadline: options.deadline,
            probe_timeout: options.probe_timeout,
            cancel: cancel.clone(),
            sources: &sources,
            events: &sink,
        };
        let mut report = fetcher.fetch_all(wanted, &run).await;
        if how.all_platforms && !report.interrupted {
            // Every platform of each index, so that the bundle pushes into a registry
            // with the index's digest (`import --to`).
            let fetched: Vec<FetchedImage> = report.fetched().cloned().collect();
            let more = other_platforms(&cache, &fetched);
            if !more.is_empty() {
                let extra = fetcher.fetch_all(&more, &run).await;
                report.interrupted |= extra.interrupted;
                report.images.extend(extra.images);
                report.endpoints = extra.endpoints;
            }
        }
        if report.interrupted {
            return Err(BundleError::Interrupted.into());
        }
        let failed = report.errors();
        if !failed.is_empty() {
            if let (true, Some(engine)) = (daemon_holds_all, &engine) {
                tracing::warn!(
                    "{SAVED_BUNDLE}: not every image could be fetched ({})",
                    failed.join("; ")
                );
                let manifest =
                    export_bundle(engine, wanted, output, how.compression, &cancel, progress)
                        .await?;
                return Ok(ExportOutcome {
                    manifest,
                    fetched: None,
                });
            }
            return Err(BundleError::NotFetched { errors: failed }.into());
        }
        let fetched: Vec<FetchedImage> = report.fetched().cloned().collect();
        let manifest =
            export_fetched(&cache, &fetched, output, how.compression, &cancel, progress).await?;
        Ok(ExportOutcome {
            manifest,
            fetched: Some(report),
        })
    }
}

/// How [`Project::export`] writes a bundle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Compression of the file.
    pub compression: Compression,
    /// Every platform of each multi-platform image, not only those the plan needs
    /// (fetched from the registries): a bundle that `import --to` pushes into a
    /// registry with its indexes' digests.
    pub all_platforms: bool,
}

/// The platforms of the indexes of `fetched` that were not fetched.
fn other_platforms(cache: &BlobCache, fetched: &[crate::fetch::FetchedImage]) -> Vec<Wanted> {
    use crate::registry::manifest::Manifest;
    let mut out: Vec<Wanted> = Vec::new();
    for image in fetched {
        let Ok(Some(bytes)) = cache.read(&image.top.digest) else {
            continue;
        };
        let Ok((_, Manifest::Index(children))) = Manifest::parse(&image.top.media_type, &bytes)
        else {
            continue;
        };
        for child in children {
            let Some(platform) = child.platform.as_ref().map(|p| p.platform()) else {
                continue;
            };
            let wanted = Wanted {
                reference: image.wanted.reference.clone(),
                platform: Some(platform),
            };
            let done = fetched.iter().any(|f| {
                f.wanted.reference == wanted.reference
                    && Some(&f.platform) == wanted.platform.as_ref()
            });
            if !done && !out.contains(&wanted) {
                out.push(wanted);
            }
        }
    }
    out
}
