//! Prefetch: pulling every image a plan needs, through flaky networks.
//!
//! The daemon says what is present (per platform: one image-list call, or on the
//! containerd store with API 1.48+ one inspect per wanted image); the rest is pulled
//! with bounded concurrency (`jobs` images at once; an image waiting to retry holds
//! no slot), by one of two paths:
//!
//! - **registry-native** (`native.rs`), the default where drbuild reaches the image's
//!   registry or a mirror: drbuild resolves and downloads the image itself into its
//!   blob cache (resuming cut layers, verifying every blob) and hands it to the daemon:
//!   a daemon on this machine pulls it from drbuild's loopback registry
//!   ([`crate::deliver::handoff`]) while the layers still arrive; any other daemon gets
//!   a streamed `docker load` archive ([`crate::deliver::archive`]). Every failure is
//!   the endpoint's own answer.
//! - **through the daemon** (`daemon.rs`): `docker pull`, watched for stalls, with the
//!   daemon's words classified (and its mirror asked directly when the words hide it).
//!
//! Registry-native, every request goes through the run's
//! [`Transport`]: a failed request is retried on
//! its own (the image is not restarted), paced by its source's health, on the next
//! source when this one fails as a whole. Through the daemon each image has an attempt
//! budget and the wait before the next attempt comes from the same health. Either way a
//! source that keeps failing (not one answering `429`) is skipped for the rest of the
//! run (the breaker, keyed by host on both paths), and the whole run can be bounded
//! (`deadline`).
//!
//! May import: `vocab`, `support`, `config`, `resilience`, `registry`, `cache`, `fetch`, `deliver`,
//! `engine`.

mod daemon;
#[cfg(test)]
mod multipart_tests;
mod native;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cache::BlobCache;
use crate::config::Settings;
pub use crate::config::{Fallback, Via};
use crate::deliver::handoff::Handoff;
use crate::engine::{Engine, EngineError, ImageStore};
use crate::fetch::{EndpointStats, FetchEvent, FetchResult, FetchedImage, Fetcher};
use crate::registry::client::RegistryClient;
use crate::registry::credentials::Credentials;
use crate::registry::transport::Transport;
use crate::resilience::classify::{Classification, ErrorClass};
use crate::resilience::mirror::MirrorSet;
use crate::resilience::multipart::Multipart;
use crate::resilience::retry::RetryPolicy;
use crate::support::{millis, EventSink};
use crate::vocab::{ImageReference, Platform, Wanted};

/// How to prefetch.
#[derive(Debug, Clone)]
pub struct PrefetchOptions {
    /// Pulls at once through the daemon (default 4).
    pub jobs: usize,
    /// Images fetched at once on the registry-native path (default: `jobs` when
    /// given, else the connection budget; see [`Settings::registry_pull_jobs`]).
    pub registry_jobs: usize,
    /// The retry budget of each image.
    pub retry: RetryPolicy,
    /// Cancel and retry a pull that reports no progress for this long (default 30 s).
    pub stall_timeout: Duration,
    /// Pull even the images that are present (to refresh them).
    pub always_pull: bool,
    /// Mirrors to fall back to, by registry.
    pub mirrors: MirrorSet,
    /// The daemon's own registry mirrors (`docker info`), as URLs. The registry-native
    /// path uses them first for Docker Hub images, as the daemon does; behind them a
    /// daemon pull's Docker Hub error is the daemon's fallback after a mirror fault.
    pub daemon_mirrors: Vec<String>,
    /// Consecutive failures after which a source is skipped for the rest of the run.
    pub breaker_threshold: u32,
    /// Time limit of a direct question to a mirror.
    pub probe_timeout: Duration,
    /// Which path pulls.
    pub via: Via,
    /// Whether to fall back to the next source.
    pub fallback: Fallback,
    /// The blob cache of the registry-native path (default: the XDG cache directory).
    pub cache_dir: Option<PathBuf>,
    /// A hard bound on the whole run, enforced mid-download.
    pub deadline: Option<Duration>,
    /// Send credentials from docker's config to registries.
    pub credentials: bool,
    /// Hand fetched images to a daemon on this machine through a registry of drbuild's
    /// on 127.0.0.1, which the daemon pulls from (about twice as fast as loading them);
    /// `false` always streams a `docker load` archive instead.
    pub handoff: bool,
    /// How big blobs are fetched (ranged parts at once).
    pub multipart: Multipart,
    /// Requests on the wire to one registry or mirror at once.
    pub connections: usize,
}

impl Default for PrefetchOptions {
    fn default() -> Self {
        PrefetchOptions::from(&Settings::default())
    }
}

impl PrefetchOptions {
    /// The endpoints `image` comes from, in order (with `Fallback::Never`, the first).
    pub fn sources(&self, image: &ImageReference) -> Vec<crate::registry::client::Endpoint> {
        let mut all = crate::fetch::sources(image, &self.daemon_mirrors, &self.mirrors);
        if self.fallback == Fallback::Never {
            all.truncate(1);
        }
        all
    }

    /// A transport for registry requests with these options: docker's credentials
    /// (unless turned off), the stall timeout, the retry policy and breaker.
    pub fn transport(&self) -> Transport {
        let credentials = if self.credentials {
            Credentials::from_docker_config()
        } else {
            Credentials::none()
        };
        Transport::new(
            RegistryClient::new(credentials, self.stall_timeout),
            &self.retry,
            self.breaker_threshold,
        )
        .with_connections(self.connections)
    }

    /// A fetcher into `cache` with these options, its requests through `transport`.
    pub fn fetcher(&self, transport: Arc<Transport>, cache: BlobCache) -> Fetcher {
        Fetcher::new(transport, cache, self.stall_timeout).with_multipart(self.multipart)
    }
}

