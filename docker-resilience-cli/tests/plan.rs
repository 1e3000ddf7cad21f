//! `drbuild plan` on fixture trees: output checked exactly (insta snapshots).

use std::path::{Path, PathBuf};
use std::process::Command;

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(path)
}

/// Runs drbuild in `tests/data` so that paths in its output are stable.
fn drbuild(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drbuild"))
        .args(args)
        .current_dir(data(""))
        .env_remove("IMAGE_TAG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run drbuild");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn monorepo_plan_json() {
    let (code, stdout, stderr) = drbuild(&["plan", "monorepo", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    insta::assert_json_snapshot!(doc);
    // The traps, spelled out: nothing from gitignored trees or heredoc bodies, no stage
    // aliases, no image the tree builds itself.
    for absent in ["evil", "not-an-instruction", "builder", "ai-infra-backend:"] {
        let images = doc["images"].to_string();
        assert!(
            !images.contains(absent),
            "{absent} must not be external: {images}"
        );
    }
}

#[test]
fn monorepo_plan_table() {
    let (code, stdout, _) = drbuild(&["plan", "monorepo"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!(stdout);
}

#[test]
fn build_arg_overrides_default() {
    let (code, stdout, _) = drbuild(&[
        "plan",
        "monorepo",
        "--json",
        "--build-arg",
        "PYTHON_VERSION=3.12",
    ]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("docker.io/library/python:3.12-slim"),
        "{stdout}"
    );
    assert!(!stdout.contains("python:3.11-slim"), "{stdout}");
}

#[test]
fn no_ignore_reads_ignored_trees() {
    let (code, stdout, _) = drbuild(&["plan", "monorepo", "--no-ignore", "--json"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("docker.io/evil/node-modules:1"), "{stdout}");
}

#[test]
fn invalid_inputs_exit_2_with_path_and_line() {
    let cases = [
        "bad-dockerfile",
        "broken-compose",
        "bad-compose-image",
        "bad-from",
    ];
    let mut report = String::new();
    for case in cases {
        let (code, stdout, stderr) = drbuild(&["plan", &format!("invalid/{case}")]);
        assert_eq!(code, 2, "{case}: {stderr}");
        assert!(stdout.is_empty(), "{case}: {stdout}");
        report += &format!("{case}: {stderr}");
    }
    insta::assert_snapshot!(report);
}

#[test]
fn missing_root_and_bad_flags() {
    let (code, _, stderr) = drbuild(&["plan", "does-not-exist"]);
    assert_eq!(code, 2);
    assert_eq!(stderr.trim(), "error: does-not-exist: not a directory");
    let (code, _, stderr) = drbuild(&["plan", "monorepo", "--build-arg", "NOVALUE"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("expected KEY=VALUE"), "{stderr}");
    let (code, _, _) = drbuild(&["plan", "--no-such-flag"]);
    assert_eq!(code, 2);
}

#[test]
fn help_documents_exit_codes() {
    let (code, stdout, _) = drbuild(&["--help"]);
    assert_eq!(code, 0);
    for line in [
        "0    everything",
        "1    the work ran",
        "2    usage",
        "3    Docker daemon",
        "130  interrupted",
    ] {
        assert!(
            stdout.contains(line),
            "{line} missing from --help:\n{stdout}"
        );
    }
}

#[test]
fn compose_aliases_load_and_billion_laughs_is_refused_quickly() {
    let (code, stdout, stderr) = drbuild(&["plan", "compose/aliases", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("docker.io/library/redis:7-alpine"),
        "{stdout}"
    );
    let started = std::time::Instant::now();
    let (code, _, stderr) = drbuild(&["plan", "compose-hostile/laughs"]);
    // Milliseconds in a release build; a debug build on a loaded machine gets room.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(code, 2, "{stderr}");
    insta::assert_snapshot!(stderr.trim());
}

#[test]
fn compose_target_lists_optional_images() {
    let (code, stdout, stderr) = drbuild(&["plan", "compose/target"]);
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!(stdout);
    let (_, json, _) = drbuild(&["plan", "compose/target", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let optional: Vec<&str> = doc["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["optional"] == true)
        .map(|i| i["reference"].as_str().unwrap())
        .collect();
    assert_eq!(
        optional,
        [
            "docker.io/cypress/included:13.6.0",
            "docker.io/library/busybox:1.36"
        ]
    );
}

#[test]
fn compose_profiles_and_files_from_flags_and_environment() {
    let refs = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_drbuild"))
            .args(args)
            .current_dir(data("compose"))
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["reference"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let all = refs(&["plan", "profiles", "--json"], &[]);
    assert_eq!(all.len(), 3, "every profile by default: {all:?}");
    let ops = refs(&["plan", "profiles", "--json", "--profile", "ops"], &[]);
    assert_eq!(ops.len(), 2, "{ops:?}");
    let from_env = refs(
        &["plan", "profiles", "--json"],
        &[("COMPOSE_PROFILES", "ops")],
    );
    assert_eq!(from_env, ops);
    // Only the base file, not its override.
    let base = refs(
        &[
            "plan",
            "overrides",
            "--json",
            "--compose-file",
            "compose.yaml",
        ],
        &[],
    );
    assert!(
        base.contains(&"docker.io/library/postgres:15".to_owned()),
        "{base:?}"
    );
    assert!(!base.iter().any(|r| r.contains("mailhog")), "{base:?}");
    let env = refs(
        &["plan", "overrides", "--json"],
        &[("COMPOSE_FILE", "compose.yaml")],
    );
    assert_eq!(env, base);
    let merged = refs(&["plan", "overrides", "--json"], &[]);
    assert!(
        merged.contains(&"docker.io/library/postgres:16".to_owned()),
        "{merged:?}"
    );
    assert!(
        merged.contains(&"docker.io/mailhog/mailhog:v1.0.1".to_owned()),
        "{merged:?}"
    );
}

/// Runs `drbuild plan DIR --json` in `tests/data/compose` with `env`; its document.
fn plan_json(dir: &str, extra: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_drbuild"))
        .args(["plan", dir, "--json"])
        .args(extra)
        .current_dir(data("compose"))
        .env_remove("COMPOSE_PROFILES")
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run drbuild");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("plan --json prints JSON")
}

fn references(doc: &serde_json::Value) -> Vec<String> {
    doc["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| i["reference"].as_str().expect("a reference").to_owned())
        .collect()
}

#[test]
fn a_variant_read_alone_pulls_its_prebuilt_images() {
    let doc = plan_json("prebuilt", &[], &[]);
    let external = references(&doc);
    for image in [
        "docker.io/acme/web:1",
        "docker.io/acme/worker:1",
        "docker.io/library/node:20-alpine",
        "docker.io/library/python:3.12-slim",
        "docker.io/library/postgres:16",
    ] {
        assert!(external.contains(&image.to_owned()), "{image}: {doc}");
    }
    // What the default project builds stays local; nothing is both.
    let local: Vec<&str> = doc["local"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(
        local,
        [
            "docker.io/acme/web:dev",
            "docker.io/library/prebuilt-worker:latest"
        ]
    );
}

#[test]
fn an_optional_fragment_with_unset_required_variables_is_a_warning() {
    let doc = plan_json("optional_fragment", &[], &[]);
    let warnings = doc["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{doc}");
    assert_eq!(warnings[0]["path"], "deploy/compose.secrets.yaml", "{doc}");
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("DB_SECRET_FILE"),
        "{doc}"
    );
    assert_eq!(references(&doc).len(), 4, "{doc}");
    // With the variable given, nothing to warn about.
    let doc = plan_json(
        "optional_fragment",
        &[],
        &[("DB_SECRET_FILE", "/etc/acme/db-password")],
    );
    assert_eq!(doc["warnings"], serde_json::json!([]), "{doc}");
}

#[test]
fn a_committed_env_does_not_narrow_the_profiles_the_environment_does() {
    let doc = plan_json("dotenv_profiles", &[], &[]);
    assert_eq!(references(&doc).len(), 4, "every profile: {doc}");
    assert!(doc.get("profiles").is_none(), "{doc}");
    let doc = plan_json("dotenv_profiles", &[], &[("COMPOSE_PROFILES", "git")]);
    assert_eq!(
        references(&doc),
        ["docker.io/acme/app:1", "docker.io/gitea/gitea:1.21"]
    );
    assert_eq!(
        doc["profiles"],
        serde_json::json!({"active": ["git"], "from": "environment", "skipped": ["db", "scan"]})
    );
    let doc = plan_json(
        "dotenv_profiles",
        &["--profile", "*"],
        &[("COMPOSE_PROFILES", "git")],
    );
    assert_eq!(references(&doc).len(), 4, "{doc}");
    let (code, stdout, stderr) = drbuild(&["plan", "compose/dotenv_profiles", "--profile", "db"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(
            "profiles: only compose profile `db` (--profile): services `git`, `scan` left out"
        ),
        "{stdout}"
    );
}

#[test]
fn a_windows_dockerfile_is_planned_for_windows() {
    let (code, stdout, stderr) = drbuild(&["plan", "windows", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let platforms: Vec<(String, String)> = doc["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| {
            (
                i["reference"].as_str().expect("reference").to_owned(),
                i["platforms"][0].as_str().expect("platform").to_owned(),
            )
        })
        .collect();
    let host = docker_resilience::vocab::Platform::host().to_string();
    let windows = format!(
        "windows/{}",
        docker_resilience::vocab::Platform::host().architecture()
    );
    assert_eq!(
        platforms,
        [
            ("docker.io/library/nginx:1.25-alpine".to_owned(), host),
            (
                "mcr.microsoft.com/dotnet/framework/sdk:4.8".to_owned(),
                windows.clone()
            ),
            (
                "mcr.microsoft.com/windows/servercore:ltsc2022".to_owned(),
                windows
            ),
        ]
    );
    // A platform given is a platform chosen.
    let (_, stdout, _) = drbuild(&["plan", "windows", "--json", "--platform", "linux/arm64"]);
    assert!(!stdout.contains("\"windows/"), "{stdout}");
}
