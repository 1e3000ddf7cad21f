//! Plan: what a tree needs and what it builds. Every external image with each place
//! that names it, the images the tree builds itself, and its services with the order
//! they build in ([`services`]).
//!
//! Each Dockerfile is read and parsed once; one a service builds is scanned with that
//! service's args and platform, so the plan and the build agree on what `FROM` means.
//!
//! May import: `vocab`, `discover`, `parse`, `config`.

pub mod services;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

pub use crate::vocab::Wanted;
pub use services::{Service, ServiceError, ServiceOrigin, ServiceSet};

use crate::config::ConfigFile;
use crate::discover::{walk, DiscoverOptions, FileKind};
use crate::parse::compose::{group_by_directory, ComposeProject};
use crate::parse::dockerfile::{Dockerfile, DockerfileError, ImageScan, ScanOptions};
use crate::vocab::{ImageReference, InputError, Platform, ReferenceError, SourceKind};

/// A place in the tree that names an image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ImageSource {
    /// The file, relative to the tree's root.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// What names the image there.
    pub kind: SourceKind,
}

/// An external image, every place that needs it, and the platforms it is needed for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedImage {
    /// The normalized reference.
    pub reference: ImageReference,
    /// Where it is needed, sorted.
    pub sources: Vec<ImageSource>,
    /// The platforms it is needed for (`FROM --platform=…`, compose `platform:`,
    /// `--platform`; the target's when nothing says), sorted.
    pub platforms: Vec<Platform>,
}

/// Something the plan could not determine.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PlanWarning {
    /// The file, relative to the tree's root.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// What could not be determined.
    pub message: String,
}

/// A tree that cannot be planned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The root is missing or not a directory.
    #[error("{}: not a directory", path.display())]
    NotADirectory {
        /// The root given.
        path: PathBuf,
    },
    /// A Dockerfile cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A Dockerfile is invalid.
    #[error("{}:{}: {source}", path.display(), source.line())]
    Dockerfile {
        /// The file.
        path: PathBuf,
        /// What is wrong and where.
        source: DockerfileError,
    },
    /// A compose file or `drbuild.yaml` is unreadable or invalid.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A compose `image:` is not a valid reference.
    #[error("{}:{line}: {source}", path.display())]
    Reference {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Why it is invalid.
        source: ReferenceError,
    },
    /// The services are invalid (an image name Docker rejects…).
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl PlanError {
    /// The file and line the error points at, when it points at one.
    pub fn location(&self) -> Option<(&Path, usize)> {
        match self {
            PlanError::Dockerfile { path, source } => Some((path, source.line())),
            PlanError::Input(e) => Some(e.location()),
            PlanError::Reference { path, line, .. } => Some((path, *line)),
            PlanError::Service(e) => e.location(),
            _ => None,
        }
    }
}

/// How to plan a tree.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// How to walk the tree.
    pub discover: DiscoverOptions,
    /// Build args for every Dockerfile, over each service's own (as `docker compose
    /// build --build-arg` does).
    pub build_args: BTreeMap<String, String>,
    /// Target platform; the host's when `None`.
    pub platform: Option<Platform>,
    /// Variables for compose interpolation; the process environment when `None`.
    pub env: Option<BTreeMap<String, String>>,
}

/// Every external image a tree needs, and what it builds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// External images, sorted by reference.
    pub images: Vec<PlannedImage>,
    /// Images the tree builds itself (compose services with `build:`, drbuild.yaml
    /// services), sorted.
    pub local: Vec<ImageReference>,
    /// What could not be determined, sorted by file and line.
    pub warnings: Vec<PlanWarning>,
    /// The Dockerfiles found, relative to the root.
    #[serde(skip)]
    pub dockerfiles: Vec<PathBuf>,
    /// The compose projects found.
    #[serde(skip)]
    pub compose: Vec<ComposeProject>,
    /// `drbuild.yaml`, when the tree has one.
    #[serde(skip)]
    pub config: Option<ConfigFile>,
    /// The services the tree builds, with their dependencies.
    #[serde(skip)]
    pub services: ServiceSet,
}

