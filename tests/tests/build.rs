//! `drbuild build-all` / `build` against the real daemon (BuildKit), registry and fault proxy.

use docker_resilience_tests::faultproxy::Config;
use docker_resilience_tests::testbed::{data, repo_root, Session, Testbed};
use serde_json::Value;

const QUICK: [&str; 4] = ["--retry-delay", "100ms", "--retry-max-delay", "1s"];

/// The demo monorepo's bases and some of its built images: removed before a run that
/// must fetch and build them.
const DEMO_IMAGES: [&str; 9] = [
    "ubuntu:22.04",
    "nginx:stable",
    "alpine:latest",
    "golang:1.21-alpine",
    "node:18-alpine",
    "python:3.11-slim",
    "ai-infra-backend:v0.3.6-dev",
    "ai-infra-backend-init:v0.3.6-dev",
    "ai-infra-nginx:v0.3.6-dev",
];

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
    bed.remove_images(&DEMO_IMAGES);
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

/// After a prefetch, a build asks no registry: not for a base, not for an image that
/// another service built (through Docker's `/build`, BuildKit on the containerd store
/// resolves every tag at the registry first).
#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn after_a_prefetch_builds_ask_no_registry_and_need_no_mirror() {
    let bed = Testbed::get();
    let root = repo_root().join("examples/demo-monorepo");
    let root = root.to_str().expect("utf-8");
    bed.remove_images(&DEMO_IMAGES);
    let (code, doc, stderr) = bed.drbuild_json(&["prefetch", root, "--json"]);
    assert_eq!(code, 0, "{doc}\n{stderr}");
    bed.reset_faults();
    let (code, doc, stderr) = build_json(&bed, &["build-all", root, "--force"]);
    let log = bed.log();
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert_eq!(doc["summary"]["built"], 6, "{doc}");
    let requests: Vec<String> = log
        .iter()
        .map(|e| format!("{} {}", e.method, e.path))
        .collect();
    // Built through BuildKit's own API, images are used as the daemon holds them before
    // any registry is asked (`image-resolve-mode=local`), on every store.
    assert!(
        requests.is_empty(),
        "the build asked the registry: {requests:#?}"
    );

    // Through Docker's `/build` API, the bases are pinned to what the daemon holds: no
    // tag is resolved. BuildKit on the containerd store still looks an image up by
    // digest when its content came from no registry it trusts (built here, or
    // delivered through drbuild's handoff registry), then uses the one it holds; a
    // registry cannot answer a digest with another image.
    bed.reset_faults();
    let (code, stdout, stderr) = bed.drbuild_env(
        &["build-all", root, "--force", "--json"],
        &[("DRBUILD_BUILD_API", "build")],
    );
    let log = bed.log();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("`/build` API: DRBUILD_BUILD_API=build"),
        "{stderr}"
    );
    let by_digest = |e: &docker_resilience_tests::faultproxy::LogEntry| {
        bed.containerd_store()
            && (e.path.contains("/manifests/sha256:") || e.path.contains("/blobs/sha256:"))
    };
    assert!(log.iter().all(by_digest), "{log:#?}");

    // The mirror (the daemon's only way to a registry) down: the same build still builds.
    bed.set_faults(&Config {
        down: true,
        ..Config::default()
    });
    let (code, doc, stderr) = build_json(&bed, &["build-all", root, "--force"]);
    let log = bed.log();
    bed.reset_faults();
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert_eq!(doc["summary"]["built"], 6, "{doc}");
    assert!(log.is_empty(), "{log:#?}");
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
    // The app is built on the local `alpine:3.18` (the base service's build) on every
    // store: the graph driver's BuildKit prefers it, and on the containerd store, where
    // BuildKit resolves a tag at the registry first and would use the registry's
    // (moby/moby#49542, as `docker build` does there), drbuild pins it by digest.
    assert!(
        history.contains("own-base"),
        "the app was not built on the base service's image: {history}\n{stderr}"
    );
    assert!(history.contains("hello.txt"), "{history}");
    bed.remove_images(&["alpine:3.18", "drbuild-e2e-inline:1"]);
}

