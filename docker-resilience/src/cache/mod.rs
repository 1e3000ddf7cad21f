//! Cache: a content-addressed store of the blobs drbuild fetched from registries
//! (layers, configs, manifests), on disk under the XDG cache directory, that several
//! processes share and that crashes and bit rot cannot break (the model is
//! containerd's content store).
//!
//! - **One writer per blob, across processes**: a blob is written only by the holder
//!   of its lock (`locks/sha256-…`, `flock`), so a second `drbuild` that wants the
//!   same blob waits for the download in flight and then finds it here instead of
//!   racing it. The lock dies with its process: after a `kill -9` the next writer takes
//!   over the partial file.
//! - **Partial, verified, renamed**: a blob is written to `partial/` as it arrives,
//!   kept there across cuts, stalls and Ctrl-C so that the next request resumes it with
//!   `Range`, and moves to `blobs/` (fsync, then an atomic rename) only once its sha256
//!   matches its digest. Small blobs written whole go through a temporary file of
//!   their own. Readers never see a half-written blob.
//! - **Verified on use**: a small blob (manifest, config) is hashed on every read, a
//!   large one the first time a process uses it ([`BlobCache::verify`]); one that no
//!   longer matches (bit rot, a disk error) is removed and fetched again.
//!   `drbuild cache verify [--repair]` checks them all.
//! - **Local faults are the cache's**: no space, permissions, a read-only or vanished
//!   directory are [`CacheError`]s naming the cache directory (and, for a full disk,
//!   the bytes needed), never a registry's fault.
//! - **Private**: the blobs may be private images' layers: directories are created
//!   0700 and files 0600.
//!
//! Tags fetched are remembered (`refs/`) so that a bundle can be written from the
//! cache alone. `prune` removes the least recently used blobs first.
//!
//! May import: `vocab`, `support`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::vocab::{ImageReference, Platform};

mod ranged;
pub use ranged::RangedBlob;

/// What can go wrong with the cache: a local fault, never a registry's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// Reading or writing the cache failed.
    #[error("blob cache {}: {}: {source}", dir.display(), path.display())]
    Io {
        /// The cache directory.
        dir: PathBuf,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The cache's filesystem has no room for a blob.
    #[error(
        "blob cache {}: no space left for blob {digest}: {needed} bytes needed, {available} free",
        dir.display()
    )]
    NoSpace {
        /// The cache directory.
        dir: PathBuf,
        /// The blob.
        digest: String,
        /// Bytes still to write.
        needed: u64,
        /// Bytes the filesystem has free.
        available: u64,
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

impl CacheError {
    /// An I/O failure that is not about one file.
    pub fn other(dir: &Path, why: String) -> Self {
        CacheError::Io {
            dir: dir.to_path_buf(),
            path: dir.to_path_buf(),
            source: io::Error::other(why),
        }
    }

    /// A failed write of blob `digest` of `size` bytes: a full disk says how much was
    /// needed.
    pub fn needing(self, digest: &str, size: u64) -> Self {
        match self {
            CacheError::Io { dir, source, .. }
                if source.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) =>
            {
                let available = free_bytes(&dir).unwrap_or(0);
                CacheError::NoSpace {
                    dir,
                    digest: digest.to_owned(),
                    needed: size,
                    available,
                }
            }
            other => other,
        }
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

/// Bytes free for an unprivileged writer on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
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

/// A cached blob that no longer matches its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorruptBlob {
    /// Its digest.
    pub digest: String,
    /// What its bytes hash to now.
    pub actual: String,
    /// Where it was.
    pub path: PathBuf,
    /// Whether it was removed.
    pub removed: bool,
}

impl std::fmt::Display for CorruptBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cached blob {} ({}) is corrupt: its bytes hash to {}",
            self.digest,
            self.path.display(),
            self.actual
        )
    }
}

/// What `drbuild cache verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The cache directory.
    pub dir: PathBuf,
    /// Blobs checked.
    pub checked: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs that do not match their digest (removed with `repair`).
    pub corrupt: Vec<CorruptBlob>,
    /// Files in `blobs/` that are no blob (a name that is not a digest): removed with
    /// `repair`.
    pub stray: Vec<PathBuf>,
}

impl VerifyReport {
    /// Whether no corrupt blob is left.
    pub fn is_clean(&self) -> bool {
        self.corrupt.iter().all(|c| c.removed)
    }
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

/// The right to write one blob, held until dropped (also by a process that dies).
#[derive(Debug)]
pub struct BlobLock {
    _file: File,
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

    /// Opens (creating, private to its owner) a cache in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, CacheError> {
        let cache = BlobCache { root: dir.into() };
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        for sub in ["", "blobs/sha256", "partial", "refs", "locks"] {
            let path = cache.root.join(sub);
            builder.create(&path).map_err(cache.io(&path))?;
        }
        Ok(cache)
    }

