//! Fetch: images from registries into the blob cache, over the distribution API, the
//! way a registry client does it: resolve the reference (an index to the platform's
//! manifest), download config and layers, resume a blob cut mid-way with `Range` from
//! where it stopped, fetch a big blob as several ranged parts at once ([`Multipart`]),
//! verify every blob by digest, and count what each endpoint did.
//! Every request goes through the run's [`Transport`]. It knows no daemon: getting
//! fetched images into one is the deliver stage's.
//!
//! May import: `vocab`, `support`, `resilience`, `registry`, `cache`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, TryStreamExt};

use crate::cache::{BlobCache, CacheError, CachedRef};
use crate::registry::client::{blob_target, Endpoint, Failure, RequestError};
use crate::registry::manifest::{Descriptor, Manifest};
pub use crate::registry::transport::{EndpointStats, FaultCounts, Stats};
use crate::registry::transport::{RequestKind, RetrySink, Slot, Step, Transport, TryFailure};
use crate::resilience::classify::ErrorClass;
use crate::resilience::mirror::MirrorSet;
use crate::support::lock;
use crate::vocab::{ImageReference, Platform, Wanted, DOCKER_HUB};

mod parts;
mod run;
pub use crate::resilience::multipart::Multipart;
pub use run::{FetchEvent, FetchReport, FetchResult, FetchRun};

/// Blobs of one image downloaded at once (dockerd's `max-concurrent-downloads` is 3;
/// on a link with 100 ms per request the chain of an image's layers is its pull time,
/// and the source's connection budget bounds the run as a whole).
const LAYER_JOBS: usize = 8;

/// How often a fetch waiting for another process's download of a blob looks again.
const LOCK_POLL: Duration = Duration::from_millis(50);

/// The endpoints an image can come from, in the order a pull tries them: the daemon's
/// registry mirrors (for Docker Hub images, as dockerd uses them), drbuild's mirrors
/// for the image's registry, then the registry itself.
pub fn sources(
    image: &ImageReference,
    daemon_mirrors: &[String],
    mirrors: &MirrorSet,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    if image.registry() == DOCKER_HUB {
        out.extend(daemon_mirrors.iter().map(|m| Endpoint::daemon_mirror(m)));
    }
    out.extend(mirrors.for_image(image).iter().map(Endpoint::mirror));
    out.push(Endpoint::registry(image.registry()));
    let mut seen = std::collections::HashSet::new();
    out.retain(|e| seen.insert((e.base.clone(), e.prefix.clone())));
    out
}

/// Why a fetch failed: a source's answer, or the local cache (no source is to blame).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// What the sources answered (every source's last answer, the first source's first).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The blob cache could not be written or read (no space, permissions, a vanished
    /// file): a local fault, whatever the sources do.
    #[error(transparent)]
    Cache(#[from] Arc<CacheError>),
    /// None of the image's sources answers at all (`GET /v2/` as the run started).
    #[error("none of the sources of `{image}` answers ({})", sources.join(", "))]
    Unanswered {
        /// The image.
        image: ImageReference,
        /// Its sources, as messages name them.
        sources: Vec<String>,
    },
    /// The run's deadline passed before the image was fetched.
    #[error(
        "the run's deadline ({}) passed before `{image}` was fetched",
        humantime::format_duration(*limit)
    )]
    Deadline {
        /// The image.
        image: ImageReference,
        /// The deadline.
        limit: Duration,
    },
}

impl From<CacheError> for FetchError {
    fn from(e: CacheError) -> Self {
        FetchError::Cache(Arc::new(e))
    }
}

impl TryFailure for FetchError {
    fn request(&self) -> Option<&RequestError> {
        match self {
            FetchError::Request(e) => Some(e),
            _ => None,
        }
    }
}

impl FetchError {
    /// Retry, retry later, or give up (a cache fault is not retried: the disk will not
    /// free itself).
    pub fn class(&self) -> ErrorClass {
        match self {
            FetchError::Request(e) => e.class(),
            FetchError::Cache(_) => ErrorClass::Permanent,
            FetchError::Unanswered { .. } | FetchError::Deadline { .. } => ErrorClass::Transient,
        }
    }

