//! The registry-native path: drbuild fetches the image into the blob cache, every
//! request through the run's transport (each failed request retried on its own, on
//! the same source while it glitches, on the next when it fails as a whole; the image
//! is not restarted), and delivers it to the daemon: a daemon on this machine pulls it
//! from drbuild's loopback handoff registry while the layers still arrive; any other
//! daemon (or one that cannot reach the handoff) gets a `docker load` archive tagged
//! with the image's own name. Every failure is an endpoint's own answer, or the
//! cache's, or the daemon's.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;

use super::{ByteCounter, Failed, PrefetchEvent, Prefetcher, Pulled};
use crate::deliver::archive::{write_archive_as_ready, BlobReady};
use crate::deliver::handoff::Handoff;
use crate::engine::{ContextStream, Engine, ImageStore};
use crate::fetch::{FetchError, FetchedImage, Fetcher, Watch};
use crate::registry::client::Endpoint;
use crate::registry::transport::{Retry, Slot};
use crate::resilience::classify::{classify, Classification, ErrorClass};
use crate::support::chunks::blocking_stream;
use crate::vocab::Wanted;

/// How an image's fetch and delivery ended, when the fetch worked.
enum Loaded {
    /// In the daemon.
    Pulled(Box<Pulled>),
    /// Fetched, but the daemon did not take it.
    Refused(Failed),
}

