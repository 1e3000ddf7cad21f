//! Build: many services in dependency order, independent ones in parallel, on one
//! daemon or spread over several builders, each build sent the way its engine takes
//! it (`inputs`: directories for BuildKit's API, a tar streamed from disk for
//! `/build`, [`context`]), retrying only what is transient, and reporting every
//! result.
//!
//! - this module: the run ([`Builder`]): the order, the builders' places, what a
//!   failure skips;
//! - `attempt`: one service's build, attempt after attempt;
//! - `report`: what the run reports ([`BuildReport`], [`ServiceResult`],
//!   [`BuildEvent`], [`BuildFailure`]).
//!
//! May import: `vocab`, `support`, `parse`, `config`, `plan`, `resilience`, `engine`.

mod attempt;
pub mod context;
mod inputs;
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::engine::BuildEngine;
use crate::plan::{ServiceError, ServiceSet};
use crate::resilience::retry::RetryPolicy;
use crate::support::{millis, EventSink};
use crate::vocab::{Platform, SecretValue};
use attempt::build_one;
pub use report::{
    BuildEvent, BuildFailure, BuildReport, BuildSummary, ServiceResult, ServiceStatus,
};

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

/// Builds the services of a [`ServiceSet`], on one engine or spread over several
/// (builders, each building `jobs` services at once).
pub struct Builder<E> {
    builders: Vec<(Option<String>, Arc<E>)>,
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

/// A builder's state during a run.
struct Slot {
    running: usize,
    alive: bool,
    /// Images of this run it holds (built there, or brought there).
    holds: BTreeSet<String>,
    /// The platforms it builds natively (asked when there are several builders).
    native: Vec<Platform>,
}

/// What became of a service on its builder.
struct Done {
    result: ServiceResult,
    builder: usize,
    /// The builder stopped answering: the service is to be built elsewhere.
    builder_lost: bool,
}

impl<E: BuildEngine + 'static> Builder<E> {
    /// A builder on `engine`.
    pub fn new(engine: E, options: BuildOptions) -> Self {
        Self::with_shared_engine(Arc::new(engine), options)
    }

    /// A builder sharing an engine with other work.
    pub fn with_shared_engine(engine: Arc<E>, options: BuildOptions) -> Self {
        Builder {
            builders: vec![(None, engine)],
            options,
            on_event: EventSink::none(),
            cancel: CancellationToken::new(),
        }
    }

