//! The services a tree builds, and the order to build them in.
//!
//! Services come from `drbuild.yaml` when there is one, else from the compose files'
//! services that have `build:`, else one per directory holding a `Dockerfile`. A
//! service depends on the services named in its `depends_on`/`depends-on` and on
//! those whose image its Dockerfile uses (`FROM`, `COPY --from`, `RUN --mount=from`),
//! as the plan's scan of that Dockerfile with the service's args found them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::config::{ConfigFile, ServiceConfig};
use crate::parse::compose::{self, ComposeProject};
use crate::parse::dockerfile::NamedContext;
use crate::vocab::{clean_path, ImageReference, SecretSpec, SecretSpecError};

/// A service that cannot be set up for building.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Services depend on each other in a circle.
    #[error("dependency cycle: {}", cycle.join(" -> "))]
    Cycle {
        /// The services of the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// A service's image name is not a valid reference.
    #[error("{}:{line}: service `{service}`: invalid image `{image}`: {message}", path.display())]
    InvalidImage {
        /// The service.
        service: String,
        /// The image as written.
        image: String,
        /// Where it is defined.
        path: PathBuf,
        /// Its line (0 when unknown).
        line: usize,
        /// Why.
        message: String,
    },
    /// A service's build secret is not `id=ID[,src=FILE|,env=VAR]`.
    #[error("{}: service `{service}`: {source}", path.display())]
    InvalidSecret {
        /// The service.
        service: String,
        /// Where it is defined.
        path: PathBuf,
        /// What is wrong.
        source: SecretSpecError,
    },
    /// A named context of a service (`contexts:` in drbuild.yaml) cannot be used.
    #[error("{}: service `{service}`: context `{context}`: {message}", path.display())]
    InvalidContext {
        /// The service.
        service: String,
        /// The context's name.
        context: String,
        /// Where it is defined.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A service named on the command line does not exist.
    #[error("no service `{name}` (services: {})", known.join(", "))]
    UnknownService {
        /// The name asked for.
        name: String,
        /// The services there are.
        known: Vec<String>,
    },
}

impl ServiceError {
    /// The file and line the error points at, if any.
    pub fn location(&self) -> Option<(&Path, usize)> {
        match self {
            ServiceError::InvalidImage { path, line, .. } => Some((path, *line)),
            ServiceError::InvalidSecret { path, .. }
            | ServiceError::InvalidContext { path, .. } => Some((path, 0)),
            _ => None,
        }
    }
}

/// Where the services were defined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceOrigin {
    /// A `drbuild.yaml`.
    Config(PathBuf),
    /// Compose files' services with `build:`.
    Compose,
    /// One service per directory holding a `Dockerfile`.
    #[default]
    Directories,
}

/// One image to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Its name.
    pub name: String,
    /// The build context, relative to the tree's root.
    pub context: PathBuf,
    /// The Dockerfile, relative to the tree's root.
    pub dockerfile: PathBuf,
    /// The image to tag, as written (`ai-infra-backend:v0.3.6-dev`).
    pub image: String,
    /// Build args.
    pub args: BTreeMap<String, String>,
    /// Stage to build.
    pub target: Option<String>,
    /// Platform to build for.
    pub platform: Option<String>,
    /// Network for `RUN` steps, when set.
    pub network: Option<String>,
    /// Services to build first: declared ones and those whose image the Dockerfile uses.
    pub depends_on: BTreeSet<String>,
    /// The images its Dockerfile uses, scanned with its args (set by the plan).
    pub uses: Vec<ImageReference>,
    /// Whether its Dockerfile opens heredocs for the daemon's built-in frontend (no
    /// `# syntax=` frontend named; set by the plan).
    pub has_heredocs: bool,
    /// The file and line that define it, when a file does (`drbuild.yaml:12`).
    pub defined_in: Option<(PathBuf, usize)>,
    /// The Dockerfile's text when written in the compose file (`dockerfile_inline`);
    /// `dockerfile` is then where it would be.
    pub dockerfile_inline: Option<String>,
    /// Named build contexts (compose `additional_contexts`), as far as images go.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// The named contexts that are no image, by name: a directory (relative to the
    /// tree's root) or a URL (`https://…`, `git@…`), as given.
    pub context_sources: BTreeMap<String, String>,
    /// Build caches to import, as BuildKit takes them (`type=registry,ref=…`; an image
    /// reference alone is a registry cache).
    pub cache_from: Vec<String>,
    /// Build caches to export (`type=registry,ref=…,mode=max`).
    pub cache_to: Vec<String>,
    /// Build secrets it may mount (files relative to the tree's root).
    pub secrets: Vec<SecretSpec>,
}

