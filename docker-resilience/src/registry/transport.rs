//! The transport: the one way a request reaches a registry or a mirror.
//!
//! Every manifest, blob, token and push request of a run goes through one
//! [`Transport`], which owns what makes a request survive a flaky link (the model is
//! regclient's `internal/reghttp`):
//!
//! - **source order and fallback**: a request is given the sources of its image in the
//!   order a pull tries them (the daemon's mirrors, drbuild's mirrors, the registry);
//!   with `--fallback never` the caller gives one.
//! - **per-request retries**: a failed request is retried, not its image. While its
//!   source *glitches* (it served another request in the last seconds) the request stays
//!   on it and goes again after a few milliseconds; when the source fails as a whole
//!   the request moves to the next source at once, and when every source is backing
//!   off it waits for the first to be ready. A blob cut mid-way resumes where it
//!   stopped (the caller's body reader does that; the transport only sees that the
//!   request made progress).
//! - **the budget of a request on a source**: [`RequestPolicy::attempts`] (`--retries`)
//!   failures, a glitch counting a fifth of one; then the source is done for that
//!   request. A permanent answer from an authoritative source (the registry, a daemon
//!   mirror: a pull-through cache) ends the request; from a mirror of drbuild's it only
//!   moves the request on (that mirror may just not hold the image).
//! - **per-source health** ([`Health`]): the waits (glitch, exponential backoff over all
//!   the source's requests, `429` with its `Retry-After`), and the **breaker**
//!   ([`Breaker`], one key per host): a source failing five times in a row is skipped
//!   for the rest of the run while another source is left.
//! - **a connection budget per source** ([`DEFAULT_CONNECTIONS`], `--connections`):
//!   a run never has more requests on the wire to one host at once, whatever its
//!   images and the parts of their blobs ask for (registries rate-limit connections);
//!   manifests go first (the last places are theirs only). A source that refuses a
//!   request with 429/503 while others are on the wire (a mirror's connection limit)
//!   gets half as many at once, no more than are on the wire then, once per crowd of
//!   requests, and one more again after it served a few rounds of them.
//! - **what a source can do with parts of a blob** ([`Transport::part_width`]): one
//!   that ignores `Range` gets one stream per blob (said once); one that answers parts
//!   with 429/503 gets fewer parts at once, and more again as it serves them.
//! - **statistics** per endpoint ([`Stats`]): requests, bytes, resumes, ranged parts,
//!   connections at once, faults by class.
//!
//! May import what `registry` may.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::client::{Endpoint, Failure, RegistryClient, RequestError};
use crate::resilience::breaker::Breaker;
use crate::resilience::classify::ErrorClass;
use crate::resilience::health::Health;
use crate::resilience::retry::RetryPolicy;
use crate::support::{lock, millis};

/// A glitch (a failure while the source serves other requests) costs this share of
/// one attempt of a request's budget on that source.
const GLITCH_SHARE: u32 = 5;

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
    /// Ranged parts of big blobs it served.
    #[serde(skip_serializing_if = "is_zero")]
    pub parts: u64,
    /// Most requests on the wire to it at once.
    pub max_connections: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Statistics of every endpoint of a run.
#[derive(Debug, Default)]
pub struct Stats {
    endpoints: Mutex<BTreeMap<String, EndpointStats>>,
}

impl Stats {
    /// Updates the statistics of `endpoint`.
    pub fn with(&self, endpoint: &Endpoint, f: impl FnOnce(&mut EndpointStats)) {
        self.with_host(&endpoint.host, f);
    }

    /// Updates the statistics of the endpoint `host[:port]`.
    pub fn with_host(&self, host: &str, f: impl FnOnce(&mut EndpointStats)) {
        let mut map = lock(&self.endpoints);
        let entry = map.entry(host.to_owned()).or_insert_with(|| EndpointStats {
            endpoint: host.to_owned(),
            ..EndpointStats::default()
        });
        f(entry);
    }

    /// Every endpoint used, by name.
    pub fn snapshot(&self) -> Vec<EndpointStats> {
        lock(&self.endpoints).values().cloned().collect()
    }
}

/// How far a request may go: the request part of a [`RetryPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPolicy {
    /// Failures of one request on one source before the request leaves it (a glitch
    /// counts a fifth); `--retries`.
    pub attempts: u32,
}

impl From<&RetryPolicy> for RequestPolicy {
    fn from(policy: &RetryPolicy) -> Self {
        RequestPolicy {
            attempts: policy.max_attempts.max(1),
        }
    }
}

/// What kind of request (the health of a source learns more from some).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A manifest: one served proves no rate limit holds the source.
    Manifest,
    /// Anything else (blobs, tokens, pushes, probes).
    Other,
}

/// What one try of a request came to.
#[derive(Debug)]
pub enum Step<T> {
    /// Done.
    Done(T),
    /// It brought bytes but not all of them (a body cut mid-way): the source works;
    /// go again at once, from where it stopped.
    Progress,
}

/// A failure a request's try can end with: the endpoint's (retried by the transport),
/// or a local one (not the source's fault: ends the request at once).
pub trait TryFailure: From<RequestError> {
    /// The endpoint's error, when it is one.
    fn request(&self) -> Option<&RequestError>;
}

