//! `doctor`: why pulls and services fail here, each reason as one check with a
//! verdict and a concrete hint (seeds 000, 001, 003, 004).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::binary::BinaryFormat;
use crate::context::BuildContext;
use crate::daemon_config::{DaemonJson, DAEMON_JSON};
use crate::engine::{DaemonInfo, DockerEngine};
use crate::plan::Plan;
use crate::reference::DOCKER_HUB;
use crate::service::ServiceSet;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Fine.
    Ok,
    /// Worth knowing; nothing is broken.
    Warn,
    /// Pulls or builds will fail because of it.
    Fail,
}

impl CheckStatus {
    /// `ok`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "fail",
        }
    }
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked (`daemon`, `mirror 127.0.0.1:5000`, `ports`…).
    pub name: String,
    /// The verdict.
    pub status: CheckStatus,
    /// What was found.
    pub message: String,
    /// What to do (for `warn` and `fail`).
    pub hint: Option<String>,
}

impl Check {
    fn new(
        name: impl Into<String>,
        status: CheckStatus,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Self {
        Check {
            name: name.into(),
            status,
            message: message.into(),
            hint,
        }
    }
}

/// What to check and how.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// The daemon's config file (default `/etc/docker/daemon.json`).
    pub daemon_json: PathBuf,
    /// Mirrors from drbuild's config, `HOST[:PORT][/PREFIX]` or `REGISTRY=HOST…`.
    pub mirrors: Vec<String>,
    /// Timeout of each network probe.
    pub timeout: Duration,
    /// Free space under the daemon's root below which disk is a `fail`.
    pub min_free_bytes: u64,
    /// … and below which it is a `warn`.
    pub low_free_bytes: u64,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions {
            daemon_json: PathBuf::from(DAEMON_JSON),
            mirrors: Vec::new(),
            timeout: Duration::from_secs(3),
            min_free_bytes: 1 << 30,
            low_free_bytes: 10 << 30,
        }
    }
}

/// Runs every check on a tree; the daemon must be reachable (connecting is the
/// first check, and its failure is the caller's: exit 3).
pub async fn doctor(
    engine: &DockerEngine,
    root: &Path,
    plan: &Plan,
    options: &DoctorOptions,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let info = match engine.info().await {
        Ok(info) => {
            checks.push(Check::new(
                "daemon",
                CheckStatus::Ok,
                format!(
                    "Docker {} (API {}) at {}, storage driver {}, {} {}",
                    info.version,
                    info.api_version,
                    engine.host(),
                    info.storage_driver,
                    info.os,
                    info.architecture
                ),
                None,
            ));
            info
        }
        Err(e) => {
            checks.push(Check::new(
                "daemon",
                CheckStatus::Fail,
                e.to_string(),
                Some("check `docker info`".into()),
            ));
            return checks;
        }
    };
    checks.push(disk(engine, &info, options));
    let daemon_json = daemon_json(&options.daemon_json);
    checks.extend(daemon_json.0);
    let http = reqwest::Client::builder()
        .timeout(options.timeout)
        .no_proxy()
        .build()
        .unwrap_or_default();
    let mut working_mirror = false;
    let mut mirrors: BTreeSet<String> = info.mirrors.iter().cloned().collect();
    mirrors.extend(daemon_json.1);
    for mirror in &mirrors {
        let check = probe_mirror(&http, mirror, "the daemon's", &options.daemon_json).await;
        working_mirror |= check.status == CheckStatus::Ok;
        checks.push(check);
    }
    for spec in &options.mirrors {
        let target = spec.split_once('=').map_or(spec.as_str(), |(_, m)| m);
        let url = if target.contains("://") {
            target.to_owned()
        } else {
            format!("https://{target}")
        };
        let check = probe_mirror(&http, &url, "drbuild.yaml's", Path::new("drbuild.yaml")).await;
        working_mirror |= check.status == CheckStatus::Ok && !spec.contains('=');
        checks.push(check);
    }
    checks.extend(upstreams(&http, plan, working_mirror, options.timeout).await);
    checks.push(proxies(&info));
    let services = ServiceSet::load(root, plan).ok();
    if let Some(set) = &services {
        checks.push(binaries(root, set, &info));
    }
    checks.push(ports(engine, plan).await);
    checks
}

