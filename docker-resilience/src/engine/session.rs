//! A BuildKit session of drbuild's own: it serves a build its secrets and, for a
//! build through BuildKit's API, its directories ([`super::filesync`]).
//!
//! BuildKit asks the client for secrets and files through a *session*: the client
//! opens `POST /session` on the daemon, upgraded to h2c, and serves gRPC on that
//! connection (`moby.buildkit.secrets.v1.Secrets/GetSecret`,
//! `moby.filesync.v1.FileSync/DiffCopy`, and the health checks BuildKit sends); the
//! build names the session by id. bollard's own session serves registry auth only, so
//! a `/build` with secrets opens this one first, under the build's session id: the
//! daemon registers it before answering `101`, and refuses the second session bollard
//! then opens with the same id (`session … already exists`), which bollard ignores.
//! The session ends when it is dropped.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use bollard_buildkit_proto::health::health_check_response::ServingStatus;
use bollard_buildkit_proto::health::health_server::{Health, HealthServer};
use bollard_buildkit_proto::health::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::secrets_server::{Secrets, SecretsServer};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::{GetSecretRequest, GetSecretResponse};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::filesync::Dirs;
use super::raw::{upgrade, UpgradeError};
use bollard_buildkit_proto::moby::filesync::v1::file_sync_server::FileSyncServer;
use tonic::{Request, Response, Status};

use crate::vocab::SecretValue;

/// The gRPC methods every session serves (BuildKit calls only what is announced).
const METHODS: [&str; 3] = [
    "/moby.buildkit.secrets.v1.Secrets/GetSecret",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

/// What a session with directories serves as well.
const FILESYNC: &str = "/moby.filesync.v1.FileSync/DiffCopy";

/// An open session; closed when dropped.
pub(super) struct Session {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Session {
    /// Opens session `id` on the daemon at `host` (`unix:///…` or `tcp://…` without
    /// TLS), serving `secrets` by id and `dirs` by name. Returns once the daemon has
    /// switched protocols.
    pub(super) async fn open(
        host: &str,
        id: &str,
        secrets: HashMap<String, SecretValue>,
        dirs: Option<Dirs>,
    ) -> Result<Session, String> {
        let mut headers = vec![
            ("X-Docker-Expose-Session-Uuid", id),
            ("X-Docker-Expose-Session-Name", "drbuild"),
            ("X-Docker-Expose-Session-Sharedkey", id),
        ];
        headers.extend(
            METHODS
                .iter()
                .chain(dirs.is_some().then_some(&FILESYNC))
                .map(|m| ("X-Docker-Expose-Session-Grpc-Method", *m)),
        );
        let upgraded = upgrade(host, "/session", &headers)
            .await
            .map_err(|e| match e {
                UpgradeError::Refused(status) => format!(
                    "the daemon answered {status} to a build session (secrets need BuildKit)"
                ),
                UpgradeError::Failed(e) => format!("cannot open a build session on {e}"),
            })?;
        let transport = Transport(TokioIo::new(upgraded));
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(HealthServer::new(Healthy))
                .add_service(SecretsServer::new(Store { secrets }))
                .add_optional_service(dirs.map(FileSyncServer::new))
                .serve_with_incoming(futures_util::stream::iter([Ok::<_, std::io::Error>(
                    transport,
                )]))
                .await;
            if let Err(e) = served {
                tracing::debug!("build session ended: {e}");
            }
        });
        Ok(Session { task })
    }
}

/// The upgraded connection, as tonic's server takes it.
struct Transport(TokioIo<hyper::upgrade::Upgraded>);

impl tonic::transport::server::Connected for Transport {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// The secrets of one build, by id.
struct Store {
    secrets: HashMap<String, SecretValue>,
}

#[tonic::async_trait]
impl Secrets for Store {
    async fn get_secret(
        &self,
        request: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let id = &request.get_ref().id;
        match self.secrets.get(id) {
            Some(value) => Ok(Response::new(GetSecretResponse {
                data: value.expose().to_vec(),
            })),
            None => Err(Status::not_found(format!("secret {id} not found"))),
        }
    }
}

/// The session's health: serving while it is open.
struct Healthy;

#[tonic::async_trait]
impl Health for Healthy {
    type WatchStream =
        Pin<Box<dyn futures_util::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch"))
    }

    async fn list(
        &self,
        _: Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        Err(Status::unimplemented("list"))
    }
}