impl From<&Settings> for PrefetchOptions {
    /// The pull part of resolved settings (the daemon's mirrors are the caller's to add).
    fn from(settings: &Settings) -> Self {
        PrefetchOptions {
            jobs: settings.pull_jobs,
            registry_jobs: settings.registry_pull_jobs,
            retry: settings.pull_retry.clone(),
            stall_timeout: settings.stall_timeout,
            always_pull: false,
            mirrors: settings.mirrors.clone(),
            daemon_mirrors: Vec::new(),
            breaker_threshold: 5,
            probe_timeout: Duration::from_secs(5),
            via: settings.via,
            fallback: settings.fallback,
            cache_dir: settings.cache_dir.clone(),
            deadline: settings.deadline,
            credentials: settings.credentials,
            handoff: true,
            multipart: settings.multipart,
            connections: settings.connections,
        }
    }
}

/// What became of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageStatus {
    /// Pulled in this run.
    Pulled,
    /// Already there; nothing to do.
    Present,
    /// Not pulled.
    Failed,
}

/// One image's outcome (for one platform).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageResult {
    /// The image.
    pub reference: ImageReference,
    /// The platform it was wanted for (`None`: the daemon's own).
    pub platform: Option<Platform>,
    /// What became of it.
    pub status: ImageStatus,
    /// Pull attempts made (0 when present).
    pub attempts: u32,
    /// Where it came from: its own registry (`docker.io`) or a mirror's host.
    pub source: Option<String>,
    /// Time spent on it.
    pub elapsed_ms: u64,
    /// Bytes received for it (0 when it all came from the cache or was present).
    pub bytes: u64,
    /// Downloads of its blobs continued after a cut.
    pub resumes: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// The class of the last error.
    pub error_class: Option<ErrorClass>,
}

/// Totals of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PrefetchSummary {
    /// Images asked for.
    pub total: usize,
    /// Pulled in this run.
    pub pulled: usize,
    /// Already present.
    pub present: usize,
    /// Not pulled.
    pub failed: usize,
    /// Attempts beyond each image's first.
    pub retries: u64,
    /// Wall time of the run.
    pub elapsed_ms: u64,
}

/// The outcome of a run: every image, totals, and what each endpoint did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PrefetchReport {
    /// One result per image, in the order asked.
    pub images: Vec<ImageResult>,
    /// Totals.
    pub summary: PrefetchSummary,
    /// Requests, bytes, resumes and faults of each registry endpoint the
    /// registry-native path used.
    pub endpoints: Vec<EndpointStats>,
    /// The run was cancelled; unfinished images are `failed` with error `interrupted`.
    #[serde(skip)]
    pub interrupted: bool,
    /// The images the registry-native path put in the cache, for a bundle.
    #[serde(skip)]
    pub fetched: Vec<FetchedImage>,
}

impl ImageResult {
    /// The result of an image a daemon-free fetch brought into the cache (`pulled`
    /// there means fetched), so that `export` and `sync` report it as `prefetch` does.
    pub fn from_fetch(r: &FetchResult) -> Self {
        let (status, source, resumes, error, error_class) = match &r.outcome {
            Ok(image) => (
                ImageStatus::Pulled,
                Some(image.source.clone()),
                image.resumes,
                None,
                None,
            ),
            Err(e) => (
                ImageStatus::Failed,
                None,
                0,
                Some(format!("failed to fetch `{}`: {e}", r.wanted.reference)),
                Some(e.class()),
            ),
        };
        ImageResult {
            attempts: r.attempts,
            source,
            elapsed_ms: r.elapsed_ms,
            bytes: r.bytes,
            resumes,
            error,
            error_class,
            ..ImageResult::new(&r.wanted, status)
        }
    }

    fn new(wanted: &Wanted, status: ImageStatus) -> Self {
        ImageResult {
            reference: wanted.reference.clone(),
            platform: wanted.platform.clone(),
            status,
            attempts: 0,
            source: None,
            elapsed_ms: 0,
            bytes: 0,
            resumes: 0,
            error: None,
            error_class: None,
        }
    }
}

impl PrefetchReport {
    /// Whether every image is present now.
    pub fn is_success(&self) -> bool {
        self.summary.failed == 0 && !self.interrupted
    }

    /// Every image of `wanted` failed for one reason (its daemon cannot be reached).
    pub fn failed(wanted: &[Wanted], error: &str) -> Self {
        let images: Vec<ImageResult> = wanted
            .iter()
            .map(|w| ImageResult {
                error: Some(error.to_owned()),
                error_class: Some(ErrorClass::Transient),
                ..ImageResult::new(w, ImageStatus::Failed)
            })
            .collect();
        PrefetchReport {
            summary: PrefetchSummary {
                total: images.len(),
                failed: images.len(),
                ..PrefetchSummary::default()
            },
            images,
            ..PrefetchReport::default()
        }
    }
}

/// Something that happened during a run, for progress displays.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PrefetchEvent {
    /// The image is already present.
    Present {
        /// The image and its platform.
        image: Wanted,
    },
    /// An attempt starts.
    Attempt {
        /// The image and its platform.
        image: Wanted,
        /// 1-based attempt number.
        attempt: u32,
        /// Where from.
        source: String,
    },
    /// Bytes downloaded so far, over all layers.
    Progress {
        /// The image and its platform.
        image: Wanted,
        /// Bytes done.
        current: u64,
        /// Bytes in all (as far as known; 0 when not known).
        total: u64,
    },
    /// An attempt failed.
    AttemptFailed {
        /// The image and its platform.
        image: Wanted,
        /// 1-based attempt number.
        attempt: u32,
        /// The error.
        error: String,
        /// Its class.
        class: ErrorClass,
        /// When the next attempt starts; `None` when this was the last.
        retry_in: Option<Duration>,
    },
    /// A source failed so often that it is skipped for the rest of the run.
    SourceSkipped {
        /// The registry or mirror.
        source: String,
    },
    /// The image is done.
    Finished(ImageResult),
}

