//! Secrets stay secret, on the real daemon: a build secret reaches `RUN
//! --mount=type=secret` and no layer, config or history of the image; a missing one is
//! an input error; and no secret seeded anywhere drbuild looks (shell proxy, the
//! daemon's proxy, mirror URL, docker's config, a secret-named build arg, a build secret)
//! appears in anything any command prints, with `-vv` or `--json`.

use std::io::Read;

use base64::Engine as _;

use docker_resilience_tests::testbed::{Session, Testbed};
use sha2::{Digest, Sha256};

const BUILD_SECRET: &str = "bld-5ecret-7c1d9e";
const ARG_SECRET: &str = "npm-arg-5ecret-44a0";
const PROXY_PASSWORD: &str = "proxy-pw-5ecret-91";
const MIRROR_PASSWORD: &str = "mirror-pw-5ecret-07";
const REGISTRY_PASSWORD: &str = "reg-pw-5ecret-3b";

/// A tree whose build reads secret `tok` (and writes only its digest) and has a
/// secret-named build arg.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("app")).expect("mkdir");
    std::fs::write(
        dir.path().join("app/Dockerfile"),
        "FROM alpine:3.18\nARG NPM_TOKEN\n\
         RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -c1-64 > /tok.sum\n",
    )
    .expect("write");
    dir
}

