//! Discover: the first stage. Walks a tree in parallel (honoring `.gitignore`, `.ignore`
//! and `.drbuildignore`) and finds its Dockerfiles and compose files.
//!
//! May import: nothing of this crate.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ignore::{WalkBuilder, WalkState};

/// A file name of ours that, like `.gitignore`, lists paths discovery skips.
pub const IGNORE_FILE: &str = ".drbuildignore";

/// Extensions that mark `Dockerfile.*` names which are not Dockerfiles.
const NOT_DOCKERFILE_EXTENSIONS: [&str; 10] = [
    "dockerignore",
    "md",
    "txt",
    "orig",
    "rej",
    "bak",
    "swp",
    "tmp",
    "lock",
    "json",
];

/// What a file found in the tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    /// A Dockerfile or Containerfile.
    Dockerfile,
    /// A compose file (base or override).
    Compose,
}

impl FileKind {
    /// Classifies a file by its name, as Docker tooling names them:
    /// `Dockerfile`, `Dockerfile.*`, `*.Dockerfile`, `*.dockerfile`, `Containerfile`,
    /// and `docker-compose.y*ml`, `compose.y*ml` with their `.*.y*ml` overrides.
    pub fn of(file_name: &str) -> Option<FileKind> {
        let lower = file_name.to_ascii_lowercase();
        let is_yaml = lower.ends_with(".yml") || lower.ends_with(".yaml");
        if is_yaml && (lower.starts_with("docker-compose.") || lower.starts_with("compose.")) {
            return Some(FileKind::Compose);
        }
        if lower == "dockerfile" || lower == "containerfile" || lower.ends_with(".dockerfile") {
            return Some(FileKind::Dockerfile);
        }
        for stem in ["dockerfile.", "containerfile."] {
            if let Some(ext) = lower.strip_prefix(stem) {
                let last = ext.rsplit('.').next().unwrap_or(ext);
                if !ext.is_empty() && !NOT_DOCKERFILE_EXTENSIONS.contains(&last) {
                    return Some(FileKind::Dockerfile);
                }
            }
        }
        None
    }
}

/// The files of interest in a tree, as paths relative to its root, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// Dockerfiles and Containerfiles.
    pub dockerfiles: Vec<PathBuf>,
    /// Compose files, base and overrides.
    pub compose_files: Vec<PathBuf>,
}

/// How to walk a tree.
#[derive(Debug, Clone)]
pub struct DiscoverOptions {
    /// Honor `.gitignore`, `.ignore`, git's excludes and [`IGNORE_FILE`] (default: yes).
    pub respect_ignore_files: bool,
    /// Walker threads; 0 picks from the number of cores.
    pub threads: usize,
}

impl Default for DiscoverOptions {
    fn default() -> Self {
        DiscoverOptions {
            respect_ignore_files: true,
            threads: 0,
        }
    }
}

/// Walks `root` in parallel and calls `visit` with each Dockerfile or compose file found
/// (path relative to `root`); `visit` runs on the walker's threads.
pub fn walk<F>(root: &Path, options: &DiscoverOptions, visit: F)
where
    F: Fn(&Path, FileKind) + Sync,
{
    let mut builder = WalkBuilder::new(root);
    builder
        .hidden(false)
        .git_ignore(options.respect_ignore_files)
        .git_global(options.respect_ignore_files)
        .git_exclude(options.respect_ignore_files)
        .ignore(options.respect_ignore_files)
        .parents(options.respect_ignore_files)
        .require_git(false)
        .threads(options.threads)
        .filter_entry(|entry| entry.file_name() != ".git");
    if options.respect_ignore_files {
        builder.add_custom_ignore_filename(IGNORE_FILE);
    }
    builder.build_parallel().run(|| {
        let visit = &visit;
        Box::new(move |entry| {
            let Ok(entry) = entry else {
                return WalkState::Continue;
            };
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                return WalkState::Continue;
            }
            let Some(kind) = entry.file_name().to_str().and_then(FileKind::of) else {
                return WalkState::Continue;
            };
            let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
            visit(relative, kind);
            WalkState::Continue
        })
    });
}

/// Lists the Dockerfiles and compose files under `root`.
pub fn discover(root: &Path, options: &DiscoverOptions) -> Discovery {
    let found = Mutex::new(Discovery::default());
    walk(root, options, |path, kind| {
        let mut found = found.lock().unwrap_or_else(|e| e.into_inner());
        match kind {
            FileKind::Dockerfile => found.dockerfiles.push(path.to_path_buf()),
            FileKind::Compose => found.compose_files.push(path.to_path_buf()),
        }
    });
    let mut found = found.into_inner().unwrap_or_else(|e| e.into_inner());
    found.dockerfiles.sort();
    found.compose_files.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for name in [
            "Dockerfile",
            "dockerfile",
            "Dockerfile.dev",
            "Dockerfile.prod.arm64",
            "api.Dockerfile",
            "api.dockerfile",
            "Containerfile",
            "Containerfile.ci",
        ] {
            assert_eq!(FileKind::of(name), Some(FileKind::Dockerfile), "{name}");
        }
        for name in [
            "docker-compose.yml",
            "docker-compose.yaml",
            "compose.yaml",
            "compose.yml",
            "docker-compose.override.yml",
            "compose.prod.yaml",
        ] {
            assert_eq!(FileKind::of(name), Some(FileKind::Compose), "{name}");
        }
        for name in [
            "Dockerfile.dockerignore",
            "Dockerfile.md",
            "README.md",
            "Dockerfile.",
            "compose.json",
            "mycompose.yml",
            ".dockerignore",
        ] {
            assert_eq!(FileKind::of(name), None, "{name}");
        }
    }

    #[test]
    fn honors_gitignore_without_git() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for p in [
            "a/Dockerfile",
            "node_modules/x/Dockerfile",
            "b/target/Dockerfile",
            "c/compose.yaml",
            "skip/Dockerfile",
            ".hidden/Dockerfile",
        ] {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "FROM alpine\n").unwrap();
        }
        std::fs::write(root.join(".gitignore"), "node_modules/\ntarget/\n").unwrap();
        std::fs::write(root.join(IGNORE_FILE), "skip/\n").unwrap();
        let found = discover(root, &DiscoverOptions::default());
        assert_eq!(
            found.dockerfiles,
            vec![
                PathBuf::from(".hidden/Dockerfile"),
                PathBuf::from("a/Dockerfile")
            ]
        );
        assert_eq!(found.compose_files, vec![PathBuf::from("c/compose.yaml")]);

        let all = discover(
            root,
            &DiscoverOptions {
                respect_ignore_files: false,
                ..DiscoverOptions::default()
            },
        );
        assert_eq!(all.dockerfiles.len(), 5);
    }
}