impl PrefetchEvent {
    /// What a daemon-free fetch's event stands for, so that its progress shows as a
    /// prefetch's does.
    pub fn from_fetch(event: &FetchEvent<'_>) -> Self {
        match event {
            FetchEvent::Started { image, source } => PrefetchEvent::Attempt {
                image: (*image).clone(),
                attempt: 1,
                source: (*source).to_owned(),
            },
            FetchEvent::Bytes { image, received } => PrefetchEvent::Progress {
                image: (*image).clone(),
                current: *received,
                total: 0,
            },
            FetchEvent::Retried {
                image,
                retry,
                attempt,
            } => PrefetchEvent::AttemptFailed {
                image: (*image).clone(),
                attempt: *attempt,
                error: retry.error.to_string(),
                class: retry.error.class(),
                retry_in: retry.after,
            },
            FetchEvent::Finished(r) => PrefetchEvent::Finished(ImageResult::from_fetch(r)),
        }
    }
}

/// A successful attempt.
#[derive(Debug)]
struct Pulled {
    source: String,
    bytes: u64,
    resumes: u64,
    /// Tries it took (registry-native: the most one request made at one source).
    attempts: u32,
    /// What the registry-native path fetched.
    fetched: Option<FetchedImage>,
}

/// A failed attempt, whichever path.
#[derive(Debug)]
struct Failed {
    /// What happened, with the endpoint or the daemon's words.
    message: String,
    classification: Classification,
    /// The source whose health the failure counts against.
    source: String,
    /// A DNS failure for Docker Hub that the daemon's mirrors explain (full budget).
    explained_by_mirror: bool,
    bytes: u64,
    resumes: u64,
    /// Tries it took (registry-native: the most one request made at one source).
    attempts: u32,
    /// Whether another attempt of the image may help (registry-native: only a
    /// delivery the daemon refused; a fetch's requests have spent their budgets).
    again: bool,
}

/// Pulls images resiliently through an [`Engine`].
///
/// ```no_run
/// use docker_resilience::vocab::Wanted;
/// use docker_resilience::{DockerEngine, ImageReference, PrefetchOptions, Prefetcher};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = DockerEngine::connect().await?;
/// let images = vec![Wanted::any_platform(ImageReference::parse("ubuntu:22.04")?)];
/// let report = Prefetcher::new(engine, PrefetchOptions::default())
///     .on_event(|event| eprintln!("{event:?}"))
///     .run(&images)
///     .await?;
/// assert!(report.is_success());
/// # Ok(())
/// # }
/// ```
pub struct Prefetcher<E> {
    engine: Arc<E>,
    options: PrefetchOptions,
    events: EventSink<PrefetchEvent>,
    cancel: CancellationToken,
    /// Every registry request of the run goes through it (health, breaker, statistics).
    transport: Arc<Transport>,
    /// The registry-native path's fetcher, made on first use (it opens the cache).
    fetcher: tokio::sync::OnceCell<Result<Arc<Fetcher>, String>>,
    /// Fetched images, kept for the report.
    fetched: Mutex<Vec<FetchedImage>>,
    /// The loopback registry a local daemon takes fetched images from (started on
    /// first use; `None` where the daemon is elsewhere or cannot reach it).
    handoff: tokio::sync::OnceCell<Option<Handoff>>,
    /// Set when the daemon could not reach the handoff: images are loaded instead.
    handoff_unreachable: std::sync::atomic::AtomicBool,
    /// Attempts in progress at once (`jobs`); an image waiting to retry holds none.
    slots: Arc<tokio::sync::Semaphore>,
    /// Places of images fetched registry-native (`registry_jobs`).
    registry_slots: Arc<tokio::sync::Semaphore>,
    /// Where the daemon keeps images (known once the run asked what is present).
    store: std::sync::OnceLock<ImageStore>,
}

