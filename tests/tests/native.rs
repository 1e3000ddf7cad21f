//! The registry-native pull path against the real registry, the fault proxy and the
//! daemon: resuming cut layers, Ctrl-C and resume, rate limits honoured per source,
//! true errors, corrupt blobs refused, bundles with no daemon.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use docker_resilience_tests::faultproxy::{Config, Fault, PathKind, Rule};
use docker_resilience_tests::seed::{build_catalog, Built};
use docker_resilience_tests::testbed::{data, interrupt, Session, Testbed};
use serde_json::Value;

const BIG: &str = "pytorch/pytorch:2.1.0-cuda12.1-cudnn8-runtime";

/// The bytes of an image's blobs (manifest, config, layers), as the seeder made them.
fn image_size(name: &str) -> u64 {
    let (repository, tag) = name.split_once(':').expect("repository:tag");
    let built: Vec<Built> = build_catalog(std::path::Path::new("/bin/busybox"));
    let image = built
        .iter()
        .find(|b| b.repository == repository && b.tag == tag)
        .expect("in the catalog");
    let blobs: u64 = image.blobs.iter().map(|b| b.data.len() as u64).sum();
    blobs + image.top.1.data.len() as u64
}

fn tree_of(image: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Dockerfile"), format!("FROM {image}\n")).expect("write");
    dir
}

