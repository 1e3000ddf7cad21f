//! Make Docker image pulls and multi-service builds survive bad networks.
//!
//! `docker-resilience` finds every Dockerfile and compose file in a tree, works out
//! every external image they need — `FROM` with `ARG`s resolved, multi-stage aliases
//! skipped, `COPY --from=`, `RUN --mount=from=`, `# syntax=`, compose `image:` — and
//! dedupes them into a [`Plan`].
//!
//! # Planning a tree
//!
//! ```no_run
//! use std::path::Path;
//! use docker_resilience::{Plan, PlanOptions};
//!
//! # fn main() -> Result<(), docker_resilience::PlanError> {
//! let plan = Plan::for_tree(Path::new("."), &PlanOptions::default())?;
//! for image in &plan.images {
//!     println!("{}", image.reference);
//!     for source in &image.sources {
//!         println!("  {}:{} ({:?})", source.path.display(), source.line, source.kind);
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
//! A [`Prefetcher`] pulls a plan's images through the Docker daemon with retries
//! (errors classified as transient, rate-limited or permanent), mirror fallback,
//! a stall watchdog, bounded concurrency and a report; a [`Builder`] then builds a
//! [`ServiceSet`] (from `drbuild.yaml`, compose, or Dockerfile directories) in
//! dependency order, retrying only transient failures.
//!
//! ```no_run
//! use std::path::Path;
//! use docker_resilience::{
//!     BuildOptions, Builder, DockerEngine, Plan, PlanOptions, PrefetchOptions, Prefetcher,
//!     ServiceSet,
//! };
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let root = Path::new(".");
//! let plan = Plan::for_tree(root, &PlanOptions::default())?;
//! let engine = DockerEngine::connect().await?;
//! let images: Vec<_> = plan.references().cloned().collect();
//! let pulled = Prefetcher::new(engine.clone(), PrefetchOptions::default())
//!     .on_event(|event| eprintln!("{event:?}"))
//!     .run(&images)
//!     .await?;
//! println!("pulled {}, failed {}", pulled.summary.pulled, pulled.summary.failed);
//! let services = ServiceSet::load(root, &plan)?;
//! let built = Builder::new(engine, BuildOptions::default()).run(&services).await?;
//! println!("built {}/{}", built.summary.built, built.summary.total);
//! # Ok(())
//! # }
//! ```
//!
//! For a `build.rs` or an xtask, [`DockerBuild`] does all of this in one call.
//! [`export_bundle`] / [`import_bundle`] move images to machines with no registry
//! in a file verified before loading, and [`doctor()`] explains why pulls and builds
//! fail on a machine.
//!
//! # Scanning one Dockerfile
//!
//! ```
//! use docker_resilience::{Dockerfile, ScanOptions};
//!
//! let text = "ARG GO=1.21\nFROM golang:${GO}-alpine AS build\nFROM scratch\nCOPY --from=build /app /app\n";
//! let scan = Dockerfile::parse(text)?.scan(&ScanOptions::default())?;
//! let images: Vec<String> = scan.images.iter().map(|i| i.reference.to_string()).collect();
//! assert_eq!(images, ["docker.io/library/golang:1.21-alpine"]);
//! # Ok::<(), docker_resilience::DockerfileError>(())
//! ```
#![deny(missing_docs)]

mod binary;
mod build;
mod build_engine;
mod bundle;
mod chunks;
mod classify;
mod compose;
mod config;
mod context;
mod daemon_config;
mod discover;
mod dockerfile;
mod dockerignore;
mod doctor;
mod engine;
mod expand;
mod mirror;
mod plan;
mod platform;
mod prefetch;
mod reference;
mod retry;
mod runner;
mod service;

pub use binary::BinaryFormat;
pub use build::{
    BuildEvent, BuildOptions, BuildReport, BuildSummary, Builder, ServiceResult, ServiceStatus,
};
pub use build_engine::{BuildEngine, BuildFailure, BuildRequest, LogSink};
pub use bundle::{
    export_bundle, import_bundle, verify_bundle, write_bundle_from_tar, BundleError, BundleImage,
    BundleManifest, BytesProgress, Compression, ImportReport, BUNDLE_ENTRY,
};
pub use classify::{classify, classify_build, Classification, ErrorClass};
pub use compose::{
    ComposeBuild, ComposeError, ComposeProject, ComposeService, Located, PublishedPort,
};
pub use config::{Config, ConfigError, ConfigFile, RetryConfig, ServiceConfig, CONFIG_FILE};
pub use context::{BuildContext, ContextError};
pub use daemon_config::{DaemonJson, DaemonJsonIssue, DAEMON_JSON};
pub use discover::{discover, DiscoverOptions, Discovery, FileKind, IGNORE_FILE};
pub use dockerfile::{
    Dockerfile, DockerfileError, Flag, Heredoc, ImageScan, ImageUse, Instruction, ScanOptions,
    ScanWarning, Stage, SyntaxDirective,
};
pub use dockerignore::{Dockerignore, DockerignoreError};
pub use doctor::{doctor, Check, CheckStatus, DoctorOptions};
pub use engine::{DaemonInfo, DockerEngine, Engine, EngineError, PresentImages, PullEvent};
pub use mirror::{probe_manifest, Mirror, MirrorError, MirrorSet, ProbeResult};
pub use plan::{ImageSource, Plan, PlanError, PlanOptions, PlanWarning, PlannedImage, SourceKind};
pub use platform::{Platform, PlatformError};
pub use prefetch::{
    ImageResult, ImageStatus, PrefetchEvent, PrefetchOptions, PrefetchReport, PrefetchSummary,
    Prefetcher,
};
pub use reference::{ImageReference, ReferenceError, DOCKER_HUB};
pub use retry::{Decision, RetryPolicy, RetrySchedule};
pub use runner::{DockerBuild, DockerBuildReport, RunnerError};
pub use service::{Service, ServiceError, ServiceOrigin, ServiceSet};
/// Re-exported so that callers can cancel a [`Prefetcher`] run.
pub use tokio_util::sync::CancellationToken;
