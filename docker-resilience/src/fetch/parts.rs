//! Parts: a big blob fetched as several ranged requests at once, for long thin links
//! where one connection carries far less than the link (a flow's throughput falls with
//! round-trip time × √loss), as download accelerators and containerd 2.1 do.
//!
//! - A blob of at least [`Multipart::threshold`](super::Multipart::threshold) bytes is
//!   cut into up to [`Multipart::parts`](super::Multipart::parts) ranges of about equal size (those still missing, when an
//!   earlier run left some), each fetched by its own request through the
//!   [`Transport`]: retried and resumed on its own, within the source's connection
//!   budget, written at its offset into the blob's partial file
//!   ([`RangedBlob`](crate::cache::RangedBlob)) under the blob's cross-process lock.
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
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::{FetchError, Fetcher, Watch};
use crate::cache::{CacheError, RangedBlob};
use crate::registry::client::{blob_target, Endpoint, Failure, RequestError};
use crate::registry::manifest::Descriptor;
use crate::registry::transport::{RequestKind, Step, Transport};
use crate::vocab::ImageReference;

/// A part smaller than this is not worth a request of its own.
const MIN_PART: u64 = 1024 * 1024;

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
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            received: AtomicU64::default(),
            resumes: AtomicU64::default(),
            no_ranges: AtomicBool::default(),
            running: AtomicUsize::default(),
            writers: tokio::sync::Semaphore::new(WRITERS),
        }
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
            let mut queue: VecDeque<_> = split(&ranged.missing(), wanted).into();
            shared.no_ranges.store(false, Ordering::Relaxed);
            let mut running = FuturesUnordered::new();
            let mut host = sources[0].host.clone();
            let mut failure = None;
            loop {
                let (width, generation) = self.transport.part_width(&host, wanted);
                while running.len() < width {
                    let Some(piece) = queue.pop_front() else {
                        break;
                    };
                    running.push(self.part(
                        sources,
                        image,
                        blob,
                        (piece, generation),
                        &ranged,
                        watch,
                        &shared,
                    ));
                }
                match running.next().await {
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
    /// host that answered.
    #[allow(clippy::too_many_arguments)]
    async fn part(
        &self,
        sources: &[Endpoint],
        image: &ImageReference,
        blob: &Descriptor,
        (piece, generation): (Range<u64>, u64),
        ranged: &Arc<RangedBlob>,
        watch: Watch<'_>,
        shared: &Shared,
    ) -> Result<(String, PartEnd), FetchError> {
        let _on_wire = OnWire::enter(&shared.running);
        let at = AtomicU64::new(piece.start);
        let served = self
            .transport
            .request(
                sources,
                RequestKind::Other,
                watch.slot,
                watch.retried,
                |endpoint| {
                    let endpoint = endpoint.clone();
                    let (piece, at) = (piece.clone(), &at);
                    async move {
                        let part = (piece, generation, at);
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
        Ok(served.value)
    }

    /// One try of a part, from where it stopped (`at`) to its end.
    #[allow(clippy::too_many_arguments)]
    async fn part_try(
        &self,
        endpoint: &Endpoint,
        image: &ImageReference,
        blob: &Descriptor,
        (piece, generation, at): (Range<u64>, u64, &AtomicU64),
        ranged: &Arc<RangedBlob>,
        watch: Watch<'_>,
        shared: &Shared,
    ) -> Result<Step<PartEnd>, FetchError> {
        let transport: &Transport = &self.transport;
        let stats = transport.stats();
        let start = at.load(Ordering::Relaxed);
        if start >= piece.end {
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
            .blob_range(endpoint, image, &blob.digest, start..piece.end)
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
                return Ok(Step::Done(PartEnd::PushedBack(start..piece.end)));
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
                    if start + received + chunk.len() as u64 > piece.end {
                        break Err(Failure::Corrupt(format!(
                            "more bytes than the {} of the part asked for",
                            piece.end - start
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
            Ok(()) if start + received < piece.end => Err(Failure::Cut {
                received,
                expected: piece.end - start,
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
}