/// Compose `additional_contexts` that are images build through Docker's `/build` API:
/// `service:base` is the image the `base` service builds (built first), and
/// `docker-image://busybox:1.36` serves `COPY --from` and `RUN --mount=from`.
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
}

/// Through BuildKit's own API, a build takes a directory as a named context, and its
/// files are served by drbuild's session with each `.dockerignore` applied: the
/// context's, and the named directory's own. A daemon whose Dockerfile frontend takes
/// no named contexts (20.10) fails once, naming itself.
#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn directory_contexts_build_with_every_dockerignore_applied() {
    let bed = Testbed::get();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (path, text) in [
        ("app/main.txt", "main"),
        ("app/secret.txt", "do not send"),
        ("app/node_modules/dep.js", "dep"),
        ("app/node_modules/keep.txt", "kept"),
        (
            "app/.dockerignore",
            "secret.txt\nnode_modules\n!node_modules/keep.txt\n",
        ),
        ("assets/logo.txt", "logo"),
        ("assets/draft.txt", "draft"),
        ("assets/.dockerignore", "draft.txt\n"),
        (
            "app/Dockerfile",
            "FROM alpine:3.18\nCOPY . /ctx\nCOPY --from=assets / /assets\n\
             COPY --from=tools /bin/busybox /tools-busybox\n",
        ),
        (
            "compose.yaml",
            "services:\n  docs:\n    image: drbuild-e2e-ctxdir:1\n    build:\n      \
             context: ./app\n      additional_contexts:\n        assets: ./assets\n        \
             tools: docker-image://busybox:1.36\n",
        ),
    ] {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let image = "drbuild-e2e-ctxdir:1";
    bed.remove_images(&[image]);
    let (code, doc, stderr) = build_json(&bed, &["build-all", root.to_str().unwrap(), "--force"]);
    let docs = service(&doc, "docs");
    if !bed.named_contexts() {
        assert_eq!(code, 1, "{doc}");
        assert_eq!(docs["attempts"], 1, "{doc}");
        let error = docs["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("`assets`")
                && error.contains("Docker 20.10")
                && error.contains("takes no named contexts"),
            "{doc}\n{stderr}"
        );
        return;
    }
    assert_eq!(code, 0, "{doc}\n{stderr}");
    let listing = bed.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        image,
        "sh",
        "-c",
        "find /ctx /assets -type f | sort; test -x /tools-busybox && echo tools",
    ]);
    let listing = String::from_utf8_lossy(&listing.stdout);
    let files: Vec<&str> = listing.lines().collect();
    assert_eq!(
        files,
        [
            "/assets/.dockerignore",
            "/assets/logo.txt",
            "/ctx/.dockerignore",
            "/ctx/Dockerfile",
            "/ctx/main.txt",
            "/ctx/node_modules/keep.txt",
            "tools",
        ],
        "{stderr}"
    );
    bed.remove_images(&[image]);
}

/// `drbuild.yaml` `contexts:` of each kind in one build: a directory, `target:` (another
/// service's image, built first) and `docker-image://`; the image holds files from each.
#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn a_directory_a_target_and_an_image_context_build_into_one_image() {
    let bed = Testbed::get();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (path, text) in [
        ("assets/logo.txt", "logo\n"),
        (
            "base/Dockerfile",
            "FROM alpine:3.18\nRUN echo from-base > /base.txt\n",
        ),
        (
            "app/Dockerfile",
            "FROM alpine:3.18\nCOPY --from=assets logo.txt /from-dir.txt\n\
             COPY --from=base /base.txt /from-target.txt\n\
             COPY --from=tools /bin/busybox /from-image\n",
        ),
        (
            "drbuild.yaml",
            "services:\n  base:\n    image: drbuild-e2e-ctx3-base:1\n  app:\n    \
             image: drbuild-e2e-ctx3:1\n    contexts:\n      assets: ./assets\n      \
             base: target:base\n      tools: docker-image://busybox:1.36\n",
        ),
    ] {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let made = ["drbuild-e2e-ctx3-base:1", "drbuild-e2e-ctx3:1"];
    bed.remove_images(&made);
    let (code, doc, stderr) = build_json(&bed, &["build-all", root.to_str().unwrap(), "--force"]);
    if !bed.named_contexts() {
        assert_eq!(code, 1, "{doc}");
        assert_eq!(service(&doc, "base")["status"], "built", "{doc}");
        let error = service(&doc, "app")["error"].as_str().unwrap_or_default();
        assert!(error.contains("takes no named contexts"), "{doc}\n{stderr}");
        bed.remove_images(&made);
        return;
    }
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert!(
        finished_at(&stderr, "base") < started_at(&stderr, "app"),
        "{stderr}"
    );
    let out = bed.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        made[1],
        "sh",
        "-c",
        "cat /from-dir.txt /from-target.txt; test -x /from-image && echo image",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["logo", "from-base", "image"],
        "{out:?}"
    );
    bed.remove_images(&made);
}