impl<E> std::fmt::Debug for Prefetcher<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefetcher")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<E: Engine> Prefetcher<E> {
    /// A prefetcher pulling through `engine`.
    pub fn new(engine: E, options: PrefetchOptions) -> Self {
        Self::with_shared_engine(Arc::new(engine), options)
    }

    /// A prefetcher sharing an engine with other work.
    pub fn with_shared_engine(engine: Arc<E>, options: PrefetchOptions) -> Self {
        let slots = Arc::new(tokio::sync::Semaphore::new(options.jobs.max(1)));
        let registry_slots = Arc::new(tokio::sync::Semaphore::new(options.registry_jobs.max(1)));
        let transport = Arc::new(options.transport());
        Prefetcher {
            engine,
            transport,
            options,
            events: EventSink::none(),
            cancel: CancellationToken::new(),
            fetcher: tokio::sync::OnceCell::new(),
            fetched: Mutex::new(Vec::new()),
            handoff: tokio::sync::OnceCell::new(),
            handoff_unreachable: std::sync::atomic::AtomicBool::new(false),
            slots,
            registry_slots,
            store: std::sync::OnceLock::new(),
        }
    }

    /// Calls `sink` with every [`PrefetchEvent`] (from the pulling tasks; keep it quick).
    pub fn on_event(mut self, sink: impl Fn(&PrefetchEvent) + Send + Sync + 'static) -> Self {
        self.events = EventSink::new(sink);
        self
    }

    /// Stops the run when `token` is cancelled: in-flight pulls are dropped (which
    /// cancels them in the daemon; a download keeps what it got for the next run) and
    /// the report says what was done.
    pub fn cancel_on(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    fn emit(&self, event: PrefetchEvent) {
        self.events.emit(&event);
    }

    /// The registry-native fetcher (its cache opened on first use).
    async fn fetcher(&self) -> Result<&Fetcher, String> {
        self.fetcher
            .get_or_init(|| async {
                let dir = self
                    .options
                    .cache_dir
                    .clone()
                    .unwrap_or_else(BlobCache::default_dir);
                let cache = BlobCache::open(&dir).map_err(|e| e.to_string())?;
                Ok(Arc::new(
                    self.options.fetcher(Arc::clone(&self.transport), cache),
                ))
            })
            .await
            .as_ref()
            .map(|f| f.as_ref())
            .map_err(Clone::clone)
    }

    /// Shares `other`'s fetcher, source health and statistics: prefetching into
    /// several daemons at once fetches each blob once, and a source's rate limit or
    /// outage counts for all of them.
    pub async fn sharing_fetch_with<F: Engine>(mut self, other: &Prefetcher<F>) -> Self {
        let shared = other.fetcher().await.is_ok();
        self.transport = Arc::clone(&other.transport);
        if shared {
            if let Some(Ok(fetcher)) = other.fetcher.get() {
                self.fetcher = tokio::sync::OnceCell::new_with(Some(Ok(Arc::clone(fetcher))));
            }
        }
        self
    }

    /// Pulls every image of `wanted` that is not present for its platform. Fails only
    /// when the engine cannot list images (the daemon is unreachable); pull failures are
    /// in the report.
    pub async fn run(&self, wanted: &[Wanted]) -> Result<PrefetchReport, EngineError> {
        let started = Instant::now();
        let deadline = self
            .options
            .deadline
            .map(|d| tokio::time::Instant::now() + d);
        let mut seen = HashSet::new();
        let wanted: Vec<&Wanted> = wanted.iter().filter(|w| seen.insert(*w)).collect();
        let references: Vec<ImageReference> = wanted.iter().map(|w| w.reference.clone()).collect();
        let present = self.engine.present_images(&references).await?;
        let _ = self.store.set(present.store());
        let kept = one_platform_per_tag(&wanted, present.store());

        let mut results: Vec<Option<ImageResult>> = vec![None; wanted.len()];
        let mut to_pull = Vec::new();
        for (i, w) in wanted.iter().enumerate() {
            if let Some(Conflict { kept, platforms }) = kept
                .get(&w.reference)
                .filter(|c| Some(&c.kept) != w.platform.as_ref())
            {
                let mut result = ImageResult::new(w, ImageStatus::Failed);
                result.error = Some(format!(
                    "not pulled: `{}` is needed for {}, and the daemon's image store (a graph driver) keeps one platform per tag: it keeps {kept}; use the containerd image store (`\"features\": {{\"containerd-snapshotter\": true}}` in daemon.json) to keep them all",
                    w.reference,
                    platforms.iter().map(ToString::to_string).collect::<Vec<_>>().join(" and ")
                ));
                result.error_class = Some(ErrorClass::Permanent);
                self.emit(PrefetchEvent::Finished(result.clone()));
                results[i] = Some(result);
            } else if present.contains_for(&w.reference, w.platform.as_ref())
                && !self.options.always_pull
            {
                let result = ImageResult::new(w, ImageStatus::Present);
                self.emit(PrefetchEvent::Present {
                    image: (*w).clone(),
                });
                self.emit(PrefetchEvent::Finished(result.clone()));
                results[i] = Some(result);
            } else {
                to_pull.push(i);
            }
        }

        let native = self
            .native_reach(to_pull.iter().map(|i| &wanted[*i].reference))
            .await;
        // Names a killed run's handoff left in the daemon are removed while this run's
        // images arrive (listing the daemon's names takes 100-200 ms on the containerd
        // store with a few dozen images: not a wait at the end).
        let may_hand_off = self.options.handoff
            && self.engine.on_this_machine()
            && native.values().any(|native| *native);
        let stale = async {
            if may_hand_off {
                self.remove_stale_handoff_names().await;
            }
        };
        let cancel = self.cancel.clone();
        let pulls = stream::iter(to_pull)
            .map(|i| {
                let cancel = cancel.clone();
                let w = wanted[i];
                let native = native.get(&w.reference).copied().unwrap_or(false);
                async move {
                    let past_deadline = async {
                        match deadline {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => (i, None),
                        () = past_deadline => (i, Some(self.deadline_passed(w))),
                        r = self.pull_one(w, native) => (i, Some(r)),
                    }
                }
            })
            // Every image is under way at once; `slots` bounds the attempts.
            .buffer_unordered(usize::MAX)
            .collect::<Vec<(usize, Option<ImageResult>)>>();
        let (pulled, ()) = tokio::join!(pulls, stale);
        for (i, result) in pulled {
            results[i] = result;
        }
        if let Some(Some(handoff)) = self.handoff.get() {
            // Names of the handoff's that an interrupted pull left in the daemon.
            let names = handoff.unsettled();
            for name in &names {
                if let Ok(name) = name.parse() {
                    let _ = self.engine.untag(&name).await;
                }
            }
            handoff.settled(&names);
        }

        let interrupted = self.cancel.is_cancelled();
        let images: Vec<ImageResult> = results
            .into_iter()
            .zip(wanted)
            .map(|(r, w)| {
                r.unwrap_or_else(|| ImageResult {
                    error: Some("interrupted".to_owned()),
                    ..ImageResult::new(w, ImageStatus::Failed)
                })
            })
            .collect();
        let count = |s: ImageStatus| images.iter().filter(|r| r.status == s).count();
        let summary = PrefetchSummary {
            total: images.len(),
            pulled: count(ImageStatus::Pulled),
            present: count(ImageStatus::Present),
            failed: count(ImageStatus::Failed),
            retries: images
                .iter()
                .map(|r| u64::from(r.attempts.saturating_sub(1)))
                .sum(),
            elapsed_ms: millis(started.elapsed()),
        };
        Ok(PrefetchReport {
            images,
            summary,
            endpoints: self.transport.stats().snapshot(),
            interrupted,
            fetched: std::mem::take(&mut *crate::support::lock(&self.fetched)),
        })
    }

    /// Removes the names a killed run's handoff left in the daemon: names in the
    /// handoff's namespace whose port no longer listens (a live one is this run's or
    /// another's).
    async fn remove_stale_handoff_names(&self) {
        let names = match self.engine.names().await {
            Ok(names) => names,
            Err(why) => {
                tracing::debug!("listing the daemon's names for stale handoff names: {why}");
                return;
            }
        };
        let stale = crate::deliver::handoff::stale_names(names.iter().map(String::as_str));
        let mut ports: Vec<u16> = stale.iter().map(|(port, _)| *port).collect();
        ports.sort_unstable();
        ports.dedup();
        for port in ports {
            if crate::deliver::handoff::listening(port).await {
                continue;
            }
            let mut removed = 0;
            for (_, name) in stale.iter().filter(|(p, _)| *p == port) {
                let Ok(reference) = name.parse::<ImageReference>() else {
                    continue;
                };
                match self.engine.untag(&reference).await {
                    Ok(()) => removed += 1,
                    Err(why) => tracing::debug!("removing stale handoff name {name}: {why}"),
                }
            }
            tracing::info!(
                "removed {removed} name(s) an interrupted run left in the daemon (127.0.0.1:{port}/{}/…)",
                crate::deliver::handoff::NAMESPACE
            );
        }
    }

    fn deadline_passed(&self, wanted: &Wanted) -> ImageResult {
        let limit = self.options.deadline.unwrap_or_default();
        self.finish(ImageResult {
            error: Some(format!(
                "the run's deadline ({}) passed before `{}` was pulled",
                humantime::format_duration(limit),
                wanted.reference
            )),
            error_class: Some(ErrorClass::Transient),
            ..ImageResult::new(wanted, ImageStatus::Failed)
        })
    }

    /// For each image, whether the registry-native path pulls it: always with
    /// [`Via::Registry`], never with [`Via::Daemon`], and with [`Via::Auto`] when one of
    /// its sources answers.
    async fn native_reach<'a>(
        &self,
        images: impl Iterator<Item = &'a ImageReference>,
    ) -> HashMap<ImageReference, bool> {
        let images: Vec<&ImageReference> = images.collect();
        match self.options.via {
            Via::Daemon => images.into_iter().map(|i| (i.clone(), false)).collect(),
            Via::Registry => images.into_iter().map(|i| (i.clone(), true)).collect(),
            Via::Auto => self.native_reach_probe(images.into_iter()).await,
        }
    }

    /// For each image, whether one of its sources answers `GET /v2/` (each asked once,
    /// all at once).
    async fn native_reach_probe<'a>(
        &self,
        images: impl Iterator<Item = &'a ImageReference>,
    ) -> HashMap<ImageReference, bool> {
        let images: Vec<&ImageReference> = images.collect();
        let sources: HashMap<ImageReference, Vec<crate::registry::client::Endpoint>> = images
            .iter()
            .map(|i| ((*i).clone(), self.sources(i)))
            .collect();
        let all: Vec<_> = sources.values().flatten().cloned().collect();
        let answers = self
            .transport
            .answering(&all, self.options.probe_timeout)
            .await;
        sources
            .into_iter()
            .map(|(image, list)| {
                let up = list.iter().any(|e| answers.contains(&e.base));
                if !up {
                    tracing::info!(
                        "no registry or mirror of {image} answers drbuild: the daemon pulls it"
                    );
                }
                (image, up)
            })
            .collect()
    }

    /// The endpoints `image` comes from, in order (with `Fallback::Never`, the first).
    fn sources(&self, image: &ImageReference) -> Vec<crate::registry::client::Endpoint> {
        self.options.sources(image)
    }

    /// One image, attempt after attempt, until it is there, its budget is spent or an
    /// error is permanent. Registry-native, an attempt retries each failed request on
    /// its own (see [`Transport`]); only a delivery the daemon refused makes another.
    async fn pull_one(&self, wanted: &Wanted, native: bool) -> ImageResult {
        let started = Instant::now();
        let mut schedule = self.options.retry.schedule();
        let mut turn = 0usize;
        let (mut bytes, mut resumes) = (0u64, 0u64);
        // Tries so far (registry-native: the most one request made at one source).
        let mut tries = 0u32;
        loop {
            schedule.begin_attempt();
            let outcome = if native {
                // Its requests take the image's place among the jobs while on the wire.
                self.native_attempt(wanted, tries + 1).await
            } else {
                let _slot = self.slots.acquire().await;
                self.daemon_attempt(wanted, tries + 1, &mut turn).await
            };
            let failed = match outcome {
                Ok(pulled) => {
                    tries = pulled.attempts.max(tries + 1);
                    if !native {
                        self.transport.breaker().success(&pulled.source);
                    }
                    if let Some(fetched) = pulled.fetched {
                        crate::support::lock(&self.fetched).push(fetched);
                    }
                    return self.finish(ImageResult {
                        attempts: tries,
                        source: Some(pulled.source),
                        elapsed_ms: millis(started.elapsed()),
                        bytes: bytes + pulled.bytes,
                        resumes: resumes + pulled.resumes,
                        ..ImageResult::new(wanted, ImageStatus::Pulled)
                    });
                }
                Err(failed) => failed,
            };
            tries = failed.attempts.max(tries + 1);
            bytes += failed.bytes;
            resumes += failed.resumes;
            let class = failed.classification.class;
            // The wait comes from the source's health; the budget from the image's.
            let retry_in = failed.again.then(|| {
                self.transport.health().failure(
                    &failed.source,
                    class,
                    failed.classification.retry_after,
                )
            });
            let retry_in = retry_in.filter(|delay| {
                schedule.next_attempt(&failed.classification, failed.explained_by_mirror, *delay)
            });
            self.emit(PrefetchEvent::AttemptFailed {
                image: wanted.clone(),
                attempt: tries,
                error: failed.message.clone(),
                class,
                retry_in,
            });
            match retry_in {
                Some(delay) => tokio::time::sleep(delay).await,
                None => {
                    let count = if tries == 1 {
                        "1 attempt".to_owned()
                    } else {
                        format!("{tries} attempts")
                    };
                    let what = match &wanted.platform {
                        Some(p) => format!("`{}` for {p}", wanted.reference),
                        None => format!("`{}`", wanted.reference),
                    };
                    return self.finish(ImageResult {
                        attempts: tries,
                        source: Some(failed.source),
                        elapsed_ms: millis(started.elapsed()),
                        bytes,
                        resumes,
                        error: Some(format!(
                            "failed to pull {what} after {count}: {}",
                            failed.message
                        )),
                        error_class: Some(class),
                        ..ImageResult::new(wanted, ImageStatus::Failed)
                    });
                }
            }
        }
    }

    fn finish(&self, result: ImageResult) -> ImageResult {
        self.emit(PrefetchEvent::Finished(result.clone()));
        result
    }
}

