//! Compose files as Compose reads them, for everything that decides which images a
//! project needs and builds.
//!
//! A project is its files (the base file, then its overrides, merged service by service
//! as `docker compose` merges them), each interpolated with the environment over the
//! project's `.env` (itself interpolated, in order; the environment wins), with
//! `include:` (other projects, their own directory and `.env`), `extends:` (in the same
//! file or another, whose paths stay relative to it) and `profiles:` resolved. A
//! service's build carries its context, its Dockerfile (or `dockerfile_inline`), args,
//! target, platforms and `additional_contexts`.
//!
//! Differential tests (`tests/tests/compose_oracle.rs`) hold this to `docker compose
//! config` itself on every fixture.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::parse::expand::{expand, ExpandError, Style};
use crate::vocab::{clean_path, InputError, Located, SecretSource, SecretSpec, SecretValue};

mod env;
mod raw;

use raw::{RawCompose, RawExtends, RawInclude, RawPort, RawService};

/// A service's `build:` section, with paths resolved relative to the tree's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeBuild {
    /// Build context directory.
    pub context: PathBuf,
    /// The Dockerfile (when `dockerfile_inline` is set, where it would be).
    pub dockerfile: PathBuf,
    /// `dockerfile_inline`: the Dockerfile's text, written in the compose file.
    pub dockerfile_inline: Option<String>,
    /// Build args; values already interpolated. Args with no value are left out.
    pub args: BTreeMap<String, String>,
    /// `target` stage.
    pub target: Option<String>,
    /// `network` for `RUN` steps.
    pub network: Option<String>,
    /// `platforms` to build for.
    pub platforms: Vec<String>,
    /// `cache_from`: build caches to import (`type=registry,ref=…`, or an image).
    pub cache_from: Vec<String>,
    /// `cache_to`: build caches to export.
    pub cache_to: Vec<String>,
    /// `additional_contexts`: names a Dockerfile may use (`FROM name`, `COPY
    /// --from=name`) and what they stand for.
    pub additional_contexts: BTreeMap<String, NamedContext>,
    /// `secrets`: what `RUN --mount=type=secret,id=…` may mount, from the top-level
    /// `secrets:` (files relative to the tree's root).
    pub secrets: Vec<SecretSpec>,
    /// Where `build:` is written.
    pub path: PathBuf,
    /// Its line.
    pub line: usize,
}

/// What an `additional_contexts` name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// `service:NAME`: the image another service of the project builds.
    Service(String),
    /// `docker-image://REF`: an image from a registry.
    Image(String),
    /// A directory (relative to the tree's root), or a URL: not an image.
    Other(String),
}

/// One `ports:` entry that publishes a host port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPort {
    /// Host IP, if the entry binds one.
    pub host_ip: Option<String>,
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Where it is written.
    pub path: PathBuf,
    /// Its line.
    pub line: usize,
}

/// A compose service, merged over the project's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeService {
    /// Service name.
    pub name: String,
    /// `image:`, interpolated.
    pub image: Option<Located<String>>,
    /// `build:`, when the service is built from source.
    pub build: Option<ComposeBuild>,
    /// `depends_on` service names.
    pub depends_on: Vec<String>,
    /// `profiles`.
    pub profiles: Vec<String>,
    /// `platform`.
    pub platform: Option<String>,
    /// Host ports the service publishes.
    pub ports: Vec<PublishedPort>,
}

/// A compose project: its files, merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeProject {
    /// The project name (`name:` or the directory's name).
    pub name: String,
    /// The directory, relative to the tree's root.
    pub dir: PathBuf,
    /// The files, base first.
    pub files: Vec<PathBuf>,
    /// Every file it read: its compose files, those it includes or extends, and the
    /// `.env`/`env_file`s that supplied variables (those that exist).
    pub inputs: Vec<PathBuf>,
    /// Services by name (those of included projects too).
    pub services: BTreeMap<String, ComposeService>,
    /// Values that could not be interpolated, and other things the plan should say,
    /// with where they are.
    pub warnings: Vec<Located<String>>,
    /// A variant: the base file with another of the directory's files
    /// (`compose.prod.yaml`), which `docker compose` reads only with `-f`. Its images
    /// are needed too; its services do not define the tree's builds. Loaded with
    /// [`ComposeOptions::optional`].
    pub variant: bool,
    /// Services left out because none of their profiles is active.
    pub inactive: BTreeSet<String>,
}

/// How a project is loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComposeOptions {
    /// Active profiles (`--profile`, `COMPOSE_PROFILES`); `None`: `COMPOSE_PROFILES`
    /// of the environment (`.env` included), as Compose reads it, else every profile.
    pub profiles: Option<Vec<String>>,
    /// The files are not what `docker compose` reads by default (a variant, read only
    /// with `-f`): a required variable with no value (`${X:?…}`) is a warning, and what
    /// names it is left out, instead of an error that ends the plan.
    pub optional: bool,
}

impl ComposeProject {
    /// Whether Compose takes these files as a project: every service has an image or a
    /// build, and depends only on services the project defines.
    pub fn stands_alone(&self) -> bool {
        self.services.values().all(|s| {
            (s.image.is_some() || s.build.is_some())
                && s.depends_on
                    .iter()
                    .all(|d| self.services.contains_key(d) || self.inactive.contains(d))
        })
    }

    /// The image a service's build produces: its `image:`, else `<project>-<service>`.
    pub fn built_image(&self, service: &ComposeService) -> Option<String> {
        service.build.as_ref()?;
        Some(match &service.image {
            Some(image) => image.value.clone(),
            None => format!("{}-{}", self.name, service.name),
        })
    }

    /// Loads and merges `files` (relative to `root`; the first one's directory is the
    /// project's). `env` supplies variables for interpolation, over the project's `.env`.
    pub fn load(
        root: &Path,
        files: &[PathBuf],
        env: &BTreeMap<String, String>,
    ) -> Result<Self, InputError> {
        let mut files = files.to_vec();
        files.sort_by_key(|f| file_rank(f));
        Self::load_with(root, &files, env, &ComposeOptions::default())
    }