/// A URL as a named context (compose `additional_contexts`) is passed to BuildKit: 26.1
/// fetches it (here a file served on 127.0.0.1 by the test); 28.5's built-in frontend
/// refuses it, and 20.10's takes no named contexts: each fails once, naming the daemon.
#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn a_url_context_is_fetched_by_buildkit_or_refused_naming_the_daemon() {
    use std::io::{Read, Write};
    let bed = Testbed::get();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&served);
    std::thread::spawn(move || {
        for conn in listener.incoming().take(8) {
            let Ok(mut conn) = conn else { continue };
            let mut request = [0u8; 4096];
            let n = conn.read(&mut request).unwrap_or(0);
            let head = String::from_utf8_lossy(&request[..n]).starts_with("HEAD");
            let body = "served over http\n";
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                if head { "" } else { body }
            );
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM alpine:3.18\nCOPY --from=notes notes.txt /notes.txt\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("compose.yaml"),
        format!(
            "services:\n  web:\n    image: drbuild-e2e-url:1\n    build:\n      context: .\n      \
             additional_contexts:\n        notes: http://127.0.0.1:{port}/notes.txt\n"
        ),
    )
    .unwrap();
    let image = "drbuild-e2e-url:1";
    bed.remove_images(&[image]);
    let (code, doc, stderr) = build_json(
        &bed,
        &["build-all", dir.path().to_str().unwrap(), "--force"],
    );
    let error = service(&doc, "web")["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if !bed.named_contexts() {
        assert_eq!(code, 1, "{doc}");
        assert!(
            error.contains("`notes`") && error.contains("takes no named contexts"),
            "{doc}"
        );
        return;
    }
    if bed.engine.starts_with("28.5") {
        assert_eq!(code, 1, "{doc}");
        assert_eq!(service(&doc, "web")["attempts"], 1, "{doc}");
        assert!(
            error.contains("Docker 28.5")
                && error.contains("built-in Dockerfile frontend refused its URL context `notes`"),
            "{doc}\n{stderr}"
        );
        return;
    }
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert!(served.load(std::sync::atomic::Ordering::Relaxed) > 0);
    let out = bed.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        image,
        "cat",
        "/notes.txt",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "served over http\n",
        "{out:?}"
    );
    bed.remove_images(&[image]);
}

