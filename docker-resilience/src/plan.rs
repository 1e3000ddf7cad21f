//! The plan: every external image a tree needs, with where each comes from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::compose::{group_by_directory, ComposeError, ComposeProject};
use crate::discover::{walk, DiscoverOptions, FileKind};
use crate::dockerfile::{Dockerfile, DockerfileError, ImageScan, ScanOptions};
use crate::platform::Platform;
use crate::reference::{ImageReference, ReferenceError};

/// What names an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// `FROM image`.
    From,
    /// `COPY --from=image`.
    CopyFrom,
    /// `RUN --mount=…,from=image`.
    MountFrom,
    /// `# syntax=image`.
    Syntax,
    /// A compose service's `image:` (one it does not build).
    Compose,
}

impl SourceKind {
    /// The name used in JSON and tables (`from`, `copy-from`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::From => "from",
            SourceKind::CopyFrom => "copy-from",
            SourceKind::MountFrom => "mount-from",
            SourceKind::Syntax => "syntax",
            SourceKind::Compose => "compose",
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// An external image and every place that needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedImage {
    /// The normalized reference.
    pub reference: ImageReference,
    /// Where it is needed, sorted.
    pub sources: Vec<ImageSource>,
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
    /// A file could not be read.
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
    /// A compose file is invalid.
    #[error(transparent)]
    Compose(#[from] ComposeError),
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
}

impl PlanError {
    /// The file and line the error points at, when it points at one.
    pub fn location(&self) -> Option<(&Path, usize)> {
        match self {
            PlanError::Dockerfile { path, source } => Some((path, source.line())),
            PlanError::Compose(ComposeError::Invalid { path, line, .. }) => Some((path, *line)),
            PlanError::Reference { path, line, .. } => Some((path, *line)),
            _ => None,
        }
    }
}

/// How to plan a tree.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// How to walk the tree.
    pub discover: DiscoverOptions,
    /// Build args for every Dockerfile (compose `args:` take precedence for its services).
    pub build_args: BTreeMap<String, String>,
    /// Target platform; the host's when `None`.
    pub platform: Option<Platform>,
    /// Variables for compose interpolation; the process environment when `None`.
    pub env: Option<BTreeMap<String, String>>,
}

/// Every external image a tree needs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// External images, sorted by reference.
    pub images: Vec<PlannedImage>,
    /// Images the tree builds itself (compose services with `build:`), sorted.
    pub local: Vec<ImageReference>,
    /// What could not be determined, sorted by file and line.
    pub warnings: Vec<PlanWarning>,
    /// The Dockerfiles found, relative to the root.
    #[serde(skip)]
    pub dockerfiles: Vec<PathBuf>,
    /// The compose projects found.
    #[serde(skip)]
    pub compose: Vec<ComposeProject>,
}

impl Plan {
    /// Walks `root` and works out every external image it needs.
    pub fn for_tree(root: &Path, options: &PlanOptions) -> Result<Plan, PlanError> {
        if !root.is_dir() {
            return Err(PlanError::NotADirectory {
                path: root.to_path_buf(),
            });
        }
        let platform = options.platform.clone().unwrap_or_default();
        let base_options = ScanOptions {
            build_args: options.build_args.clone(),
            build_platform: Platform::host(),
            target_platform: platform,
        };
        // Every Dockerfile is read, parsed and scanned on the walker's threads with the
        // tree-wide options; the few that compose builds are scanned again below with
        // each service's args.
        let scanned: Mutex<Vec<(PathBuf, Result<ImageScan, PlanError>)>> = Mutex::new(Vec::new());
        let compose_files: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
        walk(root, &options.discover, |path, kind| match kind {
            FileKind::Dockerfile => {
                let result = read_dockerfile(root, path)
                    .and_then(|file| scan(root, path, &file, &base_options));
                lock(&scanned).push((path.to_path_buf(), result));
            }
            FileKind::Compose => lock(&compose_files).push(path.to_path_buf()),
        });
        let mut scanned = scanned.into_inner().unwrap_or_else(|e| e.into_inner());
        scanned.sort_unstable_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
        let mut compose_files = compose_files
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        compose_files.sort();

        let env = options
            .env
            .clone()
            .unwrap_or_else(|| std::env::vars().collect());
        let mut planner = Planner::default();
        let mut projects = Vec::new();
        for group in group_by_directory(&compose_files) {
            let project = ComposeProject::load(root, &group, &env).map_err(|e| match e {
                ComposeError::Io { path, source } => PlanError::Io {
                    path: openable(root, &path),
                    source,
                },
                ComposeError::Invalid {
                    path,
                    line,
                    message,
                } => PlanError::Compose(ComposeError::Invalid {
                    path: openable(root, &path),
                    line,
                    message,
                }),
            })?;
            projects.push(project);
        }

        // Dockerfiles that compose builds are scanned with each service's args.
        let mut requested: BTreeMap<PathBuf, Vec<ScanOptions>> = BTreeMap::new();
        for project in &projects {
            planner.compose(root, project)?;
            for service in project.services.values() {
                let Some(build) = &service.build else {
                    continue;
                };
                let mut scan = base_options.clone();
                scan.build_args.extend(build.args.clone());
                if let Some(p) = service.platform.as_deref().and_then(|p| p.parse().ok()) {
                    scan.target_platform = p;
                }
                requested
                    .entry(build.dockerfile.clone())
                    .or_default()
                    .push(scan);
            }
        }

        let mut found = Vec::with_capacity(scanned.len());
        for (path, result) in scanned {
            let result = result?;
            if !requested.contains_key(&path) {
                planner.add_scan(&path, result);
            }
            found.push(path);
        }
        for (path, scans) in &requested {
            if !root.join(path).is_file() {
                continue; // reported below
            }
            let file = read_dockerfile(root, path)?;
            for options in scans {
                planner.add_scan(path, scan(root, path, &file, options)?);
            }
        }
        for project in &projects {
            for service in project.services.values() {
                if let Some(build) = &service.build {
                    if !root.join(&build.dockerfile).is_file() {
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
        }
        let mut plan = planner.finish();
        plan.dockerfiles = found;
        plan.compose = projects;
        Ok(plan)
    }

    /// The external image references, in order.
    pub fn references(&self) -> impl Iterator<Item = &ImageReference> {
        self.images.iter().map(|i| &i.reference)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
    images: BTreeMap<ImageReference, BTreeSet<ImageSource>>,
    local: BTreeSet<ImageReference>,
    warnings: BTreeSet<PlanWarning>,
}

impl Planner {
    fn compose(&mut self, root: &Path, project: &ComposeProject) -> Result<(), PlanError> {
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
            );
        }
    }

    fn add(&mut self, reference: ImageReference, source: ImageSource) {
        if !self.local.contains(&reference) {
            self.images.entry(reference).or_default().insert(source);
        }
    }

    fn finish(self) -> Plan {
        let local = self.local;
        Plan {
            images: self
                .images
                .into_iter()
                .filter(|(r, _)| !local.contains(r))
                .map(|(reference, sources)| PlannedImage {
                    reference,
                    sources: sources.into_iter().collect(),
                })
                .collect(),
            local: local.into_iter().collect(),
            warnings: self.warnings.into_iter().collect(),
            dockerfiles: Vec::new(),
            compose: Vec::new(),
        }
    }
}
