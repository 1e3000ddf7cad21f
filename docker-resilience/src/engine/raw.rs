//! Requests bollard does not make: a connection to the daemon's API socket of our own
//! (the upgrades of a build session and of BuildKit's gRPC API) and plain JSON GETs
//! with query parameters bollard has no option for (`images/{name}/json?manifests=1`).

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// A connection to the daemon's API socket (`unix:///…`, or `tcp://…` without TLS).
pub(super) async fn connect(host: &str) -> Result<Box<dyn Io>, String> {
    if let Some(path) = host.strip_prefix("unix://") {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| format!("cannot reach {host}: {e}"))?;
        return Ok(Box::new(stream));
    }
    if let Some(address) = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"))
    {
        let stream = tokio::net::TcpStream::connect(address.trim_end_matches('/'))
            .await
            .map_err(|e| format!("cannot reach {host}: {e}"))?;
        return Ok(Box::new(stream));
    }
    Err(format!(
        "cannot reach the daemon at {host} directly: only unix:// and tcp:// are supported"
    ))
}

/// Why [`upgrade`] did not hand a connection over.
pub(super) enum UpgradeError {
    /// The daemon answered, with this status instead of switching protocols.
    Refused(hyper::StatusCode),
    /// No answer: what failed.
    Failed(String),
}

/// `POST path` with `headers` on the daemon at `host`, upgraded to h2c: the
/// connection, once the daemon has switched protocols. Not over TLS.
pub(super) async fn upgrade(
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<hyper::upgrade::Upgraded, UpgradeError> {
    let failed = |e: &dyn std::fmt::Display| UpgradeError::Failed(format!("{host}: {e}"));
    if std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty() && v != "0") {
        return Err(failed(
            &"reached over TLS: drbuild upgrades only a unix socket or plain tcp",
        ));
    }
    let io = connect(host).await.map_err(UpgradeError::Failed)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| failed(&e))?;
    // Driven until the upgrade hands the connection over.
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut request = hyper::Request::post(path)
        .header(hyper::header::HOST, "docker")
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, "h2c");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(&e))?;
    let response = sender.send_request(request).await.map_err(|e| failed(&e))?;
    if response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        return Err(UpgradeError::Refused(response.status()));
    }
    hyper::upgrade::on(response).await.map_err(|e| failed(&e))
}

/// `GET path` on the daemon, its JSON answer; `None` when it answers 404.
pub(super) async fn get_json(host: &str, path: &str) -> Result<Option<serde_json::Value>, String> {
    if std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty() && v != "0") {
        return Err("the daemon is reached over TLS".into());
    }
    let io = connect(host).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("cannot talk to {host}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, "docker")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request {path}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("GET {path} on {host}: {e}"))?;
    let status = response.status();
    if status == hyper::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("GET {path} on {host}: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "GET {path} on {host} answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| format!("GET {path} on {host}: unreadable JSON: {e}"))
}

pub(super) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
