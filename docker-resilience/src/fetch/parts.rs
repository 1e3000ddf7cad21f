//! Parts: a big blob fetched as several ranged requests at once, for long thin links
//! where one connection carries far less than the link (a flow's throughput falls with
//! round-trip time × √loss), as download accelerators and containerd 2.1 do.
//!
//! - A blob of at least [`Multipart::threshold`](super::Multipart::threshold) bytes
//!   starts as one connection, the *lead*, asking for what the blob lacks a window at
//!   a time (a part's share first, then twice the last). Once the lead has brought
//!   bytes for [`SPLIT_PROBE`], its speed says what parts are worth: when the rest
//!   would take longer than [`SPLIT_WORTH`] over the lead alone (a thin link), what
//!   lies past its window is cut into up to [`Multipart::parts`](super::Multipart::parts)
//!   ranges of about equal size (the lead's window one of them; no request is cut
//!   short); else the lead brings it all (a fast link, where parts only cost requests
//!   and a hash of the blob at the end).
//!   A blob an earlier run left with holes is cut into parts from the start (the ranges
//!   still missing). Each part is fetched by its own request through the
//!   [`Transport`]: retried and resumed on its own, within the source's connection
//!   budget, written at its offset into the blob's partial file
//!   ([`RangedBlob`]) under the blob's cross-process lock.
//!   The whole is verified by digest once, when the last part lands.
//! - A source that answers a ranged request with the whole blob (it ignores `Range`)
//!   gets one stream for this blob and every later one (said once); one that answers
//!   parts with 429/503 gets fewer at once ([`Transport::part_width`]): a part pushed
//!   back while others of its blob are on the wire gives its place up, and what it
//!   still lacks waits for one, so the blob's own parts shrink to what the source
//!   serves (the last part left is retried by the transport as any request).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::{FetchError, Fetcher, Watch};
use crate::cache::{CacheError, RangedBlob};
use crate::registry::client::{blob_target, Endpoint, Failure, RequestError};
use crate::registry::manifest::Descriptor;
use crate::registry::transport::{RequestKind, Step, Transport};
use crate::support::lock;
use crate::vocab::ImageReference;

/// A part smaller than this is not worth a request of its own.
const MIN_PART: u64 = 1024 * 1024;

/// How long the lead brings bytes before its speed decides whether the rest comes in
/// parts.
pub(super) const SPLIT_PROBE: Duration = Duration::from_millis(200);

/// The rest of a blob comes in parts when the lead alone would take longer than this
/// for it. On the plain loopback link a 64 MiB blob takes the lead about 0.3 s (parts
/// made it 1.05x slower: their requests, and the hash of the blob once they all land);
/// at 4 MB/s per connection it would take 16 s.
pub(super) const SPLIT_WORTH: Duration = Duration::from_secs(1);

/// How often the lead's speed is looked at while it probes.
const PROBE_TICK: Duration = Duration::from_millis(25);

/// Bytes a part gathers before writing them (one write per 256 KiB, off the async
/// threads): with 16 parts, 4 MiB in memory at most.
const WRITE_BATCH: usize = 256 * 1024;

/// A part's bytes received and not yet written, written when dropped.
struct Pending<'a> {
    ranged: &'a Arc<RangedBlob>,
    at: u64,
    batch: Vec<u8>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.batch.is_empty() {
            let _ = self.ranged.write_at(self.at, &self.batch);
        }
    }
}

/// A part on the wire, counted in [`Shared::running`] while it lives.
struct OnWire<'a>(&'a AtomicUsize);

impl<'a> OnWire<'a> {
    fn enter(running: &'a AtomicUsize) -> Self {
        running.fetch_add(1, Ordering::Relaxed);
        OnWire(running)
    }
}