/// Every regular file's content of every layer of `image`, with its config and
/// manifest: what `docker save` writes.
fn saved_bytes(bed: &Session<'_>, image: &str) -> Vec<u8> {
    let out = bed.docker(&["save", image]);
    assert!(out.status.success(), "docker save {image}");
    let mut all = Vec::new();
    let mut outer = tar::Archive::new(out.stdout.as_slice());
    for entry in outer.entries().expect("save is a tar") {
        let mut entry = entry.expect("entry");
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read");
        // Layers are tars themselves (plain, or gzip on the containerd store).
        let inner: Box<dyn Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::GzDecoder::new(bytes.as_slice()))
        } else {
            Box::new(bytes.as_slice())
        };
        let mut layer = tar::Archive::new(inner);
        if let Ok(entries) = layer.entries() {
            for file in entries.flatten() {
                let mut file = file;
                let mut content = Vec::new();
                if file.read_to_end(&mut content).is_ok() {
                    all.extend_from_slice(&content);
                }
            }
        }
        all.extend_from_slice(&bytes);
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn a_build_secret_is_mounted_and_kept_out_of_the_image() {
    let bed = Testbed::get();
    let dir = tree();
    let root = dir.path().to_str().expect("utf-8");
    let image = format!(
        "{}-app",
        dir.path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_ascii_lowercase()
            .replace(['.', '_'], "-")
            .trim_matches('-')
    );
    let (code, stdout, stderr) = bed.drbuild_env(
        &["build-all", root, "--force", "--secret", "id=tok,env=TOK"],
        &[("TOK", BUILD_SECRET)],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let saved = saved_bytes(&bed, &image);
    assert!(
        !contains(&saved, BUILD_SECRET),
        "the secret is in `docker save`"
    );
    let digest = format!("{:x}", Sha256::digest(BUILD_SECRET.as_bytes()));
    assert!(
        contains(&saved, &digest),
        "the build did not see the secret"
    );
    let history = bed.docker(&["history", "--no-trunc", &image]);
    assert!(!contains(&history.stdout, BUILD_SECRET));
    let inspect = bed.docker(&["image", "inspect", &image]);
    assert!(!contains(&inspect.stdout, BUILD_SECRET));

    // Missing: an input error naming the service and the secret, nothing built.
    let (code, _, stderr) = bed.drbuild(&[
        "build-all",
        root,
        "--secret",
        "id=tok,env=DRBUILD_UNSET_TOK",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "service `app`: secret `tok`: environment variable `DRBUILD_UNSET_TOK` is not set"
        ),
        "{stderr}"
    );
    bed.remove_images(&[&image]);
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn compose_build_secrets_come_from_the_top_level_secrets() {
    let bed = Testbed::get();
    let dir = tree();
    std::fs::write(dir.path().join("tok.txt"), BUILD_SECRET).expect("write");
    std::fs::write(
        dir.path().join("compose.yaml"),
        "services:\n  app:\n    image: drbuild-e2e-secret:1\n    build:\n      context: ./app\n      \
         secrets:\n        - source: token_file\n          target: tok\nsecrets:\n  token_file:\n    file: ./tok.txt\n",
    )
    .expect("write");
    let root = dir.path().to_str().expect("utf-8");
    let (code, stdout, stderr) = bed.drbuild(&["build-all", root, "--force"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let saved = saved_bytes(&bed, "drbuild-e2e-secret:1");
    let digest = format!("{:x}", Sha256::digest(BUILD_SECRET.as_bytes()));
    assert!(
        contains(&saved, &digest),
        "the build did not see the secret"
    );
    assert!(!contains(&saved, BUILD_SECRET));
    bed.remove_images(&["drbuild-e2e-secret:1"]);
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "end-to-end: needs root and a Docker daemon; run scripts/test, or cargo test --features e2e"
)]
fn no_seeded_secret_reaches_any_output() {
    let bed = Testbed::get();
    let dir = tree();
    let root = dir.path().to_str().expect("utf-8");
    let config = tempfile::tempdir().expect("temp dir");
    // Docker's config with credentials for the registry and the proxy drbuild reaches.
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("carol:{REGISTRY_PASSWORD}"));
    std::fs::write(
        config.path().join("config.json"),
        format!(
            "{{\"auths\": {{\"{}\": {{\"auth\": \"{auth}\"}}, \"{}\": {{\"auth\": \"{auth}\"}}}}}}",
            bed.registry, bed.proxy
        ),
    )
    .expect("write");
    let bundle = dir.path().join("b.tar");
    let bundle = bundle.to_str().expect("utf-8");
    let proxy = format!("http://alice:{PROXY_PASSWORD}@127.0.0.1:9");
    let mirror = format!("http://bob:{MIRROR_PASSWORD}@{}", bed.proxy);
    let env = [
        ("DOCKER_CONFIG", config.path().to_str().expect("utf-8")),
        ("HTTPS_PROXY", proxy.as_str()),
        ("https_proxy", proxy.as_str()),
        // Loopback is reached directly, as everything here is.
        ("NO_PROXY", "127.0.0.1,localhost"),
        ("TOK", BUILD_SECRET),
    ];
    let arg = format!("NPM_TOKEN={ARG_SECRET}");
    // The site daemon runs behind a proxy whose URL carries a password (the test bed's
    // systemd-drop-in stand-in): what `docker info` says of it passes through drbuild.
    let daemon_password = bed
        .site_proxy
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password.to_owned())
        .expect("the site daemon's proxy has a password");
    let commands: Vec<Vec<&str>> = vec![
        vec!["plan", root, "--build-arg", &arg],
        vec!["prefetch", root, "--build-arg", &arg],
        vec![
            "prefetch",
            root,
            "--docker-host",
            &bed.docker_host,
            "--docker-host",
            &bed.site_host,
        ],
        vec!["doctor", root, "--docker-host", &bed.site_host],
        vec!["prefetch", root, "--mirror", &mirror],
        vec![
            "build-all",
            root,
            "--build-arg",
            &arg,
            "--secret",
            "id=tok,env=TOK",
        ],
        vec![
            "build",
            "app",
            "-C",
            root,
            "--build-arg",
            &arg,
            "--secret",
            "id=tok,env=TOK",
        ],
        vec!["export", root, "--output", bundle, "--build-arg", &arg],
        vec!["import", bundle],
        vec!["doctor", root],
        vec!["cache"],
    ];
    let secrets = [
        BUILD_SECRET,
        ARG_SECRET,
        PROXY_PASSWORD,
        MIRROR_PASSWORD,
        REGISTRY_PASSWORD,
        &daemon_password,
    ];
    let mut runs = 0;
    for command in &commands {
        for json in [false, true] {
            let mut args = command.clone();
            args.push("-vv");
            if json {
                args.push("--json");
            }
            let (code, stdout, stderr) = bed.drbuild_env(&args, &env);
            runs += 1;
            for secret in secrets {
                assert!(
                    !stdout.contains(secret) && !stderr.contains(secret),
                    "`drbuild {}` (exit {code}) printed {secret}:\n{stdout}\n{stderr}",
                    args.join(" ")
                );
            }
            if command[0] == "prefetch" && command.contains(&"--mirror") {
                assert_eq!(code, 2, "a mirror with a password is refused: {stderr}");
                assert!(stderr.contains("bob:***@"), "{stderr}");
            }
            if command[0] == "doctor" && !json {
                assert!(stdout.contains("alice:***@127.0.0.1:9"), "{stdout}");
            }
            if command[0] == "doctor" && command.contains(&"--docker-host") && !json {
                // The daemon's proxy is shown, without its password (the daemon masks
                // it as `xxxxx:xxxxx@`; drbuild would too).
                let line = stdout
                    .lines()
                    .find(|l| l.contains("daemon") && l.contains("127.0.0.1:9"))
                    .unwrap_or_else(|| panic!("the daemon's proxy is reported:\n{stdout}"));
                assert!(!line.contains("daemon-pw"), "{line}");
            }
            if command.contains(&"--docker-host") && command[0] == "prefetch" {
                assert_eq!(code, 0, "{stdout}\n{stderr}");
            }
        }
    }
    assert_eq!(runs, 22);
    bed.remove_images(&["drbuild-e2e-secret:1"]);
}
