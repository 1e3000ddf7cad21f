//! Every `tests/data/dockerfiles/NAME.Dockerfile` is scanned and compared with
//! `NAME.expected`: one line per image (`LINE KIND REFERENCE`), per warning
//! (`warning LINE MESSAGE`), or the error (`error LINE MESSAGE`).
//! Run with `UPDATE_EXPECTED=1` to rewrite the expectations after a deliberate change.

use std::path::{Path, PathBuf};

use docker_resilience::parse::dockerfile::{Dockerfile, ScanOptions};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/dockerfiles")
}

fn render(text: &str) -> String {
    let options = ScanOptions {
        build_args: Default::default(),
        build_platform: "linux/amd64".parse().expect("platform"),
        target_platform: "linux/amd64".parse().expect("platform"),
        ..ScanOptions::default()
    };
    let scan = Dockerfile::parse(text).and_then(|file| file.scan(&options));
    let mut out = String::new();
    match scan {
        Ok(scan) => {
            for image in &scan.images {
                out += &format!("{} {} {}\n", image.line, image.kind, image.reference);
            }
            for w in &scan.warnings {
                out += &format!("warning {} {}\n", w.line, w.message);
            }
        }
        Err(e) => out += &format!("error {} {e}\n", e.line()),
    }
    out
}

#[test]
fn dockerfile_fixtures() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixtures directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "fixtures missing: {names:?}");
    let mut failures = Vec::new();
    for path in names {
        let text = String::from_utf8(std::fs::read(&path).expect("read")).expect("utf-8");
        let got = render(&text);
        let expected_path = path.with_extension("expected");
        if std::env::var_os("UPDATE_EXPECTED").is_some() {
            std::fs::write(&expected_path, &got).expect("write");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got}",
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