/// A reference wanted for several platforms on a store that keeps one per tag.
struct Conflict {
    /// The platform pulled: the host's when wanted, else the first.
    kept: Platform,
    /// All the platforms wanted.
    platforms: Vec<Platform>,
}

/// On a store that keeps one platform per tag, the references wanted for several:
/// which platform each keeps.
fn one_platform_per_tag(
    wanted: &[&Wanted],
    store: ImageStore,
) -> HashMap<ImageReference, Conflict> {
    let mut by_reference: HashMap<&ImageReference, Vec<Platform>> = HashMap::new();
    for w in wanted {
        if let Some(p) = &w.platform {
            by_reference
                .entry(&w.reference)
                .or_default()
                .push(p.clone());
        }
    }
    if store.holds_many_platforms() {
        return HashMap::new();
    }
    let host = Platform::host();
    by_reference
        .into_iter()
        .filter(|(_, platforms)| platforms.len() > 1)
        .map(|(r, mut platforms)| {
            platforms.sort();
            platforms.dedup();
            let kept = if platforms.contains(&host) {
                host.clone()
            } else {
                platforms[0].clone()
            };
            (r.clone(), Conflict { kept, platforms })
        })
        .collect()
}

/// Progress of one image's attempt: the bytes so far, reported as events.
struct ByteCounter<'a, E> {
    prefetcher: &'a Prefetcher<E>,
    wanted: &'a Wanted,
    received: Mutex<u64>,
}

