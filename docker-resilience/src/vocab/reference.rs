//! Image references, parsed and normalized the way Docker does it.
//!
//! The rules follow `github.com/distribution/reference` (what `docker pull` uses):
//! a name without a registry lives on Docker Hub (`docker.io`), a Docker Hub name
//! with one path component is an official image (`library/`), and a reference with
//! neither tag nor digest means `:latest`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The registry that unqualified names refer to.
pub const DOCKER_HUB: &str = "docker.io";

const LEGACY_DOCKER_HUB: &str = "index.docker.io";
const NAME_TOTAL_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// Why a string is not a valid image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// The string is empty (often an `ARG` that expanded to nothing).
    #[error("empty image reference")]
    Empty,
    /// The repository path has upper-case letters, which Docker rejects.
    #[error("invalid reference `{reference}`: repository name must be lowercase")]
    Uppercase {
        /// The reference as written.
        reference: String,
    },
    /// The repository name is longer than Docker allows.
    #[error(
        "invalid reference `{reference}`: repository name longer than {NAME_TOTAL_MAX} characters"
    )]
    NameTooLong {
        /// The reference as written.
        reference: String,
    },
    /// Some part of the reference does not follow the grammar.
    #[error("invalid reference `{reference}`: {reason}")]
    Invalid {
        /// The reference as written.
        reference: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A fully qualified image reference: registry, repository, tag and/or digest.
///
/// ```
/// use docker_resilience::ImageReference;
///
/// let r: ImageReference = "ubuntu:22.04".parse().unwrap();
/// assert_eq!(r.to_string(), "docker.io/library/ubuntu:22.04");
/// assert_eq!(r.registry(), "docker.io");
/// assert_eq!(r.repository(), "library/ubuntu");
/// assert_eq!(r.familiar(), "ubuntu:22.04");
/// ```
///
/// Cheap to clone (a plan holds one per place that names an image): its parts are
/// shared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    registry: Arc<str>,
    repository: Arc<str>,
    tag: Option<Arc<str>>,
    digest: Option<Arc<str>>,
}

impl ImageReference {
    /// Parses and normalizes a reference as `docker pull` would.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        parse(input)
    }

    /// The registry host, with its port if any (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry (`library/ubuntu`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference has one. A reference with neither tag nor digest
    /// is normalized to `latest`, so this is `None` only for digest-only references.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:…`), if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// Whether the image lives on Docker Hub.
    pub fn is_docker_hub(&self) -> bool {
        *self.registry == *DOCKER_HUB
    }

    /// Whether the name says it is a Windows image: Microsoft's Windows bases
    /// (`mcr.microsoft.com/windows/servercore`, `…/windows/nanoserver`,
    /// `…/dotnet/framework/…`), or a tag naming a Windows flavour or release
    /// (`nanoserver`, `windowsservercore`, `servercore`, `ltsc2022`, `1809`).
    pub fn names_windows(&self) -> bool {
        const TAG_WORDS: [&str; 8] = [
            "nanoserver",
            "windowsservercore",
            "servercore",
            "ltsc2016",
            "ltsc2019",
            "ltsc2022",
            "ltsc2025",
            "1809",
        ];
        let microsoft = &*self.registry == "mcr.microsoft.com"
            && (self.repository.starts_with("windows/")
                || &*self.repository == "windows"
                || self.repository.starts_with("dotnet/framework/"));
        microsoft
            || self.tag.as_deref().is_some_and(|tag| {
                tag.split(['-', '_', '.'])
                    .any(|word| TAG_WORDS.contains(&word.to_ascii_lowercase().as_str()))
            })
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form Docker prints: `ubuntu:22.04` for `docker.io/library/ubuntu:22.04`.
    pub fn familiar(&self) -> String {
        let name = if self.is_docker_hub() {
            self.repository
                .strip_prefix("library/")
                .filter(|rest| !rest.contains('/'))
                .unwrap_or(&self.repository)
                .to_owned()
        } else {
            self.name()
        };
        let mut out = name;
        self.push_suffix(&mut out);
        out
    }

    /// The tag or digest part as a pull asks for it: the digest when pinned, else the tag.
    pub fn tag_or_digest(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The same image on another registry: `mirror` is `host[:port][/prefix]`.
    ///
    /// Docker Hub official images keep their `library/` path, as a pull-through
    /// mirror expects (`127.0.0.1:5000/library/ubuntu:22.04`).
    pub fn with_registry(&self, mirror: &str) -> Result<Self, ReferenceError> {
        let mirror = mirror
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let mut text = format!("{mirror}/{}", self.repository);
        self.push_suffix(&mut text);
        parse(&text)
    }

    fn push_suffix(&self, out: &mut String) {
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(digest);
        }
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = self.name();
        self.push_suffix(&mut out);
        f.write_str(&out)
    }
}

