//! BuildKit's own API, through the daemon: `POST /grpc` upgraded to h2c on the
//! daemon's socket (every dockerd with BuildKit serves `moby.buildkit.v1.Control`
//! there, 20.10 to 28.5), and a gRPC channel over that one connection.
//!
//! What it asks: the builder's workers and the platforms each runs natively
//! (`doctor`; a scheduler over several builders needs the same), and builds: `Solve`
//! with the Dockerfile frontend, the context and the Dockerfile served by a session of
//! ours ([`super::filesync`]), images used as the daemon holds them before any
//! registry is asked (`image-resolve-mode=local`), the image exported into the daemon
//! (`moby`), and `Status` read into the same output as a `/build`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bollard_buildkit_proto::moby::buildkit::v1::control_client::ControlClient;
use bollard_buildkit_proto::moby::buildkit::v1::{
    CacheOptions, CacheOptionsEntry, ListWorkersRequest, SolveRequest, StatusRequest,
};
use tonic::transport::Channel;

use super::filesync::{DirSource, Dirs};
use super::progress::Progress;
use super::raw::{upgrade, UpgradeError};
use super::session::Session;
use super::{
    BuildDirs, BuildEngine, BuildError, BuildSpec, DockerEngine, EngineError, ImageStore, LogSink,
};
use crate::support::lock;
use crate::vocab::Platform;

/// How long the upgrade and the first call may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A BuildKit worker of the daemon: where builds run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildkitWorker {
    /// Its id (`moby` for the graph-driver store's worker).
    pub id: String,
    /// The platforms it runs natively, the first its own.
    pub platforms: Vec<Platform>,
    /// Its executor and snapshotter, when it says (`containerd`, `overlayfs`).
    pub executor: Option<String>,
    /// See `executor`.
    pub snapshotter: Option<String>,
}

impl DockerEngine {
    /// The daemon's BuildKit workers, asked through its gRPC API. An error says why
    /// that API cannot be reached (a daemon without BuildKit answers the upgrade 404).
    pub async fn buildkit_workers(&self) -> Result<Vec<BuildkitWorker>, EngineError> {
        let host = self.host().to_owned();
        let failed = |message: String| EngineError::Daemon {
            status: None,
            message: format!("BuildKit's API at {host}: {message}"),
        };
        let asked = async {
            let mut control = ControlClient::new(grpc_channel(&host).await.map_err(&failed)?);
            let workers = control
                .list_workers(ListWorkersRequest::default())
                .await
                .map_err(|e| failed(format!("ListWorkers: {}", e.message())))?;
            Ok(workers
                .into_inner()
                .record
                .into_iter()
                .map(worker)
                .collect())
        };
        tokio::time::timeout(TIMEOUT, asked)
            .await
            .unwrap_or_else(|_| Err(failed(format!("no answer in {}s", TIMEOUT.as_secs()))))
    }
}