fn prefetch(bed: &Session<'_>, root: &std::path::Path, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["prefetch", root.to_str().expect("utf-8"), "--json"];
    args.extend_from_slice(extra);
    bed.drbuild_json(&args)
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn a_64_mib_layer_cut_every_8_mib_completes_moving_little_more_than_its_size() {
    let bed = Testbed::get();
    let cache = tempfile::tempdir().expect("tempdir");
    let tree = tree_of(BIG);
    bed.remove_images(&[BIG]);
    bed.set_faults(&Config {
        rules: vec![Rule {
            kinds: vec![PathKind::Blob],
            probability: 1.0,
            faults: vec![Fault::CutAfter { bytes: 8 << 20 }],
            ..Rule::default()
        }],
        ..Config::default()
    });
    let started = Instant::now();
    // One stream: this is the single connection's resume (parts under cuts are
    // tested in the multipart tests).
    let (code, doc, stderr) = prefetch(
        &bed,
        tree.path(),
        &[
            "--cache-dir",
            cache.path().to_str().expect("utf-8"),
            "--parts",
            "1",
        ],
    );
    let elapsed = started.elapsed();
    let stats = bed.stats();
    bed.reset_faults();
    assert_eq!(code, 0, "{doc}\n{stderr}");
    let image = &doc["images"][0];
    assert_eq!(image["status"], "pulled", "{image}");
    assert!(image["resumes"].as_u64() >= Some(7), "{image}");
    let size = image_size(BIG);
    let moved = stats.bytes;
    assert!(
        moved as f64 <= 1.15 * size as f64,
        "{moved} bytes through the proxy for a {size}-byte image"
    );
    assert!(
        stats.faults.get("cut").copied().unwrap_or(0) >= 7,
        "{stats:?}"
    );
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
    // The image is whole and runs.
    let out = bed.docker(&[
        "run",
        "--rm",
        BIG,
        "stat",
        "-c",
        "%s",
        "/opt/pytorch/pytorch/weights.bin",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        (64u64 << 20).to_string()
    );
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn ctrl_c_halfway_then_the_next_run_moves_only_what_was_missing() {
    let bed = Testbed::get();
    let cache = tempfile::tempdir().expect("tempdir");
    let cache_dir = cache.path().to_str().expect("utf-8");
    let tree = tree_of(BIG);
    bed.remove_images(&[BIG]);
    // Slow: every blob response is cut after 4 MiB and every request waits 300 ms.
    bed.set_faults(&Config {
        latency_ms: 300,
        rules: vec![Rule {
            kinds: vec![PathKind::Blob],
            probability: 1.0,
            faults: vec![Fault::CutAfter { bytes: 4 << 20 }],
            ..Rule::default()
        }],
        ..Config::default()
    });
    let child = Command::new(bed.drbuild_path())
        // One stream: what the proxy sent is then what drbuild received, give or take
        // one socket buffer (with parts, every connection's buffer is lost at Ctrl-C;
        // the parts' resume is tested in the store and multipart tests).
        .args([
            "prefetch",
            tree.path().to_str().expect("utf-8"),
            "--cache-dir",
            cache_dir,
            "--parts",
            "1",
        ])
        .env("DOCKER_HOST", &bed.docker_host)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn drbuild");
    // Interrupt once a good part of the layer is in.
    let started = Instant::now();
    while bed.stats().bytes < (24 << 20) && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = interrupt(child);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = bed.stats().bytes;
    assert!(!bed.has_image(BIG), "interrupted before it was whole");
    assert_eq!(
        bed.handoff_names(),
        Vec::<String>::new(),
        "the handoff's names are removed"
    );

    bed.reset_faults();
    let (code, doc, stderr) = prefetch(
        &bed,
        tree.path(),
        &["--cache-dir", cache_dir, "--parts", "1"],
    );
    assert_eq!(code, 0, "{doc}\n{stderr}");
    let second = bed.stats().bytes;
    let size = image_size(BIG);
    assert!(
        second + first / 2 < size,
        "the second run moved {second} bytes after the first moved {first}, of {size}"
    );
    assert!(
        (first + second) as f64 <= 1.15 * size as f64,
        "{first} + {second} bytes for a {size}-byte image"
    );
    assert!(doc["images"][0]["resumes"].as_u64() >= Some(1), "{doc}");
    assert!(bed.has_image(BIG));
    assert_eq!(bed.handoff_names(), Vec::<String>::new());
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn a_registry_that_answers_429_is_left_alone_for_its_retry_after() {
    let bed = Testbed::get();
    bed.remove_images(&["redis:7-alpine", "busybox:1.36"]);
    bed.set_faults(&Config {
        rules: vec![Rule {
            kinds: vec![PathKind::Manifest],
            probability: 1.0,
            faults: vec![Fault::RateLimit {
                retry_after_secs: 2,
            }],
            ..Rule::default()
        }],
        ..Config::default()
    });
    let tree = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tree.path().join("Dockerfile"),
        "FROM redis:7-alpine\nFROM busybox:1.36\n",
    )
    .expect("write");
    let (code, doc, stderr) = prefetch(
        &bed,
        tree.path(),
        &["--retries", "2", "--jobs", "1", "--via", "registry"],
    );
    let log = bed.log();
    bed.reset_faults();
    assert_eq!(code, 1, "{doc}\n{stderr}");
    for image in doc["images"].as_array().expect("images") {
        assert_eq!(image["error_class"], "rate-limited", "{image}");
        assert_eq!(image["attempts"], 3, "{image}");
    }
    let answered: Vec<u64> = log
        .iter()
        .filter(|e| e.fault.as_deref() == Some("429"))
        .map(|e| e.at_ms)
        .collect();
    assert!(answered.len() >= 6, "{log:?}");
    for request in log
        .iter()
        .filter(|e| e.path.starts_with("/v2/") && e.path != "/v2/")
    {
        if let Some(previous) = answered.iter().filter(|t| **t < request.at_ms).max() {
            assert!(
                request.at_ms - previous >= 1950,
                "a request {} ms after a 429 with Retry-After: 2: {request:?}",
                request.at_ms - previous
            );
        }
    }
}

/// A source that serves every image but answers `429` for one now and then (a mirror
/// relaying its upstream's limit for that repository): each such image waits its
/// `Retry-After`, and the others go on, also after a second `429` when the source served
/// an image between the two.
#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn a_lone_429_from_a_serving_source_holds_only_its_image() {
    let bed = Testbed::get();
    // Pulled one at a time in this order: busybox and golang are answered 429 once,
    // debian is served between them.
    let images = [
        "alpine:3.18",
        "busybox:1.36",
        "debian:bookworm-slim",
        "golang:1.21-alpine",
        "nginx:stable-alpine",
        "python:3.11-slim",
    ];
    let limited = ["library/busybox/", "library/golang/"];
    bed.remove_images(&images);
    bed.set_faults(&Config {
        rules: limited
            .iter()
            .map(|path| Rule {
                kinds: vec![PathKind::Manifest],
                path_contains: Some((*path).to_owned()),
                probability: 1.0,
                faults: vec![Fault::RateLimit {
                    retry_after_secs: 3,
                }],
                times: Some(1),
            })
            .collect(),
        ..Config::default()
    });
    let tree = tempfile::tempdir().expect("tempdir");
    let text: String = images.iter().map(|i| format!("FROM {i}\n")).collect();
    std::fs::write(tree.path().join("Dockerfile"), text).expect("write");
    let cache = tempfile::tempdir().expect("tempdir");
    let (code, doc, stderr) = prefetch(
        &bed,
        tree.path(),
        &[
            "--jobs",
            "1",
            "--via",
            "registry",
            "--cache-dir",
            cache.path().to_str().expect("utf-8"),
        ],
    );
    let log = bed.log();
    bed.reset_faults();
    assert_eq!(code, 0, "{doc}\n{stderr}");
    let answered: Vec<(u64, &str)> = log
        .iter()
        .filter(|e| e.fault.as_deref() == Some("429"))
        .map(|e| {
            let path = limited
                .iter()
                .find(|p| e.path.contains(**p))
                .expect("a limited repository");
            (e.at_ms, *path)
        })
        .collect();
    assert_eq!(answered.len(), 2, "{log:?}");
    let second = answered[1].0;
    let mut went_on = Vec::new();
    for request in log
        .iter()
        .filter(|e| e.path.starts_with("/v2/") && e.path != "/v2/")
    {
        for (at, path) in &answered {
            if request.path.contains(path) && request.at_ms > *at {
                let waited = request.at_ms - at;
                assert!(
                    waited >= 2950,
                    "{path} asked again after {waited} ms: {request:?}"
                );
            }
        }
        let other = !limited.iter().any(|p| request.path.contains(p));
        if other && request.at_ms > second && request.at_ms - second < 2950 {
            went_on.push(request.path.clone());
        }
    }
    assert!(
        !went_on.is_empty(),
        "nothing went on during the second 429's Retry-After: {log:?}"
    );
    for image in doc["images"].as_array().expect("images") {
        let reference = image["reference"].as_str().unwrap_or_default();
        let expected = if limited
            .iter()
            .any(|p| reference.contains(&format!("{}:", p.trim_end_matches('/'))))
        {
            2
        } else {
            1
        };
        assert_eq!(image["attempts"], expected, "{image}");
    }
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn a_missing_image_fails_once_naming_the_endpoint_and_its_404() {
    let bed = Testbed::get();
    let root = data("missing-image");
    let (code, doc, stderr) = prefetch(&bed, &root, &["--via", "registry"]);
    assert_eq!(code, 1, "{doc}\n{stderr}");
    let missing = doc["images"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|i| i["reference"] == "docker.io/acme/does-not-exist:1.0")
        })
        .expect("reported");
    assert_eq!(missing["attempts"], 1, "{missing}");
    assert_eq!(missing["error_class"], "permanent", "{missing}");
    let error = missing["error"].as_str().unwrap_or_default();
    let expected = format!(
        "mirror {}: HTTP 404 MANIFEST_UNKNOWN (manifest unknown) on manifest acme/does-not-exist:1.0",
        bed.proxy
    );
    assert!(error.contains(&expected), "{error}");
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn a_corrupt_blob_is_refused_fetched_again_and_only_the_right_bytes_load() {
    let bed = Testbed::get();
    let cache = tempfile::tempdir().expect("tempdir");
    let tree = tree_of("nginx:stable-alpine");
    bed.remove_images(&["nginx:stable-alpine"]);
    bed.set_faults(&Config {
        rules: vec![Rule {
            kinds: vec![PathKind::Blob],
            path_contains: Some("/library/nginx/".into()),
            probability: 1.0,
            faults: vec![Fault::Corrupt],
            times: Some(1),
        }],
        ..Config::default()
    });
    let (code, doc, stderr) = prefetch(
        &bed,
        tree.path(),
        &[
            "--cache-dir",
            cache.path().to_str().expect("utf-8"),
            "--retry-delay",
            "100ms",
        ],
    );
    let stats = bed.stats();
    bed.reset_faults();
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert_eq!(stats.faults.get("corrupt"), Some(&1), "{stats:?}");
    assert!(
        stderr.contains("not to its digest: refused, fetching it again"),
        "{stderr}"
    );
    assert!(doc["images"][0]["attempts"].as_u64() >= Some(2), "{doc}");
    // Every blob the cache holds hashes to its name: nothing wrong was kept to load.
    for entry in std::fs::read_dir(cache.path().join("blobs/sha256")).expect("blobs") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        let hex = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&data));
        assert_eq!(
            path.file_name().and_then(|n| n.to_str()),
            Some(hex.as_str())
        );
    }
    let out = bed.docker(&["run", "--rm", "nginx:stable-alpine", "cat", "/etc/stand-in"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "library/nginx:stable-alpine"
    );
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn export_with_no_daemon_writes_a_bundle_that_import_loads() {
    let bed = Testbed::get();
    let cache = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("from-registry.bundle");
    let bundle = bundle.to_str().expect("utf-8");
    let tree = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tree.path().join("Dockerfile"),
        "FROM alpine:3.18\nFROM --platform=linux/arm64 node:18-alpine AS arm\nFROM golang:1.21-alpine\n",
    )
    .expect("write");
    let (code, stdout, stderr) = bed.drbuild_env(
        &[
            "export",
            tree.path().to_str().expect("utf-8"),
            "-o",
            bundle,
            "--mirror",
            &bed.registry,
            "--cache-dir",
            cache.path().to_str().expect("utf-8"),
            "--json",
        ],
        &[("DOCKER_HOST", "unix:///tmp/drbuild-no-such-daemon.sock")],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let doc: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(doc["images"].as_array().map(Vec::len), Some(3), "{doc}");
    bed.remove_images(&["alpine:3.18", "node:18-alpine", "golang:1.21-alpine"]);
    let (code, stdout, stderr) = bed.drbuild(&["import", bundle]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let out = bed.docker(&["run", "--rm", "golang:1.21-alpine", "cat", "/etc/stand-in"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "library/golang:1.21-alpine"
    );
    let mut args = vec!["image", "inspect", "-f", "{{.Architecture}}"];
    if bed.containerd_store() {
        args.extend(["--platform", "linux/arm64"]);
    }
    args.push("node:18-alpine");
    let out = bed.docker(&args);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "arm64");
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn without_the_handoff_fetched_images_are_loaded() {
    use docker_resilience::prefetch::{PrefetchOptions, Prefetcher};
    use docker_resilience::vocab::Wanted;
    use docker_resilience::DockerEngine;

    let bed = Testbed::get();
    let images = ["redis:7-alpine", "alpine:3.18"];
    bed.remove_images(&images);
    bed.reset_faults();
    let cache = tempfile::tempdir().expect("tempdir");
    std::env::set_var("DOCKER_HOST", &bed.docker_host);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let report = runtime.block_on(async {
        let engine = DockerEngine::connect().await.expect("daemon");
        let daemon_mirrors = engine.info().await.expect("info").mirrors;
        let options = PrefetchOptions {
            handoff: false,
            cache_dir: Some(cache.path().to_owned()),
            daemon_mirrors,
            ..PrefetchOptions::default()
        };
        let wanted: Vec<Wanted> = images
            .iter()
            .map(|i| Wanted::any_platform(i.parse().expect("reference")))
            .collect();
        Prefetcher::new(engine, options)
            .run(&wanted)
            .await
            .expect("run")
    });
    assert!(report.is_success(), "{report:?}");
    for image in images {
        assert!(bed.has_image(image), "{image} loaded");
    }
    assert_eq!(bed.handoff_names(), Vec::<String>::new());
    let log = bed.log();
    assert!(
        log.iter().any(|e| e.path.contains("/blobs/")),
        "fetched by drbuild: {log:?}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn the_deadline_stops_the_run_mid_download() {
    const STALL: u64 = 8;
    let bed = Testbed::get();
    let tree = tree_of(BIG);
    for via in ["registry", "daemon"] {
        let cache = tempfile::tempdir().expect("tempdir");
        bed.remove_images(&[BIG]);
        // Every blob response stalls well past the deadline.
        bed.set_faults(&Config {
            rules: vec![Rule {
                kinds: vec![PathKind::Blob],
                probability: 1.0,
                faults: vec![Fault::Stall { secs: STALL }],
                ..Rule::default()
            }],
            ..Config::default()
        });
        let started = Instant::now();
        let (code, doc, stderr) = prefetch(
            &bed,
            tree.path(),
            &[
                "--deadline",
                "3s",
                "--via",
                via,
                "--cache-dir",
                cache.path().to_str().expect("utf-8"),
            ],
        );
        let elapsed = started.elapsed();
        bed.reset_faults();
        assert_eq!(code, 1, "{via}: {doc}\n{stderr}");
        assert!(
            elapsed < Duration::from_secs(8),
            "{via}: the run took {elapsed:?}"
        );
        let error = doc["images"][0]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("the run's deadline (3s) passed before `docker.io/pytorch/pytorch"),
            "{via}: {error}"
        );
        assert!(!bed.has_image(BIG), "{via}");
        assert_eq!(bed.handoff_names(), Vec::<String>::new(), "{via}");
        // A daemon shares a layer's download between pulls: let the stalled one end,
        // or the next tests' pulls of images sharing that layer would wait on it.
        std::thread::sleep(Duration::from_secs(STALL + 1).saturating_sub(started.elapsed()));
    }
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn a_windows_dockerfile_is_planned_for_windows_and_skipped_on_linux_in_one_line() {
    let bed = Testbed::get();
    let dir = tempfile::tempdir().expect("tempdir");
    // On the test registry (loopback): were the skip to fail, the pull fails there.
    let windows = format!("{}/windows/servercore:ltsc2022", bed.registry);
    for (sub, text) in [
        (
            "app",
            format!("# escape=`\nFROM {windows}\nRUN cmd /S /C echo ok\n"),
        ),
        ("web", "FROM redis:7-alpine\n".to_owned()),
    ] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        std::fs::write(dir.path().join(sub).join("Dockerfile"), text).expect("write");
    }
    let (code, plan, stderr) =
        bed.drbuild_json(&["plan", dir.path().to_str().expect("utf-8"), "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let platforms: Vec<(String, Value)> = plan["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| {
            (
                i["reference"].as_str().unwrap_or_default().to_owned(),
                i["platforms"].clone(),
            )
        })
        .collect();
    assert!(
        platforms.contains(&(windows.clone(), serde_json::json!(["windows/amd64"]))),
        "{platforms:?}"
    );
    bed.remove_images(&["redis:7-alpine"]);
    for via in ["registry", "daemon"] {
        let (code, doc, stderr) = prefetch(&bed, dir.path(), &["--via", via]);
        assert_eq!(code, 0, "{via}: {doc}\n{stderr}");
        let images: Vec<&str> = doc["images"]
            .as_array()
            .expect("images")
            .iter()
            .filter_map(|i| i["reference"].as_str())
            .collect();
        assert_eq!(images, ["docker.io/library/redis:7-alpine"], "{via}: {doc}");
        let said: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("for another OS than the daemon's (linux)"))
            .collect();
        assert_eq!(said.len(), 1, "{via}: {stderr}");
        assert!(said[0].contains(&windows), "{said:?}");
    }
}
