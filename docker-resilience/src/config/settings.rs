//! The one resolution of settings: flags (or a [`DockerBuild`](crate::DockerBuild)'s
//! setters) over `drbuild.yaml` over defaults, field by field. `drbuild` and the
//! runner both call [`Settings::resolve`], so one file behaves the same from either.

use std::path::PathBuf;
use std::time::Duration;

use super::file::Config;
pub use super::file::{Fallback, Via};
use crate::resilience::mirror::{MirrorError, MirrorSet};
use crate::resilience::multipart::{Multipart, DEFAULT_CONNECTIONS};
use crate::resilience::retry::RetryPolicy;

/// What the caller asks for, over the file: flags of `drbuild`, setters of
/// `DockerBuild`. Every field is optional: `None` means "not given", and then the
/// file's value, else the default, applies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// Services built at once (`--jobs` of the build commands).
    pub build_jobs: Option<usize>,
    /// Images pulled at once (`prefetch --jobs`, `--pull-jobs`).
    pub pull_jobs: Option<usize>,
    /// Network of every build's `RUN` steps, over each service's own (`--network`).
    pub network: Option<String>,
    /// Attempts per image, the first included (`--retries N` is N+1).
    pub pull_attempts: Option<u32>,
    /// Attempts per build, the first included (`--build-retries N` is N+1).
    pub build_attempts: Option<u32>,
    /// First delay between attempts of pulls and builds.
    pub retry_delay: Option<Duration>,
    /// Longest delay between attempts.
    pub retry_max_delay: Option<Duration>,
    /// A hard bound on a whole prefetch (`--deadline`).
    pub deadline: Option<Duration>,
    /// Cancel and retry a pull with no progress for this long.
    pub stall_timeout: Option<Duration>,
    /// Mirror specs, tried before the file's (`--mirror`).
    pub mirrors: Vec<String>,
    /// Which path pulls (`--via`).
    pub via: Option<Via>,
    /// Whether a failing source falls back to the next (`--fallback`).
    pub fallback: Option<Fallback>,
    /// The blob cache (`--cache-dir`).
    pub cache_dir: Option<PathBuf>,
    /// Send credentials from docker's config (`--no-credentials` is `Some(false)`).
    pub credentials: Option<bool>,
    /// The daemons to work on (`--docker-host`, repeatable).
    pub hosts: Option<Vec<String>>,
    /// The daemons builds are spread over (`--builder`, repeatable).
    pub builders: Option<Vec<String>>,
    /// Ranged parts of one big blob at once (`--parts`).
    pub parts: Option<usize>,
    /// Blobs at least this big are fetched in parts when one connection brings them
    /// slowly (`--part-threshold`).
    pub part_threshold: Option<u64>,
    /// Requests on the wire to one source at once (`--connections`).
    pub connections: Option<usize>,
}

/// A flag's value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
#[non_exhaustive]
pub struct SettingsError {
    /// The setting (`--mirror`, `--jobs`).
    pub setting: String,
    /// What is wrong.
    pub message: String,
}

/// Settings resolved once for a run: what prefetch and build use.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Services built at once.
    pub build_jobs: usize,
    /// Images pulled at once (through the daemon; and registry-native when given).
    pub pull_jobs: usize,
    /// Images fetched at once on the registry-native path: `pull_jobs` when given
    /// (flag or file), else the connection budget, which bounds the run's requests to
    /// each source anyway (on a link with 100 ms per request, an image's chain of
    /// requests is its fetch time: more images at once hide it).
    pub registry_pull_jobs: usize,
    /// Network of every build's `RUN` steps, over the services' own (a flag).
    pub network_override: Option<String>,
    /// Network of the builds whose service sets none (`network` in drbuild.yaml).
    pub network_default: Option<String>,
    /// How pulls are retried.
    pub pull_retry: RetryPolicy,
    /// How builds are retried.
    pub build_retry: RetryPolicy,
    /// A pull with no progress for this long is cancelled and retried.
    pub stall_timeout: Duration,
    /// Mirrors to fall back to: the overrides' first, then the file's.
    pub mirrors: MirrorSet,
    /// Which path pulls.
    pub via: Via,
    /// Whether a failing source falls back to the next.
    pub fallback: Fallback,
    /// The blob cache (`None`: the XDG cache directory).
    pub cache_dir: Option<PathBuf>,
    /// A hard bound on a whole prefetch (`None`: none beyond each image's budget).
    pub deadline: Option<Duration>,
    /// Send credentials from docker's config to registries.
    pub credentials: bool,
    /// The daemons `prefetch`, `import` and `doctor` work on (empty: `DOCKER_HOST`'s).
    pub hosts: Vec<String>,
    /// The daemons `build-all` spreads services over (empty: `DOCKER_HOST`'s alone).
    pub builders: Vec<String>,
    /// How big blobs are fetched.
    pub multipart: Multipart,
    /// Requests on the wire to one registry or mirror at once.
    pub connections: usize,
}

