//! The Docker daemon through `bollard`: connecting, what the daemon is, credentials,
//! pulls, tags, and the image calls bundles and doctor need.

use std::sync::Arc;
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::models::{ImageInspect, ImageManifestSummary, SystemInfo, SystemVersion};
use bollard::query_parameters::{
    CreateImageOptions, ImportImageOptionsBuilder, ListContainersOptions, ListImagesOptions,
    RemoveImageOptions, TagImageOptions,
};
use bollard::Docker;
use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};

use super::{Engine, EngineError, ImageStore, PresentImages, PullEvent};
use crate::registry::credentials::{Credential, Credentials};
use crate::vocab::{ImageReference, Platform};

/// How long calls other than pulls may take.
const API_TIMEOUT: Duration = Duration::from_secs(120);

impl EngineError {
    pub(super) fn from_bollard(e: bollard::errors::Error) -> Self {
        use bollard::errors::Error as B;
        match e {
            B::DockerResponseServerError {
                status_code,
                message,
            } => EngineError::Daemon {
                status: Some(status_code),
                message,
            },
            B::DockerStreamError { error } => EngineError::other(error),
            other => EngineError::other(other.to_string()),
        }
    }
}

/// Facts about the daemon that matter to pulls and builds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonInfo {
    /// Daemon version (`20.10.24+dfsg1`).
    pub version: String,
    /// API version it speaks.
    pub api_version: String,
    /// Registry mirrors configured in the daemon (`--registry-mirror`, daemon.json).
    pub mirrors: Vec<String>,
    /// Storage driver.
    pub storage_driver: String,
    /// Root directory of the daemon's data.
    pub root_dir: String,
    /// Daemon's OS/architecture (`linux`, `x86_64`).
    pub os: String,
    /// Daemon's architecture.
    pub architecture: String,
    /// `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` the daemon uses.
    pub proxies: Vec<(String, String)>,
    /// Where it keeps images.
    pub image_store: ImageStore,
    /// Registries it talks to over plain HTTP (`insecure-registries`, by name).
    pub insecure_registries: Vec<String>,
}

/// What a daemon can do, probed once per [`DockerEngine`]: asked, not assumed from its
/// version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// The API version negotiated (`1.41` is `(1, 41)`).
    pub api: (u32, u32),
    /// Where it keeps images (`docker info`'s driver status).
    pub image_store: ImageStore,
    /// Builds go through BuildKit (a Linux daemon, unless `DOCKER_BUILDKIT=0`).
    pub buildkit: bool,
    /// The network of builds that set none: `none` under BuildKit on a daemon with no
    /// `bridge` network (BuildKit's default would fail every `RUN`).
    pub default_network: Option<&'static str>,
}

impl Features {
    /// Whether the API has `images/json?manifests=1` (per-platform availability, 1.47+).
    pub fn lists_manifests(&self) -> bool {
        self.api >= (1, 47)
    }
}

fn parse_api(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn image_store(driver_status: Option<&Vec<Vec<String>>>) -> ImageStore {
    let containerd = driver_status.into_iter().flatten().any(|pair| {
        pair.first().is_some_and(|k| k == "driver-type")
            && pair
                .get(1)
                .is_some_and(|v| v.contains("containerd.snapshotter"))
    });
    if containerd {
        ImageStore::Containerd
    } else {
        ImageStore::GraphDriver
    }
}

/// The Docker daemon, through `bollard`.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    docker: Docker,
    host: String,
    credentials: Credentials,
    use_credentials: bool,
    features: Arc<tokio::sync::OnceCell<Features>>,
    /// The daemon's `info` and `version` answers, asked once for [`Self::info`] and
    /// [`Self::features`] alike (neither changes while a run lasts).
    answers: Arc<tokio::sync::OnceCell<(SystemInfo, SystemVersion)>>,
    heredocs: Arc<tokio::sync::OnceCell<bool>>,
    /// Whether builds go through BuildKit's own API; else why not.
    pub(super) solves: Arc<tokio::sync::OnceCell<Result<(), String>>>,
    /// The log said once that builds here export no cache.
    pub(super) said_no_cache_export: Arc<std::sync::atomic::AtomicBool>,
    /// The log said once that `/build` builds import no cache of a spec they cannot use.
    pub(super) said_cache_import_unused: Arc<std::sync::atomic::AtomicBool>,
}

