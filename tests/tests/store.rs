//! The transport and the shared blob cache against the real daemon, registry and
//! fault proxy: requests that fail half the time, several `drbuild`s on one cache,
//! `kill -9` mid-download, bit rot at rest, a full disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use docker_resilience_tests::faultproxy::Config;
use docker_resilience_tests::testbed::{data, Session, Testbed, THIRTEEN};
use serde_json::Value;

/// The image with the 64 MiB layer.
const BIG: &str = "pytorch/pytorch:2.1.0-cuda12.1-cudnn8-runtime";

/// Quick delays: the registry is local, the faults are ours.
const QUICK: [&str; 4] = ["--retry-delay", "100ms", "--retry-max-delay", "1s"];

fn prefetch(bed: &Session<'_>, root: &Path, cache: &Path, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec![
        "prefetch",
        root.to_str().expect("utf-8"),
        "--json",
        "--via",
        "registry",
        "--cache-dir",
        cache.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(&QUICK);
    args.extend_from_slice(extra);
    bed.drbuild_json(&args)
}

/// A tree whose one Dockerfile uses `images`.
fn tree_of(images: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let text: String = images.iter().map(|i| format!("FROM {i}\n")).collect();
    std::fs::write(dir.path().join("Dockerfile"), text).expect("write");
    dir
}

