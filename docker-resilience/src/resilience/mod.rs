//! Resilience: pure policy, no I/O. What an error means ([`classify`]), how long to wait
//! before the next attempt ([`retry`]), when to stop asking a source that keeps failing
//! ([`breaker`]), how a source is doing ([`health`]), where else an image can come
//! from ([`mirror`]), and how big blobs are fetched ([`multipart`]).
//!
//! May import: `vocab`.

pub mod breaker;
pub mod classify;
#[cfg(feature = "registry")]
pub mod health;
pub mod mirror;
pub mod multipart;
pub mod retry;
