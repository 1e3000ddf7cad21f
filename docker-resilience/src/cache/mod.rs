//! Cache: a content-addressed store of the blobs drbuild fetched from registries
//! (layers, configs, manifests), on disk under the XDG cache directory.
//!
//! A blob is written to `partial/` as it arrives, kept there across cuts, stalls and
//! Ctrl-C so that the next request resumes it with `Range`, and moves to `blobs/` only
//! once its sha256 matches its digest: nothing unverified is ever read from the cache.
//! A mismatch deletes the partial blob. Tags fetched are remembered (`refs/`) so that a
//! bundle can be written from the cache alone. `prune` removes the least recently used
//! blobs first.
//!
//! May import: `vocab`, `support`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::vocab::{ImageReference, Platform};

/// What can go wrong with a cached blob.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// Reading or writing the cache failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The bytes received do not hash to the digest asked for (a corrupt blob).
    #[error(
        "blob {digest}: received {bytes} bytes that hash to sha256:{actual}, not to its digest"
    )]
    Mismatch {
        /// The digest asked for.
        digest: String,
        /// What the bytes hash to.
        actual: String,
        /// How many bytes.
        bytes: u64,
    },
    /// A digest this cache cannot check.
    #[error("unsupported digest `{0}` (sha256 only)")]
    UnsupportedDigest(String),
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The hex part of a `sha256:…` digest.
fn hex(digest: &str) -> Result<&str, CacheError> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| CacheError::UnsupportedDigest(digest.to_owned()))
}

/// The sha256 digest of some bytes (`sha256:…`).
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// How much the cache holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CacheUsage {
    /// The cache directory.
    pub dir: PathBuf,
    /// Verified blobs.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Partial downloads kept for resuming.
    pub partial: u64,
    /// Their bytes.
    pub partial_bytes: u64,
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Blobs (and partial downloads) removed.
    pub removed: u64,
    /// Their bytes.
    pub freed_bytes: u64,
    /// What is left.
    pub usage: CacheUsage,
}

/// A tag remembered: the manifest it pointed to when it was fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedRef {
    /// The image.
    pub reference: ImageReference,
    /// The digest of its top manifest (an index or a manifest).
    pub digest: String,
    /// That manifest's media type.
    pub media_type: String,
    /// The platform manifests fetched, with their digests and media types.
    #[serde(default)]
    pub platforms: Vec<(Platform, String, String)>,
}

/// The blob cache.
#[derive(Debug, Clone)]
pub struct BlobCache {
    root: PathBuf,
}

