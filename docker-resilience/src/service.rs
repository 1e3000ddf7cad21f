//! The services a tree builds, and the order to build them in.
//!
//! Services come from `drbuild.yaml` when there is one, else from the compose files'
//! services that have `build:`, else one per directory holding a `Dockerfile`. A
//! service depends on the services named in its `depends_on`/`depends-on` and on
//! those whose image its Dockerfile uses (`FROM`, `COPY --from`, `RUN --mount=from`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::compose::Located;
use crate::config::{Config, ConfigError, ConfigFile};
use crate::dockerfile::{Dockerfile, ScanOptions};
use crate::plan::Plan;
use crate::platform::Platform;
use crate::reference::ImageReference;

/// A service that cannot be set up for building.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// `drbuild.yaml` is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
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
    /// A service's Dockerfile cannot be read or parsed.
    #[error("{}:{line}: {message}", path.display())]
    Dockerfile {
        /// The Dockerfile.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// What is wrong.
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
            ServiceError::Config(ConfigError::Invalid { path, line, .. })
            | ServiceError::InvalidImage { path, line, .. }
            | ServiceError::Dockerfile { path, line, .. } => Some((path, *line)),
            _ => None,
        }
    }
}

/// Where the services were defined.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceOrigin {
    /// A `drbuild.yaml`.
    Config(PathBuf),
    /// Compose files' services with `build:`.
    Compose,
    /// One service per directory holding a `Dockerfile`.
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
}

/// The services of a tree, with their dependencies resolved.
#[derive(Debug, Clone)]
pub struct ServiceSet {
    /// The tree's root.
    pub root: PathBuf,
    /// Services by name.
    pub services: BTreeMap<String, Service>,
    /// Where they were defined.
    pub origin: ServiceOrigin,
    /// The `drbuild.yaml` settings, when there is one.
    pub config: Option<Config>,
    /// What was ignored (unknown config keys…).
    pub warnings: Vec<Located<String>>,
}