    /// [`ComposeProject::load`] with options (profiles).
    pub fn load_with(
        root: &Path,
        files: &[PathBuf],
        env: &BTreeMap<String, String>,
        options: &ComposeOptions,
    ) -> Result<Self, InputError> {
        let dir = files
            .first()
            .and_then(|f| f.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let dotenv = dir.join(".env");
        let env = env::with_dotenv(env, env::read(&root.join(&dotenv), env));
        let mut loader = Loader {
            root,
            env: &env,
            warnings: Vec::new(),
            depth: 0,
            secrets: BTreeMap::new(),
            read: Vec::new(),
            unresolved: BTreeMap::new(),
            optional: options.optional,
        };
        loader.note_env_file(&dotenv);
        let (name, specs) = loader.project(files, &dir)?;
        let mut specs = loader.resolve_extends(specs)?;
        let mut inactive = BTreeSet::new();
        if let Some(active) = options.profiles.clone().or_else(|| profiles_from_env(&env)) {
            let all = active.iter().any(|p| p == "*");
            specs.retain(|name, s| {
                let keep =
                    all || s.profiles.is_empty() || s.profiles.iter().any(|p| active.contains(p));
                if !keep {
                    inactive.insert(name.clone());
                }
                keep
            });
        }
        let name = normalize_project_name(&name.unwrap_or_else(|| {
            let base = root.join(&dir);
            let base = base.canonicalize().unwrap_or(base);
            base.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "default".to_owned())
        }));
        let mut warnings = std::mem::take(&mut loader.warnings);
        // A secret that cannot be resolved is an error for the build that mounts it,
        // and a warning when none does.
        for (secret, error) in std::mem::take(&mut loader.unresolved) {
            let mounted = specs.values().any(|spec| {
                spec.build
                    .as_ref()
                    .is_some_and(|b| b.secrets.iter().any(|(name, _, _)| *name == secret))
            });
            if mounted {
                return Err(InputError::Invalid {
                    path: error.path,
                    line: error.line,
                    message: error.value,
                });
            }
            warnings.push(Located {
                value: format!(
                    "secret `{secret}`: {}; no build mounts it, so the plan goes on",
                    error.value
                ),
                path: error.path,
                line: error.line,
            });
        }
        let services = specs
            .into_iter()
            .map(|(n, spec)| {
                let service = spec.finish(&n, &loader.secrets, &mut warnings)?;
                Ok((n, service))
            })
            .collect::<Result<BTreeMap<_, _>, InputError>>()?;
        Ok(ComposeProject {
            name,
            dir,
            files: files.to_vec(),
            inputs: std::mem::take(&mut loader.read),
            services,
            warnings,
            variant: options.optional,
            inactive,
        })
    }
}

/// `COMPOSE_PROFILES`, when set and not empty.
pub fn profiles_from_env(env: &BTreeMap<String, String>) -> Option<Vec<String>> {
    let value = env.get("COMPOSE_PROFILES")?.trim();
    (!value.is_empty()).then(|| {
        value
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect()
    })
}

/// The files of one compose project of a tree, as [`projects_of`] finds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSet {
    /// The files, base first, relative to the root.
    pub files: Vec<PathBuf>,
    /// Not what `docker compose` reads there by default: a variant, read with `-f`.
    pub variant: bool,
    /// A variant file read on its own, besides over its base
    /// (`docker compose -f compose.prebuilt.yaml`): a project only when Compose takes it
    /// alone (it loads, and every service has an image or a build).
    pub alone: bool,
}

/// The projects of a tree's compose files: per directory, the base file (`compose.yaml`,
/// else `docker-compose.yml`…) with its overrides (`*.override.*`) as `docker compose`
/// loads them by default; each other file of the directory (`compose.prod.yaml`) as a
/// variant over the base, and on its own. `compose_file` (`COMPOSE_FILE`'s paths,
/// relative to the root) replaces the root directory's default.
pub fn projects_of(files: &[PathBuf], compose_file: Option<&[PathBuf]>) -> Vec<FileSet> {
    let mut groups: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for f in files {
        groups
            .entry(f.parent().map(Path::to_path_buf).unwrap_or_default())
            .or_default()
            .push(f.clone());
    }
    let mut out = Vec::new();
    for (dir, mut group) in groups {
        group.sort_by_key(|f| file_rank(f));
        if let Some(explicit) = compose_file.filter(|_| dir.as_os_str().is_empty()) {
            out.push(FileSet {
                files: explicit.to_vec(),
                variant: false,
                alone: false,
            });
            continue;
        }
        let base = group.iter().find(|f| file_rank(f).0 == 0).cloned();
        let overrides: Vec<PathBuf> = group
            .iter()
            .filter(|f| file_rank(f).0 == 1)
            .filter(|f| base.as_ref().is_some_and(|b| is_override_of(b, f)))
            .cloned()
            .collect();
        let mut default: Vec<PathBuf> = base.iter().cloned().collect();
        default.extend(overrides.iter().cloned());
        for other in group.iter().filter(|f| !default.contains(f)) {
            // Another base spelling (`docker-compose.yml` beside `compose.yaml`) is a
            // project of its own; anything else is a variant over the base, and one on
            // its own when Compose takes it alone (`compose.prebuilt.yaml`).
            match (&base, file_rank(other).0) {
                (Some(b), 1 | 2) => {
                    out.push(FileSet {
                        files: vec![b.clone(), other.clone()],
                        variant: true,
                        alone: false,
                    });
                    out.push(FileSet {
                        files: vec![other.clone()],
                        variant: true,
                        alone: true,
                    });
                }
                _ => out.push(FileSet {
                    files: vec![other.clone()],
                    variant: true,
                    alone: false,
                }),
            }
        }
        if !default.is_empty() {
            out.push(FileSet {
                files: default,
                variant: false,
                alone: false,
            });
        }
    }
    out
}