    fn io<'a>(&'a self, path: &'a Path) -> impl Fn(io::Error) -> CacheError + 'a {
        io_error(&self.root, path)
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

    /// A temporary file of this process's beside `path`, created private.
    fn temp_beside(&self, path: &Path) -> Result<(PathBuf, File), CacheError> {
        let dir = path.parent().unwrap_or(&self.root);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("blob");
        for _ in 0..16 {
            let temp = dir.join(format!(
                ".{name}.{}.{:08x}.tmp",
                std::process::id(),
                rand::random::<u32>()
            ));
            match private_file().create_new(true).open(&temp) {
                Ok(file) => return Ok((temp, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.io(&temp)(e)),
            }
        }
        Err(CacheError::other(dir, "no free temporary name".into()))
    }

    /// Writes `data` to `path` whole or not at all: a private temporary file, fsync,
    /// then a rename over it.
    fn write_atomic(&self, path: &Path, data: &[u8]) -> Result<(), CacheError> {
        let (temp, mut file) = self.temp_beside(path)?;
        let written = file
            .write_all(data)
            .and_then(|()| file.sync_all())
            .map_err(self.io(&temp));
        drop(file);
        let renamed = written.and_then(|()| fs::rename(&temp, path).map_err(self.io(path)));
        if renamed.is_err() {
            let _ = fs::remove_file(&temp);
        }
        renamed
    }

    /// Takes the right to write blob `digest` if no other writer (of this or another
    /// process) holds it; `None` while one does.
    pub fn try_lock(&self, digest: &str) -> Result<Option<BlobLock>, CacheError> {
        let path = self
            .root
            .join("locks")
            .join(format!("sha256-{}", hex(digest)?));
        let file = private_file()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(self.io(&path))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(BlobLock { _file: file })),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {
                Ok(None)
            }
            Err(e) => Err(self.io(&path)(e.into())),
        }
    }

    /// Fails at once, naming the bytes needed, when the cache's filesystem has no room
    /// for the rest of blob `digest` (`size` bytes in all).
    pub fn has_room_for(&self, digest: &str, size: u64) -> Result<(), CacheError> {
        let needed = size.saturating_sub(self.partial_len(digest));
        match free_bytes(&self.root) {
            Some(available) if available < needed => Err(CacheError::NoSpace {
                dir: self.root.clone(),
                digest: digest.to_owned(),
                needed,
                available,
            }),
            _ => Ok(()),
        }
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

    /// Bytes of a partial download kept for `digest` (0 when none); of one written in
    /// parts, the bytes of its ranges on disk.
    pub fn partial_len(&self, digest: &str) -> u64 {
        let Ok(path) = self.partial_path(digest) else {
            return 0;
        };
        let len = fs::metadata(&path).map_or(0, |m| m.len());
        match ranged::read_ranges(&path) {
            Some(done) => done
                .iter()
                .map(|r| r.end.min(len).saturating_sub(r.start))
                .sum(),
            None => len,
        }
    }

    /// A small blob's bytes (manifests and configs), verified: one that no longer
    /// matches its digest is removed (and said) and reads as absent.
    pub fn read(&self, digest: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.path(digest)?;
        match fs::read(&path) {
            Ok(data) => {
                let actual = digest_of(&data);
                if actual != digest {
                    let corrupt = CorruptBlob {
                        digest: digest.to_owned(),
                        actual,
                        removed: fs::remove_file(&path).is_ok(),
                        path,
                    };
                    tracing::warn!("{corrupt}: removed from the cache, fetching it again");
                    return Ok(None);
                }
                touch(&path);
                Ok(Some(data))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(&path)(e)),
        }
    }

    /// Hashes blob `digest` again: `None` when it is whole or absent, else the corrupt
    /// blob, removed.
    pub fn verify(&self, digest: &str) -> Result<Option<CorruptBlob>, CacheError> {
        let path = self.path(digest)?;
        let actual = match hash_file(&path) {
            Ok((actual, _)) => actual,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(&path)(e)),
        };
        if actual == digest {
            return Ok(None);
        }
        Ok(Some(CorruptBlob {
            digest: digest.to_owned(),
            actual,
            removed: fs::remove_file(&path).is_ok(),
            path,
        }))
    }

