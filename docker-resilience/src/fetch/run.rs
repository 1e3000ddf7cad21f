//! Many images into the cache at once, with no daemon: what `sync` and `export` fetch.
//!
//! Every image is under way at once; its requests take one of `jobs` places while on
//! the wire (a [`Slot`]), and each failed request is retried on its own through the
//! [`Transport`](crate::registry::transport::Transport). An image none of whose
//! sources answers `GET /v2/` fails at once, naming them, rather than after its
//! requests' whole budgets; `deadline` bounds the run; a cancelled run reports what it
//! fetched.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use tokio_util::sync::CancellationToken;

use super::{EndpointStats, FetchError, FetchedImage, Fetcher, Watch};
use crate::registry::client::Endpoint;
use crate::registry::transport::{Retry, Slot};
use crate::support::millis;
use crate::vocab::{ImageReference, Wanted};

/// What a fetch run tells as it goes (from its tasks: keep the handler quick).
#[derive(Debug)]
#[non_exhaustive]
pub enum FetchEvent<'a> {
    /// An image's fetch begins; `source` is the first it asks.
    Started {
        /// The image.
        image: &'a Wanted,
        /// `host[:port]` of its first source.
        source: &'a str,
    },
    /// Bytes arrived for an image.
    Bytes {
        /// The image.
        image: &'a Wanted,
        /// Bytes received for it so far.
        received: u64,
    },
    /// A request of an image failed; `retry.after` says when it goes again.
    Retried {
        /// The image.
        image: &'a Wanted,
        /// The failed try.
        retry: &'a Retry<'a>,
        /// The image's attempt count with this try.
        attempt: u32,
    },
    /// An image is done.
    Finished(&'a FetchResult),
}

/// One image of a fetch run.
#[derive(Debug, Clone)]
pub struct FetchResult {
    /// What was wanted.
    pub wanted: Wanted,
    /// The image in the cache, or why not.
    pub outcome: Result<FetchedImage, FetchError>,
    /// The most tries one of its requests took at the source that served it (when it
    /// failed, at any source).
    pub attempts: u32,
    /// Wall time.
    pub elapsed_ms: u64,
    /// Bytes received for it.
    pub bytes: u64,
}

/// What a fetch run did.
#[derive(Debug, Clone, Default)]
pub struct FetchReport {
    /// Each image wanted (duplicates once), in the order given.
    pub images: Vec<FetchResult>,
    /// What each endpoint did.
    pub endpoints: Vec<EndpointStats>,
    /// The run was cancelled: images not done are not in `images`.
    pub interrupted: bool,
}

impl FetchReport {
    /// The images in the cache.
    pub fn fetched(&self) -> impl Iterator<Item = &FetchedImage> {
        self.images.iter().filter_map(|r| r.outcome.as_ref().ok())
    }

    /// Why each image that failed failed.
    pub fn errors(&self) -> Vec<String> {
        self.images
            .iter()
            .filter_map(|r| r.outcome.as_ref().err().map(ToString::to_string))
            .collect()
    }
}

/// How a fetch run goes.
pub struct FetchRun<'a> {
    /// Images whose requests are on the wire at once.
    pub jobs: usize,
    /// A hard bound on the whole run.
    pub deadline: Option<Duration>,
    /// How long a source may take to answer `GET /v2/` as the run starts.
    pub probe_timeout: Duration,
    /// Ends the run early.
    pub cancel: CancellationToken,
    /// The sources of an image, in order.
    pub sources: &'a (dyn Fn(&ImageReference) -> Vec<Endpoint> + Send + Sync),
    /// Hears what happens.
    pub events: &'a (dyn Fn(&FetchEvent<'_>) + Send + Sync),
}

