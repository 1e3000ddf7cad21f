//! The daemon itself: what it is, the free disk under its root, and its daemon.json.

use std::path::Path;

use super::{Check, CheckStatus, DoctorOptions};
use crate::engine::{BuildkitWorker, DaemonInfo, EngineError, ImageStore};
use crate::parse::daemon_json::DaemonJson;

/// What the daemon is (the connection worked: this check passes).
pub(super) fn daemon(info: &DaemonInfo, host: &str) -> Check {
    let store = match info.image_store {
        ImageStore::Containerd => "containerd image store",
        ImageStore::GraphDriver => "graph-driver image store",
    };
    Check::ok(
        "daemon",
        format!(
            "Docker {} (API {}) at {host}, storage driver {} ({store}), {} {}",
            info.version, info.api_version, info.storage_driver, info.os, info.architecture
        ),
    )
}

/// BuildKit's API on the daemon (its gRPC endpoint): the workers and the platforms
/// each runs natively. Without it, builds go through the classic `/build` endpoint: a
/// warning, not a failure.
pub(super) fn buildkit(workers: Result<Vec<BuildkitWorker>, EngineError>) -> Check {
    let name = "buildkit";
    match workers {
        Ok(workers) if !workers.is_empty() => {
            let described: Vec<String> = workers
                .iter()
                .map(|w| {
                    let about: Vec<&str> = [w.executor.as_deref(), w.snapshotter.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect();
                    let about = if about.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", about.join(", "))
                    };
                    let platforms: Vec<String> = w.platforms.iter().map(ToString::to_string).collect();
                    format!("worker {}{about}: {}", w.id, platforms.join(", "))
                })
                .collect();
            Check::ok(name, format!("BuildKit API answers; {}", described.join("; ")))
        }
        Ok(_) => Check::new(
            name,
            CheckStatus::Warn,
            "BuildKit API answers, with no worker",
            Some("check the daemon's log: BuildKit failed to start its worker".into()),
        ),
        Err(e) => Check::new(
            name,
            CheckStatus::Warn,
            e.to_string(),
            Some("builds go through the daemon's classic /build endpoint; BuildKit is dockerd's default builder on Linux since 23.0 (`features: {buildkit: true}` in daemon.json before)".into()),
        ),
    }
}

/// Free space under the daemon's root, when this machine can see it.
pub(super) fn disk(host: &str, root_dir: &str, options: &DoctorOptions) -> Check {
    let local = host.starts_with("unix://") || host.starts_with("npipe://");
    if !local || root_dir.is_empty() || !Path::new(root_dir).exists() {
        return Check::new(
            "disk",
            CheckStatus::Warn,
            format!("cannot see the daemon's root dir `{root_dir}` from here"),
            Some("run doctor on the daemon's host to check its free disk".into()),
        );
    }
    match free_bytes(Path::new(root_dir)) {
        Ok(free) => disk_verdict(free, root_dir, options),
        Err(e) => Check::new(
            "disk",
            CheckStatus::Warn,
            format!("cannot read free space under `{root_dir}`: {e}"),
            None,
        ),
    }
}

/// Bytes an unprivileged writer may still use on the file system holding `path`.
fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

fn disk_verdict(free: u64, root_dir: &str, options: &DoctorOptions) -> Check {
    let gib = free as f64 / f64::from(1u32 << 30);
    let message = format!("{gib:.1} GiB free under {root_dir}");
    let hint = Some("free space: `docker system prune` (unused images, build cache), or move `data-root` to a larger disk".into());
    if free < options.min_free_bytes {
        Check::new("disk", CheckStatus::Fail, message, hint)
    } else if free < options.low_free_bytes {
        Check::new("disk", CheckStatus::Warn, message, hint)
    } else {
        Check::ok("disk", message)
    }
}

/// The daemon.json checks, and the mirrors it names (with a scheme: dockerd refuses
/// the others, reported here).
pub(super) fn daemon_json(path: &Path) -> (Vec<Check>, Vec<String>) {
    daemon_json_checks(path, std::fs::read_to_string(path))
}

