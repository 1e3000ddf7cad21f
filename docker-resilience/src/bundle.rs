//! Offline bundles: images exported to one file that proves itself whole before a
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

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::chunks::blocking_stream;
use crate::engine::{DockerEngine, EngineError};

/// The name of the bundle's first entry.
pub const BUNDLE_ENTRY: &str = "drbuild-bundle.json";
const FORMAT: &str = "drbuild-bundle/1";
const BLOCK: u64 = 512;
const READ_CHUNK: usize = 256 * 1024;
const BATCH: usize = 1 << 20;

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
    /// An image to export is not present.
    #[error("image `{image}` is not present (pull it first: `drbuild prefetch`)")]
    MissingImage {
        /// The image.
        image: String,
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
    /// The run was cancelled; nothing was left behind.
    #[error("interrupted")]
    Interrupted,
}

/// An image inside a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleImage {
    /// The reference it is tagged with.
    pub reference: String,
    /// The image ID (`sha256:…`).
    pub id: String,
}

/// A bundle's manifest (its first entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleManifest {
    /// `drbuild-bundle/1`.
    pub format: String,
    /// The images.
    pub images: Vec<BundleImage>,
    /// Bytes after the first entry.
    pub content_bytes: u64,
    /// Their sha256, in hex.
    pub content_sha256: String,
    /// How the content is stored.
    #[serde(default, skip_serializing_if = "Compression::is_none")]
    pub compression: Compression,
    /// Bytes of compressed content (compressed bundles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed_bytes: Option<u64>,
    /// Their sha256, in hex (compressed bundles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed_sha256: Option<String>,
}

/// How a bundle's content is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// A tar that `docker load` takes as is.
    #[default]
    None,
    /// zstd frames of the tar, then the manifest in a skippable frame (for slow links;
    /// `zstd -dc FILE | docker load` also works).
    Zstd,
}

impl Compression {
    fn is_none(&self) -> bool {
        *self == Compression::None
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!("unknown compression `{other}` (none, zstd)")),
        }
    }
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const SKIPPABLE_MAGIC: u32 = 0x184d_2a50;
const TRAILER_MARK: &[u8; 8] = b"DRBNDL01";

