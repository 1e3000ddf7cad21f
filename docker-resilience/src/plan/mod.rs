//! Plan: what a tree needs and what it builds. Every external image with each place
//! that names it, the images the tree builds itself, and its services with the order
//! they build in ([`services`]).
//!
//! Each Dockerfile is read and parsed once; one a service builds is scanned with that
//! service's args and platform, so the plan and the build agree on what `FROM` means.
//!
//! May import: `vocab`, `discover`, `parse`, `config`.

mod build;
pub mod services;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

pub use crate::vocab::Wanted;
pub use services::{Service, ServiceError, ServiceOrigin, ServiceSet};

use crate::config::ConfigFile;
use crate::discover::{walk, DiscoverOptions, FileKind};
use crate::parse::compose::{profiles_from_env, projects_of, ComposeOptions, ComposeProject};
use crate::parse::dockerfile::{
    Dockerfile, DockerfileError, ImageScan, ImageUse, NamedContext, ScanOptions,
};
use crate::vocab::{ImageReference, InputError, Platform, ReferenceError, SourceKind};

use build::{Build, Source};

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
    /// Only stages that the builds' `target`s do not run use it (BuildKit skips them):
    /// listed, not fetched.
    pub optional: bool,
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
    /// Compose profiles to activate (`--profile`; `*` is every one); `None`:
    /// `COMPOSE_PROFILES` of [`PlanOptions::env`], else every profile, so that a prefetch
    /// is never short. A `COMPOSE_PROFILES` written in a project's `.env` says what `docker
    /// compose up` starts there; it does not narrow the plan.
    pub profiles: Option<Vec<String>>,
    /// The compose files of the root's project, relative to the root (`-f`); `None`:
    /// `COMPOSE_FILE`, else the files Compose reads by default.
    pub compose_files: Option<Vec<PathBuf>>,
}

/// Where the compose profiles a plan is narrowed to were given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ProfileOrigin {
    /// `--profile` ([`PlanOptions::profiles`]).
    Flag,
    /// `COMPOSE_PROFILES` in the environment drbuild runs in.
    Environment,
}

/// The compose profiles a plan covers, when not every one: the images of services of
/// other profiles are not planned (nor pulled, exported, synced or built).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileFilter {
    /// The active profiles.
    pub active: Vec<String>,
    /// Where they were given.
    pub from: ProfileOrigin,
    /// The services left out, sorted.
    pub skipped: Vec<String>,
}