    /// What to do about it, when we know.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            FetchError::Request(e) => e.hint(),
            _ => None,
        }
    }

    /// The wait the endpoint asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        self.request().and_then(RequestError::retry_after)
    }
}

/// An image in the cache, ready to load or push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedImage {
    /// What was wanted.
    pub wanted: Wanted,
    /// The tagged manifest (an index, or the image manifest itself).
    pub top: Descriptor,
    /// The platform's image manifest.
    pub manifest: Descriptor,
    /// The platform it is for.
    pub platform: Platform,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
    /// The endpoint (`host[:port]`) that served its tagged manifest.
    pub source: String,
    /// Bytes downloaded for it in this run (0 when all came from the cache).
    pub bytes: u64,
    /// Blob downloads resumed.
    pub resumes: u64,
}

impl FetchedImage {
    /// Every blob the image is made of (manifests, config, layers), each once.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        let mut out = vec![&self.top];
        if self.manifest.digest != self.top.digest {
            out.push(&self.manifest);
        }
        out.push(&self.config);
        out.extend(&self.layers);
        out
    }
}

/// What a fetch tells as it goes (bytes received, failed tries) and the place among
/// the run's jobs its requests take.
#[derive(Clone, Copy)]
pub struct Watch<'a> {
    /// Bytes received (for progress bars).
    pub progress: &'a (dyn Fn(u64) + Send + Sync),
    /// A failed try of a request (for the image's log and attempt count).
    pub retried: RetrySink<'a>,
    /// A request served, with the tries it took at the source that served it.
    pub served: &'a (dyn Fn(u32) + Send + Sync),
    /// The image's place among the run's jobs, held while a request is on the wire.
    pub slot: Option<&'a Slot>,
}

impl std::fmt::Debug for Watch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

impl Watch<'_> {
    /// A watch that hears nothing.
    pub fn none() -> Watch<'static> {
        Watch {
            progress: &|_| {},
            retried: &|_| {},
            served: &|_| {},
            slot: None,
        }
    }
}

/// Downloads images into the cache, every request through the run's [`Transport`].
#[derive(Debug)]
pub struct Fetcher {
    transport: Arc<Transport>,
    cache: BlobCache,
    stall_timeout: Duration,
    multipart: Multipart,
    blob_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Cached blobs hashed (and found whole) by this process.
    verified: Mutex<HashSet<String>>,
}

