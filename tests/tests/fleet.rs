//! Beyond one machine: `sync` fills a LAN registry that a fresh daemon (the test bed's
//! site daemon, whose only mirror it is) then pulls from with the upstream down;
//! `import --to` does the same from a bundle; `prefetch` into two daemons fetches
//! each blob once; `doctor` says how much of the plan a mirror holds.

use std::collections::BTreeMap;

use docker_resilience_tests::faultproxy::{serve, Config, Fault, Rule, Stats};
use docker_resilience_tests::testbed::{data, Session, Testbed, THIRTEEN};
use serde_json::Value;

fn json(stdout: &str, stderr: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

/// Every image of THIRTEEN pulled by the site daemon with plain `docker pull`, and
/// its digest the upstream registry's.
fn site_pulls_all_with_upstream_digests(bed: &Session<'_>) {
    bed.set_faults(&Config {
        down: true,
        ..Config::default()
    });
    for image in THIRTEEN {
        let _ = bed.site_docker(&["rmi", "-f", image]);
    }
    for image in THIRTEEN {
        let out = bed.site_docker(&["pull", "-q", image]);
        assert!(
            out.status.success(),
            "the site daemon pulls {image} from the LAN registry: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = bed.site_docker(&[
            "image",
            "inspect",
            image,
            "--format",
            "{{json .RepoDigests}}",
        ]);
        let digests: Vec<String> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let (repository, tag) = image.split_once(':').expect("tag");
        let upstream = bed
            .manifest_digest(&bed.registry, &format!("library/{repository}"), tag)
            .expect("upstream digest");
        assert!(
            digests.iter().any(|d| d.ends_with(&upstream)),
            "{image}: the site daemon has {digests:?}, upstream serves {upstream}"
        );
    }
    bed.reset_faults();
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn sync_fills_a_lan_mirror_that_a_fresh_daemon_pulls_from_with_the_upstream_down() {
    let bed = Testbed::get();
    bed.lan_reset();
    let cache = tempfile::tempdir().expect("tempdir");
    let cache = cache.path().to_str().expect("utf-8");
    let root = data("thirteen");
    let root = root.to_str().expect("utf-8");
    // The upstream glitches: 30% of manifest requests fail (EOF, 500, 429).
    bed.set_faults(&Config::manifest_faults(7, 0.3));
    let args = [
        "sync",
        root,
        "--to",
        &bed.lan,
        "--cache-dir",
        cache,
        "--json",
        "--retry-delay",
        "100ms",
    ];
    let (code, stdout, stderr) = bed.drbuild(&args);
    let injected = bed.stats().faults.values().sum::<u64>();
    let doc = json(&stdout, &stderr);
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert_eq!(doc["summary"]["copied"], 13, "{doc}");
    assert!(injected > 0, "faults were injected");
    for image in doc["images"].as_array().expect("images") {
        assert_eq!(image["status"], "copied", "{image}");
        assert!(
            image["target"]
                .as_str()
                .unwrap_or_default()
                .starts_with(&format!("{}/library/", bed.lan)),
            "{image}"
        );
    }
    // A second sync sends nothing.
    let (code, stdout, stderr) = bed.drbuild(&args);
    let doc = json(&stdout, &stderr);
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert_eq!(doc["summary"]["present"], 13, "{doc}");
    assert_eq!(doc["summary"]["bytes"], 0, "{doc}");
    for image in doc["images"].as_array().expect("images") {
        assert_eq!(image["blobs"]["uploaded"], 0, "{image}");
    }
    site_pulls_all_with_upstream_digests(&bed);
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn import_to_a_registry_from_a_bundle_with_no_upstream() {
    let bed = Testbed::get();
    bed.lan_reset();
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("site.bundle");
    let bundle = bundle.to_str().expect("utf-8");
    let cache = dir.path().join("cache");
    let root = data("thirteen");
    let (code, stdout, stderr) = bed.drbuild(&[
        "export",
        root.to_str().expect("utf-8"),
        "--output",
        bundle,
        "--all-platforms",
        "--cache-dir",
        cache.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // The site has no upstream at all.
    bed.set_faults(&Config {
        down: true,
        ..Config::default()
    });
    let (code, stdout, stderr) = bed.drbuild(&["import", bundle, "--to", &bed.lan, "--json"]);
    let doc = json(&stdout, &stderr);
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert_eq!(doc["summary"]["copied"], 13, "{doc}");
    assert!(doc["plain_http"].as_bool().unwrap_or(false), "{doc}");
    assert!(
        stderr.contains(&format!(
            "pushing to {} over plain HTTP (a loopback address)",
            bed.lan
        )),
        "{stderr}"
    );
    site_pulls_all_with_upstream_digests(&bed);
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn prefetch_into_two_daemons_fetches_each_blob_once_and_a_dead_one_fails_alone() {
    let bed = Testbed::get();
    bed.lan_reset();
    bed.remove_images(&THIRTEEN);
    for image in THIRTEEN {
        let _ = bed.site_docker(&["rmi", "-f", image]);
    }
    let cache = tempfile::tempdir().expect("tempdir");
    let cache = cache.path().to_str().expect("utf-8");
    let root = data("thirteen");
    let root = root.to_str().expect("utf-8");
    bed.reset_faults();
    let (code, stdout, stderr) = bed.drbuild(&[
        "prefetch",
        root,
        "--docker-host",
        &bed.docker_host,
        "--docker-host",
        &bed.site_host,
        "--cache-dir",
        cache,
        "--json",
    ]);
    let log = bed.log();
    let doc = json(&stdout, &stderr);
    assert_eq!(code, 0, "{doc}\n{stderr}");
    let hosts = doc["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 2);
    for host in hosts {
        assert_eq!(host["summary"]["pulled"], 13, "{host}");
    }
    assert_eq!(doc["summary"]["pulled"], 26, "{doc}");
    for image in THIRTEEN {
        assert!(bed.has_image(image), "{image} on A");
        assert!(
            bed.site_docker(&["image", "inspect", image])
                .status
                .success(),
            "{image} on B"
        );
    }
    // Each blob crossed the (upstream) proxy once.
    let mut gets: BTreeMap<String, usize> = BTreeMap::new();
    for entry in log
        .iter()
        .filter(|e| e.method == "GET" && e.path.contains("/blobs/"))
    {
        let digest = entry.path.rsplit('/').next().unwrap_or_default().to_owned();
        *gets.entry(digest).or_default() += 1;
    }
    assert!(!gets.is_empty());
    assert!(
        gets.values().all(|n| *n == 1),
        "blobs fetched more than once: {gets:?}"
    );

    // B's socket is gone: A completes, B's items fail, exit 1.
    bed.remove_images(&THIRTEEN);
    let gone = "unix:///tmp/drbuild-testbed-gone/docker.sock";
    let (code, stdout, stderr) = bed.drbuild(&[
        "prefetch",
        root,
        "--docker-host",
        &bed.docker_host,
        "--docker-host",
        gone,
        "--cache-dir",
        cache,
        "--json",
    ]);
    let doc = json(&stdout, &stderr);
    assert_eq!(code, 1, "{doc}\n{stderr}");
    let hosts = doc["hosts"].as_array().expect("hosts");
    assert_eq!(hosts[0]["summary"]["pulled"], 13, "{doc}");
    assert_eq!(hosts[1]["host"], gone);
    assert_eq!(hosts[1]["summary"]["failed"], 13, "{doc}");
    assert!(
        hosts[1]["error"]
            .as_str()
            .unwrap_or_default()
            .contains(gone),
        "{doc}"
    );
    for image in THIRTEEN {
        assert!(bed.has_image(image), "{image} on A");
    }
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn doctor_names_what_a_mirror_lacks() {
    let bed = Testbed::get();
    bed.lan_reset();
    // The LAN registry gets 10 of the 13.
    let ten = tempfile::tempdir().expect("tempdir");
    let dockerfile: String = THIRTEEN[..10]
        .iter()
        .map(|i| format!("FROM {i}\n"))
        .collect();
    std::fs::write(ten.path().join("Dockerfile"), dockerfile).expect("write");
    let cache = tempfile::tempdir().expect("tempdir");
    let (code, stdout, stderr) = bed.drbuild(&[
        "sync",
        ten.path().to_str().expect("utf-8"),
        "--to",
        &bed.lan,
        "--cache-dir",
        cache.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let root = data("thirteen");
    let (_, stdout, stderr) = bed.drbuild(&[
        "doctor",
        root.to_str().expect("utf-8"),
        "--docker-host",
        &bed.site_host,
        "--json",
    ]);
    let doc = json(&stdout, &stderr);
    let checks = doc["hosts"][0]["checks"].as_array().expect("checks");
    let coverage = checks
        .iter()
        .find(|c| c["name"] == format!("coverage {}", bed.lan))
        .unwrap_or_else(|| panic!("no coverage check: {doc}"));
    assert_eq!(coverage["status"], "warn", "{coverage}");
    let message = coverage["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("holds 10 of the plan's 13 image(s)"),
        "{message}"
    );
    for missing in &THIRTEEN[10..] {
        assert!(message.contains(missing), "{missing} named: {message}");
    }
}

/// A target registry that fails 30% of every kind of request (blob `HEAD`s, upload
/// sessions, chunks, manifests) still gets every image: each push request is retried
/// on its own through the transport.
#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn sync_to_a_target_answering_thirty_percent_500s_completes() {
    let bed = Testbed::get();
    bed.lan_reset();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let faults = Config {
        seed: 5,
        rules: vec![Rule {
            probability: 0.3,
            faults: vec![Fault::Status { code: 500 }],
            ..Rule::default()
        }],
        ..Config::default()
    };
    let lan = bed.lan.parse().expect("the LAN registry's address");
    let proxy = runtime
        .block_on(serve("127.0.0.1:0".parse().expect("address"), lan, faults))
        .expect("a fault proxy in front of the LAN registry");
    let target = proxy.to_string();
    let cache = tempfile::tempdir().expect("tempdir");
    let root = data("thirteen");
    let (code, stdout, stderr) = bed.drbuild(&[
        "sync",
        root.to_str().expect("utf-8"),
        "--to",
        &target,
        "--cache-dir",
        cache.path().to_str().expect("utf-8"),
        "--json",
        "--retry-delay",
        "100ms",
    ]);
    let stats: Stats = runtime.block_on(async {
        let body = reqwest::get(format!("http://{target}/__faultproxy/stats"))
            .await
            .expect("stats")
            .bytes()
            .await
            .expect("stats body");
        serde_json::from_slice(&body).expect("stats json")
    });
    let doc = json(&stdout, &stderr);
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert_eq!(doc["summary"]["copied"], 13, "{doc}");
    assert!(stats.total_faults() >= 10, "{stats:?}");
    for name in ["library/alpine", "library/nginx", "library/postgres"] {
        let tag = if name.ends_with("alpine") {
            "3.18"
        } else if name.ends_with("nginx") {
            "stable"
        } else {
            "15-alpine"
        };
        assert_eq!(
            bed.manifest_digest(&bed.lan, name, tag),
            bed.manifest_digest(&bed.registry, name, tag),
            "{name}:{tag} keeps its digest"
        );
    }
}
