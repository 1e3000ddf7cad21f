//! Registry mirrors: where else an image can be pulled from.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::vocab::{registry_url, ImageReference, ReferenceError, DOCKER_HUB};

/// A mirror: `[SCHEME://]HOST[:PORT][/PREFIX]`. Shown without its scheme; a mirror
/// given without one is reached over HTTPS (plain HTTP for loopback hosts, as Docker
/// does for `localhost` registries).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mirror {
    scheme: Option<String>,
    host: String,
    prefix: Option<String>,
}

/// A mirror string that is not `HOST[:PORT][/PREFIX]` (shown redacted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mirror `{mirror}`: {reason}")]
pub struct MirrorError {
    /// The mirror as given, its userinfo masked.
    pub mirror: String,
    /// Why it is refused.
    pub reason: &'static str,
}

fn invalid(given: &str) -> MirrorError {
    MirrorError {
        mirror: crate::vocab::redact(given).into_owned(),
        reason: "expected HOST[:PORT][/PREFIX]",
    }
}

impl FromStr for Mirror {
    type Err = MirrorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let authority = text
            .split_once("://")
            .map_or(text, |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default();
        if authority.contains('@') {
            return Err(MirrorError {
                mirror: crate::vocab::redact(&format!("https://{authority}"))
                    .trim_start_matches("https://")
                    .to_owned(),
                reason: "credentials in a mirror's address are not used: `docker login` to the \
                         mirror's host instead (drbuild reads docker's config and credential helpers)",
            });
        }
        let (scheme, bare) = match text.split_once("://") {
            Some((scheme @ ("http" | "https"), rest)) => (Some(scheme.to_owned()), rest),
            Some(_) => return Err(invalid(s)),
            None => (None, text),
        };
        let bare = bare.trim_end_matches('/');
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
            return Err(invalid(s));
        }
        let mirror = Mirror {
            scheme,
            host: host.to_owned(),
            prefix,
        };
        // A mirror must yield valid references.
        let probe = ImageReference::parse("library/busybox:latest").map_err(|_| invalid(s))?;
        mirror.image_for(&probe).map_err(|_| invalid(s))?;
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

    /// The URL of the registry API's base: `http://127.0.0.1:5001`, `https://mirror.example.com`.
    pub fn base_url(&self) -> String {
        match &self.scheme {
            Some(scheme) => format!("{scheme}://{}", self.host),
            None => registry_url(&self.host),
        }
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

    /// Adds a mirror from its spec: `MIRROR` for Docker Hub, `REGISTRY=MIRROR` for another
    /// registry (`ghcr.io=harbor.example.com/ghcr`).
    pub fn add_spec(&mut self, spec: &str) -> Result<(), MirrorError> {
        match spec.split_once('=') {
            Some((registry, mirror)) => self.add(registry.trim(), mirror.parse()?),
            None => self.add_docker_hub(spec.parse()?),
        }
        Ok(())
    }

    /// Every mirror with the registry it stands in for.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Mirror)> {
        self.by_registry
            .iter()
            .flat_map(|(r, list)| list.iter().map(move |m| (r.as_str(), m)))
    }

    /// Whether no mirror is configured.
    pub fn is_empty(&self) -> bool {
        self.by_registry.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_refused_redacted() {
        let err = "https://bob:pw123@host:5001".parse::<Mirror>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid mirror `bob:***@host:5001`: credentials in a mirror's address are not used: \
             `docker login` to the mirror's host instead (drbuild reads docker's config and credential helpers)"
        );
    }

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
        assert_eq!(m.base_url(), "https://harbor.example.com");
        let local: Mirror = "127.0.0.1:5001".parse().unwrap();
        assert_eq!(local.base_url(), "http://127.0.0.1:5001");
        let explicit: Mirror = "https://127.0.0.1:5001".parse().unwrap();
        assert_eq!(explicit.base_url(), "https://127.0.0.1:5001");
        assert!("ftp://x".parse::<Mirror>().is_err());
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
        let mut specs = MirrorSet::default();
        specs.add_spec("m1:5000").unwrap();
        specs.add_spec("ghcr.io=ghcr-mirror.local/ghcr").unwrap();
        assert_eq!(
            specs.for_image(&ghcr)[0].to_string(),
            "ghcr-mirror.local/ghcr"
        );
        assert!(specs.add_spec("ghcr.io=bad host").is_err());
    }
}