impl<E: Engine> Prefetcher<E> {
    /// One attempt: the image fetched (its requests retried on their own) and
    /// delivered. A fetch failure is final for the image: its requests have spent
    /// their budgets. A delivery the daemon refused may be tried again (after the
    /// cache's copy of a blob it called corrupt is evicted).
    pub(super) async fn native_attempt(
        &self,
        wanted: &Wanted,
        attempt: u32,
    ) -> Result<Pulled, Failed> {
        let fetcher = match self.fetcher().await {
            Ok(f) => f,
            Err(why) => {
                return Err(failed(
                    "cache",
                    format!("the blob cache cannot be used: {why}"),
                    ErrorClass::Permanent,
                ))
            }
        };
        let sources = self.sources(&wanted.reference);
        self.emit(PrefetchEvent::Attempt {
            image: wanted.clone(),
            attempt,
            source: sources[0].host.clone(),
        });
        let counter = ByteCounter {
            prefetcher: self,
            wanted,
            received: Mutex::new(0),
        };
        // The image's attempts: the most tries one of its requests took at the source
        // that served it (or, when it failed, at any source).
        let served_tries = AtomicU32::new(0);
        let failed_tries = AtomicU32::new(0);
        let progress = |n: u64| counter.add(n);
        let served = |tries: u32| {
            served_tries.fetch_max(attempt - 1 + tries, Ordering::Relaxed);
        };
        let retried = |r: &Retry<'_>| {
            let tries = attempt - 1 + r.tries;
            failed_tries.fetch_max(tries, Ordering::Relaxed);
            if r.after.is_some() {
                self.emit(PrefetchEvent::AttemptFailed {
                    image: wanted.clone(),
                    attempt: tries,
                    error: r.error.to_string(),
                    class: r.error.class(),
                    retry_in: r.after,
                });
            }
        };
        let slot = Slot::new(Arc::clone(&self.registry_slots));
        let watch = Watch {
            progress: &progress,
            retried: &retried,
            served: &served,
            slot: Some(&slot),
        };
        let outcome = self.fetch_and_load(fetcher, wanted, &sources, watch).await;
        let most = if matches!(outcome, Ok(Loaded::Pulled(_))) {
            &served_tries
        } else {
            &failed_tries
        };
        let attempts = most.load(Ordering::Relaxed).max(attempt);
        let bytes = *crate::support::lock(&counter.received);
        match outcome {
            Ok(Loaded::Pulled(mut pulled)) => {
                pulled.attempts = attempts;
                Ok(*pulled)
            }
            Ok(Loaded::Refused(mut refused)) => {
                refused.attempts = attempts;
                Err(refused)
            }
            Err(e) => {
                let source = match &e {
                    FetchError::Cache(_) => "cache".to_owned(),
                    _ => sources[0].host.clone(),
                };
                let mut message = e.to_string();
                if let Some(hint) = e.hint() {
                    message.push_str(&format!(" (hint: {hint})"));
                }
                Err(Failed {
                    message,
                    classification: Classification {
                        class: e.class(),
                        retry_after: e.retry_after(),
                        dns_failure: false,
                        docker_hub_unreachable: false,
                    },
                    source,
                    explained_by_mirror: false,
                    bytes,
                    resumes: 0,
                    attempts,
                    again: false,
                })
            }
        }
    }

    /// Fetches `wanted` and loads it, the archive streaming to the daemon while the
    /// layers still arrive. A fetch failure is the sources' (or the cache's); a load
    /// failure is the daemon's.
    async fn fetch_and_load(
        &self,
        fetcher: &Fetcher,
        wanted: &Wanted,
        sources: &[Endpoint],
        watch: Watch<'_>,
    ) -> Result<Loaded, FetchError> {
        let mut image = fetcher.resolve(wanted, sources, watch).await?;
        if let Some(handoff) = self.handoff(fetcher).await {
            match self
                .hand_off(handoff, fetcher, wanted, &mut image, sources, watch)
                .await?
            {
                Ok(loaded) => return Ok(self.evicting(fetcher, &image, loaded)),
                Err(why) => {
                    tracing::info!(
                        "the daemon cannot reach drbuild's handoff registry on {} ({why}): loading images instead",
                        handoff.address()
                    );
                    self.handoff_unreachable.store(true, Ordering::Relaxed);
                }
            }
        }
        let (tx, rx) = std::sync::mpsc::channel::<BlobReady>();
        let cache = fetcher.cache().clone();
        let resolved = vec![image.clone()];
        let archive: ContextStream = Box::pin(blocking_stream(move |out| {
            write_archive_as_ready(&cache, &resolved, &rx, out)
        }));
        let ready_tx = tx.clone();
        let ready = move |digest: &str| {
            let _ = ready_tx.send(BlobReady::Blob(digest.to_owned()));
        };
        let download = async {
            let result = fetcher.download(&mut image, sources, watch, &ready).await;
            if result.is_err() {
                let _ = tx.send(BlobReady::Failed);
            }
            result
        };
        let (loaded, downloaded) = tokio::join!(self.engine.load(archive), download);
        downloaded?;
        let loaded = match loaded {
            Ok(_) => Loaded::Pulled(Box::new(delivered(image.clone()))),
            Err(e) => refused(
                format!("the daemon could not load `{}`: {e}", wanted.reference),
                &image,
            ),
        };
        Ok(self.evicting(fetcher, &image, loaded))
    }

    /// A delivery the daemon refused as corrupt (a blob that rotted in the cache after
    /// it was checked): the cache's bad copies are removed and the image is tried again
    /// once, fetching them anew.
    fn evicting(&self, fetcher: &Fetcher, image: &FetchedImage, loaded: Loaded) -> Loaded {
        let Loaded::Refused(mut refused) = loaded else {
            return loaded;
        };
        let lower = refused.message.to_ascii_lowercase();
        let corrupt = [
            "verification failed",
            "digest",
            "checksum",
            "unexpected eof",
            "size",
        ]
        .iter()
        .any(|m| lower.contains(m));
        if corrupt && !fetcher.evict_corrupt(image).is_empty() {
            refused.classification.class = ErrorClass::Transient;
            refused.again = true;
            refused
                .message
                .push_str(" (the cache's copy was corrupt: removed, fetching it again)");
        }
        Loaded::Refused(refused)
    }
}

/// A fetched image, delivered.
fn delivered(image: FetchedImage) -> Pulled {
    Pulled {
        source: image.source.clone(),
        bytes: image.bytes,
        resumes: image.resumes,
        attempts: 1,
        fetched: Some(image),
    }
}

impl<E: Engine> Prefetcher<E> {
    /// The handoff registry, where the daemon can take images from it.
    async fn handoff(&self, fetcher: &Fetcher) -> Option<&Handoff> {
        if !self.options.handoff
            || !self.engine.on_this_machine()
            || self.handoff_unreachable.load(Ordering::Relaxed)
        {
            return None;
        }
        self.handoff
            .get_or_init(|| async {
                Handoff::start(fetcher.cache().clone())
                    .await
                    // The containerd store records a pulled name by its tag only.
                    .map(|h| match self.store.get() {
                        Some(ImageStore::Containerd) => h.without_digest_names(),
                        _ => h,
                    })
                    .map_err(|e| {
                        tracing::info!("no handoff registry ({e}): loading images instead")
                    })
                    .ok()
            })
            .await
            .as_ref()
    }

