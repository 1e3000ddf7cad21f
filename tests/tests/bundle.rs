//! `drbuild export` / `import` against the real daemon.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use docker_resilience_tests::faultproxy::Config;
use docker_resilience_tests::testbed::{data, interrupt, repo_root, Session, Testbed};

const DEMO_IMAGES: [&str; 8] = [
    "alpine:latest",
    "golang:1.21-alpine",
    "nginx:stable",
    "node:18-alpine",
    "postgres:15-alpine",
    "python:3.11-slim",
    "redis:7-alpine",
    "ubuntu:22.04",
];

fn demo() -> String {
    repo_root()
        .join("examples/demo-monorepo")
        .to_string_lossy()
        .into_owned()
}

fn ensure_demo_images(bed: &Session<'_>) {
    let (code, out, err) = bed.drbuild(&["prefetch", &demo(), "-q"]);
    assert_eq!(code, 0, "{out}\n{err}");
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn round_trip_loads_every_image_under_its_name() {
    let bed = Testbed::get();
    ensure_demo_images(&bed);
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("demo.bundle");
    let bundle_s = bundle.to_str().expect("utf-8");
    let (code, out, err) = bed.drbuild(&["export", &demo(), "--output", bundle_s, "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(doc["images"].as_array().map(Vec::len), Some(8), "{doc}");
    bed.remove_images(&DEMO_IMAGES);
    let (code, out, err) = bed.drbuild(&["import", bundle_s, "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(doc["loaded"].as_array().map(Vec::len), Some(8), "{doc}");
    for image in DEMO_IMAGES {
        assert!(bed.has_image(image), "{image} not loaded");
    }
    // An uncompressed bundle is still a tar that plain `docker load` takes.
    bed.remove_images(&DEMO_IMAGES);
    let load = bed.docker(&["load", "-i", bundle_s]);
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    for image in DEMO_IMAGES {
        assert!(bed.has_image(image), "{image} not loaded by docker load");
    }
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn truncated_or_corrupted_bundles_load_nothing() {
    let bed = Testbed::get();
    ensure_demo_images(&bed);
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("demo.bundle");
    let (code, out, err) = bed.drbuild(&["export", &demo(), "-o", bundle.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}\n{err}");
    let bytes = std::fs::read(&bundle).expect("read bundle");

    let truncated = dir.path().join("truncated.bundle");
    let cut = bytes.len() * 2 / 3;
    std::fs::write(&truncated, &bytes[..cut]).expect("write");
    let flipped = dir.path().join("flipped.bundle");
    let mut corrupt = bytes.clone();
    let mid = corrupt.len() / 2;
    for b in &mut corrupt[mid..mid + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(&flipped, &corrupt).expect("write");

    for (file, expected) in [
        (&truncated, format!("truncated at byte {cut}")),
        (&flipped, "checksum mismatch".to_owned()),
    ] {
        bed.remove_images(&DEMO_IMAGES);
        let (code, out, err) = bed.drbuild(&["import", file.to_str().expect("utf-8")]);
        assert_eq!(code, 1, "{out}\n{err}");
        assert!(err.contains(&expected), "{err}");
        for image in DEMO_IMAGES {
            assert!(
                !bed.has_image(image),
                "{image} was loaded from a bad bundle"
            );
        }
    }
    ensure_demo_images(&bed);
}

fn big_image(bed: &Session<'_>, name: &str, mib: usize) {
    if bed.has_image(name) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM busybox:1.36\nRUN head -c {}m /dev/urandom > /blob\n",
            mib
        ),
    )
    .expect("write");
    let out = bed.docker(&[
        "build",
        "-q",
        "--network",
        "none",
        "-t",
        name,
        dir.path().to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn interrupted_export_leaves_no_file() {
    let bed = Testbed::get();
    ensure_demo_images(&bed);
    big_image(&bed, "drbuild-test/big:256", 256);
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("big.bundle");
    let child = Command::new(bed.drbuild_path())
        .args([
            "export",
            "-o",
            output.to_str().expect("utf-8"),
            "drbuild-test/big:256",
        ])
        .env("DOCKER_HOST", &bed.docker_host)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn drbuild");
    // Interrupt once the export is under way (its temporary file exists).
    let started = Instant::now();
    while entries(dir.path()).is_empty() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let out = interrupt(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert_eq!(entries(dir.path()), Vec::<String>::new(), "left behind");
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn zstd_bundle_round_trip_and_truncation() {
    let bed = Testbed::get();
    ensure_demo_images(&bed);
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("demo.bundle.zst");
    let bundle_s = bundle.to_str().expect("utf-8");
    let (code, out, err) = bed.drbuild(&[
        "export",
        &demo(),
        "-o",
        bundle_s,
        "--compress",
        "zstd",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(doc["compression"], "zstd", "{doc}");
    let bytes = std::fs::read(&bundle).expect("read");
    assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd stream");

    let truncated = dir.path().join("cut.bundle.zst");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    bed.remove_images(&DEMO_IMAGES);
    let (code, _, err) = bed.drbuild(&["import", truncated.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("truncated at byte {}", bytes.len() / 2)),
        "{err}"
    );
    assert!(
        DEMO_IMAGES.iter().all(|i| !bed.has_image(i)),
        "nothing loaded"
    );

    let (code, out, err) = bed.drbuild(&["import", bundle_s]);
    assert_eq!(code, 0, "{out}\n{err}");
    for image in DEMO_IMAGES {
        assert!(
            bed.has_image(image),
            "{image} not loaded from the zstd bundle"
        );
    }
}

fn image_list(bed: &Session<'_>) -> String {
    let out = bed.docker(&[
        "images",
        "-a",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Repository}}:{{.Tag}}",
    ]);
    assert!(out.status.success());
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines.join("\n")
}

/// Hostile bundles (`tests/data/bundles-hostile/`, scripts/fixtures/hostile-bundles):
/// each refused with exit 1 and its message, the daemon's image list unchanged; a plain
/// `docker save` tar loads only with `--unverified`.
#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn hostile_bundles_load_nothing() {
    let bed = Testbed::get();
    let before = image_list(&bed);
    let cases = [
        (
            "absurd.tar",
            &[][..],
            "the bundle says 1000000000001024 bytes",
        ),
        ("plain.tar", &[], "--unverified"),
        (
            "dotdot.tar",
            &[],
            "its entry `../escape` would be written outside the image",
        ),
        (
            "garbage.tar",
            &[],
            "1000 unexpected bytes after the end of the bundle",
        ),
        ("lying.tar.zst", &[], "its trailer says the manifest is"),
        (
            "garbage.tar.zst",
            &[],
            "1000 unexpected bytes after the end of the bundle",
        ),
        (
            "plain-dotdot.tar",
            &["--unverified"],
            "its entry `../escape` would be written outside the image",
        ),
    ];
    for (name, extra, expected) in cases {
        let file = data(&format!("bundles-hostile/{name}"));
        let mut args = vec!["import", file.to_str().expect("utf-8")];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = bed.drbuild(&args);
        assert_eq!(code, 1, "{name}: {stdout}\n{stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert_eq!(
            image_list(&bed),
            before,
            "{name} changed the daemon's images"
        );
    }

    // A real `docker save` tar: refused as a bundle, loaded with --unverified.
    let (code, _, stderr) = bed.drbuild(&["prefetch", data("thirteen").to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{stderr}");
    let dir = tempfile::tempdir().expect("temp dir");
    let saved = dir.path().join("busybox.tar");
    let out = bed.docker(&["save", "-o", saved.to_str().expect("utf-8"), "busybox:1.36"]);
    assert!(out.status.success());
    bed.remove_images(&["busybox:1.36"]);
    let saved = saved.to_str().expect("utf-8");
    let (code, _, stderr) = bed.drbuild(&["import", saved]);
    assert_eq!(code, 1, "{stderr}");
    assert!(!bed.has_image("busybox:1.36"));
    let (code, stdout, stderr) = bed.drbuild(&["import", "--unverified", saved]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(bed.has_image("busybox:1.36"), "{stdout}");
}

/// The offline site's flow with the defaults: the daemon (a graph driver's, on 20.10)
/// holds the images and a registry answers, so the bundle comes from the registries
/// with their manifests and `import --to` pushes it; with every source down it comes
/// from the daemon's `docker save`, and says that it cannot go into a registry.
#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn export_with_defaults_then_import_to_a_registry() {
    let bed = Testbed::get();
    ensure_demo_images(&bed);
    bed.lan_reset();
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("site.bundle");
    let bundle_s = bundle.to_str().expect("utf-8");
    let (code, out, err) = bed.drbuild(&["export", &demo(), "-o", bundle_s]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = bed.drbuild(&["import", bundle_s, "--to", &bed.lan, "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(doc["summary"]["failed"], 0, "{doc}");
    // Every source down: the daemon writes it, and says what that means.
    bed.set_faults(&Config {
        down: true,
        ..Config::default()
    });
    let saved = dir.path().join("saved.bundle");
    let (code, out, err) = bed.drbuild(&["export", &demo(), "-o", saved.to_str().expect("utf-8")]);
    bed.reset_faults();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("writing the bundle from the daemon (`docker save`)")
            && err.contains("cannot push it"),
        "{err}"
    );
}

/// A bundle for a Windows host, written on Linux: the Windows base comes from the
/// registry for `windows/amd64` (a Linux daemon could never hold it), a Linux daemon's
/// import loads the rest and leaves it out in one line, and `import --to` pushes it
/// into the site's registry with its index's digest.
#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn a_windows_base_is_bundled_for_a_windows_host_and_left_out_on_a_linux_daemon() {
    let bed = Testbed::get();
    bed.lan_reset();
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    // On the test registry (loopback), as `mcr.microsoft.com` serves it: an index with
    // one `windows/amd64` entry.
    let windows = format!("{}/windows/servercore:ltsc2022", bed.registry);
    for (sub, text) in [
        (
            "app",
            format!("# escape=`\nFROM {windows}\nRUN cmd /S /C echo ok\n"),
        ),
        ("web", "FROM redis:7-alpine\n".to_owned()),
    ] {
        std::fs::create_dir_all(tree.join(sub)).expect("mkdir");
        std::fs::write(tree.join(sub).join("Dockerfile"), text).expect("write");
    }
    let tree_s = tree.to_str().expect("utf-8");
    let bundle = dir.path().join("windows.bundle");
    let bundle_s = bundle.to_str().expect("utf-8");

    // From the daemon it cannot be: said so, naming the way that works.
    let (code, out, err) = bed.drbuild(&["export", tree_s, "-o", bundle_s, "--via", "daemon"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("a linux daemon cannot hold") && err.contains("without `--via daemon`"),
        "{err}"
    );
    assert!(!bundle.exists());

    let (code, doc, err) = bed.drbuild_json(&["export", tree_s, "-o", bundle_s, "--json"]);
    assert_eq!(code, 0, "{doc}\n{err}");
    let platforms: Vec<(String, serde_json::Value)> = doc["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| {
            let name = i["reference"].as_str().unwrap_or_default().to_owned();
            (name, i["platforms"].clone())
        })
        .collect();
    assert!(
        platforms.contains(&(windows.clone(), serde_json::json!(["windows/amd64"]))),
        "{platforms:?}"
    );
    // The bundle holds the Windows image's config, for Windows.
    let windows_id = doc["images"]
        .as_array()
        .expect("images")
        .iter()
        .find(|i| i["reference"] == windows.as_str())
        .and_then(|i| i["id"].as_str())
        .expect("the windows image's id")
        .to_owned();
    let config = bundle_entry(&bundle, &format!("blobs/sha256/{}", &windows_id[7..]));
    let config: serde_json::Value = serde_json::from_slice(&config).expect("config json");
    assert_eq!(config["os"], "windows", "{config}");

    // A Linux daemon loads the rest and says, once, what it left out.
    bed.remove_images(&["redis:7-alpine"]);
    let (code, doc, err) = bed.drbuild_json(&["import", bundle_s, "--json"]);
    assert_eq!(code, 0, "{doc}\n{err}");
    assert_eq!(
        doc["loaded"],
        serde_json::json!(["redis:7-alpine"]),
        "{doc}"
    );
    assert_eq!(doc["skipped"], serde_json::json!([windows]), "{doc}");
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("bundled for another OS than the daemon's (linux)"))
        .collect();
    assert_eq!(said.len(), 1, "{err}");
    assert!(bed
        .docker(&["image", "inspect", "redis:7-alpine"])
        .status
        .success());

    // The site's registry takes it, digest unchanged, under the registry's host (its
    // port joined with `_`: a repository path takes no `:`).
    let (code, doc, err) = bed.drbuild_json(&["import", bundle_s, "--to", &bed.lan, "--json"]);
    assert_eq!(code, 0, "{doc}\n{err}");
    let item = doc["images"]
        .as_array()
        .expect("images")
        .iter()
        .find(|i| i["reference"] == windows.as_str())
        .expect("the windows image")
        .clone();
    let host = bed.registry.replace(':', "_");
    assert_eq!(
        item["target"],
        format!("{}/{host}/windows/servercore:ltsc2022", bed.lan),
        "{item}"
    );
    let source = bed
        .manifest_digest(&bed.registry, "windows/servercore", "ltsc2022")
        .expect("the source's digest");
    let pushed = bed
        .manifest_digest(&bed.lan, &format!("{host}/windows/servercore"), "ltsc2022")
        .expect("the pushed digest");
    assert_eq!(pushed, source);
    assert_eq!(item["digest"], source.as_str(), "{item}");

    // Named on its own, the Windows image is exported for Windows too; a bundle with
    // nothing for this daemon's OS is one error that names the way out.
    let only = dir.path().join("windows-only.bundle");
    let only_s = only.to_str().expect("utf-8");
    let (code, out, err) = bed.drbuild(&["export", "-o", only_s, &windows]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = bed.drbuild(&["import", only_s]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("is for another OS than the daemon's (linux)")
            && err.contains("--to REGISTRY"),
        "{err}"
    );
}

/// One entry of a bundle (a tar, uncompressed).
fn bundle_entry(bundle: &Path, name: &str) -> Vec<u8> {
    use std::io::Read as _;
    let mut archive = tar::Archive::new(std::fs::File::open(bundle).expect("open"));
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        if entry.path().expect("path").to_str() == Some(name) {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("read");
            return data;
        }
    }
    panic!("no {name} in {}", bundle.display());
}
