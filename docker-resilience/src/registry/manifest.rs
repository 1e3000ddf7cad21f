//! Manifests as registries serve them: indexes (OCI image index, Docker manifest list)
//! and image manifests (OCI, Docker schema 2), with the platform selection a pull does.

use serde::{Deserialize, Serialize};

use crate::vocab::Platform;

/// A Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// A Docker image manifest (schema 2).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// An OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// An OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The platform of an index entry, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformSpec {
    /// Operating system.
    pub os: String,
    /// Architecture.
    pub architecture: String,
    /// Variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl PlatformSpec {
    /// The platform, normalized.
    pub fn platform(&self) -> Platform {
        Platform::new(&self.os, &self.architecture, self.variant.as_deref())
    }
}

/// A content descriptor: what a manifest points to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Its media type.
    #[serde(default)]
    pub media_type: String,
    /// Its digest (`sha256:…`).
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its platform (index entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// A manifest, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// An index: one manifest per platform.
    Index(Vec<Descriptor>),
    /// An image: its config and layers.
    Image {
        /// The config blob.
        config: Descriptor,
        /// The layer blobs, base first.
        layers: Vec<Descriptor>,
    },
}

impl Manifest {
    /// Parses a manifest; `media_type` is the server's `Content-Type` (the document's own
    /// `mediaType` wins when it has one).
    pub fn parse(media_type: &str, bytes: &[u8]) -> Result<(String, Manifest), String> {
        let raw: Raw =
            serde_json::from_slice(bytes).map_err(|e| format!("unreadable manifest: {e}"))?;
        let media_type = raw
            .media_type
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| media_type.split(';').next().unwrap_or("").trim().to_owned());
        let manifest = match (raw.manifests, raw.config, raw.layers) {
            (Some(manifests), _, _) => Manifest::Index(manifests),
            (None, Some(config), layers) => Manifest::Image {
                config,
                layers: layers.unwrap_or_default(),
            },
            _ => return Err(format!("a manifest of type `{media_type}` with neither manifests nor a config (schema 1 is not supported)")),
        };
        Ok((media_type, manifest))
    }

    /// The entry of an index for `platform` (os, architecture and variant as a pull
    /// matches them: `arm64` is `arm64/v8`).
    pub fn select<'a>(entries: &'a [Descriptor], platform: &Platform) -> Option<&'a Descriptor> {
        entries.iter().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| &p.platform() == platform)
        })
    }
}

/// The `Accept` header of manifest requests: every manifest type a pull understands.
pub fn accept() -> String {
    [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST].join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_platform_selection() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":1,"platform":{"os":"linux","architecture":"amd64"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:b","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}}]}"#;
        let (media_type, parsed) = Manifest::parse("text/plain", index).unwrap();
        assert_eq!(media_type, OCI_INDEX);
        let Manifest::Index(entries) = parsed else {
            panic!("an index")
        };
        let arm: Platform = "linux/arm64".parse().unwrap();
        assert_eq!(Manifest::select(&entries, &arm).unwrap().digest, "sha256:b");
        let ppc: Platform = "linux/ppc64le".parse().unwrap();
        assert!(Manifest::select(&entries, &ppc).is_none());
    }

    #[test]
    fn image_manifest_and_bad_documents() {
        let image = br#"{"schemaVersion":2,"config":{"mediaType":"c","digest":"sha256:c","size":2},"layers":[{"mediaType":"l","digest":"sha256:l","size":3}]}"#;
        let (media_type, parsed) = Manifest::parse(DOCKER_MANIFEST, image).unwrap();
        assert_eq!(media_type, DOCKER_MANIFEST);
        assert!(matches!(parsed, Manifest::Image { ref layers, .. } if layers.len() == 1));
        assert!(Manifest::parse(DOCKER_MANIFEST, b"{\"schemaVersion\":1}").is_err());
        assert!(Manifest::parse(DOCKER_MANIFEST, b"not json").is_err());
    }
}
