//! Compose files: the services, the images they use and the images they build.
//!
//! Files in one directory form one project: the base file (`compose.yaml`,
//! `docker-compose.yml`…) first, then its overrides (`*.override.yml`, then any
//! other `compose.*.yml`), merged service by service as `docker compose` does for
//! the keys we read.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::expand::{expand, Style};

/// A compose file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComposeError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Broken YAML or a value of the wrong shape.
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

/// A value with the file and line it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// The file, relative to the tree's root.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
}

/// A service's `build:` section, with paths resolved relative to the tree's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeBuild {
    /// Build context directory.
    pub context: PathBuf,
    /// The Dockerfile.
    pub dockerfile: PathBuf,
    /// Build args; values already interpolated. Args with no value are left out.
    pub args: BTreeMap<String, String>,
    /// `target` stage.
    pub target: Option<String>,
    /// `network` for `RUN` steps.
    pub network: Option<String>,
    /// Where `build:` is written.
    pub path: PathBuf,
    /// Its line.
    pub line: usize,
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

/// A compose project: the files of one directory, merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeProject {
    /// The project name (`name:` or the directory's name).
    pub name: String,
    /// The directory, relative to the tree's root.
    pub dir: PathBuf,
    /// The files, base first.
    pub files: Vec<PathBuf>,
    /// Services by name.
    pub services: BTreeMap<String, ComposeService>,
    /// Values that could not be interpolated, with where they are.
    pub warnings: Vec<Located<String>>,
}

impl ComposeProject {
    /// The image a service's build produces: its `image:`, else `<project>-<service>`.
    pub fn built_image(&self, service: &ComposeService) -> Option<String> {
        service.build.as_ref()?;
        Some(match &service.image {
            Some(image) => image.value.clone(),
            None => format!("{}-{}", self.name, service.name),
        })
    }

    /// Loads and merges `files` (relative to `root`, all in one directory).
    /// `env` supplies variables for `${X}` interpolation.
    pub fn load(
        root: &Path,
        files: &[PathBuf],
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ComposeError> {
        let mut files = files.to_vec();
        files.sort_by_key(|f| file_rank(f));
        let dir = files
            .first()
            .and_then(|f| f.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut env = env.clone();
        for (k, v) in dotenv(&root.join(&dir).join(".env")) {
            env.entry(k).or_insert(v);
        }
        let mut project = ComposeProject {
            name: String::new(),
            dir: dir.clone(),
            files: files.clone(),
            services: BTreeMap::new(),
            warnings: Vec::new(),
        };
        let mut name = None;
        for file in &files {
            let text =
                std::fs::read_to_string(root.join(file)).map_err(|source| ComposeError::Io {
                    path: file.clone(),
                    source,
                })?;
            let raw: RawCompose = if text.trim().is_empty() {
                RawCompose::default()
            } else {
                serde_saphyr::from_str(&text).map_err(|e| ComposeError::Invalid {
                    path: file.clone(),
                    line: e.location().map_or(0, |l| l.line() as usize),
                    message: yaml_message(&e),
                })?
            };
            if let Some(n) = raw.name {
                name = Some(n);
            }
            let mut ctx = Ctx {
                file,
                dir: &dir,
                env: &env,
                warnings: &mut project.warnings,
            };
            for (service_name, raw_service) in raw.services {
                let entry = project
                    .services
                    .entry(service_name.clone())
                    .or_insert_with(|| ComposeService {
                        name: service_name.clone(),
                        image: None,
                        build: None,
                        depends_on: Vec::new(),
                        profiles: Vec::new(),
                        platform: None,
                        ports: Vec::new(),
                    });
                ctx.merge(entry, raw_service.value)?;
            }
        }
        project.name = name.unwrap_or_else(|| {
            let base = root.join(&dir);
            let base = base.canonicalize().unwrap_or(base);
            base.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "default".to_owned())
        });
        project.name = normalize_project_name(&project.name);
        Ok(project)
    }
}

/// Groups compose files by directory: each directory is one project.
pub fn group_by_directory(files: &[PathBuf]) -> Vec<Vec<PathBuf>> {
    let mut groups: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for f in files {
        groups
            .entry(f.parent().map(Path::to_path_buf).unwrap_or_default())
            .or_default()
            .push(f.clone());
    }
    groups.into_values().collect()
}

/// Base files first, then `*.override.*`, then the rest by name.
fn file_rank(file: &Path) -> (u8, String) {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let stem = name.trim_end_matches(".yaml").trim_end_matches(".yml");
    let rank = match stem {
        "compose" | "docker-compose" => 0,
        s if s.ends_with(".override") => 1,
        _ => 2,
    };
    (rank, name)
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

fn yaml_message(e: &serde_saphyr::Error) -> String {
    // The crate renders snippets over several lines and prefixes the position;
    // keep the first line's message only (the position is reported as `path:line`).
    let text = e.to_string();
    let mut first = text.lines().next().unwrap_or("invalid YAML").trim();
    first = first.strip_prefix("error:").unwrap_or(first).trim_start();
    if first.starts_with("line ") {
        if let Some((_, rest)) = first.split_once(": ") {
            first = rest;
        }
    }
    let first = first
        .split_once(" at line ")
        .map_or(first, |(head, _)| head)
        .trim_end_matches(':');
    format!("invalid compose file: {}", first.trim())
}

/// Reads a `.env` file (`KEY=VALUE`, `#` comments, optional quotes, `export `).
pub fn dotenv(path: &Path) -> BTreeMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (k, v) = line.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

struct Ctx<'a> {
    file: &'a Path,
    dir: &'a Path,
    env: &'a BTreeMap<String, String>,
    warnings: &'a mut Vec<Located<String>>,
}

impl Ctx<'_> {
    fn interpolate(&mut self, text: &str, line: usize) -> Option<String> {
        match expand(text, Style::Compose, &|n| self.env.get(n).cloned()) {
            Ok(v) => Some(v),
            Err(e) => {
                self.warnings.push(Located {
                    value: format!("cannot interpolate `{text}`: {e}"),
                    path: self.file.to_path_buf(),
                    line,
                });
                None
            }
        }
    }