fn disk(engine: &DockerEngine, info: &DaemonInfo, options: &DoctorOptions) -> Check {
    let local = engine.host().starts_with("unix://") || engine.host().starts_with("npipe://");
    let root = Path::new(&info.root_dir);
    if !local || info.root_dir.is_empty() || !root.exists() {
        return Check::new(
            "disk",
            CheckStatus::Warn,
            format!(
                "cannot see the daemon's root dir `{}` from here",
                info.root_dir
            ),
            Some("run doctor on the daemon's host to check its free disk".into()),
        );
    }
    let free = std::process::Command::new("df")
        .args(["-Pk", &info.root_dir])
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines()
                .nth(1)?
                .split_whitespace()
                .nth(3)?
                .parse::<u64>()
                .ok()
        })
        .map(|k| k * 1024);
    let Some(free) = free else {
        return Check::new(
            "disk",
            CheckStatus::Warn,
            format!("cannot read free space under `{}`", info.root_dir),
            None,
        );
    };
    let gib = free as f64 / f64::from(1u32 << 30);
    let message = format!("{gib:.1} GiB free under {}", info.root_dir);
    let hint = Some("free space: `docker system prune` (unused images, build cache), or move `data-root` to a larger disk".into());
    if free < options.min_free_bytes {
        Check::new("disk", CheckStatus::Fail, message, hint)
    } else if free < options.low_free_bytes {
        Check::new("disk", CheckStatus::Warn, message, hint)
    } else {
        Check::new("disk", CheckStatus::Ok, message, None)
    }
}

/// The daemon.json checks, and the mirrors it names.
fn daemon_json(path: &Path) -> (Vec<Check>, Vec<String>) {
    let name = "daemon.json";
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (
                vec![Check::new(
                    name,
                    CheckStatus::Ok,
                    format!("{} not present (daemon defaults)", path.display()),
                    None,
                )],
                Vec::new(),
            );
        }
        Err(e) => {
            return (
                vec![Check::new(
                    name,
                    CheckStatus::Warn,
                    format!("cannot read {}: {e}", path.display()),
                    Some("run as a user who can read it (sudo)".into()),
                )],
                Vec::new(),
            );
        }
    };
    let checked = DaemonJson::check(&text);
    if checked.issues.is_empty() {
        return (
            vec![Check::new(
                name,
                CheckStatus::Ok,
                format!("{} is valid", path.display()),
                None,
            )],
            checked.mirrors,
        );
    }
    let checks = checked
        .issues
        .into_iter()
        .map(|i| {
            Check::new(
                name,
                if i.fatal {
                    CheckStatus::Fail
                } else {
                    CheckStatus::Warn
                },
                format!("{}: {}", path.display(), i.message),
                Some(i.hint),
            )
        })
        .collect();
    let mirrors = checked
        .mirrors
        .into_iter()
        .filter(|m| m.contains("://"))
        .collect();
    (checks, mirrors)
}

fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