    /// Hashes every blob; with `repair`, removes those that do not match their digest
    /// (the next fetch brings them again) and stray files.
    pub fn verify_all(&self, repair: bool) -> Result<VerifyReport, CacheError> {
        let dir = self.root.join("blobs/sha256");
        let mut report = VerifyReport {
            dir: self.root.clone(),
            ..VerifyReport::default()
        };
        for (path, _, _) in list(&dir) {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let digest = format!("sha256:{name}");
            if hex(&digest).is_err() {
                if repair && fs::remove_file(&path).is_ok() {
                    tracing::info!("removed {} (not a blob)", path.display());
                }
                report.stray.push(path);
                continue;
            }
            let (actual, len) = match hash_file(&path) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io(&path)(e)),
            };
            report.checked += 1;
            report.bytes += len;
            if actual != digest {
                let removed = repair && fs::remove_file(&path).is_ok();
                report.corrupt.push(CorruptBlob {
                    digest,
                    actual,
                    path,
                    removed,
                });
            }
        }
        Ok(report)
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
        // A copy already there is kept when it is whole (one that rotted is replaced).
        if fs::read(&path).is_ok_and(|there| there == data) {
            touch(&path);
            return Ok(path);
        }
        self.write_atomic(&path, data)
            .map_err(|e| e.needing(digest, data.len() as u64))?;
        Ok(path)
    }

    /// A writer for `digest`: resuming the partial download kept for it (`resume`), or
    /// starting over. The bytes already there are hashed again (the hasher's state is
    /// not kept on disk). Hold the blob's lock ([`BlobCache::try_lock`]) while writing:
    /// the partial file is the lock holder's alone.
    pub fn writer(&self, digest: &str, resume: bool) -> Result<PartialBlob, CacheError> {
        let path = self.partial_path(digest)?;
        // A partial file written in parts: a stream goes on from its bytes from 0.
        if resume {
            self.linearize_partial(digest)?;
        } else {
            let _ = fs::remove_file(ranged::ranges_path(&path));
        }
        let final_path = self.path(digest)?;
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        if resume {
            match File::open(&path) {
                Ok(mut existing) => {
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        let n = existing.read(&mut buf).map_err(self.io(&path))?;
                        if n == 0 {
                            break;
                        }
                        hasher.update(&buf[..n]);
                        len += n as u64;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(&path)(e)),
            }
        }
        let file = private_file()
            .create(true)
            .append(resume)
            .write(true)
            .truncate(!resume)
            .open(&path)
            .map_err(self.io(&path))?;
        Ok(PartialBlob {
            file: io::BufWriter::with_capacity(256 * 1024, file),
            hasher,
            len,
            digest: digest.to_owned(),
            dir: self.root.clone(),
            path,
            final_path,
        })
    }

    /// Drops the partial download kept for `digest`.
    pub fn discard_partial(&self, digest: &str) {
        if let Ok(path) = self.partial_path(digest) {
            let _ = fs::remove_file(ranged::ranges_path(&path));
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
        self.write_atomic(&path, &text)
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
        for (path, len, _) in list(&self.root.join("partial")) {
            if path.extension().is_some_and(|e| e == "ranges") {
                continue;
            }
            usage.partial += 1;
            usage.partial_bytes += len;
        }
        usage
    }

    /// Removes partial downloads no writer holds, then the least recently used blobs,
    /// until the cache holds at most `max_bytes` (all of it with 0).
    pub fn prune(&self, max_bytes: u64) -> PruneReport {
        let mut report = PruneReport::default();
        for (path, len, _) in list(&self.root.join("partial")) {
            // A partial file's ranges (`….ranges`) go with it.
            let digest = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(|n| {
                    n.trim_end_matches(".ranges")
                        .replacen("sha256-", "sha256:", 1)
                })
                .unwrap_or_default();
            // A partial file being written is its writer's.
            let Ok(Some(_held)) = self.try_lock(&digest) else {
                continue;
            };
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

/// What an I/O failure on `path` of the cache in `dir` becomes.
fn io_error<'a>(dir: &'a Path, path: &'a Path) -> impl Fn(io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        dir: dir.to_path_buf(),
        path: path.to_path_buf(),
        source,
    }
}

/// Options for a new file of the cache: private to its owner.
fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).mode(0o600);
    options
}

/// A file's sha256 (`sha256:…`) and length.
fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((format!("sha256:{:x}", hasher.finalize()), len))
}

/// Files of a directory: path, size, last use (temporary files left out).
fn list(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
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
    dir: PathBuf,
    path: PathBuf,
    final_path: PathBuf,
}

impl PartialBlob {
    fn io<'a>(&'a self, path: &'a Path) -> impl Fn(io::Error) -> CacheError + 'a {
        io_error(&self.dir, path)
    }

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
        self.file.write_all(data).map_err(self.io(&self.path))?;
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    /// Keeps what was written for a later resume.
    pub fn keep(mut self) -> Result<u64, CacheError> {
        self.file.flush().map_err(self.io(&self.path))?;
        Ok(self.len)
    }

