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

/// Variable expansion as Compose (`compose`) or a Dockerfile does it, with `lookup`
/// for values: the entry point of the fuzz target `expand` (not a stable API).
#[doc(hidden)]
pub fn fuzz_expand(
    text: &str,
    compose: bool,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let style = if compose {
        expand::Style::Compose
    } else {
        expand::Style::Dockerfile { escape: '\\' }
    };
    expand::expand(text, style, lookup).ok()
}

/// Reads YAML into `T`; an empty file is `T::default()`. Errors are `path:line:
/// invalid WHAT: the parser's first line`.
pub(crate) fn yaml<T>(path: &Path, text: &str, what: &str) -> Result<T, InputError>
where
    T: serde::de::DeserializeOwned + Default,
{
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    yaml_within(path, text, what, MAX_REPLAYED_EVENTS)
}

fn yaml_within<T>(path: &Path, text: &str, what: &str, replayed: usize) -> Result<T, InputError>
where
    T: serde::de::DeserializeOwned + Default,
{
    serde_saphyr::from_str_with_options(text, yaml_options(replayed)).map_err(|e| {
        InputError::Invalid {
            path: path.to_path_buf(),
            line: e.location().map_or(0, |l| l.line() as usize),
            message: format!("invalid {what}: {}", yaml_message(&e)),
        }
    })
}

/// Events aliases may replay in one file. Real compose files reuse `x-` anchors
/// heavily (`tests/data/compose/aliases`: 10 anchors used 160 times, the shape of the
/// large projects' files) and must load: that file replays between 4,096 and 8,192
/// events, so the bound leaves 25 times as much. A billion-laughs file, which asks for
/// 10^9 replayed events, stops at it in well under a second (both tested below).
pub(crate) const MAX_REPLAYED_EVENTS: usize = 200_000;

/// The YAML budget: no alias/anchor ratio rule (real files break it: many uses of few
/// `x-` anchors), absolute bounds on replayed events, nodes and depth instead.
fn yaml_options(replayed: usize) -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    if let Some(budget) = options.budget.as_mut() {
        budget.enforce_alias_anchor_ratio = false;
    }
    options.alias_limits.max_total_replayed_events = replayed;
    options
}

/// The parser's message without its snippet and position (reported as `path:line`).
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    if text.contains("alias replay limit") {
        return format!(
            "its aliases expand to more than {MAX_REPLAYED_EVENTS} YAML nodes (a billion-laughs file?)"
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Default, Debug)]
    struct Any {
        #[serde(flatten)]
        _rest: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
    }

    #[test]
    fn many_aliases_of_few_anchors_load() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/compose/aliases/compose.yaml"
        ));
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            text.matches('*').count() >= 150,
            "the fixture has 150+ aliases"
        );
        yaml::<Any>(path, &text, "compose file").unwrap();
        // The bound is sized from what this file needs: at least 20 times as much.
        let needed = (6..24)
            .map(|bits| 1usize << bits)
            .find(|&limit| yaml_within::<Any>(path, &text, "compose file", limit).is_ok())
            .unwrap();
        assert!(
            MAX_REPLAYED_EVENTS >= 20 * needed,
            "the file needs up to {needed}"
        );
        assert!(
            needed > 1000,
            "the fixture replays {needed} events, not a toy"
        );
    }

    #[test]
    fn billion_laughs_is_refused_quickly() {
        let mut text = String::from("a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(",");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let started = std::time::Instant::now();
        let err = yaml::<Any>(Path::new("laughs.yaml"), &text, "compose file").unwrap_err();
        // Well under a second in a release build (measured); the bound here only catches
        // an exponential blow-up, with room for a debug build on a loaded machine.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let message = err.to_string();
        assert!(message.starts_with("laughs.yaml:"), "{message}");
        assert!(message.contains("invalid compose file"), "{message}");
    }
}