async fn probe_mirror(http: &reqwest::Client, url: &str, whose: &str, config: &Path) -> Check {
    let name = format!("mirror {}", host_port(url));
    let probe = format!("{}/v2/", url.trim_end_matches('/'));
    let hint = Some(format!(
        "{whose} mirror does not answer: fix it or remove it from `registry-mirrors` in {} (a dead mirror makes every pull wait for the fallback)",
        config.display()
    ));
    match http.get(&probe).send().await {
        Ok(r) if r.status().is_success() || r.status().as_u16() == 401 => Check::new(
            name,
            CheckStatus::Ok,
            format!("{url} answers ({})", r.status().as_u16()),
            None,
        ),
        Ok(r) => Check::new(
            name,
            CheckStatus::Fail,
            format!("{url} answered HTTP {} to GET /v2/", r.status().as_u16()),
            hint,
        ),
        Err(e) => Check::new(
            name,
            CheckStatus::Fail,
            format!("{url} is unreachable: {}", error_chain(&e)),
            hint,
        ),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn upstreams(
    http: &reqwest::Client,
    plan: &Plan,
    working_mirror: bool,
    timeout: Duration,
) -> Vec<Check> {
    let registries: BTreeSet<String> = plan.references().map(|r| r.registry().to_owned()).collect();
    let mut checks = Vec::new();
    for registry in registries {
        let host = if registry == DOCKER_HUB {
            "registry-1.docker.io".to_owned()
        } else {
            registry.clone()
        };
        let name = format!("upstream {registry}");
        let (host_only, port) = match host.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_owned(), p.parse().unwrap_or(443)),
            _ => (host.clone(), 443u16),
        };
        let covered = registry == DOCKER_HUB && working_mirror;
        let bad = |why: String| {
            let (status, hint) = if covered {
                (
                    CheckStatus::Warn,
                    "a working registry mirror covers it".to_owned(),
                )
            } else {
                (CheckStatus::Fail, format!("pulls from {registry} will fail: configure a mirror (`registry-mirrors` in daemon.json, or `drbuild prefetch --mirror`), a proxy, or bring the images over with `drbuild export`/`import`"))
            };
            Check::new(&name, status, why, Some(hint))
        };
        let resolved =
            tokio::time::timeout(timeout, tokio::net::lookup_host((host_only.as_str(), port)))
                .await;
        match resolved {
            Err(_) => {
                checks.push(bad(format!("DNS lookup of {host_only} timed out")));
                continue;
            }
            Ok(Err(e)) => {
                checks.push(bad(format!("DNS lookup of {host_only} failed: {e}")));
                continue;
            }
            Ok(Ok(_)) => {}
        }
        let scheme = if host_only == "127.0.0.1" || host_only == "localhost" {
            "http"
        } else {
            "https"
        };
        match http.get(format!("{scheme}://{host}/v2/")).send().await {
            Ok(r) => checks.push(Check::new(
                &name,
                CheckStatus::Ok,
                format!("{host} answers ({})", r.status().as_u16()),
                None,
            )),
            Err(e) => checks.push(bad(format!("{host} is unreachable: {}", error_chain(&e)))),
        }
    }
    checks
}

fn proxies(info: &DaemonInfo) -> Check {
    let mut found = Vec::new();
    for key in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    ] {
        if let Ok(v) = std::env::var(key) {
            if !v.is_empty() {
                found.push(format!("{key}={v} (this shell)"));
            }
        }
    }
    for (k, v) in &info.proxies {
        found.push(format!("{k}={v} (daemon)"));
    }
    if found.is_empty() {
        Check::new(
            "proxy",
            CheckStatus::Ok,
            "no proxy configured (shell or daemon)",
            None,
        )
    } else {
        // Pulls go through the daemon's proxy, not the shell's: say so when they differ.
        let shell = found.iter().any(|f| f.ends_with("(this shell)"));
        let daemon = !info.proxies.is_empty();
        let hint = (shell && !daemon).then(|| "the daemon does not use this shell's proxy: set it in a systemd drop-in (`Environment=HTTPS_PROXY=…` in /etc/systemd/system/docker.service.d/proxy.conf) or `proxies` in daemon.json".to_owned());
        Check::new(
            "proxy",
            if hint.is_some() {
                CheckStatus::Warn
            } else {
                CheckStatus::Ok
            },
            found.join(", "),
            hint,
        )
    }
}

fn docker_arch(arch: &str) -> String {
    match arch {
        "x86_64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        other => other.into(),
    }
}

fn binaries(root: &Path, set: &ServiceSet, info: &DaemonInfo) -> Check {
    let mut bad: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut scanned = 0usize;
    for service in set.services.values() {
        let arch = service
            .platform
            .as_deref()
            .and_then(|p| p.split('/').nth(1))
            .map_or_else(|| docker_arch(&info.architecture), str::to_owned);
        let Ok(context) = BuildContext::new(
            &root.join(&service.context),
            &root.join(&service.dockerfile),
        ) else {
            continue;
        };
        for file in context.files().unwrap_or_default() {
            scanned += 1;
            if let Some(why) = BinaryFormat::of_file(&file).and_then(|f| f.mismatch(&arch)) {
                let shown = file
                    .strip_prefix(root)
                    .unwrap_or(&file)
                    .display()
                    .to_string();
                bad.entry(format!(
                    "{shown}: {why} (service {}, linux/{arch})",
                    service.name
                ))
                .or_default();
            }
        }
    }
    if bad.is_empty() {
        Check::new(
            "binaries",
            CheckStatus::Ok,
            format!(
                "{scanned} files in {} build context(s); none for another platform",
                set.services.len()
            ),
            None,
        )
    } else {
        Check::new(
            "binaries",
            CheckStatus::Fail,
            bad.keys().cloned().collect::<Vec<_>>().join("; "),
            Some("these would fail with `exec format error` in the image: build them for the image's platform (e.g. `GOOS=linux GOARCH=amd64`, or in a build stage), or exclude them in .dockerignore".into()),
        )
    }
}

