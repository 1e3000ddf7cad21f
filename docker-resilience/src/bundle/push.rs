//! `import --to REGISTRY`: a verified bundle's images pushed into a registry (an
//! air-gapped site's), their blobs and manifests exactly as the bundle holds them.
//!
//! The bundle must carry registry manifests: an OCI layout (`index.json` naming each
//! image, `blobs/sha256/…`), as `export` writes from the registries and as `docker
//! save` writes on the containerd image store. A graph-driver daemon's `docker save`
//! holds unpacked layers only: it is refused, naming how to export one that pushes.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::format::Compression;
use super::verify::verify_bundle;
use super::{io_err, BundleError, BytesProgress};
use crate::cache::BlobCache;
use crate::registry::client::Endpoint;
use crate::registry::manifest::Descriptor;
use crate::registry::transport::Transport;
use crate::sync::{scratch_cache, CachedPush, SyncItem};
use crate::vocab::ImageReference;

#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// Verifies the bundle at `path`, then pushes each image it names into the registry at
/// `endpoint`. Nothing is pushed from a bundle that does not verify.
pub async fn push_bundle(
    path: &Path,
    transport: Arc<Transport>,
    endpoint: &Endpoint,
    progress: BytesProgress,
) -> Result<Vec<SyncItem>, BundleError> {
    let owned = path.to_path_buf();
    let (scratch, cache, images) = tokio::task::spawn_blocking(move || {
        let manifest = verify_bundle(&owned, &progress)?;
        let (scratch, cache) = scratch_cache().map_err(io_err(&owned))?;
        let zstd_bytes = manifest
            .compressed_bytes
            .filter(|_| manifest.compression == Compression::Zstd);
        let index = unpack(&owned, zstd_bytes, &cache)?;
        let images = named_images(&owned, index)?;
        Ok::<_, BundleError>((scratch, cache, images))
    })
    .await
    .map_err(|e| BundleError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })??;
    let push = CachedPush::new(transport, endpoint, &cache);
    let mut items = Vec::new();
    for (name, top) in &images {
        items.push(push.push(name, top).await);
    }
    drop(scratch);
    Ok(items)
}

/// Writes the bundle's blobs into `cache` (each verified by digest); returns its
/// `index.json`, if it has one.
fn unpack(
    path: &Path,
    zstd_bytes: Option<u64>,
    cache: &BlobCache,
) -> Result<Option<Vec<u8>>, BundleError> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let reader: Box<dyn Read> = match zstd_bytes {
        Some(len) => {
            Box::new(zstd::stream::read::Decoder::new(file.take(len)).map_err(io_err(path))?)
        }
        None => Box::new(std::io::BufReader::with_capacity(256 * 1024, file)),
    };
    let mut archive = tar::Archive::new(reader);
    let mut index = None;
    for entry in archive.entries().map_err(io_err(path))? {
        let mut entry = entry.map_err(io_err(path))?;
        let name = entry
            .path()
            .map_err(io_err(path))?
            .to_string_lossy()
            .into_owned();
        let name = name.trim_start_matches("./");
        if name == "index.json" {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(io_err(path))?;
            index = Some(bytes);
        } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            if hex.is_empty() {
                continue;
            }
            let digest = format!("sha256:{hex}");
            let mut writer = cache
                .writer(&digest, false)
                .map_err(|e| not_pushable(path, e.to_string()))?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = entry.read(&mut buf).map_err(io_err(path))?;
                if n == 0 {
                    break;
                }
                writer
                    .write(&buf[..n])
                    .map_err(|e| not_pushable(path, e.to_string()))?;
            }
            writer
                .commit()
                .map_err(|e| not_pushable(path, format!("blob {digest}: {e}")))?;
        }
    }
    Ok(index)
}

/// The images `index.json` names (`io.containerd.image.name`).
fn named_images(
    path: &Path,
    index: Option<Vec<u8>>,
) -> Result<Vec<(ImageReference, Descriptor)>, BundleError> {
    let Some(index) = index else {
        return Err(not_pushable(
            path,
            "it holds no registry manifests (a graph-driver daemon's `docker save`, layers unpacked): export it with `drbuild export --via registry` to push it".into(),
        ));
    };
    let index: Index = serde_json::from_slice(&index)
        .map_err(|e| not_pushable(path, format!("unreadable index.json: {e}")))?;
    let mut images = Vec::new();
    for entry in index.manifests {
        let Some(name) = entry.annotations.get("io.containerd.image.name") else {
            continue;
        };
        let Ok(name) = name.parse::<ImageReference>() else {
            continue;
        };
        images.push((
            name,
            Descriptor {
                media_type: entry.media_type,
                digest: entry.digest,
                size: entry.size,
                platform: None,
            },
        ));
    }
    if images.is_empty() {
        return Err(not_pushable(path, "its index.json names no image".into()));
    }
    Ok(images)
}

fn not_pushable(path: &Path, reason: String) -> BundleError {
    BundleError::NotPushable {
        path: path.to_path_buf(),
        reason,
    }
}