impl FromStr for ImageReference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl PartialOrd for ImageReference {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ImageReference {
    fn cmp(&self, other: &Self) -> Ordering {
        (&self.registry, &self.repository, &self.tag, &self.digest).cmp(&(
            &other.registry,
            &other.repository,
            &other.tag,
            &other.digest,
        ))
    }
}

impl Serialize for ImageReference {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageReference {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The base URL of a registry's API given as `host[:port]` or as a URL: the scheme
/// when one is given; else plain HTTP for a loopback host (as Docker allows for
/// `localhost` registries) and HTTPS for any other.
pub fn registry_url(registry: &str) -> String {
    let base = registry.trim_end_matches('/');
    if base.contains("://") {
        base.to_owned()
    } else if is_loopback_host(base) {
        format!("http://{base}")
    } else {
        format!("https://{base}")
    }
}

/// Whether a `host[:port]` is a loopback address (`127.x`, `localhost`, `[::1]`).
pub fn is_loopback_host(host_port: &str) -> bool {
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn invalid(reference: &str, reason: &'static str) -> ReferenceError {
    ReferenceError::Invalid {
        reference: reference.to_owned(),
        reason,
    }
}

fn parse(input: &str) -> Result<ImageReference, ReferenceError> {
    if input.is_empty() {
        return Err(ReferenceError::Empty);
    }
    if input.chars().any(|c| c.is_whitespace()) {
        return Err(invalid(input, "contains white space"));
    }

    let (rest, digest) = match input.split_once('@') {
        Some((rest, digest)) => {
            validate_digest(input, digest)?;
            (rest, Some(digest.to_owned()))
        }
        None => (input, None),
    };

    // A tag is what follows the last ':' after the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (&rest[..at], Some(&rest[at + 1..]))
        }
        None => (rest, None),
    };
    if let Some(tag) = tag {
        validate_tag(input, tag)?;
    }
    if name.is_empty() {
        return Err(invalid(input, "missing repository name"));
    }

    let (domain, path) = split_domain(name);
    if let Some(domain) = &domain {
        validate_domain(input, domain)?;
    }
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(ReferenceError::Uppercase {
            reference: input.to_owned(),
        });
    }
    for component in path.split('/') {
        validate_component(input, component)?;
    }

    let mut registry = domain.unwrap_or(DOCKER_HUB).to_owned();
    if registry == LEGACY_DOCKER_HUB {
        registry = DOCKER_HUB.to_owned();
    }
    let repository = if registry == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_owned()
    };
    if registry.len() + 1 + repository.len() > NAME_TOTAL_MAX {
        return Err(ReferenceError::NameTooLong {
            reference: input.to_owned(),
        });
    }
    let tag = match (tag, &digest) {
        (Some(tag), _) => Some(tag.to_owned()),
        (None, None) => Some("latest".to_owned()),
        (None, Some(_)) => None,
    };
    Ok(ImageReference {
        registry: registry.into(),
        repository: repository.into(),
        tag: tag.map(Into::into),
        digest: digest.map(Into::into),
    })
}

