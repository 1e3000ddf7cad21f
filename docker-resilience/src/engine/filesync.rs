//! FileSync: a build's directories, served to BuildKit through the build's session
//! (`moby.filesync.v1.FileSync/DiffCopy`, fsutil's protocol), read from disk as
//! BuildKit asks for each file, never held whole in memory.
//!
//! BuildKit calls `DiffCopy` with the directory's name (`dir-name`: `context`,
//! `dockerfile`, a named context) and its filters (`exclude-patterns`, the
//! `.dockerignore` it read; `include-patterns`). We send one `STAT` per entry, in
//! fsutil's order (depth first, names byte-wise; a directory before what it holds, and
//! every parent sent), then an empty `STAT`; it answers `REQ id` for the regular files
//! it wants (`id` counts every `STAT` sent), which we send as `DATA` chunks and an
//! empty `DATA`; its `FIN` ends the copy. Owners are sent as root, as buildx does.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bollard_buildkit_proto::fsutil::types::packet::PacketType;
use bollard_buildkit_proto::fsutil::types::{Packet, Stat};
use bollard_buildkit_proto::moby::filesync::v1::file_sync_server::FileSync;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::parse::dockerignore::Dockerignore;
use crate::support::slash_path;

/// Bytes of a file sent in one `DATA` packet (fsutil's buffer).
const CHUNK: usize = 32 * 1024;

/// What a directory of the session holds.
#[derive(Debug, Clone)]
pub(crate) enum DirSource {
    /// A directory on disk.
    Disk(PathBuf),
    /// Files given as bytes, at the top of an otherwise empty directory (the
    /// Dockerfile as drbuild wrote it).
    Files(Vec<(String, Arc<[u8]>)>),
}

/// The directories a build's session serves, by name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dirs(pub(crate) HashMap<String, DirSource>);

/// One entry to send: its stat, and where its content is.
#[derive(Debug)]
struct Entry {
    stat: Stat,
    content: Content,
}

#[derive(Debug)]
enum Content {
    None,
    Disk(PathBuf),
    Bytes(Arc<[u8]>),
}

/// Go's `os.FileMode` bits, which fsutil sends.
mod go_mode {
    pub const DIR: u32 = 1 << 31;
    pub const SYMLINK: u32 = 1 << 27;
    pub const DEVICE: u32 = 1 << 26;
    pub const NAMED_PIPE: u32 = 1 << 25;
    pub const SOCKET: u32 = 1 << 24;
    pub const SETUID: u32 = 1 << 23;
    pub const SETGID: u32 = 1 << 22;
    pub const CHAR_DEVICE: u32 = 1 << 21;
    pub const STICKY: u32 = 1 << 20;
}

/// A file's mode as Go's `os.FileMode` spells it.
fn mode_of(meta: &std::fs::Metadata) -> u32 {
    let unix = meta.mode();
    let kind = meta.file_type();
    let mut mode = unix & 0o777;
    if kind.is_dir() {
        mode |= go_mode::DIR;
    } else if kind.is_symlink() {
        mode |= go_mode::SYMLINK;
    } else if kind.is_fifo() {
        mode |= go_mode::NAMED_PIPE;
    } else if kind.is_socket() {
        mode |= go_mode::SOCKET;
    } else if kind.is_block_device() {
        mode |= go_mode::DEVICE;
    } else if kind.is_char_device() {
        mode |= go_mode::DEVICE | go_mode::CHAR_DEVICE;
    }
    if unix & 0o4000 != 0 {
        mode |= go_mode::SETUID;
    }
    if unix & 0o2000 != 0 {
        mode |= go_mode::SETGID;
    }
    if unix & 0o1000 != 0 {
        mode |= go_mode::STICKY;
    }
    mode
}

/// What BuildKit asked for: which entries of a directory to send.
#[derive(Debug, Default)]
struct Filter {
    excludes: Dockerignore,
    /// Only what these match (and their parents), when any.
    includes: Option<Dockerignore>,
}

impl Filter {
    fn new(excludes: &[String], includes: &[String]) -> Result<Self, String> {
        let parse = |patterns: &[String]| {
            Dockerignore::parse(&patterns.join("\n")).map_err(|e| e.to_string())
        };
        Ok(Filter {
            excludes: parse(excludes)?,
            includes: if includes.is_empty() {
                None
            } else {
                Some(parse(includes)?)
            },
        })
    }

