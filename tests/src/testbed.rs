//! The local Docker world (`scripts/testbed`) as the tests see it.
//!
//! [`Testbed::get`] brings the world up once per test process (the script is
//! idempotent) and hands out a guard: the tests share one daemon and one fault
//! proxy, so they run one at a time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::faultproxy::{Config, LogEntry, Stats};

/// The running test bed.
#[derive(Debug)]
pub struct Testbed {
    /// `DOCKER_HOST` of the test daemon.
    pub docker_host: String,
    /// The registry, `127.0.0.1:PORT`.
    pub registry: String,
    /// The fault proxy (the daemon's registry mirror), `127.0.0.1:PORT`.
    pub proxy: String,
    /// The engine (`20.10`, `26.1`, `28.5`, `28.5-containerd`).
    pub engine: String,
    /// The docker client that matches the engine.
    pub docker_cli: PathBuf,
    /// The LAN registry (a fleet's mirror, empty at first), `127.0.0.1:PORT`.
    pub lan: String,
    /// `DOCKER_HOST` of the site daemon, whose only mirror is the LAN registry.
    pub site_host: String,
    /// The proxy the site daemon runs behind (its URL carries a password).
    pub site_proxy: String,
    drbuild: PathBuf,
    lock: Mutex<()>,
}

/// Exclusive use of the test bed for one test.
#[derive(Debug)]
pub struct Session<'a> {
    /// The test bed.
    pub bed: &'a Testbed,
    _guard: MutexGuard<'a, ()>,
}

impl std::ops::Deref for Session<'_> {
    type Target = Testbed;
    fn deref(&self) -> &Testbed {
        self.bed
    }
}

/// The 13 images of `tests/data/thirteen` (our users' `build-all` tree).
pub const THIRTEEN: [&str; 13] = [
    "ubuntu:22.04",
    "nginx:stable",
    "nginx:stable-alpine",
    "node:18-alpine",
    "golang:1.21-alpine",
    "golang:1.20-alpine",
    "postgres:15-alpine",
    "redis:7-alpine",
    "python:3.11-slim",
    "alpine:latest",
    "alpine:3.18",
    "busybox:1.36",
    "debian:bookworm-slim",
];

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// A fixture under `tests/data/`.
pub fn data(path: &str) -> PathBuf {
    repo_root().join("tests/data").join(path)
}

fn run_checked(command: &mut Command, what: &str) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Testbed {
    /// Brings the test bed up (once per process) and takes exclusive use of it.
    pub fn get() -> Session<'static> {
        static BED: OnceLock<Testbed> = OnceLock::new();
        let bed = BED.get_or_init(Testbed::start);
        let guard = bed.lock.lock().unwrap_or_else(|e| e.into_inner());
        let session = Session { bed, _guard: guard };
        session.reset_faults();
        session
    }

    fn start() -> Testbed {
        let root = repo_root();
        run_checked(
            Command::new(root.join("scripts/testbed")).arg("up"),
            "scripts/testbed up",
        );
        let env = run_checked(
            Command::new(root.join("scripts/testbed")).arg("env"),
            "scripts/testbed env",
        );
        let env = String::from_utf8_lossy(&env.stdout);
        let var = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("{name} missing from scripts/testbed env"))
                .to_owned()
        };
        run_checked(
            Command::new(env!("CARGO"))
                .args([
                    "build",
                    "-q",
                    "-p",
                    "docker-resilience-cli",
                    "--bin",
                    "drbuild",
                ])
                .current_dir(&root),
            "cargo build drbuild",
        );
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        Testbed {
            docker_host: var("DOCKER_HOST"),
            registry: var("DRBUILD_TESTBED_REGISTRY"),
            proxy: var("DRBUILD_TESTBED_PROXY"),
            engine: var("DRBUILD_TESTBED_ENGINE"),
            docker_cli: PathBuf::from(var("DRBUILD_TESTBED_DOCKER")),
            lan: var("DRBUILD_TESTBED_LAN"),
            site_host: var("DRBUILD_TESTBED_SITE_HOST"),
            site_proxy: var("DRBUILD_TESTBED_SITE_PROXY"),
            drbuild: target.join("debug/drbuild"),
            lock: Mutex::new(()),
        }
    }
}

