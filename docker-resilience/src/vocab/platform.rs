//! Target and build platforms (`linux/amd64`), and BuildKit's automatic platform args.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An OCI platform: operating system, architecture and optional variant, normalized as
/// containerd does (`linux/arm64/v8` is `linux/arm64`, `linux/arm` is `linux/arm/v7`,
/// `x86_64` is `amd64`). Shown and serialized as `os/arch[/variant]`.
///
/// The usual names are held as static text, so a copy of a platform allocates
/// nothing (a plan of a big tree makes hundreds of thousands of them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    os: Cow<'static, str>,
    architecture: Cow<'static, str>,
    variant: Option<Cow<'static, str>>,
}

/// Names platforms usually have, held as static text.
const KNOWN: [&str; 17] = [
    "linux", "windows", "darwin", "freebsd", "amd64", "arm64", "arm", "386", "ppc64le", "s390x",
    "riscv64", "mips64le", "v5", "v6", "v7", "v8", "wasm",
];

/// `name` lower-cased, as static text when it is a usual one.
fn known(name: &str) -> Cow<'static, str> {
    match KNOWN.iter().find(|k| k.eq_ignore_ascii_case(name)) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(name.to_ascii_lowercase()),
    }
}

impl Platform {
    /// The platform of the machine this code runs on (Docker's naming).
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform::new("linux", architecture, None)
    }

    /// A platform from its parts, normalized.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        let os = known(os);
        let architecture = match known(architecture) {
            a if a == "x86_64" || a == "x86-64" => Cow::Borrowed("amd64"),
            a if a == "aarch64" => Cow::Borrowed("arm64"),
            a if a == "i386" || a == "i686" => Cow::Borrowed("386"),
            other => other,
        };
        let variant = variant.filter(|v| !v.is_empty()).map(known);
        let variant = match (&*architecture, variant) {
            ("arm64", Some(v)) if v == "v8" => None,
            ("arm", None) => Some(Cow::Borrowed("v7")),
            (_, v) => v,
        };
        Platform {
            os,
            architecture,
            variant,
        }
    }

    /// Operating system, e.g. `linux`.
    pub fn os(&self) -> &str {
        &self.os
    }

    /// Architecture in Go's naming, e.g. `amd64`, `arm64`.
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// Variant, e.g. `v7` for `linux/arm/v7`.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// The value of one of the automatic args BuildKit defines for a platform, by the
    /// name after its `BUILD`/`TARGET` prefix: `PLATFORM`, `OS`, `ARCH`, `VARIANT`.
    pub fn arg(&self, field: &str) -> Option<String> {
        match field {
            "PLATFORM" => Some(self.to_string()),
            "OS" => Some(self.os.to_string()),
            "ARCH" => Some(self.architecture.to_string()),
            "VARIANT" => Some(self.variant().unwrap_or_default().to_owned()),
            _ => None,
        }
    }

    /// Whether a daemon of `os` (`linux`, `windows`; empty: not known) runs images for
    /// this platform: a Linux daemon cannot hold a Windows image, nor the reverse.
    pub fn runs_on(&self, os: &str) -> bool {
        os.is_empty() || self.os.eq_ignore_ascii_case(os)
    }
}

impl Default for Platform {
    fn default() -> Self {
        Platform::host()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// A platform string that is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform `{0}`: expected `os/arch[/variant]`")]
pub struct PlatformError(pub String);

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => {
                Ok(Platform::new(os, arch, Some(variant)))
            }
            _ => Err(PlatformError(s.to_owned())),
        }
    }
}

impl Serialize for Platform {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Platform {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let p: Platform = "linux/arm64".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64");
        let p: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(p.variant(), Some("v7"));
        assert!("linux".parse::<Platform>().is_err());
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64");
        assert_eq!(
            Platform::new("linux", "x86_64", None).to_string(),
            "linux/amd64"
        );
        assert_eq!(
            Platform::new("linux", "arm", None).to_string(),
            "linux/arm/v7"
        );
        assert!("linux//x".parse::<Platform>().is_err());
    }

    #[test]
    fn automatic_args() {
        let p: Platform = "linux/amd64".parse().unwrap();
        assert_eq!(p.arg("PLATFORM").as_deref(), Some("linux/amd64"));
        assert_eq!(p.arg("ARCH").as_deref(), Some("amd64"));
        assert_eq!(p.arg("VARIANT").as_deref(), Some(""));
        assert_eq!(p.arg("CPU"), None);
    }
}