    /// Downloads `image` while the daemon pulls it from the handoff, then names it.
    /// `Err` is the endpoint's failure; `Ok(Err(why))` says the daemon could not reach
    /// the handoff (the image is then loaded instead).
    async fn hand_off(
        &self,
        handoff: &Handoff,
        fetcher: &Fetcher,
        wanted: &Wanted,
        image: &mut FetchedImage,
        sources: &[Endpoint],
        watch: Watch<'_>,
    ) -> Result<Result<Loaded, String>, FetchError> {
        let temporary = handoff.publish(image);
        let platform = wanted.platform.clone();
        let pulled = {
            let pull = async {
                let mut events = self.engine.pull(&temporary, platform.as_ref()).await;
                while let Some(event) = events.next().await {
                    event?;
                }
                Ok::<(), crate::engine::EngineError>(())
            };
            let download = async {
                let result = fetcher
                    .download(&mut *image, sources, watch, &|d| handoff.ready(d))
                    .await;
                if result.is_err() {
                    handoff.failed(&*image);
                }
                result
            };
            tokio::pin!(pull);
            tokio::pin!(download);
            // A failed download ends the attempt at once (dropping the pull cancels it).
            tokio::select! {
                downloaded = &mut download => {
                    downloaded?;
                    pull.await
                }
                pulled = &mut pull => {
                    download.await?;
                    pulled
                }
            }
        };
        let named = match pulled {
            Ok(()) => self.engine.tag(&temporary, &wanted.reference).await,
            Err(e) => Err(e),
        };
        let names = handoff.names_of(image, &temporary);
        for name in &names {
            if let Ok(name) = name.parse() {
                let _ = self.engine.untag(&name).await;
            }
        }
        handoff.settled(&names);
        let failure = match named {
            Ok(()) => return Ok(Ok(Loaded::Pulled(Box::new(delivered(image.clone()))))),
            Err(e) => e.to_string(),
        };
        if cannot_reach(&failure, handoff) {
            return Ok(Err(failure));
        }
        Ok(Ok(refused(
            format!(
                "the daemon could not take `{}` from drbuild: {failure}",
                wanted.reference
            ),
            image,
        )))
    }
}

/// A fetched image the daemon did not take.
fn refused(message: String, image: &FetchedImage) -> Loaded {
    Loaded::Refused(Failed {
        classification: classify(&message),
        message,
        source: "daemon".into(),
        explained_by_mirror: false,
        bytes: image.bytes,
        resumes: image.resumes,
        attempts: 1,
        again: true,
    })
}

/// Whether the daemon's error says it could not connect to the handoff at all.
fn cannot_reach(message: &str, handoff: &Handoff) -> bool {
    let port = handoff.address().port().to_string();
    message.contains(&port)
        && [
            "connection refused",
            "no route to host",
            "i/o timeout",
            "dial tcp",
            "context deadline exceeded",
        ]
        .iter()
        .any(|m| message.contains(m))
}

