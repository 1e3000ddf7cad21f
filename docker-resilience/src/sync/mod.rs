//! Sync: a plan's images copied into a registry (a fleet's mirror, an air-gapped
//! site's registry) with their digests unchanged, so that every daemon behind it pulls
//! them as usual.
//!
//! Images come in through the daemon-free fetcher and blob cache
//! ([`Fetcher::fetch_all`]) and go out with a `HEAD` per blob (nothing already there is
//! sent again), cross-repository mounts for blobs pushed earlier in the run, and the
//! manifests' exact bytes. Docker Hub images land under their Hub names
//! (`library/nginx:stable`, what a daemon's `registry-mirrors` asks for); others under
//! their registry's host (`REGISTRY/ghcr.io/org/app:tag`, Harbor's proxy-project
//! convention, what `--mirror ghcr.io=REGISTRY/ghcr.io` asks for).
//!
//! An index is pushed as it is; a registry that wants every platform of an index
//! present (the CNCF distribution registry) gets the platforms not asked for too,
//! fetched then. [`CachedPush`] pushes images whose blobs are all in a cache (a
//! bundle's), for `import --to`.
//!
//! May import: `vocab`, `support`, `resilience`, `registry`, `cache`, `fetch`,
//! `prefetch`.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cache::BlobCache;
use crate::fetch::EndpointStats;
use crate::fetch::{FetchRun, Fetcher};
use crate::prefetch::PrefetchOptions;
use crate::registry::client::{Endpoint, Failure, RegistryClient, RequestError};
use crate::registry::credentials::Credentials;
use crate::registry::manifest::{Descriptor, Manifest};
use crate::registry::push::BlobPush;
use crate::registry::transport::{RequestKind, Step, Transport};
use crate::resilience::classify::ErrorClass;
use crate::support::{lock, millis};
use crate::vocab::{ImageReference, Platform, Wanted, DOCKER_HUB};

/// How a sync runs.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The registry to fill, `host[:port]`.
    pub target: String,
    /// Plain HTTP to a registry not on loopback (`--insecure`, or the daemon lists it
    /// among its insecure registries).
    pub insecure: bool,
    /// How images are fetched (sources, retries, cache, jobs, deadline).
    pub fetch: PrefetchOptions,
}

/// What became of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncStatus {
    /// Pushed in this run.
    Copied,
    /// The registry had it already (same digest under the same name).
    Present,
    /// Not copied.
    Failed,
}

/// One image of a sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncItem {
    /// The image.
    pub reference: ImageReference,
    /// Its name in the target registry.
    pub target: String,
    /// What became of it.
    pub status: SyncStatus,
    /// The platforms copied (for an index, every platform the registry now holds).
    pub platforms: Vec<Platform>,
    /// The digest under its tag (unchanged from the source's).
    pub digest: Option<String>,
    /// Bytes uploaded to the target for it.
    pub bytes: u64,
    /// Blobs uploaded, mounted from another repository, already there.
    pub blobs: BlobCounts,
    /// Why it failed.
    pub error: Option<String>,
    /// The class of its error.
    pub error_class: Option<ErrorClass>,
}

/// Blobs of an image by how they reached the target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BlobCounts {
    /// Sent.
    pub uploaded: u32,
    /// Mounted from another repository of the registry.
    pub mounted: u32,
    /// There already.
    pub present: u32,
}

/// Totals of a sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncSummary {
    /// Images asked for.
    pub total: usize,
    /// Copied in this run.
    pub copied: usize,
    /// There already.
    pub present: usize,
    /// Not copied.
    pub failed: usize,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Wall time.
    pub elapsed_ms: u64,
}

/// The outcome of a sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// The registry filled.
    pub target: String,
    /// Whether it was reached over plain HTTP.
    pub plain_http: bool,
    /// One item per image.
    pub images: Vec<SyncItem>,
    /// Totals.
    pub summary: SyncSummary,
    /// What each source endpoint did on the way in.
    pub endpoints: Vec<EndpointStats>,
}

impl SyncReport {
    /// Whether every image is in the registry.
    pub fn is_success(&self) -> bool {
        self.summary.failed == 0
    }