    fn sends(&self, path: &str) -> bool {
        !self.excludes.is_excluded(path)
            && self.includes.as_ref().is_none_or(|i| i.is_excluded(path))
    }

    fn can_skip_dir(&self, path: &str) -> bool {
        self.includes.is_none() && self.excludes.can_skip_dir(path)
    }
}

/// The stat of `path` on disk, named `name`.
fn stat_of(path: &Path, name: &str) -> std::io::Result<(Stat, Content)> {
    let meta = std::fs::symlink_metadata(path)?;
    let kind = meta.file_type();
    let linkname = if kind.is_symlink() {
        std::fs::read_link(path)?.to_string_lossy().into_owned()
    } else {
        String::new()
    };
    let (devmajor, devminor) = if kind.is_block_device() || kind.is_char_device() {
        let rdev = meta.rdev();
        (
            ((rdev >> 8) & 0xfff) as i64,
            ((rdev & 0xff) | ((rdev >> 12) & 0xfff00)) as i64,
        )
    } else {
        (0, 0)
    };
    let stat = Stat {
        path: name.to_owned(),
        mode: mode_of(&meta),
        uid: 0,
        gid: 0,
        size: meta.len() as i64,
        mod_time: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        linkname,
        devmajor,
        devminor,
        xattrs: HashMap::new(),
    };
    let content = if kind.is_file() {
        Content::Disk(path.to_path_buf())
    } else {
        Content::None
    };
    Ok((stat, content))
}

/// Every entry of `source` that `filter` lets through, in fsutil's order, each
/// directory that holds one sent before it.
fn entries(source: &DirSource, filter: &Filter) -> Result<Vec<Entry>, String> {
    let root = match source {
        DirSource::Disk(root) => root,
        DirSource::Files(files) => {
            let mut files = files.clone();
            files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64);
            return Ok(files
                .into_iter()
                .filter(|(name, _)| filter.sends(name))
                .map(|(name, bytes)| Entry {
                    stat: Stat {
                        path: name,
                        mode: 0o644,
                        size: bytes.len() as i64,
                        mod_time: now,
                        ..Stat::default()
                    },
                    content: Content::Bytes(bytes),
                })
                .collect());
        }
    };
    let walk_root = root.clone();
    let skip = Filter {
        excludes: filter.excludes.clone(),
        includes: filter.includes.clone(),
    };
    let walker = ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()))
        .filter_entry(move |entry| {
            let rel = relative(&walk_root, entry.path());
            rel.is_empty()
                || !(entry.file_type().is_some_and(|t| t.is_dir()) && skip.can_skip_dir(&rel))
        })
        .build();
    let mut out = Vec::new();
    // Directories on the way to the current entry that were not sent (filtered out):
    // sent after all when something under them is.
    let mut held: Vec<(String, Option<Entry>)> = Vec::new();
    for entry in walker {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = relative(root, entry.path());
        if name.is_empty() {
            continue;
        }
        while held
            .last()
            .is_some_and(|(dir, _)| !name.starts_with(&format!("{dir}/")))
        {
            held.pop();
        }
        let (stat, content) =
            stat_of(entry.path(), &name).map_err(|e| format!("{}: {e}", entry.path().display()))?;
        let is_dir = stat.mode & go_mode::DIR != 0;
        if !filter.sends(&name) {
            if is_dir {
                held.push((name, Some(Entry { stat, content })));
            }
            continue;
        }
        for (_, parent) in held.iter_mut() {
            if let Some(parent) = parent.take() {
                out.push(parent);
            }
        }
        if is_dir {
            // Sent: nothing to hold for it, but it bounds the held stack.
            held.push((name, None));
        }
        out.push(Entry { stat, content });
    }
    Ok(out)
}

/// `path` under `root`, `/`-separated.
fn relative(root: &Path, path: &Path) -> String {
    slash_path(path.strip_prefix(root).unwrap_or(path))
}

/// A gRPC metadata list, decoded as BuildKit encodes it (`KEY-encoded: true`: each
/// value URL-encoded).
fn metadata_list(metadata: &tonic::metadata::MetadataMap, key: &str) -> Vec<String> {
    let encoded = metadata
        .get(format!("{key}-encoded"))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    metadata
        .get_all(key)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| if encoded { unescape(v) } else { v.to_owned() })
        .collect()
}

