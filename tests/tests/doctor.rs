//! `drbuild doctor` against the real daemon, registry and fault proxy; and exit 3 of
//! every daemon command when there is no daemon.

use docker_resilience_tests::faultproxy::Config;
use docker_resilience_tests::testbed::{data, repo_root, Testbed};
use serde_json::Value;

fn checks(stdout: &str) -> Vec<Value> {
    let doc: Value = serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    doc["checks"].as_array().cloned().unwrap_or_default()
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn healthy_test_bed_passes_with_at_most_warnings() {
    let bed = Testbed::get();
    let demo = repo_root().join("examples/demo-monorepo");
    let (code, stdout, stderr) = bed.drbuild(&["doctor", demo.to_str().expect("utf-8"), "--json"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let checks = checks(&stdout);
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    for expected in [
        "daemon",
        "buildkit",
        "disk",
        "daemon.json",
        "proxy",
        "binaries",
        "ports",
    ] {
        assert!(names.contains(&expected), "{expected} missing: {names:?}");
    }
    let mirror = format!("mirror {}", bed.proxy);
    let mirror = checks
        .iter()
        .find(|c| c["name"] == mirror.as_str())
        .expect("the daemon's mirror is checked");
    assert_eq!(mirror["status"], "ok", "{mirror}");
    // Docker Hub itself is unreachable here, but the working mirror covers it.
    let hub = checks
        .iter()
        .find(|c| c["name"] == "upstream docker.io")
        .expect("upstream docker.io");
    assert_eq!(hub["status"], "warn", "{hub}");
    assert!(checks.iter().all(|c| c["status"] != "fail"), "{stdout}");
    // Every engine of the matrix serves BuildKit's API, with a worker for the host.
    let buildkit = checks
        .iter()
        .find(|c| c["name"] == "buildkit")
        .expect("buildkit");
    assert_eq!(buildkit["status"], "ok", "{buildkit}");
    let message = buildkit["message"].as_str().expect("a message");
    assert!(
        message.contains("worker ") && message.contains("linux/amd64"),
        "{message}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn dead_mirror_foreign_binary_and_busy_port_each_fail_by_name() {
    let bed = Testbed::get();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = holder.local_addr().expect("addr").port().to_string();
    bed.set_faults(&Config {
        down: true,
        ..Config::default()
    });
    let root = data("doctor-broken");
    let (code, stdout, stderr) = bed.drbuild_env(
        &[
            "doctor",
            root.to_str().expect("utf-8"),
            "--json",
            "--timeout",
            "2s",
        ],
        &[("DOCTOR_PORT", &port)],
    );
    bed.reset_faults();
    drop(holder);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let checks = checks(&stdout);
    let failed = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name && c["status"] == "fail")
            .unwrap_or_else(|| panic!("no failed `{name}` check in {stdout}"))
            .clone()
    };
    let mirror = failed(&format!("mirror {}", bed.proxy));
    assert!(
        mirror["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&bed.proxy),
        "{mirror}"
    );
    assert!(mirror["hint"].as_str().is_some());
    let binaries = failed("binaries");
    let message = binaries["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("api/tool-macos") && message.contains("Mach-O"),
        "{binaries}"
    );
    let ports = failed("ports");
    let message = ports["message"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("port {port} ")), "{ports}");
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "the holder is named: {ports}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn every_daemon_command_exits_3_without_a_daemon() {
    let bed = Testbed::get();
    let demo = repo_root().join("examples/demo-monorepo");
    let demo = demo.to_str().expect("utf-8");
    let bundle = std::env::temp_dir().join("drbuild-no-daemon.bundle");
    let bundle = bundle.to_str().expect("utf-8");
    let commands: [&[&str]; 5] = [
        &["prefetch", demo],
        &["build-all", demo],
        &["build", "-C", demo, "nginx"],
        &["import", bundle],
        &["doctor", demo],
    ];
    for args in commands {
        let (code, stdout, stderr) = bed.drbuild_env(
            args,
            &[("DOCKER_HOST", "unix:///tmp/drbuild-no-such-daemon.sock")],
        );
        assert_eq!(code, 3, "{args:?}: {stdout}\n{stderr}");
        assert!(
            stderr.contains("cannot reach the Docker daemon") && stderr.contains("start it"),
            "{args:?}: {stderr}"
        );
    }
    // `export` needs no daemon: it fetches from the registries. Here none answers (Docker
    // Hub is pinned to nowhere and there is no daemon to name its mirrors): it says so
    // at once, and writes nothing.
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = bed.drbuild_env(
        &["export", demo, "-o", bundle],
        &[("DOCKER_HOST", "unix:///tmp/drbuild-no-such-daemon.sock")],
    );
    assert_eq!(
        code, 1,
        "{stdout}
{stderr}"
    );
    assert!(
        stderr.contains(
            "none of the sources of `docker.io/library/alpine:latest` answers (registry docker.io)"
        ),
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(!std::path::Path::new(bundle).exists());
}
