//! `drbuild.yaml`: the services to build and how to pull and build them.
//!
//! ```yaml
//! jobs: 2                      # services built at once
//! pull-jobs: 4                 # images pulled at once
//! network: none                # default build network of services that set none
//! mirrors:                     # tried in order when an image's own registry fails
//!   - mirror.example.com       # for Docker Hub images
//!   - ghcr.io=harbor.example.com/ghcr
//! retry:                       # pulls and builds
//!   attempts: 5                # the first included
//!   delay: 1s
//!   max-delay: 30s
//!   deadline: 20m              # a hard bound on a whole prefetch (none by default)
//! stall-timeout: 30s           # a pull with no progress this long is retried
//! via: auto                    # registry | daemon | auto: who fetches images
//! fallback: ordered            # ordered | never: try the next source when one fails
//! cache-dir: .drbuild-cache    # the blob cache (default $XDG_CACHE_HOME/drbuild)
//! multipart:                   # big blobs as ranged parts over several connections at once
//!   threshold: 16MiB           # blobs at least this big, when one connection is slow (0: none)
//!   parts: 16                  # parts of one blob at once (1: one stream)
//! connections: 24              # requests on the wire to one registry or mirror at once
//! hosts:                       # daemons to prefetch into, import into, check (default DOCKER_HOST)
//!   - unix:///var/run/docker.sock
//!   - tcp://runner-2:2376      # TLS from DOCKER_CERT_PATH when DOCKER_TLS_VERIFY is set
//! builders:                    # daemons build-all spreads services over, `jobs` each
//!   - unix:///var/run/docker.sock
//!   - tcp://builder-2:2375
//! services:
//!   backend:
//!     context: src/backend     # relative to the file's directory
//!     dockerfile: Dockerfile   # relative to the context (default `Dockerfile`)
//!     image: ai-infra-backend:v0.3.6-dev
//!     args: { GO_VERSION: "1.21" }
//!     target: runtime
//!     platform: linux/amd64
//!     network: host
//!     depends-on: [postgres-init]
//!     contexts:                # named contexts: FROM / COPY --from=NAME
//!       assets: ./assets         # a directory, relative to this file
//!       base: target:base-image  # another service's image (built first)
//!       tools: docker-image://alpine/git:2.43.0
//!     cache-from: [type=registry,ref=lan:5000/cache/backend]
//!     cache-to: [type=registry,ref=lan:5000/cache/backend,mode=max]
//! cache: type=registry,ref=lan:5000/cache/{service},mode=max   # services that name none
//! ```
//!
//! Keys are kebab-case; an unknown key is a warning with `path:line`, not an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::resilience::mirror::MirrorSet;
use crate::vocab::{InputError, Located};

/// The file name looked for at the root of a tree.
pub const CONFIG_FILE: &str = "drbuild.yaml";

/// How big blobs are fetched, as a user writes it (`multipart:` in drbuild.yaml);
/// `None` is "not given".
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MultipartSettings {
    /// Blobs at least this big are fetched in parts when one connection brings them
    /// slowly (`16MiB`; `0`: none).
    pub threshold: Option<bytesize::ByteSize>,
    /// Parts of one blob at once (`1`: one stream).
    pub parts: Option<usize>,
}

/// How to retry, as a user writes it (`retry:` in drbuild.yaml, or flags): every
/// field optional, `None` meaning "not given", so that layers can be merged.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RetrySettings {
    /// Attempts per pull or build, the first included.
    pub attempts: Option<u32>,
    /// First delay (`1s`, `500ms`).
    #[serde(default, with = "humantime_serde_opt")]
    pub delay: Option<Duration>,
    /// Longest delay.
    #[serde(default, with = "humantime_serde_opt")]
    pub max_delay: Option<Duration>,
    /// A hard bound on a whole prefetch.
    #[serde(default, with = "humantime_serde_opt")]
    pub deadline: Option<Duration>,
    #[serde(flatten)]
    unknown: BTreeMap<String, IgnoredAny>,
}

