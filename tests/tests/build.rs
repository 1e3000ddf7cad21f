//! `drbuild build-all` / `build` against the real daemon (BuildKit), registry and fault proxy.

use docker_resilience_tests::faultproxy::Config;
use docker_resilience_tests::testbed::{data, repo_root, Session, Testbed};
use serde_json::Value;

const QUICK: [&str; 4] = ["--retry-delay", "100ms", "--retry-max-delay", "1s"];

fn build_json(bed: &Session<'_>, args: &[&str]) -> (i32, Value, String) {
    let mut all = args.to_vec();
    all.push("--json");
    all.extend_from_slice(&QUICK);
    let (code, stdout, stderr) = bed.drbuild(&all);
    let doc = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    (code, doc, stderr)
}

fn service<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("{name} not in {doc}"))
}

fn image_id(bed: &Session<'_>, image: &str) -> String {
    let out = bed.docker(&["image", "inspect", "-f", "{{.Id}}", image]);
    assert!(out.status.success(), "{image} missing");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The index of the first stderr line `SERVICE | WHAT` (names are padded).
fn line_at(stderr: &str, name: &str, what: &str) -> usize {
    stderr
        .lines()
        .position(|l| {
            let mut parts = l.splitn(2, " | ");
            parts.next().map(str::trim) == Some(name) && parts.next() == Some(what)
        })
        .unwrap_or_else(|| panic!("no `{name} | {what}` in:\n{stderr}"))
}

fn finished_at(stderr: &str, name: &str) -> usize {
    line_at(stderr, name, "built")
}

fn started_at(stderr: &str, name: &str) -> usize {
    line_at(stderr, name, "building")
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn demo_monorepo_builds_in_dependency_order_under_manifest_faults() {
    let bed = Testbed::get();
    let root = repo_root().join("examples/demo-monorepo");
    let root = root.to_str().expect("utf-8");
    bed.remove_images(&[
        "ubuntu:22.04",
        "nginx:stable",
        "alpine:latest",
        "golang:1.21-alpine",
        "node:18-alpine",
        "python:3.11-slim",
        "ai-infra-backend:v0.3.6-dev",
        "ai-infra-backend-init:v0.3.6-dev",
        "ai-infra-nginx:v0.3.6-dev",
    ]);
    bed.set_faults(&Config::manifest_faults(5, 0.3));
    let (code, doc, stderr) = build_json(&bed, &["build-all", root, "--force"]);
    let faults = bed.stats().total_faults();
    bed.reset_faults();
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert_eq!(doc["summary"]["total"], 6, "{doc}");
    assert_eq!(doc["summary"]["built"], 6, "{doc}");
    assert!(faults > 0, "no fault was injected");
    // backend-init is FROM the backend's image; nginx depends_on frontend, backend, apphub.
    assert!(
        finished_at(&stderr, "backend") < started_at(&stderr, "backend-init"),
        "{stderr}"
    );
    for dep in ["frontend", "backend", "apphub"] {
        assert!(
            finished_at(&stderr, dep) < started_at(&stderr, "nginx"),
            "{stderr}"
        );
    }
    for image in [
        "ai-infra-backend:v0.3.6-dev",
        "ai-infra-backend-init:v0.3.6-dev",
        "ai-infra-nginx:v0.3.6-dev",
    ] {
        assert!(bed.has_image(image), "{image}");
    }
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn failures_retries_and_skips_are_reported() {
    let bed = Testbed::get();
    let root = data("build-world");
    let root = root.to_str().expect("utf-8");
    let run_id = format!("run-{}-{}", std::process::id(), rand_suffix());
    let arg = format!("RUN_ID={run_id}");
    let (code, doc, stderr) = build_json(&bed, &["build-all", root, "--build-arg", &arg]);
    assert_eq!(code, 1, "{doc}\n{stderr}");
    let broken = service(&doc, "broken");
    assert_eq!(broken["status"], "failed");
    assert_eq!(broken["attempts"], 1, "a step that exits 3 is not retried");
    assert_eq!(broken["error_class"], "permanent");
    assert!(
        broken["error"]
            .as_str()
            .unwrap_or_default()
            .contains("exit code: 3"),
        "{broken}"
    );
    let flaky = service(&doc, "flaky-apt");
    assert_eq!(flaky["status"], "built", "{flaky}");
    assert_eq!(flaky["attempts"], 2, "the apt 500 is retried once");
    assert_eq!(service(&doc, "after-broken")["status"], "skipped");
    assert_eq!(service(&doc, "after-broken")["attempts"], 0);
    assert_eq!(service(&doc, "app")["status"], "built");
    assert_eq!(
        service(&doc, "cross")["status"],
        "built",
        "FROM --platform=$BUILDPLATFORM and RUN --mount=type=cache"
    );
    assert_eq!(doc["summary"]["built"], 4);
    assert_eq!(doc["summary"]["failed"], 1);
    assert_eq!(doc["summary"]["skipped"], 1);
    assert!(
        stderr.contains("flaky-apt    | attempt 1 failed (transient)"),
        "{stderr}"
    );

    // The human summary: the failing step's last lines, then the one-line verdict.
    let (code, stdout, _) = bed.drbuild(&["build-all", root, "--build-arg", &arg]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.last().copied(),
        Some("built 4/6; failed: broken; skipped: after-broken"),
        "{stdout}"
    );
    assert!(
        stdout.contains("broken failed at `[2/2] RUN echo \"compiling…\" && exit 3` (permanent)"),
        "{stdout}"
    );
    assert!(stdout.contains("    compiling…"), "{stdout}");
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn force_rebuilds_and_missing_only_skips() {
    let bed = Testbed::get();
    let root = data("build-world");
    let root = root.to_str().expect("utf-8");
    let (code, doc, stderr) = build_json(&bed, &["build", "-C", root, "base", "app"]);
    assert_eq!(code, 0, "{doc}\n{stderr}");
    let first = image_id(&bed, "drbuild-test/app:1");
    let (code, _, _) = build_json(&bed, &["build", "-C", root, "base", "app"]);
    assert_eq!(code, 0);
    assert_eq!(
        image_id(&bed, "drbuild-test/app:1"),
        first,
        "with the cache, nothing changes"
    );
    let (code, _, stderr) = build_json(&bed, &["build", "-C", root, "base", "app", "--force"]);
    assert_eq!(code, 0, "{stderr}");
    assert_ne!(
        image_id(&bed, "drbuild-test/app:1"),
        first,
        "--force rebuilds without the cache"
    );
    let (code, doc, _) = build_json(
        &bed,
        &["build", "-C", root, "base", "app", "--missing-only"],
    );
    assert_eq!(code, 0);
    assert_eq!(service(&doc, "app")["status"], "up-to-date");
    assert_eq!(doc["summary"]["up_to_date"], 2);
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn heredocs_build_where_the_frontend_takes_them_else_fail_once_with_what_to_do() {
    let bed = Testbed::get();
    let root = data("heredoc");
    let (code, doc, stderr) = build_json(&bed, &["build-all", root.to_str().expect("utf-8")]);
    let s = &doc["services"][0];
    if bed.heredocs() {
        // Docker 23+: BuildKit's built-in frontend parses heredocs.
        assert_eq!(code, 0, "{doc}\n{stderr}");
        assert_eq!(s["status"], "built", "{s}");
        return;
    }
    assert_eq!(code, 1, "{doc}\n{stderr}");
    assert_eq!(s["status"], "failed");
    assert_eq!(s["attempts"], 1);
    assert!(
        s["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown instruction"),
        "{s}"
    );
    assert!(
        s["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("# syntax=docker/dockerfile:1.4"),
        "{s}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn a_typo_beside_heredocs_gets_the_heredoc_hint_only_where_heredocs_are_rejected() {
    let bed = Testbed::get();
    let root = data("heredoc-typo");
    let (code, doc, stderr) = build_json(&bed, &["build-all", root.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{doc}\n{stderr}");
    let s = &doc["services"][0];
    assert_eq!(
        (s["status"].as_str(), s["attempts"].as_u64()),
        (Some("failed"), Some(1)),
        "{s}"
    );
    let error = s["error"].as_str().unwrap_or_default();
    assert!(error.contains("unknown instruction"), "{s}");
    let hint = s["hint"].as_str().unwrap_or_default();
    if bed.heredocs() {
        assert!(
            error.to_ascii_lowercase().contains("runn"),
            "the typo is what fails: {s}"
        );
        assert!(
            !hint.contains("heredoc"),
            "no heredoc hint where heredocs work: {s}"
        );
    } else {
        assert!(hint.contains("heredoc"), "{s}");
    }
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn a_cycle_is_an_input_error_naming_it() {
    let bed = Testbed::get();
    let root = data("cycle");
    let (code, stdout, stderr) = bed.drbuild(&["build-all", root.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("dependency cycle: a -> b -> a"), "{stderr}");
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn the_xtask_runner_prints_cargo_lines_under_a_build_script() {
    let bed = Testbed::get();
    let root = repo_root();
    let built = std::process::Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "xtask"])
        .current_dir(&root)
        .output()
        .expect("cargo build -p xtask");
    // A failed link prints thousands of arguments before its cause: show the cause.
    let stderr = String::from_utf8_lossy(&built.stderr);
    let cause: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            l.len() < 400 && (l.contains("error") || l.contains("ld:") || l.contains("space"))
        })
        .collect();
    assert!(
        built.status.success(),
        "cargo build -p xtask failed:\n{}",
        cause.join("\n")
    );
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
    let tree = data("build-world");
    let out = std::process::Command::new(target.join("debug/xtask"))
        .args(["docker", tree.to_str().expect("utf-8")])
        .env("DOCKER_HOST", &bed.docker_host)
        .env("OUT_DIR", std::env::temp_dir())
        .output()
        .expect("run xtask");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let rerun = |p: &str| format!("cargo:rerun-if-changed={}", tree.join(p).display());
    for input in [
        "drbuild.yaml",
        "broken/Dockerfile",
        "broken",
        "app/Dockerfile",
    ] {
        assert!(
            stdout.lines().any(|l| l == rerun(input)),
            "no {input}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("cargo:warning=docker service `broken` failed:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cargo:warning=docker service `after-broken` skipped:"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("base ") && l.ends_with("built")),
        "{stdout}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn the_classic_builder_builds_and_explains_what_needs_buildkit() {
    let bed = Testbed::get();
    let root = data("build-world");
    let root = root.to_str().expect("utf-8");
    let mut args = vec!["build", "-C", root, "base", "cross", "--json"];
    args.extend_from_slice(&QUICK);
    let (code, stdout, stderr) = bed.drbuild_env(&args, &[("DOCKER_BUILDKIT", "0")]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let doc: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(service(&doc, "base")["status"], "built", "{doc}");
    let cross = service(&doc, "cross");
    assert_eq!(cross["status"], "failed");
    assert_eq!(cross["attempts"], 1);
    assert!(
        cross["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("needs BuildKit"),
        "{cross}"
    );
    assert!(
        stderr.contains("| Step 1/2 : FROM alpine:latest"),
        "classic output: {stderr}"
    );
}

/// Compose as Compose reads it, built: a service tagged with its own base (`alpine:3.18`
/// built FROM `alpine:3.18`) still pulls that base, then is the base of the other
/// service; a `dockerfile_inline` is what is built (not the Dockerfile beside it); the
/// target's unused stage's image is optional: neither prefetched nor pulled by BuildKit.
#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn compose_inline_own_base_and_target_build() {
    let bed = Testbed::get();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("base")).unwrap();
    std::fs::create_dir_all(root.join("app")).unwrap();
    std::fs::write(
        root.join("base/Dockerfile"),
        "FROM alpine:3.18\nRUN echo own-base > /marker\n",
    )
    .unwrap();
    std::fs::write(root.join("app/hello.txt"), "hello\n").unwrap();
    std::fs::write(root.join("app/Dockerfile"), "FROM this-is-not-built:1\n").unwrap();
    std::fs::write(
        root.join("compose.yaml"),
        "services:\n  base:\n    image: alpine:3.18\n    build: ./base\n  app:\n    image: drbuild-e2e-inline:1\n    \
         build:\n      context: ./app\n      target: final\n      dockerfile_inline: |\n        \
         FROM busybox:1.36 AS unused\n        RUN true\n        FROM alpine:3.18 AS final\n        COPY hello.txt /hello.txt\n",
    )
    .unwrap();
    let root = root.to_str().unwrap();
    bed.remove_images(&["alpine:3.18", "busybox:1.36", "drbuild-e2e-inline:1"]);

    let (code, stdout, stderr) = bed.drbuild(&["plan", root, "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let plan: Value = serde_json::from_str(&stdout).unwrap();
    let images: Vec<(String, bool)> = plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["reference"].as_str().unwrap().to_owned(),
                i["optional"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        images,
        [
            ("docker.io/library/alpine:3.18".to_owned(), false),
            ("docker.io/library/busybox:1.36".to_owned(), true),
        ],
        "{stdout}"
    );

    let (code, doc, stderr) = build_json(&bed, &["build-all", root, "--force"]);
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert_eq!(doc["summary"]["built"], 2, "{doc}");
    assert!(
        finished_at(&stderr, "base") < started_at(&stderr, "app"),
        "{stderr}"
    );
    assert!(
        !bed.has_image("busybox:1.36"),
        "the unused stage's image was pulled"
    );
    let history = bed.docker(&["history", "--no-trunc", "drbuild-e2e-inline:1"]);
    let history = String::from_utf8_lossy(&history.stdout);
    // The graph-driver store's BuildKit prefers the local `alpine:3.18` (the base
    // service's build); the containerd store's resolves the tag at the registry first
    // and uses the registry's (moby/moby#49542), as `docker build` does there.
    let local_base = history.contains("own-base");
    assert_eq!(
        local_base,
        !bed.containerd_store(),
        "which base the app was built on: {history}\n{stderr}"
    );
    assert!(history.contains("hello.txt"), "{history}");
    bed.remove_images(&["alpine:3.18", "drbuild-e2e-inline:1"]);
}

/// Compose `additional_contexts` that are images build through Docker's `/build` API:
/// `service:base` is the image the `base` service builds (built first), and
/// `docker-image://busybox:1.36` serves `COPY --from` and `RUN --mount=from`. A context
/// that is a directory fails once, saying what to do.
#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn compose_image_contexts_build() {
    let bed = Testbed::get();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("base")).unwrap();
    std::fs::create_dir_all(root.join("app")).unwrap();
    std::fs::write(
        root.join("base/Dockerfile"),
        "FROM alpine:3.18\nRUN echo from-base > /marker\n",
    )
    .unwrap();
    std::fs::write(
        root.join("app/Dockerfile"),
        "FROM base\nCOPY --from=tools /bin/busybox /tools-busybox\n\
         RUN --mount=from=tools,target=/t test -x /t/bin/busybox && cp /marker /seen\n",
    )
    .unwrap();
    std::fs::write(
        root.join("compose.yaml"),
        "services:\n  base:\n    image: drbuild-e2e-ctxbase:1\n    build: ./base\n  app:\n    \
         image: drbuild-e2e-ctx:1\n    build:\n      context: ./app\n      additional_contexts:\n        \
         base: service:base\n        tools: docker-image://busybox:1.36\n",
    )
    .unwrap();
    let root = root.to_str().unwrap();
    let made = ["drbuild-e2e-ctxbase:1", "drbuild-e2e-ctx:1"];
    bed.remove_images(&made);

    let (code, stdout, stderr) = bed.drbuild(&["plan", root, "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let plan: Value = serde_json::from_str(&stdout).unwrap();
    let images: Vec<&str> = plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap())
        .collect();
    assert_eq!(
        images,
        [
            "docker.io/library/alpine:3.18",
            "docker.io/library/busybox:1.36"
        ],
        "{stdout}"
    );

    let (code, doc, stderr) = build_json(&bed, &["build-all", root, "--force"]);
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert_eq!(doc["summary"]["built"], 2, "{doc}");
    assert!(
        finished_at(&stderr, "base") < started_at(&stderr, "app"),
        "{stderr}"
    );
    // The app stands on the base service's image: its layers begin with the base's.
    let layers = |image: &str| -> Vec<String> {
        let out = bed.docker(&["image", "inspect", "-f", "{{json .RootFS.Layers}}", image]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
    };
    let (base, app) = (layers(made[0]), layers(made[1]));
    assert!(
        app.len() > base.len() && app[..base.len()] == base[..],
        "{base:?} / {app:?}"
    );
    let history = bed.docker(&["history", "--no-trunc", made[1]]);
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(history.contains("/tools-busybox"), "{history}");
    bed.remove_images(&made);

    // A directory context: refused once, with what to do.
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other.path().join("assets")).unwrap();
    std::fs::write(
        other.path().join("Dockerfile"),
        "FROM alpine:3.18\nCOPY --from=assets / /assets\n",
    )
    .unwrap();
    std::fs::write(
        other.path().join("compose.yaml"),
        "services:\n  docs:\n    image: drbuild-e2e-ctxdir:1\n    build:\n      context: .\n      \
         additional_contexts:\n        assets: ./assets\n",
    )
    .unwrap();
    let (code, doc, stderr) = build_json(
        &bed,
        &["build-all", other.path().to_str().unwrap(), "--force"],
    );
    assert_ne!(code, 0, "{doc}");
    let docs = service(&doc, "docs");
    assert_eq!(docs["attempts"], 1, "{doc}");
    let error = docs["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("assets") && error.contains("docker compose build"),
        "{doc}\n{stderr}"
    );
}
