//! `build-all --builder A --builder B`: services spread over two daemons (the test
//! daemon and the site daemon), and a builder killed mid-run.

use std::process::{Command, Stdio};
use std::time::Duration;

use docker_resilience_tests::testbed::{repo_root, Session, Testbed};
use serde_json::Value;

const SERVICES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

/// Six independent services whose one step sleeps 2 s.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = "services:\n".to_owned();
    for name in SERVICES {
        std::fs::create_dir_all(dir.path().join(name)).expect("mkdir");
        std::fs::write(
            dir.path().join(name).join("Dockerfile"),
            format!("FROM busybox:1.36\nRUN sleep 2 && echo {name} > /{name}\n"),
        )
        .expect("write");
        config.push_str(&format!(
            "  {name}:\n    image: drbuild-e2e-spread-{name}:1\n"
        ));
    }
    std::fs::write(dir.path().join("drbuild.yaml"), config).expect("write");
    dir
}

fn build(bed: &Session<'_>, root: &str, builders: &[&str]) -> (i32, Value, String) {
    let mut args = vec![
        "build-all",
        root,
        "--force",
        "--jobs",
        "1",
        "--json",
        "--retry-delay",
        "100ms",
    ];
    for b in builders {
        args.extend(["--builder", b]);
    }
    let (code, stdout, stderr) = bed.drbuild(&args);
    let doc = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    (code, doc, stderr)
}

/// The tree, with the base on both builders and a first build done on both: the base
/// prefetched into the test daemon and copied to the site daemon (whose own mirror,
/// the LAN registry, is authoritative there and lacks it).
fn warm(bed: &Session<'_>) -> tempfile::TempDir {
    let dir = tree();
    let root = dir.path().to_str().expect("utf-8");
    let (code, _, stderr) = bed.drbuild(&["prefetch", root]);
    assert_eq!(code, 0, "{stderr}");
    bed.copy_to_site("busybox:1.36");
    let (a, b) = (bed.docker_host.as_str(), bed.site_host.as_str());
    let (code, doc, stderr) = build(bed, root, &[a, b]);
    assert_eq!(code, 0, "{doc}\n{stderr}");
    dir
}

fn builders_used(doc: &Value) -> Vec<String> {
    let mut used: Vec<String> = doc["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["builder"].as_str().map(str::to_owned))
        .collect();
    used.sort();
    used.dedup();
    used
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn two_builders_share_the_work() {
    let bed = Testbed::get();
    let dir = warm(&bed);
    let root = dir.path().to_str().unwrap();
    let (a, b) = (bed.docker_host.as_str(), bed.site_host.as_str());

    let (code, one, stderr) = build(&bed, root, &[a]);
    assert_eq!(code, 0, "{one}\n{stderr}");
    let (code, two, stderr) = build(&bed, root, &[a, b]);
    assert_eq!(code, 0, "{two}\n{stderr}");
    assert_eq!(two["summary"]["built"], 6, "{two}");
    assert_eq!(builders_used(&two), {
        let mut both = vec![a.to_owned(), b.to_owned()];
        both.sort();
        both
    });
    let (t1, t2) = (
        one["summary"]["elapsed_ms"].as_u64().unwrap(),
        two["summary"]["elapsed_ms"].as_u64().unwrap(),
    );
    eprintln!("builders: one {t1} ms, two {t2} ms");
    assert!(t2 * 10 <= t1 * 6, "two builders {t2} ms, one {t1} ms");
    for name in SERVICES {
        let image = format!("drbuild-e2e-spread-{name}:1");
        let on_a = bed.docker(&["image", "inspect", &image]).status.success();
        let on_b = bed
            .site_docker(&["image", "inspect", &image])
            .status
            .success();
        assert!(on_a || on_b, "{image} on neither builder");
    }
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn a_builder_killed_mid_run_leaves_its_services_to_the_other() {
    let bed = Testbed::get();
    let dir = warm(&bed);
    let root = dir.path().to_str().unwrap();
    let (a, b) = (bed.docker_host.clone(), bed.site_host.clone());

    let child = Command::new(bed.drbuild_path())
        .args([
            "build-all",
            root,
            "--force",
            "--jobs",
            "1",
            "--json",
            "--builder",
            &a,
            "--builder",
            &b,
        ])
        .env("DOCKER_HOST", &a)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let pidfile = b
        .strip_prefix("unix://")
        .unwrap()
        .replace("docker.sock", "dockerd.pid");
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let killed = Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The site daemon back for the tests after this one.
    let restarted = Command::new(repo_root().join("scripts/testbed"))
        .arg("up")
        .env("DRBUILD_TESTBED_ENGINE", &bed.engine)
        .output()
        .unwrap();
    assert!(restarted.status.success(), "{restarted:?}");
    let doc: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert_eq!(out.status.code(), Some(0), "{doc}\n{stderr}");
    assert_eq!(doc["summary"]["built"], 6, "{doc}");
    assert!(
        stderr.contains(&format!("builder {b} stopped answering")),
        "{stderr}"
    );
}