/// One service of `drbuild.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServiceConfig {
    /// Build context, relative to the file's directory (default: the service's name).
    pub context: Option<PathBuf>,
    /// Dockerfile, relative to the context (default `Dockerfile`).
    pub dockerfile: Option<PathBuf>,
    /// The image to tag (default `drbuild-NAME`).
    pub image: Option<String>,
    /// Build args.
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    /// Stage to build.
    pub target: Option<String>,
    /// Platform to build for (`linux/amd64`).
    pub platform: Option<String>,
    /// Network for `RUN` steps.
    pub network: Option<String>,
    /// Services to build first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Build secrets, as `--secret` takes them (`id=npm,src=.npmrc`, `id=tok,env=TOK`);
    /// files relative to the file's directory.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Named build contexts, by name: a directory (relative to the file's directory),
    /// `docker-image://REF`, `target:SERVICE` (another service's image, built first),
    /// or a URL (a git repository, an `https://` file).
    #[serde(default)]
    pub contexts: BTreeMap<String, String>,
    /// Build caches to import (`type=registry,ref=…`); the file's `cache:` when not given.
    #[serde(default)]
    pub cache_from: Option<Vec<String>>,
    /// Build caches to export (`type=registry,ref=…,mode=max`); the file's `cache:`
    /// when not given.
    #[serde(default)]
    pub cache_to: Option<Vec<String>>,
    #[serde(flatten)]
    unknown: BTreeMap<String, IgnoredAny>,
}

/// How images are pulled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// Registry-native where drbuild reaches the image's registry or a mirror, else
    /// through the daemon.
    #[default]
    Auto,
    /// drbuild fetches from the registry (or a mirror) and loads into the daemon.
    Registry,
    /// The daemon pulls (`docker pull`).
    Daemon,
}

impl std::str::FromStr for Via {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Via::Auto),
            "registry" => Ok(Via::Registry),
            "daemon" => Ok(Via::Daemon),
            other => Err(format!("`{other}`: expected registry, daemon or auto")),
        }
    }
}

/// What happens when an image's first source fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fallback {
    /// The next source is tried (the daemon's mirrors, drbuild's, then the registry),
    /// as the daemon does.
    #[default]
    Ordered,
    /// Only the first source is ever used.
    Never,
}

impl std::str::FromStr for Fallback {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ordered" => Ok(Fallback::Ordered),
            "never" => Ok(Fallback::Never),
            other => Err(format!("`{other}`: expected ordered or never")),
        }
    }
}

/// The contents of `drbuild.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    /// Services built at once.
    pub jobs: Option<usize>,
    /// Images pulled at once.
    pub pull_jobs: Option<usize>,
    /// Build network of services that set none.
    pub network: Option<String>,
    /// Mirrors: `HOST[:PORT][/PREFIX]` for Docker Hub, `REGISTRY=HOST[/PREFIX]` for others.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Retry settings of pulls and builds.
    #[serde(default)]
    pub retry: RetrySettings,
    /// A pull with no progress for this long is cancelled and retried.
    #[serde(default, with = "humantime_serde_opt")]
    pub stall_timeout: Option<Duration>,
    /// Which path pulls: `registry`, `daemon` or `auto`.
    #[serde(default)]
    pub via: Option<Via>,
    /// `ordered` (fall back to the next source) or `never`.
    #[serde(default)]
    pub fallback: Option<Fallback>,
    /// The blob cache of registry-native pulls (relative to the file's directory).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// The daemons `prefetch`, `import` and `doctor` work on (`unix:///…`, `tcp://…`).
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// The daemons `build-all` spreads services over, `jobs` each (`unix:///…`,
    /// `tcp://…`).
    #[serde(default)]
    pub builders: Option<Vec<String>>,
    /// How big blobs are fetched (in ranged parts at once).
    #[serde(default)]
    pub multipart: MultipartSettings,
    /// Requests on the wire to one registry or mirror at once.
    #[serde(default)]
    pub connections: Option<usize>,
    /// The build cache of every service that names none: a BuildKit cache spec with
    /// `{service}` for the service's name (`type=registry,ref=lan:5000/cache/{service},mode=max`),
    /// exported after each build and imported before it.
    #[serde(default)]
    pub cache: Option<String>,
    /// Services by name, in file order.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceConfig>,
    #[serde(flatten)]
    unknown: BTreeMap<String, IgnoredAny>,
}

/// A loaded `drbuild.yaml`.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// Where it was read.
    pub path: PathBuf,
    /// What it says.
    pub config: Config,
    /// Unknown keys, with their lines.
    pub warnings: Vec<Located<String>>,
    text: String,
}

