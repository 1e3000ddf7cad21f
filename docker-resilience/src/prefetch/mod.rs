//! Prefetch: pulling every image a plan needs, through flaky networks.
//!
//! One image-list call finds what is present; the rest is pulled with bounded
//! concurrency. Each image has its own retry schedule; every error is classified
//! (transient, rate limited, permanent); a pull that makes no progress for the stall
//! timeout is cancelled and retried; when an image's own registry fails, its mirrors
//! are tried in turn, and a source that keeps failing is skipped for the rest of the
//! run (circuit breaker).
//!
//! May import: `vocab`, `support`, `config`, `resilience`, `registry`, `engine`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::engine::{Engine, EngineError, ImageStore};
use crate::registry::{probe_client, probe_manifest, ProbeResult};
use crate::resilience::breaker::Breaker;
use crate::resilience::classify::{classify, ErrorClass};
use crate::resilience::mirror::{Mirror, MirrorSet};
use crate::resilience::retry::{Decision, RetryPolicy};
use crate::support::{millis, EventSink};
use crate::vocab::{ImageReference, Platform, Wanted};

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

/// How to prefetch.
#[derive(Debug, Clone)]
pub struct PrefetchOptions {
    /// Pulls at once (default 4).
    pub jobs: usize,
    /// The retry budget of each image.
    pub retry: RetryPolicy,
    /// Cancel and retry a pull that reports no progress for this long (default 30 s).
    pub stall_timeout: Duration,
    /// Pull even the images that are present (to refresh them).
    pub always_pull: bool,
    /// Mirrors to fall back to, by registry.
    pub mirrors: MirrorSet,
    /// The daemon's own registry mirrors (`docker info`), as URLs. With these, a
    /// Docker Hub DNS failure is the daemon's fallback after a mirror fault: it gets
    /// the full retry budget, and the mirrors are asked directly whether the image exists.
    pub daemon_mirrors: Vec<String>,
    /// Consecutive failures after which a source is skipped for the rest of the run.
    pub breaker_threshold: u32,
    /// Time limit of a direct question to a mirror.
    pub probe_timeout: Duration,
}

impl Default for PrefetchOptions {
    fn default() -> Self {
        PrefetchOptions::from(&Settings::default())
    }
}

