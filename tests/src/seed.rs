//! Real-world-shaped stand-in images, written straight through a registry's API (no
//! daemon, no outside registry): the names our users pull, in Docker schema-2 and OCI
//! media types, gzip layers, single- and multi-platform (`linux/amd64` + `linux/arm64`
//! indexes whose every layer holds a file naming its platform), one to ten layers, and
//! one image with a 64 MiB incompressible layer. Every byte is deterministic, so the
//! digests are the same on every machine and every run.
//!
//! The `linux/amd64` variants run: their first layer is a busybox root filesystem
//! (shared by all of them, as base layers are). The `linux/arm64` variants hold data
//! only (no executable), so nothing pretends to run arm64 code here.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use flate2::write::GzEncoder;
use rand::{RngCore, SeedableRng};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Manifest media types.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// A Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// An OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Which family of media types an image uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Docker image manifest v2 schema 2 (and manifest lists).
    Docker,
    /// OCI image manifest (and indexes).
    Oci,
}

/// The platforms of a stand-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platforms {
    /// `linux/amd64` alone: one manifest, no index.
    Linux,
    /// `linux/amd64` and `linux/arm64`: an index.
    LinuxMulti,
    /// `windows/amd64` alone, in an index whose entry carries `os.version`, as
    /// `mcr.microsoft.com/windows/*` tags are served. Its layers are small tars: nothing
    /// here runs it.
    Windows,
}

/// The `os.version` of the Windows stand-in (Windows Server 2022).
pub const WINDOWS_OS_VERSION: &str = "10.0.20348.2461";

/// One stand-in image of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct StandIn {
    /// `repository:tag` on the registry (`library/ubuntu:22.04`).
    pub name: &'static str,
    /// Media types.
    pub format: Format,
    /// The platforms it has.
    pub platforms: Platforms,
    /// Layers per platform.
    pub layers: usize,
    /// A last layer of this many incompressible bytes.
    pub big_layer: Option<usize>,
}

const fn image(name: &'static str, format: Format, multi_platform: bool, layers: usize) -> StandIn {
    StandIn {
        name,
        format,
        platforms: if multi_platform {
            Platforms::LinuxMulti
        } else {
            Platforms::Linux
        },
        layers,
        big_layer: None,
    }
}

/// The stand-ins: the names of our users' builds (seeds 001, 002), the frontend image
/// of `# syntax=`, a large ML image, and a Windows base (on the test registry under
/// its `mcr.microsoft.com` path).
pub const CATALOG: &[StandIn] = &[
    image("library/ubuntu:22.04", Format::Oci, true, 5),
    image("library/nginx:stable", Format::Docker, true, 6),
    image("library/nginx:stable-alpine", Format::Docker, false, 3),
    image("library/node:18-alpine", Format::Oci, true, 8),
    image("library/golang:1.21-alpine", Format::Docker, false, 10),
    image("library/golang:1.20-alpine", Format::Oci, false, 4),
    image("library/postgres:15-alpine", Format::Docker, true, 7),
    image("library/redis:7-alpine", Format::Oci, false, 2),
    image("library/python:3.11-slim", Format::Docker, false, 5),
    image("library/alpine:latest", Format::Oci, true, 1),
    image("library/alpine:3.18", Format::Oci, true, 2),
    image("library/busybox:1.36", Format::Docker, false, 1),
    image("library/debian:bookworm-slim", Format::Oci, true, 3),
    image("docker/dockerfile:1", Format::Docker, false, 1),
    StandIn {
        name: "pytorch/pytorch:2.1.0-cuda12.1-cudnn8-runtime",
        format: Format::Docker,
        platforms: Platforms::Linux,
        layers: 3,
        big_layer: Some(64 << 20),
    },
    StandIn {
        name: "windows/servercore:ltsc2022",
        format: Format::Docker,
        platforms: Platforms::Windows,
        layers: 2,
        big_layer: None,
    },
];

/// A blob: its bytes and digest.
#[derive(Debug, Clone)]
pub struct Blob {
    /// The bytes.
    pub data: Vec<u8>,
    /// `sha256:…`.
    pub digest: String,
}