impl Default for Settings {
    /// The defaults: 2 builds and 4 pulls at once; 10 attempts per image (sized from
    /// measurement, see [`RetryPolicy`]) and 3 per build; a 30 s stall timeout.
    fn default() -> Self {
        Settings {
            build_jobs: 2,
            pull_jobs: 4,
            registry_pull_jobs: DEFAULT_CONNECTIONS,
            network_override: None,
            network_default: None,
            pull_retry: RetryPolicy::default(),
            build_retry: RetryPolicy {
                max_attempts: 3,
                ..RetryPolicy::default()
            },
            stall_timeout: Duration::from_secs(30),
            mirrors: MirrorSet::default(),
            via: Via::Auto,
            fallback: Fallback::Ordered,
            cache_dir: None,
            deadline: None,
            credentials: true,
            hosts: Vec::new(),
            builders: Vec::new(),
            multipart: Multipart::default(),
            connections: DEFAULT_CONNECTIONS,
        }
    }
}

impl Settings {
    /// Resolves each setting: the override when given, else the file's, else the
    /// default's. Mirror lists add up (overrides first). Fails only on an override's
    /// value (the file was checked when it was read).
    pub fn resolve(
        overrides: &Overrides,
        file: Option<&Config>,
        defaults: Settings,
    ) -> Result<Settings, SettingsError> {
        let empty = Config::default();
        let file = file.unwrap_or(&empty);
        let at_least_one = |setting: &str, value: Option<usize>| match value {
            Some(0) => Err(SettingsError {
                setting: setting.to_owned(),
                message: "must be at least 1".into(),
            }),
            other => Ok(other),
        };
        let build_jobs = at_least_one("--jobs", overrides.build_jobs)?;
        let pull_jobs = at_least_one("--pull-jobs", overrides.pull_jobs)?;
        let parts = at_least_one("--parts", overrides.parts)?;
        let connections = at_least_one("--connections", overrides.connections)?;

        // The file's retry section applies to pulls and builds; a flag to its own.
        let shared = Timing {
            delay: overrides.retry_delay.or(file.retry.delay),
            max_delay: overrides.retry_max_delay.or(file.retry.max_delay),
        };
        let pull_retry = apply(
            defaults.pull_retry,
            overrides.pull_attempts.or(file.retry.attempts),
            &shared,
        );
        let build_retry = apply(
            defaults.build_retry,
            overrides.build_attempts.or(file.retry.attempts),
            &shared,
        );

        let mut mirrors = defaults.mirrors;
        for spec in &overrides.mirrors {
            mirrors
                .add_spec(spec)
                .map_err(|e: MirrorError| SettingsError {
                    setting: "--mirror".into(),
                    message: e.to_string(),
                })?;
        }
        for spec in &file.mirrors {
            // Checked when the file was read; a bad one cannot reach here.
            let _ = mirrors.add_spec(spec);
        }

        Ok(Settings {
            build_jobs: build_jobs.or(file.jobs).unwrap_or(defaults.build_jobs),
            pull_jobs: pull_jobs.or(file.pull_jobs).unwrap_or(defaults.pull_jobs),
            registry_pull_jobs: pull_jobs
                .or(file.pull_jobs)
                .or(connections)
                .or(file.connections)
                .unwrap_or(defaults.registry_pull_jobs)
                .max(1),
            network_override: overrides.network.clone().or(defaults.network_override),
            network_default: file.network.clone().or(defaults.network_default),
            pull_retry,
            build_retry,
            stall_timeout: overrides
                .stall_timeout
                .or(file.stall_timeout)
                .unwrap_or(defaults.stall_timeout),
            mirrors,
            via: overrides.via.or(file.via).unwrap_or(defaults.via),
            fallback: overrides
                .fallback
                .or(file.fallback)
                .unwrap_or(defaults.fallback),
            cache_dir: overrides
                .cache_dir
                .clone()
                .or_else(|| file.cache_dir.clone())
                .or(defaults.cache_dir),
            deadline: overrides
                .deadline
                .or(file.retry.deadline)
                .or(defaults.deadline),
            credentials: overrides.credentials.unwrap_or(defaults.credentials),
            hosts: overrides
                .hosts
                .clone()
                .or_else(|| file.hosts.clone())
                .unwrap_or(defaults.hosts),
            builders: overrides
                .builders
                .clone()
                .or_else(|| file.builders.clone())
                .unwrap_or(defaults.builders),
            multipart: Multipart {
                threshold: overrides
                    .part_threshold
                    .or(file.multipart.threshold.map(|s| s.as_u64()))
                    .unwrap_or(defaults.multipart.threshold),
                parts: parts
                    .or(file.multipart.parts)
                    .unwrap_or(defaults.multipart.parts)
                    .max(1),
            },
            connections: connections
                .or(file.connections)
                .unwrap_or(defaults.connections)
                .max(1),
        })
    }
}

/// The timing of retries, as resolved from the overrides and the file (shared by
/// pulls and builds).
struct Timing {
    delay: Option<Duration>,
    max_delay: Option<Duration>,
}

