//! An image wanted for a platform: what prefetch pulls and bundles carry.

use std::fmt;

use serde::Serialize;

use super::{ImageReference, Platform};

/// An image needed for one platform (`None`: whatever the daemon pulls by default).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Wanted {
    /// The image.
    pub reference: ImageReference,
    /// The platform it is needed for.
    pub platform: Option<Platform>,
}

impl Wanted {
    /// An image for the daemon's default platform.
    pub fn any_platform(reference: ImageReference) -> Self {
        Wanted {
            reference,
            platform: None,
        }
    }

    /// An image named on its own (`drbuild export IMAGE…`), as `plan` reads a Windows
    /// Dockerfile: a Windows image ([`ImageReference::names_windows`]) is wanted for
    /// `windows` on the host's architecture (an index of such images has nothing for
    /// Linux), any other for the daemon's default platform.
    pub fn named(reference: ImageReference) -> Self {
        let platform = reference
            .names_windows()
            .then(|| Platform::new("windows", Platform::host().architecture(), None));
        Wanted {
            reference,
            platform,
        }
    }
}

impl fmt::Display for Wanted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.platform {
            Some(p) => write!(f, "{} ({p})", self.reference),
            None => write!(f, "{}", self.reference),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_windows_image_is_wanted_for_windows() {
        let named = |s: &str| Wanted::named(s.parse().expect("reference"));
        let windows = named("mcr.microsoft.com/windows/servercore:ltsc2022");
        assert_eq!(windows.platform.as_ref().map(Platform::os), Some("windows"));
        assert_eq!(named("redis:7-alpine").platform, None);
    }
}