impl Drop for OnWire<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Cuts the `missing` ranges into pieces of about `total / parts` bytes (at least
/// [`MIN_PART`]); a piece never spans two ranges.
pub(super) fn split(missing: &[Range<u64>], parts: usize) -> Vec<Range<u64>> {
    let total: u64 = missing.iter().map(|r| r.end - r.start).sum();
    let target = total.div_ceil(parts.max(1) as u64).max(MIN_PART);
    let mut out = Vec::new();
    for r in missing {
        let mut at = r.start;
        while at < r.end {
            let mut end = (at + target).min(r.end);
            // No crumb at a range's end: the last piece takes it.
            if r.end - end < MIN_PART / 2 {
                end = r.end;
            }
            out.push(at..end);
            at = end;
        }
    }
    out
}

/// How a part ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PartEnd {
    /// Its bytes are on disk.
    Whole,
    /// The source sent the whole blob instead: it ignores `Range`.
    NoRanges,
    /// The source pushed back (429/503) while other parts of the blob were on the
    /// wire: these bytes are still to fetch, when a place is free.
    PushedBack(Range<u64>),
}

/// Writes of one blob's parts at once: each is a blocking call on a thread of the
/// runtime's pool, and every thread the pool grows costs memory (the allocator's heap
/// per thread); the page cache takes a batch in well under a millisecond, far faster
/// than any link brings one.
const WRITERS: usize = 2;

/// What the parts of one blob share.
struct Shared {
    /// Bytes received.
    received: AtomicU64,
    /// Parts continued after a cut.
    resumes: AtomicU64,
    /// A source answered a part with the whole blob.
    no_ranges: AtomicBool,
    /// Parts on the wire now.
    running: AtomicUsize,
    /// Places for a part's batch being written.
    writers: tokio::sync::Semaphore,
    /// The lead, when the blob has one.
    lead: Mutex<Lead>,
}

/// Where the lead of a blob is. It asks for its range a window at a time (each twice
/// the last), so that a split never cuts a request short: bytes a server sent past
/// where a request stops are lost, and when the reader is slower than the link (a busy
/// machine) that is all the socket buffers hold, megabytes.
#[derive(Debug, Default)]
struct Lead {
    /// Where it stops: the end of the blob's rest, or of its window when the rest went
    /// to parts.
    end: u64,
    /// Where its current request ends.
    window_end: u64,
    /// The size of its next window.
    window: u64,
    /// Where its bytes received so far end.
    at: u64,
    /// When its first bytes came, and where it was then.
    first: Option<(Instant, u64)>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            received: AtomicU64::default(),
            resumes: AtomicU64::default(),
            no_ranges: AtomicBool::default(),
            running: AtomicUsize::default(),
            writers: tokio::sync::Semaphore::new(WRITERS),
            lead: Mutex::default(),
        }
    }
}

impl Shared {
    /// A lead for `piece`: it brings all of it unless [`Shared::split_lead`] gives the
    /// rest to parts; its first window is a part's share of `parts`.
    fn start_lead(&self, piece: &Range<u64>, parts: usize) {
        let share = (piece.end - piece.start).div_ceil(parts.max(1) as u64);
        *lock(&self.lead) = Lead {
            end: piece.end,
            window_end: piece.start,
            window: share.max(MIN_PART),
            at: piece.start,
            first: None,
        };
    }

    /// The lead's next request, from `at` (where its bytes end); `None` when it has
    /// brought all it is to bring.
    fn lead_window(&self, at: u64) -> Option<Range<u64>> {
        let mut lead = lock(&self.lead);
        if at >= lead.end {
            return None;
        }
        let mut end = (at + lead.window).min(lead.end);
        // No crumb at the end: this window takes it.
        if lead.end - end < MIN_PART / 2 {
            end = lead.end;
        }
        lead.window_end = end;
        lead.window *= 2;
        Some(at..end)
    }

    /// The lead's bytes up to `at` have come (its first at `start`).
    fn lead_came(&self, at: u64, start: u64) {
        let mut lead = lock(&self.lead);
        lead.at = at;
        lead.first.get_or_insert_with(|| (Instant::now(), start));
    }

    /// Whether the lead has probed long enough; if so, the parts what lies past its
    /// current window is cut into (into `parts - 1`, the lead's window being one; none
    /// when the lead is fast enough alone), the lead then stopping at its window's end.
    /// `None` while it still probes.
    fn split_lead(&self, parts: usize) -> Option<Vec<Range<u64>>> {
        let mut lead = lock(&self.lead);
        let (since, from) = lead.first?;
        let elapsed = since.elapsed();
        if elapsed < SPLIT_PROBE {
            return None;
        }
        let rate = lead.at.saturating_sub(from) as f64 / elapsed.as_secs_f64();
        let left = lead.end.saturating_sub(lead.at);
        let rest = lead.window_end..lead.end;
        if rest.end - rest.start < 2 * MIN_PART || (left as f64) < rate * SPLIT_WORTH.as_secs_f64()
        {
            return Some(Vec::new());
        }
        lead.end = lead.window_end;
        Some(split(
            std::slice::from_ref(&rest),
            parts.saturating_sub(1).max(1),
        ))
    }
}