/// Go's `url.QueryUnescape`: `%XX` and `+` for a space.
fn unescape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&value[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn packet(kind: PacketType) -> Packet {
    Packet {
        r#type: kind as i32,
        ..Packet::default()
    }
}

/// Sends `entries`, then the files BuildKit asks for, until its `FIN`.
async fn copy(
    entries: Vec<Entry>,
    mut incoming: Streaming<Packet>,
    out: mpsc::Sender<Result<Packet, Status>>,
) -> Result<(), String> {
    let gone = |_| "BuildKit stopped reading".to_owned();
    let mut contents = Vec::with_capacity(entries.len());
    for entry in entries {
        let stat = Packet {
            stat: Some(entry.stat),
            ..packet(PacketType::PacketStat)
        };
        out.send(Ok(stat)).await.map_err(gone)?;
        contents.push(Some(entry.content));
    }
    out.send(Ok(packet(PacketType::PacketStat)))
        .await
        .map_err(gone)?;
    loop {
        let message = incoming
            .message()
            .await
            .map_err(|e| format!("BuildKit's file copy: {}", e.message()))?;
        let Some(message) = message else {
            return Ok(());
        };
        match PacketType::try_from(message.r#type) {
            Ok(PacketType::PacketReq) => {
                let id = message.id;
                let content = contents
                    .get_mut(id as usize)
                    .and_then(Option::take)
                    .ok_or_else(|| format!("BuildKit asked for file {id}, which was not sent"))?;
                send_file(id, content, &out).await?;
            }
            Ok(PacketType::PacketFin) => {
                out.send(Ok(packet(PacketType::PacketFin)))
                    .await
                    .map_err(gone)?;
                return Ok(());
            }
            Ok(PacketType::PacketErr) => {
                return Err(format!(
                    "BuildKit's file copy failed: {}",
                    String::from_utf8_lossy(&message.data)
                ))
            }
            _ => {}
        }
    }
}

/// One file as `DATA` packets, then an empty one.
async fn send_file(
    id: u32,
    content: Content,
    out: &mpsc::Sender<Result<Packet, Status>>,
) -> Result<(), String> {
    let data = |data: Vec<u8>| Packet {
        id,
        data,
        ..packet(PacketType::PacketData)
    };
    match content {
        Content::Bytes(bytes) => {
            for chunk in bytes.chunks(CHUNK) {
                out.send(Ok(data(chunk.to_vec())))
                    .await
                    .map_err(|_| "BuildKit stopped reading".to_owned())?;
            }
        }
        Content::Disk(path) => {
            // Read on a blocking thread, a chunk at a time, as BuildKit takes them.
            let (tx, mut rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(4);
            let reader = tokio::task::spawn_blocking(move || {
                let mut file = match std::fs::File::open(&path) {
                    Ok(f) => f,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                };
                loop {
                    let mut buf = vec![0; CHUNK];
                    match file.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => {
                            buf.truncate(n);
                            if tx.blocking_send(Ok(buf)).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            return;
                        }
                    }
                }
            });
            while let Some(chunk) = rx.recv().await {
                let chunk = chunk.map_err(|e| format!("reading a context file: {e}"))?;
                out.send(Ok(data(chunk)))
                    .await
                    .map_err(|_| "BuildKit stopped reading".to_owned())?;
            }
            let _ = reader.await;
        }
        Content::None => {}
    }
    out.send(Ok(data(Vec::new())))
        .await
        .map_err(|_| "BuildKit stopped reading".to_owned())
}

#[tonic::async_trait]
impl FileSync for Dirs {
    type DiffCopyStream = ReceiverStream<Result<Packet, Status>>;
    type TarStreamStream = ReceiverStream<Result<Packet, Status>>;

    async fn diff_copy(
        &self,
        request: Request<Streaming<Packet>>,
    ) -> Result<Response<Self::DiffCopyStream>, Status> {
        let metadata = request.metadata();
        let name = metadata_list(metadata, "dir-name")
            .into_iter()
            .next()
            .unwrap_or_default();
        let source = self
            .0
            .get(&name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no access allowed to dir {name:?}")))?;
        let filter = Filter::new(
            &metadata_list(metadata, "exclude-patterns"),
            &metadata_list(metadata, "include-patterns"),
        )
        .map_err(Status::invalid_argument)?;
        let listed = tokio::task::spawn_blocking(move || entries(&source, &filter))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::internal)?;
        tracing::debug!("sending {} entries of `{name}` to BuildKit", listed.len());
        let incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            if let Err(e) = copy(listed, incoming, tx.clone()).await {
                tracing::debug!("file copy of `{name}`: {e}");
                let _ = tx
                    .send(Ok(Packet {
                        data: e.into_bytes(),
                        ..packet(PacketType::PacketErr)
                    }))
                    .await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn tar_stream(
        &self,
        _: Request<Streaming<Packet>>,
    ) -> Result<Response<Self::TarStreamStream>, Status> {
        Err(Status::unimplemented("drbuild serves files by DiffCopy"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(source: &DirSource, excludes: &[&str], includes: &[&str]) -> Vec<String> {
        let own = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let filter = Filter::new(&own(excludes), &own(includes)).unwrap();
        entries(source, &filter)
            .unwrap()
            .into_iter()
            .map(|e| e.stat.path)
            .collect()
    }

    #[test]
    fn entries_come_in_fsutils_order_with_every_parent() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "a/b.txt",
            "a-b",
            "a.txt",
            "node_modules/x/y.js",
            "node_modules/keep/k.js",
            "B",
            "logs/a.log",
        ] {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, f).unwrap();
        }
        std::os::unix::fs::symlink("a.txt", dir.path().join("link")).unwrap();
        let source = DirSource::Disk(dir.path().to_path_buf());
        assert_eq!(
            names(&source, &[], &[]),
            [
                "B",
                "a",
                "a/b.txt",
                "a-b",
                "a.txt",
                "link",
                "logs",
                "logs/a.log",
                "node_modules",
                "node_modules/keep",
                "node_modules/keep/k.js",
                "node_modules/x",
                "node_modules/x/y.js",
            ]
        );
        // An excluded directory is still sent before what an exception keeps under it.
        assert_eq!(
            names(
                &source,
                &["node_modules", "!node_modules/keep", "**/*.log"],
                &[]
            ),
            [
                "B",
                "a",
                "a/b.txt",
                "a-b",
                "a.txt",
                "link",
                "logs",
                "node_modules",
                "node_modules/keep",
                "node_modules/keep/k.js",
            ]
        );
        assert_eq!(names(&source, &[], &["a/b.txt"]), ["a", "a/b.txt"]);
    }

    #[test]
    fn stats_say_what_go_would() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "hello").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        let (file, content) = stat_of(&dir.path().join("f"), "f").unwrap();
        assert_eq!(
            file.mode & 0o777,
            std::fs::metadata(dir.path().join("f")).unwrap().mode() & 0o777
        );
        assert_eq!(file.mode & !0o777, 0, "a regular file has no type bits");
        assert_eq!((file.size, file.uid, file.gid), (5, 0, 0));
        assert!(matches!(content, Content::Disk(_)));
        let (link, content) = stat_of(&dir.path().join("l"), "l").unwrap();
        assert_eq!(link.mode & go_mode::SYMLINK, go_mode::SYMLINK);
        assert_eq!(link.linkname, "f");
        assert!(matches!(content, Content::None));
        let (d, _) = stat_of(dir.path(), "d").unwrap();
        assert_eq!(d.mode & go_mode::DIR, go_mode::DIR);
    }

    #[test]
    fn buildkits_encoded_metadata_is_decoded() {
        let mut md = tonic::metadata::MetadataMap::new();
        md.append("exclude-patterns", "caf%C3%A9+bar".parse().unwrap());
        md.append("exclude-patterns", "*.log".parse().unwrap());
        md.insert("exclude-patterns-encoded", "true".parse().unwrap());
        assert_eq!(
            metadata_list(&md, "exclude-patterns"),
            ["café bar", "*.log"]
        );
        md.insert("dir-name", "context".parse().unwrap());
        assert_eq!(metadata_list(&md, "dir-name"), ["context"]);
        assert_eq!(unescape("100%"), "100%");
    }

    #[test]
    fn files_given_as_bytes_are_a_directory_of_their_own() {
        let source = DirSource::Files(vec![
            ("Dockerfile".into(), Arc::from(&b"FROM scratch\n"[..])),
            (".dockerignore".into(), Arc::from(&b"x\n"[..])),
        ]);
        assert_eq!(names(&source, &[], &[]), [".dockerignore", "Dockerfile"]);
        assert_eq!(names(&source, &[], &["Dockerfile"]), ["Dockerfile"]);
    }
}