impl std::fmt::Display for ProfileFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let from = match self.from {
            ProfileOrigin::Flag => "--profile",
            ProfileOrigin::Environment => "COMPOSE_PROFILES in the environment",
        };
        write!(
            f,
            "only compose profile{} `{}` ({from})",
            if self.active.len() == 1 { "" } else { "s" },
            self.active.join("`, `"),
        )?;
        if self.skipped.is_empty() {
            Ok(())
        } else {
            write!(
                f,
                ": service{} `{}` left out",
                if self.skipped.len() == 1 { "" } else { "s" },
                self.skipped.join("`, `")
            )
        }
    }
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
    /// The compose profiles the plan is narrowed to; `None`: every profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profiles: Option<ProfileFilter>,
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
        let base = ScanOptions {
            build_args: options.build_args.clone(),
            build_platform: Platform::host(),
            target_platform: options.platform.clone().unwrap_or_default(),
            named_contexts: BTreeMap::new(),
        };
        // The platform nothing chose is the host's, unless a Dockerfile is for Windows.
        let chosen = options.platform.is_some();
        let (parsed, compose_files) = read_tree(root, &options.discover, &base, chosen);
        let mut dockerfiles = Dockerfiles {
            paths: Vec::with_capacity(parsed.len()),
            found: Vec::with_capacity(parsed.len()),
            built: vec![false; parsed.len()],
            extra: Vec::new(),
        };
        for (path, result) in parsed {
            dockerfiles.paths.push(path);
            dockerfiles.found.push(result?);
        }
        tracing::debug!(
            "plan: walked {} Dockerfiles and {} compose files",
            dockerfiles.paths.len(),
            compose_files.len()
        );
        let env = options
            .env
            .clone()
            .unwrap_or_else(|| std::env::vars().collect());
        // The profiles are drbuild's rule, not the loader's: a project's `.env` does not
        // narrow the plan.
        let (profiles, origin) = match (&options.profiles, profiles_from_env(&env)) {
            (Some(given), _) => (given.clone(), Some(ProfileOrigin::Flag)),
            (None, Some(given)) => (given, Some(ProfileOrigin::Environment)),
            (None, None) => (vec!["*".to_owned()], None),
        };
        let explicit = compose_file_list(options, &env);
        let mut projects = Vec::new();
        for set in projects_of(&compose_files, explicit.as_deref()) {
            let compose_options = ComposeOptions {
                profiles: Some(profiles.clone()),
                optional: set.variant,
            };
            let loaded = ComposeProject::load_with(root, &set.files, &env, &compose_options);
            let project = match loaded {
                Ok(project) => project,
                // Read over its base, the variant says what is wrong.
                Err(e) if set.alone => {
                    tracing::debug!("{} is no project on its own: {e}", set.files[0].display());
                    continue;
                }
                Err(e) => return Err(e.under(root).into()),
            };
            if set.alone && !project.stands_alone() {
                continue;
            }
            projects.push(project);
        }
        let mut services =
            ServiceSet::define(root, config.as_ref(), &projects, &dockerfiles.paths)?;
        for service in services.services.values_mut() {
            // The run's `--build-arg`s reach every build, over the service's own.
            service.args.extend(options.build_args.clone());
            // A secret-named arg's value is masked in everything drbuild prints.
            for (name, value) in &service.args {
                if crate::vocab::is_secret_name(name) {
                    crate::vocab::register_secret(value);
                }
            }
        }

        let builds = Build::all(&projects, &services, &base);
        tracing::debug!(
            "plan: {} services, {} builds",
            services.services.len(),
            builds.len()
        );
        let mut inline = BTreeMap::new();
        // Where each build's Dockerfile is; which of the walk's the builds use.
        let mut slots: Vec<Option<Slot>> = Vec::with_capacity(builds.len());
        let mut last = None;
        for build in &builds {
            let mut slot = None;
            match &build.dockerfile {
                Source::File(path) => {
                    slot = dockerfiles.slot(path, last);
                    // A build may name a Dockerfile the walk does not find (`docker/build.df`).
                    if slot.is_none() && root.join(path).is_file() {
                        let file = read_dockerfile(root, path)?;
                        let found = Found::new(&file, &base, chosen);
                        dockerfiles.extra.push((path.clone(), found));
                        slot = Some(Slot::Extra(dockerfiles.extra.len() - 1));
                    }
                    if let Some(Slot::Walked(at)) = slot {
                        dockerfiles.built[at] = true;
                        last = Some(at);
                    }
                }
                // Parsed once, however many platforms the build is scanned for.
                Source::Inline { text, path, line } => {
                    if let std::collections::btree_map::Entry::Vacant(slot) =
                        inline.entry((path.clone(), *line))
                    {
                        slot.insert(
                            Dockerfile::parse(text)
                                .map_err(|e| inline_error(root, build, path, *line, &e))?,
                        );
                    }
                }
            }
            slots.push(slot);
        }

        // What the tree builds, and which build makes it: a use of that image is local
        // in the other builds, and external in its own build and in Dockerfiles that
        // no service builds.
        let mut planner = Planner::default();
        for project in &projects {
            planner.compose_warnings(project);
        }
        for build in &builds {
            if let Some(image) = &build.produces {
                planner
                    .local
                    .entry(image.clone())
                    .or_default()
                    .insert(build.id);
                if !build.variant {
                    planner.default_local.insert(image.clone());
                }
            }
        }
        for project in &projects {
            planner.compose_images(root, project, &base.target_platform)?;
        }
        // Where an inline Dockerfile's build would look for one: a file there is not
        // what that build uses.
        let superseded: BTreeSet<PathBuf> = projects
            .iter()
            .flat_map(|p| p.services.values())
            .filter_map(|s| s.build.as_ref())
            .filter(|b| b.dockerfile_inline.is_some())
            .map(|b| b.dockerfile.clone())
            .collect();
        // Each scan to add, taken from the walk's (or made again for a build's own
        // options); then added on as many threads as the walk had.
        let mut jobs = Vec::with_capacity(builds.len());
        let Dockerfiles {
            paths,
            found,
            built,
            extra,
        } = &mut dockerfiles;
        for ((path, file), built) in paths.iter().zip(found.iter_mut()).zip(built.iter()) {
            if *built || superseded.contains(path) {
                continue;
            }
            let scan = file.scan(root, path, &base, &base, chosen)?;
            jobs.push(Job {
                path,
                build: None,
                scan,
                heredocs: false,
                inline_at: None,
            });
        }
        for (build, slot) in builds.iter().zip(slots) {
            let (scan, heredocs, path, inline_at) = match &build.dockerfile {
                Source::File(path) => match slot.map(|slot| Dockerfiles::at(found, extra, slot)) {
                    Some(found) => {
                        let chosen = chosen || build.platform_chosen;
                        let options = build.options.as_deref().unwrap_or(&base);
                        let scan = found.scan(root, path, options, &base, chosen)?;
                        (scan, found.heredocs, path, None)
                    }
                    None => {
                        planner.warn(build, format!("Dockerfile `{}` not found", path.display()));
                        continue;
                    }
                },
                Source::Inline { path, line, .. } => {
                    let file = &inline[&(path.clone(), *line)];
                    let options = build.options.as_deref().unwrap_or(&base);
                    let scan = scan_for_os(file, options, chosen || build.platform_chosen)
                        .map_err(|e| inline_error(root, build, path, *line, &e))?;
                    (scan, builtin_heredocs(file), path, Some(*line))
                }
            };
            jobs.push(Job {
                path,
                build: Some(build),
                scan,
                heredocs,
                inline_at,
            });
        }
        for (key, heredocs, uses) in planner.add_jobs(jobs, options.discover.threads) {
            if let Some(service) = services.services.get_mut(key) {
                service.has_heredocs = heredocs;
                service.uses = uses;
            }
        }
        tracing::debug!("plan: scanned");
        // Independent, and each a few milliseconds on a big tree.
        let mut plan = std::thread::scope(|scope| {
            let finishing = scope.spawn(|| planner.finish());
            services.derive_dependencies();
            finishing.join()
        })
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        tracing::debug!("plan: done");
        plan.profiles = origin
            .filter(|_| !profiles.iter().any(|p| p == "*"))
            .map(|from| ProfileFilter {
                active: profiles,
                from,
                skipped: projects
                    .iter()
                    .flat_map(|p| p.inactive.iter().cloned())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            });
        plan.dockerfiles = dockerfiles.paths;
        plan.compose = projects;
        plan.config = config;
        plan.services = services;
        Ok(plan)
    }

    /// The external image references, in order.
    pub fn references(&self) -> impl Iterator<Item = &ImageReference> {
        self.images.iter().map(|i| &i.reference)
    }

    /// Every image of the plan once per platform it is needed for (not the optional
    /// ones: those only stages the builds' targets skip use).
    pub fn wanted(&self) -> Vec<Wanted> {
        self.images
            .iter()
            .filter(|i| !i.optional)
            .flat_map(PlannedImage::wanted)
            .collect()
    }

    /// The external images the Dockerfiles of `services` use, once per platform (all
    /// the plan's when every service is there).
    pub fn images_for(&self, services: &ServiceSet) -> Vec<Wanted> {
        let dockerfiles: BTreeSet<&Path> = services
            .services
            .values()
            .filter(|s| s.dockerfile_inline.is_none())
            .map(|s| s.dockerfile.as_path())
            .collect();
        // An inline Dockerfile's images point at its `build:` in the compose file.
        let inline: BTreeSet<(&Path, usize)> = services
            .services
            .values()
            .filter(|s| s.dockerfile_inline.is_some())
            .filter_map(|s| s.defined_in.as_ref().map(|(p, l)| (p.as_path(), *l)))
            .collect();
        self.images
            .iter()
            .filter(|i| !i.optional)
            .filter(|i| {
                i.sources.iter().any(|s| {
                    dockerfiles.contains(s.path.as_path())
                        || (s.kind != SourceKind::Compose
                            && inline.contains(&(s.path.as_path(), s.line)))
                })
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
    /// the whole run win, as `--build-arg` does), its platform and its named contexts;
    /// `None` when they are these options unchanged.
    fn for_build(
        &self,
        args: &BTreeMap<String, String>,
        platform: Option<&str>,
        named_contexts: BTreeMap<String, NamedContext>,
    ) -> Option<Box<ScanOptions>> {
        let platform = platform
            .and_then(|p| p.parse::<Platform>().ok())
            .filter(|p| *p != self.target_platform);
        if args.is_empty() && platform.is_none() && named_contexts == self.named_contexts {
            return None;
        }
        let mut options = self.clone();
        if !args.is_empty() {
            let mut merged = args.clone();
            merged.extend(self.build_args.clone());
            options.build_args = merged;
        }
        if let Some(p) = platform {
            options.target_platform = p;
        }
        options.named_contexts = named_contexts;
        Some(Box::new(options))
    }
}

/// A Dockerfile of the tree: its scan with the run's own options (most builds scan with
/// exactly those), made on the walker's threads, and what the builds need to know of
/// it. The parsed file is not kept (10,000 of them are most of a plan's memory): a
/// build with other options reads and parses it again.
struct Found {
    /// Taken by the first scan that wants it; later ones read the file again.
    base: Option<Result<ImageScan, DockerfileError>>,
    /// [`builtin_heredocs`].
    heredocs: bool,
}

impl Found {
    fn new(file: &Dockerfile, base: &ScanOptions, chosen: bool) -> Found {
        // Held until the walk ends: without the room its vectors grew into (a third of
        // a big tree's memory, and memory first touched is a plan's biggest cost).
        let scan = scan_for_os(file, base, chosen).map(|mut scan| {
            scan.images.shrink_to_fit();
            scan.stages.shrink_to_fit();
            scan
        });
        Found {
            base: Some(scan),
            heredocs: builtin_heredocs(file),
        }
    }

    /// Its scan with `options`: the one made on the walk when they are `base`.
    fn scan(
        &mut self,
        root: &Path,
        path: &Path,
        options: &ScanOptions,
        base: &ScanOptions,
        chosen: bool,
    ) -> Result<ImageScan, PlanError> {
        let scanned = match self.base.take_if(|_| options == base) {
            Some(scan) => scan,
            None => scan_for_os(&read_dockerfile(root, path)?, options, chosen),
        };
        scanned.map_err(|source| PlanError::Dockerfile {
            path: openable(root, path),
            source,
        })
    }
}

/// Whether the built-in frontend must take `file`'s heredocs: it opens some, and names
/// no `# syntax=` frontend (which would parse them itself).
fn builtin_heredocs(file: &Dockerfile) -> bool {
    file.has_heredocs() && file.syntax().is_none()
}

/// `file` scanned with `options`; when nothing chose the platform (`chosen` false) and
/// one of its images is a Windows one ([`ImageReference::names_windows`]), scanned for
/// `windows/ARCH` instead: a Windows Dockerfile builds on a Windows daemon, and the
/// images it names (`mcr.microsoft.com/dotnet/sdk:8.0` too) are needed for Windows.
fn scan_for_os(
    file: &Dockerfile,
    options: &ScanOptions,
    chosen: bool,
) -> Result<ImageScan, DockerfileError> {
    let scan = file.scan(options)?;
    let windows = !chosen
        && options.target_platform.os() != "windows"
        && scan.images.iter().any(|u| u.reference.names_windows());
    if !windows {
        return Ok(scan);
    }
    let mut for_windows = options.clone();
    for_windows.target_platform =
        Platform::new("windows", options.target_platform.architecture(), None);
    file.scan(&for_windows)
}

/// The Dockerfiles of the tree with their scans: those the walk found, in path order,
/// and those only a build names. Every path here and in a build is clean (the walk's,
/// and [`crate::vocab::clean_path`]'s for the others): one file has one spelling.
struct Dockerfiles {
    /// Found by the walk, sorted with [`path_order`].
    paths: Vec<PathBuf>,
    /// Their scans, by index.
    found: Vec<Found>,
    /// Whether a build uses each, by index.
    built: Vec<bool>,
    /// Named by a build, not found by the walk (`docker/build.df`).
    extra: Vec<(PathBuf, Found)>,
}

/// Where a Dockerfile is among [`Dockerfiles`].
#[derive(Debug, Clone, Copy)]
enum Slot {
    Walked(usize),
    Extra(usize),
}

impl Dockerfiles {
    /// `path`'s slot; `after`: the walked one found last (builds come nearly in path
    /// order, so the next one is tried first).
    fn slot(&self, path: &Path, after: Option<usize>) -> Option<Slot> {
        let next = after.map_or(0, |at| at + 1);
        let hinted = self
            .paths
            .get(next)
            .filter(|p| p.as_os_str() == path.as_os_str())
            .map(|_| next);
        let walked = hinted.or_else(|| self.paths.binary_search_by(|p| path_order(p, path)).ok());
        match walked {
            Some(at) => Some(Slot::Walked(at)),
            None => self
                .extra
                .iter()
                .position(|(p, _)| p == path)
                .map(Slot::Extra),
        }
    }

    /// The Dockerfile in `slot` (of `found` and `extra`, borrowed apart from `paths`).
    fn at<'a>(
        found: &'a mut [Found],
        extra: &'a mut [(PathBuf, Found)],
        slot: Slot,
    ) -> &'a mut Found {
        match slot {
            Slot::Walked(at) => &mut found[at],
            Slot::Extra(at) => &mut extra[at].1,
        }
    }
}

