//! `verify`: a bundle proven whole (size and sha256) before a byte of it is loaded.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::format::{
    padded, BundleManifest, Compression, BLOCK, BUNDLE_ENTRY, FORMAT, SKIPPABLE_MAGIC,
    TRAILER_MARK, ZSTD_MAGIC,
};
use super::{io_err, BundleError, BytesProgress};

pub(crate) const READ_CHUNK: usize = 256 * 1024;

/// A manifest larger than this is not one (a real one is a few KiB).
const MAX_MANIFEST: u64 = 64 * 1024 * 1024;

/// Where the end of a compressed bundle is looked for, when garbage follows it.
const TRAILER_SEARCH: u64 = 1024 * 1024;

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
        return Err(not_bundle(&format!(
            "its first entry is `{name}`, not `{BUNDLE_ENTRY}` (a plain `docker save` tar? \
             `drbuild import --unverified FILE` loads it without the proof)"
        )));
    }
    let len = header
        .entry_size()
        .map_err(|_| not_bundle("unreadable first header"))?;
    if len > MAX_MANIFEST {
        return Err(not_bundle(&format!("its manifest claims {len} bytes")));
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
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    check_names(path, tar::Archive::new(file).entries_with_seek())?;
    Ok(manifest)
}

/// Refuses a tar whose entries would land outside where it is unpacked (`../x`,
/// `/etc/x`) or that does not read as a tar: checked before the daemon sees a byte.
pub(crate) fn check_names<R: Read>(
    path: &Path,
    entries: std::io::Result<tar::Entries<'_, R>>,
) -> Result<(), BundleError> {
    let bad = |reason: String| BundleError::NotABundle {
        path: path.to_path_buf(),
        reason,
    };
    let entries = entries.map_err(|e| bad(format!("unreadable tar: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| bad(format!("unreadable tar: {e}")))?;
        let name = entry.path_bytes();
        let name = String::from_utf8_lossy(&name);
        let escapes = name.starts_with('/') || name.split(['/', '\\']).any(|part| part == "..");
        if escapes {
            return Err(bad(format!(
                "its entry `{name}` would be written outside the image"
            )));
        }
    }
    Ok(())
}

/// A plain tar (`docker save`), loaded without a bundle's proof: only its entries'
/// names are checked.
pub fn check_plain_tar(path: &Path) -> Result<(), BundleError> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    check_names(path, tar::Archive::new(file).entries_with_seek())
}

pub(crate) fn hash_prefix(
    path: &Path,
    file: &mut std::fs::File,
    len: u64,
    progress: &BytesProgress,
) -> Result<String, BundleError> {
    let mut hashing = Hashing::new(Read::take(&mut *file, len), len, progress);
    let mut buf = vec![0u8; READ_CHUNK];
    while hashing.read(&mut buf).map_err(io_err(path))? > 0 {}
    Ok(hashing.finish())
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
    let not_bundle = |reason: String| BundleError::NotABundle {
        path: path.to_path_buf(),
        reason,
    };
    let mut tail = [0u8; 12];
    file.seek(SeekFrom::Start(size - 12))
        .map_err(io_err(path))?;
    file.read_exact(&mut tail).map_err(io_err(path))?;
    if &tail[4..] != TRAILER_MARK {
        // Garbage after the end, or no end at all.
        return Err(
            match find_trailer_end(&mut file, size).map_err(io_err(path))? {
                Some(end) => BundleError::TrailingData {
                    path: path.to_path_buf(),
                    extra: size - end,
                },
                None => truncated(),
            },
        );
    }
    let json_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if json_len > MAX_MANIFEST {
        return Err(not_bundle(format!(
            "its trailer claims a {json_len}-byte manifest"
        )));
    }
    let lying = || {
        not_bundle(format!(
            "its trailer says the manifest is {json_len} bytes, but no manifest frame is there"
        ))
    };
    let frame_start = size.checked_sub(12 + json_len + 8).ok_or_else(lying)?;
    let mut frame = vec![0u8; (8 + json_len) as usize];
    file.seek(SeekFrom::Start(frame_start))
        .map_err(io_err(path))?;
    file.read_exact(&mut frame).map_err(io_err(path))?;
    let frame_len = u64::from(u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]));
    if frame[..4] != SKIPPABLE_MAGIC.to_le_bytes() || frame_len != json_len + 12 {
        return Err(lying());
    }
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
    // One pass: the compressed bytes are hashed as the decoder reads them, and the
    // names inside checked as a stream (bounded memory). Whatever the decoder left
    // unread is hashed after, so a bad checksum is reported before a bad tar.
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    let mut hashing = Hashing::new(Read::take(file, expected), expected, progress);
    let names = match zstd::stream::read::Decoder::new(&mut hashing) {
        Ok(decoder) => check_names(path, tar::Archive::new(decoder).entries()),
        Err(e) => Err(not_bundle(format!("unreadable zstd: {e}"))),
    };
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(io_err(path))?;
    let actual = hashing.finish();
    let wanted = manifest.compressed_sha256.clone().unwrap_or_default();
    if actual != wanted {
        return Err(BundleError::ChecksumMismatch {
            path: path.to_path_buf(),
            actual,
            expected: wanted,
        });
    }
    names?;
    Ok(manifest)
}