impl Plan {
    /// Walks `root` and works out every external image it needs and every service it builds.
    pub fn for_tree(root: &Path, options: &PlanOptions) -> Result<Plan, PlanError> {
        if !root.is_dir() {
            return Err(PlanError::NotADirectory {
                path: root.to_path_buf(),
            });
        }
        let config = ConfigFile::find(root)?;
        let (parsed, compose_files) = read_tree(root, &options.discover);
        let mut dockerfiles = BTreeMap::new();
        for (path, result) in parsed {
            dockerfiles.insert(path, result?);
        }
        let env = options
            .env
            .clone()
            .unwrap_or_else(|| std::env::vars().collect());
        let projects = group_by_directory(&compose_files)
            .iter()
            .map(|group| ComposeProject::load(root, group, &env).map_err(|e| e.under(root)))
            .collect::<Result<Vec<_>, _>>()?;
        let found: Vec<PathBuf> = dockerfiles.keys().cloned().collect();
        let mut services = ServiceSet::define(root, config.as_ref(), &projects, &found)?;
        for service in services.services.values_mut() {
            // The run's `--build-arg`s reach every build, over the service's own.
            service.args.extend(options.build_args.clone());
        }

        let base = ScanOptions {
            build_args: options.build_args.clone(),
            build_platform: Platform::host(),
            target_platform: options.platform.clone().unwrap_or_default(),
        };
        // Who builds each Dockerfile, with which args: compose's builds and the services.
        let mut builds: BTreeMap<PathBuf, Vec<ScanOptions>> = BTreeMap::new();
        for project in &projects {
            for service in project.services.values() {
                if let Some(build) = &service.build {
                    builds
                        .entry(build.dockerfile.clone())
                        .or_default()
                        .push(base.for_build(&build.args, service.platform.as_deref()));
                }
            }
        }
        for service in services.services.values() {
            let scan = base.for_build(&service.args, service.platform.as_deref());
            let list = builds.entry(service.dockerfile.clone()).or_default();
            if !list.contains(&scan) {
                list.push(scan);
            }
        }

        // A build may name a Dockerfile the walk does not find (`docker/build.df`).
        for path in builds.keys() {
            if !dockerfiles.contains_key(path) && root.join(path).is_file() {
                dockerfiles.insert(path.clone(), read_dockerfile(root, path)?);
            }
        }

        let mut planner = Planner::default();
        for project in &projects {
            planner.compose(root, project, &base.target_platform)?;
        }
        for service in services.services.values() {
            if matches!(services.origin, ServiceOrigin::Config(_)) {
                if let Ok(image) = ImageReference::parse(&service.image) {
                    planner.local.insert(image);
                }
            }
        }
        for (path, file) in &dockerfiles {
            let scans = builds.get(path).map_or(&[][..], Vec::as_slice);
            if scans.is_empty() {
                planner.add_scan(path, scan(root, path, file, &base)?);
            }
            for options in scans {
                planner.add_scan(path, scan(root, path, file, options)?);
            }
        }
        for service in services.services.values_mut() {
            let Some(file) = dockerfiles.get(&service.dockerfile) else {
                // Compose's own builds are reported below, once per definition.
                if let (ServiceOrigin::Config(_), Some((path, line))) =
                    (&services.origin, &service.defined_in)
                {
                    planner.warnings.insert(PlanWarning {
                        path: path.clone(),
                        line: *line,
                        message: format!(
                            "service `{}`: Dockerfile `{}` not found",
                            service.name,
                            service.dockerfile.display()
                        ),
                    });
                }
                continue;
            };
            // A `# syntax=` frontend parses heredocs itself; the built-in one may not.
            service.has_heredocs = file.has_heredocs() && file.syntax().is_none();
            let options = base.for_build(&service.args, service.platform.as_deref());
            if let Ok(found) = file.scan(&options) {
                service.uses = found.images.into_iter().map(|u| u.reference).collect();
            }
        }
        for project in &projects {
            for service in project.services.values() {
                let Some(build) = &service.build else {
                    continue;
                };
                if !dockerfiles.contains_key(&build.dockerfile) {
                    planner.warnings.insert(PlanWarning {
                        path: build.path.clone(),
                        line: build.line,
                        message: format!(
                            "service `{}`: Dockerfile `{}` not found",
                            service.name,
                            build.dockerfile.display()
                        ),
                    });
                }
            }
        }
        services.derive_dependencies();
        let mut plan = planner.finish();
        plan.dockerfiles = found;
        plan.compose = projects;
        plan.config = config;
        plan.services = services;
        Ok(plan)
    }

    /// The external image references, in order.
    pub fn references(&self) -> impl Iterator<Item = &ImageReference> {
        self.images.iter().map(|i| &i.reference)
    }

    /// Every image of the plan once per platform it is needed for.
    pub fn wanted(&self) -> Vec<Wanted> {
        self.images.iter().flat_map(PlannedImage::wanted).collect()
    }

    /// The external images the Dockerfiles of `services` use, once per platform (all
    /// the plan's when every service is there).
    pub fn images_for(&self, services: &ServiceSet) -> Vec<Wanted> {
        let dockerfiles: BTreeSet<&Path> = services
            .services
            .values()
            .map(|s| s.dockerfile.as_path())
            .collect();
        self.images
            .iter()
            .filter(|i| {
                i.sources
                    .iter()
                    .any(|s| dockerfiles.contains(s.path.as_path()))
            })
            .flat_map(PlannedImage::wanted)
            .collect()
    }
}

impl PlannedImage {
    /// The image once per platform it is needed for.
    pub fn wanted(&self) -> impl Iterator<Item = Wanted> + '_ {
        self.platforms.iter().map(|p| Wanted {
            reference: self.reference.clone(),
            platform: Some(p.clone()),
        })
    }
}