type Parsed = Vec<(PathBuf, Result<Found, PlanError>)>;

/// Walks the tree: every Dockerfile read, parsed and scanned with `base` on the
/// walker's threads, and the compose files found; both sorted by path.
fn read_tree(
    root: &Path,
    discover: &DiscoverOptions,
    base: &ScanOptions,
    chosen: bool,
) -> (Parsed, Vec<PathBuf>) {
    let parsed: Mutex<Parsed> = Mutex::new(Vec::new());
    let compose_files: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    walk(root, discover, |path, kind| match kind {
        FileKind::Dockerfile => {
            let result = read_dockerfile(root, path).map(|file| Found::new(&file, base, chosen));
            crate::support::lock(&parsed).push((path.to_path_buf(), result));
        }
        FileKind::Compose => crate::support::lock(&compose_files).push(path.to_path_buf()),
    });
    let mut parsed = parsed.into_inner().unwrap_or_else(|e| e.into_inner());
    parsed.sort_unstable_by(|a, b| path_order(&a.0, &b.0));
    let mut compose_files = compose_files
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    compose_files.sort();
    (parsed, compose_files)
}

/// [`Path`]'s order (component by component) for the clean relative paths of a walk,
/// without its cost: the bytes compared with the separator below every other byte.
fn path_order(a: &Path, b: &Path) -> std::cmp::Ordering {
    let (a, b) = (
        a.as_os_str().as_encoded_bytes(),
        b.as_os_str().as_encoded_bytes(),
    );
    let rank = |x: u8| {
        if std::path::is_separator(char::from(x)) {
            0
        } else {
            x
        }
    };
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(at) => rank(a[at]).cmp(&rank(b[at])),
        None => a.len().cmp(&b.len()),
    }
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
    let bytes = read_small(&root.join(path)).map_err(|source| PlanError::Io {
        path: openable(root, path),
        source,
    })?;
    // Valid UTF-8 (nearly always) is checked the fast way, not chunk by chunk.
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(&bytes),
    };
    Dockerfile::parse(&text).map_err(|source| PlanError::Dockerfile {
        path: openable(root, path),
        source,
    })
}