    /// A builder spreading services over several engines, by name (a daemon's
    /// address), each building `jobs` at once: a service goes to a free builder, the
    /// one holding most of what it needs first; an image of this run that a service
    /// needs is copied to its builder; a builder that stops answering has its service
    /// built on another.
    pub fn on_builders(builders: Vec<(String, Arc<E>)>, options: BuildOptions) -> Self {
        Builder {
            builders: builders
                .into_iter()
                .map(|(name, engine)| (Some(name), engine))
                .collect(),
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

    /// The builder for `service`: alive, with a free slot, running its platform
    /// natively when an alive builder does (else it waits for one); the one holding
    /// most of the run's images it needs, then the least busy.
    fn pick(
        &self,
        slots: &[Slot],
        jobs: usize,
        needs: &[&str],
        platform: Option<&Platform>,
    ) -> Option<usize> {
        let native = |b: usize| platform.is_some_and(|p| slots[b].native.contains(p));
        let any_native = (0..slots.len()).any(|b| slots[b].alive && native(b));
        (0..slots.len())
            .filter(|&b| slots[b].alive && slots[b].running < jobs)
            .filter(|&b| !any_native || native(b))
            .max_by_key(|&b| {
                let held = needs
                    .iter()
                    .filter(|i| slots[b].holds.contains(**i))
                    .count();
                (
                    held,
                    std::cmp::Reverse(slots[b].running),
                    std::cmp::Reverse(b),
                )
            })
    }

    /// Builds every service of `set` in dependency order.
    pub async fn run(&self, set: &ServiceSet) -> Result<BuildReport, ServiceError> {
        let order = set.order()?;
        let started = Instant::now();
        if !order.is_empty() {
            match self.builders[0].1.builds_dirs(false).await {
                Ok(()) => tracing::info!("builds go through BuildKit's own API"),
                Err(why) => tracing::info!("builds go through Docker's `/build` API: {why}"),
            }
        }
        let jobs = self.options.jobs.max(1);
        let mut slots: Vec<Slot> = Vec::with_capacity(self.builders.len());
        for (_, engine) in &self.builders {
            let native = if self.builders.len() > 1 {
                engine.native_platforms().await
            } else {
                Vec::new()
            };
            slots.push(Slot {
                running: 0,
                alive: true,
                holds: BTreeSet::new(),
                native,
            });
        }
        let mut pending: Vec<String> = order.clone();
        let mut done: BTreeMap<String, ServiceResult> = BTreeMap::new();
        // Where each service of the run was built.
        let mut built_on: BTreeMap<String, usize> = BTreeMap::new();
        let mut running: JoinSet<Done> = JoinSet::new();
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
                    let result = ServiceResult::skipped(
                        service,
                        format!("not built: `{dep}`, which it depends on, was not built"),
                    );
                    self.on_event.emit(&BuildEvent::Finished(result.clone()));
                    done.insert(name, result);
                    pending.remove(i);
                    continue;
                }
                let no_builder = !slots.iter().any(|s| s.alive);
                if stop || self.cancel.is_cancelled() || no_builder {
                    let why = if self.cancel.is_cancelled() {
                        "not built: interrupted"
                    } else if no_builder {
                        "not built: every builder stopped answering"
                    } else {
                        "not built: --fail-fast stopped the run"
                    };
                    let result = ServiceResult::skipped(service, why.into());
                    self.on_event.emit(&BuildEvent::Finished(result.clone()));
                    done.insert(name, result);
                    pending.remove(i);
                    continue;
                }
                let ready = service.depends_on.iter().all(|d| done.contains_key(d));
                // The images of this run it needs: those of the services it depends on.
                let needs: Vec<&str> = service
                    .depends_on
                    .iter()
                    .filter(|d| built_on.contains_key(*d))
                    .map(|d| set.services[d].image.as_str())
                    .collect();
                let platform: Option<Platform> =
                    service.platform.as_deref().and_then(|p| p.parse().ok());
                let builder = if ready {
                    self.pick(&slots, jobs, &needs, platform.as_ref())
                } else {
                    None
                };
                if let Some(b) = builder {
                    pending.remove(i);
                    slots[b].running += 1;
                    let engine = Arc::clone(&self.builders[b].1);
                    let bring: Vec<(String, Option<String>, Arc<E>)> = service
                        .depends_on
                        .iter()
                        .filter_map(|d| built_on.get(d).map(|&from| (d, from)))
                        .filter(|&(d, from)| {
                            from != b && !slots[b].holds.contains(&set.services[d].image)
                        })
                        .map(|(d, from)| {
                            let (name, engine) = &self.builders[from];
                            (
                                set.services[d].image.clone(),
                                name.clone(),
                                Arc::clone(engine),
                            )
                        })
                        .collect();
                    for (image, _, _) in &bring {
                        slots[b].holds.insert(image.clone());
                    }
                    let several = self.builders.len() > 1;
                    let builder_name = self.builders[b].0.clone();
                    let task = build_one(
                        engine,
                        set.root.clone(),
                        service.clone(),
                        self.options.clone(),
                        self.on_event.clone(),
                        self.cancel.clone(),
                        bring,
                        several,
                    );
                    running.spawn(async move {
                        let (mut result, builder_lost) = task.await;
                        result.builder = builder_name;
                        Done {
                            result,
                            builder: b,
                            builder_lost,
                        }
                    });
                    continue;
                }
                i += 1;
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let finished = match joined {
                Ok(finished) => finished,
                // Tasks are never aborted: a join error is a panic, passed on as one.
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            let Done {
                result,
                builder,
                builder_lost,
            } = finished;
            slots[builder].running -= 1;
            if builder_lost {
                slots[builder].alive = false;
                let name = self.builders[builder].0.as_deref().unwrap_or("the daemon");
                tracing::warn!(
                    "builder {name} stopped answering while building `{}`: its services \
                     are built on the other builders",
                    result.name
                );
                if slots.iter().any(|s| s.alive) {
                    pending.insert(0, result.name.clone());
                    // An image built there that a service still to build needs is
                    // gone with it, unless a live builder holds a copy: built again.
                    let lost: Vec<String> = built_on
                        .iter()
                        .filter(|&(_, &on)| on == builder)
                        .map(|(name, _)| name.clone())
                        .filter(|name| {
                            let image = &set.services[name].image;
                            let copied = slots.iter().any(|s| s.alive && s.holds.contains(image));
                            // (One already building had it copied before it started.)
                            let needed = pending
                                .iter()
                                .any(|p| set.services[p].depends_on.contains(name));
                            needed && !copied
                        })
                        .collect();
                    for name in lost {
                        tracing::warn!("`{name}` is built again: its image was on that builder");
                        built_on.remove(&name);
                        done.remove(&name);
                        pending.insert(0, name);
                    }
                    continue;
                }
            }
            if result.status == ServiceStatus::Failed && self.options.fail_fast {
                stop = true;
            }
            if result.status == ServiceStatus::Built {
                slots[builder]
                    .holds
                    .insert(set.services[&result.name].image.clone());
                built_on.insert(result.name.clone(), builder);
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::path::PathBuf;
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::engine::{BuildDirs, BuildError, BuildSpec, ContextStream, EngineError, LogSink};
    use crate::parse::dockerfile::NamedContext;
    use crate::plan::Service;
    use crate::plan::ServiceOrigin;

    /// Each service fails with the queued failures, then builds.
    #[derive(Default)]
    struct Fake {
        script: Mutex<BTreeMap<String, VecDeque<BuildError>>>,
        log: Mutex<Vec<String>>,
        running: Mutex<(usize, usize)>,
        existing: BTreeSet<String>,
        /// Builds from directories (BuildKit's API); else why not.
        api: Option<Result<(), String>>,
        /// What each build from directories was given, by service.
        dirs: Mutex<BTreeMap<String, (BuildSpec, BuildDirs)>>,
        /// Builds this many services, then stops answering (fails every build).
        dies_after: Option<usize>,
        /// Images copied out of it.
        sent: Mutex<Vec<String>>,
        /// The platforms it builds natively.
        native: Vec<Platform>,
    }

    impl Fake {
        fn dead(&self) -> bool {
            self.dies_after
                .is_some_and(|n| self.log.lock().unwrap().len() >= 2 * n)
        }
    }

    impl BuildEngine for Fake {
        async fn image_exists(&self, image: &str) -> Result<bool, EngineError> {
            Ok(self.existing.contains(image))
        }

        async fn alive(&self) -> bool {
            !self.dead()
        }

        async fn native_platforms(&self) -> Vec<Platform> {
            self.native.clone()
        }

        async fn transfer(&self, image: &str, _: &Self) -> Result<(), EngineError> {
            self.sent.lock().unwrap().push(image.to_owned());
            Ok(())
        }

        async fn builds_dirs(&self, _: bool) -> Result<(), String> {
            self.api.clone().unwrap_or_else(|| Err("a tar only".into()))
        }

        async fn build_dirs(
            &self,
            spec: BuildSpec,
            dirs: BuildDirs,
            _log: LogSink,
        ) -> Result<(), BuildError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("api {}", spec.service));
            self.dirs
                .lock()
                .unwrap()
                .insert(spec.service.clone(), (spec, dirs));
            Ok(())
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
            if self.dead() {
                return Err(BuildError::new("error reading from server: EOF"));
            }
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

    #[tokio::test]
    async fn builds_take_buildkits_api_with_their_directories_or_say_why_not() {
        let root = tempfile::tempdir().unwrap();
        for (path, text) in [
            ("app/Dockerfile", "FROM base\nCOPY --from=assets / /a\n"),
            ("app/Dockerfile.dockerignore", "secret\n"),
            ("assets/logo", "logo"),
            ("plain/Dockerfile", "FROM scratch\n"),
        ] {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let mut app = Service::new("app", "acme/app:1", "app", "app/Dockerfile");
        app.named_contexts = BTreeMap::from([
            (
                "base".to_owned(),
                NamedContext::Image("acme/base:1".to_owned()),
            ),
            ("assets".to_owned(), NamedContext::Local),
            ("docs".to_owned(), NamedContext::Local),
        ]);
        app.context_sources = BTreeMap::from([
            ("assets".to_owned(), "assets".to_owned()),
            (
                "docs".to_owned(),
                "https://github.com/acme/docs.git#main".to_owned(),
            ),
        ]);
        let plain = Service::new("plain", "acme/plain:1", "plain", "plain/Dockerfile");
        let set = ServiceSet {
            root: root.path().to_path_buf(),
            services: [app.clone(), plain.clone()]
                .into_iter()
                .map(|s| (s.name.clone(), s))
                .collect(),
            origin: ServiceOrigin::Directories,
        };

        let builder = Builder::new(
            Fake {
                api: Some(Ok(())),
                ..Fake::default()
            },
            options(1),
        );
        let report = builder.run(&set).await.unwrap();
        assert_eq!(report.summary.built, 2, "{report:?}");
        let dirs = builder.builders[0].1.dirs.lock().unwrap().clone();
        let (_, app_dirs) = &dirs["app"];
        assert_eq!(app_dirs.context, root.path().join("app"));
        assert_eq!(
            app_dirs.dockerfile,
            "FROM acme/base:1\nCOPY --from=assets / /a\n"
        );
        assert_eq!(app_dirs.dockerignore.as_deref(), Some("secret\n"));
        assert_eq!(
            app_dirs.named,
            BTreeMap::from([("assets".to_owned(), root.path().join("assets"))])
        );
        assert_eq!(
            app_dirs.remote,
            BTreeMap::from([(
                "docs".to_owned(),
                "https://github.com/acme/docs.git#main".to_owned()
            )])
        );
        assert_eq!(dirs["plain"].1.dockerfile, "FROM scratch\n");

        // A network of the daemon's own goes through `/build`.
        let builder = Builder::new(
            Fake {
                api: Some(Ok(())),
                ..Fake::default()
            },
            BuildOptions {
                network: Some("ci-net".into()),
                ..options(1)
            },
        );
        let only_plain = ServiceSet {
            services: BTreeMap::from([("plain".to_owned(), plain.clone())]),
            ..set.clone()
        };
        let report = builder.run(&only_plain).await.unwrap();
        assert_eq!(report.summary.built, 1);
        assert_eq!(
            *builder.builders[0].1.log.lock().unwrap(),
            ["start plain", "end plain"]
        );

        // No API: the plain service builds from a tar, the one with directories fails once.
        let builder = Builder::new(
            Fake {
                api: Some(Err(
                    "Docker 20.10.24's built-in Dockerfile frontend takes no \
                               named contexts"
                        .into(),
                )),
                ..Fake::default()
            },
            options(1),
        );
        let report = builder.run(&set).await.unwrap();
        assert_eq!(status(&report, "plain"), (ServiceStatus::Built, 1));
        assert_eq!(status(&report, "app"), (ServiceStatus::Failed, 1));
        let error = report.services[0].error.as_deref().unwrap();
        assert_eq!(
            error,
            "service `app`: additional contexts `assets`, `docs` are directories or URLs, \
             which need BuildKit's own API: Docker 20.10.24's built-in Dockerfile frontend \
             takes no named contexts"
        );
    }

    #[tokio::test]
    async fn services_spread_over_builders_and_leave_one_that_dies() {
        let services = set(&[
            ("a", &[]),
            ("b", &[]),
            ("c", &[]),
            ("d", &[]),
            ("e", &["a"]),
            ("f", &[]),
        ]);
        let builders = |dies_after: Option<usize>| {
            vec![
                ("one".to_owned(), Arc::new(Fake::default())),
                (
                    "two".to_owned(),
                    Arc::new(Fake {
                        dies_after,
                        ..Fake::default()
                    }),
                ),
            ]
        };
        let builder = Builder::on_builders(builders(None), options(1));
        let report = builder.run(&services).await.unwrap();
        assert_eq!(report.summary.built, 6, "{report:?}");
        let on = |b: usize| {
            let log = builder.builders[b].1.log.lock().unwrap().clone();
            log.iter().filter(|l| l.starts_with("start")).count()
        };
        assert!(on(0) >= 2 && on(1) >= 2, "{} / {}", on(0), on(1));
        assert_eq!(on(0) + on(1), 6);
        let where_built = |name: &str| {
            report
                .services
                .iter()
                .find(|r| r.name == name)
                .and_then(|r| r.builder.clone())
                .unwrap()
        };
        // `e` needs `a`'s image: built where `a` was, or given it.
        let sent: Vec<String> = builder
            .builders
            .iter()
            .flat_map(|(_, f)| f.sent.lock().unwrap().clone())
            .collect();
        assert!(
            where_built("e") == where_built("a") || sent == ["img-a"],
            "{sent:?}"
        );

        // `two` answers once, then stops: its next service is built on `one`.
        let builder = Builder::on_builders(builders(Some(1)), options(1));
        let report = builder.run(&services).await.unwrap();
        assert_eq!(report.summary.built, 6, "{report:?}");
        assert_eq!(report.summary.failed, 0);
        let two = report
            .services
            .iter()
            .filter(|r| r.builder.as_deref() == Some("two"))
            .count();
        assert_eq!(two, 1, "{report:?}");
    }

    #[tokio::test]
    async fn an_image_lost_with_its_builder_is_built_again_for_what_needs_it() {
        let services = set(&[("a", &[]), ("e", &["a"]), ("x", &[])]);
        let builder = Builder::on_builders(
            vec![
                (
                    "two".to_owned(),
                    Arc::new(Fake {
                        dies_after: Some(1),
                        ..Fake::default()
                    }),
                ),
                ("one".to_owned(), Arc::new(Fake::default())),
            ],
            options(1),
        );
        let report = builder.run(&services).await.unwrap();
        assert_eq!(report.summary.built, 3, "{report:?}");
        let on = |name: &str| {
            let r = report.services.iter().find(|r| r.name == name).unwrap();
            r.builder.clone().unwrap()
        };
        // `a` was built on `two`, which then died with its image: built again on `one`.
        assert_eq!((on("a").as_str(), on("e").as_str()), ("one", "one"));
        let two = builder.builders[0].1.log.lock().unwrap().clone();
        assert!(two.contains(&"end a".to_owned()), "{two:?}");
    }

    #[tokio::test]
    async fn a_service_goes_to_a_builder_that_runs_its_platform_natively() {
        let mut services = set(&[("arm1", &[]), ("arm2", &[]), ("any1", &[]), ("any2", &[])]);
        for name in ["arm1", "arm2"] {
            services.services.get_mut(name).unwrap().platform = Some("linux/arm64".into());
        }
        let fake = |platform: &str| Fake {
            native: vec![platform.parse().unwrap()],
            ..Fake::default()
        };
        let builder = Builder::on_builders(
            vec![
                ("amd".to_owned(), Arc::new(fake("linux/amd64"))),
                ("arm".to_owned(), Arc::new(fake("linux/arm64/v8"))),
            ],
            options(1),
        );
        let report = builder.run(&services).await.unwrap();
        assert_eq!(report.summary.built, 4);
        for r in &report.services {
            if r.name.starts_with("arm") {
                assert_eq!(r.builder.as_deref(), Some("arm"), "{report:?}");
            }
        }
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
        let log = builder.builders[0].1.log.lock().unwrap().clone();
        let at = |s: &str| log.iter().position(|l| l == s).unwrap();
        assert!(at("end base") < at("start app"), "{log:?}");
        assert_eq!(
            builder.builders[0].1.running.lock().unwrap().1,
            2,
            "two at a time"
        );
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
