//! `drbuild prefetch` against the real daemon, the real registry and the fault proxy.

use std::time::{Duration, Instant};

use docker_resilience_tests::faultproxy::{Config, Fault, PathKind, Rule};
use docker_resilience_tests::testbed::{data, Session, Testbed, THIRTEEN};
use serde_json::Value;

/// Quick delays: the registry is local, the faults are ours.
const QUICK: [&str; 4] = ["--retry-delay", "100ms", "--retry-max-delay", "1s"];

fn prefetch_json(bed: &Session<'_>, root: &str, extra: &[&str]) -> (i32, Value, String) {
    let root = data(root);
    let mut args = vec!["prefetch", root.to_str().expect("utf-8 path"), "--json"];
    args.extend_from_slice(&QUICK);
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = bed.drbuild(&args);
    let doc = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    (code, doc, stderr)
}

fn statuses(doc: &Value) -> Vec<(String, String)> {
    doc["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| {
            (
                i["reference"].as_str().unwrap_or_default().to_owned(),
                i["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn thirty_percent_manifest_faults_every_image_in_ten_seeded_runs() {
    let bed = Testbed::get();
    let mut injected = 0;
    let mut retries = 0;
    for seed in 1..=10 {
        bed.remove_images(&THIRTEEN);
        bed.reset_faults();
        bed.set_faults(&Config::manifest_faults(seed, 0.3));
        let (code, doc, stderr) = prefetch_json(&bed, "thirteen", &[]);
        let stats = bed.stats();
        assert_eq!(code, 0, "seed {seed}: {doc}\n{stderr}");
        assert_eq!(doc["summary"]["total"], 13, "seed {seed}");
        assert_eq!(
            doc["summary"]["pulled"],
            13,
            "seed {seed}: {:?}",
            statuses(&doc)
        );
        assert_eq!(doc["summary"]["failed"], 0, "seed {seed}");
        for name in THIRTEEN {
            assert!(bed.has_image(name), "seed {seed}: {name} missing");
        }
        injected += stats.total_faults();
        retries += doc["summary"]["retries"].as_u64().unwrap_or(0);
    }
    // The faults really happened, and the retries are what overcame them.
    assert!(injected >= 20, "only {injected} faults injected in 10 runs");
    assert!(retries >= 10, "only {retries} retries in 10 runs");
    bed.reset_faults();
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn blob_faults_and_a_stall_still_complete() {
    let bed = Testbed::get();
    // Through the daemon, and registry-native into an empty cache (a warm one would
    // ask for no blob at all).
    for via in ["daemon", "registry"] {
        let cache = tempfile::tempdir().expect("tempdir");
        let cache = cache.path().to_str().expect("utf-8").to_owned();
        bed.remove_images(&THIRTEEN);
        bed.reset_faults();
        bed.set_faults(&Config {
            seed: 11,
            rules: vec![
                // One manifest request stalls far longer than the stall timeout.
                Rule {
                    kinds: vec![PathKind::Manifest],
                    path_contains: Some("/library/redis/".into()),
                    probability: 1.0,
                    faults: vec![Fault::Stall { secs: 60 }],
                    times: Some(1),
                },
                Rule {
                    kinds: vec![PathKind::Blob],
                    probability: 0.3,
                    faults: vec![Fault::Eof, Fault::Truncate, Fault::Status { code: 503 }],
                    // Through the daemon a fault costs the whole pull, and a cold
                    // containerd store drops what a failed pull fetched (golang's 11
                    // blobs pass a 30% fault rate together 2% of the time): eight
                    // faults in all (and the stall), so that every image's 10 attempts
                    // suffice. Registry-native, each failed request is retried on its
                    // own: no bound.
                    times: (via == "daemon").then_some(8),
                    ..Rule::default()
                },
            ],
            ..Config::default()
        });
        let started = Instant::now();
        let (code, doc, stderr) = prefetch_json(
            &bed,
            "thirteen",
            &["--stall-timeout", "3s", "--via", via, "--cache-dir", &cache],
        );
        let elapsed = started.elapsed();
        let stats = bed.stats();
        assert_eq!(code, 0, "{via}: {doc}\n{stderr}");
        assert_eq!(doc["summary"]["pulled"], 13, "{via}: {:?}", statuses(&doc));
        assert_eq!(stats.faults.get("stall"), Some(&1), "{via}: {stats:?}");
        assert!(
            stats
                .faults
                .keys()
                .any(|k| k == "eof" || k == "truncate" || k == "503"),
            "{via}: {stats:?}"
        );
        let stalled = if via == "daemon" {
            "stalled: no progress for 3s"
        } else {
            "no data for 3s on manifest library/redis:7-alpine"
        };
        assert!(stderr.contains(stalled), "{via}: {stderr}");
        let redis = doc["images"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|i| i["reference"] == "docker.io/library/redis:7-alpine")
            })
            .expect("redis in the report");
        assert!(redis["attempts"].as_u64() >= Some(2), "{via}: {redis}");
        // Detected at the stall timeout, not after the 60 s stall. Through the daemon,
        // dockerd retries failed blobs itself with growing pauses (5 s, 10 s, …), so
        // the whole run's time depends on which requests the faults hit: only the
        // stalled image's own time says whether the stall was cut short.
        if via == "daemon" {
            let ms = redis["elapsed_ms"].as_u64().unwrap_or(u64::MAX);
            assert!(ms < 60_000, "{via}: redis took {ms} ms: {redis}\n{stderr}");
        } else {
            assert!(elapsed < Duration::from_secs(45), "{via}: took {elapsed:?}");
        }
    }
    bed.reset_faults();
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn a_missing_image_fails_in_one_attempt_and_the_rest_are_pulled() {
    let bed = Testbed::get();
    bed.remove_images(&["alpine:3.18", "busybox:1.36"]);
    let (code, doc, stderr) = prefetch_json(&bed, "missing-image", &[]);
    assert_eq!(code, 1, "{doc}\n{stderr}");
    let images = doc["images"].as_array().expect("images");
    let missing = images
        .iter()
        .find(|i| i["reference"] == "docker.io/acme/does-not-exist:1.0")
        .expect("the missing image is reported");
    assert_eq!(missing["status"], "failed");
    assert_eq!(missing["attempts"], 1);
    assert_eq!(missing["error_class"], "permanent");
    // Each engine words it its own way (20.10 through our probe of its mirror).
    let error = missing["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("manifest unknown") || error.ends_with(": not found"),
        "{missing}"
    );
    assert_eq!(doc["summary"]["pulled"], 2, "{doc}");
    assert!(bed.has_image("alpine:3.18") && bed.has_image("busybox:1.36"));
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn mirror_down_falls_back_to_the_mirror_flag() {
    let bed = Testbed::get();
    bed.remove_images(&THIRTEEN);
    // The daemon's mirror is down: every pull through the daemon fails.
    bed.set_faults(&Config {
        down: true,
        ..Config::default()
    });
    let mirror = bed.registry.clone();
    let (code, doc, stderr) = prefetch_json(&bed, "thirteen", &["--mirror", &mirror]);
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert_eq!(doc["summary"]["pulled"], 13);
    for image in doc["images"].as_array().expect("images") {
        assert_eq!(image["source"], mirror.as_str(), "{image}");
    }
    for name in THIRTEEN {
        assert!(bed.has_image(name), "{name} not present under its own name");
        assert!(
            !bed.has_image(&format!("{mirror}/library/{name}")),
            "the mirror's name for {name} should be removed"
        );
    }
    // The dead mirror is asked a few times, not once for every request of every image:
    // while it backs off, requests go to the next source.
    let asked = bed
        .log()
        .iter()
        .filter(|e| e.path.starts_with("/v2/") && e.path != "/v2/")
        .count();
    eprintln!("the dead mirror was asked {asked} times for 13 images");
    assert!(
        asked <= 10,
        "the dead mirror was asked {asked} times:\n{stderr}"
    );
    bed.reset_faults();
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn all_present_is_a_no_op() {
    let bed = Testbed::get();
    let (code, _, stderr) = prefetch_json(&bed, "thirteen", &[]);
    assert_eq!(code, 0, "{stderr}");
    let before = bed.stats();
    let (code, doc, _) = prefetch_json(&bed, "thirteen", &[]);
    assert_eq!(code, 0);
    assert_eq!(doc["summary"]["present"], 13, "{doc}");
    assert_eq!(doc["summary"]["pulled"], 0);
    assert_eq!(
        bed.stats().forwarded,
        before.forwarded,
        "a no-op must not touch the registry"
    );
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn no_daemon_exits_3_with_how_to_start_one() {
    let bed = Testbed::get();
    let root = data("thirteen");
    let (code, stdout, stderr) = bed.drbuild_env(
        &["prefetch", root.to_str().expect("utf-8")],
        &[("DOCKER_HOST", "unix:///tmp/drbuild-no-such-daemon.sock")],
    );
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("cannot reach the Docker daemon"),
        "{stderr}"
    );
    assert!(stderr.contains("start it"), "{stderr}");
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn human_output_ends_with_totals() {
    let bed = Testbed::get();
    bed.remove_images(&["redis:7-alpine"]);
    bed.set_faults(&Config {
        rules: vec![Rule {
            kinds: vec![PathKind::Manifest],
            path_contains: Some("/library/redis/".into()),
            probability: 1.0,
            // dockerd retries a mirror's 5xx/429 on its own; a dropped connection reaches us.
            faults: vec![Fault::Eof],
            times: Some(1),
        }],
        ..Config::default()
    });
    let root = data("thirteen");
    let mut args = vec!["prefetch", root.to_str().expect("utf-8")];
    args.extend_from_slice(&QUICK);
    let (code, stdout, stderr) = bed.drbuild(&args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("pulled 1, present 12, failed 0 of 13; 1 retry;"),
        "{stdout}"
    );
    assert!(
        stdout.contains("docker.io/library/redis:7-alpine"),
        "{stdout}"
    );
    bed.reset_faults();
}