/// A file's bytes, as [`std::fs::read`] gives them without its `statx` call for the
/// size (a Dockerfile is a few KiB; on a 10,000-file tree those calls are a tenth of
/// the walk's system calls).
fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::with_capacity(8192);
    // Through `Take`, whose `read_to_end` asks the file for no size hint.
    std::fs::File::open(path)?
        .take(u64::MAX)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// `COMPOSE_FILE` (split on `COMPOSE_PATH_SEPARATOR`, else `:`), unless the options
/// name the files.
fn compose_file_list(
    options: &PlanOptions,
    env: &BTreeMap<String, String>,
) -> Option<Vec<PathBuf>> {
    if let Some(files) = &options.compose_files {
        return Some(files.iter().map(|f| crate::vocab::clean_path(f)).collect());
    }
    let value = env.get("COMPOSE_FILE").filter(|v| !v.trim().is_empty())?;
    let separator = env
        .get("COMPOSE_PATH_SEPARATOR")
        .filter(|s| !s.is_empty())
        .map_or(":", String::as_str);
    Some(
        value
            .split(separator)
            .filter(|f| !f.is_empty())
            .map(|f| crate::vocab::clean_path(Path::new(f)))
            .collect(),
    )
}

/// A `dockerfile_inline` that does not parse or scan: an input error at its `build:`.
fn inline_error(
    root: &Path,
    build: &Build,
    path: &Path,
    line: usize,
    error: &DockerfileError,
) -> PlanError {
    PlanError::Input(InputError::Invalid {
        path: openable(root, path),
        line,
        message: format!(
            "service `{}`: dockerfile_inline line {}: {error}",
            build.service,
            error.line()
        ),
    })
}