/// The manifest of a compressed bundle as a zstd skippable frame that ends with the
/// JSON's length and a marker, so that a reader finds it from the end.
fn zstd_trailer(manifest: &BundleManifest) -> Vec<u8> {
    let json = serde_json::to_vec(manifest).unwrap_or_default();
    let data_len = json.len() + 12;
    let mut out = Vec::with_capacity(data_len + 8);
    out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    out.extend_from_slice(&u32::try_from(data_len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&u32::try_from(json.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(TRAILER_MARK);
    out
}

/// Hashes and counts what passes through to `inner`.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Progress: bytes done and, when known, the total.
pub type BytesProgress = std::sync::Arc<dyn Fn(u64, Option<u64>) + Send + Sync>;

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The size reserved for the manifest: its text with the largest numbers it can hold.
fn reserved_len(images: &[BundleImage]) -> u64 {
    let widest = BundleManifest {
        format: FORMAT.into(),
        images: images.to_vec(),
        content_bytes: u64::MAX,
        content_sha256: "0".repeat(64),
        compression: Compression::None,
        compressed_bytes: None,
        compressed_sha256: None,
    };
    serde_json::to_vec(&widest).map_or(0, |v| v.len() as u64) + 1
}

fn padded(len: u64) -> u64 {
    len.div_ceil(BLOCK) * BLOCK
}

fn manifest_entry(manifest: &BundleManifest, reserved: u64) -> Vec<u8> {
    let mut text = serde_json::to_vec(manifest).unwrap_or_default();
    text.resize(reserved as usize, b' ');
    text.push(b'\n');
    let mut header = tar::Header::new_ustar();
    let _ = header.set_path(BUNDLE_ENTRY);
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    let data_len = text.len() as u64;
    out.extend_from_slice(&text);
    out.resize((BLOCK + padded(data_len)) as usize, 0);
    out
}

/// Exports `images` (present in the daemon) to a bundle at `output`.
///
/// The daemon's stream is written as it comes (never held in memory) to a temporary
/// file beside `output`, renamed into place when complete; an error or `cancel`
/// leaves no file behind.
pub async fn export_bundle(
    engine: &DockerEngine,
    images: &[String],
    output: &Path,
    compression: Compression,
    cancel: &CancellationToken,
    progress: BytesProgress,
) -> Result<BundleManifest, BundleError> {
    let mut entries = Vec::new();
    for image in images {
        let inspect = engine
            .docker()
            .inspect_image(image)
            .await
            .map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                } => BundleError::MissingImage {
                    image: image.clone(),
                },
                other => BundleError::Engine(EngineError::Daemon {
                    status: None,
                    message: other.to_string(),
                }),
            })?;
        entries.push(BundleImage {
            reference: image.clone(),
            id: inspect.id.unwrap_or_default(),
        });
    }
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".partial")
        .tempfile_in(&dir)
        .map_err(io_err(output))?;
    let reserved = reserved_len(&entries);
    let placeholder = BundleManifest {
        format: FORMAT.into(),
        images: entries.clone(),
        content_bytes: 0,
        content_sha256: String::new(),
        compression: Compression::None,
        compressed_bytes: None,
        compressed_sha256: None,
    };
    let head = manifest_entry(&placeholder, reserved);
    // One thread hashes and writes (large buffered writes, no blocking-pool trip per
    // chunk); the async side only receives from the daemon. The channel is bounded.
    let mut std_file = temp.reopen().map_err(io_err(output))?;
    if compression == Compression::None {
        std_file.write_all(&head).map_err(io_err(output))?;
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    type Written = (std::fs::File, u64, String, Option<(u64, String)>);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<Written> {
        // The content is hashed as it is written; compressed, the file's bytes too.
        fn pump<W: Write>(
            rx: &mut tokio::sync::mpsc::Receiver<Bytes>,
            out: W,
        ) -> std::io::Result<(W, u64, String)> {
            let mut content = HashingWriter {
                inner: out,
                hasher: Sha256::new(),
                bytes: 0,
            };
            while let Some(chunk) = rx.blocking_recv() {
                content.write_all(&chunk)?;
            }
            Ok((
                content.inner,
                content.bytes,
                format!("{:x}", content.hasher.finalize()),
            ))
        }
        let into_file = |w: std::io::BufWriter<std::fs::File>| {
            w.into_inner().map_err(std::io::IntoInnerError::into_error)
        };
        let buffered = std::io::BufWriter::with_capacity(1 << 20, std_file);
        if compression == Compression::Zstd {
            let file_bytes = HashingWriter {
                inner: buffered,
                hasher: Sha256::new(),
                bytes: 0,
            };
            let (encoder, written, sha256) =
                pump(&mut rx, zstd::stream::Encoder::new(file_bytes, 3)?)?;
            let file_bytes = encoder.finish()?;
            let compressed = (
                file_bytes.bytes,
                format!("{:x}", file_bytes.hasher.finalize()),
            );
            return Ok((
                into_file(file_bytes.inner)?,
                written,
                sha256,
                Some(compressed),
            ));
        }
        let (out, written, sha256) = pump(&mut rx, buffered)?;
        Ok((into_file(out)?, written, sha256, None))
    });
    let names: Vec<&str> = images.iter().map(String::as_str).collect();
    let mut stream = engine.docker().export_images(&names);
    let mut received = 0u64;
    let mut failure = None;
    // The daemon's chunks are small: batch them so the writer thread wakes per MiB.
    let mut batch = bytes::BytesMut::with_capacity(BATCH);
    loop {
        let chunk = tokio::select! {
            c = stream.next() => c,
            () = cancel.cancelled() => { failure = Some(BundleError::Interrupted); break; }
        };
        let Some(chunk) = chunk else {
            if !batch.is_empty() {
                let _ = tx.send(batch.split().freeze()).await;
            }
            break;
        };
        match chunk {
            Ok(chunk) => {
                received += chunk.len() as u64;
                batch.extend_from_slice(&chunk);
                if batch.len() >= BATCH {
                    if tx.send(batch.split().freeze()).await.is_err() {
                        break; // the writer failed: its error is below
                    }
                    batch.reserve(BATCH);
                    progress(received, None);
                }
            }
            Err(e) => {
                failure = Some(BundleError::Engine(EngineError::Daemon {
                    status: None,
                    message: e.to_string(),
                }));
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| BundleError::Io {
            path: output.to_path_buf(),
            source: std::io::Error::other(e),
        })?
        .map_err(io_err(output));
    if let Some(failure) = failure {
        return Err(failure);
    }
    let (mut std_file, written, sha256, compressed) = written?;
    if written < 2 * BLOCK {
        return Err(BundleError::Engine(EngineError::Daemon {
            status: None,
            message: format!("the daemon sent {written} bytes for the export"),
        }));
    }
    let manifest = BundleManifest {
        format: FORMAT.into(),
        images: entries,
        content_bytes: written,
        content_sha256: sha256,
        compression,
        compressed_bytes: compressed.as_ref().map(|c| c.0),
        compressed_sha256: compressed.map(|c| c.1),
    };
    // Flushed, not fsynced (as `docker save`): the rename guarantees a complete file
    // against errors and Ctrl-C, not against power loss.
    if compression == Compression::Zstd {
        std_file
            .write_all(&zstd_trailer(&manifest))
            .map_err(io_err(output))?;
        drop(std_file);
    } else {
        std_file.seek(SeekFrom::Start(0)).map_err(io_err(output))?;
        std_file
            .write_all(&manifest_entry(&manifest, reserved))
            .map_err(io_err(output))?;
        drop(std_file);
    }
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

/// Reads a bundle's manifest and proves its content whole (size and sha256) without
/// loading anything.
pub fn verify_bundle(path: &Path, progress: &BytesProgress) -> Result<BundleManifest, BundleError> {
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let size = file.metadata().map_err(io_err(path))?.len();
    let not_bundle = |reason: &str| BundleError::NotABundle {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    let mut magic = [0u8; 4];
    if file.read_exact(&mut magic).is_ok() && magic == ZSTD_MAGIC {
        return verify_zstd(path, file, size, progress);
    }
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    let mut header = [0u8; BLOCK as usize];
    file.read_exact(&mut header)
        .map_err(|_| not_bundle("shorter than one tar header"))?;
    let header = tar::Header::from_byte_slice(&header);
    let name = header
        .path()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name != BUNDLE_ENTRY {
        return Err(not_bundle(&format!("its first entry is `{name}`, not `{BUNDLE_ENTRY}` (a plain `docker save` tar? load it with `docker load`)")));
    }
    let len = header
        .entry_size()
        .map_err(|_| not_bundle("unreadable first header"))?;
    if len > 64 * 1024 * 1024 {
        return Err(not_bundle("its manifest is implausibly large"));
    }
    let mut text = vec![0u8; len as usize];
    file.read_exact(&mut text)
        .map_err(|_| BundleError::Truncated {
            path: path.to_path_buf(),
            actual: size,
            expected: BLOCK + len,
        })?;
    let manifest: BundleManifest = serde_json::from_slice(&text)
        .map_err(|e| not_bundle(&format!("unreadable manifest: {e}")))?;
    if manifest.format != FORMAT {
        return Err(not_bundle(&format!("unknown format `{}`", manifest.format)));
    }
    let start = BLOCK + padded(len);
    let expected = start + manifest.content_bytes;
    if size < expected {
        return Err(BundleError::Truncated {
            path: path.to_path_buf(),
            actual: size,
            expected,
        });
    }
    if size > expected {
        return Err(BundleError::TrailingData {
            path: path.to_path_buf(),
            extra: size - expected,
        });
    }
    file.seek(SeekFrom::Start(start)).map_err(io_err(path))?;
    let actual = hash_prefix(path, &mut file, manifest.content_bytes, progress)?;
    if actual != manifest.content_sha256 {
        return Err(BundleError::ChecksumMismatch {
            path: path.to_path_buf(),
            actual,
            expected: manifest.content_sha256,
        });
    }
    Ok(manifest)
}

fn hash_prefix(
    path: &Path,
    file: &mut std::fs::File,
    len: u64,
    progress: &BytesProgress,
) -> Result<String, BundleError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut done = 0u64;
    let mut reader = Read::take(&mut *file, len);
    loop {
        let n = reader.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        progress(done, Some(len));
    }
    Ok(format!("{:x}", hasher.finalize()))
}

fn verify_zstd(
    path: &Path,
    mut file: std::fs::File,
    size: u64,
    progress: &BytesProgress,
) -> Result<BundleManifest, BundleError> {
    let truncated = || BundleError::TruncatedTrailer {
        path: path.to_path_buf(),
        actual: size,
    };
    if size < 4 + 8 + 12 {
        return Err(truncated());
    }
    let mut tail = [0u8; 12];
    file.seek(SeekFrom::Start(size - 12))
        .map_err(io_err(path))?;
    file.read_exact(&mut tail).map_err(io_err(path))?;
    if &tail[4..] != TRAILER_MARK {
        return Err(truncated());
    }
    let json_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    let frame_start = size.checked_sub(12 + json_len + 8).ok_or_else(truncated)?;
    let mut frame = vec![0u8; (8 + json_len) as usize];
    file.seek(SeekFrom::Start(frame_start))
        .map_err(io_err(path))?;
    file.read_exact(&mut frame).map_err(io_err(path))?;
    if frame[..4] != SKIPPABLE_MAGIC.to_le_bytes() {
        return Err(truncated());
    }
    let not_bundle = |reason: String| BundleError::NotABundle {
        path: path.to_path_buf(),
        reason,
    };
    let manifest: BundleManifest = serde_json::from_slice(&frame[8..])
        .map_err(|e| not_bundle(format!("unreadable manifest: {e}")))?;
    if manifest.format != FORMAT || manifest.compression != Compression::Zstd {
        return Err(not_bundle(format!("unknown format `{}`", manifest.format)));
    }
    let expected = manifest.compressed_bytes.unwrap_or(0);
    if frame_start != expected {
        return Err(BundleError::Truncated {
            path: path.to_path_buf(),
            actual: frame_start,
            expected,
        });
    }
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    let actual = hash_prefix(path, &mut file, expected, progress)?;
    let wanted = manifest.compressed_sha256.clone().unwrap_or_default();
    if actual != wanted {
        return Err(BundleError::ChecksumMismatch {
            path: path.to_path_buf(),
            actual,
            expected: wanted,
        });
    }
    Ok(manifest)
}

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
    let verify_path = path.to_path_buf();
    let verify_progress = std::sync::Arc::clone(&progress);
    let manifest =
        tokio::task::spawn_blocking(move || verify_bundle(&verify_path, &verify_progress))
            .await
            .map_err(|e| BundleError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(e),
            })??;
    if cancel.is_cancelled() {
        return Err(BundleError::Interrupted);
    }
    let total = std::fs::metadata(path).map_err(io_err(path))?.len();
    let stream = file_stream(
        path.to_path_buf(),
        manifest
            .compressed_bytes
            .filter(|_| manifest.compression == Compression::Zstd),
    );
    let options = bollard::query_parameters::ImportImageOptionsBuilder::default()
        .quiet(true)
        .build();
    let mut answers = engine.docker().import_image_stream(options, stream, None);
    let mut loaded = Vec::new();
    progress(0, Some(total));
    loop {
        let item = tokio::select! {
            i = answers.next() => i,
            () = cancel.cancelled() => return Err(BundleError::Interrupted),
        };
        let Some(item) = item else { break };
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    for line in text.lines() {
                        if let Some(name) = line
                            .strip_prefix("Loaded image: ")
                            .or_else(|| line.strip_prefix("Loaded image ID: "))
                        {
                            loaded.push(name.trim().to_owned());
                        }
                    }
                }
                if let Some(detail) = info.error_detail {
                    return Err(BundleError::Load {
                        path: path.to_path_buf(),
                        message: detail.message.unwrap_or_default(),
                    });
                }
            }
            Err(e) => {
                return Err(BundleError::Load {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
            }
        }
    }
    progress(total, Some(total));
    Ok(ImportReport { manifest, loaded })
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

