//! One `drbuild.yaml`, two ways in: `drbuild build-all` (flags → overrides) and the
//! `DockerBuild` runner resolve the same settings; a flag beats the file, the file
//! beats the defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use docker_resilience::{DockerBuild, ImageReference, Overrides, Project, Settings};
use docker_resilience_cli::cli::{Cli, Command};

fn tree() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/settings")
}

/// The settings `drbuild ARGS` would run with (what its command resolves).
fn from_cli(args: &[&str]) -> Settings {
    let cli = Cli::try_parse_from(args).expect("valid arguments");
    let Command::BuildAll(a) = &cli.command else {
        panic!("build-all expected");
    };
    let overrides = a.pull.overrides(a.build.pull_jobs, Some(&a.build));
    Project::open(&a.tree.root, &a.tree.plan_options(), &overrides)
        .expect("the tree opens")
        .settings
}

#[test]
fn build_all_and_the_runner_resolve_the_same_file_alike() {
    let root = tree();
    let root = root.to_str().expect("utf-8");
    let cli = from_cli(&["drbuild", "build-all", root]);
    let runner = DockerBuild::new(root).settings().expect("settings");
    assert_eq!(cli, runner);
    // And they are the file's, not the defaults.
    assert_eq!(cli.build_jobs, 3);
    assert_eq!(cli.pull_jobs, 6);
    assert_eq!(cli.network_default.as_deref(), Some("none"));
    assert_eq!(cli.build_retry.max_attempts, 4);
    assert_eq!(cli.pull_retry.max_attempts, 4);
    assert_eq!(cli.pull_retry.min_delay, Duration::from_millis(250));
    let ghcr = ImageReference::parse("ghcr.io/o/app:1").expect("reference");
    assert_eq!(
        cli.mirrors.for_image(&ghcr)[0].to_string(),
        "harbor.example.com/ghcr"
    );
}

#[test]
fn a_flag_beats_the_file_and_the_file_beats_the_defaults() {
    let root = tree();
    let root = root.to_str().expect("utf-8");
    let flags = from_cli(&[
        "drbuild",
        "build-all",
        root,
        "--jobs",
        "5",
        "--network",
        "host",
        "--build-retries",
        "0",
        "--retry-delay",
        "10ms",
        "--mirror",
        "flag-mirror.example.com",
    ]);
    let runner = DockerBuild::new(root)
        .overrides(Overrides {
            build_jobs: Some(5),
            network: Some("host".into()),
            build_attempts: Some(1),
            retry_delay: Some(Duration::from_millis(10)),
            mirrors: vec!["flag-mirror.example.com".into()],
            ..Overrides::default()
        })
        .settings()
        .expect("settings");
    assert_eq!(flags, runner);
    assert_eq!(flags.build_jobs, 5);
    assert_eq!(flags.network_override.as_deref(), Some("host"));
    assert_eq!(flags.build_retry.max_attempts, 1);
    assert_eq!(
        flags.pull_retry.max_attempts, 4,
        "--build-retries leaves pulls to the file"
    );
    assert_eq!(flags.pull_retry.min_delay, Duration::from_millis(10));
    let hub = ImageReference::parse("redis:7-alpine").expect("reference");
    let mirrors: Vec<String> = flags
        .mirrors
        .for_image(&hub)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(mirrors, ["flag-mirror.example.com", "mirror.example.com"]);

    // A tree with no drbuild.yaml: the defaults.
    let bare = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/missing-image");
    let defaults = DockerBuild::new(&bare).settings().expect("settings");
    assert_eq!(defaults, Settings::default());
    assert_eq!((defaults.build_jobs, defaults.pull_jobs), (2, 4));
}