impl ConfigFile {
    /// Reads `ROOT/drbuild.yaml` if there is one.
    pub fn find(root: &Path) -> Result<Option<ConfigFile>, InputError> {
        let path = root.join(CONFIG_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        Self::load(&path).map(Some)
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<ConfigFile, InputError> {
        let text = std::fs::read_to_string(path).map_err(|source| InputError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses the text of a config file read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, InputError> {
        let mut config: Config = crate::parse::yaml(path, text, "drbuild.yaml")?;
        if let (Some(dir), Some(cache)) = (path.parent(), config.cache_dir.as_mut()) {
            if cache.is_relative() {
                *cache = dir.join(&*cache);
            }
        }
        let mut unknown: Vec<(String, String)> = Vec::new();
        let mut note = |keys: &BTreeMap<String, IgnoredAny>, within: &str| {
            for key in keys.keys() {
                unknown.push((key.clone(), within.to_owned()));
            }
        };
        note(&config.unknown, "");
        note(&config.retry.unknown, "retry");
        for (name, service) in &config.services {
            note(&service.unknown, &format!("services.{name}"));
        }
        let warnings = unknown
            .into_iter()
            .map(|(key, within)| {
                let place = if within.is_empty() {
                    "at the top level".to_owned()
                } else {
                    format!("in `{within}`")
                };
                Located {
                    value: format!("unknown key `{key}` {place} (ignored)"),
                    path: path.to_path_buf(),
                    line: key_line(text, &key),
                }
            })
            .collect();
        let invalid = |key: &str, message: String| InputError::Invalid {
            path: path.to_path_buf(),
            line: key_line(text, key),
            message,
        };
        for (key, value) in [("jobs", config.jobs), ("pull-jobs", config.pull_jobs)] {
            if value == Some(0) {
                return Err(invalid(key, format!("`{key}` must be at least 1, not 0")));
            }
        }
        if config.retry.attempts == Some(0) {
            return Err(invalid(
                "attempts",
                "`retry.attempts` must be at least 1, not 0".into(),
            ));
        }
        for spec in &config.mirrors {
            MirrorSet::default()
                .add_spec(spec)
                .map_err(|e| invalid(spec, format!("`mirrors`: {e}")))?;
        }
        for (name, service) in &config.services {
            for dep in &service.depends_on {
                if !config.services.contains_key(dep) {
                    return Err(InputError::Invalid {
                        path: path.to_path_buf(),
                        line: key_line(text, dep),
                        message: format!("service `{name}` depends on `{dep}`, which is not a service of this file"),
                    });
                }
            }
        }
        Ok(ConfigFile {
            path: path.to_path_buf(),
            config,
            warnings,
            text: text.to_owned(),
        })
    }

    /// The line where `key` first appears as a key (0 when it does not).
    pub fn line_of(&self, key: &str) -> usize {
        key_line(&self.text, key)
    }
}

/// The first line where `key` appears as a mapping key or list item (best effort).
fn key_line(text: &str, key: &str) -> usize {
    let as_key = text.lines().position(|l| {
        let t = l.trim_start().trim_start_matches("- ");
        t.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
    });
    let as_word = || {
        text.lines().position(|l| {
            l.split(|c: char| !(c.is_ascii_alphanumeric() || "_.-".contains(c)))
                .any(|w| w == key)
        })
    };
    as_key.or_else(as_word).map_or(0, |i| i + 1)
}

mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file_with_unknown_keys() {
        let text = "jobs: 3\nmirors: [x]\nmirrors: [m.example.com, ghcr.io=h.example.com/ghcr]\nretry:\n  attempts: 4\n  delay: 500ms\n  max-delay: 5s\n  backof: 2\nservices:\n  api:\n    context: src/api\n    args: {V: \"1\"}\n    depends-on: [db]\n    dockerfil: X\n  db:\n    image: acme/db:1\n";
        let file = ConfigFile::parse(Path::new("drbuild.yaml"), text).unwrap();
        let c = &file.config;
        assert_eq!(c.jobs, Some(3));
        assert_eq!(c.mirrors.len(), 2);
        assert_eq!(c.retry.attempts, Some(4));
        assert_eq!(c.retry.delay, Some(Duration::from_millis(500)));
        assert_eq!(c.retry.max_delay, Some(Duration::from_secs(5)));
        assert_eq!(c.services["api"].depends_on, ["db"]);
        assert_eq!(c.services["api"].args["V"], "1");
        let warnings: Vec<(usize, &str)> = file
            .warnings
            .iter()
            .map(|w| (w.line, w.value.as_str()))
            .collect();
        assert_eq!(
            warnings,
            [
                (2, "unknown key `mirors` at the top level (ignored)"),
                (8, "unknown key `backof` in `retry` (ignored)"),
                (14, "unknown key `dockerfil` in `services.api` (ignored)"),
            ]
        );
    }

    #[test]
    fn unknown_dependency_and_bad_yaml_are_errors_with_lines() {
        let e = ConfigFile::parse(
            Path::new("d.yaml"),
            "services:\n  a:\n    depends-on: [ghost]\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "d.yaml:3: service `a` depends on `ghost`, which is not a service of this file"
        );
        let e = ConfigFile::parse(Path::new("d.yaml"), "services:\n  a: [\n").unwrap_err();
        assert!(e.to_string().starts_with("d.yaml:"), "{e}");
    }
}
