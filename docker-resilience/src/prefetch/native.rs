//! The registry-native path: drbuild fetches the image from its sources in order (the
//! daemon's mirrors, drbuild's, the registry) into the blob cache, resuming and
//! verifying, then loads it into the daemon as a `docker load` archive tagged with its
//! own name. Every failure is an endpoint's own answer.

use std::sync::atomic::Ordering;
use std::sync::Mutex;

use futures_util::StreamExt;

use super::{ByteCounter, Failed, PrefetchEvent, Prefetcher, Pulled};
use crate::engine::{ContextStream, Engine};
use crate::fetch::archive::{write_archive_as_ready, BlobReady};
use crate::fetch::handoff::Handoff;
use crate::fetch::{FetchedImage, Fetcher};
use crate::registry::client::{Endpoint, RequestError};
use crate::resilience::classify::{classify, Classification, ErrorClass};
use crate::support::chunks::blocking_stream;
use crate::vocab::Wanted;

/// How an image's fetch and load ended, when the fetch worked.
enum Loaded {
    /// In the daemon (or, fetch-only, in the cache).
    Pulled(Box<Pulled>),
    /// Fetched, but the daemon did not take it.
    Refused(Failed),
}

impl<E: Engine> Prefetcher<E> {
    /// One attempt: each source in order (skipping those that keep failing) until one
    /// serves the image or answers that it does not exist; then the load.
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
        let open: Vec<&Endpoint> = sources
            .iter()
            .filter(|e| !self.breaker.is_open(&e.host))
            .collect();
        let candidates = if open.is_empty() {
            sources.iter().collect()
        } else {
            open
        };
        let counter = ByteCounter {
            prefetcher: self,
            wanted,
            received: Mutex::new(0),
        };
        let mut errors: Vec<(&Endpoint, RequestError)> = Vec::new();
        for (k, endpoint) in candidates.iter().enumerate() {
            self.emit(PrefetchEvent::Attempt {
                image: wanted.clone(),
                attempt,
                source: endpoint.host.clone(),
            });
            let progress = |n: u64| counter.add(n);
            match self
                .fetch_and_load(fetcher, wanted, endpoint, &progress)
                .await
            {
                Ok(Loaded::Pulled(pulled)) => return Ok(*pulled),
                Ok(Loaded::Refused(failed)) => return Err(failed),
                Err(e) => {
                    let last = k + 1 == candidates.len();
                    // A missing image is final where the answer is authoritative: the
                    // registry, or a mirror of the daemon's (a pull-through cache). A
                    // mirror of drbuild's may just not hold it: try the next source.
                    let authoritative = !endpoint.label.starts_with("mirror ")
                        || self
                            .options
                            .daemon_mirrors
                            .iter()
                            .any(|m| Endpoint::daemon_mirror(m).base == endpoint.base);
                    let stop = e.class() == ErrorClass::Permanent && (authoritative || last);
                    // A 429 is a source that answers (its pace is the health's business),
                    // not one that keeps failing.
                    if e.class() == ErrorClass::Transient && self.breaker.failure(&endpoint.host) {
                        self.emit(PrefetchEvent::SourceSkipped {
                            source: endpoint.label.clone(),
                        });
                    }
                    if k > 0 {
                        // The first source's wait is the attempt's (see `pull_one`); a
                        // fallback's failure counts against its own health (a 429
                        // closes it too).
                        self.health
                            .failure(&endpoint.host, e.class(), e.retry_after());
                    }
                    errors.push((endpoint, e));
                    if stop {
                        break;
                    }
                }
            }
        }
        // The first source's answer is the one that matters (it is the one to retry);
        // what the fallbacks said follows it.
        let bytes = *crate::support::lock(&counter.received);
        let (first, first_error) = errors.remove(0);
        let mut message = first_error.to_string();
        if let Some(hint) = first_error.hint() {
            message.push_str(&format!(" (hint: {hint})"));
        }
        for (_, e) in &errors {
            message.push_str(&format!("; then {e}"));
        }
        let final_class = errors
            .last()
            .map_or(first_error.class(), |(_, e)| e.class());
        let class = if final_class == ErrorClass::Permanent {
            ErrorClass::Permanent
        } else {
            first_error.class()
        };
        Err(Failed {
            message,
            classification: Classification {
                class,
                retry_after: first_error.retry_after(),
                dns_failure: false,
                docker_hub_unreachable: false,
            },
            source: first.host.clone(),
            explained_by_mirror: false,
            bytes,
            resumes: 0,
        })
    }
}

impl<E: Engine> Prefetcher<E> {
    /// Fetches `wanted` from `endpoint` and loads it, the archive streaming to the daemon
    /// while the layers still arrive. A fetch failure is the endpoint's error (for the
    /// next source to be tried); a load failure is the daemon's.
    async fn fetch_and_load(
        &self,
        fetcher: &Fetcher,
        wanted: &Wanted,
        endpoint: &Endpoint,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Loaded, RequestError> {
        let mut image = fetcher.resolve(wanted, endpoint).await?;
        // It served the manifests: whatever failed before, it is not a source that keeps
        // failing (a flaky mirror must not be skipped for an unreachable registry).
        self.breaker.success(&endpoint.host);
        if self.fetch_only {
            fetcher
                .download(&mut image, endpoint, progress, &|_| {})
                .await?;
            return Ok(Loaded::Pulled(Box::new(Pulled {
                source: endpoint.host.clone(),
                bytes: image.bytes,
                resumes: image.resumes,
                fetched: Some(image),
            })));
        }
        if let Some(handoff) = self.handoff(fetcher).await {
            match self
                .hand_off(handoff, fetcher, wanted, &mut image, endpoint, progress)
                .await?
            {
                Ok(loaded) => return Ok(loaded),
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
            let result = fetcher
                .download(&mut image, endpoint, progress, &ready)
                .await;
            if result.is_err() {
                let _ = tx.send(BlobReady::Failed);
            }
            result
        };
        let (loaded, downloaded) = tokio::join!(self.engine.load(archive), download);
        downloaded?;
        Ok(match loaded {
            Ok(_) => Loaded::Pulled(Box::new(Pulled {
                source: endpoint.host.clone(),
                bytes: image.bytes,
                resumes: image.resumes,
                fetched: Some(image),
            })),
            Err(e) => refused(
                format!("the daemon could not load `{}`: {e}", wanted.reference),
                &image,
            ),
        })
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
        endpoint: &Endpoint,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Result<Loaded, String>, RequestError> {
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
                    .download(&mut *image, endpoint, progress, &|d| handoff.ready(d))
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
            // The digest name exists on graph-driver stores only.
            if let Ok(name) = name.parse() {
                let _ = self.engine.untag(&name).await;
            }
        }
        handoff.settled(&names);
        let failure = match named {
            Ok(()) => {
                return Ok(Ok(Loaded::Pulled(Box::new(Pulled {
                    source: endpoint.host.clone(),
                    bytes: image.bytes,
                    resumes: image.resumes,
                    fetched: Some(image.clone()),
                }))))
            }
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
    }
}
