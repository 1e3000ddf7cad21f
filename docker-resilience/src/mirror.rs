//! Registry mirrors: where else an image can be pulled from, and asking a mirror
//! directly whether it has an image.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::reference::{ImageReference, ReferenceError, DOCKER_HUB};

/// Manifest media types a registry may answer with.
const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.oci.image.manifest.v1+json";

/// A mirror: `HOST[:PORT][/PREFIX]` (a scheme, if given, is ignored).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mirror {
    host: String,
    prefix: Option<String>,
}

/// A mirror string that is not `HOST[:PORT][/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mirror `{0}`: expected HOST[:PORT][/PREFIX]")]
pub struct MirrorError(pub String);

impl FromStr for Mirror {
    type Err = MirrorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bare = s
            .trim()
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let (host, prefix) = match bare.split_once('/') {
            Some((h, p)) => (
                h,
                Some(p.trim_matches('/').to_owned()).filter(|p| !p.is_empty()),
            ),
            None => (bare, None),
        };
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
        if !valid_host {
            return Err(MirrorError(s.to_owned()));
        }
        let mirror = Mirror {
            host: host.to_owned(),
            prefix,
        };
        // A mirror must yield valid references.
        let probe = ImageReference::parse("library/busybox:latest")
            .map_err(|_| MirrorError(s.to_owned()))?;
        mirror
            .image_for(&probe)
            .map_err(|_| MirrorError(s.to_owned()))?;
        Ok(mirror)
    }
}

impl fmt::Display for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)?;
        if let Some(p) = &self.prefix {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

impl Mirror {
    /// The mirror's `host[:port]`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The name of `image` on this mirror (`127.0.0.1:5001/library/redis:7-alpine`).
    pub fn image_for(&self, image: &ImageReference) -> Result<ImageReference, ReferenceError> {
        image.with_registry(&self.to_string())
    }
}

/// Mirrors by the registry they stand in for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorSet {
    by_registry: BTreeMap<String, Vec<Mirror>>,
}

impl MirrorSet {
    /// Adds a mirror for Docker Hub images.
    pub fn add_docker_hub(&mut self, mirror: Mirror) {
        self.add(DOCKER_HUB, mirror);
    }

    /// Adds a mirror for another registry (`ghcr.io`, `quay.io`, …).
    pub fn add(&mut self, registry: &str, mirror: Mirror) {
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DOCKER_HUB
        } else {
            registry
        };
        let list = self.by_registry.entry(registry.to_owned()).or_default();
        if !list.contains(&mirror) {
            list.push(mirror);
        }
    }

    /// The mirrors for `image`'s registry, in order.
    pub fn for_image(&self, image: &ImageReference) -> &[Mirror] {
        self.by_registry
            .get(image.registry())
            .map_or(&[], Vec::as_slice)
    }

    /// Whether no mirror is configured.
    pub fn is_empty(&self) -> bool {
        self.by_registry.is_empty()
    }
}

/// What a mirror says about an image when asked directly.
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
/// manifest with `HEAD /v2/<repository>/manifests/<tag>`.
pub async fn probe_manifest(
    client: &reqwest::Client,
    registry_url: &str,
    image: &ImageReference,
) -> ProbeResult {
    let base = registry_url.trim_end_matches('/');
    let base = if base.contains("://") {
        base.to_owned()
    } else {
        format!("https://{base}")
    };
    let url = format!(
        "{base}/v2/{}/manifests/{}",
        image.repository(),
        image.tag_or_digest()
    );
    match client
        .head(&url)
        .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => ProbeResult::Found,
        Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => ProbeResult::Missing,
        Ok(r) if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS => ProbeResult::RateLimited {
            retry_after: r
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .map(Duration::from_secs),
        },
        Ok(r) => ProbeResult::Unavailable {
            message: format!("HTTP {}", r.status()),
        },
        Err(e) => ProbeResult::Unavailable {
            message: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mirrors() {
        let m: Mirror = "http://127.0.0.1:5001/".parse().unwrap();
        assert_eq!(m.to_string(), "127.0.0.1:5001");
        let m: Mirror = "harbor.example.com/dockerhub-proxy".parse().unwrap();
        assert_eq!(m.host(), "harbor.example.com");
        let image = ImageReference::parse("redis:7-alpine").unwrap();
        assert_eq!(
            m.image_for(&image).unwrap().to_string(),
            "harbor.example.com/dockerhub-proxy/library/redis:7-alpine"
        );
        assert!("".parse::<Mirror>().is_err());
        assert!("bad host/x".parse::<Mirror>().is_err());
    }

    #[test]
    fn by_registry() {
        let mut set = MirrorSet::default();
        set.add_docker_hub("m1:5000".parse().unwrap());
        set.add_docker_hub("m1:5000".parse().unwrap());
        set.add("ghcr.io", "ghcr-mirror.local".parse().unwrap());
        let hub = ImageReference::parse("ubuntu").unwrap();
        let ghcr = ImageReference::parse("ghcr.io/o/app:1").unwrap();
        let quay = ImageReference::parse("quay.io/o/app:1").unwrap();
        assert_eq!(set.for_image(&hub).len(), 1);
        assert_eq!(set.for_image(&ghcr)[0].host(), "ghcr-mirror.local");
        assert!(set.for_image(&quay).is_empty());
    }
}