impl Service {
    /// A service with only what it must have (no args, target, platform or network;
    /// no dependencies yet).
    pub fn new(
        name: impl Into<String>,
        image: impl Into<String>,
        context: impl Into<PathBuf>,
        dockerfile: impl Into<PathBuf>,
    ) -> Self {
        Service {
            name: name.into(),
            context: context.into(),
            dockerfile: dockerfile.into(),
            image: image.into(),
            args: BTreeMap::new(),
            target: None,
            platform: None,
            network: None,
            depends_on: BTreeSet::new(),
            uses: Vec::new(),
            has_heredocs: false,
            defined_in: None,
            dockerfile_inline: None,
            named_contexts: BTreeMap::new(),
            context_sources: BTreeMap::new(),
            cache_from: Vec::new(),
            cache_to: Vec::new(),
            secrets: Vec::new(),
        }
    }
}

/// The services of a tree, with their dependencies resolved ([`Plan::services`](crate::Plan::services)).
#[derive(Debug, Clone, Default)]
pub struct ServiceSet {
    /// The tree's root.
    pub root: PathBuf,
    /// Services by name.
    pub services: BTreeMap<String, Service>,
    /// Where they were defined.
    pub origin: ServiceOrigin,
}

impl ServiceSet {
    /// The services of a tree: `drbuild.yaml`'s, else compose's builds, else one per
    /// directory holding a `Dockerfile` (of `dockerfiles`, found by the plan). Their
    /// dependencies are only the declared ones until the plan derives the rest.
    pub(crate) fn define(
        root: &Path,
        config: Option<&ConfigFile>,
        compose: &[ComposeProject],
        dockerfiles: &[PathBuf],
    ) -> Result<ServiceSet, ServiceError> {
        let (services, origin) = match config {
            Some(file) => (from_config(file)?, ServiceOrigin::Config(file.path.clone())),
            None => {
                let services = from_compose(compose);
                if services.is_empty() {
                    (
                        from_directories(root, dockerfiles),
                        ServiceOrigin::Directories,
                    )
                } else {
                    (services, ServiceOrigin::Compose)
                }
            }
        };
        Ok(ServiceSet {
            root: root.to_path_buf(),
            services,
            origin,
        })
    }

    /// Adds the dependencies the Dockerfiles imply: a service waits for the services
    /// whose image it uses.
    pub(crate) fn derive_dependencies(&mut self) {
        // Only a service whose image's name (its last path segment) some service uses
        // can be depended on: the others' images need not be parsed.
        let used: BTreeSet<&str> = self
            .services
            .values()
            .flat_map(|s| s.uses.iter().map(|u| last_segment(u.repository())))
            .collect();
        let by_image: BTreeMap<ImageReference, String> = self
            .services
            .values()
            .filter(|s| used.contains(last_segment(name_part(&s.image))))
            .filter_map(|s| Some((ImageReference::parse(&s.image).ok()?, s.name.clone())))
            .collect();
        for service in self.services.values_mut() {
            for used in &service.uses {
                if let Some(other) = by_image.get(used) {
                    if *other != service.name {
                        service.depends_on.insert(other.clone());
                    }
                }
            }
        }
    }

