//! The shared vocabulary every stage speaks: image references normalized as Docker
//! does, platforms, and where in a tree something is written (a file and a line).
//!
//! May import: nothing of this crate.

mod location;
mod platform;
pub mod redact;
mod reference;
mod secret;
mod wanted;

pub use location::{clean_path, InputError, Located, SourceKind};
pub use platform::{Platform, PlatformError};
pub use redact::{holds_secret, is_secret_name, redact, register_secret, Redacted};
pub use reference::{is_loopback_host, registry_url, ImageReference, ReferenceError, DOCKER_HUB};
pub use secret::{SecretSource, SecretSpec, SecretSpecError, SecretValue};
pub use wanted::Wanted;
