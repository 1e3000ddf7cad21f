//! Parse: input text to types, with no I/O beyond reading the files named. Dockerfiles
//! (BuildKit's syntax), variable expansion, compose projects, `.dockerignore` rules
//! and the daemon's `daemon.json`.
//!
//! May import: `vocab`.

pub mod compose;
pub mod daemon_json;
pub mod dockerfile;
pub mod dockerignore;
pub(crate) mod expand;

use std::path::Path;

use crate::vocab::InputError;

/// Reads YAML into `T`; an empty file is `T::default()`. Errors are `path:line:
/// invalid WHAT: the parser's first line`.
pub(crate) fn yaml<T>(path: &Path, text: &str, what: &str) -> Result<T, InputError>
where
    T: serde::de::DeserializeOwned + Default,
{
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_saphyr::from_str(text).map_err(|e| InputError::Invalid {
        path: path.to_path_buf(),
        line: e.location().map_or(0, |l| l.line() as usize),
        message: format!("invalid {what}: {}", yaml_message(&e)),
    })
}

/// The parser's message without its snippet and position (reported as `path:line`).
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let mut first = text.lines().next().unwrap_or("invalid YAML").trim();
    first = first.strip_prefix("error:").unwrap_or(first).trim_start();
    if first.starts_with("line ") {
        if let Some((_, rest)) = first.split_once(": ") {
            first = rest;
        }
    }
    first
        .split_once(" at line ")
        .map_or(first, |(head, _)| head)
        .trim_end_matches(':')
        .trim()
        .to_owned()
}