/// What fetching a blob in parts brought.
pub(super) struct PartsOutcome {
    /// Bytes received.
    pub received: u64,
    /// Parts continued after a cut.
    pub resumes: u64,
}

impl Fetcher {
    /// Fetches `blob` in parts into the cache (the caller holds its lock). `None` when
    /// a source ignored `Range`: the caller streams the blob instead, from the bytes
    /// from 0 the parts left.
    pub(super) async fn blob_parts(
        &self,
        sources: &[Endpoint],
        image: &ImageReference,
        blob: &Descriptor,
        watch: Watch<'_>,
    ) -> Result<Option<PartsOutcome>, FetchError> {
        let shared = Shared::default();
        // A blob whose parts do not hash to its digest is fetched once more.
        for round in 0..2 {
            let cache = self.cache.clone();
            let (digest, size) = (blob.digest.clone(), blob.size);
            let ranged = tokio::task::spawn_blocking(move || cache.ranged(&digest, size))
                .await
                .map_err(|e| CacheError::other(self.cache.dir(), e.to_string()))??;
            if round == 0 && ranged.done_bytes() > 0 {
                // Going on from what an earlier run (or a stream) left.
                shared.resumes.fetch_add(1, Ordering::Relaxed);
                self.transport.stats().with(&sources[0], |s| s.resumes += 1);
            }
            let ranged = Arc::new(ranged);
            let wanted = self.multipart.parts;
            let missing = ranged.missing();
            // One hole (a fresh blob): a lead that probes the link first.
            let mut lead = match missing.as_slice() {
                [whole] => {
                    shared.start_lead(whole, wanted);
                    Some(whole.clone())
                }
                _ => None,
            };
            let mut probing = lead.is_some();
            let mut queue: VecDeque<_> = if probing {
                VecDeque::new()
            } else {
                split(&missing, wanted).into()
            };
            shared.no_ranges.store(false, Ordering::Relaxed);
            let mut running = FuturesUnordered::new();
            let mut host = sources[0].host.clone();
            let mut failure = None;
            let mut tick = tokio::time::interval(PROBE_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let (width, generation) = self.transport.part_width(&host, wanted);
                // The lead first (alone on the wire: a width is at least 1).
                while running.len() < width {
                    let (piece, is_lead) = match lead.take() {
                        Some(piece) => (piece, true),
                        None => match queue.pop_front() {
                            Some(piece) => (piece, false),
                            None => break,
                        },
                    };
                    running.push(self.part(
                        sources,
                        image,
                        blob,
                        (piece, generation, is_lead),
                        &ranged,
                        watch,
                        &shared,
                    ));
                }
                let next = if probing {
                    tokio::select! {
                        next = running.next() => Some(next),
                        _ = tick.tick() => None,
                    }
                } else {
                    Some(running.next().await)
                };
                let Some(next) = next else {
                    if let Some(rest) = shared.split_lead(wanted) {
                        probing = false;
                        if !rest.is_empty() {
                            tracing::debug!(
                                "blob {} comes slowly over one connection: {} more parts",
                                blob.digest,
                                rest.len()
                            );
                        }
                        queue.extend(rest);
                    }
                    continue;
                };
                match next {
                    None => break,
                    Some(Ok((_, PartEnd::NoRanges))) => break,
                    Some(Ok((served_by, PartEnd::Whole))) => host = served_by,
                    Some(Ok((pushed_by, PartEnd::PushedBack(rest)))) => {
                        host = pushed_by;
                        queue.push_front(rest);
                    }
                    Some(Err(e)) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            // The other parts stop here; what they wrote is kept for a resume.
            drop(running);
            let saved = ranged.save();
            if let Some(e) = failure {
                return Err(e);
            }
            saved?;
            if shared.no_ranges.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let ranged = Arc::into_inner(ranged).expect("no part runs any more");
            let committed = tokio::task::spawn_blocking(move || ranged.commit())
                .await
                .map_err(|e| CacheError::other(self.cache.dir(), e.to_string()))?;
            match committed {
                Ok(_) => {
                    return Ok(Some(PartsOutcome {
                        received: shared.received.load(Ordering::Relaxed),
                        resumes: shared.resumes.load(Ordering::Relaxed),
                    }))
                }
                Err(e @ CacheError::Mismatch { .. }) => {
                    let error = RequestError::new(
                        sources
                            .iter()
                            .find(|s| s.host == host)
                            .unwrap_or(&sources[0])
                            .label
                            .clone(),
                        blob_target(image, &blob.digest),
                        Failure::Corrupt(format!("{e}: refused, fetching it again")),
                    );
                    if round == 1 {
                        return Err(error.into());
                    }
                    tracing::warn!("{error}");
                }
                Err(other) => return Err(other.into()),
            }
        }
        unreachable!("the second round returns")
    }

    /// One part, launched at width generation `generation`: a request through the
    /// transport until its bytes are on disk (or it gives its place up); returns the
    /// host that answered. The lead (when `lead`) asks a window at a time
    /// ([`Shared::lead_window`]), over the same connection.
    #[allow(clippy::too_many_arguments)]
    async fn part(
        &self,
        sources: &[Endpoint],
        image: &ImageReference,
        blob: &Descriptor,
        (piece, generation, lead): (Range<u64>, u64, bool),
        ranged: &Arc<RangedBlob>,
        watch: Watch<'_>,
        shared: &Shared,
    ) -> Result<(String, PartEnd), FetchError> {
        let _on_wire = OnWire::enter(&shared.running);
        let at = AtomicU64::new(piece.start);
        // A lead's first window is never empty (its piece is not).
        let mut range = match lead {
            true => shared.lead_window(piece.start).unwrap_or(piece),
            false => piece,
        };
        loop {
            let served = self
                .transport
                .request(
                    sources,
                    RequestKind::Other,
                    watch.slot,
                    watch.retried,
                    |endpoint| {
                        let endpoint = endpoint.clone();
                        let (range, at) = (range.clone(), &at);
                        async move {
                            let part = (range, generation, lead, at);
                            self.part_try(&endpoint, image, blob, part, ranged, watch, shared)
                                .await
                                .map(|step| match step {
                                    Step::Done(end) => Step::Done((endpoint.host.clone(), end)),
                                    Step::Progress => Step::Progress,
                                })
                        }
                    },
                )
                .await?;
            (watch.served)(served.tries);
            let next = match lead && served.value.1 == PartEnd::Whole {
                true => shared.lead_window(at.load(Ordering::Relaxed)),
                false => None,
            };
            match next {
                Some(next) => range = next,
                None => return Ok(served.value),
            }
        }
    }

    /// One try of a part (or of a window of the lead), from where it stopped (`at`) to
    /// its end.
    #[allow(clippy::too_many_arguments)]
    async fn part_try(
        &self,
        endpoint: &Endpoint,
        image: &ImageReference,
        blob: &Descriptor,
        (piece, generation, lead, at): (Range<u64>, u64, bool, &AtomicU64),
        ranged: &Arc<RangedBlob>,
        watch: Watch<'_>,
        shared: &Shared,
    ) -> Result<Step<PartEnd>, FetchError> {
        let transport: &Transport = &self.transport;
        let stats = transport.stats();
        let (start, end) = (at.load(Ordering::Relaxed), piece.end);
        if start >= end {
            return Ok(Step::Done(PartEnd::Whole));
        }
        if shared.no_ranges.load(Ordering::Relaxed) {
            return Ok(Step::Done(PartEnd::NoRanges));
        }
        let fail = |failure| {
            RequestError::new(
                endpoint.label.clone(),
                blob_target(image, &blob.digest),
                failure,
            )
        };
        let response = match transport
            .client()
            .blob_range(endpoint, image, &blob.digest, start..end)
            .await
        {
            Ok(response) => response,
            Err(e) => {
                let Failure::Status {
                    code: code @ (429 | 503),
                    retry_after,
                    ..
                } = e.failure
                else {
                    return Err(e.into());
                };
                let wanted = self.multipart.parts;
                if let Some(width) = transport.parts_pushed_back(&endpoint.host, wanted, generation)
                {
                    tracing::debug!(
                        "{} answered a part with {code}: {width} parts at once from it",
                        endpoint.label
                    );
                }
                // A wait the source asked for is the transport's to keep (for every
                // request to it); else, while other parts are on the wire, this one
                // gives its place up.
                if retry_after.is_some() || shared.running.load(Ordering::Relaxed) < 2 {
                    return Err(e.into());
                }
                stats.with(endpoint, |s| s.faults.transient += 1);
                return Ok(Step::Done(PartEnd::PushedBack(start..end)));
            }
        };
        if !response.resumed {
            shared.no_ranges.store(true, Ordering::Relaxed);
            if transport.ignores_ranges(&endpoint.host) {
                tracing::warn!(
                    "{} ignores Range (it answered a part with the whole blob): big blobs from it come over one stream",
                    endpoint.label
                );
            }
            return Ok(Step::Done(PartEnd::NoRanges));
        }
        if start > piece.start {
            shared.resumes.fetch_add(1, Ordering::Relaxed);
            stats.with(endpoint, |s| s.resumes += 1);
        }
        let mut body = response.response;
        // Bytes received and not yet written; written even if this try is dropped
        // (Ctrl-C, a deadline), so that the next run need not fetch them again.
        let mut pending = Pending {
            ranged,
            at: start,
            batch: Vec::with_capacity(WRITE_BATCH),
        };
        let mut received = 0u64;
        let outcome = loop {
            match tokio::time::timeout(self.stall_timeout, body.chunk()).await {
                Err(_) => break Err(Failure::Stalled(self.stall_timeout)),
                Ok(Err(e)) => break Err(Failure::Transport(crate::support::error_chain(&e))),
                Ok(Ok(None)) => break Ok(()),
                Ok(Ok(Some(chunk))) => {
                    if start + received + chunk.len() as u64 > end {
                        break Err(Failure::Corrupt(format!(
                            "more bytes than the {} of the part asked for",
                            end - start
                        )));
                    }
                    // Written before the batch would outgrow its buffer (never
                    // reallocated: one buffer per part, of WRITE_BATCH bytes).
                    if pending.batch.len() + chunk.len() > WRITE_BATCH {
                        let batch = std::mem::take(&mut pending.batch);
                        pending.batch = self
                            .write_batch(ranged, pending.at, batch, &shared.writers)
                            .await?;
                        pending.at = start + received;
                        at.store(pending.at, Ordering::Relaxed);
                    }
                    pending.batch.extend_from_slice(&chunk);
                    received += chunk.len() as u64;
                    (watch.progress)(chunk.len() as u64);
                    if lead {
                        shared.lead_came(start + received, start);
                    }
                }
            }
        };
        // What arrived is good whatever ended the body: keep it.
        let batch = std::mem::take(&mut pending.batch);
        self.write_batch(ranged, pending.at, batch, &shared.writers)
            .await?;
        at.store(start + received, Ordering::Relaxed);
        shared.received.fetch_add(received, Ordering::Relaxed);
        stats.with(endpoint, |s| s.bytes += received);
        let outcome = match outcome {
            Ok(()) if start + received < end => Err(Failure::Cut {
                received,
                expected: end - start,
            }),
            other => other,
        };
        match outcome {
            Ok(()) => {
                transport.part_served(&endpoint.host, self.multipart.parts);
                Ok(Step::Done(PartEnd::Whole))
            }
            Err(failure) => {
                ranged.save()?;
                if received == 0 || matches!(failure, Failure::Corrupt(_)) {
                    return Err(fail(failure).into());
                }
                stats.with(endpoint, |s| s.faults.transient += 1);
                tracing::debug!(
                    "{}; part resuming at byte {}",
                    fail(failure),
                    start + received
                );
                Ok(Step::Progress)
            }
        }
    }

    /// Writes `batch` at `offset` off the async threads, in one of the blob's `writers`
    /// places; returns the emptied buffer.
    async fn write_batch(
        &self,
        ranged: &Arc<RangedBlob>,
        offset: u64,
        batch: Vec<u8>,
        writers: &tokio::sync::Semaphore,
    ) -> Result<Vec<u8>, FetchError> {
        if batch.is_empty() {
            return Ok(batch);
        }
        let _place = writers
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let ranged = Arc::clone(ranged);
        let (written, batch) = tokio::task::spawn_blocking(move || {
            let written = ranged.write_at(offset, &batch);
            (written, batch)
        })
        .await
        .map_err(|e| CacheError::other(self.cache.dir(), e.to_string()))?;
        written?;
        let mut batch = batch;
        batch.clear();
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn pieces_of_about_equal_size() {
        let pieces = split(&[0..64 * MIB], 8);
        assert_eq!(pieces.len(), 8);
        assert!(pieces.iter().all(|p| p.end - p.start == 8 * MIB));
        assert_eq!(pieces.last().unwrap().end, 64 * MIB);
        // Never smaller than a MiB; no crumb at the end.
        let pieces = split(&[0..3 * MIB + 100], 8);
        assert_eq!(pieces, vec![0..MIB, MIB..2 * MIB, 2 * MIB..3 * MIB + 100]);
        // Holes left by an earlier run: pieces stay inside them.
        let pieces = split(&[MIB..5 * MIB, 10 * MIB..14 * MIB], 4);
        assert_eq!(
            pieces,
            vec![
                MIB..3 * MIB,
                3 * MIB..5 * MIB,
                10 * MIB..12 * MIB,
                12 * MIB..14 * MIB
            ]
        );
        assert!(split(&[], 8).is_empty());
    }

    /// A lead of 16 parts that has brought `at` bytes of `0..end` in `elapsed` since
    /// its first, asking window after window as it goes.
    fn lead(at: u64, end: u64, elapsed: Duration) -> Shared {
        let shared = Shared::default();
        shared.start_lead(&(0..end), 16);
        let mut from = 0;
        while let Some(window) = shared.lead_window(from) {
            if window.end > at {
                break;
            }
            from = window.end;
        }
        shared.lead_came(at, 0);
        lock(&shared.lead).first = Some((Instant::now() - elapsed, 0));
        shared
    }

    #[test]
    fn the_lead_asks_growing_windows_to_its_end() {
        let shared = Shared::default();
        shared.start_lead(&(0..64 * MIB), 16);
        let mut windows = Vec::new();
        let mut at = 0;
        while let Some(window) = shared.lead_window(at) {
            at = window.end;
            windows.push(window);
        }
        // A part's share first, then twice the last; the last takes what is left.
        assert_eq!(
            windows,
            vec![
                0..4 * MIB,
                4 * MIB..12 * MIB,
                12 * MIB..28 * MIB,
                28 * MIB..60 * MIB,
                60 * MIB..64 * MIB
            ]
        );
        // No crumb: a window that would leave less than half a MiB takes it.
        let shared = Shared::default();
        shared.start_lead(&(0..MIB + MIB / 4), 16);
        assert_eq!(shared.lead_window(0), Some(0..MIB + MIB / 4));
    }

    #[test]
    fn the_lead_splits_only_when_alone_it_would_be_slow() {
        let probed = SPLIT_PROBE + Duration::from_millis(50);
        // Still probing: no decision yet.
        let shared = lead(MIB, 64 * MIB, Duration::from_millis(10));
        assert_eq!(shared.split_lead(16), None);
        assert!(Shared::default().split_lead(16).is_none(), "no byte yet");
        // 1 MiB in 250 ms: the other 63 would take 16 s. The lead ends with its first
        // window (never cut short); what lies past it goes to 15 parts.
        let shared = lead(MIB, 64 * MIB, probed);
        let rest = shared.split_lead(16).unwrap();
        assert_eq!(rest.len(), 15);
        assert_eq!(rest[0].start, 4 * MIB);
        assert_eq!(rest.last().unwrap().end, 64 * MIB);
        assert_eq!(lock(&shared.lead).end, 4 * MIB);
        assert_eq!(shared.lead_window(4 * MIB), None);
        // 48 MiB in 250 ms: the other 16 take 83 ms; no parts.
        let shared = lead(48 * MIB, 64 * MIB, probed);
        assert_eq!(shared.split_lead(16), Some(Vec::new()));
        assert_eq!(lock(&shared.lead).end, 64 * MIB);
        // Slow, but too little past its window to be worth parts.
        let shared = lead(MIB, 2 * MIB, probed);
        assert_eq!(shared.split_lead(16), Some(Vec::new()));
    }
}