    /// Service names in an order where every service comes after what it depends on.
    pub fn order(&self) -> Result<Vec<String>, ServiceError> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Visiting,
            Done,
        }
        fn visit(
            set: &ServiceSet,
            name: &str,
            marks: &mut BTreeMap<String, Mark>,
            path: &mut Vec<String>,
            out: &mut Vec<String>,
        ) -> Result<(), ServiceError> {
            match marks.get(name) {
                Some(Mark::Done) => return Ok(()),
                Some(Mark::Visiting) => {
                    let start = path.iter().position(|n| n == name).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(name.to_owned());
                    return Err(ServiceError::Cycle { cycle });
                }
                None => {}
            }
            marks.insert(name.to_owned(), Mark::Visiting);
            path.push(name.to_owned());
            if let Some(service) = set.services.get(name) {
                for dep in &service.depends_on {
                    visit(set, dep, marks, path, out)?;
                }
            }
            path.pop();
            marks.insert(name.to_owned(), Mark::Done);
            out.push(name.to_owned());
            Ok(())
        }
        let mut marks = BTreeMap::new();
        let mut out = Vec::new();
        for name in self.services.keys() {
            visit(self, name, &mut marks, &mut Vec::new(), &mut out)?;
        }
        Ok(out)
    }

    /// Keeps the services named in `only` (all when empty) minus `skip`. A kept
    /// service's dependencies outside the selection are dropped from its
    /// `depends_on`: the selection is built as asked, against what is there.
    pub fn select(&mut self, only: &[String], skip: &[String]) -> Result<(), ServiceError> {
        for name in only.iter().chain(skip) {
            if !self.services.contains_key(name) {
                return Err(ServiceError::UnknownService {
                    name: name.clone(),
                    known: self.services.keys().cloned().collect(),
                });
            }
        }
        self.services
            .retain(|name, _| (only.is_empty() || only.contains(name)) && !skip.contains(name));
        let kept: BTreeSet<String> = self.services.keys().cloned().collect();
        for service in self.services.values_mut() {
            service.depends_on.retain(|d| kept.contains(d));
        }
        Ok(())
    }

    /// Every file and directory a build of these services reads, relative to the
    /// root: Dockerfiles, contexts, and the config or compose files.
    pub fn inputs(&self, plan: &crate::Plan) -> Vec<PathBuf> {
        let mut inputs = BTreeSet::new();
        if let ServiceOrigin::Config(path) = &self.origin {
            inputs.insert(path.strip_prefix(&self.root).unwrap_or(path).to_path_buf());
        }
        for project in &plan.compose {
            inputs.extend(project.inputs.iter().cloned());
        }
        for service in self.services.values() {
            if service.dockerfile_inline.is_none() {
                inputs.insert(service.dockerfile.clone());
            }
            inputs.insert(service.context.clone());
        }
        inputs.into_iter().collect()
    }
}

/// The image a `drbuild.yaml` service builds.
fn config_image(name: &str, service: &ServiceConfig) -> String {
    service
        .image
        .clone()
        .unwrap_or_else(|| format!("drbuild-{name}"))
}

/// A `drbuild.yaml` service's `contexts:`: images (`docker-image://REF`, `target:NAME`
/// or `service:NAME` for another service's image, which it then depends on), and the
/// rest (a directory relative to the file, a URL) by name.
#[allow(clippy::type_complexity)]
fn config_contexts(
    file: &ConfigFile,
    name: &str,
    service: &ServiceConfig,
) -> Result<
    (
        BTreeMap<String, NamedContext>,
        BTreeMap<String, String>,
        BTreeSet<String>,
    ),
    ServiceError,
> {
    let mut named = BTreeMap::new();
    let mut sources = BTreeMap::new();
    let mut depends = BTreeSet::new();
    for (context, value) in &service.contexts {
        let other = value
            .strip_prefix("target:")
            .or_else(|| value.strip_prefix("service:"));
        let is_url = compose::is_remote(value);
        if let Some(other) = other {
            let built =
                file.config
                    .services
                    .get(other)
                    .ok_or_else(|| ServiceError::InvalidContext {
                        service: name.to_owned(),
                        context: context.clone(),
                        path: file.path.clone(),
                        message: format!("no service `{other}` in this file"),
                    })?;
            named.insert(
                context.clone(),
                NamedContext::Image(config_image(other, built)),
            );
            depends.insert(other.to_owned());
        } else if let Some(image) = value.strip_prefix("docker-image://") {
            named.insert(context.clone(), NamedContext::Image(image.to_owned()));
        } else if is_url {
            named.insert(context.clone(), NamedContext::Local);
            sources.insert(context.clone(), value.clone());
        } else {
            named.insert(context.clone(), NamedContext::Local);
            sources.insert(
                context.clone(),
                clean_path(Path::new(value)).to_string_lossy().into_owned(),
            );
        }
    }
    Ok((named, sources, depends))
}

