//! Doctor: why pulls and services fail here, each reason one [`Check`] with a verdict
//! and a concrete hint (mirrors that stopped answering, a broken daemon.json, a port
//! already allocated, a wrong-architecture binary). One file per check family; each
//! check is a function of what was read (daemon facts, files, sockets), so that it can
//! be tested without a daemon, and [`doctor`] gathers the facts.
//!
//! May import: `vocab`, `support`, `parse`, `config`, `plan`, `resilience`, `registry`, `engine`,
//! `build` (a build context's files).

mod binaries;
mod coverage;
mod daemon;
mod mirrors;
mod ports;
mod proxy;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use binaries::BinaryFormat;

use crate::engine::DockerEngine;
use crate::parse::daemon_json::DAEMON_JSON;
use crate::plan::Plan;
use crate::registry::probe_client;

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

    fn ok(name: impl Into<String>, message: impl Into<String>) -> Self {
        Check::new(name, CheckStatus::Ok, message, None)
    }
}

/// What to check and how.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// The daemon's config file (default `/etc/docker/daemon.json`).
    pub daemon_json: PathBuf,
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
            timeout: Duration::from_secs(3),
            min_free_bytes: 1 << 30,
            low_free_bytes: 10 << 30,
        }
    }
}

/// The checks of one daemon of several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostChecks {
    /// The daemon (`unix:///var/run/docker.sock`, `tcp://…`).
    pub host: String,
    /// Its checks; an unreachable daemon has one, `daemon`, failed.
    pub checks: Vec<Check>,
}

/// Runs every check on each daemon of `hosts`, in parallel; one that cannot be reached
/// gets a failed `daemon` check, the others their whole list.
pub async fn doctor_hosts(
    hosts: &[String],
    plan: &Plan,
    options: &DoctorOptions,
) -> Vec<HostChecks> {
    futures_util::future::join_all(hosts.iter().map(|host| async move {
        let checks = match DockerEngine::connect_to(host).await {
            Ok(engine) => doctor(&engine, plan, options).await,
            Err(e) => vec![Check::new(
                "daemon",
                CheckStatus::Fail,
                e.to_string(),
                Some("start it, or drop it from --docker-host / `hosts` in drbuild.yaml".into()),
            )],
        };
        HostChecks {
            host: host.clone(),
            checks,
        }
    }))
    .await
}

/// Runs every check on a tree; the daemon must be reachable (connecting is the
/// first check, and its failure is the caller's: exit 3). The mirrors of the plan's
/// `drbuild.yaml` are probed with the daemon's.
pub async fn doctor(engine: &DockerEngine, plan: &Plan, options: &DoctorOptions) -> Vec<Check> {
    let mut checks = Vec::new();
    let info = match engine.info().await {
        Ok(info) => info,
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
    checks.push(daemon::daemon(&info, engine.host()));
    checks.push(daemon::buildkit(engine.buildkit_workers().await));
    checks.push(daemon::disk(engine.host(), &info.root_dir, options));
    let (json_checks, json_mirrors) = daemon::daemon_json(&options.daemon_json);
    checks.extend(json_checks);

    let http = probe_client(options.timeout);
    let mut working_mirror = false;
    let mut daemon_mirrors: BTreeSet<String> = info.mirrors.iter().cloned().collect();
    daemon_mirrors.extend(json_mirrors);
    let hub_images: Vec<crate::vocab::ImageReference> = plan
        .references()
        .filter(|r| r.registry() == crate::vocab::DOCKER_HUB)
        .cloned()
        .collect();
    for mirror in &daemon_mirrors {
        let check = mirrors::probe(&http, mirror, "the daemon's", &options.daemon_json).await;
        let up = check.status == CheckStatus::Ok;
        working_mirror |= up;
        checks.push(check);
        if up {
            checks.push(coverage::coverage(mirror, &hub_images, options.timeout).await);
        }
    }
    let config_path = plan.config.as_ref().map_or_else(
        || Path::new("drbuild.yaml").to_path_buf(),
        |c| c.path.clone(),
    );
    for spec in plan.config.iter().flat_map(|c| &c.config.mirrors) {
        let (registry, target) = spec
            .split_once('=')
            .map_or((None, spec.as_str()), |(r, m)| (Some(r), m));
        let url = target
            .parse::<crate::resilience::mirror::Mirror>()
            .map_or_else(|_| target.to_owned(), |m| m.base_url());
        let check = mirrors::probe(&http, &url, "drbuild.yaml's", &config_path).await;
        working_mirror |= check.status == CheckStatus::Ok && registry.is_none();
        checks.push(check);
    }
    checks.extend(mirrors::upstreams(&http, plan, working_mirror, options.timeout).await);
    checks.push(proxy::proxies(&proxy::shell_proxies(), &info.proxies));
    checks.push(binaries::binaries(
        &plan.services.root,
        &plan.services,
        &info.architecture,
    ));
    checks.push(ports::ports(engine, plan).await);
    checks
}