    /// Verifies the whole blob and moves it into the cache (its bytes on disk first);
    /// on a mismatch the partial file is deleted (it would resume into the same wrong
    /// bytes).
    pub fn commit(mut self) -> Result<PathBuf, CacheError> {
        self.file.flush().map_err(self.io(&self.path))?;
        let actual = format!("{:x}", self.hasher.finalize_reset());
        if format!("sha256:{actual}") != self.digest {
            let _ = fs::remove_file(&self.path);
            return Err(CacheError::Mismatch {
                digest: self.digest,
                actual,
                bytes: self.len,
            });
        }
        self.file
            .get_ref()
            .sync_all()
            .map_err(self.io(&self.path))?;
        fs::rename(&self.path, &self.final_path).map_err(self.io(&self.final_path))?;
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
    fn a_fresh_cache_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path().join("drbuild")).unwrap();
        let data = b"a private layer";
        let blob = cache.put(&digest_of(data), data).unwrap();
        let mut w = cache.writer(&digest_of(b"half"), false).unwrap();
        w.write(b"ha").unwrap();
        w.keep().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for sub in ["", "blobs", "blobs/sha256", "partial", "refs", "locks"] {
            assert_eq!(mode(&cache.dir().join(sub)), 0o700, "{sub}");
        }
        assert_eq!(mode(&blob), 0o600);
        assert_eq!(
            mode(&cache.partial_path(&digest_of(b"half")).unwrap()),
            0o600
        );
    }

    #[test]
    fn one_writer_per_blob_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let other = BlobCache::open(dir.path()).unwrap();
        let digest = digest_of(b"layer");
        let held = cache.try_lock(&digest).unwrap().expect("free");
        // Another open file description (as another process has) is refused.
        assert!(other.try_lock(&digest).unwrap().is_none());
        assert!(other.try_lock(&digest_of(b"another")).unwrap().is_some());
        drop(held);
        assert!(other.try_lock(&digest).unwrap().is_some());
    }

    #[test]
    fn rot_at_rest_is_found_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let layer = vec![9u8; 300_000];
        let (c, l) = (digest_of(config), digest_of(&layer));
        cache.put(&c, config).unwrap();
        cache.put(&l, &layer).unwrap();
        assert!(cache.verify(&l).unwrap().is_none());
        assert!(cache.verify_all(false).unwrap().is_clean());
        for digest in [&c, &l] {
            let path = cache.path(digest).unwrap();
            let mut bytes = fs::read(&path).unwrap();
            bytes[7] ^= 1;
            fs::write(&path, bytes).unwrap();
        }
        let report = cache.verify_all(false).unwrap();
        assert_eq!((report.checked, report.corrupt.len()), (2, 2));
        assert!(!report.is_clean());
        assert!(report.corrupt[0]
            .to_string()
            .contains("is corrupt: its bytes hash to"));
        // A small blob is checked on every read: a rotten one reads as absent, and goes.
        assert_eq!(cache.read(&c).unwrap(), None);
        assert!(!cache.contains(&c));
        let found = cache.verify(&l).unwrap().expect("corrupt");
        assert!(found.removed && !cache.contains(&l));
        // Put again, whole; repair leaves a clean cache.
        cache.put(&c, config).unwrap();
        let path = cache.path(&c).unwrap();
        fs::write(&path, b"rotten").unwrap();
        cache.put(&c, config).unwrap();
        assert_eq!(cache.read(&c).unwrap().as_deref(), Some(&config[..]));
        fs::write(&path, b"rotten").unwrap();
        let repaired = cache.verify_all(true).unwrap();
        assert!(repaired.is_clean() && repaired.corrupt.len() == 1);
        assert!(cache.verify_all(false).unwrap().corrupt.is_empty());
    }

    #[test]
    fn local_faults_name_the_cache_and_what_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let digest = digest_of(b"huge");
        let e = cache.has_room_for(&digest, u64::MAX).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "blob cache {}: no space left for blob {digest}",
                dir.path().display()
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} bytes needed", u64::MAX)),
            "{text}"
        );
        cache.has_room_for(&digest, 10).unwrap();
        let enospc = CacheError::Io {
            dir: dir.path().to_path_buf(),
            path: dir.path().join("partial/x"),
            source: io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()),
        };
        assert!(matches!(
            enospc.needing(&digest, 64),
            CacheError::NoSpace { needed: 64, .. }
        ));
        // A vanished directory is the cache's fault, named.
        fs::remove_dir_all(dir.path().join("partial")).unwrap();
        let e = cache.writer(&digest, false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("blob cache {}:", dir.path().display())),
            "{e}"
        );
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
