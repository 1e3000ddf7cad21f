//! The push half of the distribution API: is a blob or manifest there (`HEAD`), mount
//! a blob from another repository of the same registry, upload one (streamed from a
//! file, never held in memory), put a manifest. Failures are [`RequestError`]s naming
//! the endpoint and what it answered, as for pulls.

use std::path::Path;

use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;

use super::client::{Endpoint, Failure, RegistryClient, RequestError};
use super::manifest::accept;

/// How a blob reached the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPush {
    /// It was there already.
    Present,
    /// Mounted from another repository of the registry (no bytes sent).
    Mounted,
    /// Uploaded: this many bytes.
    Uploaded(u64),
}

impl Endpoint {
    /// A registry to push to (`127.0.0.1:5000`, `harbor.example.com`): plain HTTP when
    /// it is on loopback or `insecure` says so, else HTTPS.
    pub fn target(registry: &str, insecure: bool) -> Self {
        let host = registry.trim_end_matches('/');
        let host = host.split_once("://").map_or(host, |(_, h)| h);
        let base = if insecure || crate::vocab::is_loopback_host(host) {
            format!("http://{host}")
        } else {
            format!("https://{host}")
        };
        Endpoint {
            label: format!("registry {host}"),
            role: super::client::Role::Target,
            host: host.to_owned(),
            base,
            prefix: None,
        }
    }

    /// Whether requests to it go over plain HTTP.
    pub fn is_plain_http(&self) -> bool {
        self.base.starts_with("http://")
    }
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

impl RegistryClient {
    /// The digest of `repository:reference` on `endpoint` (`HEAD`), `None` when it is
    /// not there.
    pub async fn manifest_digest(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        reference: &str,
    ) -> Result<Option<String>, RequestError> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", endpoint.base);
        let target = format!("manifest {repository}:{reference}").replace(":sha256:", "@sha256:");
        let scope = format!("repository:{repository}:pull");
        match self
            .send(endpoint, &target, &scope, |c| {
                c.head(&url).header(ACCEPT, accept())
            })
            .await
        {
            Ok(response) => Ok(response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .or_else(|| {
                    reference
                        .starts_with("sha256:")
                        .then(|| reference.to_owned())
                })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `repository` on `endpoint` holds the blob `digest` (`HEAD`).
    pub async fn has_blob(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        digest: &str,
    ) -> Result<bool, RequestError> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", endpoint.base);
        let target = format!("blob {}… of {repository}", short(digest));
        match self
            .send(endpoint, &target, &push_scope(repository), |c| c.head(&url))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Puts the blob `digest` (the file at `path`, `size` bytes) into `repository`:
    /// nothing when it is there, a mount when `mount_from` (a repository of the same
    /// registry that holds it) is given and the registry mounts it, else an upload.
    pub async fn push_blob(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        digest: &str,
        path: &Path,
        size: u64,
        mount_from: Option<&str>,
    ) -> Result<BlobPush, RequestError> {
        if self.has_blob(endpoint, repository, digest).await? {
            return Ok(BlobPush::Present);
        }
        let target = format!("blob {}… of {repository}", short(digest));
        let scope = match mount_from {
            Some(from) => format!("{} repository:{from}:pull", push_scope(repository)),
            None => push_scope(repository),
        };
        let start = match mount_from {
            Some(from) => format!(
                "{}/v2/{repository}/blobs/uploads/?mount={digest}&from={from}",
                endpoint.base
            ),
            None => format!("{}/v2/{repository}/blobs/uploads/", endpoint.base),
        };
        let response = self
            .send(endpoint, &target, &scope, |c| {
                c.post(&start).header(CONTENT_LENGTH, 0)
            })
            .await?;
        if response.status() == StatusCode::CREATED {
            return Ok(BlobPush::Mounted);
        }
        let location = self.location(endpoint, &target, &response)?;
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest={digest}");
        let opened = path.to_owned();
        self.send(endpoint, &target, &push_scope(repository), |c| {
            let body = match std::fs::File::open(&opened) {
                Ok(file) => {
                    reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
                        tokio::fs::File::from_std(file),
                        256 * 1024,
                    ))
                }
                Err(_) => reqwest::Body::from(Vec::new()),
            };
            c.put(&url)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size)
                .body(body)
        })
        .await?;
        Ok(BlobPush::Uploaded(size))
    }

    /// Puts a manifest (its exact bytes, so its digest is kept) as
    /// `repository:reference` (a tag or its digest).
    pub async fn put_manifest(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), RequestError> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", endpoint.base);
        let target =
            format!("manifest push {repository}:{reference}").replace(":sha256:", "@sha256:");
        let body = bytes::Bytes::copy_from_slice(bytes);
        self.send(endpoint, &target, &push_scope(repository), |c| {
            c.put(&url)
                .header(CONTENT_TYPE, media_type)
                .body(body.clone())
        })
        .await?;
        Ok(())
    }

    fn location(
        &self,
        endpoint: &Endpoint,
        target: &str,
        response: &reqwest::Response,
    ) -> Result<String, RequestError> {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                RequestError::new(
                    endpoint.label.clone(),
                    target.to_owned(),
                    Failure::Unusable("an upload answered without a Location".into()),
                )
            })?;
        Ok(
            if location.starts_with("http://") || location.starts_with("https://") {
                location.to_owned()
            } else {
                format!("{}{location}", endpoint.base)
            },
        )
    }
}

fn is_not_found(e: &RequestError) -> bool {
    matches!(e.failure, Failure::Status { code: 404, .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_use_plain_http_only_on_loopback_or_when_told() {
        assert_eq!(
            Endpoint::target("127.0.0.1:5000", false).base,
            "http://127.0.0.1:5000"
        );
        assert_eq!(
            Endpoint::target("localhost:5000", false).base,
            "http://localhost:5000"
        );
        assert_eq!(
            Endpoint::target("harbor.example.com", false).base,
            "https://harbor.example.com"
        );
        assert_eq!(
            Endpoint::target("harbor.example.com:8080", true).base,
            "http://harbor.example.com:8080"
        );
        assert_eq!(
            Endpoint::target("127.0.0.1:5000", false).label,
            "registry 127.0.0.1:5000"
        );
    }
}