/// Ports in LISTEN state on this host, with the socket inode, from /proc/net/tcp{,6}.
fn listening() -> Vec<(String, u16, u64)> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "0A" {
                continue;
            }
            let Some((addr, port)) = cols[1].split_once(':') else {
                continue;
            };
            let Ok(port) = u16::from_str_radix(port, 16) else {
                continue;
            };
            let ip = if v6 {
                if addr.chars().all(|c| c == '0') {
                    "::".to_owned()
                } else {
                    "v6".to_owned()
                }
            } else {
                u32::from_str_radix(addr, 16)
                    .map(|a| std::net::Ipv4Addr::from(a.swap_bytes()).to_string())
                    .unwrap_or_default()
            };
            out.push((ip, port, cols[9].parse().unwrap_or(0)));
        }
    }
    out
}

/// The process holding a socket inode: `pid N (comm)`.
fn socket_owner(inode: u64) -> Option<String> {
    if inode == 0 {
        return None;
    }
    let needle = format!("socket:[{inode}]");
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = proc_entry.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == needle) {
                let comm =
                    std::fs::read_to_string(proc_entry.path().join("comm")).unwrap_or_default();
                return Some(format!("pid {pid} ({})", comm.trim()));
            }
        }
    }
    None
}

async fn ports(engine: &DockerEngine, plan: &Plan) -> Check {
    let mut wanted = Vec::new();
    for project in &plan.compose {
        for service in project.services.values() {
            for p in &service.ports {
                if p.host_port != 0 && p.protocol == "tcp" {
                    wanted.push((service.name.clone(), p.clone()));
                }
            }
        }
    }
    if wanted.is_empty() {
        return Check::new("ports", CheckStatus::Ok, "no published host ports", None);
    }
    let listening = listening();
    let containers = engine
        .docker()
        .list_containers(None::<bollard::query_parameters::ListContainersOptions>)
        .await
        .unwrap_or_default();
    let mut busy = Vec::new();
    for (service, p) in &wanted {
        let host_ip = p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into());
        let held = listening.iter().find(|(ip, port, _)| {
            *port == p.host_port
                && (ip == &host_ip
                    || ip == "0.0.0.0"
                    || ip == "::"
                    || host_ip == "0.0.0.0"
                    || host_ip == "::")
        });
        let container = containers.iter().find(|c| {
            c.ports
                .iter()
                .flatten()
                .any(|cp| cp.public_port == Some(p.host_port))
        });
        let by = match (container, held) {
            (Some(c), _) => Some(format!(
                "container {}",
                c.names
                    .as_ref()
                    .and_then(|n| n.first())
                    .map_or("?", |n| n.trim_start_matches('/'))
            )),
            (None, Some((_, _, inode))) => {
                Some(socket_owner(*inode).unwrap_or_else(|| "another process".into()))
            }
            (None, None) => None,
        };
        if let Some(by) = by {
            busy.push(format!(
                "port {} ({}:{}, service {service}) is in use by {by}",
                p.host_port,
                p.path.display(),
                p.line
            ));
        }
    }
    if busy.is_empty() {
        Check::new(
            "ports",
            CheckStatus::Ok,
            format!("{} published port(s) free", wanted.len()),
            None,
        )
    } else {
        Check::new(
            "ports",
            CheckStatus::Fail,
            busy.join("; "),
            Some("`port is already allocated` would stop these services: stop what holds the port (`docker stop NAME`, or the process), or publish another host port".into()),
        )
    }
}
