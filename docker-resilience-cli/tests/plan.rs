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
