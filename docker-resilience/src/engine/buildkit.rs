//! BuildKit's own API, through the daemon: `POST /grpc` upgraded to h2c on the
//! daemon's socket (every dockerd with BuildKit serves `moby.buildkit.v1.Control`
//! there, 20.10 to 28.5), and a gRPC channel over that one connection.
//!
//! What it asks today: the builder's workers and the platforms each runs natively
//! (`doctor`; a scheduler over several builders needs the same).

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bollard_buildkit_proto::moby::buildkit::v1::control_client::ControlClient;
use bollard_buildkit_proto::moby::buildkit::v1::ListWorkersRequest;
use tonic::transport::Channel;

use super::raw::{upgrade, UpgradeError};
use super::{DockerEngine, EngineError};
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
