//! A build context: the directory a build sends to the daemon, as a tar stream that
//! honors `.dockerignore` and is never held whole in memory.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;

use crate::parse::dockerignore::{Dockerignore, DockerignoreError};
use crate::support::chunks::blocking_stream;
#[cfg(test)]
use crate::support::chunks::CHUNK;
use crate::support::slash_path;

/// A build context that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// The context directory does not exist.
    #[error("build context `{}` is not a directory", path.display())]
    NotADirectory {
        /// The directory.
        path: PathBuf,
    },
    /// The Dockerfile does not exist.
    #[error("Dockerfile `{}` not found", path.display())]
    MissingDockerfile {
        /// The Dockerfile.
        path: PathBuf,
    },
    /// The `.dockerignore` file is invalid.
    #[error("{}: {source}", path.display())]
    Dockerignore {
        /// The `.dockerignore` file.
        path: PathBuf,
        /// What is wrong.
        source: DockerignoreError,
    },
}

/// The name a Dockerfile from outside the context (or from no file) has in the tar.
const INLINE_NAME: &str = ".drbuild.Dockerfile";

/// A directory and a Dockerfile, ready to be sent as a tar stream.
#[derive(Debug, Clone)]
pub struct BuildContext {
    dir: PathBuf,
    dockerfile: PathBuf,
    dockerfile_name: String,
    /// The Dockerfile lives outside the context: it is added under `dockerfile_name`.
    outside: bool,
    /// The Dockerfile's text when it is written in the compose file
    /// (`dockerfile_inline`): added under `dockerfile_name`, from no file.
    inline: Option<Arc<str>>,
    ignore: Arc<Dockerignore>,
}

impl BuildContext {
    /// A context directory and a Dockerfile given as text (compose's
    /// `dockerfile_inline`), sent as `.drbuild.Dockerfile`.
    pub fn inline(dir: &Path, text: &str) -> Result<Self, ContextError> {
        let ignore = Self::ignore(dir)?;
        Ok(BuildContext {
            dir: dir.to_path_buf(),
            dockerfile: dir.join(INLINE_NAME),
            dockerfile_name: INLINE_NAME.to_owned(),
            outside: true,
            inline: Some(Arc::from(text)),
            ignore: Arc::new(ignore),
        })
    }

