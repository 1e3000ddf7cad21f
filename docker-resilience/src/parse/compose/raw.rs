//! The compose file as written, by serde derive: the shapes compose accepts for each
//! key we read (a build context or a build mapping, args as a map or a list, …).

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::PublishedPort;

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawCompose {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub include: Vec<Spanned<RawInclude>>,
    #[serde(default)]
    pub services: BTreeMap<String, Spanned<RawService>>,
    /// Top-level `secrets:` (those builds may use: `file:` or `environment:`).
    #[serde(default)]
    pub secrets: BTreeMap<String, Spanned<RawSecret>>,
}

/// A top-level secret's definition.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawSecret {
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub environment: Option<String>,
}

/// A `build.secrets` entry: a secret's name, or `{source, target}` (the id is `target`).
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a secret name or a mapping with `source`")]
pub(super) enum RawBuildSecret {
    Name(String),
    Long {
        source: String,
        #[serde(default)]
        target: Option<String>,
    },
}

/// An `include:` entry: a path, or the long form.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "an included compose file path or an include mapping"
)]
pub(super) enum RawInclude {
    Path(String),
    Long(RawIncludeLong),
}

#[derive(Debug, Deserialize)]
pub(super) struct RawIncludeLong {
    pub path: OneOrMany,
    #[serde(default)]
    pub project_directory: Option<String>,
    #[serde(default)]
    pub env_file: Option<OneOrMany>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `extends:` as a service name or `{service, file}`.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a service name or an extends mapping")]
pub(super) enum RawExtends {
    Service(String),
    Long {
        service: String,
        #[serde(default)]
        file: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
pub(super) struct RawService {
    #[serde(default)]
    pub extends: Option<Spanned<RawExtends>>,
    #[serde(default)]
    pub image: Option<Spanned<String>>,
    #[serde(default)]
    pub build: Option<Spanned<RawBuild>>,
    #[serde(default)]
    pub depends_on: Option<DependsOn>,
    #[serde(default)]
    pub profiles: Vec<String>,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub ports: Vec<Spanned<RawPort>>,
}

/// `build:` as a context path or a mapping.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a build context path or a build mapping")]
pub(super) enum RawBuild {
    Context(String),
    Long(Box<RawBuildLong>),
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawBuildLong {
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub dockerfile: Option<String>,
    #[serde(default)]
    pub args: Option<Args>,
    #[serde(default)]
    pub dockerfile_inline: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub platforms: Vec<String>,
    #[serde(default)]
    pub additional_contexts: Option<Args>,
    #[serde(default)]
    pub secrets: Vec<Spanned<RawBuildSecret>>,
    #[serde(default)]
    pub cache_from: Vec<String>,
    #[serde(default)]
    pub cache_to: Vec<String>,
}

impl RawBuild {
    pub(super) fn into_long(self) -> RawBuildLong {
        match self {
            RawBuild::Context(context) => RawBuildLong {
                context: Some(context),
                ..RawBuildLong::default()
            },
            RawBuild::Long(long) => *long,
        }
    }
}

/// `args:` as a map (`KEY: value`, `KEY:` with no value) or a list (`KEY=value`, `KEY`).
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "build args as a mapping or a list of KEY=VALUE")]
pub(super) enum Args {
    Map(BTreeMap<String, Option<Scalar>>),
    List(Vec<String>),
}

impl Args {
    /// `(name, value)` pairs; `None` takes the value from the environment.
    pub(super) fn pairs(self) -> Vec<(String, Option<String>)> {
        match self {
            Args::Map(map) => map
                .into_iter()
                .map(|(k, v)| (k, v.as_ref().map(Scalar::to_text)))
                .collect(),
            Args::List(items) => items
                .into_iter()
                .map(|item| match item.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (item, None),
                })
                .collect(),
        }
    }
}

/// A scalar compose accepts where it wants a string (`1.21`, `true`, `8080`).
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string, number or boolean")]
pub(super) enum Scalar {
    String(String),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
}

/// `depends_on:` as a list of names or a mapping of name to conditions.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a list of service names or a mapping")]
pub(super) enum DependsOn {
    List(Vec<String>),
    Map(BTreeMap<String, IgnoredAny>),
}

impl DependsOn {
    pub(super) fn names(self) -> Vec<String> {
        match self {
            DependsOn::List(names) => names,
            DependsOn::Map(map) => map.into_keys().collect(),
        }
    }
}

/// A `ports:` entry, short (`"127.0.0.1:8080:80/tcp"`, `8080`) or long syntax.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a port string, number or mapping")]
pub(super) enum RawPort {
    Short(String),
    Number(u64),
    Long(RawPortLong),
}

#[derive(Debug, Deserialize)]
pub(super) struct RawPortLong {
    #[serde(default)]
    target: Option<Scalar>,
    #[serde(default)]
    published: Option<Scalar>,
    #[serde(default)]
    host_ip: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
}

impl RawPort {
    /// The host port this entry publishes, if it names one (a range publishes its first).
    pub(super) fn published(
        &self,
        path: &Path,
        line: usize,
    ) -> Result<Option<PublishedPort>, String> {
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
            RawPort::Number(n) => (None, None, n.to_string(), "tcp".to_owned()),
            RawPort::Long(long) => (
                long.host_ip.clone(),
                long.published.as_ref().map(Scalar::to_text),
                long.target
                    .as_ref()
                    .map(Scalar::to_text)
                    .unwrap_or_default(),
                long.protocol.clone().unwrap_or_else(|| "tcp".to_owned()),
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

impl Scalar {
    pub(super) fn to_text(&self) -> String {
        match self {
            Scalar::String(s) => s.clone(),
            Scalar::Int(v) => v.to_string(),
            Scalar::UInt(v) => v.to_string(),
            Scalar::Float(v) => v.to_string(),
            Scalar::Bool(v) => v.to_string(),
        }
    }
}
