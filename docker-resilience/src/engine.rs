//! The container engine: the Docker daemon through `bollard`, behind a small trait
//! so that retry and scheduling logic can be tested without a daemon.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    CreateImageOptions, ListImagesOptions, RemoveImageOptions, TagImageOptions,
};
use bollard::Docker;
use futures_util::stream::{BoxStream, StreamExt};

use crate::reference::ImageReference;

/// Where Docker Hub credentials live in docker's config.
const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// How long calls other than pulls may take.
const API_TIMEOUT: Duration = Duration::from_secs(120);

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
    fn from_bollard(e: bollard::errors::Error) -> Self {
        use bollard::errors::Error as B;
        match e {
            B::DockerResponseServerError {
                status_code,
                message,
            } => EngineError::Daemon {
                status: Some(status_code),
                message,
            },
            B::DockerStreamError { error } => EngineError::Daemon {
                status: None,
                message: error,
            },
            other => EngineError::Daemon {
                status: None,
                message: other.to_string(),
            },
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

/// The images an engine has, by normalized tag and digest references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresentImages {
    names: HashSet<String>,
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
        }
    }

    /// Whether the image is present: by digest when the reference pins one, else by tag.
    pub fn contains(&self, image: &ImageReference) -> bool {
        match image.digest() {
            Some(digest) => self.names.contains(&format!("{}@{digest}", image.name())),
            None => self.names.contains(&image.to_string()),
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
    /// Every image present, in one call.
    fn present_images(&self) -> impl Future<Output = Result<PresentImages, EngineError>> + Send;

    /// Starts pulling `image`; the stream yields progress and ends when the pull is
    /// done. Dropping the stream cancels the pull.
    fn pull(
        &self,
        image: &ImageReference,
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
    /// What the daemon's builder offers, asked once (see `build_engine.rs`).
    pub(crate) builder: Arc<tokio::sync::OnceCell<crate::build_engine::DaemonBuilder>>,
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

    async fn credentials_for(&self, registry: &str) -> Option<DockerCredentials> {
        if !self.use_credentials {
            return None;
        }
        if let Some(cached) = self.credentials.lock().ok()?.get(registry) {
            return cached.clone();
        }
        let key = if registry == crate::reference::DOCKER_HUB {
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
}
