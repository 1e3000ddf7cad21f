//! Deliver: fetched images from the blob cache into a Docker daemon.
//!
//! - [`handoff`]: a registry on 127.0.0.1 that serves the cache to a daemon on this
//!   machine, which takes the image with its own pull while the layers still arrive
//!   (about twice as fast as a `docker load` on both image stores);
//! - [`archive`]: a `docker load` archive (an OCI layout plus `manifest.json`, read
//!   from the cache as it is written) for any other daemon, and for bundles.
//!
//! Fetching ([`crate::fetch`]) knows no daemon; the orchestration of a pull (what is
//! present, which path, the per-image budget) is the prefetch stage's.
//!
//! May import: `vocab`, `support`, `registry` (manifest types), `cache`, `fetch`.

pub mod archive;
pub mod handoff;
