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
}

impl fmt::Display for Wanted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.platform {
            Some(p) => write!(f, "{} ({p})", self.reference),
            None => write!(f, "{}", self.reference),
        }
    }
}
