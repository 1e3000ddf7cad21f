//! The project's scripts that need no daemon: `scripts/lib/debian-mirror` finds the
//! Debian archive in the machine's apt sources (deb822 and one-line forms).

use std::path::Path;
use std::process::Command;

use docker_resilience_tests::testbed::repo_root;

fn mirror(apt: &Path, env: &[(&str, &str)]) -> String {
    let out = Command::new(repo_root().join("scripts/lib/debian-mirror"))
        .env("DRBUILD_APT_DIR", apt)
        .env_remove("DRBUILD_DEBIAN_MIRROR")
        .envs(env.iter().copied())
        .output()
        .expect("run debian-mirror");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_debian_mirror_comes_from_the_machines_apt_sources() {
    let apt = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(apt.path().join("sources.list.d")).expect("mkdir");
    // Nothing configured: Debian's own host, said on stderr.
    assert_eq!(mirror(apt.path(), &[]), "http://deb.debian.org/debian");
    // One-line form: the security archive and disabled lines are not the mirror.
    std::fs::write(
        apt.path().join("sources.list"),
        "# deb http://old.example/debian bookworm main\n\
         deb [signed-by=/k.gpg] http://mirror.example/debian-security bookworm-security main\n\
         deb http://mirror.example/debian/ bookworm main contrib\n",
    )
    .expect("write");
    assert_eq!(mirror(apt.path(), &[]), "http://mirror.example/debian");
    // deb822 files come first; a stanza without `main` or for security is skipped.
    std::fs::write(
        apt.path().join("sources.list.d/debian.sources"),
        "Types: deb\nURIs: http://lan.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n\
         Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\nComponents: main\n\n\
         Types: deb\n# a comment\nURIs: http://lan.example/debian http://second.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
    )
    .expect("write");
    assert_eq!(mirror(apt.path(), &[]), "http://lan.example/debian");
    // The variable wins.
    assert_eq!(
        mirror(
            apt.path(),
            &[("DRBUILD_DEBIAN_MIRROR", "http://chosen.example/debian")]
        ),
        "http://chosen.example/debian"
    );
}
