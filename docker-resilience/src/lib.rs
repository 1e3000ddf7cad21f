//! Make Docker image pulls and multi-service builds survive bad networks.
//!
//! The crate is a pipeline, one module per stage, each importing only the stages
//! before it:
//!
//! | stage | what it does |
//! |---|---|
//! | [`vocab`] | the shared vocabulary: image references, platforms, file locations |
//! | [`discover`] | finds the Dockerfiles and compose files of a tree |
//! | [`parse`] | text to types: Dockerfiles, variable expansion, compose, `.dockerignore`, `daemon.json` |
//! | [`resilience`] | pure policy: error classes, retry schedules, the breaker, mirrors |
//! | [`config`] | `drbuild.yaml` and the one resolution of settings (flags > file > defaults) |
//! | [`plan`] | every external image a tree needs, and the services it builds, in order |
//! | [`registry`] | the distribution API: the one transport every request goes through (per-request retries, source health, fallback), and a client that reports each request's true answer |
//! | [`cache`] | the content-addressed blob cache that several processes share (locked per blob, verified, renamed atomically) |
//! | [`fetch`] | images from registries into the cache, resumed and verified (no daemon) |
//! | [`deliver`] | fetched images from the cache into a daemon: the loopback handoff registry, `docker load` archives |
//! | [`engine`] | the Docker daemon (the only module that talks to it) |
//! | [`prefetch`] | pulling a plan's images through flaky networks |
//! | [`sync`] | a plan's images copied into a registry (a fleet's mirror), digests unchanged |
//! | [`build`] | building services in dependency order, retrying what is transient |
//! | [`bundle`] | offline bundles, verified before they load |
//! | [`doctor`] | why pulls and builds fail on a machine |
//! | [`project`] | a tree opened once, and the [`DockerBuild`] runner |
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

pub mod build;
pub mod bundle;
pub mod cache;
pub mod config;
pub mod deliver;
pub mod discover;
pub mod doctor;
pub mod engine;
pub mod fetch;
pub mod parse;
pub mod plan;
pub mod prefetch;
pub mod project;
pub mod registry;
pub mod resilience;
mod support;
pub mod sync;
pub mod vocab;

pub use build::{BuildOptions, Builder};
pub use config::{Overrides, Settings};
pub use engine::DockerEngine;
pub use plan::{Plan, PlanOptions};
pub use prefetch::{PrefetchOptions, Prefetcher};
pub use project::{DockerBuild, Error, ErrorKind, Project};
pub use vocab::ImageReference;

/// Re-exported so that callers can cancel a run.
pub use tokio_util::sync::CancellationToken;
