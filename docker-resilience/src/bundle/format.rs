//! The bundle's format: its manifest, the first tar entry that holds it (or the zstd
//! skippable frame that does), and the hashing writer that fills it in.

use std::io::Write;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::vocab::Platform;

/// The name of the bundle's first entry.
pub const BUNDLE_ENTRY: &str = "drbuild-bundle.json";
pub(crate) const FORMAT: &str = "drbuild-bundle/1";
pub(crate) const BLOCK: u64 = 512;

/// An image inside a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleImage {
    /// The reference it is tagged with.
    pub reference: String,
    /// The image ID (`sha256:…`).
    pub id: String,
    /// The platforms asked for (the bundle may hold more: the containerd image store
    /// saves every platform it holds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<Platform>,
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
    pub(crate) fn is_none(&self) -> bool {
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

pub(crate) const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
pub(crate) const SKIPPABLE_MAGIC: u32 = 0x184d_2a50;
pub(crate) const TRAILER_MARK: &[u8; 8] = b"DRBNDL01";

/// The manifest of a compressed bundle as a zstd skippable frame that ends with the
/// JSON's length and a marker, so that a reader finds it from the end.
pub(crate) fn zstd_trailer(manifest: &BundleManifest) -> Vec<u8> {
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
pub(crate) struct HashingWriter<W> {
    pub(crate) inner: W,
    pub(crate) hasher: Sha256,
    pub(crate) bytes: u64,
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

/// The size reserved for the manifest: its text with the largest numbers it can hold.
pub(crate) fn reserved_len(images: &[BundleImage]) -> u64 {
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

pub(crate) fn padded(len: u64) -> u64 {
    len.div_ceil(BLOCK) * BLOCK
}

pub(crate) fn manifest_entry(manifest: &BundleManifest, reserved: u64) -> Vec<u8> {
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

/// Writes a bundle from an already-exported `docker save` tar (for tests).
#[cfg(test)]
pub(crate) fn write_bundle_from_tar(
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
