//! `drbuild completions` and `drbuild man`: the scripts load in their shell and
//! complete, the page renders.

use std::process::Command;

fn drbuild(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_drbuild"))
        .args(args)
        .output()
        .expect("run drbuild");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `text` written to a file `name` in a new temporary directory (kept while the
/// directory lives).
fn written(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    (dir, path)
}

/// What bash's completion offers for the words typed so far (the last one being
/// completed), with the script loaded as `source <(drbuild completions bash)` does.
fn bash_complete(script: &str, words: &[&str]) -> Vec<String> {
    let (_dir, path) = written("drbuild.bash", script);
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let line = words.join(" ");
    let program = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={}\nCOMP_LINE='{line}'\nCOMP_POINT=${{#COMP_LINE}}\n\
         _drbuild drbuild '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        path.display(),
        quoted.join(" "),
        words.len() - 1,
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .expect("run bash");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_commands_and_flags() {
    let script = drbuild(&["completions", "bash"]);
    assert_eq!(bash_complete(&script, &["drbuild", "pre"]), ["prefetch"]);
    let flags = bash_complete(&script, &["drbuild", "prefetch", "--dead"]);
    assert_eq!(flags, ["--deadline"]);
    let commands = bash_complete(&script, &["drbuild", ""]);
    for command in [
        "plan",
        "prefetch",
        "build-all",
        "export",
        "import",
        "sync",
        "doctor",
    ] {
        assert!(
            commands.iter().any(|c| c == command),
            "{command}: {commands:?}"
        );
    }
}

#[test]
fn zsh_and_fish_scripts_name_drbuild() {
    assert!(drbuild(&["completions", "zsh"]).starts_with("#compdef drbuild"));
    let fish = drbuild(&["completions", "fish"]);
    assert!(
        fish.contains("complete -c drbuild") && fish.contains("prefetch"),
        "{fish}"
    );
}

#[test]
fn the_man_page_renders() {
    let page = drbuild(&["man"]);
    assert!(page.contains(".TH drbuild 1"), "{page}");
    // Rendered where man is installed (a bare machine may have only the roff).
    if Command::new("man").arg("--version").output().is_err() {
        return;
    }
    let (_dir, path) = written("drbuild.1", &page);
    let out = Command::new("man")
        .arg("-l")
        .arg(&path)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .expect("run man");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("drbuild") && text.contains("prefetch"),
        "{text}"
    );
}

#[test]
fn version_says_the_commit_when_built_in_a_checkout() {
    let version = drbuild(&["--version"]);
    assert!(
        version.starts_with(concat!("drbuild ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let in_checkout = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .is_ok_and(|o| o.status.success());
    if in_checkout {
        assert!(version.contains("(commit "), "{version}");
    }
}
