//! The Docker daemon through `bollard`: connecting, what the daemon is, credentials,
//! pulls, tags, and the image calls bundles and doctor need.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    CreateImageOptions, ImportImageOptionsBuilder, ListContainersOptions, ListImagesOptions,
    RemoveImageOptions, TagImageOptions,
};
use bollard::Docker;
use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};

use super::build::DaemonBuilder;
use super::{Engine, EngineError, PresentImages, PullEvent};
use crate::vocab::{ImageReference, DOCKER_HUB};

/// Where Docker Hub credentials live in docker's config.
const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

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
}

/// The Docker daemon, through `bollard`.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    docker: Docker,
    host: String,
    credentials: Arc<Mutex<HashMap<String, Option<DockerCredentials>>>>,
    use_credentials: bool,
    /// What the daemon's builder offers, asked once.
    pub(super) builder: Arc<tokio::sync::OnceCell<DaemonBuilder>>,
}

impl DockerEngine {
    /// Connects as the `docker` CLI does (`DOCKER_HOST`, else the default socket) and
    /// negotiates the API version.
    pub async fn connect() -> Result<Self, EngineError> {
        let host =
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        let unreachable = |e: bollard::errors::Error| EngineError::Unreachable {
            host: host.clone(),
            message: e.to_string(),
        };
        let docker = Docker::connect_with_defaults().map_err(unreachable)?;
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
            credentials: Arc::default(),
            builder: Arc::default(),
            use_credentials: true,
        })
    }

    /// Whether to send credentials from docker's config (default: yes).
    pub fn with_credentials(mut self, use_credentials: bool) -> Self {
        self.use_credentials = use_credentials;
        self
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
        let info = self
            .docker
            .info()
            .await
            .map_err(EngineError::from_bollard)?;
        let version = self
            .docker
            .version()
            .await
            .map_err(EngineError::from_bollard)?;
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
        Ok(DaemonInfo {
            version: version.version.unwrap_or_default(),
            api_version: version.api_version.unwrap_or_default(),
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
        if let Some(cached) = self.credentials.lock().ok()?.get(registry) {
            return cached.clone();
        }
        let key = if registry == DOCKER_HUB {
            DOCKER_HUB_AUTH_KEY.to_owned()
        } else {
            registry.to_owned()
        };
        let server = key.clone();
        // docker_credential is synchronous (it may run a credential helper).
        let found = tokio::task::spawn_blocking(move || docker_credential::get_credential(&server))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|c| match c {
                docker_credential::DockerCredential::UsernamePassword(username, password) => {
                    DockerCredentials {
                        username: Some(username),
                        password: Some(password),
                        serveraddress: Some(key.clone()),
                        ..DockerCredentials::default()
                    }
                }
                docker_credential::DockerCredential::IdentityToken(token) => DockerCredentials {
                    identitytoken: Some(token),
                    serveraddress: Some(key.clone()),
                    ..DockerCredentials::default()
                },
            });
        if let Ok(mut cache) = self.credentials.lock() {
            cache.insert(registry.to_owned(), found.clone());
        }
        found
    }
}

impl Engine for DockerEngine {
    async fn present_images(&self) -> Result<PresentImages, EngineError> {
        let images = self
            .docker
            .list_images(Some(ListImagesOptions::default()))
            .await
            .map_err(EngineError::from_bollard)?;
        Ok(PresentImages::from_names(images.into_iter().flat_map(
            |i| i.repo_tags.into_iter().chain(i.repo_digests),
        )))
    }

    async fn pull(
        &self,
        image: &ImageReference,
    ) -> BoxStream<'static, Result<PullEvent, EngineError>> {
        let credentials = self.credentials_for(image.registry()).await;
        let options = CreateImageOptions {
            from_image: Some(image.name()),
            tag: Some(image.tag_or_digest().to_owned()),
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