    /// A report of items pushed without a fetch (`import --to`).
    pub fn of_items(
        target: &str,
        plain_http: bool,
        images: Vec<SyncItem>,
        started: Instant,
    ) -> Self {
        SyncReport {
            target: target.to_owned(),
            plain_http,
            images,
            ..SyncReport::default()
        }
        .finish(started)
    }

    fn finish(mut self, started: Instant) -> Self {
        let count = |s| self.images.iter().filter(|i| i.status == s).count();
        self.summary = SyncSummary {
            total: self.images.len(),
            copied: count(SyncStatus::Copied),
            present: count(SyncStatus::Present),
            failed: count(SyncStatus::Failed),
            bytes: self.images.iter().map(|i| i.bytes).sum(),
            elapsed_ms: millis(started.elapsed()),
        };
        self
    }
}

/// Where `image` lives in a fleet registry: Docker Hub images under their Hub names,
/// others under their registry's host, lower-cased, a port joined with `_`
/// (`registry.local:5000/team/base` → `registry.local_5000/team/base`): a repository
/// path takes no `:`, and no host name holds a `_`.
pub fn target_repository(image: &ImageReference) -> String {
    if image.registry() == DOCKER_HUB {
        image.repository().to_owned()
    } else {
        let host = image.registry().to_ascii_lowercase().replace(':', "_");
        format!("{host}/{}", image.repository())
    }
}

/// Copies `wanted` (each reference with the platforms asked) into the target registry.
pub async fn sync(wanted: &[Wanted], options: SyncOptions) -> SyncReport {
    let started = Instant::now();
    let endpoint = Endpoint::target(&options.target, options.insecure);
    let mut report = SyncReport {
        target: options.target.clone(),
        plain_http: endpoint.is_plain_http(),
        ..SyncReport::default()
    };
    let cache_dir = options
        .fetch
        .cache_dir
        .clone()
        .unwrap_or_else(BlobCache::default_dir);
    let cache = match BlobCache::open(&cache_dir) {
        Ok(c) => c,
        Err(e) => {
            report.images = references(wanted)
                .into_iter()
                .map(|r| {
                    failed_item(
                        &r,
                        format!("the blob cache cannot be used: {e}"),
                        ErrorClass::Permanent,
                    )
                })
                .collect();
            return report.finish(started);
        }
    };
    // Fetching and pushing share one transport's sources' health and statistics.
    let fetcher = options
        .fetch
        .fetcher(Arc::new(options.fetch.transport()), cache.clone());
    let sources = |image: &ImageReference| options.fetch.sources(image);
    let jobs = options.fetch.registry_jobs.max(1);
    let run = FetchRun {
        jobs,
        deadline: options.fetch.deadline,
        probe_timeout: options.fetch.probe_timeout,
        cancel: tokio_util::sync::CancellationToken::new(),
        sources: &sources,
        events: &|_| {},
    };
    let fetched = fetcher.fetch_all(wanted, &run).await;
    let client = RegistryClient::new(
        if options.fetch.credentials {
            Credentials::from_docker_config()
        } else {
            Credentials::none()
        },
        Duration::from_secs(60),
    );
    let pusher = Pusher {
        transport: Arc::new(fetcher.transport().sharing(client, &options.fetch.retry)),
        endpoint,
        cache,
        pushed: Mutex::new(HashMap::new()),
        blob_locks: Mutex::new(HashMap::new()),
    };
    let references = references(wanted);
    let items = futures_util::StreamExt::collect::<Vec<_>>(futures_util::StreamExt::buffered(
        futures_util::stream::iter(references.iter().map(|reference| {
            let failure = fetched
                .images
                .iter()
                .filter(|i| &i.wanted.reference == reference)
                .find_map(|i| i.outcome.as_ref().err());
            let images: Vec<&crate::fetch::FetchedImage> = fetched
                .fetched()
                .filter(|f| &f.wanted.reference == reference)
                .collect();
            let (pusher, fetcher, run) = (&pusher, &fetcher, &run);
            async move {
                if let Some(e) = failure {
                    return failed_item(
                        reference,
                        format!("failed to fetch `{reference}`: {e}"),
                        e.class(),
                    );
                }
                pusher.copy(reference, &images, fetcher, run).await
            }
        })),
        jobs,
    ))
    .await;
    report.images = items;
    report.endpoints = fetcher.transport().stats().snapshot();
    report.finish(started)
}

