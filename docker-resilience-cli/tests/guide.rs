//! The guide's examples run: the README's `plan` example prints exactly what the README
//! shows, and every `drbuild` command line in the README and `docs/` is one that drbuild
//! accepts (so that no page drifts from the flags).

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use docker_resilience_cli::cli::Cli;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// The README and every page of `docs/`.
fn pages() -> Vec<(PathBuf, String)> {
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).expect("read");
            (f, text)
        })
        .collect()
}

/// Each shell or terminal block of a page: its first line number and its lines.
fn blocks(text: &str) -> Vec<(usize, Vec<&str>)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, Vec<&str>)> = None;
    for (n, line) in text.lines().enumerate() {
        if let Some(lang) = line.strip_prefix("```") {
            match open.take() {
                Some(block) => out.push(block),
                None if matches!(lang, "sh" | "text" | "console" | "bash") => {
                    open = Some((n + 2, Vec::new()));
                }
                None => open = Some((0, Vec::new())),
            }
            continue;
        }
        if let Some((_, lines)) = open.as_mut() {
            lines.push(line);
        }
    }
    out.into_iter().filter(|(n, _)| *n > 0).collect()
}

/// `line` split into words as a shell would (quotes, no expansion), up to a comment
/// or a redirection.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (None, '#' | '>' | '|' | '&') if !started => break,
            (None, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(word);
    }
    out
}

#[test]
fn every_documented_command_line_parses() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for (file, text) in pages() {
        for (first, lines) in blocks(&text) {
            for (i, line) in lines.iter().enumerate() {
                let line = line.trim();
                let line = line.strip_prefix("$ ").unwrap_or(line);
                if !line.starts_with("drbuild ") {
                    continue;
                }
                let args = words(line);
                checked += 1;
                if let Err(e) = Cli::try_parse_from(&args) {
                    failures.push(format!(
                        "{}:{}: `{line}`: {}",
                        file.display(),
                        first + i,
                        e.kind()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 15, "only {checked} command lines found");
}

#[test]
fn the_readme_plan_example_prints_what_it_shows() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let command = "$ drbuild plan examples/demo-monorepo";
    let (_, lines) = blocks(&readme)
        .into_iter()
        .find(|(_, lines)| lines.first() == Some(&command))
        .expect("the README's plan example");
    let shown: Vec<&str> = lines[1..].to_vec();
    let out = Command::new(env!("CARGO_BIN_EXE_drbuild"))
        .args(["plan", "examples/demo-monorepo"])
        .current_dir(repo())
        .env("RUST_LOG", "warn")
        .env_remove("COMPOSE_PROFILES")
        .env_remove("COMPOSE_FILE")
        .output()
        .expect("run drbuild");
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    let printed: Vec<&str> = printed.lines().collect();
    assert_eq!(printed, shown);
}