#[derive(Default)]
struct Entry {
    /// In the order found; sorted and deduplicated at the end (cheaper than a set: the
    /// walk finds them nearly in order, and path comparisons are slow).
    sources: Vec<ImageSource>,
    /// Platforms of the uses that are needed; of every use.
    needed_on: BTreeSet<Platform>,
    used_on: BTreeSet<Platform>,
}

/// A scan for [`Planner::add_jobs`]: of the Dockerfile at `path`, for `build` (`None`:
/// no service builds it).
struct Job<'a> {
    path: &'a Path,
    build: Option<&'a Build>,
    scan: ImageScan,
    /// [`builtin_heredocs`] of its Dockerfile.
    heredocs: bool,
    /// The `build:` line of a `dockerfile_inline`.
    inline_at: Option<usize>,
}

#[derive(Default)]
struct Planner {
    images: BTreeMap<ImageReference, Entry>,
    /// Images the tree builds, and the builds that make each.
    local: BTreeMap<ImageReference, BTreeSet<usize>>,
    /// What the builds of the tree's default projects and services make: a variant runs
    /// those, and what its own builds make, as local images; any other image it names is
    /// one it pulls (`compose.prebuilt.yaml`).
    default_local: BTreeSet<ImageReference>,
    warnings: BTreeSet<PlanWarning>,
}

impl Planner {
    fn compose_warnings(&mut self, project: &ComposeProject) {
        for w in &project.warnings {
            self.warnings.insert(PlanWarning {
                path: w.path.clone(),
                line: w.line,
                message: w.value.clone(),
            });
        }
    }