impl DockerEngine {
    /// Connects as the `docker` CLI does (`DOCKER_HOST`, else the default socket) and
    /// negotiates the API version.
    pub async fn connect() -> Result<Self, EngineError> {
        let host =
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        Self::connect_to(&host).await
    }

    /// Connects to the daemon at `host` (`unix:///…`, `tcp://HOST:PORT`, TLS from
    /// `DOCKER_CERT_PATH` when `DOCKER_TLS_VERIFY` is set, as the `docker` CLI does).
    pub async fn connect_to(host: &str) -> Result<Self, EngineError> {
        let host = host.to_owned();
        let unreachable = |e: bollard::errors::Error| EngineError::Unreachable {
            host: host.clone(),
            message: e.to_string(),
        };
        let docker = Docker::connect_with_host(&host).map_err(unreachable)?;
        let docker = docker.with_timeout(API_TIMEOUT);
        let docker = tokio::time::timeout(Duration::from_secs(15), docker.negotiate_version())
            .await
            .map_err(|_| EngineError::Unreachable {
                host: host.clone(),
                message: "no answer in 15s".into(),
            })?
            .map_err(unreachable)?;
        docker.ping().await.map_err(unreachable)?;
        Ok(DockerEngine {
            docker,
            host,
            credentials: Credentials::from_docker_config(),
            features: Arc::default(),
            answers: Arc::default(),
            heredocs: Arc::default(),
            solves: Arc::default(),
            said_no_cache_export: Arc::default(),
            said_cache_import_unused: Arc::default(),
            use_credentials: true,
        })
    }

    /// Whether to send credentials from docker's config (default: yes).
    pub fn with_credentials(mut self, use_credentials: bool) -> Self {
        self.use_credentials = use_credentials;
        self
    }

    /// Whether it sends credentials from docker's config (see
    /// [`DockerEngine::with_credentials`]).
    pub fn uses_credentials(&self) -> bool {
        self.use_credentials
    }