/// Writes a bundle from an already-exported `docker save` tar (for tests and tools).
pub fn write_bundle_from_tar(
    images: &[BundleImage],
    tar: &[u8],
    mut out: impl Write,
) -> std::io::Result<BundleManifest> {
    let manifest = BundleManifest {
        format: FORMAT.into(),
        images: images.to_vec(),
        content_bytes: tar.len() as u64,
        content_sha256: format!("{:x}", Sha256::digest(tar)),
        compression: Compression::None,
        compressed_bytes: None,
        compressed_sha256: None,
    };
    out.write_all(&manifest_entry(&manifest, reserved_len(images)))?;
    out.write_all(tar)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> BytesProgress {
        std::sync::Arc::new(|_, _| {})
    }

    /// A tar holding one `manifest.json` with `data`, like a tiny `docker save`.
    fn save_tar(data: &[u8]) -> Vec<u8> {
        let mut inner = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_path("manifest.json").unwrap();
        h.set_size(data.len() as u64);
        h.set_cksum();
        inner.append(&h, data).unwrap();
        inner.into_inner().unwrap()
    }

    fn sample(dir: &Path) -> (PathBuf, BundleManifest) {
        let tar = save_tar(&[42u8; 5000]);
        let path = dir.join("b.tar");
        let images = [BundleImage {
            reference: "ubuntu:22.04".into(),
            id: "sha256:abc".into(),
        }];
        let m =
            write_bundle_from_tar(&images, &tar, std::fs::File::create(&path).unwrap()).unwrap();
        (path, m)
    }

    #[test]
    fn round_trip_and_plain_tar_readers_see_both_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (path, written) = sample(dir.path());
        assert_eq!(verify_bundle(&path, &none()).unwrap(), written);
        let mut archive = tar::Archive::new(std::fs::File::open(&path).unwrap());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [BUNDLE_ENTRY, "manifest.json"]);
    }

    #[test]
    fn truncation_and_flipped_bytes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = sample(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 700]).unwrap();
        let e = verify_bundle(&path, &none()).unwrap_err();
        assert!(matches!(e, BundleError::Truncated { .. }), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("truncated at byte {}", bytes.len() - 700)),
            "{e}"
        );
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2 + 600;
        flipped[mid] ^= 0xff;
        std::fs::write(&path, &flipped).unwrap();
        let e = verify_bundle(&path, &none()).unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
    }

    #[test]
    fn zstd_bundle_verifies_and_names_truncation_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let tar = vec![7u8; 100_000];
        let compressed = zstd::encode_all(&tar[..], 3).unwrap();
        let manifest = BundleManifest {
            format: FORMAT.into(),
            images: vec![BundleImage {
                reference: "x:1".into(),
                id: "sha256:1".into(),
            }],
            content_bytes: tar.len() as u64,
            content_sha256: format!("{:x}", Sha256::digest(&tar)),
            compression: Compression::Zstd,
            compressed_bytes: Some(compressed.len() as u64),
            compressed_sha256: Some(format!("{:x}", Sha256::digest(&compressed))),
        };
        let mut bytes = compressed.clone();
        bytes.extend_from_slice(&zstd_trailer(&manifest));
        let path = dir.path().join("b.tar.zst");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(verify_bundle(&path, &none()).unwrap(), manifest);
        // The zstd tool reads past the skippable frame: `zstd -dc | docker load` works.
        assert_eq!(zstd::decode_all(&bytes[..]).unwrap(), tar);
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let e = verify_bundle(&path, &none()).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("truncated at byte {}", bytes.len() - 5)),
            "{e}"
        );
        let mut flipped = bytes.clone();
        flipped[compressed.len() / 2] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let e = verify_bundle(&path, &none()).unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
    }

    #[test]
    fn a_plain_docker_save_tar_is_not_a_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.tar");
        std::fs::write(&path, save_tar(b"[]")).unwrap();
        let e = verify_bundle(&path, &none()).unwrap_err();
        assert!(e.to_string().contains("not a drbuild bundle"), "{e}");
    }
}