impl std::fmt::Debug for FetchRun<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchRun")
            .field("jobs", &self.jobs)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// Fetches every image of `wanted` into the cache (see the module's documentation).
    pub async fn fetch_all(&self, wanted: &[Wanted], run: &FetchRun<'_>) -> FetchReport {
        let mut seen = HashSet::new();
        let wanted: Vec<&Wanted> = wanted.iter().filter(|w| seen.insert(*w)).collect();
        let sources: Vec<Vec<Endpoint>> =
            wanted.iter().map(|w| (run.sources)(&w.reference)).collect();
        let all: Vec<Endpoint> = sources.iter().flatten().cloned().collect();
        let answering = self.transport().answering(&all, run.probe_timeout).await;
        let places = Arc::new(tokio::sync::Semaphore::new(run.jobs.max(1)));
        let deadline = run.deadline.map(|d| tokio::time::Instant::now() + d);
        let results: Vec<Option<FetchResult>> = stream::iter(wanted.iter().zip(&sources))
            .map(|(w, sources)| {
                let places = Arc::clone(&places);
                let answers = sources.iter().any(|e| answering.contains(&e.base));
                async move {
                    let past_deadline = async {
                        match deadline {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    };
                    let started = Instant::now();
                    let result = tokio::select! {
                        biased;
                        () = run.cancel.cancelled() => return None,
                        () = past_deadline => FetchResult {
                            wanted: (*w).clone(),
                            outcome: Err(FetchError::Deadline {
                                image: w.reference.clone(),
                                limit: run.deadline.unwrap_or_default(),
                            }),
                            attempts: 1,
                            elapsed_ms: millis(started.elapsed()),
                            bytes: 0,
                        },
                        r = self.fetch_one(w, sources, answers, places, run) => r,
                    };
                    (run.events)(&FetchEvent::Finished(&result));
                    Some(result)
                }
            })
            // Every image is under way at once; the places bound its requests.
            .buffered(usize::MAX)
            .collect()
            .await;
        FetchReport {
            interrupted: run.cancel.is_cancelled(),
            images: results.into_iter().flatten().collect(),
            endpoints: self.transport().stats().snapshot(),
        }
    }

    async fn fetch_one(
        &self,
        wanted: &Wanted,
        sources: &[Endpoint],
        answers: bool,
        places: Arc<tokio::sync::Semaphore>,
        run: &FetchRun<'_>,
    ) -> FetchResult {
        let started = Instant::now();
        if !answers {
            return FetchResult {
                wanted: wanted.clone(),
                outcome: Err(FetchError::Unanswered {
                    image: wanted.reference.clone(),
                    sources: sources.iter().map(|e| e.label.clone()).collect(),
                }),
                attempts: 1,
                elapsed_ms: millis(started.elapsed()),
                bytes: 0,
            };
        }
        (run.events)(&FetchEvent::Started {
            image: wanted,
            source: &sources[0].host,
        });
        let received = AtomicU64::new(0);
        let served_tries = AtomicU32::new(1);
        let failed_tries = AtomicU32::new(1);
        let progress = |n: u64| {
            let now = received.fetch_add(n, Ordering::Relaxed) + n;
            (run.events)(&FetchEvent::Bytes {
                image: wanted,
                received: now,
            });
        };
        let retried = |r: &Retry<'_>| {
            failed_tries.fetch_max(r.tries, Ordering::Relaxed);
            (run.events)(&FetchEvent::Retried {
                image: wanted,
                retry: r,
                attempt: r.tries,
            });
        };
        let served = |tries: u32| {
            served_tries.fetch_max(tries, Ordering::Relaxed);
        };
        let slot = Slot::new(places);
        let watch = Watch {
            progress: &progress,
            retried: &retried,
            served: &served,
            slot: Some(&slot),
        };
        let outcome = self.fetch(wanted, sources, watch).await;
        let attempts = if outcome.is_ok() {
            served_tries.load(Ordering::Relaxed)
        } else {
            failed_tries.load(Ordering::Relaxed)
        };
        FetchResult {
            wanted: wanted.clone(),
            outcome,
            attempts,
            elapsed_ms: millis(started.elapsed()),
            bytes: received.load(Ordering::Relaxed),
        }
    }
}
