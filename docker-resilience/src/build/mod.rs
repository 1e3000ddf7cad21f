//! Build: many services in dependency order, independent ones in parallel, each
//! context streamed from disk ([`context`]), retrying only what is transient, and
//! reporting every result.
//!
//! May import: `vocab`, `support`, `parse`, `config`, `plan`, `resilience`, `engine`.

pub mod context;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::engine::{BuildEngine, BuildError, BuildSpec, LogSink};
use crate::parse::dockerfile::{Dockerfile, DockerfileError, NamedContext, ScanOptions};
use crate::plan::{Service, ServiceError, ServiceSet};
use crate::resilience::classify::{classify_build, Classification, ErrorClass};
use crate::resilience::retry::{Decision, RetryPolicy};
use crate::support::{millis, EventSink};
use crate::vocab::SecretValue;
use context::BuildContext;

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Services built at once (default 2).
    pub jobs: usize,
    /// Rebuild without the cache (`--force`).
    pub no_cache: bool,
    /// Skip services whose image exists (`up-to-date`).
    pub missing_only: bool,
    /// Stop starting builds after the first failure.
    pub fail_fast: bool,
    /// Network for `RUN` steps of every service (overrides theirs).
    pub network: Option<String>,
    /// Network of the services that set none (else the daemon's default).
    pub default_network: Option<String>,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Build secrets' values, by service name, then id (read before any build starts).
    pub secrets: BTreeMap<String, BTreeMap<String, SecretValue>>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions::from(&Settings::default())
    }
}

impl From<&Settings> for BuildOptions {
    /// The build part of resolved settings (the run's own switches off).
    fn from(settings: &Settings) -> Self {
        BuildOptions {
            jobs: settings.build_jobs,
            no_cache: false,
            missing_only: false,
            fail_fast: false,
            network: settings.network_override.clone(),
            default_network: settings.network_default.clone(),
            retry: settings.build_retry.clone(),
            secrets: BTreeMap::new(),
        }
    }
}

/// Why a build failed, classified: retry or not, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct BuildFailure {
    /// What failed, as the daemon said it.
    pub message: String,
    /// Transient failures are retried; permanent ones are not.
    pub class: ErrorClass,
    /// The failing step (`[build 3/5] RUN make`), when known.
    pub step: Option<String>,
    /// The failing step's last output lines.
    pub last_lines: Vec<String>,
    /// What to do about it, when we know.
    pub hint: Option<String>,
}

impl BuildFailure {
    /// A daemon's failure classified (`heredocs_rejected`: the Dockerfile opens
    /// heredocs that the daemon's built-in frontend does not accept).
    pub fn classify(error: BuildError, heredocs_rejected: bool) -> Self {
        let (class, hint) = classify_build(&error.message, &error.last_lines, heredocs_rejected);
        BuildFailure {
            message: error.message,
            class,
            step: error.step,
            last_lines: error.last_lines,
            hint,
        }
    }

    /// A failure that no retry can fix (bad context, missing Dockerfile…).
    pub fn permanent(message: String) -> Self {
        BuildFailure {
            message,
            class: ErrorClass::Permanent,
            step: None,
            last_lines: Vec::new(),
            hint: None,
        }
    }
}

/// What became of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceStatus {
    /// Built.
    Built,
    /// Its build failed.
    Failed,
    /// Not built: something it depends on failed (or `--fail-fast` stopped the run).
    Skipped,
    /// Not built: its image exists (`--missing-only`).
    UpToDate,
}

impl ServiceStatus {
    /// The status as the report spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Built => "built",
            ServiceStatus::Failed => "failed",
            ServiceStatus::Skipped => "skipped",
            ServiceStatus::UpToDate => "up-to-date",
        }
    }
}