impl<E: Engine> ByteCounter<'_, E> {
    fn add(&self, n: u64) {
        let current = {
            let mut r = crate::support::lock(&self.received);
            *r += n;
            *r
        };
        self.prefetcher.emit(PrefetchEvent::Progress {
            image: self.wanted.clone(),
            current,
            total: 0,
        });
    }
}
#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::engine::{PresentImages, PullEvent};
    use futures_util::stream::BoxStream;

    /// A scripted engine: each pull of a name pops the next outcome for it.
    #[derive(Default)]
    struct FakeEngine {
        present: Vec<String>,
        /// Names present for one platform, and the store.
        present_for: Vec<(String, &'static str)>,
        store: ImageStore,
        script: Mutex<HashMap<String, Vec<Outcome>>>,
        pulls: Mutex<Vec<String>>,
        tags: Mutex<Vec<(String, String)>>,
    }

    #[derive(Clone)]
    enum Outcome {
        Ok,
        Fail(&'static str),
        Stall,
    }

    impl FakeEngine {
        fn script(self, name: &str, outcomes: Vec<Outcome>) -> Self {
            self.script
                .lock()
                .unwrap()
                .insert(ImageReference::parse(name).unwrap().to_string(), outcomes);
            self
        }
    }

    impl Engine for FakeEngine {
        async fn present_images(
            &self,
            _wanted: &[ImageReference],
        ) -> Result<PresentImages, EngineError> {
            let mut present = PresentImages::from_names(&self.present).in_store(self.store);
            for (name, platform) in &self.present_for {
                present = present.with_platforms([name], &[platform.parse().unwrap()]);
            }
            Ok(present)
        }

        async fn pull(
            &self,
            image: &ImageReference,
            platform: Option<&Platform>,
        ) -> BoxStream<'static, Result<PullEvent, EngineError>> {
            let name = image.to_string();
            let pulled = match platform {
                Some(p) => format!("{name} {p}"),
                None => name.clone(),
            };
            self.pulls.lock().unwrap().push(pulled);
            let next = {
                let mut script = self.script.lock().unwrap();
                let list = script.entry(name).or_default();
                if list.is_empty() {
                    Outcome::Ok
                } else {
                    list.remove(0)
                }
            };
            match next {
                Outcome::Ok => stream::iter(vec![Ok(PullEvent {
                    layer: Some("l1".into()),
                    status: "Downloading".into(),
                    current: Some(5),
                    total: Some(10),
                })])
                .boxed(),
                Outcome::Fail(m) => stream::iter(vec![Err(EngineError::Daemon {
                    status: None,
                    message: m.into(),
                })])
                .boxed(),
                Outcome::Stall => stream::pending().boxed(),
            }
        }

        async fn tag(
            &self,
            source: &ImageReference,
            target: &ImageReference,
        ) -> Result<(), EngineError> {
            self.tags
                .lock()
                .unwrap()
                .push((source.to_string(), target.to_string()));
            Ok(())
        }

        async fn untag(&self, _image: &ImageReference) -> Result<(), EngineError> {
            Ok(())
        }

        async fn load(
            &self,
            _archive: crate::engine::ContextStream,
        ) -> Result<Vec<String>, EngineError> {
            Ok(Vec::new())
        }
    }

    fn refs(names: &[&str]) -> Vec<Wanted> {
        names
            .iter()
            .map(|n| Wanted::any_platform(ImageReference::parse(n).unwrap()))
            .collect()
    }

    fn for_platforms(name: &str, platforms: &[&str]) -> Vec<Wanted> {
        platforms
            .iter()
            .map(|p| Wanted {
                reference: ImageReference::parse(name).unwrap(),
                platform: Some(p.parse().unwrap()),
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn presence_and_pulls_are_per_platform() {
        // alpine is present for arm64 only; the tree needs amd64 (from a graph-driver
        // store's point of view: one platform per tag, so amd64 is the one pulled).
        let engine = Arc::new(FakeEngine {
            present_for: vec![("alpine:3.18".into(), "linux/arm64")],
            ..FakeEngine::default()
        });
        let report = Prefetcher::with_shared_engine(engine.clone(), quick())
            .run(&for_platforms("alpine:3.18", &["linux/amd64"]))
            .await
            .unwrap();
        assert_eq!(report.images[0].status, ImageStatus::Pulled);
        assert_eq!(
            report.images[0].platform.as_ref().unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            engine.pulls.lock().unwrap().as_slice(),
            ["docker.io/library/alpine:3.18 linux/amd64"]
        );
        let engine = FakeEngine {
            present_for: vec![("alpine:3.18".into(), "linux/arm64")],
            ..FakeEngine::default()
        };
        let report = Prefetcher::new(engine, quick())
            .run(&for_platforms("alpine:3.18", &["linux/arm64"]))
            .await
            .unwrap();
        assert_eq!(report.images[0].status, ImageStatus::Present);
    }

    #[tokio::test(start_paused = true)]
    async fn two_platforms_of_one_tag_need_the_containerd_store() {
        let wanted = for_platforms("alpine:3.18", &["linux/arm64", "linux/amd64"]);
        // A graph driver keeps one platform per tag: one is pulled, the other is named.
        let graph = Arc::new(FakeEngine::default());
        let report = Prefetcher::with_shared_engine(graph.clone(), quick())
            .run(&wanted)
            .await
            .unwrap();
        assert_eq!(graph.pulls.lock().unwrap().len(), 1);
        let failed: Vec<_> = report
            .images
            .iter()
            .filter(|r| r.status == ImageStatus::Failed)
            .collect();
        assert_eq!(failed.len(), 1, "{report:?}");
        let error = failed[0].error.as_deref().unwrap();
        assert!(
            error.contains("is needed for linux/amd64 and linux/arm64")
                && error.contains("keeps one platform per tag")
                && error.contains("docker.io/library/alpine:3.18"),
            "{error}"
        );
        assert_eq!(failed[0].error_class, Some(ErrorClass::Permanent));
        // The containerd store keeps both: two pulls, both platforms.
        let containerd = Arc::new(FakeEngine {
            store: ImageStore::Containerd,
            ..FakeEngine::default()
        });
        let report = Prefetcher::with_shared_engine(containerd.clone(), quick())
            .run(&wanted)
            .await
            .unwrap();
        assert_eq!(report.summary.pulled, 2, "{report:?}");
        let mut pulls = containerd.pulls.lock().unwrap().clone();
        pulls.sort();
        assert_eq!(
            pulls,
            [
                "docker.io/library/alpine:3.18 linux/amd64",
                "docker.io/library/alpine:3.18 linux/arm64"
            ]
        );
    }

    /// Quick delays, through the (fake) daemon: unit tests send nothing to registries.
    #[tokio::test]
    async fn fallback_never_stays_on_the_image_s_own_registry() {
        let engine = Arc::new(
            FakeEngine::default().script("redis:7-alpine", vec![Outcome::Fail("EOF"); 10]),
        );
        let mut options = quick();
        options.retry.max_attempts = 3;
        options.fallback = Fallback::Never;
        options
            .mirrors
            .add_docker_hub("127.0.0.1:5000".parse().unwrap());
        let prefetcher = Prefetcher::with_shared_engine(engine.clone(), options);
        let report = prefetcher.run(&refs(&["redis:7-alpine"])).await.unwrap();
        let r = &report.images[0];
        assert_eq!(r.status, ImageStatus::Failed);
        assert_eq!(
            (r.attempts, r.source.as_deref()),
            (3, Some("registry-1.docker.io"))
        );
        assert!(
            engine.tags.lock().unwrap().is_empty(),
            "the mirror was never asked"
        );
        // The registry-native path likewise keeps the first of its sources (there the
        // mirrors come first, as the daemon tries its own).
        let image = ImageReference::parse("redis:7-alpine").unwrap();
        let hosts: Vec<String> = prefetcher
            .sources(&image)
            .into_iter()
            .map(|e| e.host)
            .collect();
        assert_eq!(hosts, ["127.0.0.1:5000"]);
    }

    fn quick() -> PrefetchOptions {
        PrefetchOptions {
            via: Via::Daemon,
            retry: RetryPolicy {
                jitter: false,
                ..RetryPolicy::quick()
            },
            ..PrefetchOptions::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_and_counts() {
        let engine = FakeEngine::default().script(
            "ubuntu:22.04",
            vec![
                Outcome::Fail("EOF"),
                Outcome::Fail("received unexpected HTTP status: 500 Internal Server Error"),
                Outcome::Ok,
            ],
        );
        let engine = FakeEngine {
            present: vec!["redis:7-alpine".into()],
            ..engine
        };
        let report = Prefetcher::new(engine, quick())
            .run(&refs(&["ubuntu:22.04", "redis:7-alpine", "ubuntu:22.04"]))
            .await
            .unwrap();
        assert_eq!(report.summary.total, 2);
        assert_eq!(report.summary.pulled, 1);
        assert_eq!(report.summary.present, 1);
        assert_eq!(report.summary.retries, 2);
        assert_eq!(report.images[0].attempts, 3);
        assert_eq!(report.images[0].source.as_deref(), Some("docker.io"));
        assert!(report.is_success());
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_fails_in_one_attempt() {
        let engine = FakeEngine::default().script(
            "nope:1",
            vec![Outcome::Fail(
                "manifest for nope:1 not found: manifest unknown: manifest unknown",
            )],
        );
        let report = Prefetcher::new(engine, quick())
            .run(&refs(&["nope:1", "alpine"]))
            .await
            .unwrap();
        let r = &report.images[0];
        assert_eq!((r.status, r.attempts), (ImageStatus::Failed, 1));
        assert_eq!(r.error_class, Some(ErrorClass::Permanent));
        assert!(r.error.as_deref().unwrap().starts_with(
            "failed to pull `docker.io/library/nope:1` after 1 attempt: manifest for"
        ));
        assert_eq!(report.images[1].status, ImageStatus::Pulled);
        assert!(!report.is_success());
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_budget() {
        let engine = FakeEngine::default().script("alpine", vec![Outcome::Fail("EOF"); 20]);
        let mut options = quick();
        options.retry.max_attempts = 4;
        let report = Prefetcher::new(engine, options)
            .run(&refs(&["alpine"]))
            .await
            .unwrap();
        assert_eq!(report.images[0].attempts, 4);
        assert_eq!(report.images[0].error_class, Some(ErrorClass::Transient));
    }

    #[tokio::test(start_paused = true)]
    async fn stall_is_cancelled_and_retried() {
        let engine = FakeEngine::default().script("alpine", vec![Outcome::Stall, Outcome::Ok]);
        let mut options = quick();
        options.stall_timeout = Duration::from_secs(3);
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let report = Prefetcher::new(engine, options)
            .on_event(move |e| {
                if let PrefetchEvent::AttemptFailed { error, .. } = e {
                    sink.lock().unwrap().push(error.clone());
                }
            })
            .run(&refs(&["alpine"]))
            .await
            .unwrap();
        assert_eq!(report.images[0].attempts, 2);
        assert_eq!(
            events.lock().unwrap().as_slice(),
            ["stalled: no progress for 3s"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn falls_back_to_mirror_and_tags_own_name() {
        let engine = Arc::new(
            FakeEngine::default().script("redis:7-alpine", vec![Outcome::Fail("EOF"); 10]),
        );
        let mut options = quick();
        options
            .mirrors
            .add_docker_hub("127.0.0.1:5000".parse().unwrap());
        let report = Prefetcher::with_shared_engine(engine.clone(), options)
            .run(&refs(&["redis:7-alpine"]))
            .await
            .unwrap();
        let r = &report.images[0];
        assert_eq!(r.status, ImageStatus::Pulled);
        assert_eq!(
            (r.attempts, r.source.as_deref()),
            (2, Some("127.0.0.1:5000"))
        );
        assert_eq!(
            engine.tags.lock().unwrap().as_slice(),
            [(
                "127.0.0.1:5000/library/redis:7-alpine".to_owned(),
                "docker.io/library/redis:7-alpine".to_owned()
            )]
        );
    }

    /// Images that each fail once at docker.io with `failure`, then come from a mirror
    /// (one at a time, breaker threshold 3): how many pulls asked docker.io.
    async fn docker_io_tries(names: &[&str], failure: &'static str) -> usize {
        let mut engine = FakeEngine::default();
        for n in names {
            engine = engine.script(n, vec![Outcome::Fail(failure)]);
        }
        let engine = Arc::new(engine);
        let mut options = quick();
        options.jobs = 1;
        options.breaker_threshold = 3;
        options
            .mirrors
            .add_docker_hub("mirror.local".parse().unwrap());
        let report = Prefetcher::with_shared_engine(engine.clone(), options)
            .run(&refs(names))
            .await
            .unwrap();
        assert!(report.is_success());
        let pulls = engine.pulls.lock().unwrap();
        pulls.iter().filter(|p| p.starts_with("docker.io/")).count()
    }

    #[tokio::test(start_paused = true)]
    async fn dead_source_is_skipped_after_threshold() {
        let names = ["a:1", "b:1", "c:1", "d:1", "e:1", "f:1", "g:1", "h:1"];
        // docker.io fails for the first images, then is skipped: no more than 3 tries of it.
        assert_eq!(docker_io_tries(&names, "EOF").await, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limiting_source_is_not_skipped() {
        // A source answering 429 answers: it is paced, never skipped for a dead one.
        let names = ["a:1", "b:1", "c:1", "d:1", "e:1"];
        let failure = "toomanyrequests: You have reached your pull rate limit";
        // Every image asked docker.io first (then the mirror): it was never skipped.
        assert_eq!(docker_io_tries(&names, failure).await, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_concurrency() {
        struct Counting {
            inner: FakeEngine,
            now: Mutex<(usize, usize)>,
        }
        impl Engine for Counting {
            async fn present_images(
                &self,
                wanted: &[ImageReference],
            ) -> Result<PresentImages, EngineError> {
                self.inner.present_images(wanted).await
            }
            async fn pull(
                &self,
                image: &ImageReference,
                platform: Option<&Platform>,
            ) -> BoxStream<'static, Result<PullEvent, EngineError>> {
                {
                    let mut n = self.now.lock().unwrap();
                    n.0 += 1;
                    n.1 = n.1.max(n.0);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.now.lock().unwrap().0 -= 1;
                self.inner.pull(image, platform).await
            }
            async fn tag(&self, s: &ImageReference, t: &ImageReference) -> Result<(), EngineError> {
                self.inner.tag(s, t).await
            }
            async fn untag(&self, i: &ImageReference) -> Result<(), EngineError> {
                self.inner.untag(i).await
            }
            async fn load(
                &self,
                a: crate::engine::ContextStream,
            ) -> Result<Vec<String>, EngineError> {
                self.inner.load(a).await
            }
        }
        let engine = Arc::new(Counting {
            inner: FakeEngine::default(),
            now: Mutex::new((0, 0)),
        });
        let mut options = quick();
        options.jobs = 3;
        let names: Vec<String> = (0..10).map(|i| format!("img{i}:1")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let report = Prefetcher::with_shared_engine(engine.clone(), options)
            .run(&refs(&names))
            .await
            .unwrap();
        assert_eq!(report.summary.pulled, 10);
        assert_eq!(engine.now.lock().unwrap().1, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_reports_unfinished_as_interrupted() {
        let engine = FakeEngine::default().script("slow:1", vec![Outcome::Stall]);
        let token = CancellationToken::new();
        let canceller = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            canceller.cancel();
        });
        let report = Prefetcher::new(engine, quick())
            .cancel_on(token)
            .run(&refs(&["fast:1", "slow:1"]))
            .await
            .unwrap();
        assert!(report.interrupted);
        assert_eq!(report.images[0].status, ImageStatus::Pulled);
        assert_eq!(report.images[1].error.as_deref(), Some("interrupted"));
    }
}
