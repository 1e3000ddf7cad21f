//! The crate's shape, checked: each stage imports only what its `//! May import:` line
//! says (and `support`, which any stage may use), the stages form no cycle, and only
//! `engine/` talks to the daemon through `bollard`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read src/").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The stage a file belongs to: its top-level folder (or file stem) under `src/`.
fn stage_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).expect("under src/");
    let first = rel
        .components()
        .next()
        .expect("a component")
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The stages a file refers to as `crate::STAGE`.
fn uses(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `docker_resilience_crate::` or similar
        }
        let name: String = text[at + 7..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// The `May import:` line of a stage's module doc: the stages named in backticks;
/// `None` for "every stage".
fn declared(stage: &str) -> Option<BTreeSet<String>> {
    let dir = src().join(stage);
    let file = if dir.is_dir() {
        dir.join("mod.rs")
    } else {
        src().join(format!("{stage}.rs"))
    };
    let text = std::fs::read_to_string(&file).expect("a stage's module");
    let doc: String = text
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.trim_start_matches("//!").trim())
        .collect::<Vec<_>>()
        .join(" ");
    let (_, rest) = doc
        .split_once("May import:")
        .unwrap_or_else(|| panic!("{}: no `May import:` in its module doc", file.display()));
    if rest.trim_start().starts_with("every stage") {
        return None;
    }
    Some(
        rest.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

#[test]
fn stages_import_only_what_they_declare_and_form_no_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files(&src()) {
        let stage = stage_of(&file);
        if stage == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let entry = graph.entry(stage.clone()).or_default();
        for used in uses(&text) {
            if used != stage {
                entry.insert(used);
            }
        }
    }
    let stages: Vec<String> = graph.keys().cloned().collect();
    for stage in &stages {
        let Some(allowed) = declared(stage) else {
            continue;
        };
        for used in &graph[stage] {
            assert!(
                used == "support" || allowed.contains(used),
                "`{stage}` imports `{used}`, which its `May import:` line does not allow ({allowed:?})"
            );
        }
    }
    // No cycle: a depth-first search never meets a stage on its own path.
    fn visit(
        stage: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(stage) {
            return;
        }
        assert!(
            !path.iter().any(|s| s == stage),
            "import cycle: {} -> {stage}",
            path.join(" -> ")
        );
        path.push(stage.to_owned());
        for next in graph.get(stage).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(stage.to_owned());
    }
    let mut done = BTreeSet::new();
    for stage in &stages {
        visit(stage, &graph, &mut Vec::new(), &mut done);
    }
    assert!(stages.len() >= 10, "{stages:?}");
}

#[test]
fn only_the_engine_talks_to_bollard() {
    for file in files(&src()) {
        if stage_of(&file) == "engine" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("bollard") && !text.contains(".docker()"),
            "{} reaches the daemon outside `engine/`",
            file.display()
        );
    }
}
