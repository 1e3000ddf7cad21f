//! `export`: images from the daemon to a bundle, written once and renamed into place.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::format::{
    manifest_entry, reserved_len, zstd_trailer, BundleImage, BundleManifest, Compression,
    HashingWriter, BLOCK, FORMAT,
};
use super::{io_err, BundleError, BytesProgress};
use crate::cache::BlobCache;
use crate::deliver::archive::write_archive;
use crate::engine::{DockerEngine, Engine, EngineError};
use crate::fetch::FetchedImage;
use crate::support::chunks::blocking_stream;
use crate::vocab::{ImageReference, Wanted};

const BATCH: usize = 1 << 20;

/// Exports the `wanted` images (present in the daemon for their platforms) to a bundle
/// at `output`.
///
/// The daemon's stream is written as it comes (never held in memory) to a temporary
/// file beside `output`, renamed into place when complete; an error or `cancel`
/// leaves no file behind.
pub async fn export_bundle(
    engine: &DockerEngine,
    wanted: &[Wanted],
    output: &Path,
    compression: Compression,
    cancel: &CancellationToken,
    progress: BytesProgress,
) -> Result<BundleManifest, BundleError> {
    let os = engine.info().await?.os;
    let other = wanted.iter().find_map(|w| {
        w.platform
            .as_ref()
            .filter(|p| !p.runs_on(&os))
            .map(|p| (w, p))
    });
    if let Some((w, platform)) = other {
        return Err(BundleError::OtherOsImage {
            image: w.reference.familiar(),
            platform: platform.clone(),
            os,
        });
    }
    let references: Vec<ImageReference> = wanted.iter().map(|w| w.reference.clone()).collect();
    let present = engine.present_images(&references).await?;
    let mut entries: Vec<BundleImage> = Vec::new();
    for w in wanted {
        let name = w.reference.familiar();
        if !present.contains_for(&w.reference, w.platform.as_ref()) {
            return Err(BundleError::MissingImage {
                image: name,
                platform: w.platform.clone(),
            });
        }
        if let Some(entry) = entries.iter_mut().find(|e| e.reference == name) {
            entry.platforms.extend(w.platform.clone());
            continue;
        }
        let id = engine
            .image_id(&name)
            .await?
            .ok_or_else(|| BundleError::MissingImage {
                image: name.clone(),
                platform: None,
            })?;
        entries.push(BundleImage {
            reference: name,
            id,
            platforms: w.platform.iter().cloned().collect(),
        });
    }
    let names: Vec<&str> = entries.iter().map(|e| e.reference.as_str()).collect();
    let content = engine.save(&names).map(|c| c.map_err(BundleError::Engine));
    write_bundle(content, entries, output, compression, cancel, progress).await
}

/// Writes a bundle of images fetched into `cache` (no daemon needed): the same
/// `docker load` archive the registry-native prefetch loads.
pub async fn export_fetched(
    cache: &BlobCache,
    images: &[FetchedImage],
    output: &Path,
    compression: Compression,
    cancel: &CancellationToken,
    progress: BytesProgress,
) -> Result<BundleManifest, BundleError> {
    let mut entries: Vec<BundleImage> = Vec::new();
    for image in images {
        let name = image.wanted.reference.familiar();
        match entries.iter_mut().find(|e| e.reference == name) {
            Some(entry) => entry.platforms.push(image.platform.clone()),
            None => entries.push(BundleImage {
                reference: name,
                id: image.config.digest.clone(),
                platforms: vec![image.platform.clone()],
            }),
        }
    }
    for entry in &mut entries {
        entry.platforms.sort();
    }
    let cache = cache.clone();
    let images = images.to_vec();
    let content = blocking_stream(move |out| write_archive(&cache, &images, out)).map(|c| {
        c.map_err(|e| BundleError::Io {
            path: PathBuf::from("(archive)"),
            source: e,
        })
    });
    write_bundle(content, entries, output, compression, cancel, progress).await
}

/// What the writer thread wrote.
struct Written {
    file: File,
    content_bytes: u64,
    content_sha256: String,
    /// Bytes and sha256 of the file's compressed content.
    compressed: Option<(u64, String)>,
}

