//! Places in a tree: a value with its file and line, what kind of line names an image,
//! the one error type for unreadable or invalid input files, and lexical path cleaning.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

/// A value with the file and line it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// The file, relative to the tree's root.
    pub path: PathBuf,
    /// 1-based line (0 when unknown).
    pub line: usize,
}

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

/// An input file (a compose file, `drbuild.yaml`, a `.env`) that cannot be read or
/// is invalid: always `path:line: what`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Broken syntax or a value of the wrong shape.
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl InputError {
    /// The file and line the error points at.
    pub fn location(&self) -> (&Path, usize) {
        match self {
            InputError::Io { path, .. } => (path, 0),
            InputError::Invalid { path, line, .. } => (path, *line),
        }
    }

    /// The same error with its path made openable from where the tree was named
    /// (`ROOT/path`), as messages should print it.
    pub(crate) fn under(self, root: &Path) -> Self {
        let join = |p: PathBuf| {
            if root == Path::new(".") || root.as_os_str().is_empty() || p.is_absolute() {
                p
            } else {
                root.join(p)
            }
        };
        match self {
            InputError::Io { path, source } => InputError::Io {
                path: join(path),
                source,
            },
            InputError::Invalid {
                path,
                line,
                message,
            } => InputError::Invalid {
                path: join(path),
                line,
                message,
            },
        }
    }
}

/// Cleans a relative path lexically: `.` components go, `..` removes the component
/// before it (kept when there is none), so `a/./b/../c` is `a/c`.
pub fn clean_path(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let popped =
                    matches!(out.components().next_back(), Some(Component::Normal(_))) && out.pop();
                if !popped {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_paths_lexically() {
        assert_eq!(clean_path(Path::new("./a/./b/../c")), PathBuf::from("a/c"));
        assert_eq!(
            clean_path(Path::new("app/../../api")),
            PathBuf::from("../api")
        );
        assert_eq!(clean_path(Path::new("../../x")), PathBuf::from("../../x"));
        assert_eq!(clean_path(Path::new(".")), PathBuf::new());
    }

    #[test]
    fn errors_name_path_and_line() {
        let e = InputError::Invalid {
            path: "compose.yaml".into(),
            line: 3,
            message: "bad".into(),
        };
        assert_eq!(e.to_string(), "compose.yaml:3: bad");
        assert_eq!(
            e.under(Path::new("tree")).to_string(),
            "tree/compose.yaml:3: bad"
        );
    }
}
