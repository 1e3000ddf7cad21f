//! `import`: a verified bundle streamed into the daemon.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::Stream;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::format::{BundleImage, BundleManifest, Compression};
use super::verify::{check_plain_tar, verify_bundle, READ_CHUNK};
use super::{io_err, BundleError, BytesProgress};
use crate::engine::DockerEngine;
use crate::support::chunks::blocking_stream;
use crate::vocab::ImageReference;

/// What an import loaded.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// The bundle's manifest.
    pub manifest: BundleManifest,
    /// What the daemon said it loaded (`Loaded image: …`).
    pub loaded: Vec<String>,
    /// The bundle's images left out: bundled only for another OS than the daemon's.
    pub skipped: Vec<String>,
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
    let os = engine.info().await.map(|i| i.os).unwrap_or_default();
    let skipped = for_another_os(&manifest, &os, path)?;
    let loaded = load_file(engine, path, zstd, skipped.clone(), cancel, &progress).await?;
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
    Ok(ImportReport {
        manifest,
        loaded,
        skipped,
    })
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
    load_file(engine, path, None, Vec::new(), cancel, &progress).await
}

/// Streams the file (its zstd part decompressed, when `zstd_bytes`) into the daemon.
async fn load_file(
    engine: &DockerEngine,
    path: &Path,
    zstd_bytes: Option<u64>,
    skip: Vec<String>,
    cancel: &CancellationToken,
    progress: &BytesProgress,
) -> Result<Vec<String>, BundleError> {
    let total = std::fs::metadata(path).map_err(io_err(path))?.len();
    progress(0, Some(total));
    let loaded = tokio::select! {
        loaded = engine.load(file_stream(path.to_path_buf(), zstd_bytes, skip)) => loaded.map_err(|e| BundleError::Load {
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
    let manifest = &manifest;
    let loads = hosts.iter().map(|host| async move {
        let host = host.clone();
        let engine = DockerEngine::connect_to(&host).await.map_err(|e| e.to_string());
        let (loaded, error) = match engine {
            Err(e) => (Vec::new(), Some(e)),
            Ok(engine) => {
                let os = engine.info().await.map(|i| i.os).unwrap_or_default();
                let skip = match for_another_os(manifest, &os, path) {
                    Ok(skipped) => skipped,
                    Err(e) => return HostImport { host, loaded: Vec::new(), error: Some(e.to_string()) },
                };
                let stream = file_stream(path.to_path_buf(), zstd, skip);
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
    Ok((manifest.clone(), hosts))
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
    skip: Vec<String>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    blocking_stream(move |out| {
        let file = std::fs::File::open(&path)?;
        let mut reader: Box<dyn Read> = match zstd_bytes {
            None => Box::new(std::io::BufReader::with_capacity(READ_CHUNK, file)),
            Some(len) => Box::new(zstd::stream::read::Decoder::new(Read::take(file, len))?),
        };
        if skip.is_empty() {
            std::io::copy(&mut reader, out).map(|_| ())
        } else {
            copy_without(reader, out, &skip)
        }
    })
}

/// The images of the bundle a daemon of `os` cannot run (each bundled only for other
/// systems: a Windows base, bundled for a Windows host, on a Linux daemon), said in one
/// line; an error when that is every image. `os` empty (not known): none.
fn for_another_os(
    manifest: &BundleManifest,
    os: &str,
    path: &Path,
) -> Result<Vec<String>, BundleError> {
    let other: Vec<&BundleImage> = manifest
        .images
        .iter()
        .filter(|i| !i.platforms.is_empty() && !i.platforms.iter().any(|p| p.runs_on(os)))
        .collect();
    if other.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = other
        .iter()
        .map(|i| {
            let platforms: Vec<String> = i.platforms.iter().map(ToString::to_string).collect();
            format!("{} ({})", i.reference, platforms.join(", "))
        })
        .collect();
    if other.len() == manifest.images.len() {
        return Err(BundleError::OtherOs {
            path: path.to_path_buf(),
            os: os.to_owned(),
            images: names,
        });
    }
    tracing::warn!(
        "not loading {} image(s) bundled for another OS than the daemon's ({os}): {}",
        other.len(),
        names.join(", ")
    );
    Ok(other.iter().map(|i| i.reference.clone()).collect())
}

/// Copies a bundle's archive with the `skip`ped images (as the bundle's manifest names
/// them) left out of its `manifest.json`
/// (the docker loader's list) and `index.json` (the OCI one). Their blobs still pass:
/// both loaders make images only of what those lists name.
fn copy_without(reader: impl Read, out: impl Write, skip: &[String]) -> std::io::Result<()> {
    let skip: Vec<ImageReference> = skip.iter().filter_map(|r| r.parse().ok()).collect();
    let skipped = |name: &str| ImageReference::parse(name).is_ok_and(|r| skip.contains(&r));
    let mut archive = tar::Archive::new(reader);
    let mut copy = tar::Builder::new(out);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let mut header = entry.header().clone();
        let path = entry.path()?.into_owned();
        let list = match path.to_str() {
            Some(DOCKER_LIST) => Some(("RepoTags", None)),
            Some(OCI_LIST) => Some(("manifests", Some(IMAGE_NAME))),
            _ => None,
        };
        let Some((field, annotation)) = list else {
            copy.append_data(&mut header, &path, &mut entry)?;
            continue;
        };
        let mut text = Vec::new();
        entry.read_to_end(&mut text)?;
        let mut value: serde_json::Value =
            serde_json::from_slice(&text).map_err(std::io::Error::other)?;
        let keep = |item: &serde_json::Value| match annotation {
            // index.json: `{"manifests": [{…, "annotations": {NAME: reference}}]}`.
            Some(key) => !item["annotations"][key].as_str().is_some_and(skipped),
            // manifest.json: `[{"RepoTags": [reference…], …}]`.
            None => !item[field]
                .as_array()
                .is_some_and(|tags| tags.iter().filter_map(|t| t.as_str()).any(skipped)),
        };
        let items = match annotation {
            Some(_) => value[field].as_array_mut(),
            None => value.as_array_mut(),
        };
        if let Some(items) = items {
            items.retain(keep);
        }
        let text = serde_json::to_vec(&value).map_err(std::io::Error::other)?;
        header.set_size(text.len() as u64);
        copy.append_data(&mut header, &path, text.as_slice())?;
    }
    copy.into_inner()?.flush()
}

/// The docker loader's list of a bundle's images.
const DOCKER_LIST: &str = "manifest.json";
/// The OCI loader's list.
const OCI_LIST: &str = "index.json";
/// The annotation of an OCI list's entry naming its image.
const IMAGE_NAME: &str = "io.containerd.image.name";
