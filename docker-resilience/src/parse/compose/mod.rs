//! Compose files: the services, the images they use and the images they build.
//!
//! Files in one directory form one project: the base file (`compose.yaml`,
//! `docker-compose.yml`…) first, then its overrides (`*.override.yml`, then any
//! other `compose.*.yml`), merged service by service as `docker compose` does for
//! the keys we read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::parse::expand::{expand, Style};
use crate::vocab::{clean_path, InputError, Located};

mod raw;

use raw::{RawCompose, RawPort, RawService};

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
    ) -> Result<Self, InputError> {
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
                std::fs::read_to_string(root.join(file)).map_err(|source| InputError::Io {
                    path: file.clone(),
                    source,
                })?;
            let raw: RawCompose = crate::parse::yaml(file, &text, "compose file")?;
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

    fn merge(&mut self, service: &mut ComposeService, raw: RawService) -> Result<(), InputError> {
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
            let b = build.value.into_long();
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
            let context = clean_path(&self.dir.join(&context_text));
            let dockerfile_text = b
                .dockerfile
                .as_deref()
                .and_then(|d| self.interpolate(d, line))
                .unwrap_or_else(|| "Dockerfile".to_owned());
            let dockerfile = clean_path(&context.join(dockerfile_text));
            let mut args = BTreeMap::new();
            for (k, v) in b.args.map(raw::Args::pairs).unwrap_or_default() {
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
        for dep in raw
            .depends_on
            .map(raw::DependsOn::names)
            .unwrap_or_default()
        {
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
                    return Err(InputError::Invalid {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(files: &[(&str, &str)]) -> Result<ComposeProject, InputError> {
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
            matches!(err, InputError::Invalid { line, .. } if line > 0),
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