/// What a failed interpolation of `text` says: a required variable with no value names
/// itself, as Compose does.
fn interpolation_failure(text: &str, error: &ExpandError) -> String {
    match error {
        ExpandError::Required(name, message) => {
            format!("required variable `{name}` is missing a value: {message}")
        }
        e => format!("cannot interpolate `{text}`: {e}"),
    }
}

/// Whether `file` is the override of `base` (`compose.override.yaml` of `compose.yaml`).
fn is_override_of(base: &Path, file: &Path) -> bool {
    let stem = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default()
            .trim_end_matches(".yaml")
            .trim_end_matches(".yml")
            .to_owned()
    };
    stem(file) == format!("{}.override", stem(base))
}

/// Base files first (`compose.yaml` before `docker-compose.yml`, as Compose prefers),
/// then `*.override.*`, then the rest by name.
fn file_rank(file: &Path) -> (u8, u8, String) {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let stem = name.trim_end_matches(".yaml").trim_end_matches(".yml");
    let (rank, preference) = match stem {
        "compose" => (0, if name.ends_with(".yaml") { 0 } else { 1 }),
        "docker-compose" => (0, if name.ends_with(".yaml") { 3 } else { 2 }),
        s if s.ends_with(".override") => (1, 0),
        _ => (2, 0),
    };
    (rank, preference, name)
}

fn normalize_project_name(name: &str) -> String {
    let n: String = name
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let n = n.trim_start_matches(['-', '_']).to_owned();
    if n.is_empty() {
        "default".to_owned()
    } else {
        n
    }
}

/// A build as written, before paths are resolved: each field `None` when not given, so
/// that overrides and `extends` merge field by field.
#[derive(Debug, Clone, Default)]
struct BuildSpec {
    /// `context`, and the directory it is relative to.
    context: Option<(String, PathBuf)>,
    dockerfile: Option<String>,
    dockerfile_inline: Option<String>,
    args: BTreeMap<String, String>,
    target: Option<String>,
    network: Option<String>,
    platforms: Vec<String>,
    cache_from: Option<Vec<String>>,
    cache_to: Option<Vec<String>>,
    /// Name → (what it is, the directory paths are relative to).
    additional_contexts: BTreeMap<String, (String, PathBuf)>,
    /// `secrets`: (top-level name, id), with the line.
    secrets: Vec<(String, String, usize)>,
    /// The directory a `build:` with no context means (the file's project directory).
    dir: PathBuf,
    path: PathBuf,
    line: usize,
}

/// A service as written (interpolated), merged over files.
#[derive(Debug, Clone, Default)]
struct ServiceSpec {
    image: Option<Located<String>>,
    build: Option<BuildSpec>,
    depends_on: Vec<String>,
    profiles: Vec<String>,
    platform: Option<String>,
    ports: Vec<PublishedPort>,
    /// `extends`: the service, the file (relative to the root) if another, where.
    extends: Option<(String, Option<PathBuf>, Located<()>)>,
}

impl ServiceSpec {
    /// `over` merged on top of `self`, as an override file or an extending service
    /// merges over its base.
    fn overlay(mut self, over: ServiceSpec) -> ServiceSpec {
        if over.image.is_some() {
            self.image = over.image;
        }
        self.build = match (self.build.take(), over.build) {
            (Some(base), Some(top)) => Some(base.overlay(top)),
            (base, top) => top.or(base),
        };
        for d in over.depends_on {
            if !self.depends_on.contains(&d) {
                self.depends_on.push(d);
            }
        }
        if !over.profiles.is_empty() {
            self.profiles = over.profiles;
        }
        if over.platform.is_some() {
            self.platform = over.platform;
        }
        self.ports.extend(over.ports);
        self.extends = over.extends;
        self
    }

    fn finish(
        self,
        name: &str,
        defined: &BTreeMap<String, SecretSource>,
        warnings: &mut Vec<Located<String>>,
    ) -> Result<ComposeService, InputError> {
        let build = match self.build {
            Some(b) => b.finish(name, defined, warnings)?,
            None => None,
        };
        Ok(ComposeService {
            name: name.to_owned(),
            image: self.image,
            build,
            depends_on: self.depends_on,
            profiles: self.profiles,
            platform: self.platform,
            ports: self.ports,
        })
    }
}

impl BuildSpec {
    fn overlay(mut self, over: BuildSpec) -> BuildSpec {
        if over.context.is_some() {
            self.context = over.context;
        }
        if over.dockerfile.is_some() {
            self.dockerfile = over.dockerfile;
            self.dockerfile_inline = None;
        }
        if over.dockerfile_inline.is_some() {
            self.dockerfile_inline = over.dockerfile_inline;
            self.dockerfile = None;
        }
        self.args.extend(over.args);
        if over.target.is_some() {
            self.target = over.target;
        }
        if over.network.is_some() {
            self.network = over.network;
        }
        for p in over.platforms {
            if !self.platforms.contains(&p) {
                self.platforms.push(p);
            }
        }
        self.additional_contexts.extend(over.additional_contexts);
        if over.cache_from.is_some() {
            self.cache_from = over.cache_from;
        }
        if over.cache_to.is_some() {
            self.cache_to = over.cache_to;
        }
        for secret in over.secrets {
            self.secrets.retain(|s| s.1 != secret.1);
            self.secrets.push(secret);
        }
        self.path = over.path;
        self.line = over.line;
        self
    }