/// Writes a bundle of `entries` whose content (a `docker save` tar) is `content`:
/// to a temporary file beside `output`, renamed into place when complete.
pub(crate) async fn write_bundle<S>(
    content: S,
    entries: Vec<BundleImage>,
    output: &Path,
    compression: Compression,
    cancel: &CancellationToken,
    progress: BytesProgress,
) -> Result<BundleManifest, BundleError>
where
    S: Stream<Item = Result<Bytes, BundleError>>,
{
    let temp = temp_beside(output)?;
    let reserved = reserved_len(&entries);
    let mut file = temp.reopen().map_err(io_err(output))?;
    if compression == Compression::None {
        let placeholder = BundleManifest {
            format: FORMAT.into(),
            images: entries.clone(),
            content_bytes: 0,
            content_sha256: String::new(),
            compression: Compression::None,
            compressed_bytes: None,
            compressed_sha256: None,
        };
        file.write_all(&manifest_entry(&placeholder, reserved))
            .map_err(io_err(output))?;
    }
    // One thread hashes and writes (large buffered writes, no blocking-pool trip per
    // chunk); the async side only receives. The channel is bounded.
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let writer = tokio::task::spawn_blocking(move || write_content(file, rx, compression));
    let received = receive(content, &tx, cancel, &progress).await;
    drop(tx);
    let written = writer.await.map_err(|e| BundleError::Io {
        path: output.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    received?;
    let mut written = written.map_err(io_err(output))?;
    if written.content_bytes < 2 * BLOCK {
        return Err(BundleError::Engine(EngineError::other(format!(
            "the daemon sent {} bytes for the export",
            written.content_bytes
        ))));
    }
    let manifest = BundleManifest {
        format: FORMAT.into(),
        images: entries,
        content_bytes: written.content_bytes,
        content_sha256: written.content_sha256,
        compression,
        compressed_bytes: written.compressed.as_ref().map(|c| c.0),
        compressed_sha256: written.compressed.map(|c| c.1),
    };
    // Flushed, not fsynced (as `docker save`): the rename guarantees a complete file
    // against errors and Ctrl-C, not against power loss.
    let file = &mut written.file;
    let finished = if compression == Compression::Zstd {
        file.write_all(&zstd_trailer(&manifest))
    } else {
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&manifest_entry(&manifest, reserved)))
    };
    finished.map_err(io_err(output))?;
    drop(written.file);
    if cancel.is_cancelled() {
        return Err(BundleError::Interrupted);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // tempfile creates 0600; a bundle is an ordinary file.
        let _ = std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o644));
    }
    temp.persist(output).map_err(|e| BundleError::Io {
        path: output.to_path_buf(),
        source: e.error,
    })?;
    Ok(manifest)
}

/// A temporary file beside `output` (`.NAME.XXXX.partial`), removed unless persisted.
fn temp_beside(output: &Path) -> Result<tempfile::NamedTempFile, BundleError> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".partial")
        .tempfile_in(&dir)
        .map_err(io_err(output))
}

/// Receives the content and hands it to the writer in batches of about a MiB (the
/// daemon's chunks are small: the writer thread wakes per batch, not per chunk).
async fn receive<S>(
    content: S,
    tx: &mpsc::Sender<Bytes>,
    cancel: &CancellationToken,
    progress: &BytesProgress,
) -> Result<(), BundleError>
where
    S: Stream<Item = Result<Bytes, BundleError>>,
{
    let mut content = std::pin::pin!(content);
    let mut received = 0u64;
    let mut batch = bytes::BytesMut::with_capacity(BATCH);
    loop {
        let chunk = tokio::select! {
            c = content.next() => c,
            () = cancel.cancelled() => return Err(BundleError::Interrupted),
        };
        let Some(chunk) = chunk else {
            if !batch.is_empty() {
                let _ = tx.send(batch.split().freeze()).await;
            }
            return Ok(());
        };
        let chunk = chunk?;
        received += chunk.len() as u64;
        batch.extend_from_slice(&chunk);
        if batch.len() >= BATCH {
            if tx.send(batch.split().freeze()).await.is_err() {
                return Ok(()); // the writer failed: its error is the caller's
            }
            batch.reserve(BATCH);
            progress(received, None);
        }
    }
}

/// The writer thread: the content hashed as it is written; compressed, the file's
/// bytes hashed too.
fn write_content(
    file: File,
    mut rx: mpsc::Receiver<Bytes>,
    compression: Compression,
) -> std::io::Result<Written> {
    fn pump<W: Write>(rx: &mut mpsc::Receiver<Bytes>, out: W) -> std::io::Result<(W, u64, String)> {
        let mut content = HashingWriter {
            inner: out,
            hasher: Sha256::new(),
            bytes: 0,
        };
        while let Some(chunk) = rx.blocking_recv() {
            content.write_all(&chunk)?;
        }
        let sha256 = format!("{:x}", content.hasher.finalize());
        Ok((content.inner, content.bytes, sha256))
    }
    let into_file =
        |w: BufWriter<File>| w.into_inner().map_err(std::io::IntoInnerError::into_error);
    let buffered = BufWriter::with_capacity(1 << 20, file);
    if compression == Compression::Zstd {
        let file_bytes = HashingWriter {
            inner: buffered,
            hasher: Sha256::new(),
            bytes: 0,
        };
        let (encoder, content_bytes, content_sha256) =
            pump(&mut rx, zstd::stream::Encoder::new(file_bytes, 3)?)?;
        let file_bytes = encoder.finish()?;
        let compressed = (
            file_bytes.bytes,
            format!("{:x}", file_bytes.hasher.finalize()),
        );
        return Ok(Written {
            file: into_file(file_bytes.inner)?,
            content_bytes,
            content_sha256,
            compressed: Some(compressed),
        });
    }
    let (out, content_bytes, content_sha256) = pump(&mut rx, buffered)?;
    Ok(Written {
        file: into_file(out)?,
        content_bytes,
        content_sha256,
        compressed: None,
    })
}
