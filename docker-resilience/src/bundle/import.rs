//! `import`: a verified bundle streamed into the daemon.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::Stream;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::format::{BundleManifest, Compression};
use super::verify::{check_plain_tar, verify_bundle, READ_CHUNK};
use super::{io_err, BundleError, BytesProgress};
use crate::engine::DockerEngine;
use crate::support::chunks::blocking_stream;

/// What an import loaded.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// The bundle's manifest.
    pub manifest: BundleManifest,
    /// What the daemon said it loaded (`Loaded image: …`).
    pub loaded: Vec<String>,
}

/// Verifies a bundle, then loads it into the daemon; a bad bundle loads nothing.
pub async fn import_bundle(
    engine: &DockerEngine,
    path: &Path,
    cancel: &CancellationToken,
    progress: BytesProgress,
) -> Result<ImportReport, BundleError> {
    let manifest = verified(path, std::sync::Arc::clone(&progress), cancel).await?;
    let zstd = manifest
        .compressed_bytes
        .filter(|_| manifest.compression == Compression::Zstd);
    let loaded = load_file(engine, path, zstd, cancel, &progress).await?;
    let store = engine.features().await.image_store;
    if !store.holds_many_platforms() {
        for image in manifest.images.iter().filter(|i| i.platforms.len() > 1) {
            let platforms: Vec<String> = image.platforms.iter().map(ToString::to_string).collect();
            tracing::warn!(
                "`{}` is bundled for {}; this daemon keeps one platform per tag: it loaded the one for this host",
                image.reference,
                platforms.join(" and ")
            );
        }
    }
    Ok(ImportReport { manifest, loaded })
}

/// Loads a plain tar (`docker save`) without a bundle's proof (`import --unverified`):
/// only its entries' names are checked (none may land outside the image), then the
/// daemon reads it as `docker load` would.
pub async fn import_unverified(
    engine: &DockerEngine,
    path: &Path,
    cancel: &CancellationToken,
    progress: BytesProgress,
) -> Result<Vec<String>, BundleError> {
    blocking(path, check_plain_tar).await?;
    load_file(engine, path, None, cancel, &progress).await
}

/// Streams the file (its zstd part decompressed, when `zstd_bytes`) into the daemon.
async fn load_file(
    engine: &DockerEngine,
    path: &Path,
    zstd_bytes: Option<u64>,
    cancel: &CancellationToken,
    progress: &BytesProgress,
) -> Result<Vec<String>, BundleError> {
    let total = std::fs::metadata(path).map_err(io_err(path))?.len();
    progress(0, Some(total));
    let loaded = tokio::select! {
        loaded = engine.load(file_stream(path.to_path_buf(), zstd_bytes)) => loaded.map_err(|e| BundleError::Load {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?,
        () = cancel.cancelled() => return Err(BundleError::Interrupted),
    };
    progress(total, Some(total));
    Ok(loaded)
}

/// `check(path)` on a blocking thread (it reads the whole file).
async fn blocking<T: Send + 'static>(
    path: &Path,
    check: impl FnOnce(&Path) -> Result<T, BundleError> + Send + 'static,
) -> Result<T, BundleError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || check(&owned))
        .await
        .map_err(|e| BundleError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?
}

/// What one daemon of a many-daemon import loaded.
#[derive(Debug, Clone, Serialize)]
pub struct HostImport {
    /// The daemon.
    pub host: String,
    /// What it said it loaded.
    pub loaded: Vec<String>,
    /// Why it loaded nothing (unreachable, refused).
    pub error: Option<String>,
}

/// Verifies a bundle once, then loads it into every daemon of `hosts` in parallel
/// (each reads the file itself). A daemon that cannot be reached or refuses fails
/// alone; a bad bundle loads nowhere.
pub async fn import_bundle_hosts(
    hosts: &[String],
    path: &Path,
    cancel: &CancellationToken,
    progress: BytesProgress,
) -> Result<(BundleManifest, Vec<HostImport>), BundleError> {
    let manifest = verified(path, progress, cancel).await?;
    let zstd = manifest
        .compressed_bytes
        .filter(|_| manifest.compression == Compression::Zstd);
    let loads = hosts.iter().map(|host| async move {
        let host = host.clone();
        let engine = DockerEngine::connect_to(&host).await.map_err(|e| e.to_string());
        let (loaded, error) = match engine {
            Err(e) => (Vec::new(), Some(e)),
            Ok(engine) => {
                let stream = file_stream(path.to_path_buf(), zstd);
                tokio::select! {
                    loaded = engine.load(stream) => match loaded {
                        Ok(loaded) => (loaded, None),
                        Err(e) => (Vec::new(), Some(format!("the daemon could not load {}: {e}", path.display()))),
                    },
                    () = cancel.cancelled() => (Vec::new(), Some("interrupted".to_owned())),
                }
            }
        };
        HostImport { host, loaded, error }
    });
    let hosts = futures_util::future::join_all(loads).await;
    if cancel.is_cancelled() {
        return Err(BundleError::Interrupted);
    }
    Ok((manifest, hosts))
}

/// The bundle's manifest once the whole file is proven (on a blocking thread).
async fn verified(
    path: &Path,
    progress: BytesProgress,
    cancel: &CancellationToken,
) -> Result<BundleManifest, BundleError> {
    let manifest = blocking(path, move |p| verify_bundle(p, &progress)).await?;
    if cancel.is_cancelled() {
        return Err(BundleError::Interrupted);
    }
    Ok(manifest)
}

/// The file as a stream of chunks, read on a blocking thread with a small buffer.
fn file_stream(
    path: PathBuf,
    zstd_bytes: Option<u64>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    blocking_stream(move |out| {
        let file = std::fs::File::open(&path)?;
        match zstd_bytes {
            None => std::io::copy(
                &mut std::io::BufReader::with_capacity(READ_CHUNK, file),
                out,
            ),
            Some(len) => std::io::copy(
                &mut zstd::stream::read::Decoder::new(Read::take(file, len))?,
                out,
            ),
        }
        .map(|_| ())
    })
}
