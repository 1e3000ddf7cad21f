//! `.env` files as Compose reads them: `KEY=VALUE` lines (`export ` allowed, `#`
//! comments, a ` #` comment after an unquoted value), values unquoted or
//! double-quoted interpolated in order (a variable defined earlier in the file, or in
//! the environment, which wins), single-quoted values literal, `\n` escapes in double
//! quotes.

use std::collections::BTreeMap;

use crate::parse::expand::{expand, Style};

/// The variables of a `.env` file's text, in order, each interpolated with `env` (the
/// environment, which wins) and the variables before it.
pub fn parse(text: &str, env: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            continue;
        }
        let raw = raw.trim();
        let lookup = |name: &str| {
            env.get(name).cloned().or_else(|| {
                out.iter()
                    .rev()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
        };
        let value = if let Some(inner) = raw.strip_prefix('\'') {
            // Single quotes: literal.
            inner.split('\'').next().unwrap_or(inner).to_owned()
        } else if let Some(inner) = raw.strip_prefix('"') {
            let inner = closing_quote(inner);
            let unescaped = inner
                .replace("\\n", "\n")
                .replace("\\\"", "\"")
                .replace("\\\\", "\\");
            expand(&unescaped, Style::Compose, &lookup).unwrap_or(unescaped)
        } else {
            let unquoted = match raw.find(" #") {
                Some(at) => raw[..at].trim_end(),
                None => raw,
            };
            expand(unquoted, Style::Compose, &lookup).unwrap_or_else(|_| unquoted.to_owned())
        };
        out.push((key.to_owned(), value));
    }
    out
}

/// The text up to the closing (unescaped) double quote.
fn closing_quote(text: &str) -> &str {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return &text[..i],
            _ => i += 1,
        }
    }
    text
}

/// The variables of the `.env` file at `path` (none when it does not exist).
pub(crate) fn read(
    path: &std::path::Path,
    env: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .map(|text| parse(&text, env))
        .unwrap_or_default()
}

/// `env` with the `.env` variables it does not set (the environment wins).
pub(crate) fn with_dotenv(
    env: &BTreeMap<String, String>,
    dotenv: Vec<(String, String)>,
) -> BTreeMap<String, String> {
    let mut merged = env.clone();
    for (k, v) in dotenv {
        merged.entry(k).or_insert(v);
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_interpolate_as_compose_does() {
        let env = BTreeMap::from([("FROM_ENV".to_owned(), "env".to_owned())]);
        let text = "# comment\nIMAGE_NAME=\"${IMAGE_NAME:-backend}\"\nexport TAG=1.2 # inline comment\nFULL=$IMAGE_NAME:$TAG\nLITERAL='$IMAGE_NAME'\nQUOTED=\"a \\\"b\\\" $FROM_ENV\"\nDOLLARS=a$$b\nEMPTY=\n";
        let vars = parse(text, &env);
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("IMAGE_NAME"), Some("backend"));
        assert_eq!(get("TAG"), Some("1.2"));
        assert_eq!(get("FULL"), Some("backend:1.2"));
        assert_eq!(get("LITERAL"), Some("$IMAGE_NAME"));
        assert_eq!(get("QUOTED"), Some("a \"b\" env"));
        assert_eq!(get("DOLLARS"), Some("a$b"));
        assert_eq!(get("EMPTY"), Some(""));
    }

    #[test]
    fn the_environment_wins() {
        let env = BTreeMap::from([("IMAGE_NAME".to_owned(), "from-env".to_owned())]);
        let vars = parse("IMAGE_NAME=dotenv\nREF=${IMAGE_NAME}:1\n", &env);
        let merged = with_dotenv(&env, vars);
        assert_eq!(merged["IMAGE_NAME"], "from-env");
        assert_eq!(merged["REF"], "from-env:1");
    }
}