impl BlobCache {
    /// `$XDG_CACHE_HOME/drbuild`, else `~/.cache/drbuild`, else a directory under the
    /// system's temporary directory.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("drbuild");
        }
        if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(home).join(".cache").join("drbuild");
        }
        std::env::temp_dir().join("drbuild-cache")
    }

    /// Opens (creating) a cache in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, CacheError> {
        let root = dir.into();
        for sub in ["blobs/sha256", "partial", "refs"] {
            let path = root.join(sub);
            fs::create_dir_all(&path).map_err(io_err(&path))?;
        }
        Ok(BlobCache { root })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Where a verified blob lives.
    pub fn path(&self, digest: &str) -> Result<PathBuf, CacheError> {
        Ok(self.root.join("blobs/sha256").join(hex(digest)?))
    }

    fn partial_path(&self, digest: &str) -> Result<PathBuf, CacheError> {
        Ok(self
            .root
            .join("partial")
            .join(format!("sha256-{}", hex(digest)?)))
    }

    /// Whether a verified blob is there (and marks it used, for pruning).
    pub fn contains(&self, digest: &str) -> bool {
        let Ok(path) = self.path(digest) else {
            return false;
        };
        let found = path.is_file();
        if found {
            touch(&path);
        }
        found
    }

    /// Bytes of a partial download kept for `digest` (0 when none).
    pub fn partial_len(&self, digest: &str) -> u64 {
        self.partial_path(digest)
            .ok()
            .and_then(|p| fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    }

    /// A verified blob's bytes (small blobs: manifests and configs).
    pub fn read(&self, digest: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.path(digest)?;
        match fs::read(&path) {
            Ok(data) => {
                touch(&path);
                Ok(Some(data))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Stores a small blob held in memory, verified first.
    pub fn put(&self, digest: &str, data: &[u8]) -> Result<PathBuf, CacheError> {
        let actual = digest_of(data);
        if actual != digest {
            return Err(CacheError::Mismatch {
                digest: digest.to_owned(),
                actual: actual.trim_start_matches("sha256:").to_owned(),
                bytes: data.len() as u64,
            });
        }
        let path = self.path(digest)?;
        if path.is_file() {
            touch(&path);
            return Ok(path);
        }
        let temp = path.with_extension("tmp");
        fs::write(&temp, data).map_err(io_err(&temp))?;
        fs::rename(&temp, &path).map_err(io_err(&path))?;
        Ok(path)
    }

    /// A writer for `digest`: resuming the partial download kept for it (`resume`), or
    /// starting over. The bytes already there are hashed again (the hasher's state is
    /// not kept on disk).
    pub fn writer(&self, digest: &str, resume: bool) -> Result<PartialBlob, CacheError> {
        let path = self.partial_path(digest)?;
        let final_path = self.path(digest)?;
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        if resume {
            if let Ok(mut existing) = File::open(&path) {
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = existing.read(&mut buf).map_err(io_err(&path))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    len += n as u64;
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(resume)
            .write(true)
            .truncate(!resume)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(PartialBlob {
            file: io::BufWriter::with_capacity(256 * 1024, file),
            hasher,
            len,
            digest: digest.to_owned(),
            path,
            final_path,
        })
    }

    /// Drops the partial download kept for `digest`.
    pub fn discard_partial(&self, digest: &str) {
        if let Ok(path) = self.partial_path(digest) {
            let _ = fs::remove_file(path);
        }
    }

    /// Remembers what a tag pointed to.
    pub fn remember(&self, entry: &CachedRef) -> Result<(), CacheError> {
        let path = self.ref_path(&entry.reference);
        let mut known = self
            .recall(&entry.reference)
            .filter(|k| k.digest == entry.digest);
        let merged = match known.take() {
            Some(mut k) => {
                for p in &entry.platforms {
                    if !k.platforms.contains(p) {
                        k.platforms.push(p.clone());
                    }
                }
                k
            }
            None => entry.clone(),
        };
        let text = serde_json::to_vec_pretty(&merged).unwrap_or_default();
        let temp = path.with_extension("tmp");
        fs::write(&temp, text).map_err(io_err(&temp))?;
        fs::rename(&temp, &path).map_err(io_err(&path))
    }

    /// What a tag pointed to when it was last fetched.
    pub fn recall(&self, reference: &ImageReference) -> Option<CachedRef> {
        let text = fs::read(self.ref_path(reference)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn ref_path(&self, reference: &ImageReference) -> PathBuf {
        let key = digest_of(reference.to_string().as_bytes());
        self.root.join("refs").join(&key[7..])
    }

    /// How much the cache holds.
    pub fn usage(&self) -> CacheUsage {
        let mut usage = CacheUsage {
            dir: self.root.clone(),
            ..CacheUsage::default()
        };
        for (_, len, _) in list(&self.root.join("blobs/sha256")) {
            usage.blobs += 1;
            usage.bytes += len;
        }
        for (_, len, _) in list(&self.root.join("partial")) {
            usage.partial += 1;
            usage.partial_bytes += len;
        }
        usage
    }

    /// Removes partial downloads, then the least recently used blobs, until the cache
    /// holds at most `max_bytes` (all of it with 0).
    pub fn prune(&self, max_bytes: u64) -> PruneReport {
        let mut report = PruneReport::default();
        for (path, len, _) in list(&self.root.join("partial")) {
            if fs::remove_file(&path).is_ok() {
                report.removed += 1;
                report.freed_bytes += len;
            }
        }
        let mut blobs = list(&self.root.join("blobs/sha256"));
        let mut total: u64 = blobs.iter().map(|(_, len, _)| len).sum();
        blobs.sort_by_key(|(_, _, used)| *used);
        for (path, len, _) in blobs {
            if total <= max_bytes {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= len;
                report.removed += 1;
                report.freed_bytes += len;
            }
        }
        report.usage = self.usage();
        report
    }
}

/// Files of a directory: path, size, last use.
fn list(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file().then(|| {
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                (e.path(), meta.len(), used)
            })
        })
        .collect()
}

/// Marks a blob used now (what `prune` orders by).
fn touch(path: &Path) {
    if let Ok(file) = File::options().write(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// A blob being written: appended to as it arrives, hashed as it goes, moved into the
/// cache by [`PartialBlob::commit`] only when it matches its digest.
#[derive(Debug)]
pub struct PartialBlob {
    file: io::BufWriter<File>,
    hasher: Sha256,
    len: u64,
    digest: String,
    path: PathBuf,
    final_path: PathBuf,
}

impl PartialBlob {
    /// Bytes written so far (those kept from before included).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing is written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<(), CacheError> {
        self.file.write_all(data).map_err(io_err(&self.path))?;
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    /// Keeps what was written for a later resume.
    pub fn keep(mut self) -> Result<u64, CacheError> {
        self.file.flush().map_err(io_err(&self.path))?;
        Ok(self.len)
    }

    /// Verifies the whole blob and moves it into the cache; on a mismatch the partial
    /// file is deleted (it would resume into the same wrong bytes).
    pub fn commit(mut self) -> Result<PathBuf, CacheError> {
        self.file.flush().map_err(io_err(&self.path))?;
        let actual = format!("{:x}", self.hasher.finalize_reset());
        if format!("sha256:{actual}") != self.digest {
            let _ = fs::remove_file(&self.path);
            return Err(CacheError::Mismatch {
                digest: self.digest,
                actual,
                bytes: self.len,
            });
        }
        fs::rename(&self.path, &self.final_path).map_err(io_err(&self.final_path))?;
        Ok(self.final_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_verify_and_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let data = vec![7u8; 100_000];
        let digest = digest_of(&data);
        let mut w = cache.writer(&digest, true).unwrap();
        w.write(&data[..30_000]).unwrap();
        assert_eq!(w.keep().unwrap(), 30_000);
        assert_eq!(cache.partial_len(&digest), 30_000);
        assert!(!cache.contains(&digest));
        // A later run resumes where the cut left it.
        let mut w = cache.writer(&digest, true).unwrap();
        assert_eq!(w.len(), 30_000);
        w.write(&data[30_000..]).unwrap();
        let path = w.commit().unwrap();
        assert!(cache.contains(&digest));
        assert_eq!(fs::read(path).unwrap(), data);
        assert_eq!(cache.partial_len(&digest), 0);

        // Wrong bytes of the right length: refused, and the partial is gone.
        let other = digest_of(b"the real blob");
        let mut w = cache.writer(&other, true).unwrap();
        w.write(b"the fake blob").unwrap();
        let e = w.commit().unwrap_err();
        assert!(matches!(e, CacheError::Mismatch { bytes: 13, .. }), "{e}");
        assert!(!cache.contains(&other));
        assert_eq!(cache.partial_len(&other), 0);
        assert!(cache.put(&other, b"the fake blob").is_err());
        assert!(matches!(
            cache.writer("md5:abc", true),
            Err(CacheError::UnsupportedDigest(_))
        ));
    }

    #[test]
    fn usage_prune_and_refs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let old = vec![1u8; 1000];
        let new = vec![2u8; 2000];
        cache.put(&digest_of(&old), &old).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.put(&digest_of(&new), &new).unwrap();
        let mut w = cache.writer(&digest_of(b"x"), false).unwrap();
        w.write(b"half").unwrap();
        w.keep().unwrap();
        let usage = cache.usage();
        assert_eq!((usage.blobs, usage.bytes, usage.partial), (2, 3000, 1));
        let report = cache.prune(2500);
        assert_eq!(
            report.removed, 2,
            "the partial and the least recently used blob"
        );
        assert!(!cache.contains(&digest_of(&old)));
        assert!(cache.contains(&digest_of(&new)));
        assert_eq!(cache.prune(0).usage.blobs, 0);

        let r = ImageReference::parse("alpine:3.18").unwrap();
        let arm: Platform = "linux/arm64".parse().unwrap();
        let amd: Platform = "linux/amd64".parse().unwrap();
        let entry = |p: &Platform| CachedRef {
            reference: r.clone(),
            digest: "sha256:aa".into(),
            media_type: "index".into(),
            platforms: vec![(p.clone(), "sha256:bb".into(), "manifest".into())],
        };
        cache.remember(&entry(&arm)).unwrap();
        cache.remember(&entry(&amd)).unwrap();
        assert_eq!(
            cache.recall(&r).unwrap().platforms.len(),
            2,
            "platforms add up"
        );
    }
}
