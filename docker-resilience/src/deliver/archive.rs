//! A `docker load` archive made from fetched images, read from the cache as it is
//! written (never whole in memory). It is both formats `docker save` writes today:
//!
//! ```text
//! oci-layout, index.json   an OCI image layout: each image's tagged manifest (the
//!                          registry's own index or manifest, so its digest survives),
//!                          named by `io.containerd.image.name` (the containerd store)
//! manifest.json            config + layers + RepoTags per image (graph-driver stores)
//! blobs/sha256/…           manifests, configs and layers, each once, as fetched
//! ```
//!
//! Layers stay compressed: both loaders decompress them. A tag wanted for several
//! platforms is one index entry carrying every fetched platform; `manifest.json` names
//! one (a graph driver keeps one platform per tag).

use std::collections::BTreeSet;
use std::io::{self, Write};

use serde_json::json;

use crate::cache::BlobCache;
use crate::fetch::FetchedImage;
use crate::vocab::Platform;

/// A blob the archive can take now, or the end of hope (the download failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobReady {
    /// This blob is in the cache, verified.
    Blob(String),
    /// The download failed: the archive is abandoned.
    Failed,
}

/// Writes the archive of `images` (all their blobs in the cache) to `out`.
pub fn write_archive(
    cache: &BlobCache,
    images: &[FetchedImage],
    out: impl Write,
) -> io::Result<()> {
    let mut tar = start(images, out)?;
    let mut written = BTreeSet::new();
    for image in images {
        for blob in image.blobs() {
            append_blob(&mut tar, cache, &blob.digest, &mut written)?;
        }
    }
    tar.into_inner()?.flush()
}

/// Writes the archive of resolved `images` while their blobs arrive: the indexes and
/// manifests at once, then each blob as `ready` says it is in the cache (in any order:
/// both loaders read the whole archive before they use it). Fails, ending the archive
/// early, when `ready` says the download failed or stops before every blob came.
pub fn write_archive_as_ready(
    cache: &BlobCache,
    images: &[FetchedImage],
    ready: &std::sync::mpsc::Receiver<BlobReady>,
    out: impl Write,
) -> io::Result<()> {
    let mut tar = start(images, out)?;
    let mut written = BTreeSet::new();
    let mut pending = BTreeSet::new();
    for image in images {
        for blob in image.blobs() {
            if cache.contains(&blob.digest) {
                append_blob(&mut tar, cache, &blob.digest, &mut written)?;
            } else {
                pending.insert(blob.digest.clone());
            }
        }
    }
    while !pending.is_empty() {
        match ready.recv() {
            Ok(BlobReady::Blob(digest)) => {
                if pending.remove(&digest) {
                    append_blob(&mut tar, cache, &digest, &mut written)?;
                }
            }
            Ok(BlobReady::Failed) | Err(_) => {
                return Err(io::Error::other("the download failed: archive abandoned"))
            }
        }
    }
    tar.into_inner()?.flush()
}

fn append_blob<W: Write>(
    tar: &mut tar::Builder<W>,
    cache: &BlobCache,
    digest: &str,
    written: &mut BTreeSet<String>,
) -> io::Result<()> {
    if !written.insert(digest.to_owned()) {
        return Ok(());
    }
    let path = cache.path(digest).map_err(io::Error::other)?;
    let mut file = std::fs::File::open(&path)?;
    tar.append_file(blob_path(digest), &mut file)
}