impl DockerEngine {
    /// Whether builds can go through BuildKit's own API here, found once: BuildKit in
    /// use and its gRPC API answering; with named contexts, a Dockerfile frontend
    /// that takes them (Docker 23+, API 1.42+).
    pub(super) async fn solves(&self, named_contexts: bool) -> Result<(), String> {
        let features = self.features().await;
        let base = self
            .solves
            .get_or_init(|| async {
                if !features.buildkit {
                    return Err("BuildKit is not in use (DOCKER_BUILDKIT=0?)".to_owned());
                }
                if std::env::var(BUILD_API_ENV).is_ok_and(|v| v == "build") {
                    return Err(format!("{BUILD_API_ENV}=build"));
                }
                match self.buildkit_workers().await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await
            .clone();
        base?;
        if named_contexts && features.api < (1, 42) {
            let version = BuildEngine::version(self)
                .await
                .unwrap_or_else(|| "this daemon".to_owned());
            return Err(format!(
                "{version}'s built-in Dockerfile frontend takes no named contexts (Docker 23 \
                 or later does)"
            ));
        }
        Ok(())
    }

    /// Builds `spec` from `dirs` through `Solve`, its progress read from `Status`.
    pub(super) async fn solve(
        &self,
        spec: BuildSpec,
        dirs: BuildDirs,
        log: LogSink,
    ) -> Result<(), BuildError> {
        let features = self.features().await;
        let id = session_id(&spec.service);
        let mut attrs: HashMap<String, String> = HashMap::from([
            ("filename".to_owned(), DOCKERFILE.to_owned()),
            ("image-resolve-mode".to_owned(), "local".to_owned()),
        ]);
        for (k, v) in &spec.args {
            attrs.insert(format!("build-arg:{k}"), v.clone());
        }
        if let Some(target) = &spec.target {
            attrs.insert("target".into(), target.clone());
        }
        if let Some(platform) = &spec.platform {
            attrs.insert("platform".into(), platform.clone());
        }
        if spec.no_cache {
            attrs.insert("no-cache".into(), String::new());
        }
        let mut entitlements = Vec::new();
        match spec
            .network
            .as_deref()
            .or(features.default_network)
            .unwrap_or("default")
        {
            "default" | "bridge" => {}
            "none" => {
                attrs.insert("force-network-mode".into(), "none".into());
            }
            "host" => {
                attrs.insert("force-network-mode".into(), "host".into());
                entitlements.push("network.host".to_owned());
            }
            other => {
                debug_assert!(!api_takes_network(other));
                return Err(BuildError::new(format!(
                    "network `{other}`: BuildKit's API takes `default`, `none` or `host`"
                )));
            }
        }
        let mut served = HashMap::from([
            ("context".to_owned(), DirSource::Disk(dirs.context.clone())),
            (
                "dockerfile".to_owned(),
                DirSource::Files(
                    std::iter::once((DOCKERFILE.to_owned(), Arc::from(dirs.dockerfile.as_bytes())))
                        .chain(dirs.dockerignore.as_ref().map(|text| {
                            (
                                format!("{DOCKERFILE}.dockerignore"),
                                Arc::from(text.as_bytes()),
                            )
                        }))
                        .collect(),
                ),
            ),
        ]);
        for (name, dir) in &dirs.named {
            attrs.insert(format!("context:{name}"), format!("local:{name}"));
            served.insert(name.clone(), DirSource::Disk(dir.clone()));
        }
        for (name, url) in &dirs.remote {
            attrs.insert(format!("context:{name}"), url.clone());
        }
        let secrets = spec.secrets.clone().into_iter().collect();
        let _session = Session::open(self.host(), &id, secrets, Some(Dirs(served)))
            .await
            .map_err(BuildError::new)?;
        let channel = grpc_channel(self.host())
            .await
            .map_err(|e| BuildError::new(format!("BuildKit's API at {}: {e}", self.host())))?;
        let entries = |specs: &[String]| -> Result<Vec<CacheOptionsEntry>, BuildError> {
            specs
                .iter()
                .map(|s| cache_entry(s).map_err(BuildError::new))
                .collect()
        };
        let imports = entries(&spec.cache_from)?;
        let mut exports = entries(&spec.cache_to)?;
        if !exports.is_empty() && features.image_store == ImageStore::GraphDriver {
            if !self.said_no_cache_export.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "this daemon keeps images in a graph driver, whose BuildKit exports no \
                     build cache (`cache-to` needs the containerd image store): builds \
                     export none"
                );
            }
            exports.clear();
        }
        if !imports.is_empty() {
            // The frontend imports them too (as `buildctl` and buildx tell it).
            let listed: Vec<serde_json::Value> = imports
                .iter()
                .map(|e| serde_json::json!({"Type": e.r#type, "Attrs": e.attrs}))
                .collect();
            attrs.insert(
                "cache-imports".into(),
                serde_json::Value::Array(listed).to_string(),
            );
        }
        let request = SolveRequest {
            r#ref: id.clone(),
            session: id.clone(),
            frontend: "dockerfile.v0".into(),
            frontend_attrs: attrs,
            exporter_deprecated: "moby".into(),
            exporter_attrs_deprecated: HashMap::from([("name".to_owned(), spec.tag.clone())]),
            entitlements,
            cache: Some(CacheOptions {
                exports,
                imports,
                ..CacheOptions::default()
            }),
            ..SolveRequest::default()
        };
        let mut control = ControlClient::new(channel.clone());
        let mut status = ControlClient::new(channel);
        let progress = Mutex::new(Progress::default());
        let watch = async {
            let Ok(stream) = status.status(StatusRequest { r#ref: id.clone() }).await else {
                return;
            };
            let mut stream = stream.into_inner();
            while let Ok(Some(message)) = stream.message().await {
                lock(&progress).record_status(message, &*log);
            }
        };
        let (solved, ()) = tokio::join!(control.solve(request), watch);
        let mut progress = progress.into_inner().unwrap_or_else(|e| e.into_inner());
        match solved {
            // A step that failed without failing the build (a cache to import that is
            // not there yet) is no failure: `Solve` says whether the build failed.
            Ok(_) => {
                if let Some(error) = progress.vertex_error.take() {
                    tracing::debug!("{}: a step failed, not the build: {error}", spec.service);
                }
                Ok(())
            }
            Err(e) => {
                let message = e.message().to_owned();
                let message = message
                    .strip_prefix("failed to solve: ")
                    .unwrap_or(&message)
                    .to_owned();
                Err(progress.failure(message))
            }
        }
    }
}

/// Whether BuildKit's API takes this network mode for `RUN` steps (`default`, `bridge`,
/// `none`, `host`); a network of the daemon's own only `/build` takes.
pub fn api_takes_network(mode: &str) -> bool {
    matches!(mode, "default" | "bridge" | "none" | "host")
}

/// Set to `build`, builds go through Docker's `/build` API even where BuildKit's own
/// is there (an escape hatch; BuildKit's API is preferred).
pub const BUILD_API_ENV: &str = "DRBUILD_BUILD_API";

/// The Dockerfile's name in the directory the session serves it from.
const DOCKERFILE: &str = "Dockerfile";

/// A build cache as BuildKit takes it: `type=registry,ref=…,mode=max`, or an image
/// reference alone (a registry cache).
pub(super) fn cache_entry(spec: &str) -> Result<CacheOptionsEntry, String> {
    let spec = spec.trim();
    if !spec.contains('=') {
        return Ok(CacheOptionsEntry {
            r#type: "registry".into(),
            attrs: HashMap::from([("ref".to_owned(), spec.to_owned())]),
        });
    }
    let mut kind = None;
    let mut attrs = HashMap::new();
    for field in spec.split(',') {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| format!("cache `{spec}`: `{field}` is not KEY=VALUE"))?;
        if key.trim() == "type" {
            kind = Some(value.trim().to_owned());
        } else {
            attrs.insert(key.trim().to_owned(), value.trim().to_owned());
        }
    }
    Ok(CacheOptionsEntry {
        r#type: kind.ok_or_else(|| format!("cache `{spec}` names no `type=`"))?,
        attrs,
    })
}

/// What Docker's `/build` API takes of `specs`: the images to import an inline cache
/// from (`type=registry,ref=IMAGE` or an image alone), and the specs it cannot use
/// (other types: BuildKit's own API imports them). A malformed spec is an error, as
/// it is for BuildKit's API.
pub(super) fn image_caches(specs: &[String]) -> Result<(Vec<String>, Vec<&str>), String> {
    let (mut images, mut unused) = (Vec::new(), Vec::new());
    for spec in specs {
        let entry = cache_entry(spec)?;
        match entry.attrs.get("ref") {
            Some(image) if entry.r#type == "registry" => images.push(image.clone()),
            _ => unused.push(spec.trim()),
        }
    }
    Ok((images, unused))
}

/// A fresh id for a build's session (and its `Solve`).
pub(super) fn session_id(service: &str) -> String {
    static BUILDS: AtomicU64 = AtomicU64::new(0);
    format!(
        "drbuild-{service}-{}-{}",
        std::process::id(),
        BUILDS.fetch_add(1, Ordering::Relaxed)
    )
}

fn worker(
    record: bollard_buildkit_proto::moby::buildkit::v1::types::WorkerRecord,
) -> BuildkitWorker {
    let label = |name: &str| {
        record
            .labels
            .get(&format!("org.mobyproject.buildkit.worker.{name}"))
            .cloned()
    };
    BuildkitWorker {
        platforms: record
            .platforms
            .iter()
            .map(|p| {
                let variant = Some(p.variant.as_str()).filter(|v| !v.is_empty());
                Platform::new(&p.os, &p.architecture, variant)
            })
            .collect(),
        executor: label("executor"),
        snapshotter: label("snapshotter"),
        id: record.id,
    }
}

/// A gRPC channel to the daemon's BuildKit over one upgraded connection to `host`.
async fn grpc_channel(host: &str) -> Result<Channel, String> {
    let upgraded = upgrade(host, "/grpc", &[]).await.map_err(|e| match e {
        UpgradeError::Refused(status) => {
            format!("the daemon answered {status} to the upgrade to gRPC (no BuildKit there)")
        }
        UpgradeError::Failed(e) => format!("cannot upgrade a connection to gRPC: {e}"),
    })?;
    tonic::transport::Endpoint::from_static("http://docker")
        .connect_with_connector(Upgraded(Arc::new(Mutex::new(Some(upgraded)))))
        .await
        .map_err(|e| format!("no gRPC over the upgraded connection: {e}"))
}

/// The one connection the channel runs over: given once (a channel asking again
/// has lost it, and fails).
struct Upgraded(Arc<Mutex<Option<hyper::upgrade::Upgraded>>>);

impl tonic::codegen::Service<tonic::codegen::http::Uri> for Upgraded {
    type Response = hyper::upgrade::Upgraded;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
        std::future::ready(
            lock(&self.0)
                .take()
                .ok_or_else(|| std::io::Error::other("the daemon's gRPC connection is gone")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard_buildkit_proto::moby::buildkit::v1::types::WorkerRecord;
    use bollard_buildkit_proto::pb;

    #[test]
    fn cache_specs_as_buildkit_takes_them() {
        let e = cache_entry("type=registry,ref=127.0.0.1:5000/cache/api,mode=max").unwrap();
        assert_eq!(e.r#type, "registry");
        assert_eq!(e.attrs["ref"], "127.0.0.1:5000/cache/api");
        assert_eq!(e.attrs["mode"], "max");
        let e = cache_entry("acme/api:cache").unwrap();
        assert_eq!(
            (e.r#type.as_str(), e.attrs["ref"].as_str()),
            ("registry", "acme/api:cache")
        );
        assert_eq!(
            cache_entry("ref=x,mode=max").unwrap_err(),
            "cache `ref=x,mode=max` names no `type=`"
        );
        assert_eq!(
            cache_entry("type=local,dest").unwrap_err(),
            "cache `type=local,dest`: `dest` is not KEY=VALUE"
        );
    }

    #[test]
    fn the_build_api_takes_image_caches_and_says_what_it_cannot_use() {
        let specs = [
            "type=registry,ref=127.0.0.1:5000/cache/api,mode=max",
            "acme/api:cache",
            "type=local,src=/tmp/cache",
            "type=registry,mode=max",
        ]
        .map(String::from);
        let (images, unused) = image_caches(&specs).unwrap();
        assert_eq!(images, ["127.0.0.1:5000/cache/api", "acme/api:cache"]);
        assert_eq!(
            unused,
            ["type=local,src=/tmp/cache", "type=registry,mode=max"]
        );
        assert_eq!(
            image_caches(&["acme/api:cache".into(), "type=local,dest".into()]).unwrap_err(),
            "cache `type=local,dest`: `dest` is not KEY=VALUE"
        );
    }

    #[test]
    fn workers_as_the_daemons_describe_them() {
        // As 28.5 with the containerd store answered ListWorkers here.
        let record = WorkerRecord {
            id: "j70w6s4sj2cfnybfqu2sdeupk".into(),
            labels: [
                ("org.mobyproject.buildkit.worker.executor", "containerd"),
                ("org.mobyproject.buildkit.worker.snapshotter", "overlayfs"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            platforms: [("amd64", ""), ("amd64", "v2"), ("386", "")]
                .into_iter()
                .map(|(architecture, variant)| pb::Platform {
                    os: "linux".into(),
                    architecture: architecture.into(),
                    variant: variant.into(),
                    ..pb::Platform::default()
                })
                .collect(),
            ..WorkerRecord::default()
        };
        let w = worker(record);
        assert_eq!(w.id, "j70w6s4sj2cfnybfqu2sdeupk");
        let platforms: Vec<String> = w.platforms.iter().map(ToString::to_string).collect();
        assert_eq!(platforms, ["linux/amd64", "linux/amd64/v2", "linux/386"]);
        assert_eq!(w.executor.as_deref(), Some("containerd"));
        assert_eq!(w.snapshotter.as_deref(), Some("overlayfs"));
        // 20.10's worker says nothing of itself.
        let w = worker(WorkerRecord {
            id: "moby".into(),
            ..WorkerRecord::default()
        });
        assert_eq!((w.executor, w.snapshotter), (None, None));
    }
}