/// Splits `host[:port]/path` the way distribution/reference does: the first
/// component is a registry if it has a `.` or `:`, is `localhost`, or has capitals.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn validate_domain(input: &str, domain: &str) -> Result<(), ReferenceError> {
    let (host, port) = if let Some(v6) = domain.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| invalid(input, "unterminated IPv6 address"))?;
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(invalid(input, "invalid IPv6 registry address"));
        }
        match after {
            "" => return Ok(()),
            p => (
                "",
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| invalid(input, "invalid registry port"))?,
                ),
            ),
        }
    } else {
        match domain.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
            return Err(invalid(input, "invalid registry port"));
        }
    }
    if domain.starts_with('[') {
        return Ok(());
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(invalid(input, "invalid registry host"));
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn validate_component(input: &str, component: &str) -> Result<(), ReferenceError> {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() {
        return Err(invalid(input, "empty path component"));
    }
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(invalid(
            input,
            "path components must start and end with a letter or digit",
        ));
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return Err(invalid(input, "invalid separator in repository name"));
        }
    }
    Ok(())
}

/// `[\w][\w.-]{0,127}`
fn validate_tag(input: &str, tag: &str) -> Result<(), ReferenceError> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    match chars.next() {
        Some(c) if word(c) => {}
        Some(_) => return Err(invalid(input, "tag must start with a letter, digit or `_`")),
        None => return Err(invalid(input, "empty tag")),
    }
    if tag.len() > TAG_MAX {
        return Err(invalid(input, "tag longer than 128 characters"));
    }
    if !chars.all(|c| word(c) || c == '.' || c == '-') {
        return Err(invalid(input, "invalid character in tag"));
    }
    Ok(())
}