    fn finish(
        self,
        service: &str,
        defined: &BTreeMap<String, SecretSource>,
        warnings: &mut Vec<Located<String>>,
    ) -> Result<Option<ComposeBuild>, InputError> {
        let (context_text, base) = self
            .context
            .clone()
            .unwrap_or_else(|| (".".to_owned(), self.dir.clone()));
        if is_remote(&context_text) {
            warnings.push(Located {
                value: format!(
                    "service `{service}`: remote build context `{context_text}` is not scanned"
                ),
                path: self.path.clone(),
                line: self.line,
            });
            return Ok(None);
        }
        let mut secrets = Vec::new();
        for (name, id, line) in &self.secrets {
            let source = defined.get(name).cloned().ok_or_else(|| InputError::Invalid {
                path: self.path.clone(),
                line: *line,
                message: format!(
                    "service `{service}`: build secret `{name}` is not defined in the top-level `secrets:`"
                ),
            })?;
            secrets.push(SecretSpec {
                id: id.clone(),
                source,
            });
        }
        let context = clean_path(&base.join(&context_text));
        let dockerfile =
            clean_path(&context.join(self.dockerfile.as_deref().unwrap_or("Dockerfile")));
        let additional_contexts = self
            .additional_contexts
            .into_iter()
            .map(|(name, (value, dir))| {
                let context = if let Some(s) = value.strip_prefix("service:") {
                    NamedContext::Service(s.to_owned())
                } else if let Some(image) = value.strip_prefix("docker-image://") {
                    NamedContext::Image(image.to_owned())
                } else if is_remote(&value) {
                    NamedContext::Other(value)
                } else {
                    NamedContext::Other(
                        clean_path(&dir.join(&value)).to_string_lossy().into_owned(),
                    )
                };
                (name, context)
            })
            .collect();
        Ok(Some(ComposeBuild {
            context,
            dockerfile,
            dockerfile_inline: self.dockerfile_inline,
            args: self.args,
            target: self.target,
            network: self.network,
            platforms: self.platforms,
            cache_from: self.cache_from.unwrap_or_default(),
            cache_to: self.cache_to.unwrap_or_default(),
            additional_contexts,
            secrets,
            path: self.path,
            line: self.line,
        }))
    }
}

/// Whether a build context (or a named one) is a URL: a git repository or an
/// `https://` file, not a directory.
pub(crate) fn is_remote(context: &str) -> bool {
    context.contains("://") || context.starts_with("git@")
}

/// Includes and extends nest; a file including itself must stop.
const MAX_DEPTH: usize = 16;

struct Loader<'a> {
    root: &'a Path,
    env: &'a BTreeMap<String, String>,
    warnings: Vec<Located<String>>,
    depth: usize,
    /// Top-level `secrets:` of every file read (files relative to the root).
    secrets: BTreeMap<String, SecretSource>,
    /// Every compose file read (included and extended ones too) and every env file that
    /// exists, relative to the root.
    read: Vec<PathBuf>,
    /// Top-level `secrets:` whose file names a required variable with no value: an
    /// error only when a build mounts them.
    unresolved: BTreeMap<String, Located<String>>,
    /// [`ComposeOptions::optional`].
    optional: bool,
}

