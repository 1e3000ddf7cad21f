//! `.dockerignore` rules, as Docker applies them to a build context.
//!
//! Docker's rules (moby `patternmatcher`), not `.gitignore`'s: patterns are relative to
//! the context root (a leading `/` is dropped, paths are cleaned), `*` and `?` stay
//! inside one path segment, `**` spans any number of segments, a pattern that matches a
//! directory excludes everything under it, and `!pattern` re-includes; the last pattern
//! that matches decides. Lines starting with `#` are comments.

use std::path::Path;

use globset::{GlobBuilder, GlobMatcher};

/// An invalid `.dockerignore` pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid .dockerignore pattern `{pattern}` on line {line}: {message}")]
#[non_exhaustive]
pub struct DockerignoreError {
    /// The pattern as written.
    pub pattern: String,
    /// Its line in the file (1-based).
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

#[derive(Debug, Clone)]
struct Pattern {
    matcher: GlobMatcher,
    exclusion: bool,
    /// The pattern has no wildcard: a prefix test is enough to prune a directory.
    has_wildcard: bool,
}

/// The rules of one `.dockerignore` file.
#[derive(Debug, Clone, Default)]
pub struct Dockerignore {
    patterns: Vec<Pattern>,
}

impl Dockerignore {
    /// Reads `DIR/.dockerignore`; no file means nothing is ignored.
    pub fn for_context(dir: &Path) -> Result<Self, DockerignoreError> {
        match std::fs::read_to_string(dir.join(".dockerignore")) {
            Ok(text) => Self::parse(&text),
            Err(_) => Ok(Self::default()),
        }
    }

    /// Parses the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<Self, DockerignoreError> {
        let mut patterns = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exclusion, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let cleaned = clean(body);
            if cleaned.is_empty() {
                continue;
            }
            let matcher = GlobBuilder::new(&cleaned)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| DockerignoreError {
                    pattern: raw.trim().to_owned(),
                    line: i + 1,
                    message: e.kind().to_string(),
                })?
                .compile_matcher();
            patterns.push(Pattern {
                matcher,
                exclusion,
                has_wildcard: cleaned.contains(['*', '?', '[', '\\']),
            });
        }
        Ok(Dockerignore { patterns })
    }

    /// Whether the file or directory at `path` (relative to the context, `/`-separated)
    /// is excluded from the context.
    pub fn is_excluded(&self, path: &str) -> bool {
        let mut matched = false;
        for pattern in &self.patterns {
            // Only a pattern that could change the answer is tried (as Docker does).
            if pattern.exclusion != matched {
                continue;
            }
            if matches_or_parent_matches(&pattern.matcher, path) {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// Whether a walk may skip the excluded directory `path` entirely: no `!` pattern
    /// could re-include something under it.
    pub fn can_skip_dir(&self, path: &str) -> bool {
        self.is_excluded(path)
            && !self
                .patterns
                .iter()
                .any(|p| p.exclusion && (p.has_wildcard || could_be_under(p, path)))
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

fn could_be_under(pattern: &Pattern, dir: &str) -> bool {
    let glob = pattern.matcher.glob().glob();
    glob == dir || glob.starts_with(&format!("{dir}/"))
}

fn matches_or_parent_matches(matcher: &GlobMatcher, path: &str) -> bool {
    if matcher.is_match(path) {
        return true;
    }
    path.match_indices('/')
        .any(|(i, _)| matcher.is_match(&path[..i]))
}

/// Go's `filepath.Clean` for a relative pattern, with the leading `/` dropped.
fn clean(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Dockerignore {
        Dockerignore::parse(text).unwrap()
    }

    #[test]
    fn directory_pattern_excludes_its_contents() {
        let d = rules("node_modules\n/target/\n");
        assert!(d.is_excluded("node_modules"));
        assert!(d.is_excluded("node_modules/a/b.js"));
        assert!(d.is_excluded("target/debug/x"));
        // Unlike .gitignore, a bare name matches at the context root only.
        assert!(!d.is_excluded("web/node_modules/x"));
        assert!(d.can_skip_dir("node_modules"));
    }

    #[test]
    fn star_stays_in_one_segment_and_double_star_spans() {
        let d = rules("*.log\n**/*.tmp\ndocs/*/draft\n");
        assert!(d.is_excluded("a.log"));
        assert!(!d.is_excluded("sub/a.log"));
        assert!(d.is_excluded("x.tmp"));
        assert!(d.is_excluded("a/b/c/x.tmp"));
        assert!(d.is_excluded("docs/v1/draft/page.md"));
        assert!(!d.is_excluded("docs/v1/v2/draft"));
    }

    #[test]
    fn exceptions_and_last_match_wins() {
        let d = rules("# comment\n*.md\n!README.md\nbuild\n!build/keep\n");
        assert!(d.is_excluded("CHANGES.md"));
        assert!(!d.is_excluded("README.md"));
        assert!(d.is_excluded("build/a.o"));
        assert!(!d.is_excluded("build/keep"));
        assert!(!d.can_skip_dir("build"), "an exception lives under build/");
        let d = rules("!README.md\n*.md\n");
        assert!(d.is_excluded("README.md"), "the later pattern wins");
    }

    #[test]
    fn patterns_are_cleaned() {
        let d = rules("./a/../b/\n/c//d\n");
        assert!(d.is_excluded("b/x"));
        assert!(d.is_excluded("c/d"));
        assert!(!d.is_excluded("a"));
    }

    #[test]
    fn invalid_pattern_names_its_line() {
        let e = Dockerignore::parse("ok\n[z-a\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains("`[z-a`"), "{e}");
    }
}