fn from_config(file: &ConfigFile) -> Result<BTreeMap<String, Service>, ServiceError> {
    let mut services = BTreeMap::new();
    for (name, s) in &file.config.services {
        let (named_contexts, context_sources, context_depends) = config_contexts(file, name, s)?;
        // A service's own caches, else the file's `cache:` with `{service}` filled in
        // (imported without its export-only `mode=`).
        let cached = |own: &Option<Vec<String>>, drop: &str| match (own, &file.config.cache) {
            (Some(own), _) => own.clone(),
            (None, Some(spec)) => vec![spec
                .replace("{service}", name)
                .split(',')
                .filter(|attr| drop.is_empty() || !attr.starts_with(&format!("{drop}=")))
                .collect::<Vec<_>>()
                .join(",")],
            (None, None) => Vec::new(),
        };
        let context = s.context.clone().unwrap_or_else(|| PathBuf::from(name));
        let dockerfile = context.join(s.dockerfile.clone().unwrap_or_else(|| "Dockerfile".into()));
        let image = config_image(name, s);
        if let Err(e) = ImageReference::parse(&image) {
            return Err(ServiceError::InvalidImage {
                service: name.clone(),
                image,
                path: file.path.clone(),
                line: 0,
                message: e.to_string(),
            });
        }
        let secrets = s
            .secrets
            .iter()
            .map(|text| text.parse::<SecretSpec>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ServiceError::InvalidSecret {
                service: name.clone(),
                path: file.path.clone(),
                source,
            })?;
        services.insert(
            name.clone(),
            Service {
                name: name.clone(),
                context: clean_path(&context),
                dockerfile: clean_path(&dockerfile),
                image,
                args: s.args.clone(),
                target: s.target.clone(),
                platform: s.platform.clone(),
                network: s.network.clone(),
                depends_on: s
                    .depends_on
                    .iter()
                    .cloned()
                    .chain(context_depends)
                    .collect(),
                uses: Vec::new(),
                has_heredocs: false,
                defined_in: Some((file.path.clone(), file.line_of(name))),
                dockerfile_inline: None,
                named_contexts,
                context_sources,
                cache_from: cached(&s.cache_from, "mode"),
                cache_to: cached(&s.cache_to, ""),
                secrets,
            },
        );
    }
    Ok(services)
}

fn from_compose(compose: &[ComposeProject]) -> BTreeMap<String, Service> {
    let mut services = BTreeMap::new();
    let several = compose.len() > 1;
    // A variant (`compose.prod.yaml` over the base) adds images to fetch, not builds.
    for project in compose.iter().filter(|p| !p.variant) {
        for service in project.services.values() {
            let (Some(build), Some(image)) = (&service.build, project.built_image(service)) else {
                continue;
            };
            let name = if several && services.contains_key(&service.name) {
                format!("{}/{}", project.name, service.name)
            } else {
                service.name.clone()
            };
            services.insert(
                name.clone(),
                Service {
                    name,
                    context: clean_path(&build.context),
                    dockerfile: clean_path(&build.dockerfile),
                    image,
                    args: build.args.clone(),
                    target: build.target.clone(),
                    platform: service.platform.clone(),
                    network: build.network.clone(),
                    // Only built services order builds; `postgres` in depends_on does not.
                    depends_on: service.depends_on.iter().cloned().collect(),
                    uses: Vec::new(),
                    has_heredocs: false,
                    defined_in: Some((build.path.clone(), build.line)),
                    dockerfile_inline: build.dockerfile_inline.clone(),
                    named_contexts: named_contexts(project, &build.additional_contexts),
                    context_sources: build
                        .additional_contexts
                        .iter()
                        .filter_map(|(name, context)| match context {
                            compose::NamedContext::Other(source) => {
                                Some((name.clone(), source.clone()))
                            }
                            _ => None,
                        })
                        .collect(),
                    cache_from: build.cache_from.clone(),
                    cache_to: build.cache_to.clone(),
                    secrets: build.secrets.clone(),
                },
            );
        }
    }
    let names: BTreeSet<String> = services.keys().cloned().collect();
    for service in services.values_mut() {
        service.depends_on.retain(|d| names.contains(d));
    }
    services
}