/// Pushes images whose every blob is in a cache (a bundle's) into one registry,
/// mounting each blob into the next repository that needs it.
#[derive(Debug)]
pub struct CachedPush {
    pusher: Pusher,
}

impl CachedPush {
    /// Pushes from `cache` to the registry at `endpoint`, every request through
    /// `transport`.
    pub fn new(transport: Arc<Transport>, endpoint: &Endpoint, cache: &BlobCache) -> Self {
        CachedPush {
            pusher: Pusher {
                transport,
                endpoint: endpoint.clone(),
                cache: cache.clone(),
                pushed: Mutex::new(HashMap::new()),
                blob_locks: Mutex::new(HashMap::new()),
            },
        }
    }

    /// Pushes the image `top` as `name`. When the registry wants an index's every
    /// platform and the cache lacks some, the tag gets what the cache holds: the
    /// platform's own manifest (one platform), and the log says so.
    pub async fn push(&self, name: &ImageReference, top: &Descriptor) -> SyncItem {
        self.pusher.push_from_cache(name, top).await
    }
}

fn references(wanted: &[Wanted]) -> Vec<ImageReference> {
    let mut seen = BTreeSet::new();
    wanted
        .iter()
        .filter(|w| seen.insert(w.reference.to_string()))
        .map(|w| w.reference.clone())
        .collect()
}

fn failed_item(reference: &ImageReference, error: String, class: ErrorClass) -> SyncItem {
    SyncItem {
        reference: reference.clone(),
        target: target_repository(reference),
        status: SyncStatus::Failed,
        platforms: Vec::new(),
        digest: None,
        bytes: 0,
        blobs: BlobCounts::default(),
        error: Some(error),
        error_class: Some(class),
    }
}

