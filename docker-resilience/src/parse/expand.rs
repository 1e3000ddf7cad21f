//! Variable expansion as Dockerfiles (`${X:-d}`, quotes, escapes) and compose
//! files (`${X:-d}`, `$$`) do it, plus shell-like word splitting.
//!
//! An unset variable is an error here, not an empty string: a plan must not guess.

/// How a string is expanded.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Style {
    /// Dockerfile words: quotes removed, the escape token escapes, `$` expands.
    Dockerfile { escape: char },
    /// Compose values: `$$` is a literal `$`, quotes are kept as they are.
    Compose,
}

/// Why a string could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExpandError {
    /// A variable with no value was used without a default.
    Unset(String),
    /// `${X:?message}` with `X` unset.
    Required(String, String),
    /// A modifier this scanner does not evaluate (`${X#pattern}` …).
    Unsupported(String),
    /// An unterminated `${` or quote.
    Syntax(&'static str),
}

impl std::fmt::Display for ExpandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpandError::Unset(name) => write!(f, "variable `{name}` has no value"),
            ExpandError::Required(name, msg) => write!(f, "variable `{name}` is required: {msg}"),
            ExpandError::Unsupported(expr) => write!(f, "cannot evaluate `{expr}`"),
            ExpandError::Syntax(what) => f.write_str(what),
        }
    }
}

/// Looks up a variable: `Some(value)` when it has one, `None` when unset or declared
/// without a value.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Expands `input` with `lookup`.
pub(crate) fn expand(input: &str, style: Style, lookup: Lookup<'_>) -> Result<String, ExpandError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    let (escape, quotes) = match style {
        Style::Dockerfile { escape } => (Some(escape), true),
        Style::Compose => (None, false),
    };
    let mut in_double = false;
    while i < chars.len() {
        let c = chars[i];
        if Some(c) == escape {
            match chars.get(i + 1) {
                Some(&next) if !in_double || matches!(next, '$' | '"') || Some(next) == escape => {
                    out.push(next);
                    i += 2;
                }
                _ => {
                    out.push(c);
                    i += 1;
                }
            }
            continue;
        }
        if quotes && c == '\'' && !in_double {
            let end = chars[i + 1..]
                .iter()
                .position(|&q| q == '\'')
                .ok_or(ExpandError::Syntax("unterminated single quote"))?;
            out.extend(&chars[i + 1..i + 1 + end]);
            i += end + 2;
            continue;
        }
        if quotes && c == '"' {
            in_double = !in_double;
            i += 1;
            continue;
        }
        if c == '$' {
            i += 1;
            match chars.get(i) {
                Some('$') if matches!(style, Style::Compose) => {
                    out.push('$');
                    i += 1;
                }
                Some('{') => {
                    let (text, next) = braced(&chars, i + 1, style, lookup)?;
                    out.push_str(&text);
                    i = next;
                }
                Some(&n) if n.is_ascii_alphabetic() || n == '_' => {
                    let start = i;
                    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                    let name: String = chars[start..i].iter().collect();
                    out.push_str(&lookup(&name).ok_or(ExpandError::Unset(name))?);
                }
                _ => out.push('$'),
            }
            continue;
        }
        out.push(c);
        i += 1;
    }
    if in_double {
        return Err(ExpandError::Syntax("unterminated double quote"));
    }
    Ok(out)
}

/// Expands the inside of `${…}` starting after the brace; returns the text and the
/// index after the closing brace.
fn braced(
    chars: &[char],
    start: usize,
    style: Style,
    lookup: Lookup<'_>,
) -> Result<(String, usize), ExpandError> {
    let mut i = start;
    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
        i += 1;
    }
    let name: String = chars[start..i].iter().collect();
    // Find the matching close brace, allowing nested `${…}` in the word.
    let mut depth = 1;
    let mut end = i;
    while end < chars.len() {
        match chars[end] {
            '{' if end > 0 && chars[end - 1] == '$' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
        end += 1;
    }
    if end >= chars.len() {
        return Err(ExpandError::Syntax("unterminated `${`"));
    }
    if name.is_empty() {
        return Err(ExpandError::Syntax("bad substitution"));
    }
    let modifier: String = chars[i..end].iter().collect();
    let value = lookup(&name);
    let word = |w: &str| expand(w, style, lookup);
    let text = if modifier.is_empty() {
        value.ok_or_else(|| ExpandError::Unset(name.clone()))?
    } else if let Some(w) = modifier.strip_prefix(":-") {
        match value.filter(|v| !v.is_empty()) {
            Some(v) => v,
            None => word(w)?,
        }
    } else if let Some(w) = modifier.strip_prefix(":+") {
        match value.filter(|v| !v.is_empty()) {
            Some(_) => word(w)?,
            None => String::new(),
        }
    } else if let Some(w) = modifier.strip_prefix(":?") {
        value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ExpandError::Required(name.clone(), w.to_owned()))?
    } else if let Some(w) = modifier.strip_prefix('-') {
        match value {
            Some(v) => v,
            None => word(w)?,
        }
    } else if let Some(w) = modifier.strip_prefix('+') {
        match value {
            Some(_) => word(w)?,
            None => String::new(),
        }
    } else if let Some(w) = modifier.strip_prefix('?') {
        value.ok_or_else(|| ExpandError::Required(name.clone(), w.to_owned()))?
    } else {
        return Err(ExpandError::Unsupported(format!("${{{name}{modifier}}}")));
    };
    Ok((text, end + 1))
}