fn failed(source: &str, message: String, class: ErrorClass) -> Failed {
    Failed {
        message,
        classification: Classification {
            class,
            retry_after: None,
            dns_failure: false,
            docker_hub_unreachable: false,
        },
        source: source.into(),
        explained_by_mirror: false,
        bytes: 0,
        resumes: 0,
        attempts: 1,
        again: false,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::cache::{digest_of, BlobCache};
    use crate::fetch::{FetchEvent, FetchRun};
    use crate::registry::client::RegistryClient;
    use crate::registry::credentials::Credentials;
    use crate::registry::manifest::Descriptor;
    use crate::registry::transport::{Transport, BREAKER_THRESHOLD};
    use crate::resilience::retry::RetryPolicy;
    use crate::vocab::{ImageReference, Platform};
    use crate::CancellationToken;
    use docker_resilience_tests::faultproxy::{serve, Config};

    /// A descriptor of `bytes` (shared with the multipart tests).
    pub(in crate::prefetch) fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: digest_of(bytes),
            size: bytes.len() as u64,
            platform: None,
        }
    }

    /// A cache holding one image of three layers (64 KiB, 384 KiB, 1 MiB), and the image.
    fn seeded(cache: &BlobCache) -> FetchedImage {
        let layers: Vec<Vec<u8>> = [64 << 10, 384 << 10, 1 << 20]
            .iter()
            .enumerate()
            .map(|(k, n)| {
                (0..*n)
                    .map(|i: usize| (i * 31 + k * 7 + i / 251) as u8)
                    .collect()
            })
            .collect();
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}"#.to_vec();
        let layer_type = "application/vnd.docker.image.rootfs.diff.tar.gzip";
        let config_type = "application/vnd.docker.container.image.v1+json";
        let manifest_type = "application/vnd.docker.distribution.manifest.v2+json";
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": digest_of(&config), "size": config.len()},
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": layer_type, "digest": digest_of(l), "size": l.len()
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        for blob in layers.iter().chain([&config, &manifest]) {
            cache.put(&digest_of(blob), blob).unwrap();
        }
        let top = descriptor(manifest_type, &manifest);
        FetchedImage {
            wanted: Wanted::any_platform("library/redis:7-alpine".parse().unwrap()),
            top: top.clone(),
            manifest: top,
            platform: Platform::host(),
            config: descriptor(config_type, &config),
            layers: layers.iter().map(|l| descriptor(layer_type, l)).collect(),
            source: String::new(),
            bytes: 0,
            resumes: 0,
        }
    }

    /// The native fetch path against an in-process registry (the handoff serving a
    /// cache) behind the fault proxy failing half of all manifest and blob requests
    /// (EOF, 500, a body cut half-way): every seed brings the image whole, the failed
    /// requests retried on their own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn half_of_all_requests_failing_still_brings_the_image_whole() {
        let source_dir = tempfile::tempdir().unwrap();
        let source = BlobCache::open(source_dir.path()).unwrap();
        let image = seeded(&source);
        let handoff = Handoff::start(source).await.unwrap();
        let published = handoff.publish(&image);
        let mut retried_in_all = 0;
        for seed in 1..=5 {
            let proxy = serve(
                "127.0.0.1:0".parse().unwrap(),
                handoff.address(),
                Config::request_faults(seed, 0.5),
            )
            .await
            .unwrap();
            let name = format!(
                "{proxy}/{}:{}",
                published.repository(),
                published.tag().unwrap()
            );
            let wanted = Wanted::any_platform(name.parse().unwrap());
            let dir = tempfile::tempdir().unwrap();
            let cache = BlobCache::open(dir.path()).unwrap();
            let transport = Transport::new(
                RegistryClient::new(Credentials::none(), Duration::from_secs(5)),
                &RetryPolicy::quick(),
                BREAKER_THRESHOLD,
            );
            let fetcher = Fetcher::new(Arc::new(transport), cache.clone(), Duration::from_secs(5));
            let retried = AtomicU32::new(0);
            let events = |e: &FetchEvent<'_>| {
                if let FetchEvent::Retried { .. } = e {
                    retried.fetch_add(1, Ordering::Relaxed);
                }
            };
            let sources = |i: &ImageReference| vec![Endpoint::registry(i.registry())];
            let report = fetcher
                .fetch_all(
                    std::slice::from_ref(&wanted),
                    &FetchRun {
                        jobs: 2,
                        deadline: Some(Duration::from_secs(60)),
                        probe_timeout: Duration::from_secs(5),
                        cancel: CancellationToken::new(),
                        sources: &sources,
                        events: &events,
                    },
                )
                .await;
            let fetched = report.images[0]
                .outcome
                .as_ref()
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert_eq!(fetched.layers, image.layers, "seed {seed}");
            for blob in image.blobs() {
                assert!(cache.contains(&blob.digest), "seed {seed}: {}", blob.digest);
            }
            let verified = cache.verify_all(false).unwrap();
            assert!(
                verified.corrupt.is_empty() && verified.checked == 5,
                "seed {seed}"
            );
            retried_in_all += retried.load(Ordering::Relaxed);
        }
        assert!(
            retried_in_all >= 5,
            "only {retried_in_all} requests retried in 5 seeds"
        );
    }

    /// A daemon on this machine that holds the image's content already (its pull of
    /// the handoff's name ends at once), and says what it was asked, and whether the
    /// run's cache held the image's last layer when it was asked to name the image.
    struct Holding {
        store: ImageStore,
        cache: BlobCache,
        last_layer: String,
        calls: std::sync::Mutex<Vec<String>>,
    }

    impl Engine for Holding {
        async fn present_images(
            &self,
            _wanted: &[ImageReference],
        ) -> Result<crate::engine::PresentImages, crate::engine::EngineError> {
            Ok(crate::engine::PresentImages::from_names(Vec::<String>::new()).in_store(self.store))
        }

        async fn pull(
            &self,
            image: &ImageReference,
            _platform: Option<&Platform>,
        ) -> futures_util::stream::BoxStream<
            'static,
            Result<crate::engine::PullEvent, crate::engine::EngineError>,
        > {
            self.calls.lock().unwrap().push(format!("pull {image}"));
            futures_util::stream::empty().boxed()
        }

        async fn tag(
            &self,
            _source: &ImageReference,
            target: &ImageReference,
        ) -> Result<(), crate::engine::EngineError> {
            let cached = self.cache.contains(&self.last_layer);
            self.calls
                .lock()
                .unwrap()
                .push(format!("tag {target} (layer cached: {cached})"));
            Ok(())
        }

        async fn untag(&self, image: &ImageReference) -> Result<(), crate::engine::EngineError> {
            self.calls.lock().unwrap().push(format!("untag {image}"));
            Ok(())
        }

        async fn load(
            &self,
            _archive: ContextStream,
        ) -> Result<Vec<String>, crate::engine::EngineError> {
            Err(crate::engine::EngineError::Daemon {
                status: None,
                message: "not loaded: the handoff is there".into(),
            })
        }

        fn on_this_machine(&self) -> bool {
            true
        }
    }

    /// A handed-off image is named once its download is whole, even when the daemon had
    /// its content (its pull of the handoff's name ended at once while the last layer
    /// still came over a 2 MB/s link), so a download that fails leaves no name; then
    /// the handoff's names are dropped, by digest on a graph-driver store only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handed_off_image_is_named_once_whole_and_the_handoff_names_dropped() {
        let world =
            super::super::multipart_tests::world(1 << 20, Config::thin_link(2_000_000, 0)).await;
        let (image, name) = (&world.image, world.wanted.reference.clone());
        let last_layer = image.layers.last().unwrap().digest.clone();
        for store in [ImageStore::Containerd, ImageStore::GraphDriver] {
            let dir = tempfile::tempdir().unwrap();
            let engine = Holding {
                store,
                cache: BlobCache::open(dir.path()).unwrap(),
                last_layer: last_layer.clone(),
                calls: std::sync::Mutex::new(Vec::new()),
            };
            let options = super::super::PrefetchOptions {
                via: crate::config::Via::Registry,
                cache_dir: Some(dir.path().to_path_buf()),
                credentials: false,
                ..super::super::PrefetchOptions::default()
            };
            let prefetcher = Prefetcher::new(engine, options);
            let report = prefetcher
                .run(&[Wanted::any_platform(name.clone())])
                .await
                .unwrap();
            assert_eq!(report.summary.pulled, 1, "{store:?}: {:?}", report.images);
            let cache = BlobCache::open(dir.path()).unwrap();
            for blob in image.blobs() {
                assert!(cache.contains(&blob.digest), "{store:?}: {}", blob.digest);
            }
            let calls = prefetcher.engine.calls.lock().unwrap().clone();
            let handoff_name = calls[0].strip_prefix("pull ").unwrap().to_owned();
            let mut expected = vec![
                format!("pull {handoff_name}"),
                format!("tag {name} (layer cached: true)"),
                format!("untag {handoff_name}"),
            ];
            if store == ImageStore::GraphDriver {
                let (at, _) = handoff_name.rsplit_once(':').unwrap();
                expected.push(format!("untag {at}@{}", image.top.digest));
            }
            assert_eq!(calls, expected, "{store:?}");
        }
    }
}