/// The archive's layout, indexes and directories.
fn start<W: Write>(images: &[FetchedImage], out: W) -> io::Result<tar::Builder<W>> {
    let mut tar = tar::Builder::new(out);
    let mut index_entries = Vec::new();
    let mut docker_entries = Vec::new();
    let mut named = BTreeSet::new();
    // The host's platform first, so that a graph driver keeps it.
    let host = Platform::host();
    let mut ordered: Vec<&FetchedImage> = images.iter().collect();
    ordered.sort_by_key(|i| i.platform != host);
    for image in &ordered {
        let reference = &image.wanted.reference;
        if !named.insert(reference.to_string()) {
            continue;
        }
        let mut annotations = serde_json::Map::new();
        annotations.insert(
            "io.containerd.image.name".into(),
            json!(reference.to_string()),
        );
        if let Some(tag) = reference.tag() {
            annotations.insert("org.opencontainers.image.ref.name".into(), json!(tag));
        }
        index_entries.push(json!({
            "mediaType": image.top.media_type,
            "digest": image.top.digest,
            "size": image.top.size,
            "annotations": annotations,
        }));
        let tags: Vec<String> = if reference.tag().is_some() && reference.digest().is_none() {
            vec![reference.familiar()]
        } else {
            Vec::new()
        };
        docker_entries.push(json!({
            "Config": blob_path(&image.config.digest),
            "RepoTags": tags,
            "Layers": image.layers.iter().map(|l| blob_path(&l.digest)).collect::<Vec<_>>(),
        }));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": index_entries,
    });
    append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    append(&mut tar, "index.json", &serde_json::to_vec(&index)?)?;
    append(
        &mut tar,
        "manifest.json",
        &serde_json::to_vec(&docker_entries)?,
    )?;
    append_dir(&mut tar, "blobs/")?;
    append_dir(&mut tar, "blobs/sha256/")?;
    Ok(tar)
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_entry_type(kind);
    h
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, data: &[u8]) -> io::Result<()> {
    let mut h = header(data.len() as u64, 0o644, tar::EntryType::Regular);
    tar.append_data(&mut h, name, data)
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, name: &str) -> io::Result<()> {
    let mut h = header(0, 0o755, tar::EntryType::Directory);
    tar.append_data(&mut h, name, io::empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::digest_of;
    use crate::registry::manifest::Descriptor;
    use crate::vocab::{ImageReference, Wanted};

    fn put(cache: &BlobCache, data: &[u8], media_type: &str) -> Descriptor {
        let digest = digest_of(data);
        cache.put(&digest, data).unwrap();
        Descriptor {
            media_type: media_type.into(),
            digest,
            size: data.len() as u64,
            platform: None,
        }
    }

    #[test]
    fn both_formats_and_each_blob_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let layer = put(&cache, b"layer bytes", "layer");
        let image = |platform: &str, config: &[u8], top: &Descriptor| FetchedImage {
            wanted: Wanted {
                reference: ImageReference::parse("alpine:3.18").unwrap(),
                platform: Some(platform.parse().unwrap()),
            },
            top: top.clone(),
            manifest: put(&cache, config, "manifest"),
            platform: platform.parse().unwrap(),
            config: put(&cache, config, "config"),
            layers: vec![layer.clone()],
            source: "127.0.0.1:5000".into(),
            bytes: 0,
            resumes: 0,
        };
        let index = put(
            &cache,
            b"the index",
            "application/vnd.oci.image.index.v1+json",
        );
        let images = [
            image("linux/arm64", b"arm config", &index),
            image("linux/amd64", b"amd config", &index),
        ];
        let mut out = Vec::new();
        write_archive(&cache, &images, &mut out).unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let mut names = Vec::new();
        let mut docker = String::new();
        let mut oci = String::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            if name == "manifest.json" {
                std::io::Read::read_to_string(&mut entry, &mut docker).unwrap();
            } else if name == "index.json" {
                std::io::Read::read_to_string(&mut entry, &mut oci).unwrap();
            }
            names.push(name);
        }
        let blobs = names
            .iter()
            .filter(|n| n.starts_with("blobs/sha256/") && n.len() > 13)
            .count();
        assert_eq!(
            blobs, 4,
            "index, two configs (manifests share them here), one layer: {names:?}"
        );

        // As the blobs arrive: the same entries; a failed download ends it early.
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(BlobReady::Blob(layer.digest.clone())).unwrap();
        drop(tx);
        let mut streamed = Vec::new();
        write_archive_as_ready(&cache, &images, &rx, &mut streamed).unwrap();
        assert_eq!(
            streamed.len(),
            out.len(),
            "everything was in the cache already"
        );
        let fresh = tempfile::tempdir().unwrap();
        let empty = BlobCache::open(fresh.path()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(BlobReady::Failed).unwrap();
        assert!(write_archive_as_ready(&empty, &images, &rx, std::io::sink()).is_err());
        let docker: serde_json::Value = serde_json::from_str(&docker).unwrap();
        assert_eq!(
            docker.as_array().unwrap().len(),
            1,
            "one tag, one platform: {docker}"
        );
        assert_eq!(docker[0]["RepoTags"][0], "alpine:3.18");
        let host_config = if Platform::host().architecture() == "amd64" {
            digest_of(b"amd config")
        } else {
            digest_of(b"arm config")
        };
        assert_eq!(
            docker[0]["Config"],
            blob_path(&host_config),
            "the host's platform is the one a graph driver keeps"
        );
        let oci: serde_json::Value = serde_json::from_str(&oci).unwrap();
        assert_eq!(oci["manifests"][0]["digest"], index.digest);
        assert_eq!(
            oci["manifests"][0]["annotations"]["io.containerd.image.name"],
            "docker.io/library/alpine:3.18"
        );
    }
}
