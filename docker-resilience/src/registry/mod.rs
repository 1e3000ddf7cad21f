//! Registry: talking to registries and mirrors over the distribution API, directly
//! (not through the daemon): a [`client`] whose every failure says which endpoint
//! answered what, the [`manifest`] types, [`credentials`] from docker's config, and
//! probes (does a mirror hold an image, does a registry answer).
//!
//! May import: `vocab`, `resilience`, `support`, `cache` (digests).

pub mod client;
pub mod credentials;
pub mod manifest;
pub mod push;
pub mod transport;

use std::time::Duration;

use crate::support::error_chain;
use crate::vocab::{registry_url, ImageReference};

/// `host[:port]` of a registry URL.
pub fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

/// An HTTP client for probes: a timeout per request, no proxy (mirrors are near).
pub fn probe_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .unwrap_or_default()
}

/// What a registry says about an image when asked directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// It has the manifest.
    Found,
    /// It answered 404: the image does not exist there.
    Missing,
    /// It answered 429.
    RateLimited {
        /// Its `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// No usable answer (5xx, EOF, reset, timeout, 401…).
    Unavailable {
        /// What happened.
        message: String,
    },
}

/// Asks a registry (`http://127.0.0.1:5001`, a daemon mirror URL) for `image`'s
/// manifest with `HEAD /v2/<repository>/manifests/<tag>`, through the registry client
/// (its auth, its reading of statuses and `Retry-After`), waiting at most `timeout`.
pub async fn probe_manifest(
    client: &client::RegistryClient,
    registry: &str,
    image: &ImageReference,
    timeout: Duration,
) -> ProbeResult {
    let endpoint = client::Endpoint::daemon_mirror(registry);
    let repository = endpoint.repository(image);
    let asked = client.manifest_digest(&endpoint, &repository, image.tag_or_digest());
    match tokio::time::timeout(timeout, asked).await {
        Err(_) => ProbeResult::Unavailable {
            message: format!("no answer in {}s", timeout.as_secs_f64()),
        },
        Ok(Ok(Some(_))) => ProbeResult::Found,
        Ok(Ok(None)) => ProbeResult::Missing,
        Ok(Err(e)) if e.class() == crate::resilience::classify::ErrorClass::RateLimited => {
            ProbeResult::RateLimited {
                retry_after: e.retry_after(),
            }
        }
        Ok(Err(e)) => ProbeResult::Unavailable {
            message: e.failure.to_string(),
        },
    }
}

/// How a registry answered `GET /v2/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PingResult {
    /// It answered (200, or 401: it wants a token, which is a working registry).
    Answers(u16),
    /// It answered with another status.
    Status(u16),
    /// No answer.
    Unreachable(String),
}

/// `GET /v2/` on a registry.
pub async fn ping(client: &reqwest::Client, registry: &str) -> PingResult {
    match client
        .get(format!("{}/v2/", registry_url(registry)))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() || r.status().as_u16() == 401 => {
            PingResult::Answers(r.status().as_u16())
        }
        Ok(r) => PingResult::Status(r.status().as_u16()),
        Err(e) => PingResult::Unreachable(error_chain(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(host_port("http://127.0.0.1:5001/v2/"), "127.0.0.1:5001");
        assert_eq!(host_port("mirror.example.com"), "mirror.example.com");
    }
}