/// One service's result.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceResult {
    /// The service.
    pub name: String,
    /// Its image.
    pub image: String,
    /// What became of it.
    pub status: ServiceStatus,
    /// Build attempts made.
    pub attempts: u32,
    /// Time spent on it.
    pub elapsed_ms: u64,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// The class of the last failure.
    pub error_class: Option<ErrorClass>,
    /// The failing step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The failing step's last output lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub last_lines: Vec<String>,
    /// What to do about the failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Totals of a build run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BuildSummary {
    /// Services in the run.
    pub total: usize,
    /// Built.
    pub built: usize,
    /// Failed.
    pub failed: usize,
    /// Skipped.
    pub skipped: usize,
    /// Up to date (not built).
    pub up_to_date: usize,
    /// Retries of transient failures.
    pub retries: u32,
    /// Wall time of the run.
    pub elapsed_ms: u64,
}

/// The result of a build run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BuildReport {
    /// Each service, in build order.
    pub services: Vec<ServiceResult>,
    /// Totals.
    pub summary: BuildSummary,
    /// The run was cancelled.
    #[serde(skip)]
    pub interrupted: bool,
}

/// What happens during a run, for progress output.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BuildEvent {
    /// An attempt starts.
    Started {
        /// The service.
        service: String,
        /// 1-based attempt.
        attempt: u32,
    },
    /// A line of build output.
    Line {
        /// The service.
        service: String,
        /// The line.
        line: String,
    },
    /// An attempt failed and will be retried.
    Retrying {
        /// The service.
        service: String,
        /// The failed attempt.
        attempt: u32,
        /// Why.
        error: String,
        /// When the next one starts.
        delay: Duration,
    },
    /// A service is done (built, failed, skipped or up to date).
    Finished(ServiceResult),
}

/// Builds the services of a [`ServiceSet`].
pub struct Builder<E> {
    engine: Arc<E>,
    options: BuildOptions,
    on_event: EventSink<BuildEvent>,
    cancel: CancellationToken,
}