/// Compose's `additional_contexts` as the scanner sees them: `docker-image://REF` is
/// that image, `service:NAME` the image that service builds (so the plan finds it local
/// and orders the builds); a directory or a URL is no image.
pub(crate) fn named_contexts(
    project: &ComposeProject,
    contexts: &BTreeMap<String, compose::NamedContext>,
) -> BTreeMap<String, NamedContext> {
    contexts
        .iter()
        .map(|(name, context)| {
            let context = match context {
                compose::NamedContext::Image(image) => NamedContext::Image(image.clone()),
                compose::NamedContext::Service(other) => project
                    .services
                    .get(other)
                    .and_then(|s| project.built_image(s))
                    .map_or(NamedContext::Local, NamedContext::Image),
                compose::NamedContext::Other(_) => NamedContext::Local,
            };
            (name.clone(), context)
        })
        .collect()
}

fn from_directories(root: &Path, dockerfiles: &[PathBuf]) -> BTreeMap<String, Service> {
    let base = root
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "drbuild".into());
    let prefix = sanitize(&base);
    // Listed, then built in one go: a map built from a list fills its nodes, one grown
    // by inserts leaves them half empty (10,000 services: 3 MiB less).
    let mut services = Vec::with_capacity(dockerfiles.len());
    for dockerfile in dockerfiles {
        if dockerfile.file_name().is_none_or(|n| n != "Dockerfile") {
            continue;
        }
        let context = dockerfile
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let name = if context.as_os_str().is_empty() {
            prefix.clone()
        } else {
            sanitize(&context.to_string_lossy())
        };
        let image = format!("{prefix}-{name}");
        services.push((
            name.clone(),
            Service::new(name, image, context, dockerfile.clone()),
        ));
    }
    services.into_iter().collect()
}

