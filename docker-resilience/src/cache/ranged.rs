//! A blob written in parts at their offsets (several ranged requests at once), into
//! the same partial file a single stream appends to.
//!
//! Which byte ranges are on disk is kept beside the partial file
//! (`partial/sha256-….ranges`, one `START END` line per range, replaced atomically
//! every few MiB and whenever a part stops), so that a later run, after a cut or a
//! `kill -9`, asks only for the ranges still missing. The blob is hashed as the
//! contiguous prefix from byte 0 grows (bytes that arrive in order are hashed as they
//! come; a part that finished ahead is read back when the prefix reaches it), so the
//! digest is known when the last byte lands, and checked once, at commit.
//!
//! Hold the blob's lock ([`BlobCache::try_lock`]) while writing, as for a stream.

// Vectors of one range are ranges on disk, not ranges to collect.
#![allow(clippy::single_range_in_vec_init)]

use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::{io_error, private_file, BlobCache, CacheError};
use crate::support::lock;

/// New bytes after which the ranges on disk are written down again (what a `kill -9`
/// can cost at most, per blob).
const SAVE_EVERY: u64 = 8 * 1024 * 1024;

/// A blob being written in parts; see the module's documentation.
#[derive(Debug)]
pub struct RangedBlob {
    file: File,
    size: u64,
    digest: String,
    dir: PathBuf,
    path: PathBuf,
    ranges_path: PathBuf,
    final_path: PathBuf,
    state: Mutex<State>,
    /// Committed or refused: nothing to write down when dropped.
    ended: bool,
}

#[derive(Debug)]
struct State {
    /// Ranges on disk: sorted, disjoint, not touching.
    done: Vec<Range<u64>>,
    hasher: Sha256,
    /// Bytes from 0 hashed so far.
    hashed: u64,
    /// Bytes written since the ranges were last written down.
    unsaved: u64,
}

/// The path of the ranges kept beside a partial file.
pub(super) fn ranges_path(partial: &Path) -> PathBuf {
    let mut name = partial.file_name().unwrap_or_default().to_os_string();
    name.push(".ranges");
    partial.with_file_name(name)
}

/// Ranges written down beside a partial file (`None` when there are none, or they
/// cannot be read: the partial file is then not to be trusted beyond its length).
pub(super) fn read_ranges(partial: &Path) -> Option<Vec<Range<u64>>> {
    let text = fs::read_to_string(ranges_path(partial)).ok()?;
    let mut out = Vec::new();
    for line in text.lines() {
        let (start, end) = line.split_once(' ')?;
        let (start, end) = (start.parse().ok()?, end.parse().ok()?);
        if start < end {
            insert(&mut out, start..end);
        }
    }
    Some(out)
}

/// Adds `new` to sorted, disjoint ranges, merging what it touches.
fn insert(ranges: &mut Vec<Range<u64>>, new: Range<u64>) {
    let mut merged = new;
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for r in ranges.drain(..) {
        if r.end < merged.start || r.start > merged.end {
            out.push(r);
        } else {
            merged = merged.start.min(r.start)..merged.end.max(r.end);
        }
    }
    let at = out.partition_point(|r| r.start < merged.start);
    out.insert(at, merged);
    *ranges = out;
}

/// The ranges of `0..size` not in `done`.
fn complement(done: &[Range<u64>], size: u64) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut at = 0;
    for r in done {
        if r.start > at {
            out.push(at..r.start.min(size));
        }
        at = at.max(r.end);
    }
    if at < size {
        out.push(at..size);
    }
    out.retain(|r| !r.is_empty());
    out
}

impl BlobCache {
    /// A writer of blob `digest` (`size` bytes) in parts, keeping what an earlier
    /// run wrote: the ranges written down beside the partial file, or a stream's
    /// partial file (its bytes from 0).
    pub fn ranged(&self, digest: &str, size: u64) -> Result<RangedBlob, CacheError> {
        let path = self.partial_path(digest)?;
        let final_path = self.path(digest)?;
        let file = private_file()
            .read(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(self.io(&path))?;
        let len = file.metadata().map_err(self.io(&path))?.len();
        // Ranges written down are trusted up to the file's length (and the blob's size).
        let mut done: Vec<Range<u64>> = read_ranges(&path)
            .unwrap_or_else(|| vec![0..len])
            .into_iter()
            .map(|r| r.start..r.end.min(len).min(size))
            .filter(|r| !r.is_empty())
            .collect();
        done.sort_by_key(|r| r.start);
        let blob = RangedBlob {
            file,
            size,
            digest: digest.to_owned(),
            dir: self.root.clone(),
            ranges_path: ranges_path(&path),
            path,
            final_path,
            state: Mutex::new(State {
                done,
                hasher: Sha256::new(),
                hashed: 0,
                unsaved: 0,
            }),
            ended: false,
        };
        {
            let mut state = lock(&blob.state);
            blob.catch_up(&mut state)?;
        }
        Ok(blob)
    }

    /// Makes a partial file written in parts one a stream can append to: only its bytes
    /// from 0 up to the first range missing are kept.
    pub fn linearize_partial(&self, digest: &str) -> Result<(), CacheError> {
        let path = self.partial_path(digest)?;
        let Some(done) = read_ranges(&path) else {
            return Ok(());
        };
        let prefix = done.first().filter(|r| r.start == 0).map_or(0, |r| r.end);
        match fs::OpenOptions::new().write(true).open(&path) {
            Ok(file) => file.set_len(prefix).map_err(self.io(&path))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io(&path)(e)),
        }
        let ranges = ranges_path(&path);
        fs::remove_file(&ranges).map_err(self.io(&ranges))
    }
}