impl TryFailure for RequestError {
    fn request(&self) -> Option<&RequestError> {
        Some(self)
    }
}

/// A failed try of a request, for logs and the image's attempt count.
#[derive(Debug)]
pub struct Retry<'a> {
    /// What the endpoint answered.
    pub error: &'a RequestError,
    /// Tries of this request on that endpoint so far, this one included.
    pub tries: u32,
    /// When the request goes again (on the same or the next source); `None` when it
    /// gives up.
    pub after: Option<Duration>,
}

/// Observes the failed tries of a request (the image's attempt counter, its log lines).
pub type RetrySink<'a> = &'a (dyn Fn(&Retry<'_>) + Send + Sync);

/// An image's place among the run's `jobs`: held while one of its requests is on the
/// wire, given up while every one of them waits (a backoff, a `Retry-After`), so that
/// an image waiting holds no place that another could use.
#[derive(Debug)]
pub struct Slot {
    places: Arc<tokio::sync::Semaphore>,
    state: tokio::sync::Mutex<(usize, Option<tokio::sync::OwnedSemaphorePermit>)>,
}

impl Slot {
    /// A slot among `places`.
    pub fn new(places: Arc<tokio::sync::Semaphore>) -> Self {
        Slot {
            places,
            state: tokio::sync::Mutex::new((0, None)),
        }
    }

    /// A request of the image goes on the wire (waiting for a place if it has none).
    pub async fn enter(&self) {
        let mut state = self.state.lock().await;
        if state.1.is_none() {
            state.1 = Arc::clone(&self.places).acquire_owned().await.ok();
        }
        state.0 += 1;
    }

    /// A request of the image is off the wire: the last one gives the place up.
    pub async fn leave(&self) {
        let mut state = self.state.lock().await;
        state.0 = state.0.saturating_sub(1);
        if state.0 == 0 {
            state.1 = None;
        }
    }
}

pub use crate::resilience::multipart::DEFAULT_CONNECTIONS;

/// The connection budget of every source of a run: [`Places`] per host.
#[derive(Debug)]
struct Connections {
    limit: usize,
    hosts: Mutex<HashMap<String, Arc<Places>>>,
}

impl Connections {
    fn new(limit: usize) -> Self {
        Connections {
            limit: limit.max(1),
            hosts: Mutex::default(),
        }
    }

    fn places(&self, host: &str) -> Arc<Places> {
        Arc::clone(
            lock(&self.hosts)
                .entry(host.to_owned())
                .or_insert_with(|| Arc::new(Places::new(self.limit))),
        )
    }

    /// Waits for a place among `host`'s connections ([`Places`]: a manifest first),
    /// given back when dropped; returns it with the number now on the wire to that host.
    async fn acquire(&self, host: &str, kind: RequestKind) -> (Place, usize) {
        let places = self.places(host);
        let place = Places::acquire(&places, kind == RequestKind::Manifest).await;
        let taken = places.taken();
        (place, taken)
    }

    /// Says `host` refused (429/503) a request that had a place of `generation`: the
    /// places it allows now when they shrank, and whether for the first time.
    fn pushed_back(&self, host: &str, generation: u64) -> Option<(usize, bool)> {
        Places::pushed_back(&self.places(host), generation).map(|cap| (cap, generation == 0))
    }

    /// Says `host` served a request.
    fn served(&self, host: &str) {
        Places::served(&self.places(host));
    }
}

/// Requests a narrowed host serves, per place, before it gets one more.
const SERVED_TO_WIDEN: u32 = 4;

/// Places kept for manifests in a budget of more than twice as many.
const MANIFEST_PLACES: usize = 2;

/// One host's connection places, manifests first: a manifest is the next link of an
/// image's chain (index, platform manifest, then its blobs), and behind a crowd of
/// other images' blobs it holds its whole image back (13 images at once over a link
/// adding 100 ms per request: platform manifests waited up to 400 ms in line). A
/// waiting manifest takes the next place given back, and the last
/// [`MANIFEST_PLACES`] places are a manifest's only (the moment places free up, the
/// blobs of the images just resolved would take them all).
#[derive(Debug)]
struct Places {
    state: Mutex<PlacesState>,
    /// The budget (`--connections`).
    limit: usize,
}

#[derive(Debug)]
struct PlacesState {
    /// Places allowed now: the budget, less after the host pushed back.
    cap: usize,
    taken: usize,
    /// Requests served since the cap last moved (while it is below the budget).
    served: u32,
    /// Times the cap shrank: a push-back on a request placed before the last shrink is
    /// the same crowd's, already answered (as TCP halves its window once per loss).
    shrinks: u64,
    /// Those waiting: manifests, then the rest, each in order of arrival.
    waiting: [std::collections::VecDeque<tokio::sync::oneshot::Sender<Place>>; 2],
}

impl PlacesState {
    fn free(&self) -> usize {
        self.cap.saturating_sub(self.taken)
    }

    /// Places only a manifest takes.
    fn kept(&self) -> usize {
        if self.cap > 2 * MANIFEST_PLACES {
            MANIFEST_PLACES
        } else {
            0
        }
    }
}

/// A place of [`Places`], given back (to the first waiting, else freed) when dropped,
/// also when it is dropped on its way to a waiter that gave up; with the generation of
/// the cap it was given under.
#[derive(Debug)]
struct Place(Option<Arc<Places>>, u64);

impl Places {
    fn new(limit: usize) -> Self {
        Places {
            state: Mutex::new(PlacesState {
                cap: limit,
                taken: 0,
                served: 0,
                shrinks: 0,
                waiting: Default::default(),
            }),
            limit,
        }
    }

    /// Places taken now.
    fn taken(&self) -> usize {
        lock(&self.state).taken
    }

    async fn acquire(places: &Arc<Places>, manifest: bool) -> Place {
        let given = {
            let mut state = lock(&places.state);
            let kept = if manifest { 0 } else { state.kept() };
            if state.free() > kept && state.waiting[0].is_empty() {
                state.taken += 1;
                return Place(Some(Arc::clone(places)), state.shrinks);
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            state.waiting[usize::from(!manifest)].push_back(tx);
            rx
        };
        given
            .await
            .expect("a waiter's sender lives as long as its places")
    }

    /// A place given back, then the free places handed out.
    fn release(places: &Arc<Places>) {
        let mut state = lock(&places.state);
        state.taken -= 1;
        Places::hand_out(places, &mut state);
    }

    /// Free places to the first manifests waiting, else to the first other requests
    /// waiting while more than the kept places are free.
    fn hand_out(places: &Arc<Places>, state: &mut PlacesState) {
        while state.free() > 0 {
            let next = if let Some(tx) = state.waiting[0].pop_front() {
                tx
            } else if state.free() > state.kept() {
                match state.waiting[1].pop_front() {
                    Some(tx) => tx,
                    None => return,
                }
            } else {
                return;
            };
            state.taken += 1;
            if let Err(mut unsent) = next.send(Place(Some(Arc::clone(places)), state.shrinks)) {
                // That waiter gave up: the place goes on to the next, not through
                // its drop (this holds the lock).
                unsent.0 = None;
                state.taken -= 1;
            }
        }
    }

    /// The host refused a request placed under cap generation `generation` (its place
    /// already given back) while others were on the wire: half as many at once, and no
    /// more than are on the wire now. Once per crowd; a refusal with nothing else on
    /// the wire says nothing of a limit. Returns the new cap when it shrank.
    fn pushed_back(places: &Arc<Places>, generation: u64) -> Option<usize> {
        let mut state = lock(&places.state);
        let cap = state.taken.min(state.cap / 2);
        if generation != state.shrinks || cap == 0 {
            return None;
        }
        state.cap = cap;
        state.served = 0;
        state.shrinks += 1;
        Some(cap)
    }

    /// The host served a request: below the budget, one more place after it served
    /// [`SERVED_TO_WIDEN`] rounds of its places.
    fn served(places: &Arc<Places>) {
        let mut state = lock(&places.state);
        if state.cap >= places.limit {
            return;
        }
        state.served += 1;
        if state.served >= SERVED_TO_WIDEN * u32::try_from(state.cap).unwrap_or(u32::MAX) {
            state.cap += 1;
            state.served = 0;
            Places::hand_out(places, &mut state);
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(places) = self.0.take() {
            Places::release(&places);
        }
    }
}

/// What the run learned about each source's handling of ranged parts.
#[derive(Debug, Default)]
struct Parts {
    /// Hosts that answer a ranged request with the whole blob.
    no_ranges: HashSet<String>,
    /// Hosts that pushed back on parts (429/503).
    width: HashMap<String, Width>,
}

/// Parts at once a host that pushed back takes now.
#[derive(Debug, Clone, Copy)]
struct Width {
    /// Parts at once allowed.
    parts: usize,
    /// Parts served since it last grew or shrank.
    served: u32,
    /// Times it shrank: a push-back on a part launched before the last shrink is the
    /// same crowd's, already answered (as TCP halves its window once per loss event).
    shrinks: u64,
}

/// Parts served at a narrowed width before it grows by one.
const PARTS_TO_WIDEN: u32 = 4;

/// What a request that succeeded came from.
#[derive(Debug)]
pub struct Served<T> {
    /// The value.
    pub value: T,
    /// Which of the sources served it (an index into the list given).
    pub source: usize,
    /// Tries it took there (a resume after a cut that brought bytes is not a new try).
    pub tries: u32,
}

/// The one way requests reach registries: see the module's documentation.
#[derive(Debug)]
pub struct Transport {
    client: RegistryClient,
    health: Arc<Health>,
    breaker: Arc<Breaker>,
    stats: Arc<Stats>,
    policy: RequestPolicy,
    connections: Arc<Connections>,
    parts: Arc<Mutex<Parts>>,
}

/// Consecutive whole failures after which a source is skipped for the rest of the run.
pub const BREAKER_THRESHOLD: u32 = 5;

impl Transport {
    /// A transport for `client` with health, breaker and statistics of its own; a
    /// source is skipped after `breaker_threshold` whole failures in a row (default
    /// [`BREAKER_THRESHOLD`]).
    pub fn new(client: RegistryClient, retry: &RetryPolicy, breaker_threshold: u32) -> Self {
        Transport {
            client,
            health: Arc::new(Health::new(retry)),
            breaker: Arc::new(Breaker::new(breaker_threshold)),
            stats: Arc::default(),
            policy: RequestPolicy::from(retry),
            connections: Arc::new(Connections::new(DEFAULT_CONNECTIONS)),
            parts: Arc::default(),
        }
    }

    /// The same transport with at most `limit` requests on the wire to one source at
    /// once (at least 1).
    pub fn with_connections(mut self, limit: usize) -> Self {
        self.connections = Arc::new(Connections::new(limit));
        self
    }

    /// The same sources' health, breaker and statistics with another client (a push
    /// to a target with its own timeouts) or policy.
    pub fn sharing(&self, client: RegistryClient, retry: &RetryPolicy) -> Self {
        Transport {
            client,
            health: Arc::clone(&self.health),
            breaker: Arc::clone(&self.breaker),
            stats: Arc::clone(&self.stats),
            policy: RequestPolicy::from(retry),
            connections: Arc::clone(&self.connections),
            parts: Arc::clone(&self.parts),
        }
    }

    /// Parts of one blob to fetch at once from `host`, for `wanted` asked, and the
    /// generation of that width (given back with a push-back): 1 for a source that
    /// ignores `Range`, fewer after it pushed back, never more than its connection
    /// budget.
    pub fn part_width(&self, host: &str, wanted: usize) -> (usize, u64) {
        let parts = lock(&self.parts);
        if parts.no_ranges.contains(host) {
            return (1, 0);
        }
        let (width, shrinks) = parts
            .width
            .get(host)
            .map_or((wanted, 0), |w| (w.parts.min(wanted), w.shrinks));
        (width.clamp(1, self.connections.limit), shrinks)
    }

    /// Says `host` answered a ranged request with the whole blob; `true` the first
    /// time (for the caller to say it once).
    pub fn ignores_ranges(&self, host: &str) -> bool {
        lock(&self.parts).no_ranges.insert(host.to_owned())
    }

    /// Says `host` pushed back (429, 503) on a part launched at width generation
    /// `launched` ([`Transport::part_width`]): half as many parts at once, once per
    /// crowd of parts. Returns the width when it shrank.
    pub fn parts_pushed_back(&self, host: &str, wanted: usize, launched: u64) -> Option<usize> {
        let mut parts = lock(&self.parts);
        let width = parts.width.entry(host.to_owned()).or_insert(Width {
            parts: wanted.min(self.connections.limit),
            served: 0,
            shrinks: 0,
        });
        if launched != width.shrinks {
            return None;
        }
        width.parts = (width.parts / 2).max(1);
        width.served = 0;
        width.shrinks += 1;
        Some(width.parts)
    }

    /// Says `host` served a part: after a few, one more part at once (up to `wanted`).
    pub fn part_served(&self, host: &str, wanted: usize) {
        let mut parts = lock(&self.parts);
        if let Some(width) = parts.width.get_mut(host) {
            width.served += 1;
            if width.served >= PARTS_TO_WIDEN {
                width.parts = (width.parts + 1).min(wanted);
                width.served = 0;
            }
        }
        drop(parts);
        self.stats.with_host(host, |s| s.parts += 1);
    }

    /// The client requests are sent with.
    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// The health of every source.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The breaker of every source (keyed by host).
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The statistics of every endpoint.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Asks each of `endpoints` `GET /v2/` once (8 at a time, each within `timeout`),
    /// as a run starts: which answer at all. One that answers is recorded as serving (a
    /// failure right after is a glitch, not an outage); one that does not starts the
    /// run backing off. Returns the base URLs that answered.
    pub async fn answering(
        &self,
        endpoints: &[Endpoint],
        timeout: Duration,
    ) -> std::collections::HashSet<String> {
        use futures_util::StreamExt;
        let mut unique: Vec<&Endpoint> = endpoints.iter().collect();
        unique.sort_by(|a, b| a.base.cmp(&b.base));
        unique.dedup_by(|a, b| a.base == b.base);
        futures_util::stream::iter(unique)
            .map(|e| async move {
                let up = self.client.reachable(e, timeout).await;
                tracing::debug!(
                    "{} {}",
                    e.label,
                    if up { "answers" } else { "does not answer" }
                );
                if up {
                    self.health.success(&e.host);
                } else {
                    // It starts the run backing off: the first requests of every image
                    // go to the next source rather than all to it at once.
                    self.health
                        .record_failure(&e.host, ErrorClass::Transient, None);
                }
                up.then(|| e.base.clone())
            })
            .buffer_unordered(8)
            .filter_map(std::future::ready)
            .collect()
            .await
    }

    /// Sends a request to `sources` (in order, see the module's documentation) until
    /// one serves it, the answer is final, or every source has spent the request's
    /// budget. `send` makes one try on the endpoint given; `retried` hears about each
    /// failed try that is retried.
    pub async fn request<T, E, F, Fut>(
        &self,
        sources: &[Endpoint],
        kind: RequestKind,
        slot: Option<&Slot>,
        retried: RetrySink<'_>,
        mut send: F,
    ) -> Result<Served<T>, E>
    where
        E: TryFailure,
        F: FnMut(&Endpoint) -> Fut,
        Fut: Future<Output = Result<Step<T>, E>>,
    {
        assert!(!sources.is_empty(), "a request needs a source");
        let n = sources.len();
        let mut spent = vec![0u32; n];
        let mut tries = vec![0u32; n];
        let mut done = vec![false; n];
        let mut not_before = vec![Instant::now(); n];
        // Whether a source's wait is its backoff, which a success ends early.
        let mut backing_off = vec![false; n];
        let mut last: Vec<Option<E>> = (0..n).map(|_| None).collect();
        let budget = self.policy.attempts.saturating_mul(GLITCH_SHARE);
        let mut current = self.choose(sources, &done, &not_before, None);
        while let Some(mut i) = current {
            // Wait for the source chosen; when it is not ready by then (it began backing
            // off, a 429 closed it, while this waited for its time or a place), choose
            // again: another source may be ready now.
            loop {
                if backing_off[i] {
                    self.health.wait_out(&sources[i].host, not_before[i]).await;
                    not_before[i] = not_before[i].min(Instant::now());
                } else {
                    tokio::time::sleep_until(not_before[i]).await;
                }
                if let Some(slot) = slot {
                    slot.enter().await;
                }
                if self.health.wait(&sources[i].host).is_none() {
                    break;
                }
                if let Some(slot) = slot {
                    slot.leave().await;
                }
                match self.choose(sources, &done, &not_before, None) {
                    Some(j) if j != i => i = j,
                    // Until it is ready, or another source's backoff ends: then
                    // choose again (a source waited for must not hold the request
                    // while the one before it serves again).
                    _ => self.health.ready_or_reopened(&sources[i].host).await,
                }
            }
            let endpoint = &sources[i];
            let (connection, at_once) = self.connections.acquire(&endpoint.host, kind).await;
            let generation = connection.1;
            self.stats.with(endpoint, |s| {
                s.requests += 1;
                s.max_connections = s.max_connections.max(at_once as u64);
            });
            tries[i] += 1;
            let started = Instant::now();
            let outcome = send(endpoint).await;
            drop(connection);
            let elapsed = millis(started.elapsed());
            if let Some(slot) = slot {
                slot.leave().await;
            }
            self.stats.with(endpoint, |s| s.elapsed_ms += elapsed);
            let failure = match outcome {
                Ok(step) => {
                    self.connections.served(&endpoint.host);
                    match kind {
                        RequestKind::Manifest => self.health.manifest_served(&endpoint.host),
                        RequestKind::Other => self.health.success(&endpoint.host),
                    }
                    self.breaker.success(&endpoint.host);
                    match step {
                        Step::Done(value) => {
                            return Ok(Served {
                                value,
                                source: i,
                                tries: tries[i],
                            })
                        }
                        Step::Progress => {
                            // It works: the request's failures on it so far are forgiven,
                            // and going on from where it stopped is not a new try.
                            spent[i] = 0;
                            tries[i] = 0;
                            continue;
                        }
                    }
                }
                Err(e) => e,
            };
            let Some(error) = failure.request() else {
                // A local failure (the cache's disk): no source is to blame or to retry.
                return Err(failure);
            };
            if let Failure::Status {
                code: code @ (429 | 503),
                ..
            } = error.failure
            {
                match self.connections.pushed_back(&endpoint.host, generation) {
                    Some((cap, true)) => tracing::info!(
                        "{} refused a request with {code} while {cap} others were on the \
                         wire: at most {cap} at once to it now, more as it serves them",
                        endpoint.label
                    ),
                    Some((cap, false)) => {
                        tracing::debug!("{}: at most {cap} at once to it now", endpoint.label);
                    }
                    None => {}
                }
            }
            let class = error.class();
            self.stats.with(endpoint, |s| match class {
                ErrorClass::Transient => s.faults.transient += 1,
                ErrorClass::RateLimited => s.faults.rate_limited += 1,
                ErrorClass::Permanent => s.faults.permanent += 1,
            });
            if class == ErrorClass::Permanent {
                done[i] = true;
                current = if endpoint.role.authoritative() {
                    None
                } else {
                    self.choose(sources, &done, &not_before, None)
                };
                retried(&Retry {
                    error,
                    tries: tries[i],
                    after: current.map(|_| Duration::ZERO),
                });
                last[i] = Some(failure);
                continue;
            }
            let glitch = class == ErrorClass::Transient && self.health.glitching(&endpoint.host);
            let backoff = self
                .health
                .record_failure(&endpoint.host, class, error.retry_after());
            let wait = backoff.wait;
            // A burst of failures is one step for the breaker too.
            if backoff.escalated && self.breaker.failure(&endpoint.host) {
                tracing::warn!(
                    "{} keeps failing: skipping it for the rest of this run while another source is left",
                    endpoint.label
                );
            }
            spent[i] = spent[i].saturating_add(if glitch { 1 } else { GLITCH_SHARE });
            not_before[i] = Instant::now() + wait;
            backing_off[i] = backoff.backoff;
            if spent[i] >= budget {
                done[i] = true;
            }
            let stay = glitch && !done[i];
            current = if stay {
                Some(i)
            } else {
                self.choose(sources, &done, &not_before, Some(i))
            };
            let after = current.map(|next| {
                let now = Instant::now();
                not_before[next]
                    .max(now + self.health.wait(&sources[next].host).unwrap_or_default())
                    .saturating_duration_since(now)
            });
            retried(&Retry {
                error,
                tries: tries[i],
                after,
            });
            last[i] = Some(failure);
        }
        // Every source spent (or a final answer): the first source's answer leads (it is
        // the one the image comes from), what the others said follows it.
        Err(combine(last))
    }

    /// The source a request goes to next: the first in order that is not done, not
    /// skipped by the breaker (unless all are) and ready now; else the one ready first.
    /// `left`: the source just failed as a whole, which another ready source goes before.
    fn choose(
        &self,
        sources: &[Endpoint],
        done: &[bool],
        not_before: &[Instant],
        left: Option<usize>,
    ) -> Option<usize> {
        let open: Vec<usize> = (0..sources.len()).filter(|i| !done[*i]).collect();
        let usable: Vec<usize> = {
            let closed: Vec<usize> = open
                .iter()
                .copied()
                .filter(|i| !self.breaker.is_open(&sources[*i].host))
                .collect();
            if closed.is_empty() {
                open
            } else {
                closed
            }
        };
        let now = Instant::now();
        let ready_at = |i: usize| {
            not_before[i].max(now + self.health.wait(&sources[i].host).unwrap_or_default())
        };
        usable
            .iter()
            .copied()
            .find(|i| Some(*i) != left && ready_at(*i) <= now)
            .or_else(|| usable.iter().copied().min_by_key(|i| (ready_at(*i), *i)))
    }
}

/// One error from the last answer of every source tried: the first source's, with
/// what the others said after it (its class is the one that ended the request).
fn combine<E: TryFailure>(last: Vec<Option<E>>) -> E {
    let mut errors = last.into_iter().flatten();
    let first = errors.next().expect("a request that failed was sent");
    let then: Vec<RequestError> = errors.filter_map(|e| e.request().cloned()).collect();
    match first.request() {
        Some(lead) if !then.is_empty() => E::from(RequestError {
            then: Box::new(then),
            ..lead.clone()
        }),
        _ => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::client::Failure;
    use crate::registry::credentials::Credentials;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn transport(attempts: u32) -> Transport {
        Transport::new(
            RegistryClient::new(Credentials::none(), Duration::from_secs(1)),
            &RetryPolicy {
                max_attempts: attempts,
                jitter: false,
                ..RetryPolicy::quick()
            },
            BREAKER_THRESHOLD,
        )
    }

    fn error(endpoint: &Endpoint, failure: Failure) -> RequestError {
        RequestError::new(
            endpoint.label.clone(),
            "blob sha256:0123… of library/redis",
            failure,
        )
    }

    fn status(code: u16) -> Failure {
        Failure::Status {
            code,
            error: None,
            message: None,
            retry_after: None,
        }
    }

    /// Whether `rx`'s place was given (the task waiting for it had its turn).
    fn given(rx: &mut tokio::task::JoinHandle<Place>) -> Option<Place> {
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        match std::pin::Pin::new(rx).poll(&mut cx) {
            std::task::Poll::Ready(place) => Some(place.expect("the waiter ran")),
            std::task::Poll::Pending => None,
        }
    }

    /// A waiter for a place of `places`, its request queued before this returns.
    async fn waiter(places: &Arc<Places>, manifest: bool) -> tokio::task::JoinHandle<Place> {
        let places = Arc::clone(places);
        let waiting = tokio::spawn(async move { Places::acquire(&places, manifest).await });
        tokio::task::yield_now().await;
        waiting
    }

    #[tokio::test(flavor = "current_thread")]
    async fn places_go_to_manifests_first_and_the_last_two_are_theirs() {
        let places = Arc::new(Places::new(6));
        // Blobs take 4 of 6 places; the last 2 are kept for manifests.
        let mut blobs = Vec::new();
        for _ in 0..4 {
            blobs.push(Places::acquire(&places, false).await);
        }
        let mut blob = waiter(&places, false).await;
        assert!(
            given(&mut blob).is_none(),
            "a blob waits with 2 places free"
        );
        let first = Places::acquire(&places, true).await;
        let second = Places::acquire(&places, true).await;
        // Every place taken: a manifest that comes later is served before the blob.
        let mut manifest = waiter(&places, true).await;
        drop(blobs.pop());
        tokio::task::yield_now().await;
        let third = given(&mut manifest).expect("the manifest had the place");
        assert!(given(&mut blob).is_none());
        // The places given back while at most 2 are free are kept.
        drop(first);
        drop(second);
        tokio::task::yield_now().await;
        assert!(
            given(&mut blob).is_none(),
            "2 places free are the manifests'"
        );
        drop(third);
        tokio::task::yield_now().await;
        let _blob = given(&mut blob).expect("a third place free goes to the blob");
        assert_eq!(lock(&places.state).free(), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_host_that_pushes_back_gets_as_many_as_it_served_then_more() {
        let places = Arc::new(Places::new(8));
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(Places::acquire(&places, true).await);
        }
        let generation = held[0].1;
        // Refused alone, a request says nothing of a limit.
        let alone = Arc::new(Places::new(8));
        let place = Places::acquire(&alone, false).await;
        let g = place.1;
        drop(place);
        assert_eq!(Places::pushed_back(&alone, g), None);
        // One of 5 refused: 4 others on the wire, 4 at once from now on.
        drop(held.pop());
        assert_eq!(Places::pushed_back(&places, generation), Some(4));
        // The rest of that crowd refused too: answered already.
        drop(held.pop());
        assert_eq!(Places::pushed_back(&places, generation), None);
        // 3 on the wire, 1 free under the cap of 4; a fifth waits.
        let fourth = Places::acquire(&places, true).await;
        assert_eq!(fourth.1, 1, "placed under the new cap");
        let mut fifth = waiter(&places, true).await;
        assert!(given(&mut fifth).is_none(), "the cap is 4");
        // Served 4 rounds of 4 places: one more, given to the waiter.
        for _ in 0..(SERVED_TO_WIDEN * 4 - 1) {
            Places::served(&places);
        }
        tokio::task::yield_now().await;
        assert!(given(&mut fifth).is_none());
        Places::served(&places);
        tokio::task::yield_now().await;
        let fifth = given(&mut fifth).expect("the cap grew to 5");
        assert_eq!(lock(&places.state).cap, 5);
        // Never past the budget.
        drop((held, fourth, fifth));
        for _ in 0..1000 {
            Places::served(&places);
        }
        assert_eq!(lock(&places.state).cap, 8);
        assert_eq!(lock(&places.state).taken, 0, "no place lost");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_place_sent_to_a_waiter_that_gave_up_goes_on() {
        let places = Arc::new(Places::new(1));
        let held = Places::acquire(&places, false).await;
        let gave_up = waiter(&places, false).await;
        let mut next = waiter(&places, false).await;
        gave_up.abort();
        let _ = gave_up.await;
        drop(held);
        tokio::task::yield_now().await;
        let place = given(&mut next).expect("the next waiter has the place");
        drop(place);
        assert_eq!(lock(&places.state).free(), 1, "no place lost");
        // Sent, then dropped unread: the place comes back.
        let held = Places::acquire(&places, true).await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&places.state).waiting[0].push_back(tx);
        drop(held);
        drop(rx);
        assert_eq!(lock(&places.state).free(), 1, "no place lost");
    }

    #[tokio::test(start_paused = true)]
    async fn a_glitching_source_keeps_the_request_until_it_is_served() {
        let t = transport(2);
        let mirror = Endpoint::daemon_mirror("http://127.0.0.1:15001");
        let registry = Endpoint::registry("docker.io");
        t.health().success(&mirror.host);
        let tries = AtomicU32::new(0);
        let retries = AtomicU32::new(0);
        // Eight failures in a row on a serving source: far past 2 whole failures, well
        // within 2 × 5 glitches; the registry is never asked.
        let served = t
            .request(
                &[mirror.clone(), registry],
                RequestKind::Other,
                None,
                &|r| {
                    assert!(r.after.is_some());
                    retries.fetch_add(1, Ordering::Relaxed);
                },
                |e| {
                    let n = tries.fetch_add(1, Ordering::Relaxed);
                    let e = e.clone();
                    async move {
                        assert_eq!(e.host, "127.0.0.1:15001");
                        if n < 8 {
                            Err(error(&e, Failure::Transport("EOF".into())))
                        } else {
                            Ok(Step::Done(n))
                        }
                    }
                },
            )
            .await
            .unwrap();
        assert_eq!((served.value, served.source, served.tries), (8, 0, 9));
        assert_eq!(retries.load(Ordering::Relaxed), 8);
        let stats = t.stats().snapshot();
        assert_eq!(stats[0].requests, 9);
        assert_eq!(stats[0].faults.transient, 8);
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_failing_as_a_whole_hands_the_request_on_at_once() {
        let t = transport(3);
        let mirror = Endpoint::daemon_mirror("http://127.0.0.1:15001");
        let registry = Endpoint::registry("127.0.0.1:15000");
        let started = Instant::now();
        let served = t
            .request(
                &[mirror, registry],
                RequestKind::Manifest,
                None,
                &|_| {},
                |e| {
                    let e = e.clone();
                    async move {
                        if e.role == Role::DaemonMirror {
                            Err(error(&e, status(500)))
                        } else {
                            Ok(Step::Done(()))
                        }
                    }
                },
            )
            .await
            .unwrap();
        assert_eq!(served.source, 1);
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no wait: the next source was ready"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn progress_forgives_and_a_permanent_answer_ends_it() {
        let t = transport(1);
        let registry = Endpoint::registry("127.0.0.1:15000");
        // Cut after some bytes, three times: each is progress, not a failure.
        let tries = AtomicU32::new(0);
        let served = t
            .request(
                std::slice::from_ref(&registry),
                RequestKind::Other,
                None,
                &|_| {},
                |e| {
                    let n = tries.fetch_add(1, Ordering::Relaxed);
                    let e = e.clone();
                    async move {
                        match n {
                            0 | 2 | 4 => Ok(Step::Progress),
                            1 | 3 => Err(error(&e, Failure::Transport("EOF".into()))),
                            _ => Ok(Step::Done(n)),
                        }
                    }
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (served.value, served.tries),
            (5, 1),
            "resumes are not tries"
        );
        // A drbuild mirror's 404 moves on; the registry's ends the request.
        let mut mirrors = crate::resilience::mirror::MirrorSet::default();
        mirrors.add_spec("127.0.0.1:15000=127.0.0.1:15009").unwrap();
        let image = crate::vocab::ImageReference::parse("127.0.0.1:15000/x/y:1").unwrap();
        let mirror = Endpoint::mirror(&mirrors.for_image(&image)[0]);
        let asked = Mutex::new(Vec::new());
        let e = t
            .request::<(), RequestError, _, _>(
                &[mirror, registry],
                RequestKind::Manifest,
                None,
                &|_| {},
                |e| {
                    lock(&asked).push(e.host.clone());
                    let e = e.clone();
                    async move {
                        Err(error(
                            &e,
                            Failure::Status {
                                code: 404,
                                error: Some("MANIFEST_UNKNOWN".into()),
                                message: None,
                                retry_after: None,
                            },
                        ))
                    }
                },
            )
            .await
            .unwrap_err();
        assert_eq!(*lock(&asked), ["127.0.0.1:15009", "127.0.0.1:15000"]);
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert!(
            e.to_string()
                .starts_with("mirror 127.0.0.1:15009: HTTP 404"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("; then registry 127.0.0.1:15000: HTTP 404"),
            "{e}"
        );
    }

    /// A request that failed into its source's backoff (nothing served lately) goes
    /// again as soon as another request of the source is served, not when the backoff
    /// would have ended: the tail of runs under 30% faults.
    #[tokio::test(start_paused = true)]
    async fn a_success_elsewhere_ends_a_requests_backoff() {
        // Backoff from 1 s on, as by default.
        let t = Transport::new(
            RegistryClient::new(Credentials::none(), Duration::from_secs(1)),
            &RetryPolicy {
                max_attempts: 5,
                jitter: false,
                ..RetryPolicy::default()
            },
            BREAKER_THRESHOLD,
        );
        let registry = Endpoint::registry("127.0.0.1:15000");
        let started = Instant::now();
        let tries = AtomicU32::new(0);
        let host = registry.host.clone();
        let served = async {
            t.request(
                std::slice::from_ref(&registry),
                RequestKind::Other,
                None,
                &|r| assert_eq!(r.after, Some(Duration::from_secs(1))),
                |e| {
                    let n = tries.fetch_add(1, Ordering::Relaxed);
                    let e = e.clone();
                    async move {
                        if n == 0 {
                            Err(error(&e, Failure::Transport("EOF".into())))
                        } else {
                            Ok(Step::Done(Instant::now()))
                        }
                    }
                },
            )
            .await
            .unwrap()
        };
        // Another request of the source is served 50 ms later.
        let other = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            t.health().success(&host);
        };
        let (served, ()) = tokio::join!(served, other);
        let again = served.value - started;
        assert!(
            again < Duration::from_millis(100),
            "went again after {again:?}, not at the success"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_source_spends_its_budget_with_growing_waits() {
        let t = transport(3);
        let registry = Endpoint::registry("127.0.0.1:15000");
        let waits = Mutex::new(Vec::new());
        let started = Instant::now();
        let e = t
            .request::<(), RequestError, _, _>(
                std::slice::from_ref(&registry),
                RequestKind::Other,
                None,
                &|r| lock(&waits).push(r.after.map(|a| a.as_millis())),
                |e| {
                    let e = e.clone();
                    async move { Err(error(&e, Failure::Transport("connection refused".into()))) }
                },
            )
            .await
            .unwrap_err();
        assert_eq!(
            *lock(&waits),
            [Some(50), Some(100), None],
            "quick policy: 50 ms, then doubled, then the budget is spent"
        );
        assert_eq!(started.elapsed(), Duration::from_millis(150));
        assert_eq!(e.class(), ErrorClass::Transient);
        assert_eq!(t.stats().snapshot()[0].requests, 3);
    }

    #[test]
    fn parts_halve_once_per_crowd_and_grow_back_one_at_a_time() {
        let t = transport(3).with_connections(12);
        let host = "mirror:5000";
        // Never more than the budget; the wanted width until a push-back.
        assert_eq!(t.part_width(host, 16), (12, 0));
        // The first push-back of a crowd launched at generation 0 halves the width;
        // the same crowd's later ones change nothing.
        assert_eq!(t.parts_pushed_back(host, 16, 0), Some(6));
        assert_eq!(t.parts_pushed_back(host, 16, 0), None);
        assert_eq!(t.part_width(host, 16), (6, 1));
        // A crowd launched at the new width pushing back halves it again.
        assert_eq!(t.parts_pushed_back(host, 16, 1), Some(3));
        assert_eq!(t.part_width(host, 16), (3, 2));
        // Every few parts served, one more at once, up to what is wanted.
        for _ in 0..PARTS_TO_WIDEN {
            t.part_served(host, 4);
        }
        assert_eq!(t.part_width(host, 4), (4, 2));
        for _ in 0..PARTS_TO_WIDEN {
            t.part_served(host, 4);
        }
        assert_eq!(t.part_width(host, 4), (4, 2));
        // Never below one; another host is untouched.
        for generation in 2..6 {
            t.parts_pushed_back(host, 4, generation);
        }
        assert_eq!(t.part_width(host, 4).0, 1);
        assert_eq!(t.part_width("registry:443", 8), (8, 0));
        // A source that ignores Range: one stream.
        assert!(t.ignores_ranges(host));
        assert!(!t.ignores_ranges(host));
        assert_eq!(t.part_width(host, 8).0, 1);
    }

    use super::super::client::Role;
}