impl From<&Settings> for PrefetchOptions {
    /// The pull part of resolved settings (the daemon's mirrors are the caller's to add).
    fn from(settings: &Settings) -> Self {
        PrefetchOptions {
            jobs: settings.pull_jobs,
            retry: settings.pull_retry.clone(),
            stall_timeout: settings.stall_timeout,
            always_pull: false,
            mirrors: settings.mirrors.clone(),
            daemon_mirrors: Vec::new(),
            breaker_threshold: 5,
            probe_timeout: Duration::from_secs(5),
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

/// The outcome of a run: every image, and totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PrefetchReport {
    /// One result per image, in the order asked.
    pub images: Vec<ImageResult>,
    /// Totals.
    pub summary: PrefetchSummary,
    /// The run was cancelled; unfinished images are `failed` with error `interrupted`.
    #[serde(skip)]
    pub interrupted: bool,
}

impl ImageResult {
    fn new(wanted: &Wanted, status: ImageStatus) -> Self {
        ImageResult {
            reference: wanted.reference.clone(),
            platform: wanted.platform.clone(),
            status,
            attempts: 0,
            source: None,
            elapsed_ms: 0,
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
        /// Bytes in all (as far as known).
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
    http: reqwest::Client,
    breaker: Breaker,
}

impl<E> std::fmt::Debug for Prefetcher<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefetcher")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Own(String),
    Mirror(Mirror),
}

impl Source {
    fn key(&self) -> String {
        match self {
            Source::Own(registry) => registry.clone(),
            Source::Mirror(m) => m.to_string(),
        }
    }
}

impl<E: Engine> Prefetcher<E> {
    /// A prefetcher pulling through `engine`.
    pub fn new(engine: E, options: PrefetchOptions) -> Self {
        Self::with_shared_engine(Arc::new(engine), options)
    }

    /// A prefetcher sharing an engine with other work.
    pub fn with_shared_engine(engine: Arc<E>, options: PrefetchOptions) -> Self {
        let http = probe_client(options.probe_timeout);
        Prefetcher {
            engine,
            breaker: Breaker::new(options.breaker_threshold),
            options,
            events: EventSink::none(),
            cancel: CancellationToken::new(),
            http,
        }
    }

    /// Calls `sink` with every [`PrefetchEvent`] (from the pulling tasks; keep it quick).
    pub fn on_event(mut self, sink: impl Fn(&PrefetchEvent) + Send + Sync + 'static) -> Self {
        self.events = EventSink::new(sink);
        self
    }

    /// Stops the run when `token` is cancelled: in-flight pulls are dropped (which
    /// cancels them in the daemon) and the report says what was done.
    pub fn cancel_on(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    fn emit(&self, event: PrefetchEvent) {
        self.events.emit(&event);
    }

    /// Pulls every image of `wanted` that is not present for its platform. Fails only
    /// when the engine cannot list images (the daemon is unreachable); pull failures are
    /// in the report.
    pub async fn run(&self, wanted: &[Wanted]) -> Result<PrefetchReport, EngineError> {
        let started = Instant::now();
        let mut seen = HashSet::new();
        let wanted: Vec<&Wanted> = wanted.iter().filter(|w| seen.insert(*w)).collect();
        let references: Vec<ImageReference> = wanted.iter().map(|w| w.reference.clone()).collect();
        let present = self.engine.present_images(&references).await?;
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

        let cancel = self.cancel.clone();
        let pulled: Vec<(usize, Option<ImageResult>)> = stream::iter(to_pull)
            .map(|i| {
                let cancel = cancel.clone();
                let w = wanted[i];
                async move {
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => (i, None),
                        r = self.pull_one(w) => (i, Some(r)),
                    }
                }
            })
            .buffer_unordered(self.options.jobs.max(1))
            .collect()
            .await;
        for (i, result) in pulled {
            results[i] = result;
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
            interrupted,
        })
    }

    async fn pull_one(&self, wanted: &Wanted) -> ImageResult {
        let image = &wanted.reference;
        let platform = wanted.platform.as_ref();
        let started = Instant::now();
        let mut schedule = self.options.retry.schedule();
        let sources: Vec<Source> = std::iter::once(Source::Own(image.registry().to_owned()))
            .chain(
                self.options
                    .mirrors
                    .for_image(image)
                    .iter()
                    .cloned()
                    .map(Source::Mirror),
            )
            .collect();
        let mut turn = 0usize;
        loop {
            let source = self.pick(&sources, &mut turn);
            let key = source.key();
            let attempt = schedule.begin_attempt();
            self.emit(PrefetchEvent::Attempt {
                image: wanted.clone(),
                attempt,
                source: key.clone(),
            });
            let outcome = match &source {
                Source::Own(_) => self.attempt(wanted, image).await,
                Source::Mirror(m) => match m.image_for(image) {
                    Ok(on_mirror) => self
                        .attempt(wanted, &on_mirror)
                        .await
                        .map(|()| Some(on_mirror)),
                    Err(e) => Err(EngineError::other(e.to_string())),
                }
                .map(|_| ()),
            };
            let outcome = match (outcome, &source) {
                (Ok(()), Source::Mirror(m)) => self.adopt_from_mirror(image, m).await,
                (other, _) => other,
            };
            let error = match outcome {
                Ok(()) => {
                    self.breaker.success(&key);
                    return self.finish(ImageResult {
                        attempts: attempt,
                        source: Some(key),
                        elapsed_ms: millis(started.elapsed()),
                        ..ImageResult::new(wanted, ImageStatus::Pulled)
                    });
                }
                Err(e) => e,
            };
            let mut message = error.to_string();
            let mut classification = classify(&message);
            let behind_daemon_mirror = (classification.dns_failure
                || classification.docker_hub_unreachable)
                && matches!(source, Source::Own(_))
                && image.is_docker_hub()
                && !self.options.daemon_mirrors.is_empty();
            if behind_daemon_mirror {
                // dockerd reports only its fallback's error whatever the mirror did:
                // ask the mirror itself.
                match self.probe_daemon_mirrors(image).await {
                    Some((mirror, ProbeResult::Missing)) => {
                        classification.class = ErrorClass::Permanent;
                        message = format!("manifest unknown: the daemon's mirror {mirror} has no `{image}` (HTTP 404)");
                    }
                    Some((mirror, ProbeResult::RateLimited { retry_after })) => {
                        classification.class = ErrorClass::RateLimited;
                        classification.retry_after = retry_after;
                        message = format!("toomanyrequests: the daemon's mirror {mirror} is rate limiting (HTTP 429)");
                    }
                    Some((mirror, ProbeResult::Unavailable { message: why })) => {
                        message = format!("the daemon's mirror {mirror} failed ({why}); dockerd then fell back to Docker Hub: {message}");
                    }
                    _ => {}
                }
            }
            if classification.class != ErrorClass::Permanent && self.breaker.failure(&key) {
                self.emit(PrefetchEvent::SourceSkipped {
                    source: key.clone(),
                });
            }
            let decision = schedule.after_failure(&classification, behind_daemon_mirror);
            let retry_in = match decision {
                Decision::RetryAfter(d) => Some(d),
                Decision::GiveUp => None,
            };
            self.emit(PrefetchEvent::AttemptFailed {
                image: wanted.clone(),
                attempt,
                error: message.clone(),
                class: classification.class,
                retry_in,
            });
            match retry_in {
                Some(delay) => tokio::time::sleep(delay).await,
                None => {
                    let tries = if attempt == 1 {
                        "1 attempt".to_owned()
                    } else {
                        format!("{attempt} attempts")
                    };
                    let what = match platform {
                        Some(p) => format!("`{image}` for {p}"),
                        None => format!("`{image}`"),
                    };
                    return self.finish(ImageResult {
                        attempts: attempt,
                        source: Some(key),
                        elapsed_ms: millis(started.elapsed()),
                        error: Some(format!("failed to pull {what} after {tries}: {message}")),
                        error_class: Some(classification.class),
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

    /// The next source in turn that is not skipped; when all are, the next in turn.
    fn pick(&self, sources: &[Source], turn: &mut usize) -> Source {
        let n = sources.len();
        for k in 0..n {
            let candidate = &sources[(*turn + k) % n];
            if !self.breaker.is_open(&candidate.key()) {
                *turn += k + 1;
                return candidate.clone();
            }
        }
        let source = sources[*turn % n].clone();
        *turn += 1;
        source
    }

    /// One pull of `pull` (the image, or its name on a mirror) for the wanted
    /// platform, with the stall watchdog and progress aggregation.
    async fn attempt(&self, wanted: &Wanted, pull: &ImageReference) -> Result<(), EngineError> {
        let timeout = self.options.stall_timeout;
        let mut events = self.engine.pull(pull, wanted.platform.as_ref()).await;
        let mut layers: HashMap<String, (u64, u64)> = HashMap::new();
        loop {
            match tokio::time::timeout(timeout, events.next()).await {
                Err(_) => return Err(EngineError::Stalled { timeout }),
                Ok(None) => return Ok(()),
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(event))) => {
                    let Some(layer) = event.layer else { continue };
                    let entry = layers.entry(layer).or_default();
                    match (event.status.as_str(), event.current, event.total) {
                        ("Downloading", Some(c), Some(t)) => *entry = (c, t),
                        ("Download complete" | "Pull complete" | "Already exists", _, _) => {
                            entry.0 = entry.1
                        }
                        _ => continue,
                    }
                    let (current, total) = layers
                        .values()
                        .fold((0, 0), |(c, t), (lc, lt)| (c + lc, t + lt));
                    self.emit(PrefetchEvent::Progress {
                        image: wanted.clone(),
                        current,
                        total,
                    });
                }
            }
        }
    }

    /// Names an image pulled from a mirror with its own name, and drops the mirror's.
    async fn adopt_from_mirror(
        &self,
        image: &ImageReference,
        mirror: &Mirror,
    ) -> Result<(), EngineError> {
        let on_mirror = mirror
            .image_for(image)
            .map_err(|e| EngineError::other(e.to_string()))?;
        if image.tag().is_some() {
            self.engine.tag(&on_mirror, image).await?;
        }
        if let Err(e) = self.engine.untag(&on_mirror).await {
            tracing::debug!("could not remove the mirror's name `{on_mirror}`: {e}");
        }
        Ok(())
    }

    /// Asks the daemon's mirrors directly; the first definite answer wins.
    async fn probe_daemon_mirrors(&self, image: &ImageReference) -> Option<(String, ProbeResult)> {
        let mut last = None;
        for mirror in &self.options.daemon_mirrors {
            let result = probe_manifest(&self.http, mirror, image).await;
            let name = mirror.trim_end_matches('/').to_owned();
            match result {
                ProbeResult::Unavailable { .. } => last = Some((name, result)),
                definite => return Some((name, definite)),
            }
        }
        last
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

    fn quick() -> PrefetchOptions {
        PrefetchOptions {
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

    #[tokio::test(start_paused = true)]
    async fn dead_source_is_skipped_after_threshold() {
        let names = ["a:1", "b:1", "c:1", "d:1", "e:1", "f:1", "g:1", "h:1"];
        let mut engine = FakeEngine::default();
        for n in names {
            engine = engine.script(n, vec![Outcome::Fail("EOF")]);
        }
        let engine = Arc::new(engine);
        let mut options = quick();
        options.jobs = 1;
        options.breaker_threshold = 3;
        options
            .mirrors
            .add_docker_hub("mirror.local".parse().unwrap());
        let report = Prefetcher::with_shared_engine(engine.clone(), options)
            .run(&refs(&names))
            .await
            .unwrap();
        assert!(report.is_success());
        let own_pulls = engine
            .pulls
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.starts_with("docker.io/"))
            .count();
        // docker.io fails for the first images, then is skipped: no more than 3 tries of it.
        assert_eq!(own_pulls, 3, "{:?}", engine.pulls.lock().unwrap());
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