/// The repository part of a reference as written: without `@digest` and `:tag`.
fn name_part(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

/// A repository's last path segment (`library/redis` → `redis`).
fn last_segment(repository: &str) -> &str {
    repository.rsplit('/').next().unwrap_or(repository)
}

pub(super) fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = s.trim_matches(['-', '.', '_']);
    // One allocation for the usual name, which has nothing to trim.
    if trimmed.len() == s.len() {
        s
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, deps: &[&str]) -> Service {
        Service {
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..Service::new(
                name,
                format!("x-{name}"),
                name,
                PathBuf::from(name).join("Dockerfile"),
            )
        }
    }

    fn set(services: Vec<Service>) -> ServiceSet {
        ServiceSet {
            root: PathBuf::from("."),
            services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
            origin: ServiceOrigin::Directories,
        }
    }

    #[test]
    fn directory_names_as_image_names() {
        assert_eq!(sanitize("services/Api_v2"), "services-api_v2");
        assert_eq!(sanitize("apps/web.app"), "apps-web.app");
        assert_eq!(sanitize("_tools/Crème/"), "tools-cr-me");
        assert_eq!(sanitize("My Project"), "my-project");
        assert_eq!(sanitize("--"), "");
    }

    #[test]
    fn order_puts_dependencies_first() {
        let s = set(vec![
            service("nginx", &["api", "web"]),
            service("api", &["base"]),
            service("web", &[]),
            service("base", &[]),
        ]);
        let order = s.order().unwrap();
        let at = |n: &str| order.iter().position(|x| x == n).unwrap();
        assert!(at("base") < at("api") && at("api") < at("nginx") && at("web") < at("nginx"));
    }

    #[test]
    fn cycle_is_named() {
        let s = set(vec![
            service("a", &["b"]),
            service("b", &["c"]),
            service("c", &["a"]),
            service("d", &[]),
        ]);
        let e = s.order().unwrap_err();
        assert_eq!(e.to_string(), "dependency cycle: a -> b -> c -> a");
    }

    #[test]
    fn select_drops_dependencies_outside() {
        let mut s = set(vec![
            service("a", &["b"]),
            service("b", &[]),
            service("c", &[]),
        ]);
        s.select(&["a".into()], &[]).unwrap();
        assert_eq!(s.services.keys().collect::<Vec<_>>(), ["a"]);
        assert!(s.services["a"].depends_on.is_empty());
        assert!(matches!(
            s.select(&["zzz".into()], &[]),
            Err(ServiceError::UnknownService { .. })
        ));
    }

    #[test]
    fn config_contexts_are_directories_images_and_other_services() {
        let file = ConfigFile::parse(
            Path::new("drbuild.yaml"),
            "services:\n  base:\n    image: acme/base:1\n  app:\n    contexts:\n      \
             assets: ./web/../assets\n      base: target:base\n      \
             tools: docker-image://alpine/git:2.43.0\n      \
             docs: https://example.com/docs.git\n",
        )
        .unwrap();
        let services = from_config(&file).unwrap();
        let app = &services["app"];
        assert_eq!(
            app.named_contexts,
            BTreeMap::from([
                ("assets".to_owned(), NamedContext::Local),
                ("base".to_owned(), NamedContext::Image("acme/base:1".into())),
                ("docs".to_owned(), NamedContext::Local),
                (
                    "tools".to_owned(),
                    NamedContext::Image("alpine/git:2.43.0".into())
                ),
            ])
        );
        assert_eq!(
            app.context_sources,
            BTreeMap::from([
                ("assets".to_owned(), "assets".to_owned()),
                ("docs".to_owned(), "https://example.com/docs.git".to_owned()),
            ])
        );
        assert!(app.depends_on.contains("base"));
        let file = ConfigFile::parse(
            Path::new("drbuild.yaml"),
            "services:\n  app:\n    contexts:\n      base: target:nope\n",
        )
        .unwrap();
        assert_eq!(
            from_config(&file).unwrap_err().to_string(),
            "drbuild.yaml: service `app`: context `base`: no service `nope` in this file"
        );
    }

    #[test]
    fn build_caches_are_a_services_own_else_the_files_default() {
        let file = ConfigFile::parse(
            Path::new("drbuild.yaml"),
            "cache: type=registry,ref=127.0.0.1:5000/cache/{service},mode=max\n\
             services:\n  api: {}\n  web:\n    cache-from: [acme/web:cache]\n    cache-to: []\n",
        )
        .unwrap();
        let services = from_config(&file).unwrap();
        assert_eq!(
            services["api"].cache_from,
            ["type=registry,ref=127.0.0.1:5000/cache/api"]
        );
        assert_eq!(
            services["api"].cache_to,
            ["type=registry,ref=127.0.0.1:5000/cache/api,mode=max"]
        );
        assert_eq!(services["web"].cache_from, ["acme/web:cache"]);
        assert!(services["web"].cache_to.is_empty());
    }

    #[test]
    fn config_secrets_parse_and_bad_ones_name_the_service() {
        let file = ConfigFile::parse(
            Path::new("drbuild.yaml"),
            "services:\n  api:\n    secrets: [\"id=npm,src=.npmrc\", \"id=gh,env=GH_TOKEN\"]\n",
        )
        .unwrap();
        let services = from_config(&file).unwrap();
        let ids: Vec<String> = services["api"]
            .secrets
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ids, ["id=npm,src=.npmrc", "id=gh,env=GH_TOKEN"]);
        let file = ConfigFile::parse(
            Path::new("drbuild.yaml"),
            "services:\n  api:\n    secrets: [\"src=.npmrc\"]\n",
        )
        .unwrap();
        let err = from_config(&file).unwrap_err().to_string();
        assert_eq!(
            err,
            "drbuild.yaml: service `api`: invalid secret `src=.npmrc`: no id (expected id=ID[,src=FILE|,env=VAR])"
        );
    }
}