    fn ignore(dir: &Path) -> Result<Dockerignore, ContextError> {
        if !dir.is_dir() {
            return Err(ContextError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        Dockerignore::for_context(dir).map_err(|source| ContextError::Dockerignore {
            path: dir.join(".dockerignore"),
            source,
        })
    }

    /// A context directory and the Dockerfile to build (inside it or not, as compose allows).
    pub fn new(dir: &Path, dockerfile: &Path) -> Result<Self, ContextError> {
        if !dir.is_dir() {
            return Err(ContextError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        if !dockerfile.is_file() {
            return Err(ContextError::MissingDockerfile {
                path: dockerfile.to_path_buf(),
            });
        }
        let ignore = Self::ignore(dir)?;
        let canonical_dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let canonical_file = dockerfile
            .canonicalize()
            .unwrap_or_else(|_| dockerfile.to_path_buf());
        let (dockerfile_name, outside) = match canonical_file.strip_prefix(&canonical_dir) {
            Ok(rel) => (slash_path(rel), false),
            Err(_) => (INLINE_NAME.to_owned(), true),
        };
        Ok(BuildContext {
            dir: dir.to_path_buf(),
            dockerfile: dockerfile.to_path_buf(),
            dockerfile_name,
            outside,
            inline: None,
            ignore: Arc::new(ignore),
        })
    }

    /// The context directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The Dockerfile on disk.
    pub fn dockerfile(&self) -> &Path {
        &self.dockerfile
    }

    /// The Dockerfile's name inside the tar (the `dockerfile` build parameter).
    pub fn dockerfile_name(&self) -> &str {
        &self.dockerfile_name
    }

    /// Writes the context as a tar to `out`; returns the bytes of file content sent.
    ///
    /// Excluded paths are left out (the Dockerfile and `.dockerignore` are always
    /// sent, as the docker CLI does); directories no `!` rule reaches into are not
    /// even walked.
    pub fn write_tar<W: Write>(&self, out: W) -> io::Result<u64> {
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        let mut content = 0u64;
        self.walk(|entry, name| {
            if entry.file_type().is_some_and(|t| t.is_file()) {
                content += entry.metadata().map_or(0, |m| m.len());
            }
            tar.append_path_with_name(entry.path(), name)
        })?;
        match (&self.inline, self.outside) {
            (Some(text), _) => {
                let mut header = tar::Header::new_gnu();
                header.set_size(text.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                tar.append_data(&mut header, &self.dockerfile_name, text.as_bytes())?;
            }
            (None, true) => tar.append_path_with_name(&self.dockerfile, &self.dockerfile_name)?,
            (None, false) => {}
        }
        tar.into_inner()?.flush()?;
        Ok(content)
    }

    /// The regular files the context sends, as paths on disk (the Dockerfile included).
    pub fn files(&self) -> io::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        self.walk(|entry, _| {
            if entry.file_type().is_some_and(|t| t.is_file()) {
                files.push(entry.path().to_path_buf());
            }
            Ok(())
        })?;
        if self.outside && self.inline.is_none() {
            files.push(self.dockerfile.clone());
        }
        Ok(files)
    }

    /// Calls `f` with every entry the context sends and its name in the tar.
    fn walk(&self, mut f: impl FnMut(&ignore::DirEntry, &str) -> io::Result<()>) -> io::Result<()> {
        let ignore = Arc::clone(&self.ignore);
        let root = self.dir.clone();
        let walker = ignore::WalkBuilder::new(&self.dir)
            .standard_filters(false)
            .follow_links(false)
            .sort_by_file_name(|a, b| a.cmp(b))
            .filter_entry(move |entry| {
                let rel = entry.path().strip_prefix(&root).unwrap_or(entry.path());
                let rel = slash_path(rel);
                rel.is_empty()
                    || !(entry.file_type().is_some_and(|t| t.is_dir()) && ignore.can_skip_dir(&rel))
            })
            .build();
        for entry in walker {
            let entry = entry.map_err(io::Error::other)?;
            let rel = entry.path().strip_prefix(&self.dir).unwrap_or(entry.path());
            let name = slash_path(rel);
            if name.is_empty() {
                continue;
            }
            let always = name == ".dockerignore" || (!self.outside && name == self.dockerfile_name);
            if !always && self.ignore.is_excluded(&name) {
                continue;
            }
            f(&entry, &name)?;
        }
        Ok(())
    }

    /// The context as a stream of tar chunks, written on a blocking thread; only a few
    /// chunks are buffered, whatever the context's size.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
        blocking_stream(move |out| self.write_tar(out).map(|_| ()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ctx: &BuildContext) -> Vec<String> {
        let mut tar = Vec::new();
        ctx.write_tar(&mut tar).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn tar_honors_dockerignore_and_keeps_the_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "Dockerfile",
            "app/main.rs",
            "node_modules/x/y.js",
            "logs/a.log",
            "README.md",
            "docs/keep.md",
        ] {
            std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            std::fs::write(root.join(f), f).unwrap();
        }
        std::fs::write(
            root.join(".dockerignore"),
            "Dockerfile\nnode_modules\n**/*.log\n*.md\n",
        )
        .unwrap();
        let ctx = BuildContext::new(root, &root.join("Dockerfile")).unwrap();
        let names = names(&ctx);
        assert!(names.contains(&"Dockerfile".to_owned()), "{names:?}");
        assert!(names.contains(&".dockerignore".to_owned()), "{names:?}");
        assert!(names.contains(&"app/main.rs".to_owned()), "{names:?}");
        assert!(names.contains(&"docs/keep.md".to_owned()), "{names:?}");
        for gone in [
            "node_modules",
            "node_modules/x/y.js",
            "logs/a.log",
            "README.md",
        ] {
            assert!(!names.iter().any(|n| n == gone), "{gone} sent: {names:?}");
        }
    }

    #[test]
    fn dockerfile_outside_the_context_is_added() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("ctx")).unwrap();
        std::fs::write(dir.path().join("ctx/a"), "a").unwrap();
        std::fs::write(dir.path().join("build.Dockerfile"), "FROM scratch\n").unwrap();
        let ctx = BuildContext::new(
            &dir.path().join("ctx"),
            &dir.path().join("build.Dockerfile"),
        )
        .unwrap();
        assert_eq!(ctx.dockerfile_name(), ".drbuild.Dockerfile");
        assert_eq!(names(&ctx), ["a", ".drbuild.Dockerfile"]);
    }

    #[tokio::test]
    async fn stream_yields_the_same_tar() {
        use futures_util::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.path().join("big"), vec![7u8; 300 * 1024]).unwrap();
        let ctx = BuildContext::new(dir.path(), &dir.path().join("Dockerfile")).unwrap();
        let mut direct = Vec::new();
        ctx.write_tar(&mut direct).unwrap();
        let chunks: Vec<Bytes> = ctx.into_stream().map(Result::unwrap).collect().await;
        assert!(chunks.iter().all(|c| c.len() <= CHUNK));
        assert_eq!(chunks.concat(), direct);
    }

    #[test]
    fn an_inline_dockerfile_is_sent_from_its_text() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.txt"), "x").unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM not-this\n").unwrap();
        let ctx = BuildContext::inline(dir.path(), "FROM alpine:3.20\nCOPY app.txt /\n").unwrap();
        let mut bytes = Vec::new();
        ctx.write_tar(&mut bytes).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut found = std::collections::BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            found.insert(entry.path().unwrap().to_string_lossy().into_owned(), text);
        }
        assert_eq!(ctx.dockerfile_name(), ".drbuild.Dockerfile");
        assert_eq!(
            found[".drbuild.Dockerfile"],
            "FROM alpine:3.20\nCOPY app.txt /\n"
        );
        assert!(found.contains_key("app.txt"));
        assert!(!ctx
            .files()
            .unwrap()
            .iter()
            .any(|f| f.ends_with(".drbuild.Dockerfile")));
    }

    #[test]
    fn symlinks_are_sent_as_links_never_as_what_they_point_at() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(
            outside.path().join("shadow"),
            "root:s3cret-hash:19000::::::\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("shadow"), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", dir.path().join("etc-shadow")).unwrap();
        let ctx = BuildContext::new(dir.path(), &dir.path().join("Dockerfile")).unwrap();
        let mut bytes = Vec::new();
        ctx.write_tar(&mut bytes).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("s3cret-hash"), "a link's target was sent");
        let mut archive = tar::Archive::new(bytes.as_slice());
        let links: Vec<(String, bool)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type().is_symlink(),
                )
            })
            .filter(|(name, _)| name != "Dockerfile")
            .collect();
        assert!(links.iter().all(|(_, link)| *link), "{links:?}");
        assert_eq!(links.len(), 2, "{links:?}");
    }
}