fn validate_digest(input: &str, digest: &str) -> Result<(), ReferenceError> {
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or_else(|| invalid(input, "digest must be `algorithm:hex`"))?;
    let algorithm_ok = algorithm.starts_with(|c: char| c.is_ascii_alphabetic())
        && algorithm
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_+.".contains(c));
    if !algorithm_ok {
        return Err(invalid(input, "invalid digest algorithm"));
    }
    if hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(invalid(input, "invalid digest"));
    }
    if algorithm == "sha256" && (hex.len() != 64 || hex.chars().any(|c| c.is_ascii_uppercase())) {
        return Err(invalid(
            input,
            "sha256 digest must be 64 lower-case hex digits",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    fn norm(s: &str) -> String {
        ImageReference::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .to_string()
    }

    #[test]
    fn windows_images_by_name() {
        for name in [
            "mcr.microsoft.com/windows/servercore:ltsc2022",
            "mcr.microsoft.com/windows/nanoserver:1809",
            "mcr.microsoft.com/windows:20H2",
            "mcr.microsoft.com/dotnet/framework/sdk:4.8",
            "mcr.microsoft.com/powershell:lts-nanoserver-ltsc2022",
            "python:3.12-windowsservercore-ltsc2022",
            "127.0.0.1:5000/windows/servercore:ltsc2022",
        ] {
            assert!(
                ImageReference::parse(name).unwrap().names_windows(),
                "{name}"
            );
        }
        for name in [
            "mcr.microsoft.com/dotnet/sdk:8.0",
            "ubuntu:22.04",
            "acme/windows-tools:1",
            "node:20-alpine",
        ] {
            assert!(
                !ImageReference::parse(name).unwrap().names_windows(),
                "{name}"
            );
        }
    }

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(norm("ubuntu"), "docker.io/library/ubuntu:latest");
        assert_eq!(norm("ubuntu:22.04"), "docker.io/library/ubuntu:22.04");
        assert_eq!(
            norm("library/ubuntu:22.04"),
            "docker.io/library/ubuntu:22.04"
        );
        assert_eq!(norm("docker.io/ubuntu"), "docker.io/library/ubuntu:latest");
        assert_eq!(
            norm("index.docker.io/library/nginx:stable"),
            "docker.io/library/nginx:stable"
        );
        assert_eq!(norm("bitnami/redis:7.2"), "docker.io/bitnami/redis:7.2");
        assert_eq!(norm("ghcr.io/owner/app/sub:v1"), "ghcr.io/owner/app/sub:v1");
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(
            norm("127.0.0.1:5000/library/redis:7-alpine"),
            "127.0.0.1:5000/library/redis:7-alpine"
        );
        assert_eq!(norm("registry:5000/app"), "registry:5000/app:latest");
        assert_eq!(norm("[::1]:5000/app:1"), "[::1]:5000/app:1");
        assert_eq!(
            norm("my_org/app__x.y-z:1.0_rc-1"),
            "docker.io/my_org/app__x.y-z:1.0_rc-1"
        );
    }

    #[test]
    fn digests() {
        let r = ImageReference::parse(&format!("ubuntu@{DIGEST}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(DIGEST));
        assert_eq!(r.to_string(), format!("docker.io/library/ubuntu@{DIGEST}"));
        assert_eq!(r.tag_or_digest(), DIGEST);

        let r = ImageReference::parse(&format!("ubuntu:22.04@{DIGEST}")).unwrap();
        assert_eq!(r.tag(), Some("22.04"));
        assert_eq!(
            r.to_string(),
            format!("docker.io/library/ubuntu:22.04@{DIGEST}")
        );
        assert_eq!(r.familiar(), format!("ubuntu:22.04@{DIGEST}"));
    }

    #[test]
    fn port_is_not_a_tag() {
        let r = ImageReference::parse("localhost:5000/app").unwrap();
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.tag(), Some("latest"));
    }

    #[test]
    fn rejects_invalid() {
        for bad in [
            "",
            "Ubuntu",
            "ubuntu:",
            ":22.04",
            "ubuntu:-x",
            "ubu--ntu_/x",
            "-ubuntu",
            "ubuntu@sha256:abc",
            "ubuntu@sha256:",
            "a b",
            "ubuntu:22.04:x",
            "host:port/app",
            "host:/app",
            "ubuntu//x",
        ] {
            assert!(
                ImageReference::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        assert_eq!(
            ImageReference::parse("MyOrg/app").unwrap().registry(),
            "MyOrg",
            "capitals in the first component make it a host, as in docker"
        );
        assert!(matches!(
            ImageReference::parse("docker.io/Library/x"),
            Err(ReferenceError::Uppercase { .. })
        ));
        let long = format!("a/{}", "b".repeat(300));
        assert!(matches!(
            ImageReference::parse(&long),
            Err(ReferenceError::NameTooLong { .. })
        ));
    }

    #[test]
    fn familiar_and_mirror() {
        let r = ImageReference::parse("docker.io/library/node:18-alpine").unwrap();
        assert_eq!(r.familiar(), "node:18-alpine");
        let m = r.with_registry("http://127.0.0.1:5001/").unwrap();
        assert_eq!(m.to_string(), "127.0.0.1:5001/library/node:18-alpine");
        let r = ImageReference::parse("bitnami/redis").unwrap();
        assert_eq!(r.familiar(), "bitnami/redis:latest");
        let m = r.with_registry("harbor.example.com/proxy").unwrap();
        assert_eq!(
            m.to_string(),
            "harbor.example.com/proxy/bitnami/redis:latest"
        );
    }

    #[test]
    fn registry_urls() {
        assert_eq!(
            registry_url("mirror.example.com/"),
            "https://mirror.example.com"
        );
        assert_eq!(registry_url("127.0.0.1:5001"), "http://127.0.0.1:5001");
        assert_eq!(
            registry_url("https://127.0.0.1:5001"),
            "https://127.0.0.1:5001"
        );
        assert!(is_loopback_host("[::1]:5000") && is_loopback_host("localhost"));
        assert!(!is_loopback_host("10.0.0.1:5000"));
    }

    #[test]
    fn dedupes_by_normalized_form() {
        let a = ImageReference::parse("ubuntu").unwrap();
        let b = ImageReference::parse("docker.io/library/ubuntu:latest").unwrap();
        assert_eq!(a, b);
    }
}
