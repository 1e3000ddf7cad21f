//! Bundle: images exported to one file that proves itself whole before a
//! byte of it is loaded.
//!
//! A bundle is a tar that plain `docker load` accepts:
//!
//! ```text
//! drbuild-bundle.json   first entry: format, images (reference + id), content_bytes, content_sha256
//! …                     then `docker save`'s tar, byte for byte (its own entries and end blocks)
//! ```
//!
//! `content_bytes` and `content_sha256` cover everything after the first entry.
//! The first entry's size is reserved before the export starts and its text written
//! when the export ends (the rest of the file is never read back or copied), and the
//! file appears at its path only when complete: it is written to a temporary file
//! beside it and renamed.
//!
//! `import --to` pushes a bundle's images into a registry instead ([`push_bundle`]):
//! the blobs and manifests as fetched, so their digests stay the registry's.
//!
//! May import: `vocab`, `support`, `engine`, `cache`, `fetch`, `deliver`, `registry`, `sync`.

mod export;
mod format;
mod import;
mod push;
mod verify;

use std::path::{Path, PathBuf};

pub use export::{export_bundle, export_fetched};
pub use format::{BundleImage, BundleManifest, Compression, BUNDLE_ENTRY};
pub use import::{import_bundle, import_bundle_hosts, import_unverified, HostImport, ImportReport};
pub use push::push_bundle;
pub use verify::{check_plain_tar, verify_bundle};

use crate::engine::EngineError;
use crate::vocab::Platform;

/// What went wrong with a bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Reading or writing the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An image to export is not present (for the platform asked).
    #[error("image `{image}` is not present{} (pull it first: `drbuild prefetch`)", platform.as_ref().map(|p| format!(" for {p}")).unwrap_or_default())]
    MissingImage {
        /// The image.
        image: String,
        /// The platform asked for.
        platform: Option<Platform>,
    },
    /// An image to export from the daemon is for another OS than the daemon's: it can
    /// never be there.
    #[error("a {os} daemon cannot hold `{image}` ({platform}): export it from the registries (without `--via daemon`)")]
    OtherOsImage {
        /// The image.
        image: String,
        /// The platform asked for.
        platform: Platform,
        /// The daemon's OS.
        os: String,
    },
    /// The file is not a drbuild bundle.
    #[error("{}: not a drbuild bundle: {reason}", path.display())]
    NotABundle {
        /// The file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// The file is shorter than its manifest says.
    #[error("{}: truncated at byte {actual}: the bundle says {expected} bytes", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its size.
        actual: u64,
        /// The size it should have.
        expected: u64,
    },
    /// A compressed bundle lost its end (where its manifest is).
    #[error("{}: truncated at byte {actual}: the compressed bundle's trailer (its manifest) is missing", path.display())]
    TruncatedTrailer {
        /// The file.
        path: PathBuf,
        /// Its size.
        actual: u64,
    },
    /// The file is longer than its manifest says.
    #[error("{}: {extra} unexpected bytes after the end of the bundle", path.display())]
    TrailingData {
        /// The file.
        path: PathBuf,
        /// Bytes too many.
        extra: u64,
    },
    /// The content's checksum does not match.
    #[error("{}: checksum mismatch: content sha256 is {actual}, the bundle says {expected}", path.display())]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// What the content hashes to.
        actual: String,
        /// What the bundle says.
        expected: String,
    },
    /// The daemon refused to load the bundle.
    #[error("the daemon could not load {}: {message}", path.display())]
    Load {
        /// The file.
        path: PathBuf,
        /// The daemon's message.
        message: String,
    },
    /// Every image of the bundle is for another OS than the daemon's (a bundle for a
    /// Windows host, on a Linux daemon).
    #[error("every image of {} is for another OS than the daemon's ({os}): {}; load it on such a host, or push it into a registry with `--to REGISTRY`", path.display(), images.join(", "))]
    OtherOs {
        /// The file.
        path: PathBuf,
        /// The daemon's OS.
        os: String,
        /// The images, with their platforms.
        images: Vec<String>,
    },
    /// The run was cancelled; nothing was left behind.
    #[error("interrupted")]
    Interrupted,
    /// Images could not be fetched from their registries.
    #[error("not written: {}", errors.join("; "))]
    NotFetched {
        /// What each failed image said.
        errors: Vec<String>,
    },
    /// The bundle carries no registry manifests to push.
    #[error("{}: {reason}", path.display())]
    NotPushable {
        /// The file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
}

/// Progress: bytes done and, when known, the total.
pub type BytesProgress = std::sync::Arc<dyn Fn(u64, Option<u64>) + Send + Sync>;

pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}