impl RangedBlob {
    fn io<'a>(&'a self, path: &'a Path) -> impl Fn(io::Error) -> CacheError + 'a {
        io_error(&self.dir, path)
    }

    /// The ranges still missing, in order.
    pub fn missing(&self) -> Vec<Range<u64>> {
        complement(&lock(&self.state).done, self.size)
    }

    /// Bytes on disk.
    pub fn done_bytes(&self) -> u64 {
        lock(&self.state).done.iter().map(|r| r.end - r.start).sum()
    }

    /// Writes `data` at `offset` (blocking: call it off the async threads).
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), CacheError> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset + data.len() as u64;
        if end > self.size {
            return Err(CacheError::other(
                &self.dir,
                format!(
                    "blob {}: bytes {offset}..{end} past its size {}",
                    self.digest, self.size
                ),
            ));
        }
        self.file
            .write_all_at(data, offset)
            .map_err(|e| self.io(&self.path)(e).needing(&self.digest, self.size))?;
        let mut state = lock(&self.state);
        insert(&mut state.done, offset..end);
        if state.hashed == offset {
            state.hasher.update(data);
            state.hashed = end;
        }
        self.catch_up(&mut state)?;
        state.unsaved += data.len() as u64;
        if state.unsaved >= SAVE_EVERY {
            self.save_locked(&mut state)?;
        }
        Ok(())
    }

    /// Hashes what is on disk from the hashed prefix up to the first range missing.
    fn catch_up(&self, state: &mut State) -> Result<(), CacheError> {
        let reach = state
            .done
            .iter()
            .find(|r| r.start <= state.hashed && state.hashed < r.end)
            .map(|r| r.end);
        let Some(reach) = reach else {
            return Ok(());
        };
        let mut buf = vec![0u8; 256 * 1024];
        while state.hashed < reach {
            let want = buf.len().min((reach - state.hashed) as usize);
            let n = self
                .file
                .read_at(&mut buf[..want], state.hashed)
                .map_err(self.io(&self.path))?;
            if n == 0 {
                // Written down but not there (a crash before the bytes reached the
                // disk): forget the ranges from here on.
                let hashed = state.hashed;
                state.done.retain(|r| r.end <= hashed);
                break;
            }
            state.hasher.update(&buf[..n]);
            state.hashed += n as u64;
        }
        Ok(())
    }

    /// Writes down the ranges on disk (atomically), for a later run to resume.
    pub fn save(&self) -> Result<(), CacheError> {
        self.save_locked(&mut lock(&self.state))
    }

    fn save_locked(&self, state: &mut State) -> Result<(), CacheError> {
        let text: String = state
            .done
            .iter()
            .map(|r| format!("{} {}\n", r.start, r.end))
            .collect();
        let temp = self.ranges_path.with_extension(format!(
            "ranges.{}.{:08x}.tmp",
            std::process::id(),
            rand::random::<u32>()
        ));
        let written = fs::write(&temp, text)
            .and_then(|()| fs::rename(&temp, &self.ranges_path))
            .map_err(self.io(&self.ranges_path));
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        state.unsaved = 0;
        written
    }

    /// Verifies the whole blob and moves it into the cache (its bytes on disk first);
    /// on a mismatch the partial file is deleted (its ranges would resume into the
    /// same wrong bytes).
    pub fn commit(mut self) -> Result<PathBuf, CacheError> {
        self.ended = true;
        let mut state = lock(&self.state);
        self.catch_up(&mut state)?;
        let whole = state.hashed == self.size;
        let actual = format!("{:x}", state.hasher.finalize_reset());
        let hashed = state.hashed;
        drop(state);
        if !whole || format!("sha256:{actual}") != self.digest {
            let _ = fs::remove_file(&self.path);
            let _ = fs::remove_file(&self.ranges_path);
            return Err(CacheError::Mismatch {
                digest: self.digest.clone(),
                actual,
                bytes: hashed,
            });
        }
        self.file.sync_all().map_err(self.io(&self.path))?;
        fs::rename(&self.path, &self.final_path).map_err(self.io(&self.final_path))?;
        let _ = fs::remove_file(&self.ranges_path);
        Ok(self.final_path.clone())
    }
}