impl Testbed {
    /// Whether the daemon keeps images in the containerd image store (several
    /// platforms per tag) rather than a graph driver (one platform per tag).
    pub fn containerd_store(&self) -> bool {
        self.engine.ends_with("-containerd")
    }

    /// Whether the daemon's built-in Dockerfile frontend accepts heredocs (Docker 23+).
    pub fn heredocs(&self) -> bool {
        !self.engine.starts_with("20.")
    }

    /// Whether the daemon's built-in Dockerfile frontend takes named contexts (Docker 23+).
    pub fn named_contexts(&self) -> bool {
        !self.engine.starts_with("20.")
    }
}

impl Session<'_> {
    /// The `drbuild` binary under test.
    pub fn drbuild_path(&self) -> &Path {
        &self.bed.drbuild
    }

    /// `drbuild ARGS` against the test daemon; returns exit code, stdout, stderr.
    pub fn drbuild(&self, args: &[&str]) -> (i32, String, String) {
        self.drbuild_env(args, &[])
    }

    /// `drbuild ARGS` (with `--json` among them): exit code, the JSON document it
    /// printed, stderr.
    pub fn drbuild_json(&self, args: &[&str]) -> (i32, serde_json::Value, String) {
        let (code, stdout, stderr) = self.drbuild(args);
        let doc =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
        (code, doc, stderr)
    }

    /// `drbuild ARGS` with extra environment variables.
    pub fn drbuild_env(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let out = Command::new(&self.bed.drbuild)
            .args(args)
            .env("DOCKER_HOST", &self.bed.docker_host)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .output()
            .expect("run drbuild");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Removes every name `127.0.0.1:PORT/drbuild-handoff/…` from the test daemon: the names
    /// of drbuild's handoff registry that a `drbuild` killed with SIGKILL could not
    /// remove (no test leaves such names on purpose; the native tests assert none).
    pub fn remove_handoff_names(&self) {
        let names = self.handoff_names();
        if !names.is_empty() {
            let mut args = vec!["rmi"];
            args.extend(names.iter().map(String::as_str));
            self.docker(&args);
        }
    }

    /// The names in the test daemon that drbuild's handoff gave
    /// (`127.0.0.1:PORT/drbuild-handoff/…`).
    pub fn handoff_names(&self) -> Vec<String> {
        // With `--digests`, as the native tests list them: without it the containerd
        // image store does not list these names.
        let out = self.docker(&[
            "images",
            "--digests",
            "--format",
            "{{.Repository}}:{{.Tag}}@{{.Digest}}",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("127.0.0.1:") && l.contains("/drbuild-handoff/"))
            .filter_map(|l| {
                let (name, digest) = l.split_once('@')?;
                // A name by digest only lists as `REPOSITORY:<none>@DIGEST`.
                Some(match name.strip_suffix(":<none>") {
                    Some(repository) => format!("{repository}@{digest}"),
                    None => name.to_owned(),
                })
            })
            .collect()
    }

    /// `docker ARGS` against the test daemon (the client that matches the engine).
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(&self.bed.docker_cli)
            .args(args)
            .env("DOCKER_HOST", &self.bed.docker_host)
            .output()
            .expect("run docker")
    }

    /// `docker` against the site daemon.
    pub fn site_docker(&self, args: &[&str]) -> Output {
        Command::new(&self.bed.docker_cli)
            .args(args)
            .env("DOCKER_HOST", &self.bed.site_host)
            .output()
            .expect("run docker")
    }

    /// Copies `image` from the test daemon to the site daemon (`docker save | docker
    /// load`).
    pub fn copy_to_site(&self, image: &str) {
        let moved = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "'{cli}' -H '{a}' save '{image}' | '{cli}' -H '{b}' load",
                cli = self.bed.docker_cli.display(),
                a = self.bed.docker_host,
                b = self.bed.site_host
            ))
            .output()
            .expect("docker save | docker load");
        assert!(
            moved.status.success(),
            "{image} to the site daemon: {moved:?}"
        );
    }

    /// Empties the LAN registry.
    pub fn lan_reset(&self) {
        run_checked(
            Command::new(repo_root().join("scripts/testbed"))
                .arg("lan-reset")
                .env("DRBUILD_TESTBED_ENGINE", &self.bed.engine),
            "scripts/testbed lan-reset",
        );
    }

    /// The digest the registry (upstream, or the LAN one) serves for `repository:tag`.
    pub fn manifest_digest(&self, registry: &str, repository: &str, tag: &str) -> Option<String> {
        let out = Command::new("curl")
            .args([
                "-sfI",
                "-H",
                "Accept: application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
                &format!("http://{registry}/v2/{repository}/manifests/{tag}"),
            ])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("docker-content-digest")
                .then(|| v.trim().to_owned())
        })
    }

    /// Removes images by name (missing ones are fine).
    ///
    /// On the containerd store the daemon keeps what it pulled or loaded under a lease
    /// for a day after the image is gone; those leases are dropped too, so that the
    /// content really goes, as on a machine that never had the images.
    pub fn remove_images(&self, names: &[&str]) {
        for name in names {
            let _ = self.docker(&["rmi", "-f", name]);
        }
        if self.bed.containerd_store() {
            self.drop_daemon_leases();
        }
    }

    fn drop_daemon_leases(&self) {
        let ctr = self.bed.docker_cli.with_file_name("ctr");
        let socket = std::env::var("DRBUILD_TESTBED_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(format!("/tmp/drbuild-testbed-{}", self.bed.engine)))
            .join("docker-exec/containerd/containerd.sock");
        let ctr = |args: &[&str]| {
            Command::new(&ctr)
                .arg("--address")
                .arg(&socket)
                .args(["--namespace", "moby"])
                .args(args)
                .output()
        };
        let Ok(list) = ctr(&["leases", "ls"]) else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&list.stdout)
            .lines()
            .skip(1)
            .filter(|l| l.contains("containerd.io/gc.expire") && !l.contains("buildkit/"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        for chunk in ids.chunks(50) {
            let mut args = vec!["leases", "rm"];
            args.extend(chunk.iter().map(String::as_str));
            let _ = ctr(&args);
        }
    }

    /// Whether the daemon has an image by this name.
    pub fn has_image(&self, name: &str) -> bool {
        self.docker(&["image", "inspect", name]).status.success()
    }

    fn control(&self, method: &str, what: &str, body: &str) -> String {
        use std::io::{Read, Write};
        let mut conn =
            std::net::TcpStream::connect(&self.bed.proxy).expect("connect to the fault proxy");
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
        write!(
            conn,
            "{method} /__faultproxy/{what} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.bed.proxy,
            body.len()
        )
        .expect("write to the fault proxy");
        let mut response = String::new();
        conn.read_to_string(&mut response)
            .expect("read the fault proxy's answer");
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "fault proxy: {response}"
        );
        response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    }

    /// Sets the proxy's faults (counters keep counting).
    pub fn set_faults(&self, config: &Config) {
        self.control(
            "POST",
            "config",
            &serde_json::to_string(config).expect("config as JSON"),
        );
    }

    /// No faults, counters cleared.
    pub fn reset_faults(&self) {
        self.control("POST", "reset", "");
    }

    /// The proxy's counters.
    pub fn stats(&self) -> Stats {
        serde_json::from_str(&self.control("GET", "stats", "")).expect("stats as JSON")
    }

    /// Every request the proxy saw since its faults were last set.
    pub fn log(&self) -> Vec<LogEntry> {
        serde_json::from_str(&self.control("GET", "log", "")).expect("log as JSON")
    }
}

/// Sends Ctrl-C (`SIGINT`) to a running `drbuild` and waits for it to end.
pub fn interrupt(child: std::process::Child) -> Output {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill")
        .success());
    child.wait_with_output().expect("wait")
}