impl ServiceSet {
    /// The services of the tree whose plan is `plan`.
    pub fn load(root: &Path, plan: &Plan) -> Result<ServiceSet, ServiceError> {
        let (mut services, origin, config, warnings) = match ConfigFile::find(root)? {
            Some(file) => {
                let services = from_config(&file)?;
                (
                    services,
                    ServiceOrigin::Config(file.path.clone()),
                    Some(file.config),
                    file.warnings,
                )
            }
            None => {
                let compose = from_compose(plan);
                if compose.is_empty() {
                    (
                        from_directories(root, plan),
                        ServiceOrigin::Directories,
                        None,
                        Vec::new(),
                    )
                } else {
                    (compose, ServiceOrigin::Compose, None, Vec::new())
                }
            }
        };
        derive_dependencies(root, &mut services)?;
        let set = ServiceSet {
            root: root.to_path_buf(),
            services,
            origin,
            config,
            warnings,
        };
        set.order()?;
        Ok(set)
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
    pub fn inputs(&self, plan: &Plan) -> Vec<PathBuf> {
        let mut inputs = BTreeSet::new();
        if let ServiceOrigin::Config(path) = &self.origin {
            inputs.insert(path.strip_prefix(&self.root).unwrap_or(path).to_path_buf());
        }
        for project in &plan.compose {
            inputs.extend(project.files.iter().cloned());
        }
        for service in self.services.values() {
            inputs.insert(service.dockerfile.clone());
            inputs.insert(service.context.clone());
        }
        inputs.into_iter().collect()
    }
}

fn from_config(file: &ConfigFile) -> Result<BTreeMap<String, Service>, ServiceError> {
    let mut services = BTreeMap::new();
    for (name, s) in &file.config.services {
        let context = s.context.clone().unwrap_or_else(|| PathBuf::from(name));
        let dockerfile = context.join(s.dockerfile.clone().unwrap_or_else(|| "Dockerfile".into()));
        let image = s.image.clone().unwrap_or_else(|| format!("drbuild-{name}"));
        if let Err(e) = ImageReference::parse(&image) {
            return Err(ServiceError::InvalidImage {
                service: name.clone(),
                image,
                path: file.path.clone(),
                line: 0,
                message: e.to_string(),
            });
        }
        services.insert(
            name.clone(),
            Service {
                name: name.clone(),
                context: normalize(&context),
                dockerfile: normalize(&dockerfile),
                image,
                args: s.args.clone(),
                target: s.target.clone(),
                platform: s.platform.clone(),
                network: s.network.clone().or_else(|| file.config.network.clone()),
                depends_on: s.depends_on.iter().cloned().collect(),
            },
        );
    }
    Ok(services)
}

fn from_compose(plan: &Plan) -> BTreeMap<String, Service> {
    let mut services = BTreeMap::new();
    let several = plan.compose.len() > 1;
    for project in &plan.compose {
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
                    context: normalize(&build.context),
                    dockerfile: normalize(&build.dockerfile),
                    image,
                    args: build.args.clone(),
                    target: build.target.clone(),
                    platform: service.platform.clone(),
                    network: build.network.clone(),
                    // Only built services order builds; `postgres` in depends_on does not.
                    depends_on: service.depends_on.iter().cloned().collect(),
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

fn from_directories(root: &Path, plan: &Plan) -> BTreeMap<String, Service> {
    let base = root
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "drbuild".into());
    let mut services = BTreeMap::new();
    for dockerfile in &plan.dockerfiles {
        if dockerfile.file_name().is_none_or(|n| n != "Dockerfile") {
            continue;
        }
        let context = dockerfile
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let name = if context.as_os_str().is_empty() {
            sanitize(&base)
        } else {
            sanitize(&context.to_string_lossy())
        };
        let image = format!("{}-{}", sanitize(&base), name);
        services.insert(
            name.clone(),
            Service {
                name,
                context: context.clone(),
                dockerfile: dockerfile.clone(),
                image,
                args: BTreeMap::new(),
                target: None,
                platform: None,
                network: None,
                depends_on: BTreeSet::new(),
            },
        );
    }
    services
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.trim_matches(['-', '.', '_']).to_owned()
}

/// Drops `.` components and a leading `./`.
fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

fn derive_dependencies(
    root: &Path,
    services: &mut BTreeMap<String, Service>,
) -> Result<(), ServiceError> {
    let by_image: BTreeMap<ImageReference, String> = services
        .values()
        .filter_map(|s| Some((ImageReference::parse(&s.image).ok()?, s.name.clone())))
        .collect();
    for service in services.values_mut() {
        let path = root.join(&service.dockerfile);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // reported when the build starts
        };
        let file = Dockerfile::parse(&text).map_err(|e| ServiceError::Dockerfile {
            path: service.dockerfile.clone(),
            line: e.line(),
            message: e.to_string(),
        })?;
        let mut options = ScanOptions {
            build_args: service.args.clone(),
            ..ScanOptions::default()
        };
        if let Some(p) = service
            .platform
            .as_deref()
            .and_then(|p| p.parse::<Platform>().ok())
        {
            options.target_platform = p;
        }
        let Ok(scan) = file.scan(&options) else {
            continue;
        };
        for used in scan.images {
            if let Some(other) = by_image.get(&used.reference) {
                if *other != service.name {
                    service.depends_on.insert(other.clone());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, deps: &[&str]) -> Service {
        Service {
            name: name.into(),
            context: name.into(),
            dockerfile: PathBuf::from(name).join("Dockerfile"),
            image: format!("x-{name}"),
            args: BTreeMap::new(),
            target: None,
            platform: None,
            network: None,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn set(services: Vec<Service>) -> ServiceSet {
        ServiceSet {
            root: PathBuf::from("."),
            services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
            origin: ServiceOrigin::Directories,
            config: None,
            warnings: Vec::new(),
        }
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
}