impl Drop for RangedBlob {
    /// A fetch cancelled (Ctrl-C, a deadline) or failed keeps what it wrote: the ranges
    /// on disk are written down for the next run.
    fn drop(&mut self) {
        if !self.ended {
            let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
            if state.unsaved > 0 {
                let mut state = std::mem::replace(
                    state,
                    State {
                        done: Vec::new(),
                        hasher: Sha256::new(),
                        hashed: 0,
                        unsaved: 0,
                    },
                );
                let _ = self.save_locked(&mut state);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::digest_of;
    use super::*;

    #[test]
    fn ranges_merge_and_complement() {
        let mut r = Vec::new();
        insert(&mut r, 10..20);
        insert(&mut r, 30..40);
        insert(&mut r, 0..5);
        assert_eq!(r, vec![0..5, 10..20, 30..40]);
        insert(&mut r, 20..30);
        assert_eq!(r, vec![0..5, 10..40]);
        assert_eq!(complement(&r, 50), vec![5..10, 40..50]);
        insert(&mut r, 3..45);
        assert_eq!(r, vec![0..45]);
        assert_eq!(complement(&r, 45), Vec::<Range<u64>>::new());
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn parts_out_of_order_commit_verified() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let blob = data(1_000_000);
        let digest = digest_of(&blob);
        let w = cache.ranged(&digest, blob.len() as u64).unwrap();
        for (start, end) in [(700_000, 1_000_000), (300_000, 700_000), (0, 300_000)] {
            for at in (start..end).step_by(65_536) {
                let stop = (at + 65_536).min(end);
                w.write_at(at as u64, &blob[at..stop]).unwrap();
            }
        }
        assert!(w.missing().is_empty());
        let path = w.commit().unwrap();
        assert_eq!(fs::read(path).unwrap(), blob);
        assert_eq!(cache.partial_len(&digest), 0);
        assert!(!ranges_path(&cache.partial_path(&digest).unwrap()).exists());
    }

    #[test]
    fn a_later_writer_resumes_only_the_missing_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let blob = data(100_000);
        let digest = digest_of(&blob);
        let w = cache.ranged(&digest, 100_000).unwrap();
        w.write_at(0, &blob[..10_000]).unwrap();
        w.write_at(50_000, &blob[50_000..60_000]).unwrap();
        w.save().unwrap();
        drop(w);
        let w = cache.ranged(&digest, 100_000).unwrap();
        assert_eq!(w.missing(), vec![10_000..50_000, 60_000..100_000]);
        assert_eq!(w.done_bytes(), 20_000);
        w.write_at(60_000, &blob[60_000..]).unwrap();
        w.write_at(10_000, &blob[10_000..50_000]).unwrap();
        w.commit().unwrap();
        assert!(cache.contains(&digest));
    }

    #[test]
    fn a_dropped_writer_writes_its_ranges_down() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let blob = data(100_000);
        let digest = digest_of(&blob);
        let w = cache.ranged(&digest, 100_000).unwrap();
        w.write_at(20_000, &blob[20_000..30_000]).unwrap();
        drop(w);
        let w = cache.ranged(&digest, 100_000).unwrap();
        assert_eq!(w.missing(), vec![0..20_000, 30_000..100_000]);
    }

    #[test]
    fn a_stream_takes_over_the_prefix_and_parts_take_over_a_stream() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let blob = data(100_000);
        let digest = digest_of(&blob);
        let w = cache.ranged(&digest, 100_000).unwrap();
        w.write_at(0, &blob[..30_000]).unwrap();
        w.write_at(70_000, &blob[70_000..]).unwrap();
        w.save().unwrap();
        drop(w);
        cache.linearize_partial(&digest).unwrap();
        assert_eq!(cache.partial_len(&digest), 30_000);
        let mut s = cache.writer(&digest, true).unwrap();
        s.write(&blob[30_000..40_000]).unwrap();
        s.keep().unwrap();
        // Parts again, over the stream's partial file.
        let w = cache.ranged(&digest, 100_000).unwrap();
        assert_eq!(w.missing(), vec![40_000..100_000]);
        w.write_at(40_000, &blob[40_000..]).unwrap();
        w.commit().unwrap();
        assert!(cache.contains(&digest));
    }

    #[test]
    fn wrong_bytes_are_refused_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let blob = data(10_000);
        let digest = digest_of(&blob);
        let w = cache.ranged(&digest, 10_000).unwrap();
        w.write_at(5_000, &blob[5_000..]).unwrap();
        w.write_at(0, &[0u8; 5_000]).unwrap();
        assert!(matches!(
            w.commit(),
            Err(CacheError::Mismatch { bytes: 10_000, .. })
        ));
        assert_eq!(cache.partial_len(&digest), 0);
        let w = cache.ranged(&digest, 10_000).unwrap();
        assert_eq!(w.missing(), vec![0..10_000]);
        assert!(w.write_at(9_999, b"too far").is_err());
    }
}