impl Loader<'_> {
    /// Records an env file among the inputs when it exists (a missing `.env` is no
    /// input: cargo would rerun a build script watching it every time).
    fn note_env_file(&mut self, file: &Path) {
        if self.root.join(file).is_file() && !self.read.iter().any(|f| f == file) {
            self.read.push(file.to_path_buf());
        }
    }

    fn read(&mut self, file: &Path) -> Result<RawCompose, InputError> {
        if !self.read.iter().any(|f| f == file) {
            self.read.push(file.to_path_buf());
        }
        let text =
            std::fs::read_to_string(self.root.join(file)).map_err(|source| InputError::Io {
                path: file.to_path_buf(),
                source,
            })?;
        crate::parse::yaml(file, &text, "compose file")
    }

    /// A project's files (relative to the root; paths in them relative to `dir`),
    /// merged, with its includes: its name and its services as written.
    fn project(
        &mut self,
        files: &[PathBuf],
        dir: &Path,
    ) -> Result<(Option<String>, BTreeMap<String, ServiceSpec>), InputError> {
        let mut name = None;
        let mut specs: BTreeMap<String, ServiceSpec> = BTreeMap::new();
        for file in files {
            let raw = self.read(file)?;
            if raw.name.is_some() {
                name = raw.name;
            }
            let file_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
            for (name, secret) in raw.secrets {
                let line = secret.referenced.line() as usize;
                let source = match (secret.value.file, secret.value.environment) {
                    (Some(f), _) => match expand(&f, Style::Compose, &|n| self.env.get(n).cloned())
                    {
                        Ok(value) => SecretSource::File(clean_path(&file_dir.join(value))),
                        // Compose stops here; drbuild only when a build mounts it.
                        Err(e) => {
                            let value = interpolation_failure(&f, &e);
                            self.secrets.remove(&name);
                            self.unresolved.insert(
                                name,
                                Located {
                                    value,
                                    path: file.clone(),
                                    line,
                                },
                            );
                            continue;
                        }
                    },
                    // The project's environment (`.env` included), as Compose reads it.
                    (None, Some(var)) => match self.env.get(&var) {
                        Some(value) => {
                            crate::vocab::register_secret(value);
                            SecretSource::Value {
                                variable: var,
                                value: SecretValue::new(value.as_bytes().to_vec()),
                            }
                        }
                        None => SecretSource::Env(var),
                    },
                    // `external:` and the like are for swarm: not a build's.
                    (None, None) => continue,
                };
                self.unresolved.remove(&name);
                self.secrets.insert(name, source);
            }
            // Compose refuses a service both included and defined by the includer.
            let mut included_by: BTreeMap<String, usize> = BTreeMap::new();
            for include in raw.include {
                let line = include.referenced.line() as usize;
                let included = self.include(file, &file_dir, include.value, line)?;
                for (n, spec) in included {
                    if included_by.insert(n.clone(), line).is_some() || specs.contains_key(&n) {
                        return Err(InputError::Invalid {
                            path: file.clone(),
                            line,
                            message: format!("service `{n}` is imported twice"),
                        });
                    }
                    specs.insert(n, spec);
                }
            }
            for (service_name, raw_service) in raw.services {
                let line = raw_service.referenced.line() as usize;
                if included_by.contains_key(&service_name) {
                    return Err(InputError::Invalid {
                        path: file.clone(),
                        line,
                        message: format!(
                            "service `{service_name}` conflicts with the one an `include:` imports"
                        ),
                    });
                }
                let spec = self.spec(file, dir, raw_service.value, line)?;
                let merged = match specs.remove(&service_name) {
                    Some(previous) => previous.overlay(spec),
                    None => spec,
                };
                specs.insert(service_name, merged);
            }
        }
        Ok((name, specs))
    }

    /// An `include:` entry of `file`: the included project's services, loaded with its
    /// own directory and `.env` (or `env_file`s).
    fn include(
        &mut self,
        file: &Path,
        file_dir: &Path,
        include: RawInclude,
        line: usize,
    ) -> Result<BTreeMap<String, ServiceSpec>, InputError> {
        if self.depth >= MAX_DEPTH {
            return Err(InputError::Invalid {
                path: file.to_path_buf(),
                line,
                message: format!("includes nest more than {MAX_DEPTH} deep"),
            });
        }
        let (paths, project_directory, env_files) = match include {
            RawInclude::Path(p) => (vec![p], None, None),
            RawInclude::Long(l) => (
                l.path.into_vec(),
                l.project_directory,
                l.env_file.map(raw::OneOrMany::into_vec),
            ),
        };
        let interpolate = |text: &str| -> Result<String, InputError> {
            expand(text, Style::Compose, &|n| self.env.get(n).cloned()).map_err(|e| {
                InputError::Invalid {
                    path: file.to_path_buf(),
                    line,
                    message: format!("cannot interpolate `{text}`: {e}"),
                }
            })
        };
        let paths: Vec<PathBuf> = paths
            .iter()
            .map(|p| interpolate(p).map(|p| clean_path(&file_dir.join(p))))
            .collect::<Result<_, _>>()?;
        let dir = match project_directory {
            Some(d) => clean_path(&file_dir.join(interpolate(&d)?)),
            None => paths
                .first()
                .and_then(|p| p.parent())
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        let env_paths = match env_files {
            Some(list) => list
                .iter()
                .map(|f| interpolate(f).map(|f| clean_path(&file_dir.join(f))))
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![dir.join(".env")],
        };
        let mut dotenv = Vec::new();
        for path in &env_paths {
            dotenv.extend(env::read(&self.root.join(path), self.env));
            self.note_env_file(path);
        }
        let env = env::with_dotenv(self.env, dotenv);
        let mut inner = Loader {
            root: self.root,
            env: &env,
            warnings: Vec::new(),
            depth: self.depth + 1,
            secrets: BTreeMap::new(),
            read: Vec::new(),
            unresolved: BTreeMap::new(),
            optional: self.optional,
        };
        let (_, specs) = inner.project(&paths, &dir)?;
        let specs = inner.resolve_extends(specs)?;
        self.warnings.extend(inner.warnings);
        for (name, source) in inner.secrets {
            self.secrets.entry(name).or_insert(source);
        }
        for (name, error) in inner.unresolved {
            self.unresolved.entry(name).or_insert(error);
        }
        for file in inner.read {
            if !self.read.contains(&file) {
                self.read.push(file);
            }
        }
        Ok(specs)
    }

    /// One service of `file`, interpolated; relative paths relative to `dir`.
    fn spec(
        &mut self,
        file: &Path,
        dir: &Path,
        raw: RawService,
        line: usize,
    ) -> Result<ServiceSpec, InputError> {
        let mut spec = ServiceSpec::default();
        let file_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        if let Some(extends) = raw.extends {
            let at = extends.referenced.line() as usize;
            let (service, other) = match extends.value {
                RawExtends::Service(s) => (s, None),
                RawExtends::Long { service, file: f } => (service, f),
            };
            let other = match other {
                Some(f) => Some(clean_path(
                    &file_dir.join(self.interpolate(file, &f, at)?.unwrap_or(f)),
                )),
                None => None,
            };
            spec.extends = Some((
                service,
                other,
                Located {
                    value: (),
                    path: file.to_path_buf(),
                    line: at,
                },
            ));
        }
        if let Some(image) = raw.image {
            let at = image.referenced.line() as usize;
            // An image that interpolates to nothing is no image, as in Compose.
            if let Some(value) = self
                .interpolate(file, &image.value, at)?
                .filter(|v| !v.is_empty())
            {
                spec.image = Some(Located {
                    value,
                    path: file.to_path_buf(),
                    line: at,
                });
            }
        }
        if let Some(build) = raw.build {
            let at = build.referenced.line() as usize;
            let b = build.value.into_long();
            let mut out = BuildSpec {
                dir: dir.to_path_buf(),
                path: file.to_path_buf(),
                line: at,
                ..BuildSpec::default()
            };
            if let Some(c) = &b.context {
                match self.interpolate(file, c, at)? {
                    Some(c) => out.context = Some((c, dir.to_path_buf())),
                    None => return Ok(spec),
                }
            }
            if let Some(d) = &b.dockerfile {
                out.dockerfile = self.interpolate(file, d, at)?;
            }
            if let Some(text) = &b.dockerfile_inline {
                out.dockerfile_inline = self.interpolate(file, text, at)?;
            }
            for (k, v) in b.args.map(raw::Args::pairs).unwrap_or_default() {
                let value = match v {
                    Some(v) => self.interpolate(file, &v, at)?,
                    None => self.env.get(&k).cloned(),
                };
                if let Some(value) = value {
                    out.args.insert(k, value);
                }
            }
            if let Some(t) = &b.target {
                out.target = self.interpolate(file, t, at)?;
            }
            out.network = b.network;
            for p in &b.platforms {
                if let Some(p) = self.interpolate(file, p, at)? {
                    out.platforms.push(p);
                }
            }
            for (list, raw) in [
                (&mut out.cache_from, &b.cache_from),
                (&mut out.cache_to, &b.cache_to),
            ] {
                if !raw.is_empty() {
                    let mut specs = Vec::new();
                    for spec in raw {
                        specs.extend(self.interpolate(file, spec, at)?);
                    }
                    *list = Some(specs);
                }
            }
            for (k, v) in b
                .additional_contexts
                .map(raw::Args::pairs)
                .unwrap_or_default()
            {
                if let Some(v) = v {
                    if let Some(v) = self.interpolate(file, &v, at)? {
                        out.additional_contexts.insert(k, (v, dir.to_path_buf()));
                    }
                }
            }
            for secret in &b.secrets {
                let at = secret.referenced.line() as usize;
                let (name, id) = match &secret.value {
                    raw::RawBuildSecret::Name(n) => (n.clone(), n.clone()),
                    raw::RawBuildSecret::Long { source, target } => (
                        source.clone(),
                        target.clone().unwrap_or_else(|| source.clone()),
                    ),
                };
                out.secrets.push((name, id, at));
            }
            spec.build = Some(out);
        }
        spec.depends_on = raw
            .depends_on
            .map(raw::DependsOn::names)
            .unwrap_or_default();
        spec.profiles = raw.profiles;
        if let Some(p) = raw.platform {
            spec.platform = self.interpolate(file, &p, line)?;
        }
        for port in raw.ports {
            let at = port.referenced.line() as usize;
            let mut value = port.value;
            if let RawPort::Short(text) = &value {
                if text.contains('$') {
                    match self.interpolate(file, text, at)? {
                        Some(text) => value = RawPort::Short(text),
                        None => continue, // a warning says why
                    }
                }
            }
            match value.published(file, at) {
                Ok(Some(p)) => spec.ports.push(p),
                Ok(None) => {}
                Err(message) => {
                    return Err(InputError::Invalid {
                        path: file.to_path_buf(),
                        line: at,
                        message,
                    })
                }
            }
        }
        Ok(spec)
    }

    /// `text` interpolated: `None` (with a warning) when a variable has no value; an
    /// error for `${X:?message}` with `X` unset, naming it, as Compose stops there.
    fn interpolate(
        &mut self,
        file: &Path,
        text: &str,
        line: usize,
    ) -> Result<Option<String>, InputError> {
        match expand(text, Style::Compose, &|n| self.env.get(n).cloned()) {
            Ok(v) => Ok(Some(v)),
            Err(e @ ExpandError::Required(..)) if self.optional => {
                self.warnings.push(Located {
                    value: format!(
                        "{}; this file is read only on request, so the plan goes on without \
                         `{text}`",
                        interpolation_failure(text, &e)
                    ),
                    path: file.to_path_buf(),
                    line,
                });
                Ok(None)
            }
            Err(e @ ExpandError::Required(..)) => Err(InputError::Invalid {
                path: file.to_path_buf(),
                line,
                message: interpolation_failure(text, &e),
            }),
            Err(e) => {
                self.warnings.push(Located {
                    value: interpolation_failure(text, &e),
                    path: file.to_path_buf(),
                    line,
                });
                Ok(None)
            }
        }
    }

    /// Every service with `extends:` merged over its base (recursively; a cycle is an
    /// error naming it).
    fn resolve_extends(
        &mut self,
        specs: BTreeMap<String, ServiceSpec>,
    ) -> Result<BTreeMap<String, ServiceSpec>, InputError> {
        let mut out = BTreeMap::new();
        for name in specs.keys() {
            let mut seen = BTreeSet::new();
            let resolved = self.extended(&specs, name, None, &mut seen)?;
            out.insert(name.clone(), resolved);
        }
        Ok(out)
    }

    fn extended(
        &mut self,
        specs: &BTreeMap<String, ServiceSpec>,
        name: &str,
        file: Option<&Path>,
        seen: &mut BTreeSet<(Option<PathBuf>, String)>,
    ) -> Result<ServiceSpec, InputError> {
        let spec = specs
            .get(name)
            .cloned()
            .ok_or_else(|| InputError::Invalid {
                path: file.map(Path::to_path_buf).unwrap_or_default(),
                line: 0,
                message: format!("extends names service `{name}`, which does not exist"),
            })?;
        let Some((base_name, base_file, at)) = spec.extends.clone() else {
            return Ok(spec);
        };
        if !seen.insert((file.map(Path::to_path_buf), name.to_owned())) || seen.len() > MAX_DEPTH {
            return Err(InputError::Invalid {
                path: at.path.clone(),
                line: at.line,
                message: format!("extends of service `{name}` loops"),
            });
        }
        let base = match &base_file {
            None => {
                if !specs.contains_key(&base_name) {
                    return Err(InputError::Invalid {
                        path: at.path.clone(),
                        line: at.line,
                        message: format!(
                            "service `{name}` extends `{base_name}`, which does not exist"
                        ),
                    });
                }
                self.extended(specs, &base_name, file, seen)?
            }
            Some(other) => {
                // The other file's paths stay relative to its own directory.
                let other_dir = other.parent().map(Path::to_path_buf).unwrap_or_default();
                let raw = self.read(other).map_err(|e| match e {
                    InputError::Io { source, .. } => InputError::Invalid {
                        path: at.path.clone(),
                        line: at.line,
                        message: format!("extends file `{}`: {source}", other.display()),
                    },
                    e => e,
                })?;
                let mut others = BTreeMap::new();
                for (n, s) in raw.services {
                    let line = s.referenced.line() as usize;
                    others.insert(n, self.spec(other, &other_dir, s.value, line)?);
                }
                if !others.contains_key(&base_name) {
                    return Err(InputError::Invalid {
                        path: at.path.clone(),
                        line: at.line,
                        message: format!(
                            "service `{name}` extends `{base_name}`, which `{}` does not define",
                            other.display()
                        ),
                    });
                }
                self.extended(&others, &base_name, Some(other), seen)?
            }
        };
        let mut own = spec;
        own.extends = None;
        Ok(base.overlay(own))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(files: &[(&str, &str)]) -> Result<ComposeProject, InputError> {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("proj");
        let mut paths = Vec::new();
        for (name, text) in files {
            std::fs::create_dir_all(root.join("app")).unwrap();
            std::fs::write(root.join("app").join(name), text).unwrap();
            paths.push(PathBuf::from("app").join(name));
        }
        let env = BTreeMap::from([("TAG".to_owned(), "v1".to_owned())]);
        ComposeProject::load(&root, &paths, &env)
    }

    #[test]
    fn short_and_long_build() {
        let p = load(&[(
            "compose.yaml",
            "services:\n  web:\n    build: ./web\n    image: acme/web:${TAG}\n  api:\n    build:\n      context: ../api\n      dockerfile: docker/Dockerfile.prod\n      args:\n        GO: 1.21\n        EMPTY:\n      target: final\n    depends_on:\n      db:\n        condition: service_healthy\n  db:\n    image: postgres:15-alpine\n    profiles: [data]\n    ports:\n      - \"127.0.0.1:5432:5432\"\n      - target: 80\n        published: 8080\n      - 9000\n",
        )])
        .unwrap();
        assert_eq!(p.name, "app");
        let web = &p.services["web"];
        assert_eq!(web.image.as_ref().unwrap().value, "acme/web:v1");
        assert_eq!(web.image.as_ref().unwrap().line, 4);
        assert_eq!(
            web.build.as_ref().unwrap().dockerfile,
            PathBuf::from("app/web/Dockerfile")
        );
        let api = &p.services["api"];
        let b = api.build.as_ref().unwrap();
        assert_eq!(b.context, PathBuf::from("api"));
        assert_eq!(b.dockerfile, PathBuf::from("api/docker/Dockerfile.prod"));
        assert_eq!(b.args.get("GO").map(String::as_str), Some("1.21"));
        assert!(!b.args.contains_key("EMPTY"));
        assert_eq!(b.line, 7, "a mapping is located at its first key");
        assert_eq!(api.depends_on, vec!["db"]);
        assert_eq!(p.built_image(api).unwrap(), "app-api");
        let db = &p.services["db"];
        assert_eq!(db.profiles, vec!["data"]);
        let ports: Vec<_> = db
            .ports
            .iter()
            .map(|p| (p.host_ip.clone(), p.host_port, p.line))
            .collect();
        assert_eq!(
            ports,
            vec![(Some("127.0.0.1".into()), 5432, 20), (None, 8080, 21)]
        );
    }

    #[test]
    fn args_as_list_and_depends_on_list() {
        let p = load(&[(
            "docker-compose.yml",
            "name: My_Proj\nservices:\n  a:\n    build:\n      context: .\n      args:\n        - VERSION=3.11\n        - TAG\n    depends_on: [b]\n  b:\n    image: redis\n",
        )])
        .unwrap();
        assert_eq!(p.name, "my_proj");
        let args = &p.services["a"].build.as_ref().unwrap().args;
        assert_eq!(args.get("VERSION").map(String::as_str), Some("3.11"));
        assert_eq!(args.get("TAG").map(String::as_str), Some("v1"));
        assert_eq!(p.services["a"].depends_on, vec!["b"]);
    }

    #[test]
    fn overrides_merge() {
        let p = load(&[
            (
                "docker-compose.override.yml",
                "services:\n  web:\n    image: acme/web:dev\n",
            ),
            (
                "docker-compose.yml",
                "services:\n  web:\n    build: .\n    image: acme/web:prod\n",
            ),
        ])
        .unwrap();
        let web = &p.services["web"];
        assert_eq!(web.image.as_ref().unwrap().value, "acme/web:dev");
        assert_eq!(
            web.image.as_ref().unwrap().path,
            PathBuf::from("app/docker-compose.override.yml")
        );
        assert!(web.build.is_some());
    }

    #[test]
    fn broken_yaml_has_a_line() {
        let err = load(&[(
            "compose.yaml",
            "services:\n  web:\n    image: [unclosed\n    build: .\n",
        )])
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("app/compose.yaml:"), "{text}");
        assert!(
            matches!(err, InputError::Invalid { line, .. } if line > 0),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    #[test]
    fn unresolved_interpolation_warns() {
        let p = load(&[(
            "compose.yaml",
            "services:\n  web:\n    image: ${REGISTRY}/web\n",
        )])
        .unwrap();
        assert!(p.services["web"].image.is_none());
        assert_eq!(p.warnings[0].line, 3);
    }

    /// A fixture of `tests/data/compose/` (also checked against `docker compose`).
    fn fixture(name: &str) -> ComposeProject {
        let root = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/compose"
        ));
        let files: Vec<PathBuf> = ["compose.yaml", "compose.override.yaml"]
            .iter()
            .map(|f| Path::new(name).join(f))
            .filter(|f| root.join(f).is_file())
            .collect();
        ComposeProject::load(root, &files, &BTreeMap::new()).unwrap()
    }

    fn image(p: &ComposeProject, service: &str) -> String {
        p.services[service].image.as_ref().unwrap().value.clone()
    }

    #[test]
    fn dotenv_values_interpolate() {
        let p = fixture("dotenv");
        assert_eq!(image(&p, "backend"), "backend:1.4");
        assert_eq!(image(&p, "api"), "registry.example.com:5000/team/api:1.4");
        assert_eq!(image(&p, "worker"), "redis:1.4-worker");
        let args = &p.services["backend"].build.as_ref().unwrap().args;
        assert_eq!(args["LITERAL"], "${REG}/not-expanded");
        assert_eq!(args["DOLLARS"], "$HOME");
    }

    #[test]
    fn extends_another_file_keeps_its_paths() {
        let p = fixture("extends_file");
        assert_eq!(image(&p, "app"), "acme/base:2.0");
        let build = p.services["app"].build.as_ref().unwrap();
        assert_eq!(build.context, PathBuf::from("extends_file/common"));
        assert_eq!(build.args["FROM_COMMON"], "yes");
        assert_eq!(build.args["OWN"], "1");
        assert_eq!(image(&p, "db"), "postgres:16-alpine");
        assert_eq!(image(&p, "cache2"), "redis:7-alpine");
    }

    #[test]
    fn includes_bring_their_services_with_their_env() {
        let p = fixture("include");
        assert_eq!(image(&p, "queue"), "rabbitmq:3.12-management");
        assert_eq!(image(&p, "search"), "elasticsearch:8.13.0");
        assert_eq!(
            p.inputs,
            [
                PathBuf::from("include/compose.yaml"),
                PathBuf::from("include/sub/.env"),
                PathBuf::from("include/sub/compose.yaml"),
                PathBuf::from("include/other/vars.env"),
                PathBuf::from("include/other/compose.yaml"),
            ]
        );
        assert_eq!(
            fixture("dotenv").inputs,
            [
                PathBuf::from("dotenv/.env"),
                PathBuf::from("dotenv/compose.yaml")
            ]
        );
        assert_eq!(
            p.services["tool"].build.as_ref().unwrap().dockerfile,
            PathBuf::from("include/sub/tool/Dockerfile")
        );
    }

    #[test]
    fn inline_dockerfiles_and_named_contexts() {
        let p = fixture("inline");
        let build = p.services["inline"].build.as_ref().unwrap();
        assert!(build
            .dockerfile_inline
            .as_deref()
            .unwrap()
            .starts_with("FROM python:3.12-slim"));
        let p = fixture("contexts");
        let contexts = &p.services["app"]
            .build
            .as_ref()
            .unwrap()
            .additional_contexts;
        assert_eq!(contexts["base"], NamedContext::Service("base".into()));
        assert_eq!(
            contexts["tools"],
            NamedContext::Image("alpine/git:2.43.0".into())
        );
        assert_eq!(
            contexts["assets"],
            NamedContext::Other("contexts/assets".into())
        );
        let build = p.services["app"].build.as_ref().unwrap();
        assert_eq!(
            build.cache_from,
            ["type=registry,ref=127.0.0.1:5000/cache/app"]
        );
        assert_eq!(
            build.cache_to,
            ["type=registry,ref=127.0.0.1:5000/cache/app,mode=max"]
        );
    }

    #[test]
    fn profiles_default_to_all() {
        let root = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/compose"
        ));
        let files = [PathBuf::from("profiles/compose.yaml")];
        let all = ComposeProject::load(root, &files, &BTreeMap::new()).unwrap();
        assert_eq!(all.services.len(), 3);
        let ops = ComposeOptions {
            profiles: Some(vec!["ops".into()]),
            ..ComposeOptions::default()
        };
        let some = ComposeProject::load_with(root, &files, &BTreeMap::new(), &ops).unwrap();
        assert_eq!(some.services.keys().collect::<Vec<_>>(), ["app", "metrics"]);
        let env = BTreeMap::from([("COMPOSE_PROFILES".to_owned(), "debug".to_owned())]);
        let from_env = ComposeProject::load(root, &files, &env).unwrap();
        assert_eq!(from_env.services.len(), 3);
    }

    #[test]
    fn a_required_variable_names_itself() {
        let err = load(&[(
            "compose.yaml",
            "services:\n  web:\n    image: acme/web:${WEB_TAG:?set WEB_TAG to a release}\n",
        )])
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("app/compose.yaml:3:"), "{text}");
        assert!(
            text.contains("`WEB_TAG`") && text.contains("set WEB_TAG to a release"),
            "{text}"
        );
    }

    #[test]
    fn extends_loops_and_includes_of_itself_stop() {
        let err = load(&[(
            "compose.yaml",
            "services:\n  a:\n    extends: b\n  b:\n    extends: a\n",
        )])
        .unwrap_err();
        assert!(err.to_string().contains("loops"), "{err}");
        let err =
            load(&[("compose.yaml", "include:\n  - compose.yaml\nservices: {}\n")]).unwrap_err();
        assert!(err.to_string().contains("nest more than"), "{err}");
    }

    #[test]
    fn variants_and_compose_file() {
        let files: Vec<PathBuf> = [
            "compose.yaml",
            "compose.override.yaml",
            "compose.prod.yaml",
            "sub/docker-compose.yml",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let set = |files: &[&str], variant, alone| FileSet {
            files: files.iter().map(PathBuf::from).collect(),
            variant,
            alone,
        };
        let projects = projects_of(&files, None);
        assert_eq!(
            projects,
            [
                set(&["compose.yaml", "compose.prod.yaml"], true, false),
                set(&["compose.prod.yaml"], true, true),
                set(&["compose.yaml", "compose.override.yaml"], false, false),
                set(&["sub/docker-compose.yml"], false, false),
            ]
        );
        let explicit = ["compose.yaml", "compose.prod.yaml"];
        let given: Vec<PathBuf> = explicit.iter().map(PathBuf::from).collect();
        let projects = projects_of(&files, Some(&given));
        assert!(projects.contains(&set(&explicit, false, false)));
        assert_eq!(projects.len(), 2);
    }

    #[test]
    fn build_secrets_resolve_against_the_top_level() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("app")).unwrap();
        std::fs::write(dir.path().join("app/.env"), "NPM_TOKEN=from-dotenv-token\n").unwrap();
        std::fs::write(
            dir.path().join("app/compose.yaml"),
            "services:\n  web:\n    build:\n      context: .\n      secrets:\n        - npm\n        - source: cert\n          target: ca\nsecrets:\n  npm:\n    environment: NPM_TOKEN\n  cert:\n    file: ./ca.pem\n",
        )
        .unwrap();
        let p = ComposeProject::load(
            dir.path(),
            &[PathBuf::from("app/compose.yaml")],
            &BTreeMap::new(),
        )
        .unwrap();
        let secrets = &p.services["web"].build.as_ref().unwrap().secrets;
        let shown: Vec<String> = secrets.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["id=npm,env=NPM_TOKEN", "id=ca,src=app/ca.pem"]);
        let value = secrets[0].read(|_| None).unwrap();
        assert_eq!(
            value.expose(),
            b"from-dotenv-token",
            "the project's .env counts"
        );
        let err = load(&[(
            "compose.yaml",
            "services:\n  web:\n    build:\n      context: .\n      secrets: [nope]\n",
        )])
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("build secret `nope` is not defined"),
            "{err}"
        );
    }
}