/// A reader that hashes (sha256) what it reads, reporting progress.
struct Hashing<'p, R> {
    inner: R,
    hasher: Sha256,
    done: u64,
    total: u64,
    progress: &'p BytesProgress,
}

impl<'p, R: Read> Hashing<'p, R> {
    fn new(inner: R, total: u64, progress: &'p BytesProgress) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            done: 0,
            total,
            progress,
        }
    }

    fn finish(self) -> String {
        format!("{:x}", self.hasher.finalize())
    }
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.done += n as u64;
        (self.progress)(self.done, Some(self.total));
        Ok(n)
    }
}

/// Where a compressed bundle's trailer ends, when bytes follow it: the last
/// [`TRAILER_MARK`] within the file's last MiB.
fn find_trailer_end(file: &mut std::fs::File, size: u64) -> std::io::Result<Option<u64>> {
    let start = size.saturating_sub(TRAILER_SEARCH);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    Read::take(&mut *file, TRAILER_SEARCH).read_to_end(&mut tail)?;
    Ok(tail
        .windows(TRAILER_MARK.len())
        .rposition(|w| w == TRAILER_MARK)
        .map(|at| start + (at + TRAILER_MARK.len()) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::format::{write_bundle_from_tar, zstd_trailer, BundleImage};
    use std::path::PathBuf;

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
            platforms: Vec::new(),
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
        let tar = save_tar(&[7u8; 100_000]);
        let compressed = zstd::encode_all(&tar[..], 3).unwrap();
        let manifest = BundleManifest {
            format: FORMAT.into(),
            images: vec![BundleImage {
                reference: "x:1".into(),
                id: "sha256:1".into(),
                platforms: Vec::new(),
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

    /// `tests/data/bundles-hostile/` (scripts/fixtures/hostile-bundles): each refused
    /// with what is wrong, before anything could be loaded.
    #[test]
    fn hostile_bundles_are_refused_by_name() {
        let dir = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/bundles-hostile"
        ));
        let cases = [
            ("absurd.tar", "the bundle says 1000000000001024 bytes"),
            (
                "plain.tar",
                "`drbuild import --unverified FILE` loads it without the proof",
            ),
            (
                "dotdot.tar",
                "its entry `../escape` would be written outside the image",
            ),
            (
                "garbage.tar",
                "1000 unexpected bytes after the end of the bundle",
            ),
            ("lying.tar.zst", "its trailer says the manifest is"),
            (
                "garbage.tar.zst",
                "1000 unexpected bytes after the end of the bundle",
            ),
        ];
        for (name, expected) in cases {
            let e = verify_bundle(&dir.join(name), &none()).unwrap_err();
            assert!(e.to_string().contains(expected), "{name}: {e}");
        }
        let e = check_plain_tar(&dir.join("plain-dotdot.tar")).unwrap_err();
        assert!(e.to_string().contains("`../escape`"), "{e}");
        check_plain_tar(&dir.join("plain.tar")).unwrap();
    }

    #[test]
    fn a_trailer_claiming_gigabytes_allocates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.tar.zst");
        let mut bytes = ZSTD_MAGIC.to_vec();
        bytes.extend_from_slice(&[0u8; 64]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(TRAILER_MARK);
        std::fs::write(&path, &bytes).unwrap();
        let e = verify_bundle(&path, &none()).unwrap_err();
        assert!(
            e.to_string().contains("claims a 4294967295-byte manifest"),
            "{e}"
        );
    }
}
