//! Make Docker image pulls and multi-service builds survive bad networks.
//!
//! The crate is a pipeline, one module per stage, each importing only the stages
//! before it:
//!
//! | stage | what it does | feature |
//! |---|---|---|
//! | [`vocab`] | the shared vocabulary: image references, platforms, file locations | always |
//! | [`discover`] | finds the Dockerfiles and compose files of a tree | always |
//! | [`parse`] | text to types: Dockerfiles, variable expansion, compose, `.dockerignore`, `daemon.json` | always |
//! | [`resilience`] | pure policy: error classes, retry schedules, the breaker, mirrors | always |
//! | [`config`] | `drbuild.yaml` and the one resolution of settings (flags > file > defaults) | always |
//! | [`plan`] | every external image a tree needs, and the services it builds, in order | always |
//! | [`registry`] | the distribution API: the one transport every request goes through (per-request retries, source health, fallback), and a client that reports each request's true answer | `registry` |
//! | [`cache`] | the content-addressed blob cache that several processes share (locked per blob, verified, renamed atomically) | `registry` |
//! | [`fetch`] | images from registries into the cache, resumed and verified (no daemon) | `registry` |
//! | [`deliver`] | fetched images from the cache into a daemon: the loopback handoff registry, `docker load` archives | `engine` |
//! | [`engine`] | the Docker daemon (the only module that talks to it) | `engine` |
//! | [`prefetch`] | pulling a plan's images through flaky networks | `engine` |
//! | [`sync`] | a plan's images copied into a registry (a fleet's mirror), digests unchanged | `engine` |
//! | [`build`] | building services in dependency order, retrying what is transient | `engine` |
//! | [`bundle`] | offline bundles, verified before they load | `bundle` |
//! | [`doctor`] | why pulls and builds fail on a machine | `engine` |
//! | [`project`] | a tree opened once, and the [`DockerBuild`] runner | `engine` |
//!
//! # Features
//!
//! Every feature is on by default. A build script or tool that only wants the plan
//! (which images, which services) depends with `default-features = false`: discovery,
//! parsing, settings and [`Plan`], about 50 crates, no async runtime, nothing that talks
//! to a daemon or a registry.
//!
//! - `registry`: the registry client, the transport, the blob cache, the fetch.
//! - `engine` (with `registry`): the Docker daemon, prefetch, `sync`, builds,
//!   `doctor`, [`Project`] and the [`DockerBuild`] runner.
//! - `bundle` (with `engine`): bundles, `export` and `import`.
//!
//! # Planning a tree
//!
//! ```no_run
//! use std::path::Path;
//! use docker_resilience::{Plan, PlanOptions};
//!
//! # fn main() -> Result<(), docker_resilience::plan::PlanError> {
//! let plan = Plan::for_tree(Path::new("."), &PlanOptions::default())?;
//! for image in &plan.images {
//!     println!("{}", image.reference);
//!     for source in &image.sources {
//!         println!("  {}:{} ({})", source.path.display(), source.line, source.kind);
//!     }
//! }
//! for warning in &plan.warnings {
//!     eprintln!("{}:{}: {}", warning.path.display(), warning.line, warning.message);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Pulling and building through the daemon
//!
//! A [`Project`] is a tree opened once: its plan, its `drbuild.yaml`, and the
//! settings resolved from the caller's [`Overrides`] over the file over the defaults.
//! Its prefetch pulls images with retries (errors classified as transient,
//! rate-limited or permanent), mirror fallback, a stall watchdog and bounded
//! concurrency; its build runs the services in dependency order, retrying only
//! transient failures.
//!
//! ```no_run
//! use std::path::Path;
//! use docker_resilience::project::BuildRun;
//! use docker_resilience::{CancellationToken, DockerEngine, Overrides, PlanOptions, Project};
//!
//! # async fn run() -> Result<(), docker_resilience::Error> {
//! let project = Project::open(Path::new("."), &PlanOptions::default(), &Overrides::default())?;
//! let engine = DockerEngine::connect().await?;
//! let pulled = project
//!     .prefetch(engine.clone(), &project.plan.wanted(), false, |event| eprintln!("{event:?}"), CancellationToken::new())
//!     .await?;
//! println!("pulled {}, failed {}", pulled.summary.pulled, pulled.summary.failed);
//! let outcome = project
//!     .build(engine, &BuildRun::default(), |_| {}, |_| {}, CancellationToken::new())
//!     .await?;
//! if let Some(built) = outcome.build {
//!     println!("built {}/{}", built.summary.built, built.summary.total);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`Prefetcher`] and [`Builder`] give finer control (a fake engine, shared engines);
//! for a `build.rs` or an xtask, [`DockerBuild`] does all of this in one call.
//! [`bundle`] moves images to machines with no registry in a file verified before
//! loading, and [`doctor`] explains why pulls and builds fail on a machine.
//!
//! # Scanning one Dockerfile
//!
//! ```
//! use docker_resilience::parse::dockerfile::{Dockerfile, ScanOptions};
//!
//! let text = "ARG GO=1.21\nFROM golang:${GO}-alpine AS build\nFROM scratch\nCOPY --from=build /app /app\n";
//! let scan = Dockerfile::parse(text)?.scan(&ScanOptions::default())?;
//! let images: Vec<String> = scan.images.iter().map(|i| i.reference.to_string()).collect();
//! assert_eq!(images, ["docker.io/library/golang:1.21-alpine"]);
//! # Ok::<(), docker_resilience::parse::dockerfile::DockerfileError>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The stage table links every module: with a feature off, its links have no target.
#![cfg_attr(
    not(all(feature = "registry", feature = "engine", feature = "bundle")),
    allow(rustdoc::broken_intra_doc_links)
)]

#[cfg(feature = "engine")]
pub mod build;
#[cfg(feature = "bundle")]
pub mod bundle;
#[cfg(feature = "registry")]
pub mod cache;
pub mod config;
#[cfg(feature = "engine")]
pub mod deliver;
pub mod discover;
#[cfg(feature = "engine")]
pub mod doctor;
#[cfg(feature = "engine")]
pub mod engine;
#[cfg(feature = "registry")]
pub mod fetch;
pub mod parse;
pub mod plan;
#[cfg(feature = "engine")]
pub mod prefetch;
#[cfg(feature = "engine")]
pub mod project;
#[cfg(feature = "registry")]
pub mod registry;
pub mod resilience;
mod support;
#[cfg(feature = "engine")]
pub mod sync;
pub mod vocab;

#[cfg(feature = "engine")]
pub use build::{BuildOptions, Builder};
pub use config::{Overrides, Settings};
#[cfg(feature = "engine")]
pub use engine::DockerEngine;
pub use plan::{Plan, PlanOptions};
#[cfg(feature = "engine")]
pub use prefetch::{PrefetchOptions, Prefetcher};
#[cfg(feature = "engine")]
pub use project::{DockerBuild, Error, ErrorKind, Project};
pub use vocab::ImageReference;

/// Re-exported so that callers can cancel a run.
#[cfg(feature = "registry")]
pub use tokio_util::sync::CancellationToken;

/// The README's Rust examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;

/// The library guide's Rust examples (`docs/library.md`), compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/library.md")]
struct LibraryGuideExamples;