/// Splits on unquoted white space, keeping quotes and escapes in each word
/// (so that [`expand`] can later remove them).
pub(crate) fn split_words(input: &str, escape: char) -> Vec<&str> {
    words(input, escape).collect()
}

/// [`split_words`] one word at a time: taking the first costs no more than reading it.
pub(crate) fn words(input: &str, escape: char) -> Words<'_> {
    Words {
        input,
        at: 0,
        escape,
    }
}

/// The iterator of [`words`].
pub(crate) struct Words<'a> {
    input: &'a str,
    at: usize,
    escape: char,
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let mut start = None;
        let mut quote: Option<char> = None;
        let mut escaped = false;
        for (i, c) in self.input[self.at..].char_indices() {
            let i = self.at + i;
            if escaped {
                escaped = false;
                continue;
            }
            if c == self.escape && quote != Some('\'') {
                escaped = true;
                start.get_or_insert(i);
                continue;
            }
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' => {
                    quote = Some(c);
                    start.get_or_insert(i);
                }
                None if c.is_whitespace() => {
                    if let Some(s) = start {
                        self.at = i;
                        return Some(&self.input[s..i]);
                    }
                }
                None => {
                    start.get_or_insert(i);
                }
            }
        }
        self.at = self.input.len();
        start.map(|s| &self.input[s..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn df(input: &str, vars: &[(&str, Option<&str>)]) -> Result<String, ExpandError> {
        let lookup = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, v)| v.map(str::to_owned))
        };
        expand(input, Style::Dockerfile { escape: '\\' }, &lookup)
    }

    #[test]
    fn dockerfile_forms() {
        let vars = [("V", Some("22.04")), ("E", Some("")), ("N", None)];
        assert_eq!(df("ubuntu:$V", &vars).unwrap(), "ubuntu:22.04");
        assert_eq!(df("ubuntu:${V}-x", &vars).unwrap(), "ubuntu:22.04-x");
        assert_eq!(df("${N:-node}:18", &vars).unwrap(), "node:18");
        assert_eq!(df("${E:-d}", &vars).unwrap(), "d");
        assert_eq!(df("${E-d}", &vars).unwrap(), "");
        assert_eq!(df("${N-d}", &vars).unwrap(), "d");
        assert_eq!(df("a${V:+-slim}", &vars).unwrap(), "a-slim");
        assert_eq!(df("a${N:+-slim}", &vars).unwrap(), "a");
        assert_eq!(df("${N:-${V}}", &vars).unwrap(), "22.04");
        assert_eq!(df("\"ubuntu:$V\"", &vars).unwrap(), "ubuntu:22.04");
        assert_eq!(df("'ubuntu:$V'", &vars).unwrap(), "ubuntu:$V");
        assert_eq!(df("\\$V", &vars).unwrap(), "$V");
        assert_eq!(df("$N", &vars), Err(ExpandError::Unset("N".into())));
        assert_eq!(
            df("$MISSING", &vars),
            Err(ExpandError::Unset("MISSING".into()))
        );
        assert!(matches!(
            df("${N:?need it}", &vars),
            Err(ExpandError::Required(..))
        ));
        assert!(matches!(
            df("${V#22}", &vars),
            Err(ExpandError::Unsupported(_))
        ));
        assert!(matches!(df("${V", &vars), Err(ExpandError::Syntax(_))));
        assert_eq!(df("a$", &vars).unwrap(), "a$");
    }

    #[test]
    fn compose_forms() {
        let lookup = |name: &str| (name == "TAG").then(|| "v1".to_owned());
        assert_eq!(
            expand("app:${TAG}", Style::Compose, &lookup).unwrap(),
            "app:v1"
        );
        assert_eq!(expand("a$$b", Style::Compose, &lookup).unwrap(), "a$b");
        assert_eq!(
            expand("${REG:-docker.io}/x", Style::Compose, &lookup).unwrap(),
            "docker.io/x"
        );
    }

    #[test]
    fn words() {
        assert_eq!(
            split_words(r#"--from=a "b c" d\ e  'f g'"#, '\\'),
            vec!["--from=a", "\"b c\"", "d\\ e", "'f g'"]
        );
        assert_eq!(split_words("  ", '\\'), Vec::<&str>::new());
    }
}