impl Blob {
    fn new(data: Vec<u8>) -> Self {
        let digest = sha256(&data);
        Blob { data, digest }
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// A stand-in ready to push: its blobs, its manifests (by digest) and its top manifest.
#[derive(Debug, Clone)]
pub struct Built {
    /// Repository (`library/ubuntu`).
    pub repository: String,
    /// Tag.
    pub tag: String,
    /// Layers and configs.
    pub blobs: Vec<Blob>,
    /// Platform manifests: media type and bytes, pushed by digest first.
    pub manifests: Vec<(String, Blob)>,
    /// The tagged manifest (an index, or the single manifest).
    pub top: (String, Blob),
}

/// A file in a layer.
struct Entry {
    path: String,
    kind: EntryKind,
}

enum EntryKind {
    Dir,
    File(Vec<u8>, u32),
    Link(String),
}

/// A deterministic tar of `entries` (mtime 0, root-owned), and its gzip.
fn layer(entries: &[Entry], fast: bool) -> (Blob, String) {
    let mut tar = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match &e.kind {
            EntryKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                tar.append_data(&mut h, &e.path, std::io::empty())
                    .expect("tar entry");
            }
            EntryKind::File(data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                tar.append_data(&mut h, &e.path, &data[..])
                    .expect("tar entry");
            }
            EntryKind::Link(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                tar.append_link(&mut h, &e.path, target).expect("tar entry");
            }
        }
    }
    let tar = tar.into_inner().expect("tar");
    let diff_id = sha256(&tar);
    let level = if fast {
        flate2::Compression::fast()
    } else {
        flate2::Compression::default()
    };
    let mut gz = GzEncoder::new(Vec::new(), level);
    gz.write_all(&tar).expect("gzip");
    (Blob::new(gz.finish().expect("gzip")), diff_id)
}

fn file(path: &str, text: String) -> Entry {
    Entry {
        path: path.to_owned(),
        kind: EntryKind::File(text.into_bytes(), 0o644),
    }
}

fn dir(path: &str) -> Entry {
    Entry {
        path: path.to_owned(),
        kind: EntryKind::Dir,
    }
}

/// The busybox root filesystem every `linux/amd64` stand-in starts from.
fn busybox_rootfs(busybox: &Path) -> (Blob, String) {
    let binary = std::fs::read(busybox).expect("read the static busybox");
    let applets = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    let mut applets: Vec<String> = String::from_utf8_lossy(&applets.stdout)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox")
        .map(str::to_owned)
        .collect();
    applets.sort();
    applets.dedup();
    let mut entries = vec![
        dir("bin"),
        dir("etc"),
        dir("tmp"),
        Entry {
            path: "bin/busybox".into(),
            kind: EntryKind::File(binary, 0o755),
        },
        file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n".into()),
    ];
    for applet in applets {
        entries.push(Entry {
            path: format!("bin/{applet}"),
            kind: EntryKind::Link("busybox".into()),
        });
    }
    layer(&entries, false)
}

fn config(name: &str, platform: &str, diff_ids: &[String]) -> Blob {
    let (os, arch) = platform.split_once('/').expect("os/arch");
    let os_version = (os == "windows").then_some(WINDOWS_OS_VERSION);
    let history: Vec<Value> = diff_ids
        .iter()
        .enumerate()
        .map(|(i, _)| json!({"created": "2024-01-01T00:00:00Z", "created_by": format!("stand-in layer {i}")}))
        .collect();
    let mut value = json!({
        "architecture": arch,
        "os": os,
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
            "Labels": {"org.opencontainers.image.title": name, "org.drbuild.stand-in": "true"}
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    });
    if let Some(version) = os_version {
        value["os.version"] = json!(version);
    }
    Blob::new(serde_json::to_vec(&value).expect("json"))
}

fn descriptor(media_type: &str, blob: &Blob) -> Value {
    json!({"mediaType": media_type, "digest": blob.digest, "size": blob.data.len()})
}