impl Fetcher {
    /// A fetcher into `cache`, its requests through `transport`.
    pub fn new(transport: Arc<Transport>, cache: BlobCache, stall_timeout: Duration) -> Self {
        Fetcher {
            transport,
            cache,
            stall_timeout,
            multipart: Multipart::default(),
            blob_locks: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// The same fetcher, fetching big blobs as `multipart` says.
    pub fn with_multipart(mut self, multipart: Multipart) -> Self {
        self.multipart = multipart;
        self
    }

    /// The cache blobs go into.
    pub fn cache(&self) -> &BlobCache {
        &self.cache
    }

    /// The transport requests go through.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Fetches `wanted` from `sources` (in order, see [`Transport`]) into the cache:
    /// [`Fetcher::resolve`], then [`Fetcher::download`].
    pub async fn fetch(
        &self,
        wanted: &Wanted,
        sources: &[Endpoint],
        watch: Watch<'_>,
    ) -> Result<FetchedImage, FetchError> {
        let mut image = self.resolve(wanted, sources, watch).await?;
        self.download(&mut image, sources, watch, &|_| {}).await?;
        Ok(image)
    }

    /// Resolves `wanted`: its tagged manifest and, for an index, the platform's
    /// manifest (both then in the cache). Config and layers are known, not yet fetched.
    pub async fn resolve(
        &self,
        wanted: &Wanted,
        sources: &[Endpoint],
        watch: Watch<'_>,
    ) -> Result<FetchedImage, FetchError> {
        let image = &wanted.reference;
        let platform = wanted.platform.clone().unwrap_or_else(Platform::host);
        let top = self
            .manifest(sources, image, image.tag_or_digest(), watch)
            .await?;
        let served_by = &sources[top.source];
        let (top_type, parsed) = parse(served_by, image, &top)?;
        let top_descriptor = Descriptor {
            media_type: top_type.clone(),
            digest: top.digest.clone(),
            size: top.bytes.len() as u64,
            platform: None,
        };
        let (manifest_descriptor, manifest_fetched) = match parsed {
            Manifest::Index(entries) => {
                let entry = Manifest::select(&entries, &platform).ok_or_else(|| {
                    let offered: Vec<String> = entries
                        .iter()
                        .filter_map(|e| e.platform.as_ref().map(|p| p.platform().to_string()))
                        .collect();
                    RequestError::new(
                        served_by.label.clone(),
                        format!("manifest {}:{}", image.repository(), image.tag_or_digest()),
                        Failure::Unusable(format!(
                            "no manifest for {platform} in the index (it has {})",
                            offered.join(", ")
                        )),
                    )
                })?;
                let mut fetched = self.manifest(sources, image, &entry.digest, watch).await?;
                if fetched.media_type.is_empty() {
                    fetched.media_type = entry.media_type.clone();
                }
                (entry.clone(), fetched)
            }
            Manifest::Image { .. } => (top_descriptor.clone(), top.clone()),
        };
        let (_, Manifest::Image { config, layers }) = parse(served_by, image, &manifest_fetched)?
        else {
            return Err(RequestError::new(
                served_by.label.clone(),
                format!("manifest {}", manifest_descriptor.digest),
                Failure::Unusable("an index inside an index".into()),
            )
            .into());
        };
        Ok(FetchedImage {
            wanted: wanted.clone(),
            top: top_descriptor,
            manifest: Descriptor {
                platform: None,
                ..manifest_descriptor
            },
            platform,
            config,
            layers,
            source: served_by.host.clone(),
            bytes: 0,
            resumes: 0,
        })
    }

    /// Downloads a resolved image's config and layers (a few at a time) into the
    /// cache; calls `ready` with each blob's digest once it is there and verified (at
    /// once for blobs the cache had), so that a loader can stream them as they come.
    /// A failed request is retried on its own (see [`Transport`]): the image's other
    /// blobs go on meanwhile.
    pub async fn download(
        &self,
        image: &mut FetchedImage,
        sources: &[Endpoint],
        watch: Watch<'_>,
        ready: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), FetchError> {
        let reference = image.wanted.reference.clone();
        // The config and the layers at once: a round trip less per image on a slow
        // link; the config's platform is checked once it is there.
        let config = async {
            let got = self.blob(sources, &reference, &image.config, watch).await?;
            ready(&image.config.digest);
            Ok::<_, FetchError>(got)
        };
        let layers = stream::iter(image.layers.iter().map(Ok))
            .map_ok(|layer| async {
                let got = self.blob(sources, &reference, layer, watch).await?;
                ready(&layer.digest);
                Ok::<_, FetchError>(got)
            })
            .try_buffer_unordered(LAYER_JOBS)
            .try_fold((0u64, 0u64), |(b, r), (nb, nr)| async move {
                Ok((b + nb, r + nr))
            });
        let ((bytes, resumes), (layer_bytes, layer_resumes)) =
            futures_util::future::try_join(config, layers).await?;
        let config = self.cache.read(&image.config.digest)?.unwrap_or_default();
        let actual = config_platform(&config);
        if image.wanted.platform.is_some() && actual.as_ref().is_some_and(|a| *a != image.platform)
        {
            let served_by = sources
                .iter()
                .find(|e| e.host == image.source)
                .unwrap_or(&sources[0]);
            return Err(RequestError::new(
                served_by.label.clone(),
                format!(
                    "manifest {}:{}",
                    reference.repository(),
                    reference.tag_or_digest()
                ),
                Failure::Unusable(format!(
                    "the image is for {}, not {}",
                    actual.map(|a| a.to_string()).unwrap_or_default(),
                    image.platform
                )),
            )
            .into());
        }
        if let Some(actual) = actual {
            image.platform = actual;
        }
        image.bytes += bytes + layer_bytes;
        image.resumes += resumes + layer_resumes;
        self.cache.remember(&CachedRef {
            reference,
            digest: image.top.digest.clone(),
            media_type: image.top.media_type.clone(),
            platforms: vec![(
                image.platform.clone(),
                image.manifest.digest.clone(),
                image.manifest.media_type.clone(),
            )],
        })?;
        Ok(())
    }

    /// Hashes again every blob of `image` the cache holds and removes those that do
    /// not match their digest (after a daemon refused one as corrupt); returns the
    /// digests removed.
    pub fn evict_corrupt(&self, image: &FetchedImage) -> Vec<String> {
        let mut removed = Vec::new();
        for blob in image.blobs() {
            lock(&self.verified).remove(&blob.digest);
            if let Ok(Some(corrupt)) = self.cache.verify(&blob.digest) {
                tracing::warn!("{corrupt}: removed from the cache, fetching it again");
                removed.push(blob.digest.clone());
            }
        }
        removed
    }

    /// Whether the cache holds `digest` whole: a blob is hashed the first time this
    /// process uses it (bit rot, a crash of another writer), and one that does not
    /// match is removed, said, and fetched again.
    async fn cached(&self, digest: &str) -> Result<bool, FetchError> {
        if lock(&self.verified).contains(digest) {
            return Ok(true);
        }
        if !self.cache.contains(digest) {
            return Ok(false);
        }
        let cache = self.cache.clone();
        let key = digest.to_owned();
        let checked = tokio::task::spawn_blocking(move || cache.verify(&key))
            .await
            .unwrap_or_else(|e| Err(CacheError::other(self.cache.dir(), e.to_string())))?;
        match checked {
            None => {
                lock(&self.verified).insert(digest.to_owned());
                Ok(true)
            }
            Some(corrupt) => {
                tracing::warn!("{corrupt}: removed from the cache, fetching it again");
                Ok(false)
            }
        }
    }

    /// A manifest: from the cache when asked by digest and there (verified), else from
    /// the sources (and then cached).
    async fn manifest(
        &self,
        sources: &[Endpoint],
        image: &ImageReference,
        reference: &str,
        watch: Watch<'_>,
    ) -> Result<ManifestBytes, FetchError> {
        if reference.starts_with("sha256:") {
            if let Some(bytes) = self.cache.read(reference)? {
                return Ok(ManifestBytes {
                    bytes: bytes.into(),
                    digest: reference.to_owned(),
                    media_type: String::new(),
                    source: 0,
                });
            }
        }
        let client = self.transport.client();
        let served = self
            .transport
            .request(
                sources,
                RequestKind::Manifest,
                watch.slot,
                watch.retried,
                |endpoint| {
                    let endpoint = endpoint.clone();
                    async move {
                        let fetched = client.manifest(&endpoint, image, reference).await?;
                        self.transport
                            .stats()
                            .with(&endpoint, |s| s.bytes += fetched.bytes.len() as u64);
                        Ok::<_, FetchError>(Step::Done(fetched))
                    }
                },
            )
            .await?;
        (watch.served)(served.tries);
        let fetched = served.value;
        // Off the async threads: the write ends with an fsync, which a slow disk can
        // make take tens of milliseconds (every other request of the run would wait).
        let (cache, digest, bytes) = (
            self.cache.clone(),
            fetched.digest.clone(),
            fetched.bytes.clone(),
        );
        tokio::task::spawn_blocking(move || cache.put(&digest, &bytes))
            .await
            .map_err(|e| CacheError::other(self.cache.dir(), e.to_string()))??;
        Ok(ManifestBytes {
            bytes: fetched.bytes,
            digest: fetched.digest,
            media_type: fetched.media_type,
            source: served.source,
        })
    }

    /// A blob into the cache; returns the bytes received and how many times it resumed.
    /// One writer per blob across every process sharing the cache: a second fetch of
    /// the same blob (another image, another `drbuild`) waits for the first and then
    /// finds it there.
    async fn blob(
        &self,
        sources: &[Endpoint],
        image: &ImageReference,
        blob: &Descriptor,
        watch: Watch<'_>,
    ) -> Result<(u64, u64), FetchError> {
        let digest = &blob.digest;
        if self.cached(digest).await? {
            return Ok((0, 0));
        }
        let gate = lock(&self.blob_locks)
            .entry(digest.clone())
            .or_default()
            .clone();
        let _held = gate.lock().await;
        let _writer = loop {
            match self.cache.try_lock(digest)? {
                Some(held) => break held,
                None => tokio::time::sleep(LOCK_POLL).await,
            }
        };
        if self.cached(digest).await? {
            return Ok((0, 0));
        }
        self.cache.has_room_for(digest, blob.size)?;
        if self.multipart.applies(blob.size) {
            if let Some(parts) = self.blob_parts(sources, image, blob, watch).await? {
                lock(&self.verified).insert(digest.clone());
                return Ok((parts.received, parts.resumes));
            }
        }
        let received = AtomicU64::new(0);
        let resumes = AtomicU64::new(0);
        let served = self
            .transport
            .request(
                sources,
                RequestKind::Other,
                watch.slot,
                watch.retried,
                |endpoint| {
                    let endpoint = endpoint.clone();
                    let (received, resumes) = (&received, &resumes);
                    async move {
                        self.blob_try(&endpoint, image, blob, watch, received, resumes)
                            .await
                    }
                },
            )
            .await?;
        (watch.served)(served.tries);
        lock(&self.verified).insert(digest.clone());
        Ok((
            received.load(Ordering::Relaxed),
            resumes.load(Ordering::Relaxed),
        ))
    }

    /// One request for a blob, from where its partial file ends: `Done` once it is
    /// whole and verified, `Progress` when the body was cut after bringing bytes.
    async fn blob_try(
        &self,
        endpoint: &Endpoint,
        image: &ImageReference,
        blob: &Descriptor,
        watch: Watch<'_>,
        received_total: &AtomicU64,
        resumes: &AtomicU64,
    ) -> Result<Step<()>, FetchError> {
        let digest = &blob.digest;
        let stats = self.transport.stats();
        let fail = |failure| {
            RequestError::new(endpoint.label.clone(), blob_target(image, digest), failure)
        };
        let refused = |e: CacheError| match e {
            CacheError::Mismatch { .. } => FetchError::from(fail(Failure::Corrupt(format!(
                "{e}: refused, fetching it again"
            )))),
            other => FetchError::from(other),
        };
        let offset = self.cache.partial_len(digest);
        if offset >= blob.size && blob.size > 0 {
            // A complete partial file (a cut right at the end, or a crash before the
            // move): verify it.
            let writer = self.cache.writer(digest, true)?;
            return writer.commit().map(|_| Step::Done(())).map_err(refused);
        }
        let response = self
            .transport
            .client()
            .blob(endpoint, image, digest, offset)
            .await?;
        let resumed = response.resumed && offset > 0;
        if resumed {
            resumes.fetch_add(1, Ordering::Relaxed);
            stats.with(endpoint, |s| s.resumes += 1);
        }
        let mut writer = self.cache.writer(digest, resumed)?;
        let expected = blob.size.saturating_sub(writer.len());
        let mut body = response.response;
        let mut received = 0u64;
        let outcome = loop {
            match tokio::time::timeout(self.stall_timeout, body.chunk()).await {
                Err(_) => break Err(Failure::Stalled(self.stall_timeout)),
                Ok(Err(e)) => break Err(Failure::Transport(crate::support::error_chain(&e))),
                Ok(Ok(None)) => break Ok(()),
                Ok(Ok(Some(chunk))) => {
                    if writer.len() + chunk.len() as u64 > blob.size && blob.size > 0 {
                        break Err(Failure::Corrupt(format!(
                            "more bytes than the {} the manifest says",
                            blob.size
                        )));
                    }
                    if let Err(e) = writer.write(&chunk) {
                        drop(writer);
                        self.cache.discard_partial(digest);
                        return Err(FetchError::from(e.needing(digest, blob.size)));
                    }
                    received += chunk.len() as u64;
                    (watch.progress)(chunk.len() as u64);
                }
            }
        };
        received_total.fetch_add(received, Ordering::Relaxed);
        stats.with(endpoint, |s| s.bytes += received);
        let outcome = match outcome {
            Ok(()) if writer.len() < blob.size => Err(Failure::Cut { received, expected }),
            other => other,
        };
        match outcome {
            Ok(()) => writer.commit().map(|_| Step::Done(())).map_err(refused),
            Err(Failure::Corrupt(why)) => {
                drop(writer);
                self.cache.discard_partial(digest);
                Err(fail(Failure::Corrupt(why)).into())
            }
            Err(failure) => {
                writer.keep()?;
                if received == 0 {
                    return Err(fail(failure).into());
                }
                // It served bytes: the endpoint works; go on from where it stopped.
                stats.with(endpoint, |s| s.faults.transient += 1);
                tracing::debug!(
                    "{}; resuming at byte {}",
                    fail(failure),
                    self.cache.partial_len(digest)
                );
                Ok(Step::Progress)
            }
        }
    }
}

/// A manifest's bytes as fetched (or read from the cache).
#[derive(Debug, Clone)]
struct ManifestBytes {
    bytes: bytes::Bytes,
    digest: String,
    media_type: String,
    /// Which source served it.
    source: usize,
}

fn parse(
    endpoint: &Endpoint,
    image: &ImageReference,
    fetched: &ManifestBytes,
) -> Result<(String, Manifest), RequestError> {
    Manifest::parse(&fetched.media_type, &fetched.bytes).map_err(|why| {
        RequestError::new(
            endpoint.label.clone(),
            format!("manifest {}@{}", image.repository(), fetched.digest),
            Failure::Unusable(why),
        )
    })
}

/// The platform an image config says (`architecture`, `os`, `variant`).
fn config_platform(config: &[u8]) -> Option<Platform> {
    #[derive(serde::Deserialize)]
    struct Config {
        architecture: Option<String>,
        os: Option<String>,
        variant: Option<String>,
    }
    let c: Config = serde_json::from_slice(config).ok()?;
    Some(Platform::new(
        c.os.as_deref()?,
        c.architecture.as_deref()?,
        c.variant.as_deref(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_in_the_order_a_pull_tries_them() {
        let mut mirrors = MirrorSet::default();
        mirrors.add_spec("mirror.example.com").unwrap();
        mirrors.add_spec("ghcr.io=harbor.example.com/ghcr").unwrap();
        let daemon = vec!["http://127.0.0.1:15001/".to_owned()];
        let hub = ImageReference::parse("redis:7-alpine").unwrap();
        let labels: Vec<String> = sources(&hub, &daemon, &mirrors)
            .iter()
            .map(|e| e.label.clone())
            .collect();
        assert_eq!(
            labels,
            [
                "mirror 127.0.0.1:15001",
                "mirror mirror.example.com",
                "registry docker.io"
            ]
        );
        let ghcr = ImageReference::parse("ghcr.io/o/app:1").unwrap();
        let labels: Vec<String> = sources(&ghcr, &daemon, &mirrors)
            .iter()
            .map(|e| e.label.clone())
            .collect();
        assert_eq!(
            labels,
            ["mirror harbor.example.com", "registry ghcr.io"],
            "daemon mirrors are for Docker Hub"
        );
        assert_eq!(
            config_platform(br#"{"architecture":"arm64","os":"linux","variant":"v8"}"#)
                .unwrap()
                .to_string(),
            "linux/arm64"
        );
    }
}