    fn merge(&mut self, service: &mut ComposeService, raw: RawService) -> Result<(), ComposeError> {
        if let Some(image) = raw.image {
            let line = image.referenced.line() as usize;
            if let Some(value) = self.interpolate(&image.value, line) {
                service.image = Some(Located {
                    value,
                    path: self.file.to_path_buf(),
                    line,
                });
            }
        }
        if let Some(build) = raw.build {
            let line = build.referenced.line() as usize;
            let b = build.value;
            let context_text = match &b.context {
                Some(c) => self.interpolate(c, line),
                None => Some(".".to_owned()),
            };
            let Some(context_text) = context_text else {
                return Ok(());
            };
            if context_text.contains("://") || context_text.starts_with("git@") {
                self.warnings.push(Located {
                    value: format!("remote build context `{context_text}` is not scanned"),
                    path: self.file.to_path_buf(),
                    line,
                });
                return Ok(());
            }
            let context = normalize(&self.dir.join(&context_text));
            let dockerfile_text = b
                .dockerfile
                .as_deref()
                .and_then(|d| self.interpolate(d, line))
                .unwrap_or_else(|| "Dockerfile".to_owned());
            let dockerfile = normalize(&context.join(dockerfile_text));
            let mut args = BTreeMap::new();
            for (k, v) in b.args.0 {
                let value = match v {
                    Some(v) => self.interpolate(&v, line),
                    None => self.env.get(&k).cloned(),
                };
                if let Some(value) = value {
                    args.insert(k, value);
                }
            }
            let previous = service.build.take();
            service.build = Some(ComposeBuild {
                context,
                dockerfile,
                args: previous
                    .as_ref()
                    .map(|p| p.args.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .chain(args)
                    .collect(),
                target: b
                    .target
                    .or_else(|| previous.as_ref().and_then(|p| p.target.clone())),
                network: b
                    .network
                    .or_else(|| previous.as_ref().and_then(|p| p.network.clone())),
                path: self.file.to_path_buf(),
                line,
            });
        }
        for dep in raw.depends_on.0 {
            if !service.depends_on.contains(&dep) {
                service.depends_on.push(dep);
            }
        }
        for profile in raw.profiles {
            if !service.profiles.contains(&profile) {
                service.profiles.push(profile);
            }
        }
        if raw.platform.is_some() {
            service.platform = raw.platform;
        }
        for port in raw.ports {
            let line = port.referenced.line() as usize;
            let mut value = port.value;
            if let RawPort::Short(text) = &value {
                if text.contains('$') {
                    match self.interpolate(text, line) {
                        Some(text) => value = RawPort::Short(text),
                        None => continue, // a warning says why
                    }
                }
            }
            match value.published(self.file, line) {
                Ok(Some(p)) => service.ports.push(p),
                Ok(None) => {}
                Err(message) => {
                    return Err(ComposeError::Invalid {
                        path: self.file.to_path_buf(),
                        line,
                        message,
                    })
                }
            }
        }
        Ok(())
    }
}

/// Removes `.` and resolves `..` lexically (paths stay relative to the root).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[derive(Debug, Default, Deserialize)]
struct RawCompose {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    services: BTreeMap<String, Spanned<RawService>>,
}

#[derive(Debug, Deserialize)]
struct RawService {
    #[serde(default)]
    image: Option<Spanned<String>>,
    #[serde(default)]
    build: Option<Spanned<RawBuild>>,
    #[serde(default)]
    depends_on: DependsOn,
    #[serde(default)]
    profiles: Vec<String>,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    ports: Vec<Spanned<RawPort>>,
}

#[derive(Debug, Default)]
struct RawBuild {
    context: Option<String>,
    dockerfile: Option<String>,
    args: Args,
    target: Option<String>,
    network: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawBuildLong {
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    dockerfile: Option<String>,
    #[serde(default)]
    args: Args,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    network: Option<String>,
}

impl<'de> Deserialize<'de> for RawBuild {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawBuild;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a build context path or a build mapping")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawBuild, E> {
                Ok(RawBuild {
                    context: Some(v.to_owned()),
                    ..RawBuild::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawBuild, A::Error> {
                let long = RawBuildLong::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawBuild {
                    context: long.context,
                    dockerfile: long.dockerfile,
                    args: long.args,
                    target: long.target,
                    network: long.network,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `args:` as a map (`KEY: value`, `KEY:` with no value) or a list (`KEY=value`, `KEY`).
#[derive(Debug, Default)]
struct Args(Vec<(String, Option<String>)>);

/// A scalar compose accepts where it wants a string (`1.21`, `true`, `8080`).
#[derive(Debug)]
struct Scalar(Option<String>);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_owned())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Args;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("build args as a mapping or a list of KEY=VALUE")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Args, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Scalar>()? {
                    out.push((k, v.0));
                }
                Ok(Args(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Args, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    match item.split_once('=') {
                        Some((k, v)) => out.push((k.to_owned(), Some(v.to_owned()))),
                        None => out.push((item, None)),
                    }
                }
                Ok(Args(out))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Args, E> {
                Ok(Args::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// `depends_on:` as a list of names or a mapping of name to conditions.
#[derive(Debug, Default)]
struct DependsOn(Vec<String>);

impl<'de> Deserialize<'de> for DependsOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DependsOn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of service names or a mapping")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DependsOn, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    out.push(item);
                }
                Ok(DependsOn(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DependsOn, A::Error> {
                let mut out = Vec::new();
                while let Some((k, _)) = map.next_entry::<String, IgnoredAny>()? {
                    out.push(k);
                }
                Ok(DependsOn(out))
            }
            fn visit_unit<E: de::Error>(self) -> Result<DependsOn, E> {
                Ok(DependsOn::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// A `ports:` entry, short (`"127.0.0.1:8080:80/tcp"`, `8080`) or long syntax.
#[derive(Debug)]
enum RawPort {
    Short(String),
    Long {
        target: Option<String>,
        published: Option<String>,
        host_ip: Option<String>,
        protocol: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
struct RawPortLong {
    #[serde(default)]
    target: Option<Scalar>,
    #[serde(default)]
    published: Option<Scalar>,
    #[serde(default)]
    host_ip: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
}

impl<'de> Deserialize<'de> for RawPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawPort;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port string, number or mapping")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPort, E> {
                Ok(RawPort::Short(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawPort, E> {
                Ok(RawPort::Short(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawPort, E> {
                Ok(RawPort::Short(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawPort, A::Error> {
                let l = RawPortLong::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawPort::Long {
                    target: l.target.and_then(|s| s.0),
                    published: l.published.and_then(|s| s.0),
                    host_ip: l.host_ip,
                    protocol: l.protocol,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl RawPort {
    /// The host port this entry publishes, if it names one (a range publishes its first).
    fn published(&self, path: &Path, line: usize) -> Result<Option<PublishedPort>, String> {
        let port = |s: &str| -> Result<u16, String> {
            let first = s.split('-').next().unwrap_or(s);
            first
                .parse::<u16>()
                .map_err(|_| format!("invalid port `{s}`"))
        };
        let (host_ip, published, target, protocol) = match self {
            RawPort::Short(text) => {
                let (spec, protocol) = match text.rsplit_once('/') {
                    Some((s, p)) => (s, p.to_owned()),
                    None => (text.as_str(), "tcp".to_owned()),
                };
                // `[::1]:8080:80`, `127.0.0.1:8080:80`, `8080:80`, `80`.
                let (host_ip, rest) = if let Some(v6) = spec.strip_prefix('[') {
                    let (ip, rest) = v6
                        .split_once("]:")
                        .ok_or_else(|| format!("invalid port `{text}`"))?;
                    (Some(ip.to_owned()), rest)
                } else {
                    let parts: Vec<&str> = spec.split(':').collect();
                    if parts.len() == 3 {
                        (Some(parts[0].to_owned()), &spec[parts[0].len() + 1..])
                    } else {
                        (None, spec)
                    }
                };
                let (published, target) = match rest.split_once(':') {
                    Some((p, t)) => (Some(p.to_owned()), t.to_owned()),
                    None => (None, rest.to_owned()),
                };
                (host_ip, published, target, protocol)
            }
            RawPort::Long {
                target,
                published,
                host_ip,
                protocol,
            } => (
                host_ip.clone(),
                published.clone(),
                target.clone().unwrap_or_default(),
                protocol.clone().unwrap_or_else(|| "tcp".to_owned()),
            ),
        };
        let Some(published) = published.filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        Ok(Some(PublishedPort {
            host_ip: host_ip.filter(|ip| !ip.is_empty()),
            host_port: port(&published)?,
            container_port: port(&target)?,
            protocol,
            path: path.to_path_buf(),
            line,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(files: &[(&str, &str)]) -> Result<ComposeProject, ComposeError> {
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
            matches!(err, ComposeError::Invalid { line, .. } if line > 0),
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
}