    /// The underlying client, for calls this crate does not wrap.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The `DOCKER_HOST` in use.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Version, mirrors, storage and proxy settings of the daemon.
    pub async fn info(&self) -> Result<DaemonInfo, EngineError> {
        let (info, version) = self.answers().await?;
        let (info, version) = (info.clone(), version.clone());
        let mut proxies = Vec::new();
        for (k, v) in [
            ("HTTP_PROXY", info.http_proxy.clone()),
            ("HTTPS_PROXY", info.https_proxy.clone()),
            ("NO_PROXY", info.no_proxy.clone()),
        ] {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                proxies.push((k.to_owned(), v));
            }
        }
        let image_store = image_store(info.driver_status.as_ref());
        Ok(DaemonInfo {
            image_store,
            version: version.version.unwrap_or_default(),
            api_version: version.api_version.unwrap_or_default(),
            insecure_registries: info
                .registry_config
                .as_ref()
                .and_then(|r| r.index_configs.as_ref())
                .map(|configs| {
                    configs
                        .iter()
                        .filter(|(_, c)| c.secure == Some(false))
                        .map(|(name, _)| name.clone())
                        .collect()
                })
                .unwrap_or_default(),
            mirrors: info
                .registry_config
                .and_then(|r| r.mirrors)
                .unwrap_or_default(),
            storage_driver: info.driver.unwrap_or_default(),
            root_dir: info.docker_root_dir.unwrap_or_default(),
            os: info.os_type.unwrap_or_default(),
            architecture: info.architecture.unwrap_or_default(),
            proxies,
        })
    }

    /// The daemon's `info` and `version` (asked at once, the first time).
    async fn answers(&self) -> Result<&(SystemInfo, SystemVersion), EngineError> {
        self.answers
            .get_or_try_init(|| async {
                let (info, version) = tokio::join!(self.docker.info(), self.docker.version());
                Ok((
                    info.map_err(EngineError::from_bollard)?,
                    version.map_err(EngineError::from_bollard)?,
                ))
            })
            .await
    }

    /// What the daemon can do (asked once, then remembered).
    pub async fn features(&self) -> Features {
        *self.features.get_or_init(|| self.probe()).await
    }

    async fn probe(&self) -> Features {
        // Asked at once: each is a round trip to the daemon before a run can start.
        let networks = self
            .docker
            .list_networks(None::<bollard::query_parameters::ListNetworksOptions>);
        let (answers, networks) = tokio::join!(self.answers(), networks);
        let (info, version) = answers.ok().map(|(i, v)| (i, v)).unzip();
        let disabled = std::env::var("DOCKER_BUILDKIT")
            .is_ok_and(|v| v == "0" || v.eq_ignore_ascii_case("false"));
        let linux = version
            .and_then(|v| v.os.as_deref())
            .is_none_or(|os| os.eq_ignore_ascii_case("linux"));
        let buildkit = !disabled && linux;
        let bridge = networks
            .map(|nets| nets.iter().any(|n| n.name.as_deref() == Some("bridge")))
            .unwrap_or(true);
        let default_network = (buildkit && !bridge).then_some("none");
        if default_network.is_some() {
            tracing::info!("no `bridge` network on this daemon: RUN steps use network `none` (set `network` or --network to change)");
        }
        Features {
            api: parse_api(self.docker.client_version().to_string().as_str()),
            image_store: image_store(info.and_then(|i| i.driver_status.as_ref())),
            buildkit,
            default_network,
        }
    }

    /// Whether the daemon's built-in Dockerfile frontend accepts heredocs, found by
    /// building a two-line Dockerfile from `scratch` once (its image is removed).
    pub async fn heredocs(&self) -> bool {
        *self
            .heredocs
            .get_or_init(|| async {
                let accepted = self.try_heredoc().await;
                tracing::debug!("the daemon's Dockerfile frontend accepts heredocs: {accepted}");
                accepted
            })
            .await
    }

    /// The ID of the image with this name, `None` when there is none.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>, EngineError> {
        match self.docker.inspect_image(image).await {
            Ok(inspect) => Ok(Some(inspect.id.unwrap_or_default())),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(EngineError::from_bollard(e)),
        }
    }

    /// `docker save` of `images`: the tar, streamed as the daemon sends it.
    pub fn save(&self, images: &[&str]) -> impl Stream<Item = Result<Bytes, EngineError>> + Send {
        self.docker
            .export_images(images)
            .map(|chunk| chunk.map_err(EngineError::from_bollard))
    }

    /// `docker load` of a tar stream; returns what the daemon says it loaded (image
    /// names, or IDs of untagged images).
    pub async fn load<S>(&self, tar: S) -> Result<Vec<String>, EngineError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let options = ImportImageOptionsBuilder::default().quiet(true).build();
        let mut answers = self.docker.import_image_stream(options, tar, None);
        let mut loaded = Vec::new();
        while let Some(item) = answers.next().await {
            let info = item.map_err(EngineError::from_bollard)?;
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
                return Err(EngineError::other(detail.message.unwrap_or_default()));
            }
        }
        Ok(loaded)
    }

    /// Host ports that running containers publish, with the container's name.
    pub async fn published_ports(&self) -> Vec<(u16, String)> {
        let containers = self
            .docker
            .list_containers(None::<ListContainersOptions>)
            .await
            .unwrap_or_default();
        let mut out = Vec::new();
        for c in containers {
            let name = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map_or("?", |n| n.trim_start_matches('/'))
                .to_owned();
            for port in c.ports.iter().flatten() {
                if let Some(public) = port.public_port {
                    out.push((public, name.clone()));
                }
            }
        }
        out
    }

    async fn credentials_for(&self, registry: &str) -> Option<DockerCredentials> {
        if !self.use_credentials {
            return None;
        }
        let server = Some(Credentials::server_key(registry));
        self.credentials.get(registry).await.map(|c| match c {
            Credential::Basic { username, password } => DockerCredentials {
                username: Some(username),
                password: Some(password),
                serveraddress: server,
                ..DockerCredentials::default()
            },
            Credential::IdentityToken(token) => DockerCredentials {
                identitytoken: Some(token),
                serveraddress: server,
                ..DockerCredentials::default()
            },
        })
    }

    /// What of `wanted` the daemon holds, per platform, by one inspect each
    /// (`images/{name}/json?manifests=1`, API 1.48+).
    async fn inspect_wanted(
        &self,
        wanted: &[ImageReference],
        features: Features,
    ) -> Result<PresentImages, String> {
        use futures_util::stream::{self, StreamExt, TryStreamExt};
        let names: std::collections::BTreeSet<String> =
            wanted.iter().map(ToString::to_string).collect();
        let api = format!("v{}.{}", features.api.0, features.api.1);
        let answers: Vec<(String, Option<serde_json::Value>)> = stream::iter(names)
            .map(|name| {
                let path = format!("/{api}/images/{name}/json?manifests=1");
                async move {
                    super::raw::get_json(self.host(), &path)
                        .await
                        .map(|answer| (name, answer))
                }
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let mut present = PresentImages::default().in_store(features.image_store);
        for (name, answer) in answers {
            if let Some(answer) = answer {
                let image: ImageInspect = serde_json::from_value(answer)
                    .map_err(|e| format!("unreadable inspect of {name}: {e}"))?;
                let (names, held) = inspected_platforms(name, &image);
                present = present.with_platforms(&names, &held);
            }
        }
        Ok(present)
    }
}

/// From an `images/{name}/json?manifests=1` answer for `name`: the names the image goes
/// by (`name`, its tags and digests) and the platforms it holds (those of its available
/// image manifests, else its config's).
fn inspected_platforms(name: String, image: &ImageInspect) -> (Vec<String>, Vec<Platform>) {
    let mut names = vec![name];
    names.extend(image.repo_tags.iter().flatten().cloned());
    names.extend(image.repo_digests.iter().flatten().cloned());
    let mut held = manifest_platforms(image.manifests.as_deref().unwrap_or_default());
    if held.is_empty() {
        held.extend(
            image
                .os
                .as_deref()
                .zip(image.architecture.as_deref())
                .map(|(os, arch)| Platform::new(os, arch, image.variant.as_deref())),
        );
    }
    (names, held)
}

/// The platforms of the image manifests the containerd store holds whole.
fn manifest_platforms(manifests: &[ImageManifestSummary]) -> Vec<Platform> {
    manifests
        .iter()
        .filter(|m| m.available)
        .filter_map(|m| {
            let p = &m.image_data.as_ref()?.platform;
            Some(Platform::new(
                p.os.as_deref()?,
                p.architecture.as_deref()?,
                p.variant.as_deref(),
            ))
        })
        .collect()
}

impl Engine for DockerEngine {
    async fn present_images(
        &self,
        wanted: &[ImageReference],
    ) -> Result<PresentImages, EngineError> {
        let features = self.features().await;
        let per_manifest =
            features.image_store.holds_many_platforms() && features.lists_manifests();
        if per_manifest && features.api >= (1, 48) {
            // Each wanted image inspected with its platforms: listing every image with
            // its manifests takes the containerd store a quarter of a second for forty
            // images, and grows with the store.
            match self.inspect_wanted(wanted, features).await {
                Ok(present) => return Ok(present),
                Err(why) => tracing::debug!("inspecting the wanted images: {why}; listing all"),
            }
        }
        let options = ListImagesOptions {
            manifests: per_manifest,
            ..ListImagesOptions::default()
        };
        let images = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(EngineError::from_bollard)?;
        let mut present = PresentImages::default().in_store(features.image_store);
        let mut unknown = Vec::new();
        for image in images {
            let names: Vec<String> = image
                .repo_tags
                .iter()
                .chain(&image.repo_digests)
                .cloned()
                .collect();
            // The containerd store says which platforms each tag holds, in this one call.
            let held = manifest_platforms(image.manifests.as_deref().unwrap_or_default());
            if held.is_empty() {
                present = present.with_platforms(&names, &[]);
                unknown.push((image.id, names));
            } else {
                present = present.with_platforms(&names, &held);
            }
        }
        // Elsewhere an image holds one platform: its config's, for the wanted ones.
        for (id, names) in unknown {
            let is_wanted = wanted.iter().any(|w| {
                names
                    .iter()
                    .filter_map(|n| ImageReference::parse(n).ok())
                    .any(|n| &n == w || (w.digest().is_some() && n.name() == w.name()))
            });
            if !is_wanted {
                continue;
            }
            if let Ok(inspect) = self.docker.inspect_image(&id).await {
                if let (Some(os), Some(arch)) = (inspect.os, inspect.architecture) {
                    let platform = Platform::new(&os, &arch, inspect.variant.as_deref());
                    present = present.with_platforms(&names, &[platform]);
                }
            }
        }
        Ok(present)
    }

    async fn pull(
        &self,
        image: &ImageReference,
        platform: Option<&Platform>,
    ) -> BoxStream<'static, Result<PullEvent, EngineError>> {
        let credentials = self.credentials_for(image.registry()).await;
        let options = CreateImageOptions {
            from_image: Some(image.name()),
            tag: Some(image.tag_or_digest().to_owned()),
            platform: platform.map(ToString::to_string).unwrap_or_default(),
            ..CreateImageOptions::default()
        };
        self.docker
            .create_image(Some(options), None, credentials)
            .map(|item| {
                item.map(|info| PullEvent {
                    layer: info.id,
                    status: info.status.unwrap_or_default(),
                    current: info
                        .progress_detail
                        .as_ref()
                        .and_then(|p| p.current)
                        .and_then(|v| u64::try_from(v).ok()),
                    total: info
                        .progress_detail
                        .as_ref()
                        .and_then(|p| p.total)
                        .and_then(|v| u64::try_from(v).ok()),
                })
                .map_err(EngineError::from_bollard)
            })
            .boxed()
    }

    async fn tag(
        &self,
        source: &ImageReference,
        target: &ImageReference,
    ) -> Result<(), EngineError> {
        let options = TagImageOptions {
            repo: Some(target.name()),
            tag: target.tag().map(str::to_owned),
        };
        self.docker
            .tag_image(&source.to_string(), Some(options))
            .await
            .map_err(EngineError::from_bollard)
    }

    fn on_this_machine(&self) -> bool {
        let host = self.host.as_str();
        host.starts_with("unix://")
            || ["tcp://127.0.0.1:", "tcp://localhost:", "tcp://[::1]:"]
                .iter()
                .any(|p| host.starts_with(p))
    }

    async fn load(&self, archive: super::ContextStream) -> Result<Vec<String>, EngineError> {
        DockerEngine::load(self, archive).await
    }

    async fn names(&self) -> Result<Vec<String>, EngineError> {
        let images = self
            .docker
            .list_images(None::<ListImagesOptions>)
            .await
            .map_err(EngineError::from_bollard)?;
        Ok(images
            .into_iter()
            .flat_map(|image| image.repo_tags.into_iter().chain(image.repo_digests))
            .filter(|name| !name.starts_with("<none>"))
            .collect())
    }

    async fn untag(&self, image: &ImageReference) -> Result<(), EngineError> {
        let options = RemoveImageOptions {
            noprune: true,
            ..RemoveImageOptions::default()
        };
        self.docker
            .remove_image(&image.to_string(), Some(options), None)
            .await
            .map(|_| ())
            .map_err(EngineError::from_bollard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A captured `images/{name}/json?manifests=1` answer (`tests/data/image-inspect/`).
    fn captured(name: &str) -> ImageInspect {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/image-inspect/28.5-containerd")
            .join(name);
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn an_inspect_says_which_platforms_the_containerd_store_holds() {
        let (names, held) = inspected_platforms(
            "docker.io/library/alpine:3.18".into(),
            &captured("alpine-3.18.json"),
        );
        assert_eq!(names[..2], ["docker.io/library/alpine:3.18", "alpine:3.18"]);
        assert!(names[2].starts_with("alpine@sha256:"), "{names:?}");
        let held: Vec<String> = held.iter().map(ToString::to_string).collect();
        assert_eq!(held, ["linux/amd64", "linux/arm64"]);
        // An index of two whose arm64 image was never fetched holds amd64 only.
        let (_, held) = inspected_platforms(
            "docker.io/library/ubuntu:22.04".into(),
            &captured("ubuntu-22.04-amd64-only.json"),
        );
        let held: Vec<String> = held.iter().map(ToString::to_string).collect();
        assert_eq!(held, ["linux/amd64"]);
    }

    #[test]
    fn without_manifests_the_config_says_the_platform() {
        let image: ImageInspect = serde_json::from_value(serde_json::json!({
            "RepoTags": ["acme/app:1"], "Os": "linux", "Architecture": "arm", "Variant": "v7"
        }))
        .unwrap();
        let (names, held) = inspected_platforms("docker.io/acme/app:1".into(), &image);
        assert_eq!(names, ["docker.io/acme/app:1", "acme/app:1"]);
        assert_eq!(held, [Platform::new("linux", "arm", Some("v7"))]);
    }
}
