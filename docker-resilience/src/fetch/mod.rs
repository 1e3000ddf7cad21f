//! Fetch: images from registries into the blob cache, over the distribution API, the
//! way a registry client does it: resolve the reference (an index to the platform's
//! manifest), download config and layers, resume a blob cut mid-way with `Range` from
//! where it stopped, verify every blob by digest, and count what each endpoint did.
//! [`archive`] turns fetched images into a `docker load` archive.
//!
//! May import: `vocab`, `support`, `resilience`, `registry`, `cache`.

pub mod archive;
pub mod handoff;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{self, TryStreamExt};
use serde::Serialize;

use crate::cache::{BlobCache, CacheError, CachedRef};
use crate::registry::client::{Endpoint, Failure, RegistryClient, RequestError};
use crate::registry::manifest::{Descriptor, Manifest};
use crate::resilience::classify::ErrorClass;
use crate::resilience::health::Health;
use crate::resilience::mirror::MirrorSet;
use crate::support::{lock, millis};
use crate::vocab::{ImageReference, Platform, Wanted, DOCKER_HUB};

/// Layers of one image downloaded at once (as dockerd's `max-concurrent-downloads`).
const LAYER_JOBS: usize = 3;

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

/// Requests failed at an endpoint, by class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    /// Retried soon.
    pub transient: u64,
    /// `429`.
    #[serde(rename = "rate-limited")]
    pub rate_limited: u64,
    /// Not retried.
    pub permanent: u64,
}

/// What one endpoint did during a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EndpointStats {
    /// `host[:port]`.
    pub endpoint: String,
    /// Requests sent.
    pub requests: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// Blob downloads continued from where a cut left them.
    pub resumes: u64,
    /// Failed requests by class.
    pub faults: FaultCounts,
    /// Time spent in requests to it.
    pub elapsed_ms: u64,
}

/// Statistics of every endpoint of a run.
#[derive(Debug, Default)]
pub struct Stats {
    endpoints: Mutex<BTreeMap<String, EndpointStats>>,
}

impl Stats {
    fn with(&self, endpoint: &Endpoint, f: impl FnOnce(&mut EndpointStats)) {
        let mut map = lock(&self.endpoints);
        let entry = map
            .entry(endpoint.host.clone())
            .or_insert_with(|| EndpointStats {
                endpoint: endpoint.host.clone(),
                ..EndpointStats::default()
            });
        f(entry);
    }