/// Builds one stand-in for the registry. `rootfs` is the shared busybox layer.
pub fn build(standin: &StandIn, rootfs: &(Blob, String)) -> Built {
    let (repository, tag) = standin.name.split_once(':').expect("repository:tag");
    let short = repository.trim_start_matches("library/");
    let (manifest_type, config_type, layer_type, index_type) = match standin.format {
        Format::Docker => (
            DOCKER_MANIFEST,
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            DOCKER_LIST,
        ),
        Format::Oci => (
            OCI_MANIFEST,
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            OCI_INDEX,
        ),
    };
    let platforms: &[&str] = match standin.platforms {
        Platforms::Linux => &["linux/amd64"],
        Platforms::LinuxMulti => &["linux/amd64", "linux/arm64"],
        Platforms::Windows => &["windows/amd64"],
    };
    let mut blobs: BTreeMap<String, Blob> = BTreeMap::new();
    let mut manifests = Vec::new();
    for platform in platforms {
        let mut layers: Vec<(Blob, String)> = Vec::new();
        let amd64 = *platform == "linux/amd64";
        if amd64 {
            layers.push(rootfs.clone());
        }
        while layers.len() < standin.layers {
            let k = layers.len();
            let mut entries = vec![dir("etc"), dir("etc/drbuild")];
            if k + 1 == standin.layers || (!amd64 && k == 0) {
                entries.push(file("etc/drbuild/platform", format!("{platform}\n")));
                entries.push(file("etc/stand-in", format!("{repository}:{tag}\n")));
                entries.push(file("etc/hostname", format!("stand-in {short}:{tag}\n")));
            }
            entries.push(file(
                &format!("etc/drbuild/layer-{k}"),
                format!("{repository}:{tag} {platform} layer {k}\n"),
            ));
            layers.push(layer(&entries, false));
        }
        if let (Some(size), true) = (standin.big_layer, amd64) {
            let mut data = vec![0u8; size];
            rand::rngs::StdRng::seed_from_u64(size as u64).fill_bytes(&mut data);
            let entries = [
                dir("opt"),
                Entry {
                    path: format!("opt/{short}/weights.bin"),
                    kind: EntryKind::File(data, 0o644),
                },
            ];
            layers.push(layer(&entries, true));
        }
        let diff_ids: Vec<String> = layers.iter().map(|(_, d)| d.clone()).collect();
        let config = config(standin.name, platform, &diff_ids);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": descriptor(config_type, &config),
            "layers": layers.iter().map(|(b, _)| descriptor(layer_type, b)).collect::<Vec<_>>(),
        });
        let manifest = Blob::new(serde_json::to_vec(&manifest).expect("json"));
        blobs.insert(config.digest.clone(), config);
        for (b, _) in layers {
            blobs.insert(b.digest.clone(), b);
        }
        manifests.push((platform.to_string(), manifest));
    }
    let top = if standin.platforms != Platforms::Linux {
        let entries: Vec<Value> = manifests
            .iter()
            .map(|(platform, m)| {
                let (os, arch) = platform.split_once('/').expect("os/arch");
                let mut d = descriptor(manifest_type, m);
                d["platform"] = json!({"os": os, "architecture": arch});
                if os == "windows" {
                    d["platform"]["os.version"] = json!(WINDOWS_OS_VERSION);
                }
                d
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": index_type, "manifests": entries});
        (
            index_type.to_owned(),
            Blob::new(serde_json::to_vec(&index).expect("json")),
        )
    } else {
        let (_, single) = manifests.pop().expect("one manifest");
        (manifest_type.to_owned(), single)
    };
    Built {
        repository: repository.to_owned(),
        tag: tag.to_owned(),
        blobs: blobs.into_values().collect(),
        manifests: manifests
            .into_iter()
            .map(|(_, m)| (manifest_type.to_owned(), m))
            .collect(),
        top,
    }
}

/// The busybox root filesystem layer (and its diff id), for [`build`].
pub fn rootfs_layer(busybox: &Path) -> (Blob, String) {
    busybox_rootfs(busybox)
}

/// Builds the whole catalog.
pub fn build_catalog(busybox: &Path) -> Vec<Built> {
    let rootfs = busybox_rootfs(busybox);
    CATALOG.iter().map(|s| build(s, &rootfs)).collect()
}

/// Bumped whenever what [`build`] writes changes, so that seeded registries are rewritten.
const SEED_FORMAT: u32 = 1;

/// A fingerprint of what [`build_catalog`] would make, without making it: the format,
/// the catalog and the busybox it starts from.
pub fn fingerprint(busybox: &Path) -> std::io::Result<String> {
    let mut all = format!("{SEED_FORMAT}\n{CATALOG:?}\n").into_bytes();
    all.extend(std::fs::read(busybox)?);
    Ok(sha256(&all))
}

/// Writes images into a registry over the distribution API (`http://127.0.0.1:PORT`),
/// skipping blobs and manifests that are there already.
#[derive(Debug)]
pub struct Pusher {
    client: reqwest::Client,
    base: String,
}

impl Pusher {
    /// Whether every tag of the catalog is in the registry.
    pub async fn has_catalog(&self) -> bool {
        for standin in CATALOG {
            let (repository, tag) = standin.name.split_once(':').expect("repository:tag");
            let url = format!("{}/v2/{repository}/manifests/{tag}", self.base);
            let accept = format!("{DOCKER_MANIFEST}, {DOCKER_LIST}, {OCI_MANIFEST}, {OCI_INDEX}");
            if !self.has(&url, &accept).await.unwrap_or(false) {
                return false;
            }
        }
        true
    }

    /// A pusher to a loopback registry (plain HTTP).
    pub fn new(registry: &str) -> Self {
        assert!(
            registry.starts_with("127.") || registry.starts_with("localhost"),
            "the seeder writes to loopback registries only, not {registry}"
        );
        Pusher {
            client: reqwest::Client::new(),
            base: format!("http://{registry}"),
        }
    }

    async fn has(&self, url: &str, accept: &str) -> Result<bool, reqwest::Error> {
        let r = self
            .client
            .head(url)
            .header("Accept", accept)
            .send()
            .await?;
        Ok(r.status().is_success())
    }

    /// Uploads a blob (monolithic `POST` + `PUT ?digest=`) unless the repository has it.
    pub async fn blob(&self, repository: &str, blob: &Blob) -> Result<(), String> {
        let url = format!("{}/v2/{repository}/blobs/{}", self.base, blob.digest);
        if self.has(&url, "*/*").await.map_err(|e| e.to_string())? {
            return Ok(());
        }
        let start = self
            .client
            .post(format!("{}/v2/{repository}/blobs/uploads/", self.base))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let location = start
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| format!("no upload location for {repository}: {}", start.status()))?
            .to_owned();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.base)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self
            .client
            .put(format!("{location}{sep}digest={}", blob.digest))
            .header("Content-Type", "application/octet-stream")
            .body(blob.data.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !put.status().is_success() {
            return Err(format!(
                "blob {} of {repository}: HTTP {}",
                blob.digest,
                put.status()
            ));
        }
        Ok(())
    }

    /// Puts a manifest under `reference` (a tag or its digest).
    pub async fn manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        manifest: &Blob,
    ) -> Result<(), String> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let r = self
            .client
            .put(&url)
            .header("Content-Type", media_type)
            .body(manifest.data.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            let body = r.text().await.unwrap_or_default();
            return Err(format!("manifest {repository}:{reference}: {body}"));
        }
        Ok(())
    }

    /// Pushes a built stand-in: blobs, platform manifests by digest, then the tag.
    pub async fn push(&self, built: &Built) -> Result<(), String> {
        for blob in &built.blobs {
            self.blob(&built.repository, blob).await?;
        }
        for (media_type, m) in &built.manifests {
            self.manifest(&built.repository, &m.digest, media_type, m)
                .await?;
        }
        let (media_type, top) = &built.top;
        self.manifest(&built.repository, &built.tag, media_type, top)
            .await
    }
}