/// Pushes from the cache to one registry, remembering where each blob went (to mount
/// it into the next repository that needs it).
#[derive(Debug)]
struct Pusher {
    /// Every push request goes through it (retries, health, breaker, statistics).
    transport: Arc<Transport>,
    endpoint: Endpoint,
    cache: BlobCache,
    /// Blob digest → a repository of the target that holds it.
    pushed: Mutex<HashMap<String, String>>,
    /// One push of a blob at a time: the next image mounts what the first sent.
    blob_locks: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

/// An image's push so far.
#[derive(Default)]
struct Progress {
    bytes: u64,
    blobs: BlobCounts,
    platforms: Vec<Platform>,
}

impl Pusher {
    /// Copies the fetched platforms of `reference`, completing its index if the
    /// registry wants that.
    async fn copy(
        &self,
        reference: &ImageReference,
        images: &[&crate::fetch::FetchedImage],
        fetcher: &Fetcher,
        run: &FetchRun<'_>,
    ) -> SyncItem {
        let repository = target_repository(reference);
        let Some(first) = images.first() else {
            return failed_item(
                reference,
                "nothing was fetched".into(),
                ErrorClass::Permanent,
            );
        };
        let top = first.top.clone();
        let tag = reference.tag().unwrap_or(&top.digest).to_owned();
        let item = |status, progress: Progress, error: Option<RequestError>| SyncItem {
            reference: reference.clone(),
            target: format!("{}/{repository}:{tag}", self.endpoint.host)
                .replace(":sha256:", "@sha256:"),
            status,
            platforms: progress.platforms,
            digest: Some(top.digest.clone()),
            bytes: progress.bytes,
            blobs: progress.blobs,
            error_class: error.as_ref().map(RequestError::class),
            error: error.map(|e| match e.hint() {
                Some(hint) => format!("{e} (hint: {hint})"),
                None => e.to_string(),
            }),
        };
        match self
            .retrying(|| {
                self.transport
                    .client()
                    .manifest_digest(&self.endpoint, &repository, &tag)
            })
            .await
        {
            Ok(Some(digest)) if digest == top.digest => {
                let progress = Progress {
                    platforms: images.iter().map(|i| i.platform.clone()).collect(),
                    ..Progress::default()
                };
                tracing::info!(
                    "{reference}: already in {} as {repository}:{tag}",
                    self.endpoint.host
                );
                return item(SyncStatus::Present, progress, None);
            }
            Ok(_) => {}
            Err(e) => return item(SyncStatus::Failed, Progress::default(), Some(e)),
        }
        let mut progress = Progress::default();
        for image in images {
            let manifest = (image.manifest.digest != top.digest).then_some(&image.manifest);
            if let Err(e) = self
                .push_image(
                    &repository,
                    &image.config,
                    &image.layers,
                    manifest,
                    &mut progress,
                )
                .await
            {
                return item(SyncStatus::Failed, progress, Some(e));
            }
            progress.platforms.push(image.platform.clone());
        }
        match self.push_top(&repository, &tag, &top).await {
            Ok(()) => {}
            Err(e) if wants_children(&e) => {
                // The registry wants every platform of the index: fetch and push the
                // ones not asked for, then the index again.
                let missing = match self.missing_children(&repository, &top).await {
                    Ok(m) => m,
                    Err(e) => return item(SyncStatus::Failed, progress, Some(e)),
                };
                let wanted: Vec<Wanted> = missing
                    .iter()
                    .filter_map(|d| d.platform.as_ref())
                    .map(|p| Wanted {
                        reference: reference.clone(),
                        platform: Some(p.platform()),
                    })
                    .collect();
                tracing::info!(
                    "{reference}: {} wants every platform of the index: copying {} more",
                    self.endpoint.host,
                    wanted
                        .iter()
                        .filter_map(|w| w.platform.as_ref().map(ToString::to_string))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let more = fetcher.fetch_all(&wanted, run).await;
                if let Some(error) = more.errors().into_iter().next() {
                    return item(
                        SyncStatus::Failed,
                        progress,
                        Some(unusable(&self.endpoint, &repository, error)),
                    );
                }
                for image in more.fetched() {
                    if let Err(e) = self
                        .push_image(
                            &repository,
                            &image.config,
                            &image.layers,
                            Some(&image.manifest),
                            &mut progress,
                        )
                        .await
                    {
                        return item(SyncStatus::Failed, progress, Some(e));
                    }
                    progress.platforms.push(image.platform.clone());
                }
                if let Err(e) = self.push_top(&repository, &tag, &top).await {
                    return item(SyncStatus::Failed, progress, Some(e));
                }
            }
            Err(e) => return item(SyncStatus::Failed, progress, Some(e)),
        }
        progress.platforms.sort();
        progress.platforms.dedup();
        tracing::info!(
            "copied {reference} to {}/{repository}:{tag} ({} blob(s) sent, {} mounted, {} there)",
            self.endpoint.host,
            progress.blobs.uploaded,
            progress.blobs.mounted,
            progress.blobs.present
        );
        item(SyncStatus::Copied, progress, None)
    }

    /// Pushes a cached image (every blob in the cache) as `name`.
    async fn push_from_cache(&self, name: &ImageReference, top: &Descriptor) -> SyncItem {
        let repository = target_repository(name);
        let tag = name.tag().unwrap_or(&top.digest).to_owned();
        let target = format!("{}/{repository}:{tag}", self.endpoint.host);
        let mut progress = Progress::default();
        let mut note = None;
        let result: Result<Option<String>, RequestError> = async {
            if self.transport.client().manifest_digest(&self.endpoint, &repository, &tag).await? == Some(top.digest.clone()) {
                return Ok(None);
            }
            let (children, image) = self.parse_cached(&repository, top)?;
            let mut present_children = Vec::new();
            match image {
                Some((config, layers)) => {
                    self.push_image(&repository, &config, &layers, None, &mut progress).await?;
                }
                None => {
                    for child in &children {
                        if !self.cache.contains(&child.digest) {
                            continue;
                        }
                        let (_, Some((config, layers))) = self.parse_cached(&repository, child)? else {
                            continue;
                        };
                        if !layers.iter().chain([&config]).all(|b| self.cache.contains(&b.digest)) {
                            continue;
                        }
                        self.push_image(&repository, &config, &layers, Some(child), &mut progress).await?;
                        progress.platforms.extend(child.platform.as_ref().map(|p| p.platform()));
                        present_children.push(child.clone());
                    }
                }
            }
            match self.push_top(&repository, &tag, top).await {
                Ok(()) => Ok(Some(top.digest.clone())),
                Err(e) if wants_children(&e) && present_children.len() == 1 => {
                    // The bundle holds one platform of the index and the registry
                    // wants them all: the tag gets that platform's manifest.
                    let only = &present_children[0];
                    self.push_top(&repository, &tag, only).await?;
                    note = Some(format!(
                        "the tag names the {} manifest {}: the bundle holds no other platform of index {} and this registry wants them all",
                        only.platform.as_ref().map(|p| p.platform().to_string()).unwrap_or_default(),
                        only.digest,
                        top.digest
                    ));
                    Ok(Some(only.digest.clone()))
                }
                Err(e) => Err(e),
            }
        }
        .await;
        let (status, digest, error) = match result {
            Ok(None) => (SyncStatus::Present, Some(top.digest.clone()), None),
            Ok(Some(d)) => (SyncStatus::Copied, Some(d), None),
            Err(e) => (SyncStatus::Failed, None, Some(e)),
        };
        if let Some(note) = &note {
            tracing::warn!("{name}: {note}");
        }
        SyncItem {
            reference: name.clone(),
            target,
            status,
            platforms: progress.platforms,
            digest,
            bytes: progress.bytes,
            blobs: progress.blobs,
            error_class: error.as_ref().map(RequestError::class),
            error: error.map(|e| e.to_string()),
        }
    }

    /// A manifest's bytes from the cache.
    fn cached_manifest(
        &self,
        repository: &str,
        manifest: &Descriptor,
    ) -> Result<Vec<u8>, RequestError> {
        self.cache
            .read(&manifest.digest)
            .ok()
            .flatten()
            .ok_or_else(|| {
                unusable(
                    &self.endpoint,
                    repository,
                    format!("manifest {} is not in the cache", manifest.digest),
                )
            })
    }

    /// A cached manifest: an index's children, or an image's config and layers.
    #[allow(clippy::type_complexity)]
    fn parse_cached(
        &self,
        repository: &str,
        descriptor: &Descriptor,
    ) -> Result<(Vec<Descriptor>, Option<(Descriptor, Vec<Descriptor>)>), RequestError> {
        let bytes = self.cached_manifest(repository, descriptor)?;
        match Manifest::parse(&descriptor.media_type, &bytes)
            .map_err(|why| unusable(&self.endpoint, repository, why))?
        {
            (_, Manifest::Index(children)) => Ok((children, None)),
            (_, Manifest::Image { config, layers }) => Ok((Vec::new(), Some((config, layers)))),
        }
    }

    /// The children of index `top` the registry does not hold.
    async fn missing_children(
        &self,
        repository: &str,
        top: &Descriptor,
    ) -> Result<Vec<Descriptor>, RequestError> {
        let (children, _) = self.parse_cached(repository, top)?;
        let mut missing = Vec::new();
        for child in children {
            if self
                .retrying(|| {
                    self.transport.client().manifest_digest(
                        &self.endpoint,
                        repository,
                        &child.digest,
                    )
                })
                .await?
                .is_none()
            {
                missing.push(child);
            }
        }
        Ok(missing)
    }

    /// Config and layers, then (for an index's child) its manifest by digest.
    async fn push_image(
        &self,
        repository: &str,
        config: &Descriptor,
        layers: &[Descriptor],
        manifest: Option<&Descriptor>,
        progress: &mut Progress,
    ) -> Result<(), RequestError> {
        for blob in std::iter::once(config).chain(layers) {
            let gate = lock(&self.blob_locks)
                .entry(blob.digest.clone())
                .or_default()
                .clone();
            let _held = gate.lock().await;
            let path = self
                .cache
                .path(&blob.digest)
                .map_err(|e| unusable(&self.endpoint, repository, e.to_string()))?;
            let from = lock(&self.pushed)
                .get(&blob.digest)
                .filter(|r| r.as_str() != repository)
                .cloned();
            let size = std::fs::metadata(&path)
                .map(|m| m.len())
                .unwrap_or(blob.size);
            let outcome = self
                .retrying(|| {
                    self.transport.client().push_blob(
                        &self.endpoint,
                        repository,
                        &blob.digest,
                        &path,
                        size,
                        from.as_deref(),
                    )
                })
                .await?;
            match outcome {
                BlobPush::Present => progress.blobs.present += 1,
                BlobPush::Mounted => progress.blobs.mounted += 1,
                BlobPush::Uploaded(n) => {
                    progress.blobs.uploaded += 1;
                    progress.bytes += n;
                }
            }
            lock(&self.pushed).insert(blob.digest.clone(), repository.to_owned());
        }
        if let Some(manifest) = manifest {
            self.put_cached(repository, &manifest.digest, manifest)
                .await?;
        }
        Ok(())
    }

    async fn push_top(
        &self,
        repository: &str,
        tag: &str,
        top: &Descriptor,
    ) -> Result<(), RequestError> {
        self.put_cached(repository, tag, top).await
    }

    async fn put_cached(
        &self,
        repository: &str,
        reference: &str,
        manifest: &Descriptor,
    ) -> Result<(), RequestError> {
        let bytes = self.cached_manifest(repository, manifest)?;
        let media_type = Manifest::parse(&manifest.media_type, &bytes)
            .map(|(t, _)| t)
            .unwrap_or_else(|_| manifest.media_type.clone());
        self.retrying(|| {
            self.transport.client().put_manifest(
                &self.endpoint,
                repository,
                reference,
                &media_type,
                &bytes,
            )
        })
        .await
    }

    /// Sends a push request to the target through the transport (each failed request
    /// retried on its own, paced by the target's health).
    async fn retrying<T, F, Fut>(&self, step: F) -> Result<T, RequestError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, RequestError>>,
    {
        self.transport
            .request(
                std::slice::from_ref(&self.endpoint),
                RequestKind::Other,
                None,
                &|r| {
                    if let Some(after) = r.after {
                        tracing::warn!("{}; retrying in {:.1}s", r.error, after.as_secs_f64());
                    }
                },
                |_| {
                    let sent = step();
                    async move { sent.await.map(Step::Done) }
                },
            )
            .await
            .map(|served| served.value)
    }
}

/// Whether a manifest push was refused because the registry lacks what it references.
fn wants_children(e: &RequestError) -> bool {
    matches!(
        &e.failure,
        Failure::Status { code: 400, error: Some(code), .. } if code == "MANIFEST_BLOB_UNKNOWN"
    )
}

fn unusable(endpoint: &Endpoint, repository: &str, why: String) -> RequestError {
    RequestError::new(
        endpoint.label.clone(),
        format!("push of {repository}"),
        Failure::Unusable(why),
    )
}

/// Where a bundle's blobs are unpacked to be pushed (beside nothing else).
pub fn scratch_cache() -> std::io::Result<(tempfile::TempDir, BlobCache)> {
    let dir = tempfile::tempdir()?;
    let cache = BlobCache::open(PathBuf::from(dir.path()))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok((dir, cache))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_images_keep_their_names_others_go_under_their_registry() {
        let r = |s: &str| s.parse::<ImageReference>().expect("reference");
        assert_eq!(target_repository(&r("nginx:stable")), "library/nginx");
        assert_eq!(target_repository(&r("bitnami/redis:7")), "bitnami/redis");
        assert_eq!(
            target_repository(&r("ghcr.io/org/app:1.2")),
            "ghcr.io/org/app"
        );
        assert_eq!(
            target_repository(&r("127.0.0.1:5000/team/base:1")),
            "127.0.0.1_5000/team/base"
        );
    }

    #[test]
    fn only_a_missing_reference_asks_for_the_children() {
        let e = |code: u16, error: &str| {
            RequestError::new(
                "registry 127.0.0.1:5000",
                "manifest push library/alpine:3.18",
                Failure::Status {
                    code,
                    error: Some(error.into()),
                    message: None,
                    retry_after: None,
                },
            )
        };
        assert!(wants_children(&e(400, "MANIFEST_BLOB_UNKNOWN")));
        assert!(!wants_children(&e(400, "MANIFEST_INVALID")));
        assert!(!wants_children(&e(500, "MANIFEST_BLOB_UNKNOWN")));
    }
}