    /// Every endpoint used, by name.
    pub fn snapshot(&self) -> Vec<EndpointStats> {
        lock(&self.endpoints).values().cloned().collect()
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

/// Downloads images into the cache.
#[derive(Debug)]
pub struct Fetcher {
    client: RegistryClient,
    cache: BlobCache,
    health: Arc<Health>,
    stats: Arc<Stats>,
    stall_timeout: Duration,
    blob_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Progress of one image: bytes received.
pub type BytesSink<'a> = &'a (dyn Fn(u64) + Send + Sync);

impl Fetcher {
    /// A fetcher into `cache`, sharing `health` and `stats` with the run.
    pub fn new(
        client: RegistryClient,
        cache: BlobCache,
        health: Arc<Health>,
        stats: Arc<Stats>,
        stall_timeout: Duration,
    ) -> Self {
        Fetcher {
            client,
            cache,
            health,
            stats,
            stall_timeout,
            blob_locks: Mutex::new(HashMap::new()),
        }
    }

    /// The cache blobs go into.
    pub fn cache(&self) -> &BlobCache {
        &self.cache
    }

    /// The client requests go through.
    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// Fetches `wanted` from `endpoint` into the cache: [`Fetcher::resolve`], then
    /// [`Fetcher::download`].
    pub async fn fetch(
        &self,
        wanted: &Wanted,
        endpoint: &Endpoint,
        progress: BytesSink<'_>,
    ) -> Result<FetchedImage, RequestError> {
        let mut image = self.resolve(wanted, endpoint).await?;
        self.download(&mut image, endpoint, progress, &|_| {})
            .await?;
        Ok(image)
    }

    /// Resolves `wanted` on `endpoint`: its tagged manifest and, for an index, the
    /// platform's manifest (both then in the cache). Config and layers are known, not
    /// yet fetched.
    pub async fn resolve(
        &self,
        wanted: &Wanted,
        endpoint: &Endpoint,
    ) -> Result<FetchedImage, RequestError> {
        let image = &wanted.reference;
        let platform = wanted.platform.clone().unwrap_or_else(Platform::host);
        let top = self
            .manifest(endpoint, image, image.tag_or_digest())
            .await?;
        let (top_type, parsed) = parse(endpoint, image, &top)?;
        let top_descriptor = Descriptor {
            media_type: top_type.clone(),
            digest: top.1.clone(),
            size: top.0.len() as u64,
            platform: None,
        };
        let (manifest_descriptor, manifest_fetched) = match parsed {
            Manifest::Index(entries) => {
                let entry = Manifest::select(&entries, &platform).ok_or_else(|| {
                    let offered: Vec<String> = entries
                        .iter()
                        .filter_map(|e| e.platform.as_ref().map(|p| p.platform().to_string()))
                        .collect();
                    RequestError {
                        endpoint: endpoint.label.clone(),
                        target: format!(
                            "manifest {}:{}",
                            image.repository(),
                            image.tag_or_digest()
                        ),
                        failure: Failure::Unusable(format!(
                            "no manifest for {platform} in the index (it has {})",
                            offered.join(", ")
                        )),
                    }
                })?;
                let mut fetched = self.manifest(endpoint, image, &entry.digest).await?;
                if fetched.2.is_empty() {
                    fetched.2 = entry.media_type.clone();
                }
                (entry.clone(), fetched)
            }
            Manifest::Image { .. } => (top_descriptor.clone(), top.clone()),
        };
        let (_, Manifest::Image { config, layers }) = parse(endpoint, image, &manifest_fetched)?
        else {
            return Err(RequestError {
                endpoint: endpoint.label.clone(),
                target: format!("manifest {}", manifest_descriptor.digest),
                failure: Failure::Unusable("an index inside an index".into()),
            });
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
            bytes: 0,
            resumes: 0,
        })
    }

    /// Downloads a resolved image's config, then its layers (a few at a time), into the
    /// cache; calls `ready` with each blob's digest once it is there and verified (at
    /// once for blobs the cache had), so that a loader can stream them as they come.
    pub async fn download(
        &self,
        image: &mut FetchedImage,
        endpoint: &Endpoint,
        progress: BytesSink<'_>,
        ready: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), RequestError> {
        let reference = image.wanted.reference.clone();
        let (bytes, resumes) = self
            .blob(endpoint, &reference, &image.config, progress)
            .await?;
        ready(&image.config.digest);
        let config = self
            .cache
            .read(&image.config.digest)
            .ok()
            .flatten()
            .unwrap_or_default();
        let actual = config_platform(&config);
        if image.wanted.platform.is_some() && actual.as_ref().is_some_and(|a| *a != image.platform)
        {
            return Err(RequestError {
                endpoint: endpoint.label.clone(),
                target: format!(
                    "manifest {}:{}",
                    reference.repository(),
                    reference.tag_or_digest()
                ),
                failure: Failure::Unusable(format!(
                    "the image is for {}, not {}",
                    actual.map(|a| a.to_string()).unwrap_or_default(),
                    image.platform
                )),
            });
        }
        if let Some(actual) = actual {
            image.platform = actual;
        }
        let layers = image.layers.clone();
        let (layer_bytes, layer_resumes) = stream::iter(layers.iter().map(Ok))
            .map_ok(|layer| async {
                let got = self.blob(endpoint, &reference, layer, progress).await?;
                ready(&layer.digest);
                Ok(got)
            })
            .try_buffer_unordered(LAYER_JOBS)
            .try_fold((0u64, 0u64), |(b, r), (nb, nr)| async move {
                Ok((b + nb, r + nr))
            })
            .await?;
        image.bytes += bytes + layer_bytes;
        image.resumes += resumes + layer_resumes;
        let _ = self.cache.remember(&CachedRef {
            reference,
            digest: image.top.digest.clone(),
            media_type: image.top.media_type.clone(),
            platforms: vec![(
                image.platform.clone(),
                image.manifest.digest.clone(),
                image.manifest.media_type.clone(),
            )],
        });
        Ok(())
    }

    fn fault(&self, endpoint: &Endpoint, error: &RequestError) -> RequestError {
        let class = error.class();
        self.stats.with(endpoint, |s| match class {
            ErrorClass::Transient => s.faults.transient += 1,
            ErrorClass::RateLimited => s.faults.rate_limited += 1,
            ErrorClass::Permanent => s.faults.permanent += 1,
        });
        error.clone()
    }

    /// A manifest: from the cache when asked by digest and there, else from the
    /// endpoint (and then cached). Returns its bytes and digest.
    async fn manifest(
        &self,
        endpoint: &Endpoint,
        image: &ImageReference,
        reference: &str,
    ) -> Result<(bytes::Bytes, String, String), RequestError> {
        if reference.starts_with("sha256:") {
            if let Ok(Some(bytes)) = self.cache.read(reference) {
                return Ok((bytes.into(), reference.to_owned(), String::new()));
            }
        }
        self.health.ready(&endpoint.host).await;
        self.stats.with(endpoint, |s| s.requests += 1);
        let started = Instant::now();
        let result = self.client.manifest(endpoint, image, reference).await;
        let elapsed = millis(started.elapsed());
        self.stats.with(endpoint, |s| s.elapsed_ms += elapsed);
        let fetched = result.map_err(|e| self.fault(endpoint, &e))?;
        self.stats
            .with(endpoint, |s| s.bytes += fetched.bytes.len() as u64);
        self.health.manifest_served(&endpoint.host);
        let _ = self.cache.put(&fetched.digest, &fetched.bytes);
        Ok((fetched.bytes, fetched.digest, fetched.media_type))
    }

    /// A blob into the cache, resumed while each request brings bytes; returns the
    /// bytes received and how many times it resumed.
    async fn blob(
        &self,
        endpoint: &Endpoint,
        image: &ImageReference,
        blob: &Descriptor,
        progress: BytesSink<'_>,
    ) -> Result<(u64, u64), RequestError> {
        let digest = &blob.digest;
        if self.cache.contains(digest) {
            return Ok((0, 0));
        }
        // Layers shared between images are fetched once.
        let gate = lock(&self.blob_locks)
            .entry(digest.clone())
            .or_default()
            .clone();
        let _held = gate.lock().await;
        if self.cache.contains(digest) {
            return Ok((0, 0));
        }
        let fail = |failure| RequestError {
            endpoint: endpoint.label.clone(),
            target: format!(
                "blob {}… of {}",
                digest.get(..19).unwrap_or(digest),
                image.repository()
            ),
            failure,
        };
        let cache_fail = |e: CacheError| match e {
            CacheError::Mismatch { .. } => {
                fail(Failure::Corrupt(format!("{e}: refused, fetching it again")))
            }
            other => fail(Failure::Unusable(other.to_string())),
        };
        let mut resumes = 0u64;
        let mut total = 0u64;
        loop {
            let offset = self.cache.partial_len(digest);
            if offset >= blob.size && blob.size > 0 {
                // A complete partial file (a cut right at the end, or a crash before
                // the move): verify it.
                let writer = self.cache.writer(digest, true).map_err(cache_fail)?;
                return match writer.commit() {
                    Ok(_) => Ok((total, resumes)),
                    Err(e) => Err(self.fault(endpoint, &cache_fail(e))),
                };
            }
            self.health.ready(&endpoint.host).await;
            self.stats.with(endpoint, |s| s.requests += 1);
            let started = Instant::now();
            let response = match self.client.blob(endpoint, image, digest, offset).await {
                Ok(r) => r,
                Err(e) => {
                    let elapsed = millis(started.elapsed());
                    self.stats.with(endpoint, |s| s.elapsed_ms += elapsed);
                    return Err(self.fault(endpoint, &e));
                }
            };
            let resumed = response.resumed && offset > 0;
            if resumed {
                resumes += 1;
                self.stats.with(endpoint, |s| s.resumes += 1);
            }
            let mut writer = self.cache.writer(digest, resumed).map_err(cache_fail)?;
            let expected = blob.size.saturating_sub(writer.len());
            let mut body = response.response;
            let mut received = 0u64;
            let outcome = loop {
                match tokio::time::timeout(self.stall_timeout, body.chunk()).await {
                    Err(_) => break Err(Failure::Stalled(self.stall_timeout)),
                    Ok(Err(e)) => {
                        let why = crate::support::error_chain(&e);
                        break Err(Failure::Transport(why));
                    }
                    Ok(Ok(None)) => break Ok(()),
                    Ok(Ok(Some(chunk))) => {
                        if writer.len() + chunk.len() as u64 > blob.size && blob.size > 0 {
                            break Err(Failure::Corrupt(format!(
                                "more bytes than the {} the manifest says",
                                blob.size
                            )));
                        }
                        writer.write(&chunk).map_err(cache_fail)?;
                        received += chunk.len() as u64;
                        progress(chunk.len() as u64);
                    }
                }
            };
            let elapsed = millis(started.elapsed());
            total += received;
            self.stats.with(endpoint, |s| {
                s.elapsed_ms += elapsed;
                s.bytes += received;
            });
            let outcome = match outcome {
                Ok(()) if writer.len() < blob.size => Err(Failure::Cut { received, expected }),
                other => other,
            };
            match outcome {
                Ok(()) => {
                    self.health.success(&endpoint.host);
                    return match writer.commit() {
                        Ok(_) => Ok((total, resumes)),
                        Err(e) => Err(self.fault(endpoint, &cache_fail(e))),
                    };
                }
                Err(Failure::Corrupt(why)) => {
                    drop(writer);
                    self.cache.discard_partial(digest);
                    return Err(self.fault(endpoint, &fail(Failure::Corrupt(why))));
                }
                Err(failure) => {
                    writer.keep().map_err(cache_fail)?;
                    let error = self.fault(endpoint, &fail(failure));
                    if received == 0 {
                        return Err(error);
                    }
                    // It served bytes: the endpoint works; go on from where it stopped.
                    self.health.success(&endpoint.host);
                    tracing::debug!(
                        "{error}; resuming at byte {}",
                        self.cache.partial_len(digest)
                    );
                }
            }
        }
    }
}

fn parse(
    endpoint: &Endpoint,
    image: &ImageReference,
    fetched: &(bytes::Bytes, String, String),
) -> Result<(String, Manifest), RequestError> {
    Manifest::parse(&fetched.2, &fetched.0).map_err(|why| RequestError {
        endpoint: endpoint.label.clone(),
        target: format!("manifest {}@{}", image.repository(), fetched.1),
        failure: Failure::Unusable(why),
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