fn failed(doc: &Value) -> Vec<String> {
    doc["images"]
        .as_array()
        .expect("images")
        .iter()
        .filter(|i| i["status"] == "failed")
        .map(|i| i["error"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Bytes of every verified blob in a cache.
fn blob_bytes(cache: &Path) -> u64 {
    std::fs::read_dir(cache.join("blobs/sha256"))
        .expect("blobs")
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.metadata().expect("metadata").len())
        .sum()
}

fn cache_verify(bed: &Session<'_>, cache: &Path) -> (i32, String) {
    let (code, stdout, stderr) = bed.drbuild(&[
        "cache",
        "verify",
        "--cache-dir",
        cache.to_str().expect("utf-8"),
    ]);
    (code, format!("{stdout}{stderr}"))
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn half_of_every_request_failing_still_pulls_every_image() {
    let bed = Testbed::get();
    let tree = data("thirteen");
    // Seeds from the environment (`scripts/bench/transport.sh` runs many); CI runs three.
    let seeds: Vec<u64> = std::env::var("DRBUILD_FAULT_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 3]);
    for seed in seeds {
        let cache = tempfile::tempdir().expect("tempdir");
        bed.remove_images(&THIRTEEN);
        bed.reset_faults();
        bed.set_faults(&Config::request_faults(seed, 0.5));
        let (code, doc, stderr) = prefetch(&bed, &tree, cache.path(), &[]);
        let stats = bed.stats();
        bed.reset_faults();
        assert_eq!(code, 0, "seed {seed}: {:?}\n{stderr}", failed(&doc));
        assert_eq!(
            doc["summary"]["pulled"],
            13,
            "seed {seed}: {:?}",
            failed(&doc)
        );
        for name in THIRTEEN {
            assert!(bed.has_image(name), "seed {seed}: {name} missing");
        }
        // Half the requests really failed, and retried requests overcame them.
        assert!(stats.total_faults() >= 20, "seed {seed}: {stats:?}");
        assert!(
            doc["summary"]["retries"].as_u64() >= Some(10),
            "seed {seed}: {}",
            doc["summary"]
        );
    }
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn processes_sharing_one_cache_fetch_each_blob_once() {
    let bed = Testbed::get();
    let mut images: Vec<&str> = THIRTEEN.to_vec();
    images.push(BIG);
    let tree = tree_of(&images);
    for processes in [2, 4] {
        let cache = tempfile::tempdir().expect("tempdir");
        bed.remove_images(&images);
        bed.reset_faults();
        // A slow link: every request waits 200 ms, so the runs overlap throughout.
        bed.set_faults(&Config {
            latency_ms: 200,
            ..Config::default()
        });
        let children: Vec<_> = (0..processes)
            .map(|_| {
                Command::new(bed.drbuild_path())
                    .args([
                        "prefetch",
                        tree.path().to_str().expect("utf-8"),
                        "--json",
                        "--via",
                        "registry",
                        "--cache-dir",
                        cache.path().to_str().expect("utf-8"),
                    ])
                    .env("DOCKER_HOST", &bed.docker_host)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn drbuild")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().expect("wait");
            assert!(
                out.status.success(),
                "{processes} processes: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stats = bed.stats();
        bed.reset_faults();
        for name in &images {
            assert!(bed.has_image(name), "{processes} processes: {name} missing");
        }
        // Every blob once in all: only the tags' manifests are asked by each run.
        let unique = blob_bytes(cache.path());
        eprintln!(
            "{processes} processes on one cache: {} bytes through the proxy for {unique} bytes of blobs ({:.3}x)",
            stats.bytes,
            stats.bytes as f64 / unique as f64
        );
        assert!(
            stats.bytes as f64 <= 1.05 * unique as f64,
            "{processes} processes moved {} bytes for {unique} bytes of blobs",
            stats.bytes
        );
        let (code, text) = cache_verify(&bed, cache.path());
        assert_eq!(code, 0, "{text}");
    }
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn kill_9_mid_prefetch_then_a_rerun_completes_and_the_cache_verifies() {
    let bed = Testbed::get();
    let images = [
        BIG,
        "nginx:stable-alpine",
        "golang:1.21-alpine",
        "python:3.11-slim",
    ];
    let tree = tree_of(&images);
    let cache = tempfile::tempdir().expect("tempdir");
    let points: usize = std::env::var("DRBUILD_KILL_POINTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    for point in 0..points {
        bed.remove_images(&images);
        // Empty the cache now and then, so that kills land in fresh downloads too.
        if point % 2 == 0 {
            let _ = std::fs::remove_dir_all(cache.path().join("blobs"));
            let _ = std::fs::remove_dir_all(cache.path().join("partial"));
        }
        bed.set_faults(&Config {
            latency_ms: 100,
            ..Config::default()
        });
        let mut child = Command::new(bed.drbuild_path())
            .args([
                "prefetch",
                tree.path().to_str().expect("utf-8"),
                "--via",
                "registry",
                "--cache-dir",
                cache.path().to_str().expect("utf-8"),
            ])
            .env("DOCKER_HOST", &bed.docker_host)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn drbuild");
        // A point between 0.2 s and 2.2 s into the run.
        let at = Duration::from_millis(200 + (point as u64 * 737) % 2000);
        std::thread::sleep(at);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        bed.reset_faults();
        let (code, doc, stderr) = prefetch(&bed, tree.path(), cache.path(), &[]);
        assert_eq!(
            code,
            0,
            "after a kill at {at:?}: {:?}\n{stderr}",
            failed(&doc)
        );
        for name in images {
            assert!(
                bed.has_image(name),
                "after a kill at {at:?}: {name} missing"
            );
        }
        let (code, text) = cache_verify(&bed, cache.path());
        assert_eq!(code, 0, "after a kill at {at:?}: {text}");
        // A killed run cannot remove the temporary names it gave the daemon (the
        // handoff's); the rerun removes them when it hands images off itself.
        let left = bed.handoff_names();
        if doc["summary"]["pulled"].as_u64().unwrap_or(0) > 0 {
            assert!(
                left.is_empty(),
                "after a kill at {at:?}, the rerun left {left:?}"
            );
        }
        bed.remove_handoff_names();
    }
}

/// The cached blobs of one image, by kind: (manifest, config, layer) paths.
fn blobs_by_kind(cache: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (mut manifest, mut config, mut layer) = (None, None, None);
    for entry in std::fs::read_dir(cache.join("blobs/sha256")).expect("blobs") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        match serde_json::from_slice::<Value>(&data) {
            Ok(v) if v.get("layers").is_some() => manifest = Some(path),
            Ok(v) if v.get("rootfs").is_some() => config = Some(path),
            Ok(_) => {}
            Err(_) => layer = Some(path),
        }
    }
    (
        manifest.expect("a manifest"),
        config.expect("a config"),
        layer.expect("a layer"),
    )
}

fn flip_a_byte(path: &Path) {
    let mut data = std::fs::read(path).expect("read");
    let middle = data.len() / 2;
    data[middle] ^= 0x20;
    std::fs::write(path, data).expect("write");
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn a_byte_flipped_at_rest_is_found_refetched_and_named() {
    let bed = Testbed::get();
    // A multi-platform image: its tag's index is asked for again each run, its
    // platform's manifest is read from the cache by digest.
    let image = "nginx:stable";
    let tree = tree_of(&[image]);
    let cache = tempfile::tempdir().expect("tempdir");
    for kind in ["manifest", "config", "layer"] {
        bed.remove_images(&[image]);
        let (code, doc, stderr) = prefetch(&bed, tree.path(), cache.path(), &[]);
        assert_eq!(code, 0, "{:?}\n{stderr}", failed(&doc));
        bed.remove_images(&[image]);
        let (manifest, config, layer) = blobs_by_kind(cache.path());
        let flipped = match kind {
            "manifest" => manifest,
            "config" => config,
            _ => layer,
        };
        flip_a_byte(&flipped);
        let (code, doc, stderr) = prefetch(&bed, tree.path(), cache.path(), &[]);
        assert_eq!(code, 0, "{kind}: {:?}\n{stderr}", failed(&doc));
        let name = flipped
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        assert!(
            stderr.contains(&format!("cached blob sha256:{name}")) && stderr.contains("is corrupt"),
            "{kind}: the warning names the blob: {stderr}"
        );
        let out = bed.docker(&["run", "--rm", image, "cat", "/etc/stand-in"]);
        assert!(
            out.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (code, text) = cache_verify(&bed, cache.path());
        assert_eq!(code, 0, "{kind}: {text}");
    }
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn a_full_cache_disk_fails_at_once_naming_the_cache_not_a_source() {
    let bed = Testbed::get();
    let tree = tree_of(&[BIG]);
    let mount = tempfile::tempdir().expect("tempdir");
    let small = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(mount.path())
        .status()
        .expect("mount");
    assert!(small.success(), "mounting a 4 MiB tmpfs needs root");
    let full = mount.path().join("cache");
    bed.remove_images(&[BIG]);
    let started = Instant::now();
    let (code, doc, stderr) = prefetch(&bed, tree.path(), &full, &[]);
    let elapsed = started.elapsed();
    let _ = Command::new("umount").arg(mount.path()).status();
    eprintln!("a full cache disk: exit {code} after {elapsed:?}");
    assert_eq!(code, 1, "{doc}\n{stderr}");
    let error = doc["images"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("blob cache {}", full.display())) && error.contains("bytes needed"),
        "{error}"
    );
    assert!(!error.contains("mirror"), "no source is blamed: {error}");
    assert_eq!(doc["images"][0]["attempts"], 1, "{doc}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // With room, the next run completes.
    let roomy = tempfile::tempdir().expect("tempdir");
    let (code, doc, stderr) = prefetch(&bed, tree.path(), roomy.path(), &[]);
    assert_eq!(code, 0, "{:?}\n{stderr}", failed(&doc));
}