    /// The `image:`s of services that are not built; a built one's name must parse.
    fn compose_images(
        &mut self,
        root: &Path,
        project: &ComposeProject,
        target: &Platform,
    ) -> Result<(), PlanError> {
        let own: BTreeSet<ImageReference> = project
            .services
            .values()
            .filter_map(|s| project.built_image(s))
            .filter_map(|i| ImageReference::parse(&i).ok())
            .collect();
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
                    (Some(i), _) => (&i.path, i.line),
                    (None, Some(b)) => (&b.path, b.line),
                    (None, None) => continue,
                };
                parse(&built, path, line)?;
                continue;
            }
            let Some(image) = &service.image else {
                continue;
            };
            let reference = parse(&image.value, &image.path, image.line)?;
            // The project runs the image another service builds.
            let local = if project.variant {
                self.default_local.contains(&reference) || own.contains(&reference)
            } else {
                self.local.contains_key(&reference)
            };
            if local {
                continue;
            }
            let platform = service
                .platform
                .as_deref()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| target.clone());
            self.add(
                reference,
                ImageSource {
                    path: image.path.clone(),
                    line: image.line,
                    kind: SourceKind::Compose,
                },
                platform,
                true,
            );
        }
        Ok(())
    }

    /// A warning about `build`, at its definition.
    fn warn(&mut self, build: &Build, message: String) {
        self.warnings.insert(PlanWarning {
            path: build.defined_in.0.clone(),
            line: build.defined_in.1,
            message: format!("service `{}`: {message}", build.service),
        });
    }

    fn is_needed(used: &ImageUse, needed: Option<&BTreeSet<usize>>) -> bool {
        match (used.stage, needed) {
            (Some(stage), Some(needed)) => needed.contains(&stage),
            _ => true,
        }
    }

    /// Adds the scans of `jobs`, split over up to `threads` threads (0: one per core)
    /// when there are enough to be worth it; gives each service's heredocs flag and the
    /// images its build uses.
    fn add_jobs<'a>(
        &mut self,
        jobs: Vec<Job<'a>>,
        threads: usize,
    ) -> Vec<(&'a str, bool, Vec<ImageReference>)> {
        /// Below this many scans a thread costs more than it saves.
        const PER_THREAD: usize = 1024;
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
        .min(jobs.len() / PER_THREAD)
        .max(1);
        let per_part = jobs.len().div_ceil(threads);
        let mut jobs = jobs.into_iter();
        let parts: Vec<Vec<Job<'a>>> = (0..threads)
            .map(|_| jobs.by_ref().take(per_part).collect())
            .collect();
        let local = &self.local;
        let add = |part| {
            let mut planner = Planner::default();
            let uses = planner.add_part(local, part);
            (planner, uses)
        };
        let done: Vec<(Planner, Vec<_>)> = if threads == 1 {
            parts.into_iter().map(add).collect()
        } else {
            std::thread::scope(|scope| {
                let running: Vec<_> = parts
                    .into_iter()
                    .map(|part| scope.spawn(move || add(part)))
                    .collect();
                running
                    .into_iter()
                    .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            })
        };
        let mut all_uses = Vec::new();
        for (planner, uses) in done {
            self.merge(planner);
            all_uses.extend(uses);
        }
        all_uses
    }

    /// [`Planner::add_jobs`] on one thread, with the tree's `local` images.
    fn add_part<'a>(
        &mut self,
        local: &BTreeMap<ImageReference, BTreeSet<usize>>,
        jobs: Vec<Job<'a>>,
    ) -> Vec<(&'a str, bool, Vec<ImageReference>)> {
        let mut uses = Vec::new();
        for job in jobs {
            let Some(build) = job.build else {
                self.add_scan(local, job.path, None, job.scan, None, None);
                continue;
            };
            let needed = match &build.target {
                Some(target) => match job.scan.needed_stages(Some(target)) {
                    Some(stages) => Some(stages),
                    None => {
                        self.warn(
                            build,
                            format!("target stage `{target}` is not in `{}`", job.path.display()),
                        );
                        None
                    }
                },
                None => None,
            };
            if let Some(key) = &build.service_key {
                let images = job
                    .scan
                    .images
                    .iter()
                    .filter(|u| Planner::is_needed(u, needed.as_ref()))
                    .map(|u| u.reference.clone())
                    .collect();
                uses.push((key.as_str(), job.heredocs, images));
            }
            self.add_scan(
                local,
                job.path,
                Some(build.id),
                job.scan,
                needed.as_ref(),
                job.inline_at,
            );
        }
        uses
    }

    /// Takes in what another planner found (sources are sorted when it finishes).
    fn merge(&mut self, other: Planner) {
        for (reference, entry) in other.images {
            let mine = self.images.entry(reference).or_default();
            mine.sources.extend(entry.sources);
            mine.needed_on.extend(entry.needed_on);
            mine.used_on.extend(entry.used_on);
        }
        self.warnings.extend(other.warnings);
    }

    /// A scan of `path` by build `owner` (`None`: no service builds it). `needed`: the
    /// stages its target runs; `inline_at`: the `build:` line of a `dockerfile_inline`.
    fn add_scan(
        &mut self,
        local: &BTreeMap<ImageReference, BTreeSet<usize>>,
        path: &Path,
        owner: Option<usize>,
        scan: ImageScan,
        needed: Option<&BTreeSet<usize>>,
        inline_at: Option<usize>,
    ) {
        for w in scan.warnings {
            self.warnings.insert(PlanWarning {
                path: path.to_path_buf(),
                line: inline_at.unwrap_or(w.line),
                message: w.message,
            });
        }
        for image in scan.images {
            let built_elsewhere = match (owner, local.get(&image.reference)) {
                (Some(owner), Some(builders)) => !builders.contains(&owner),
                _ => false,
            };
            if built_elsewhere {
                continue;
            }
            let needed = Self::is_needed(&image, needed);
            self.add(
                image.reference,
                ImageSource {
                    path: path.to_path_buf(),
                    line: inline_at.unwrap_or(image.line),
                    kind: image.kind,
                },
                image.platform,
                needed,
            );
        }
    }

    fn add(
        &mut self,
        reference: ImageReference,
        source: ImageSource,
        platform: Platform,
        needed: bool,
    ) {
        let entry = self.images.entry(reference).or_default();
        entry.sources.push(source);
        if needed && !entry.needed_on.contains(&platform) {
            entry.needed_on.insert(platform.clone());
        }
        if !entry.used_on.contains(&platform) {
            entry.used_on.insert(platform);
        }
    }

    fn finish(self) -> Plan {
        // An image only a variant's build makes, and another variant pulls, is external.
        let local = self
            .local
            .into_keys()
            .filter(|r| self.default_local.contains(r) || !self.images.contains_key(r))
            .collect();
        Plan {
            images: self
                .images
                .into_iter()
                .map(|(reference, entry)| {
                    let optional = entry.needed_on.is_empty();
                    let platforms = if optional {
                        entry.used_on
                    } else {
                        entry.needed_on
                    };
                    let mut sources = entry.sources;
                    // `ImageSource`'s order, with paths compared the cheap way.
                    sources.sort_unstable_by(|a, b| {
                        path_order(&a.path, &b.path)
                            .then(a.line.cmp(&b.line))
                            .then(a.kind.cmp(&b.kind))
                    });
                    sources.dedup();
                    PlannedImage {
                        reference,
                        sources,
                        platforms: platforms.into_iter().collect(),
                        optional,
                    }
                })
                .collect(),
            local,
            warnings: self.warnings.into_iter().collect(),
            ..Plan::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(fixture: &str) -> Plan {
        let root = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/compose"
        ))
        .join(fixture);
        let options = PlanOptions {
            platform: Some("linux/amd64".parse().unwrap()),
            env: Some(BTreeMap::new()),
            ..PlanOptions::default()
        };
        Plan::for_tree(&root, &options).unwrap()
    }

    /// `reference [optional] <- path:line…` per image.
    fn images(plan: &Plan) -> Vec<String> {
        plan.images
            .iter()
            .map(|i| {
                let sources: Vec<String> = i
                    .sources
                    .iter()
                    .map(|s| format!("{}:{}", s.path.display(), s.line))
                    .collect();
                let platforms: Vec<String> = i.platforms.iter().map(ToString::to_string).collect();
                format!(
                    "{}{} [{}] <- {}",
                    i.reference,
                    if i.optional { " (optional)" } else { "" },
                    platforms.join(","),
                    sources.join(" ")
                )
            })
            .collect()
    }

    #[test]
    fn path_order_is_paths_order() {
        let mut paths: Vec<PathBuf> = [
            "svc/Dockerfile",
            "svc-a/Dockerfile",
            "svc.b/x/Dockerfile",
            "svc/a/Dockerfile",
            "Dockerfile",
            "a b/Dockerfile",
            "svc",
            "sv/Dockerfile",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let mut expected = paths.clone();
        expected.sort();
        paths.sort_by(|a, b| path_order(a, b));
        assert_eq!(paths, expected);
    }

    #[test]
    fn a_build_tagged_with_its_own_base_still_needs_it() {
        let p = plan("own_base");
        assert_eq!(
            images(&p),
            ["docker.io/library/alpine:3.19 [linux/amd64] <- alpine/Dockerfile:1"],
            "needed by the build that makes it; local for the other"
        );
        assert!(p
            .local
            .iter()
            .any(|l| l.to_string() == "docker.io/library/alpine:3.19"));
        assert_eq!(
            p.services.services["app"].depends_on,
            BTreeSet::from(["alpine".to_owned()])
        );
    }

    #[test]
    fn named_contexts_are_images_or_the_builds_own() {
        let p = plan("contexts");
        assert_eq!(
            images(&p),
            [
                "docker.io/alpine/git:2.43.0 [linux/amd64] <- Dockerfile:2",
                "docker.io/library/ubuntu:22.04 [linux/amd64] <- base/Dockerfile:1",
            ]
        );
        // `service:base` is the image `base` builds: built first, never fetched.
        assert!(p
            .local
            .iter()
            .any(|l| l.to_string() == "docker.io/acme/base:dev"));
        assert_eq!(
            p.services.services["app"].depends_on,
            BTreeSet::from(["base".to_owned()])
        );
    }

    #[test]
    fn inline_dockerfiles_are_scanned_not_the_file_beside_them() {
        let p = plan("inline");
        assert_eq!(
            images(&p),
            [
                "docker.io/library/busybox:1.36 [linux/amd64] <- compose.yaml:5",
                "docker.io/library/python:3.12-slim [linux/amd64] <- compose.yaml:5",
            ]
        );
        let wanted = p.images_for(&p.services);
        assert_eq!(wanted.len(), 2);
    }

    #[test]
    fn a_target_needs_only_its_stages() {
        let p = plan("target");
        assert_eq!(
            images(&p),
            [
                "docker.io/cypress/included:13.6.0 (optional) [linux/amd64] <- Dockerfile:5",
                "docker.io/library/busybox:1.36 (optional) [linux/amd64] <- Dockerfile:10",
                "docker.io/library/golang:1.22 [linux/amd64] <- Dockerfile:4",
                "docker.io/library/node:20-alpine [linux/amd64] <- Dockerfile:1",
                "gcr.io/distroless/nodejs20-debian12:latest [linux/amd64] <- Dockerfile:7",
            ]
        );
        let wanted: Vec<String> = p.wanted().iter().map(|w| w.reference.to_string()).collect();
        assert_eq!(wanted.len(), 3, "{wanted:?}");
        assert_eq!(p.images_for(&p.services).len(), 3);
    }

    #[test]
    fn build_platforms_are_each_planned() {
        let p = plan("platforms");
        let host = Platform::host().to_string();
        assert_eq!(
            images(&p),
            [
                "docker.io/library/alpine:3.20 [linux/amd64,linux/arm64] <- Dockerfile:2"
                    .to_owned(),
                format!("docker.io/library/golang:1.22 [{host}] <- Dockerfile:1"),
                "docker.io/library/redis:7 [linux/arm64] <- compose.yaml:8".to_owned(),
            ]
        );
    }

    #[test]
    fn includes_extends_and_dotenv_reach_the_plan() {
        let refs = |p: &Plan| p.references().map(ToString::to_string).collect::<Vec<_>>();
        let p = plan("include");
        assert_eq!(
            refs(&p),
            [
                "docker.io/library/alpine:3.20",
                "docker.io/library/elasticsearch:8.13.0",
                "docker.io/library/golang:1.22-alpine",
                "docker.io/library/nginx:1.25-alpine",
                "docker.io/library/rabbitmq:3.12-management",
            ]
        );
        let p = plan("extends_file");
        assert!(refs(&p).contains(&"docker.io/library/postgres:16-alpine".to_owned()));
        assert!(refs(&p).contains(&"docker.io/library/debian:bookworm-slim".to_owned()));
        assert!(p
            .local
            .iter()
            .any(|l| l.to_string() == "docker.io/acme/base:2.0"));
        let p = plan("dotenv");
        assert!(refs(&p).contains(&"registry.example.com:5000/team/api:1.4".to_owned()));
        assert!(p
            .local
            .iter()
            .any(|l| l.to_string() == "docker.io/library/backend:1.4"));
    }

    #[test]
    fn a_big_tree_plans_the_same_on_several_threads() {
        // Enough scans for the planner to split them over threads.
        let dir = tempfile::tempdir().unwrap();
        let prefix = services::sanitize(&dir.path().file_name().unwrap().to_string_lossy());
        for i in 0..2300 {
            let sub = dir.path().join(format!("d{i:04}"));
            std::fs::create_dir(&sub).unwrap();
            let from = match i % 5 {
                0 => format!("{prefix}-d{:04}", i / 2),
                1 => "${UNSET}".to_owned(),
                n => format!("alpine:3.{n}"),
            };
            let text = format!(
                "FROM {from} AS build\nFROM busybox:1.{}\nCOPY --from=build / /\n",
                i % 3
            );
            std::fs::write(sub.join("Dockerfile"), &text).unwrap();
            std::fs::write(sub.join("tools.Dockerfile"), "FROM debian:12\n").unwrap();
        }
        let with_threads = |threads| {
            let mut options = PlanOptions {
                platform: Some("linux/amd64".parse().unwrap()),
                env: Some(BTreeMap::new()),
                ..PlanOptions::default()
            };
            options.discover.threads = threads;
            Plan::for_tree(dir.path(), &options).unwrap()
        };
        let (one, two) = (with_threads(1), with_threads(2));
        assert_eq!(
            serde_json::to_string(&one).unwrap(),
            serde_json::to_string(&two).unwrap()
        );
        // alpine 3.2–3.4, busybox 1.0–1.2, debian 12, and the 460 directory services'
        // images named (the plan does not count a directory's own name as built).
        assert_eq!(one.images.len(), 467);
        assert_eq!(one.warnings.len(), 460);
        let deps = |p: &Plan| {
            p.services
                .services
                .values()
                .map(|s| (s.name.clone(), s.uses.clone(), s.depends_on.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(deps(&one), deps(&two));
        let d10 = &one.services.services["d0010"];
        assert!(d10.depends_on.contains("d0005"), "{d10:?}");
    }
}
