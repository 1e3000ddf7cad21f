//! Platforms end to end: `FROM --platform=linux/arm64` prefetches the arm64 variant and
//! the build then runs with the mirror and the registry down; one image needed for two
//! platforms lands both on the containerd image store and is named on a graph driver.

use docker_resilience_tests::faultproxy::Config;
use docker_resilience_tests::testbed::{data, Session, Testbed};
use serde_json::Value;

fn prefetch(bed: &Session<'_>, tree: &str) -> (i32, Value, String) {
    let root = data(tree);
    let (code, stdout, stderr) = bed.drbuild(&[
        "prefetch",
        root.to_str().expect("utf-8"),
        "--json",
        "--retry-delay",
        "100ms",
    ]);
    let doc = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    (code, doc, stderr)
}

/// The architecture the daemon holds `image` for: on the containerd store, for the
/// platform asked (it may hold several).
fn architecture(bed: &Session<'_>, image: &str, platform: &str) -> Option<String> {
    let mut args = vec!["image", "inspect", "-f", "{{.Architecture}}"];
    if bed.containerd_store() {
        args.extend(["--platform", platform]);
    }
    args.push(image);
    let out = bed.docker(&args);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn arm64_from_is_prefetched_for_arm64_and_builds_offline() {
    let bed = Testbed::get();
    bed.remove_images(&["alpine:3.18", "busybox:1.36", "drbuild-platforms-arm64"]);
    let root = data("platforms/arm64");
    let (code, stdout, _) = bed.drbuild(&["plan", root.to_str().expect("utf-8"), "--json"]);
    assert_eq!(code, 0);
    let plan: Value = serde_json::from_str(&stdout).expect("plan json");
    let alpine = plan["images"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|i| i["reference"] == "docker.io/library/alpine:3.18")
        })
        .expect("alpine planned");
    assert_eq!(
        alpine["platforms"],
        serde_json::json!(["linux/arm64"]),
        "{plan}"
    );

    let (code, doc, stderr) = prefetch(&bed, "platforms/arm64");
    assert_eq!(code, 0, "{doc}\n{stderr}");
    let item = doc["images"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|i| i["reference"] == "docker.io/library/alpine:3.18")
        })
        .expect("alpine prefetched");
    assert_eq!(item["platform"], "linux/arm64", "{item}");
    assert_eq!(item["status"], "pulled", "{item}");
    assert_eq!(
        architecture(&bed, "alpine:3.18", "linux/arm64").as_deref(),
        Some("arm64")
    );

    // Everything upstream down: the daemon's mirror (the proxy) answers nothing, and
    // Docker Hub is pinned to nowhere. The build must use what prefetch put there.
    bed.set_faults(&Config {
        down: true,
        ..Config::default()
    });
    let (code, stdout, stderr) = bed.drbuild(&[
        "build-all",
        root.to_str().expect("utf-8"),
        "--no-prefetch",
        "--json",
    ]);
    bed.reset_faults();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("build json");
    assert_eq!(report["summary"]["built"], 1, "{report}");
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn one_image_for_two_platforms() {
    let bed = Testbed::get();
    bed.remove_images(&["alpine:3.18"]);
    let (code, doc, stderr) = prefetch(&bed, "platforms/both");
    let items = doc["images"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2, "{doc}");
    if bed.containerd_store() {
        assert_eq!(code, 0, "{doc}\n{stderr}");
        assert_eq!(doc["summary"]["pulled"], 2, "{doc}");
        for (platform, arch) in [("linux/amd64", "amd64"), ("linux/arm64", "arm64")] {
            assert_eq!(
                architecture(&bed, "alpine:3.18", platform).as_deref(),
                Some(arch)
            );
        }
        // Both are there now: nothing to do.
        let (code, doc, stderr) = prefetch(&bed, "platforms/both");
        assert_eq!(code, 0, "{doc}\n{stderr}");
        assert_eq!(doc["summary"]["present"], 2, "{doc}");
        assert_eq!(doc["summary"]["pulled"], 0, "{doc}");
    } else {
        // One platform per tag: one is pulled, the other is named, not pulled over it.
        assert_eq!(code, 1, "{doc}\n{stderr}");
        assert_eq!(doc["summary"]["pulled"], 1, "{doc}");
        let failed = items
            .iter()
            .find(|i| i["status"] == "failed")
            .expect("one not pulled");
        let error = failed["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("docker.io/library/alpine:3.18")
                && error.contains("linux/amd64 and linux/arm64")
                && error.contains("one platform per tag"),
            "{error}"
        );
        assert_eq!(failed["error_class"], "permanent");
        assert_eq!(
            architecture(&bed, "alpine:3.18", "linux/amd64").as_deref(),
            Some("amd64"),
            "the host's platform is the one kept"
        );
    }
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn bundles_carry_every_platform_asked_for() {
    let bed = Testbed::get();
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("both.bundle");
    let bundle = bundle.to_str().expect("utf-8");
    let root = data("platforms/both");
    let root = root.to_str().expect("utf-8");
    bed.remove_images(&["alpine:3.18"]);
    let _ = prefetch(&bed, "platforms/both");
    // A graph-driver daemon holds one platform per tag: the other is fetched from the
    // registry, so the bundle carries what the tree needs either way.
    let (code, stdout, stderr) = bed.drbuild(&["export", root, "--output", bundle, "--json"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let doc: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(
        doc["images"][0]["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64"]),
        "{doc}"
    );
    bed.remove_images(&["alpine:3.18"]);
    let (code, stdout, stderr) = bed.drbuild(&["import", bundle]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    if !bed.containerd_store() {
        assert!(
            stderr.contains("`alpine:3.18` is bundled for linux/amd64 and linux/arm64; this daemon keeps one platform per tag"),
            "{stderr}"
        );
        assert_eq!(
            architecture(&bed, "alpine:3.18", "linux/amd64").as_deref(),
            Some("amd64"),
            "the host's platform is the one loaded"
        );
        return;
    }
    for (platform, arch) in [("linux/amd64", "amd64"), ("linux/arm64", "arm64")] {
        assert_eq!(
            architecture(&bed, "alpine:3.18", platform).as_deref(),
            Some(arch),
            "{platform} after import"
        );
    }
}
