//! Engine: the container engine through `bollard` — the only module that talks to the
//! Docker daemon. Small traits ([`Engine`] for pulls, [`BuildEngine`] for builds) let
//! the stages above be tested with fakes; [`DockerEngine`] is the real one.
//!
//! The engine reports what the daemon said; what it means (retry or not) is decided
//! by `resilience` and the stages above.
//!
//! May import: `vocab`, `support`, `parse` (`.dockerignore` rules), `registry` (credentials).

mod build;
mod buildkit;
mod docker;
mod filesync;
mod progress;
mod raw;
mod session;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream};

pub use buildkit::{api_takes_network, BuildkitWorker, BUILD_API_ENV};
pub use docker::{DaemonInfo, DockerEngine, Features};

use crate::vocab::{ImageReference, Platform, SecretValue};

/// A failure talking to the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The daemon cannot be reached at all.
    #[error("cannot reach the Docker daemon at {host}: {message}; start it (`sudo systemctl start docker`, or `sudo dockerd &`) or point DOCKER_HOST at a running daemon")]
    Unreachable {
        /// The `DOCKER_HOST` tried.
        host: String,
        /// What failed.
        message: String,
    },
    /// The daemon answered with an error (a pull error's text is the registry's).
    #[error("{message}")]
    Daemon {
        /// HTTP status of the daemon's answer, when the error came as one.
        status: Option<u16>,
        /// The error text.
        message: String,
    },
    /// A pull made no progress for too long and was cancelled.
    #[error("stalled: no progress for {}s", timeout.as_secs())]
    Stalled {
        /// The stall timeout.
        timeout: Duration,
    },
}

impl EngineError {
    /// An error the daemon did not send (a name we could not form, a stream cut).
    pub fn other(message: impl Into<String>) -> Self {
        EngineError::Daemon {
            status: None,
            message: message.into(),
        }
    }
}

/// One progress message of a pull.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullEvent {
    /// The layer it is about, if any.
    pub layer: Option<String>,
    /// `Downloading`, `Download complete`, `Pull complete`, `Already exists`…
    pub status: String,
    /// Bytes done, when reported.
    pub current: Option<u64>,
    /// Bytes in all, when reported.
    pub total: Option<u64>,
}

/// Where a daemon keeps images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageStore {
    /// A graph driver (overlay2…): one platform per tag.
    #[default]
    GraphDriver,
    /// The containerd image store: a tag holds an index, with several platforms.
    Containerd,
}

impl ImageStore {
    /// Whether one tag can hold several platforms at once.
    pub fn holds_many_platforms(self) -> bool {
        self == ImageStore::Containerd
    }
}

/// The images an engine has, by normalized tag and digest references, with the
/// platforms each holds when the engine said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresentImages {
    names: HashSet<String>,
    platforms: std::collections::HashMap<String, Vec<Platform>>,
    store: ImageStore,
}

impl PresentImages {
    /// Builds the set from the daemon's `RepoTags` and `RepoDigests` strings.
    pub fn from_names<I: IntoIterator<Item = S>, S: AsRef<str>>(names: I) -> Self {
        PresentImages {
            names: names
                .into_iter()
                .filter_map(|n| ImageReference::parse(n.as_ref()).ok())
                .map(|r| r.to_string())
                .collect(),
            ..PresentImages::default()
        }
    }

    /// Records the platforms the image of these names holds (one, on a graph driver).
    pub fn with_platforms<I: IntoIterator<Item = S>, S: AsRef<str>>(
        mut self,
        names: I,
        platforms: &[Platform],
    ) -> Self {
        for name in names {
            if let Ok(r) = ImageReference::parse(name.as_ref()) {
                let key = r.to_string();
                self.names.insert(key.clone());
                let list = self.platforms.entry(key).or_default();
                for p in platforms {
                    if !list.contains(p) {
                        list.push(p.clone());
                    }
                }
            }
        }
        self
    }

    /// Says where the engine keeps these images.
    pub fn in_store(mut self, store: ImageStore) -> Self {
        self.store = store;
        self
    }

    /// Where the engine keeps images.
    pub fn store(&self) -> ImageStore {
        self.store
    }

    fn key(image: &ImageReference) -> String {
        match image.digest() {
            Some(digest) => format!("{}@{digest}", image.name()),
            None => image.to_string(),
        }
    }

    /// Whether the image is present: by digest when the reference pins one, else by
    /// tag; for a platform, only when the engine said it holds that platform (or said
    /// nothing about platforms).
    pub fn contains(&self, image: &ImageReference) -> bool {
        self.names.contains(&Self::key(image))
    }