impl ScanOptions {
    /// These options for one build: its args over the tree-wide ones (those given to
    /// the whole run win, as `--build-arg` does), and its platform.
    fn for_build(&self, args: &BTreeMap<String, String>, platform: Option<&str>) -> ScanOptions {
        let mut options = self.clone();
        let mut merged = args.clone();
        merged.extend(self.build_args.clone());
        options.build_args = merged;
        if let Some(p) = platform.and_then(|p| p.parse().ok()) {
            options.target_platform = p;
        }
        options
    }
}

type Parsed = Vec<(PathBuf, Result<Dockerfile, PlanError>)>;

/// Walks the tree: every Dockerfile read and parsed on the walker's threads, and the
/// compose files found; both sorted by path.
fn read_tree(root: &Path, discover: &DiscoverOptions) -> (Parsed, Vec<PathBuf>) {
    let parsed: Mutex<Parsed> = Mutex::new(Vec::new());
    let compose_files: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    walk(root, discover, |path, kind| match kind {
        FileKind::Dockerfile => {
            let result = read_dockerfile(root, path);
            crate::support::lock(&parsed).push((path.to_path_buf(), result));
        }
        FileKind::Compose => crate::support::lock(&compose_files).push(path.to_path_buf()),
    });
    let mut parsed = parsed.into_inner().unwrap_or_else(|e| e.into_inner());
    parsed.sort_unstable_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
    let mut compose_files = compose_files
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    compose_files.sort();
    (parsed, compose_files)
}

/// A path relative to the root, as one can open it from the current directory
/// (errors name files this way).
fn openable(root: &Path, path: &Path) -> PathBuf {
    if root == Path::new(".") || root.as_os_str().is_empty() {
        path.to_path_buf()
    } else {
        root.join(path)
    }
}

fn read_dockerfile(root: &Path, path: &Path) -> Result<Dockerfile, PlanError> {
    let bytes = std::fs::read(root.join(path)).map_err(|source| PlanError::Io {
        path: openable(root, path),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    Dockerfile::parse(&text).map_err(|source| PlanError::Dockerfile {
        path: openable(root, path),
        source,
    })
}

fn scan(
    root: &Path,
    path: &Path,
    file: &Dockerfile,
    options: &ScanOptions,
) -> Result<ImageScan, PlanError> {
    file.scan(options).map_err(|source| PlanError::Dockerfile {
        path: openable(root, path),
        source,
    })
}

#[derive(Default)]
struct Planner {
    images: BTreeMap<ImageReference, (BTreeSet<ImageSource>, BTreeSet<Platform>)>,
    local: BTreeSet<ImageReference>,
    warnings: BTreeSet<PlanWarning>,
}

impl Planner {
    fn compose(
        &mut self,
        root: &Path,
        project: &ComposeProject,
        target: &Platform,
    ) -> Result<(), PlanError> {
        for w in &project.warnings {
            self.warnings.insert(PlanWarning {
                path: w.path.clone(),
                line: w.line,
                message: w.value.clone(),
            });
        }
        for service in project.services.values() {
            let parse = |text: &str, path: &Path, line: usize| {
                ImageReference::parse(text).map_err(|source| PlanError::Reference {
                    path: openable(root, path),
                    line,
                    source,
                })
            };
            let platform = service
                .platform
                .as_deref()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| target.clone());
            if let Some(built) = project.built_image(service) {
                let (path, line) = match (&service.image, &service.build) {
                    (Some(i), _) => (i.path.clone(), i.line),
                    (None, Some(b)) => (b.path.clone(), b.line),
                    (None, None) => continue,
                };
                let reference = parse(&built, &path, line)?;
                self.images.remove(&reference);
                self.local.insert(reference);
            } else if let Some(image) = &service.image {
                let reference = parse(&image.value, &image.path, image.line)?;
                self.add(
                    reference,
                    ImageSource {
                        path: image.path.clone(),
                        line: image.line,
                        kind: SourceKind::Compose,
                    },
                    platform,
                );
            }
        }
        Ok(())
    }

    fn add_scan(&mut self, path: &Path, scan: ImageScan) {
        for w in scan.warnings {
            self.warnings.insert(PlanWarning {
                path: path.to_path_buf(),
                line: w.line,
                message: w.message,
            });
        }
        for image in scan.images {
            self.add(
                image.reference,
                ImageSource {
                    path: path.to_path_buf(),
                    line: image.line,
                    kind: image.kind,
                },
                image.platform,
            );
        }
    }

    fn add(&mut self, reference: ImageReference, source: ImageSource, platform: Platform) {
        if !self.local.contains(&reference) {
            let (sources, platforms) = self.images.entry(reference).or_default();
            sources.insert(source);
            platforms.insert(platform);
        }
    }

    fn finish(self) -> Plan {
        let local = self.local;
        Plan {
            images: self
                .images
                .into_iter()
                .filter(|(r, _)| !local.contains(r))
                .map(|(reference, (sources, platforms))| PlannedImage {
                    reference,
                    sources: sources.into_iter().collect(),
                    platforms: platforms.into_iter().collect(),
                })
                .collect(),
            local: local.into_iter().collect(),
            warnings: self.warnings.into_iter().collect(),
            ..Plan::default()
        }
    }
}