fn daemon_json_checks(path: &Path, text: std::io::Result<String>) -> (Vec<Check>, Vec<String>) {
    let name = "daemon.json";
    let text = match text {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let message = format!("{} not present (daemon defaults)", path.display());
            return (vec![Check::ok(name, message)], Vec::new());
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
        let message = format!("{} is valid", path.display());
        return (vec![Check::ok(name, message)], checked.mirrors);
    }
    let checks = checked
        .issues
        .into_iter()
        .map(|i| {
            let status = if i.fatal {
                CheckStatus::Fail
            } else {
                CheckStatus::Warn
            };
            let message = format!("{}: {}", path.display(), i.message);
            Check::new(name, status, message, Some(i.hint))
        })
        .collect();
    let mirrors = checked
        .mirrors
        .into_iter()
        .filter(|m| m.contains("://"))
        .collect();
    (checks, mirrors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildkit_workers_or_why_not() {
        let check = buildkit(Ok(vec![BuildkitWorker {
            id: "moby".into(),
            platforms: vec!["linux/amd64".parse().unwrap(), "linux/386".parse().unwrap()],
            executor: None,
            snapshotter: None,
        }]));
        assert_eq!(check.status, CheckStatus::Ok);
        assert_eq!(
            check.message,
            "BuildKit API answers; worker moby: linux/amd64, linux/386"
        );
        let check = buildkit(Ok(vec![BuildkitWorker {
            id: "j70w".into(),
            platforms: vec!["linux/amd64/v2".parse().unwrap()],
            executor: Some("containerd".into()),
            snapshotter: Some("overlayfs".into()),
        }]));
        assert_eq!(
            check.message,
            "BuildKit API answers; worker j70w (containerd, overlayfs): linux/amd64/v2"
        );
        let check = buildkit(Err(EngineError::other(
            "BuildKit's API at unix:///run/docker.sock: the daemon answered 404 Not Found to the upgrade to gRPC (no BuildKit there)",
        )));
        assert_eq!(check.status, CheckStatus::Warn);
        assert!(check.hint.unwrap().contains("/build"));
    }

    fn fixture(name: &str) -> std::io::Result<String> {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/data/daemon-json")
                .join(name),
        )
    }

    #[test]
    fn disk_thresholds() {
        let o = DoctorOptions::default();
        assert_eq!(disk_verdict(20 << 30, "/d", &o).status, CheckStatus::Ok);
        assert_eq!(disk_verdict(5 << 30, "/d", &o).status, CheckStatus::Warn);
        let low = disk_verdict(100 << 20, "/d", &o);
        assert_eq!(low.status, CheckStatus::Fail);
        assert_eq!(low.message, "0.1 GiB free under /d");
        assert!(low.hint.unwrap().contains("docker system prune"));
    }

    #[test]
    fn disk_reads_free_space_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let check = disk(
            "unix:///var/run/docker.sock",
            root,
            &DoctorOptions {
                min_free_bytes: 0,
                low_free_bytes: 0,
                ..DoctorOptions::default()
            },
        );
        assert_eq!(check.status, CheckStatus::Ok, "{check:?}");
        assert!(check.message.ends_with(&format!("GiB free under {root}")));
        assert!(free_bytes(dir.path()).unwrap() > 0);
        let remote = disk("tcp://10.0.0.1:2376", root, &DoctorOptions::default());
        assert_eq!(remote.status, CheckStatus::Warn);
    }

    #[test]
    fn daemon_json_verdicts() {
        let path = Path::new("/etc/docker/daemon.json");
        let (checks, mirrors) = daemon_json_checks(path, fixture("good.json"));
        assert_eq!(checks[0].status, CheckStatus::Ok);
        assert_eq!(mirrors.len(), 2);
        let (checks, _) = daemon_json_checks(path, fixture("trailing-comma.json"));
        assert_eq!(checks[0].status, CheckStatus::Fail);
        assert!(checks[0].message.contains("line"), "{checks:?}");
        let (checks, mirrors) = daemon_json_checks(path, fixture("no-scheme.json"));
        assert!(
            checks
                .iter()
                .any(|c| c.status == CheckStatus::Fail && c.message.contains("has no scheme")),
            "{checks:?}"
        );
        assert!(mirrors.iter().all(|m| m.contains("://")));
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let (checks, _) = daemon_json_checks(path, Err(missing));
        assert_eq!(checks[0].status, CheckStatus::Ok);
        assert!(checks[0].message.contains("not present"));
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(
            daemon_json_checks(path, Err(denied)).0[0].status,
            CheckStatus::Warn
        );
    }
}