impl<E> std::fmt::Debug for Builder<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<E: BuildEngine + 'static> Builder<E> {
    /// A builder on `engine`.
    pub fn new(engine: E, options: BuildOptions) -> Self {
        Self::with_shared_engine(Arc::new(engine), options)
    }

    /// A builder sharing an engine with other work.
    pub fn with_shared_engine(engine: Arc<E>, options: BuildOptions) -> Self {
        Builder {
            engine,
            options,
            on_event: EventSink::none(),
            cancel: CancellationToken::new(),
        }
    }

    /// Hands every event to `f` (called from the builders' tasks).
    pub fn on_event(mut self, f: impl Fn(&BuildEvent) + Send + Sync + 'static) -> Self {
        self.on_event = EventSink::new(f);
        self
    }

    /// Stops in-flight builds and starts no more when `token` is cancelled.
    pub fn cancel_on(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Builds every service of `set` in dependency order.
    pub async fn run(&self, set: &ServiceSet) -> Result<BuildReport, ServiceError> {
        let order = set.order()?;
        let started = Instant::now();
        let jobs = self.options.jobs.max(1);
        let mut pending: Vec<String> = order.clone();
        let mut done: BTreeMap<String, ServiceResult> = BTreeMap::new();
        let mut running: JoinSet<ServiceResult> = JoinSet::new();
        let mut in_flight = BTreeSet::new();
        let mut stop = false;
        loop {
            let mut i = 0;
            while i < pending.len() {
                let name = pending[i].clone();
                let service = &set.services[&name];
                let blocked = service.depends_on.iter().find(|d| {
                    done.get(*d).is_some_and(|r| {
                        matches!(r.status, ServiceStatus::Failed | ServiceStatus::Skipped)
                    })
                });
                if let Some(dep) = blocked {
                    let result = skipped(
                        service,
                        format!("not built: `{dep}`, which it depends on, was not built"),
                    );
                    self.on_event.emit(&BuildEvent::Finished(result.clone()));
                    done.insert(name, result);
                    pending.remove(i);
                    continue;
                }
                if stop || self.cancel.is_cancelled() {
                    let why = if self.cancel.is_cancelled() {
                        "not built: interrupted"
                    } else {
                        "not built: --fail-fast stopped the run"
                    };
                    let result = skipped(service, why.into());
                    self.on_event.emit(&BuildEvent::Finished(result.clone()));
                    done.insert(name, result);
                    pending.remove(i);
                    continue;
                }
                let ready = service.depends_on.iter().all(|d| done.contains_key(d));
                if ready && in_flight.len() < jobs {
                    pending.remove(i);
                    in_flight.insert(name.clone());
                    running.spawn(build_one(
                        Arc::clone(&self.engine),
                        set.root.clone(),
                        service.clone(),
                        self.options.clone(),
                        self.on_event.clone(),
                        self.cancel.clone(),
                    ));
                    continue;
                }
                i += 1;
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let result = match joined {
                Ok(result) => result,
                // Tasks are never aborted: a join error is a panic, passed on as one.
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            in_flight.remove(&result.name);
            if result.status == ServiceStatus::Failed && self.options.fail_fast {
                stop = true;
            }
            self.on_event.emit(&BuildEvent::Finished(result.clone()));
            done.insert(result.name.clone(), result);
        }
        let services: Vec<ServiceResult> = order.iter().filter_map(|n| done.remove(n)).collect();
        let count = |s: ServiceStatus| services.iter().filter(|r| r.status == s).count();
        let summary = BuildSummary {
            total: services.len(),
            built: count(ServiceStatus::Built),
            failed: count(ServiceStatus::Failed),
            skipped: count(ServiceStatus::Skipped),
            up_to_date: count(ServiceStatus::UpToDate),
            retries: services.iter().map(|r| r.attempts.saturating_sub(1)).sum(),
            elapsed_ms: millis(started.elapsed()),
        };
        Ok(BuildReport {
            services,
            summary,
            interrupted: self.cancel.is_cancelled(),
        })
    }
}

fn skipped(service: &Service, why: String) -> ServiceResult {
    ServiceResult {
        name: service.name.clone(),
        image: service.image.clone(),
        status: ServiceStatus::Skipped,
        attempts: 0,
        elapsed_ms: 0,
        error: Some(why),
        error_class: None,
        step: None,
        last_lines: Vec::new(),
        hint: None,
    }
}

/// The Dockerfile's text with the service's named contexts (compose
/// `additional_contexts`) written in, when it has any. Docker's `/build` API takes no
/// named contexts, so an image stands in for its name where BuildKit would put it
/// (`FROM base` → `FROM acme/base:dev`); a directory or a URL cannot.
fn with_named_contexts(root: &Path, service: &Service) -> Result<Option<String>, String> {
    if service.named_contexts.is_empty() {
        return Ok(None);
    }
    let not_images: Vec<String> = service
        .named_contexts
        .iter()
        .filter(|(_, c)| **c == NamedContext::Local)
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    if !not_images.is_empty() {
        let what = if not_images.len() == 1 {
            "additional context {} is a directory or a URL"
        } else {
            "additional contexts {} are directories or URLs"
        }
        .replace("{}", &not_images.join(", "));
        return Err(format!(
            "service `{}`: {what}, which Docker's build API cannot take (image and \
             `service:` contexts it can); build this service with `docker compose build` \
             (plan and prefetch cover its images)",
            service.name,
        ));
    }
    let text = match &service.dockerfile_inline {
        Some(text) => text.clone(),
        None => std::fs::read_to_string(root.join(&service.dockerfile))
            .map_err(|e| format!("cannot read {}: {e}", service.dockerfile.display()))?,
    };
    let at = |e: DockerfileError| format!("{}:{}: {e}", service.dockerfile.display(), e.line());
    let file = Dockerfile::parse(&text).map_err(at)?;
    let mut options = ScanOptions {
        build_args: service.args.clone(),
        named_contexts: service.named_contexts.clone(),
        ..ScanOptions::default()
    };
    if let Some(platform) = service.platform.as_deref().and_then(|p| p.parse().ok()) {
        options.target_platform = platform;
    }
    let scan = file.scan(&options).map_err(at)?;
    Ok(Some(file.with_image_contexts(&text, &scan)))
}

/// What the daemon is asked to build for `service`.
fn spec(service: &Service, context: &BuildContext, options: &BuildOptions) -> BuildSpec {
    BuildSpec {
        service: service.name.clone(),
        tag: service.image.clone(),
        dockerfile: context.dockerfile_name().to_owned(),
        args: service.args.clone(),
        target: service.target.clone(),
        platform: service.platform.clone(),
        network: options
            .network
            .clone()
            .or_else(|| service.network.clone())
            .or_else(|| options.default_network.clone()),
        no_cache: options.no_cache,
        secrets: options
            .secrets
            .get(&service.name)
            .cloned()
            .unwrap_or_default(),
    }
}

/// One attempt: the context opened and streamed, the daemon's failure classified.
async fn attempt<E: BuildEngine>(
    engine: &E,
    root: &Path,
    service: &Service,
    options: &BuildOptions,
    log: LogSink,
) -> Result<(), BuildFailure> {
    let with_contexts = with_named_contexts(root, service).map_err(BuildFailure::permanent)?;
    let context = match with_contexts
        .as_ref()
        .or(service.dockerfile_inline.as_ref())
    {
        Some(text) => BuildContext::inline(&root.join(&service.context), text),
        None => BuildContext::new(
            &root.join(&service.context),
            &root.join(&service.dockerfile),
        ),
    }
    .map_err(|e| BuildFailure::permanent(e.to_string()))?;
    let spec = spec(service, &context, options);
    let error = match engine
        .build(spec, Box::pin(context.into_stream()), log)
        .await
    {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    // The heredoc hint only where the daemon's frontend really rejects them (probed).
    let rejected = service.has_heredocs && !engine.accepts_heredocs().await;
    Err(BuildFailure::classify(error, rejected))
}

async fn build_one<E: BuildEngine>(
    engine: Arc<E>,
    root: PathBuf,
    service: Service,
    options: BuildOptions,
    events: EventSink<BuildEvent>,
    cancel: CancellationToken,
) -> ServiceResult {
    let started = Instant::now();
    let name = service.name.clone();
    let mut result = ServiceResult {
        name: name.clone(),
        image: service.image.clone(),
        status: ServiceStatus::Built,
        attempts: 0,
        elapsed_ms: 0,
        error: None,
        error_class: None,
        step: None,
        last_lines: Vec::new(),
        hint: None,
    };
    if options.missing_only
        && !options.no_cache
        && engine.image_exists(&service.image).await.unwrap_or(false)
    {
        result.status = ServiceStatus::UpToDate;
        return result;
    }
    let mut schedule = options.retry.schedule();
    loop {
        let attempt_no = schedule.begin_attempt();
        result.attempts = attempt_no;
        events.emit(&BuildEvent::Started {
            service: name.clone(),
            attempt: attempt_no,
        });
        let sink_events = events.clone();
        let sink_name = name.clone();
        let log: LogSink = Arc::new(move |line: &str| {
            sink_events.emit(&BuildEvent::Line {
                service: sink_name.clone(),
                line: line.to_owned(),
            });
        });
        let outcome = tokio::select! {
            r = attempt(&*engine, &root, &service, &options, log) => r,
            () = cancel.cancelled() => Err(BuildFailure::permanent("interrupted".into())),
        };
        let failure = match outcome {
            Ok(()) => {
                result.status = ServiceStatus::Built;
                result.error = None;
                result.error_class = None;
                break;
            }
            Err(f) => f,
        };
        result.status = ServiceStatus::Failed;
        result.error = Some(failure.message.clone());
        result.error_class = Some(failure.class);
        result.step = failure.step.clone();
        result.last_lines = failure.last_lines.clone();
        result.hint = failure.hint.clone();
        if cancel.is_cancelled() {
            break;
        }
        let classification = Classification {
            class: failure.class,
            retry_after: None,
            dns_failure: false,
            docker_hub_unreachable: false,
        };
        match schedule.after_failure(&classification, false) {
            Decision::RetryAfter(delay) => {
                events.emit(&BuildEvent::Retrying {
                    service: name.clone(),
                    attempt: attempt_no,
                    error: failure.message,
                    delay,
                });
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => break,
                }
            }
            Decision::GiveUp => break,
        }
    }
    result.elapsed_ms = millis(started.elapsed());
    result
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::path::PathBuf;
    use std::sync::Mutex;

    use super::*;
    use crate::engine::{ContextStream, EngineError};
    use crate::plan::ServiceOrigin;

    /// Each service fails with the queued failures, then builds.
    #[derive(Default)]
    struct Fake {
        script: Mutex<BTreeMap<String, VecDeque<BuildError>>>,
        log: Mutex<Vec<String>>,
        running: Mutex<(usize, usize)>,
        existing: BTreeSet<String>,
    }

    impl BuildEngine for Fake {
        async fn image_exists(&self, image: &str) -> Result<bool, EngineError> {
            Ok(self.existing.contains(image))
        }

        async fn build(
            &self,
            spec: BuildSpec,
            _context: ContextStream,
            log: LogSink,
        ) -> Result<(), BuildError> {
            let name = spec.service.clone();
            {
                let mut r = self.running.lock().unwrap();
                r.0 += 1;
                r.1 = r.1.max(r.0);
            }
            self.log.lock().unwrap().push(format!("start {name}"));
            log("step 1");
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.running.lock().unwrap().0 -= 1;
            let next = self
                .script
                .lock()
                .unwrap()
                .get_mut(&name)
                .and_then(VecDeque::pop_front);
            self.log.lock().unwrap().push(format!("end {name}"));
            next.map_or(Ok(()), Err)
        }
    }

    #[test]
    fn image_contexts_are_written_in_and_directories_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("app")).unwrap();
        std::fs::write(
            root.path().join("app/Dockerfile"),
            "FROM base\nCOPY --from=tools /git /git\nRUN --mount=from=tools,target=/t ls /t\n",
        )
        .unwrap();
        let mut app = Service::new("app", "acme/app:1", "app", "app/Dockerfile");
        assert_eq!(with_named_contexts(root.path(), &app), Ok(None));
        app.named_contexts = BTreeMap::from([
            (
                "base".to_owned(),
                NamedContext::Image("acme/base:1".to_owned()),
            ),
            (
                "tools".to_owned(),
                NamedContext::Image("alpine/git:2.43.0".to_owned()),
            ),
        ]);
        assert_eq!(
            with_named_contexts(root.path(), &app).unwrap().as_deref(),
            Some(
                "FROM acme/base:1\nCOPY --from=alpine/git:2.43.0 /git /git\n\
                 RUN --mount=from=alpine/git:2.43.0,target=/t ls /t\n"
            )
        );
        app.named_contexts
            .insert("assets".to_owned(), NamedContext::Local);
        assert_eq!(
            with_named_contexts(root.path(), &app).unwrap_err(),
            "service `app`: additional context `assets` is a directory or a URL, which \
             Docker's build API cannot take (image and `service:` contexts it can); build \
             this service with `docker compose build` (plan and prefetch cover its images)"
        );
    }

    /// Services in a temporary tree (each a directory with a Dockerfile).
    fn set(deps: &[(&str, &[&str])]) -> ServiceSet {
        let root = tempfile::tempdir().unwrap().keep();
        for (n, _) in deps {
            std::fs::create_dir_all(root.join(n)).unwrap();
            std::fs::write(root.join(n).join("Dockerfile"), "FROM scratch\n").unwrap();
        }
        ServiceSet {
            root,
            services: deps
                .iter()
                .map(|(n, d)| {
                    (
                        n.to_string(),
                        Service {
                            depends_on: d.iter().map(|s| s.to_string()).collect(),
                            ..Service::new(
                                *n,
                                format!("img-{n}"),
                                *n,
                                PathBuf::from(n).join("Dockerfile"),
                            )
                        },
                    )
                })
                .collect(),
            origin: ServiceOrigin::Directories,
        }
    }

    fn options(jobs: usize) -> BuildOptions {
        BuildOptions {
            jobs,
            retry: RetryPolicy {
                max_attempts: 3,
                jitter: false,
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(2),
                ..RetryPolicy::default()
            },
            ..BuildOptions::default()
        }
    }

    fn failure(message: &str, lines: &[&str]) -> BuildError {
        BuildError {
            message: message.into(),
            step: Some("RUN x".into()),
            last_lines: lines.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn status(report: &BuildReport, name: &str) -> (ServiceStatus, u32) {
        let r = report.services.iter().find(|r| r.name == name).unwrap();
        (r.status, r.attempts)
    }

    #[tokio::test]
    async fn order_retry_skip_and_parallelism() {
        let fake = Fake::default();
        fake.script.lock().unwrap().insert(
            "flaky".into(),
            VecDeque::from([failure(
                "exit code: 100",
                &["E: 500  Internal Server Error"],
            )]),
        );
        fake.script.lock().unwrap().insert(
            "broken".into(),
            VecDeque::from([failure("exit code: 3", &["boom"])]),
        );
        let services = set(&[
            ("base", &[]),
            ("app", &["base"]),
            ("flaky", &[]),
            ("broken", &[]),
            ("after-broken", &["broken"]),
            ("last", &["after-broken"]),
        ]);
        let builder = Builder::new(fake, options(2));
        let report = builder.run(&services).await.unwrap();
        assert_eq!(status(&report, "base"), (ServiceStatus::Built, 1));
        assert_eq!(status(&report, "app"), (ServiceStatus::Built, 1));
        assert_eq!(status(&report, "flaky"), (ServiceStatus::Built, 2));
        assert_eq!(status(&report, "broken"), (ServiceStatus::Failed, 1));
        assert_eq!(status(&report, "after-broken"), (ServiceStatus::Skipped, 0));
        assert_eq!(status(&report, "last"), (ServiceStatus::Skipped, 0));
        assert_eq!(
            report.summary,
            BuildSummary {
                total: 6,
                built: 3,
                failed: 1,
                skipped: 2,
                up_to_date: 0,
                retries: 1,
                elapsed_ms: report.summary.elapsed_ms
            }
        );
        let log = builder.engine.log.lock().unwrap().clone();
        let at = |s: &str| log.iter().position(|l| l == s).unwrap();
        assert!(at("end base") < at("start app"), "{log:?}");
        assert_eq!(builder.engine.running.lock().unwrap().1, 2, "two at a time");
        let broken = report.services.iter().find(|r| r.name == "broken").unwrap();
        assert_eq!(broken.last_lines, ["boom"]);
    }

    #[tokio::test]
    async fn fail_fast_and_missing_only() {
        let fake = || {
            let mut fake = Fake::default();
            fake.existing.insert("img-b".into());
            fake.script
                .lock()
                .unwrap()
                .insert("a".into(), VecDeque::from([failure("exit code: 1", &[])]));
            fake
        };
        let services = set(&[("a", &[]), ("b", &[]), ("c", &[])]);
        let opts = BuildOptions {
            missing_only: true,
            ..options(1)
        };
        let report = Builder::new(fake(), opts).run(&services).await.unwrap();
        assert_eq!(status(&report, "a"), (ServiceStatus::Failed, 1));
        assert_eq!(status(&report, "b").0, ServiceStatus::UpToDate);
        assert_eq!(status(&report, "c"), (ServiceStatus::Built, 1));
        let opts = BuildOptions {
            fail_fast: true,
            ..options(1)
        };
        let report = Builder::new(fake(), opts).run(&services).await.unwrap();
        assert_eq!(status(&report, "a"), (ServiceStatus::Failed, 1));
        assert_eq!(status(&report, "b").0, ServiceStatus::Skipped);
        assert_eq!(status(&report, "c").0, ServiceStatus::Skipped);
    }
}
