//! Text to instructions: directives, continuations, flags and heredocs.

use std::borrow::Cow;

use super::{Dockerfile, DockerfileError, Flag, Heredoc, Instruction, SyntaxDirective};
use crate::parse::expand::words;

/// Instructions whose arguments may open heredocs (BuildKit's list).
const HEREDOC_INSTRUCTIONS: [&str; 3] = ["RUN", "COPY", "ADD"];

pub(super) struct Parser<'a> {
    lines: Vec<&'a str>,
    escape: char,
}

impl<'a> Parser<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines: Vec<&str> = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect();
        if text.ends_with('\n') {
            lines.pop();
        }
        Parser {
            lines,
            escape: '\\',
        }
    }

    pub(super) fn parse(mut self) -> Result<Dockerfile, DockerfileError> {
        let (syntax, mut i) = self.directives()?;
        let mut instructions = Vec::new();
        while i < self.lines.len() {
            let trimmed = self.lines[i].trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                i += 1;
                continue;
            }
            let start = i;
            let (logical, next) = self.logical_line(i);
            i = next;
            let logical = logical.trim();
            let (keyword, rest) = match logical.find(char::is_whitespace) {
                Some(at) => (&logical[..at], logical[at..].trim_start()),
                None => (logical, ""),
            };
            let keyword = keyword.to_ascii_uppercase();
            let (flags, arguments) = self.flags(rest, start + 1)?;
            let mut heredocs = Vec::new();
            if HEREDOC_INSTRUCTIONS.contains(&keyword.as_str())
                && !arguments.starts_with('[')
                && arguments.contains("<<")
            {
                for (delimiter, strip_tabs) in heredoc_markers(&arguments, self.escape) {
                    let (body, next) =
                        self.heredoc_body(i, &delimiter, strip_tabs)
                            .ok_or_else(|| DockerfileError::UnterminatedHeredoc {
                                line: start + 1,
                                delimiter: delimiter.clone(),
                            })?;
                    i = next;
                    heredocs.push(Heredoc {
                        delimiter,
                        strip_tabs,
                        body,
                    });
                }
            }
            instructions.push(Instruction {
                line: start + 1,
                keyword,
                flags,
                arguments,
                heredocs,
            });
        }
        Ok(Dockerfile {
            syntax,
            escape: self.escape,
            instructions,
        })
    }

    /// Parser directives: `# name=value` lines at the very top. The first line that
    /// is not a known directive ends them (BuildKit's rule).
    fn directives(&mut self) -> Result<(Option<SyntaxDirective>, usize), DockerfileError> {
        let mut syntax = None;
        let mut seen: Vec<String> = Vec::new();
        let mut i = 0;
        while i < self.lines.len() {
            let Some((name, value)) = directive(self.lines[i]) else {
                break;
            };
            let name = name.to_ascii_lowercase();
            if !matches!(name.as_str(), "syntax" | "escape" | "check") {
                break;
            }
            if seen.contains(&name) {
                return Err(DockerfileError::Directive {
                    line: i + 1,
                    message: format!("only one `{name}` parser directive can be used"),
                });
            }
            match name.as_str() {
                "escape" => {
                    self.escape = match value {
                        "\\" => '\\',
                        "`" => '`',
                        other => {
                            return Err(DockerfileError::Directive {
                                line: i + 1,
                                message: format!("invalid escape token `{other}`: must be ` or \\"),
                            })
                        }
                    }
                }
                "syntax" => {
                    syntax = Some(SyntaxDirective {
                        image: value.to_owned(),
                        line: i + 1,
                    })
                }
                _ => {}
            }
            seen.push(name);
            i += 1;
        }
        Ok((syntax, i))
    }

    /// Joins a line and its continuations; comment and blank lines inside a
    /// continuation are skipped. Returns the joined text (borrowed when it is one line)
    /// and the next line index.
    fn logical_line(&self, i: usize) -> (Cow<'a, str>, usize) {
        let line = self.lines[i].trim_end_matches([' ', '\t']);
        if !line.ends_with(self.escape) {
            return (Cow::Borrowed(line), i + 1);
        }
        let (joined, next) = self.joined_line(i);
        (Cow::Owned(joined), next)
    }

    fn joined_line(&self, mut i: usize) -> (String, usize) {
        let mut out = String::new();
        loop {
            let line = self.lines[i].trim_end_matches([' ', '\t']);
            i += 1;
            match line.strip_suffix(self.escape) {
                Some(head) => {
                    out.push_str(head);
                    while i < self.lines.len() {
                        let t = self.lines[i].trim_start();
                        if t.is_empty() || t.starts_with('#') {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    if i >= self.lines.len() {
                        return (out, i);
                    }
                }
                None => {
                    out.push_str(line);
                    return (out, i);
                }
            }
        }
    }

    fn heredoc_body(
        &self,
        mut i: usize,
        delimiter: &str,
        strip_tabs: bool,
    ) -> Option<(String, usize)> {
        let mut body = Vec::new();
        while i < self.lines.len() {
            let line = self.lines[i];
            let line = if strip_tabs {
                line.trim_start_matches('\t')
            } else {
                line
            };
            i += 1;
            if line == delimiter {
                return Some((body.join("\n"), i));
            }
            body.push(line);
        }
        None
    }

    /// Splits leading `--name=value` flags from the arguments.
    fn flags(&self, rest: &str, line: usize) -> Result<(Vec<Flag>, String), DockerfileError> {
        let mut flags = Vec::new();
        let mut remaining = rest;
        loop {
            let t = remaining.trim_start();
            if !t.starts_with("--") {
                return Ok((flags, t.to_owned()));
            }
            let word = words(t, self.escape).next().unwrap_or("");
            if word == "--" {
                return Ok((flags, t[2..].trim_start().to_owned()));
            }
            let body = &word[2..];
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, v),
                None => (body, ""),
            };
            if name.is_empty() {
                return Err(DockerfileError::Malformed {
                    line,
                    message: format!("invalid flag `{word}`"),
                });
            }
            flags.push(Flag {
                name: name.to_ascii_lowercase(),
                value: value.to_owned(),
            });
            remaining = &t[word.len()..];
        }
    }
}

/// `# name=value` at the start of a line.
fn directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    let name = &rest[..end];
    if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let value = rest[end..].trim_start().strip_prefix('=')?.trim();
    if value.is_empty() {
        return None;
    }
    Some((name, value))
}

/// Heredoc markers in an instruction's arguments: unquoted words starting with
/// `<<` (not `<<<`). The delimiter may be quoted.
fn heredoc_markers(arguments: &str, escape: char) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for word in words(arguments, escape) {
        // A marker may be glued to a redirection (`<<EOF>file`): look inside the word.
        let Some(at) = word.find("<<") else { continue };
        if word[..at].contains(['"', '\'']) {
            continue;
        }
        let rest = &word[at + 2..];
        if rest.starts_with('<') {
            continue;
        }
        let (strip_tabs, rest) = match rest.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let name: String = rest
            .chars()
            .filter(|c| *c != '"' && *c != '\'')
            .take_while(|c| !matches!(c, '>' | '<' | '|' | ';' | '&' | ')'))
            .collect();
        if !name.is_empty() {
            out.push((name, strip_tabs));
        }
    }
    out
}
