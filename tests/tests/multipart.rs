//! Big blobs in ranged parts against the real daemon and registry, the fault proxy (the
//! daemon's mirror) as a long thin link: within the connection budget, cut parts
//! resumed, a mirror that ignores `Range`.

use std::path::Path;

use docker_resilience_tests::faultproxy::{Config, Fault, PathKind, Rule};
use docker_resilience_tests::seed::{build_catalog, Built};
use docker_resilience_tests::testbed::{Session, Testbed};
use serde_json::Value;

/// The image with the 64 MiB layer.
const BIG: &str = "pytorch/pytorch:2.1.0-cuda12.1-cudnn8-runtime";

const MIB: u64 = 1024 * 1024;

fn big_size() -> u64 {
    let built: Vec<Built> = build_catalog(Path::new("/bin/busybox"));
    let (repository, tag) = BIG.split_once(':').expect("repository:tag");
    let image = built
        .iter()
        .find(|b| b.repository == repository && b.tag == tag)
        .expect("in the catalog");
    image.blobs.iter().map(|b| b.data.len() as u64).sum::<u64>() + image.top.1.data.len() as u64
}

/// A cold registry-native prefetch of the big image into a fresh cache.
fn prefetch_big(bed: &Session<'_>, extra: &[&str]) -> (i32, Value, String) {
    bed.remove_images(&[BIG]);
    let tree = tempfile::tempdir().expect("tempdir");
    std::fs::write(tree.path().join("Dockerfile"), format!("FROM {BIG}\n")).expect("write");
    let cache = tempfile::tempdir().expect("tempdir");
    let mut args = vec![
        "prefetch",
        tree.path().to_str().expect("utf-8"),
        "--json",
        "--via",
        "registry",
        "--cache-dir",
        cache.path().to_str().expect("utf-8"),
        "--retry-delay",
        "100ms",
    ];
    args.extend_from_slice(extra);
    bed.drbuild_json(&args)
}

/// The proxy's endpoint statistics in drbuild's summary.
fn proxy_endpoint<'a>(bed: &Session<'_>, doc: &'a Value) -> &'a Value {
    let proxy = &bed.proxy;
    doc["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["endpoint"] == proxy.as_str())
        .unwrap_or_else(|| panic!("no statistics for {proxy}: {doc}"))
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn a_big_layer_over_a_thin_link_comes_in_parts_within_the_budget() {
    let bed = Testbed::get();
    bed.set_faults(&Config::thin_link(4_000_000, 100));
    let (code, doc, stderr) = prefetch_big(&bed, &["--connections", "6"]);
    let proxy = bed.stats();
    bed.reset_faults();
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert!(bed.has_image(BIG));
    let stats = proxy_endpoint(&bed, &doc);
    assert!(stats["parts"].as_u64() >= Some(8), "{stats}");
    assert!(stats["max_connections"].as_u64() <= Some(6), "{stats}");
    // The proxy's own count: never more than 6 requests of drbuild's at once (the
    // daemon pulls from drbuild's handoff, not from the proxy).
    assert!(proxy.peak_active <= 6, "{proxy:?}");
    assert!(proxy.ranged >= 8, "{proxy:?}");
    assert!(proxy.bytes as f64 <= 1.01 * big_size() as f64, "{proxy:?}");
    assert_eq!(bed.handoff_names(), Vec::<String>::new());
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn parts_cut_every_8_mib_complete_moving_the_image_about_once() {
    let bed = Testbed::get();
    bed.set_faults(&Config {
        rules: vec![Rule {
            kinds: vec![PathKind::Blob],
            probability: 1.0,
            faults: vec![Fault::CutAfter { bytes: 8 * MIB }],
            ..Rule::default()
        }],
        ..Config::default()
    });
    // 4 parts of 16 MiB: each is cut once, half-way, and resumed.
    let (code, doc, stderr) = prefetch_big(&bed, &["--parts", "4"]);
    let proxy = bed.stats();
    bed.reset_faults();
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert!(bed.has_image(BIG));
    let stats = proxy_endpoint(&bed, &doc);
    assert!(stats["resumes"].as_u64() >= Some(4), "{stats}");
    let size = big_size() as f64;
    assert!(
        proxy.bytes as f64 <= 1.05 * size,
        "{} bytes over the wire for a {size}-byte image",
        proxy.bytes
    );
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn a_mirror_that_ignores_range_gets_one_stream_said_once() {
    let bed = Testbed::get();
    bed.set_faults(&Config {
        ignore_range: true,
        ..Config::default()
    });
    let (code, doc, stderr) = prefetch_big(&bed, &[]);
    bed.reset_faults();
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert!(bed.has_image(BIG));
    assert_eq!(
        stderr.matches("ignores Range").count(),
        1,
        "said once: {stderr}"
    );
    let stats = proxy_endpoint(&bed, &doc);
    assert_eq!(stats.get("parts"), None, "{stats}");
}