/// Through Docker's `/build` API (which imports a cache from images only), a cache it
/// cannot use is said once and the build goes on; a malformed one fails the build, as
/// it does through BuildKit's API, before the build is sent.
#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn the_build_api_says_which_cache_it_cannot_use_and_refuses_a_malformed_one() {
    let bed = Testbed::get();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let image = "drbuild-e2e-build-api-cache:1";
    for service in ["one", "two"] {
        std::fs::create_dir_all(root.join(service)).unwrap();
        std::fs::write(
            root.join(service).join("Dockerfile"),
            format!("FROM busybox:1.36\nRUN echo {service} > /{service}\n"),
        )
        .unwrap();
    }
    let config = |cache: &str| {
        format!(
            "services:\n  one:\n    image: {image}-one\n    cache-from: [{cache}]\n  \
             two:\n    image: {image}-two\n    cache-from: [{cache}]\n"
        )
    };
    let local = "'type=local,src=/nonexistent/drbuild-cache'";
    std::fs::write(root.join("drbuild.yaml"), config(local)).unwrap();
    let root_str = root.to_str().unwrap();
    let api = [("DRBUILD_BUILD_API", "build")];
    let (code, stdout, stderr) =
        bed.drbuild_env(&["build-all", root_str, "--force", "--json"], &api);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let said =
        "imports a build cache from images only: `type=local,src=/nonexistent/drbuild-cache` needs";
    assert_eq!(stderr.matches(said).count(), 1, "{stderr}");

    std::fs::write(root.join("drbuild.yaml"), config("'type=local,dest'")).unwrap();
    let (code, stdout, stderr) =
        bed.drbuild_env(&["build-all", root_str, "--force", "--json"], &api);
    let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_ne!(code, 0, "{doc}\n{stderr}");
    let error = service(&doc, "one")["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("cache `type=local,dest`: `dest` is not KEY=VALUE"),
        "{doc}"
    );
    bed.remove_images(&[&format!("{image}-one"), &format!("{image}-two")]);
}

/// A service built on daemon A with its cache exported to the LAN registry
/// (`drbuild.yaml` `cache:`), then on an empty daemon B (the site daemon) that imports
/// it: every `RUN` step is cached there. A graph-driver store exports no cache: said
/// once, and the build goes on.
#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn a_registry_cache_lets_an_empty_daemon_skip_every_run_step() {
    let bed = Testbed::get();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let image = "drbuild-e2e-cache:1";
    std::fs::create_dir_all(root.join("slow")).unwrap();
    std::fs::write(
        root.join("slow/Dockerfile"),
        "FROM busybox:1.36\nRUN sleep 2 && echo one > /one\nRUN sleep 2 && echo two > /two\n",
    )
    .unwrap();
    std::fs::write(
        root.join("drbuild.yaml"),
        format!(
            "cache: type=registry,ref={}/drbuild-e2e-cache/{{service}},mode=max\n\
             services:\n  slow:\n    image: {image}\n",
            bed.lan
        ),
    )
    .unwrap();
    let root = root.to_str().unwrap();
    bed.lan_reset();
    bed.remove_images(&[image]);

    // A: a cold build, its cache exported.
    let (code, doc, stderr) = build_json(&bed, &["build-all", root, "--force"]);
    assert_eq!(code, 0, "{doc}\n{stderr}");
    let cold = service(&doc, "slow")["elapsed_ms"].as_u64().unwrap();
    assert!(cold >= 4000, "two steps that sleep 2 s took {cold} ms");
    if !bed.containerd_store() {
        let said = "exports no build cache (`cache-to` needs the containerd image store)";
        assert_eq!(stderr.matches(said).count(), 1, "{stderr}");
        return;
    }

    // B: the base alone (from A), no build cache, no image; the cache from the LAN.
    bed.copy_to_site("busybox:1.36");
    assert!(bed
        .site_docker(&["builder", "prune", "-af"])
        .status
        .success());
    bed.site_docker(&["image", "rm", "-f", image]);
    let (code, stdout, stderr) = bed.drbuild_env(
        &["build-all", root, "--no-prefetch", "--json"],
        &[("DOCKER_HOST", bed.site_host.as_str())],
    );
    let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(code, 0, "{doc}\n{stderr}");
    let warm = service(&doc, "slow")["elapsed_ms"].as_u64().unwrap();
    for step in [
        "RUN sleep 2 && echo one > /one",
        "RUN sleep 2 && echo two > /two",
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(step) && l.ends_with("(cached)")),
            "`{step}` not cached on B:\n{stderr}"
        );
    }
    eprintln!("cache: A's cold build {cold} ms, B's from the LAN cache {warm} ms");
    assert!(
        warm * 10 <= cold * 3,
        "B took {warm} ms, A's cold build {cold} ms: more than 0.3x"
    );
    let two = bed.site_docker(&["run", "--rm", "--network", "none", image, "cat", "/two"]);
    assert_eq!(String::from_utf8_lossy(&two.stdout).trim(), "two");
    bed.site_docker(&["image", "rm", "-f", image]);
    bed.remove_images(&[image]);
}