/// A policy with the given settings applied over it.
fn apply(mut policy: RetryPolicy, attempts: Option<u32>, s: &Timing) -> RetryPolicy {
    if let Some(attempts) = attempts {
        policy.max_attempts = attempts.max(1);
    }
    if let Some(delay) = s.delay {
        policy.min_delay = delay;
    }
    if let Some(delay) = s.max_delay {
        policy.max_delay = delay;
    }
    policy.max_delay = policy.max_delay.max(policy.min_delay);
    policy
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::ConfigFile;
    use crate::vocab::ImageReference;

    fn file(text: &str) -> Config {
        ConfigFile::parse(Path::new("drbuild.yaml"), text)
            .unwrap()
            .config
    }

    #[test]
    fn multipart_and_connections_resolve_field_by_field() {
        let f = file("multipart:\n  threshold: 32MiB\n  parts: 4\nconnections: 8\n");
        let from_file =
            Settings::resolve(&Overrides::default(), Some(&f), Settings::default()).unwrap();
        assert_eq!(from_file.multipart.threshold, 32 << 20);
        assert_eq!(from_file.multipart.parts, 4);
        assert_eq!(from_file.connections, 8);
        let flags = Overrides {
            parts: Some(1),
            connections: Some(2),
            ..Overrides::default()
        };
        let both = Settings::resolve(&flags, Some(&f), Settings::default()).unwrap();
        assert_eq!(both.multipart.parts, 1, "the flag");
        assert_eq!(both.multipart.threshold, 32 << 20, "the file");
        assert_eq!(both.connections, 2);
        let defaults = Settings::resolve(&Overrides::default(), None, Settings::default()).unwrap();
        assert_eq!(defaults.multipart, Multipart::default());
        assert_eq!(defaults.connections, DEFAULT_CONNECTIONS);
        assert_eq!(defaults.pull_jobs, 4);
        assert_eq!(
            defaults.registry_pull_jobs, DEFAULT_CONNECTIONS,
            "not given: the connection budget"
        );
        assert_eq!(from_file.registry_pull_jobs, 8, "the file's connections");
        let jobs = Overrides {
            pull_jobs: Some(3),
            ..Overrides::default()
        };
        let given = Settings::resolve(&jobs, Some(&f), Settings::default()).unwrap();
        assert_eq!((given.pull_jobs, given.registry_pull_jobs), (3, 3));
        let zero = Overrides {
            connections: Some(0),
            ..Overrides::default()
        };
        assert!(Settings::resolve(&zero, None, Settings::default()).is_err());
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let f = file("jobs: 3\nnetwork: none\nretry:\n  attempts: 4\n  delay: 200ms\nmirrors: [m.example.com]\n");
        let from_file =
            Settings::resolve(&Overrides::default(), Some(&f), Settings::default()).unwrap();
        assert_eq!(from_file.build_jobs, 3);
        assert_eq!(from_file.pull_jobs, 4, "not in the file: the default");
        assert_eq!(
            from_file.pull_retry.max_attempts, 4,
            "the file's retry is for pulls too"
        );
        assert_eq!(from_file.build_retry.max_attempts, 4);
        assert_eq!(from_file.pull_retry.min_delay, Duration::from_millis(200));
        assert_eq!(from_file.network_default.as_deref(), Some("none"));
        assert_eq!(from_file.network_override, None);

        let flags = Overrides {
            build_jobs: Some(5),
            build_attempts: Some(1),
            retry_delay: Some(Duration::from_millis(50)),
            network: Some("host".into()),
            mirrors: vec!["flag.example.com".into()],
            ..Overrides::default()
        };
        let s = Settings::resolve(&flags, Some(&f), Settings::default()).unwrap();
        assert_eq!(s.build_jobs, 5);
        assert_eq!(s.build_retry.max_attempts, 1);
        assert_eq!(
            s.pull_retry.max_attempts, 4,
            "--build-retries leaves pulls alone"
        );
        assert_eq!(s.pull_retry.min_delay, Duration::from_millis(50));
        assert_eq!(s.network_override.as_deref(), Some("host"));
        let hub = ImageReference::parse("redis").unwrap();
        let names: Vec<String> = s
            .mirrors
            .for_image(&hub)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["flag.example.com", "m.example.com"]);

        let defaults = Settings::resolve(&Overrides::default(), None, Settings::default()).unwrap();
        assert_eq!(defaults, Settings::default());
        assert_eq!(defaults.pull_retry.max_attempts, 10);
        assert_eq!(defaults.build_retry.max_attempts, 3);
    }

    #[test]
    fn bad_flags_are_named() {
        let e = Settings::resolve(
            &Overrides {
                mirrors: vec!["bad host".into()],
                ..Overrides::default()
            },
            None,
            Settings::default(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("--mirror: invalid mirror"), "{e}");
        let e = Settings::resolve(
            &Overrides {
                build_jobs: Some(0),
                ..Overrides::default()
            },
            None,
            Settings::default(),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "--jobs: must be at least 1");
    }
}