    /// Whether the image is present for `platform` (any platform when `None`).
    pub fn contains_for(&self, image: &ImageReference, platform: Option<&Platform>) -> bool {
        let key = Self::key(image);
        if !self.names.contains(&key) {
            return false;
        }
        match (platform, self.platforms.get(&key)) {
            (Some(p), Some(held)) => held.contains(p),
            _ => true,
        }
    }

    /// How many names are known.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no image is present.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// What prefetching needs from a container engine.
pub trait Engine: Send + Sync + 'static {
    /// The images present (one list call), with the platforms the `wanted` ones hold.
    fn present_images(
        &self,
        wanted: &[ImageReference],
    ) -> impl Future<Output = Result<PresentImages, EngineError>> + Send;

    /// Starts pulling `image` (for `platform`, else the daemon's own); the stream
    /// yields progress and ends when the pull is done. Dropping the stream cancels
    /// the pull.
    fn pull(
        &self,
        image: &ImageReference,
        platform: Option<&Platform>,
    ) -> impl Future<Output = BoxStream<'static, Result<PullEvent, EngineError>>> + Send;

    /// Tags `source` as `target`.
    fn tag(
        &self,
        source: &ImageReference,
        target: &ImageReference,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Removes the name `image` (not the layers other names still use).
    fn untag(&self, image: &ImageReference)
        -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Every name the daemon holds (tags and digests, one list call).
    fn names(&self) -> impl Future<Output = Result<Vec<String>, EngineError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Loads a `docker load` archive; returns what the daemon says it loaded.
    fn load(
        &self,
        archive: ContextStream,
    ) -> impl Future<Output = Result<Vec<String>, EngineError>> + Send;

    /// Whether the daemon runs on this machine, so that it may reach a server of ours
    /// on 127.0.0.1 (a daemon in another network namespace, rootless or in a VM, may
    /// still not: a caller falls back when it cannot).
    fn on_this_machine(&self) -> bool {
        false
    }
}

/// Receives a build's output, one line at a time.
pub type LogSink = Arc<dyn Fn(&str) + Send + Sync>;

/// A build context as the daemon takes it: a tar, streamed.
pub type ContextStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// One image to build, as the daemon takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildSpec {
    /// The service (names the build session).
    pub service: String,
    /// The image to tag.
    pub tag: String,
    /// The Dockerfile's name inside the context.
    pub dockerfile: String,
    /// Build args.
    pub args: BTreeMap<String, String>,
    /// Stage to build.
    pub target: Option<String>,
    /// Platform to build for.
    pub platform: Option<String>,
    /// Network of `RUN` steps; `None`: the daemon's default (`none` on a daemon with
    /// no `bridge` network, where BuildKit's default would fail every `RUN`).
    pub network: Option<String>,
    /// Build without the cache.
    pub no_cache: bool,
    /// Build caches to import, as BuildKit takes them (`type=registry,ref=…`; an image
    /// reference alone is a registry cache).
    pub cache_from: Vec<String>,
    /// Build caches to export (`type=registry,ref=…,mode=max`).
    pub cache_to: Vec<String>,
    /// Build secrets by id, for `RUN --mount=type=secret` (served by a session; never
    /// in the image, nor printed: their `Debug` is `***`).
    pub secrets: BTreeMap<String, SecretValue>,
}

/// A build's files as BuildKit's own API takes them: directories it reads through the
/// build's session, file by file as it asks ([`BuildEngine::build_dirs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildDirs {
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile's text as it is to be built (read from its file, compose's
    /// `dockerfile_inline`, or with images written in).
    pub dockerfile: String,
    /// The Dockerfile's own ignore file (`NAME.dockerignore` beside it), which BuildKit
    /// reads instead of the context's `.dockerignore`.
    pub dockerignore: Option<String>,
    /// Named contexts that are directories (compose `additional_contexts`), by name.
    pub named: BTreeMap<String, PathBuf>,
    /// Named contexts that are URLs (a git repository, an `https://` file), by name:
    /// BuildKit fetches them.
    pub remote: BTreeMap<String, String>,
}

/// A build the daemon failed, as it reported it (not yet classified).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct BuildError {
    /// What failed, as the daemon said it.
    pub message: String,
    /// The failing step (`[build 3/5] RUN make`), when known.
    pub step: Option<String>,
    /// The failing step's last output lines.
    pub last_lines: Vec<String>,
}

impl BuildError {
    /// A failure with only a message (no step ran).
    pub fn new(message: impl Into<String>) -> Self {
        BuildError {
            message: message.into(),
            step: None,
            last_lines: Vec::new(),
        }
    }
}

/// What builds images. [`DockerEngine`] is the real one; tests use fakes.
pub trait BuildEngine: Send + Sync {
    /// Whether an image with this name exists.
    fn image_exists(&self, image: &str) -> impl Future<Output = Result<bool, EngineError>> + Send;

    /// Whether the daemon's built-in Dockerfile frontend accepts heredocs (`RUN <<EOF`;
    /// BuildKit's frontend 1.4+, in Docker 23+). Found by trying, once.
    fn accepts_heredocs(&self) -> impl Future<Output = bool> + Send {
        async { true }
    }

    /// What each of `images` should be called in a Dockerfile so that the build asks
    /// no registry for it: `name:tag@digest` of the image the daemon holds under that
    /// name, where its builder would otherwise ask (BuildKit on the containerd store
    /// resolves every tag at the registry, even one the daemon holds or another
    /// service just built: moby/moby#49542). Empty where a tag is used as the daemon
    /// holds it (a graph-driver store); an image the daemon lacks, or that is pinned
    /// already, is left out.
    fn pins(
        &self,
        images: &[ImageReference],
    ) -> impl Future<Output = Result<BTreeMap<ImageReference, String>, EngineError>> + Send {
        let _ = images;
        async { Ok(BTreeMap::new()) }
    }

    /// The engine's name and version as messages give it (`Docker 28.5.2`), when known.
    fn version(&self) -> impl Future<Output = Option<String>> + Send {
        async { None }
    }

    /// The platforms the engine builds natively (empty: it did not say).
    fn native_platforms(&self) -> impl Future<Output = Vec<Platform>> + Send {
        async { Vec::new() }
    }

    /// Whether the engine still answers (a builder that died mid-run has its services
    /// built elsewhere).
    fn alive(&self) -> impl Future<Output = bool> + Send {
        async { true }
    }

    /// Copies `image` from this engine into `to` (a service's image to the builder of
    /// a service that needs it).
    fn transfer(
        &self,
        image: &str,
        to: &Self,
    ) -> impl Future<Output = Result<(), EngineError>> + Send {
        let _ = (image, to);
        async { Err(EngineError::other("this engine cannot copy images")) }
    }

    /// Whether the engine builds from directories through BuildKit's own API
    /// ([`BuildEngine::build_dirs`]), with the Dockerfile frontend's named contexts
    /// when `named_contexts`. `Err` says why not, naming the daemon; the caller then
    /// builds from a tar ([`BuildEngine::build`]) where it can.
    fn builds_dirs(&self, named_contexts: bool) -> impl Future<Output = Result<(), String>> + Send {
        let _ = named_contexts;
        async { Err("this engine builds from a tar only".to_owned()) }
    }

    /// Builds one image from directories through BuildKit's own API (`Solve`), handing
    /// each output line to `log`. Images are used as the daemon holds them, before
    /// any registry is asked.
    fn build_dirs(
        &self,
        spec: BuildSpec,
        dirs: BuildDirs,
        log: LogSink,
    ) -> impl Future<Output = Result<(), BuildError>> + Send {
        let _ = (spec, dirs, log);
        async { Err(BuildError::new("this engine builds from a tar only")) }
    }

    /// Builds one image from `context` (a tar stream), handing each output line to `log`.
    fn build(
        &self,
        spec: BuildSpec,
        context: ContextStream,
        log: LogSink,
    ) -> impl Future<Output = Result<(), BuildError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_by_tag_and_digest() {
        let d = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
        let present =
            PresentImages::from_names(["ubuntu:22.04", &format!("redis@{d}"), "<none>:<none>"]);
        assert!(present.contains(&ImageReference::parse("docker.io/library/ubuntu:22.04").unwrap()));
        assert!(!present.contains(&ImageReference::parse("ubuntu:20.04").unwrap()));
        assert!(present.contains(&ImageReference::parse(&format!("redis:7@{d}")).unwrap()));
        assert!(!present.contains(&ImageReference::parse("redis:7").unwrap()));
        assert_eq!(present.len(), 2);
    }

    #[test]
    fn present_per_platform() {
        let arm: Platform = "linux/arm64".parse().unwrap();
        let amd: Platform = "linux/amd64".parse().unwrap();
        let alpine = ImageReference::parse("alpine:3.18").unwrap();
        let present = PresentImages::from_names(["ubuntu:22.04"])
            .with_platforms(["alpine:3.18"], std::slice::from_ref(&arm));
        assert!(present.contains_for(&alpine, Some(&arm)));
        assert!(!present.contains_for(&alpine, Some(&amd)));
        assert!(present.contains_for(&alpine, None));
        let ubuntu = ImageReference::parse("ubuntu:22.04").unwrap();
        assert!(
            present.contains_for(&ubuntu, Some(&amd)),
            "platforms unknown: present"
        );
    }
}
