//! A small Dockerfile scanner that follows BuildKit's syntax: parser directives,
//! the escape token, line continuations (with comment and blank lines inside),
//! heredocs, CRLF, instructions in any case, and `ARG` scoping.
//!
//! It does not build anything; it finds the instructions and the external images
//! they need.

use std::collections::BTreeMap;

use crate::expand::{expand, split_words, ExpandError, Style};
use crate::plan::SourceKind;
use crate::platform::Platform;
use crate::reference::{ImageReference, ReferenceError};

/// Instructions whose arguments may open heredocs (BuildKit's list).
const HEREDOC_INSTRUCTIONS: [&str; 3] = ["RUN", "COPY", "ADD"];

/// A Dockerfile that cannot be read, with the line where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DockerfileError {
    /// A heredoc (`<<EOF`) whose terminator never comes.
    #[error(
        "unterminated heredoc `<<{delimiter}`: no line `{delimiter}` before the end of the file"
    )]
    UnterminatedHeredoc {
        /// Line of the instruction that opens it.
        line: usize,
        /// The delimiter word.
        delimiter: String,
    },
    /// `FROM` with no image.
    #[error("`FROM` requires an image")]
    MissingImage {
        /// Line of the `FROM`.
        line: usize,
    },
    /// An instruction that is malformed (`FROM a b`, a flag with no value, …).
    #[error("{message}")]
    Malformed {
        /// Line of the instruction.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A parser directive with a bad value or given twice.
    #[error("{message}")]
    Directive {
        /// Line of the directive.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An image reference that Docker would reject.
    #[error("{source}")]
    InvalidReference {
        /// Line of the instruction that names it.
        line: usize,
        /// Why it is invalid.
        source: ReferenceError,
    },
}

impl DockerfileError {
    /// The 1-based line the error points at.
    pub fn line(&self) -> usize {
        match self {
            DockerfileError::UnterminatedHeredoc { line, .. }
            | DockerfileError::MissingImage { line }
            | DockerfileError::Malformed { line, .. }
            | DockerfileError::Directive { line, .. }
            | DockerfileError::InvalidReference { line, .. } => *line,
        }
    }
}

/// A `--name=value` flag of an instruction, as written (not yet expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// The flag's name without dashes (`from`, `mount`, `platform`).
    pub name: String,
    /// The value as written, quotes included.
    pub value: String,
}

/// A heredoc opened by an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word (`EOF`).
    pub delimiter: String,
    /// Whether leading tabs are stripped (`<<-EOF`).
    pub strip_tabs: bool,
    /// The body, lines joined with `\n` (tabs already stripped for `<<-`).
    pub body: String,
}

/// One instruction with its continuation lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where the instruction starts.
    pub line: usize,
    /// The keyword, upper-cased (`FROM`, `RUN`, …).
    pub keyword: String,
    /// Leading `--name=value` flags.
    pub flags: Vec<Flag>,
    /// Everything after the keyword and flags, as written.
    pub arguments: String,
    /// Heredocs the instruction opens, in order.
    pub heredocs: Vec<Heredoc>,
}

impl Instruction {
    fn flag_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.flags
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value.as_str())
    }
}

/// The `# syntax=` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxDirective {
    /// The frontend image as written.
    pub image: String,
    /// Its line.
    pub line: usize,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    syntax: Option<SyntaxDirective>,
    escape: char,
    instructions: Vec<Instruction>,
}

/// Inputs that change which images a Dockerfile needs.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Build args (`--build-arg`, compose `args:`) overriding `ARG` defaults.
    pub build_args: BTreeMap<String, String>,
    /// The platform of the builder (`BUILDPLATFORM`…). Defaults to the host.
    pub build_platform: Platform,
    /// The platform built for (`TARGETPLATFORM`…). Defaults to the host.
    pub target_platform: Platform,
}

/// An external image a Dockerfile needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUse {
    /// 1-based line that names it.
    pub line: usize,
    /// What names it.
    pub kind: SourceKind,
    /// The normalized reference.
    pub reference: ImageReference,
}

/// A build stage (`FROM … AS name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Lower-cased stage name, if it has one.
    pub name: Option<String>,
    /// Line of its `FROM`.
    pub line: usize,
    /// Base image of the stage after expansion (`scratch`, an image or an earlier stage).
    pub base: Option<String>,
}

/// Something a scan could not determine, pointing at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanWarning {
    /// 1-based line.
    pub line: usize,
    /// What could not be determined.
    pub message: String,
}

/// What [`Dockerfile::scan`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageScan {
    /// External images, in file order (not deduplicated).
    pub images: Vec<ImageUse>,
    /// The build stages in order.
    pub stages: Vec<Stage>,
    /// References that could not be resolved (an `ARG` with no value…).
    pub warnings: Vec<ScanWarning>,
}

impl Dockerfile {
    /// Parses a Dockerfile's text.
    pub fn parse(text: &str) -> Result<Self, DockerfileError> {
        Parser::new(text).parse()
    }

    /// The `# syntax=` frontend, if the file names one.
    pub fn syntax(&self) -> Option<&SyntaxDirective> {
        self.syntax.as_ref()
    }

    /// The escape token (`\` unless `# escape=` says otherwise).
    pub fn escape(&self) -> char {
        self.escape
    }

    /// The instructions, in order, comments and heredoc bodies left out.
    pub fn instructions(&self) -> &[Instruction] {
        &self.instructions
    }

    /// Finds every external image: `# syntax=`, `FROM` (not `scratch` nor an earlier
    /// stage), `COPY --from=` and `RUN --mount=…,from=` naming an image.
    pub fn scan(&self, options: &ScanOptions) -> Result<ImageScan, DockerfileError> {
        Scanner::new(self, options).run()
    }
}

struct Parser<'a> {
    lines: Vec<&'a str>,
    escape: char,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
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

    fn parse(mut self) -> Result<Dockerfile, DockerfileError> {
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
            if HEREDOC_INSTRUCTIONS.contains(&keyword.as_str()) && !arguments.starts_with('[') {
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
    /// continuation are skipped. Returns the joined text and the next line index.
    fn logical_line(&self, mut i: usize) -> (String, usize) {
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
            let word = split_words(t, self.escape).into_iter().next().unwrap_or("");
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
    for word in split_words(arguments, escape) {
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

/// Variables in scope: `Some(v)` with a value, `None` declared without one.
type Scope = BTreeMap<String, Option<String>>;

struct Scanner<'a> {
    file: &'a Dockerfile,
    options: &'a ScanOptions,
    style: Style,
    /// Global (meta) args: declared before the first `FROM`, plus the automatic ones.
    global: Scope,
    stage_scope: Scope,
    out: ImageScan,
}

impl<'a> Scanner<'a> {
    fn new(file: &'a Dockerfile, options: &'a ScanOptions) -> Self {
        let mut global = Scope::new();
        for (k, v) in options
            .build_platform
            .args("BUILD")
            .into_iter()
            .chain(options.target_platform.args("TARGET"))
        {
            global.insert(k, Some(v));
        }
        Scanner {
            file,
            options,
            style: Style::Dockerfile {
                escape: file.escape,
            },
            global,
            stage_scope: Scope::new(),
            out: ImageScan::default(),
        }
    }

    fn run(mut self) -> Result<ImageScan, DockerfileError> {
        if let Some(syntax) = &self.file.syntax {
            self.external(syntax.line, SourceKind::Syntax, &syntax.image)?;
        }
        for ins in &self.file.instructions {
            match ins.keyword.as_str() {
                "ARG" => self.arg(ins),
                "ENV" if !self.out.stages.is_empty() => self.env(ins),
                "FROM" => self.from(ins)?,
                "COPY" | "ADD" if !self.out.stages.is_empty() => {
                    for value in ins.flag_values("from") {
                        self.stage_or_image(ins.line, SourceKind::CopyFrom, value)?;
                    }
                }
                "RUN" if !self.out.stages.is_empty() => {
                    for mount in ins.flag_values("mount") {
                        if let Some(from) = mount_from(mount) {
                            self.stage_or_image(ins.line, SourceKind::MountFrom, &from)?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(self.out)
    }

    fn lookup(&self, scope: &Scope, name: &str) -> Option<String> {
        scope.get(name).cloned().flatten()
    }

    fn expand_in(&self, scope: &Scope, text: &str) -> Result<String, ExpandError> {
        if !text.contains('$') && !text.contains(['"', '\'', self.file.escape]) {
            return Ok(text.to_owned());
        }
        expand(text, self.style, &|name| self.lookup(scope, name))
    }

    fn arg(&mut self, ins: &Instruction) {
        let in_stage = !self.out.stages.is_empty();
        for word in split_words(&ins.arguments, self.file.escape) {
            let (name, default) = match word.split_once('=') {
                Some((n, d)) => (n.to_owned(), Some(d)),
                None => (word.to_owned(), None),
            };
            let value = if let Some(v) = self.options.build_args.get(&name) {
                Some(v.clone())
            } else if let Some(default) = default {
                let scope = if in_stage {
                    &self.stage_scope
                } else {
                    &self.global
                };
                self.expand_in(scope, default).ok()
            } else if in_stage {
                // `ARG X` in a stage brings in the global value (and the automatic ones).
                self.lookup(&self.global, &name)
            } else {
                self.global.get(&name).cloned().flatten()
            };
            if in_stage {
                self.stage_scope.insert(name, value);
            } else {
                self.global.insert(name, value);
            }
        }
    }

    fn env(&mut self, ins: &Instruction) {
        let words = split_words(&ins.arguments, self.file.escape);
        let pairs: Vec<(String, String)> = if words.first().is_some_and(|w| w.contains('=')) {
            words
                .iter()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        } else {
            match ins.arguments.split_once(char::is_whitespace) {
                Some((k, v)) => vec![(k.to_owned(), v.trim().to_owned())],
                None => Vec::new(),
            }
        };
        for (k, v) in pairs {
            let value = self.expand_in(&self.stage_scope, &v).ok();
            self.stage_scope.insert(k, value);
        }
    }

    fn from(&mut self, ins: &Instruction) -> Result<(), DockerfileError> {
        let words = split_words(&ins.arguments, self.file.escape);
        let (image, name) = match words.as_slice() {
            [] => return Err(DockerfileError::MissingImage { line: ins.line }),
            [image] => (*image, None),
            [image, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => (*image, Some(*name)),
            _ => {
                return Err(DockerfileError::Malformed {
                    line: ins.line,
                    message: "`FROM` takes `IMAGE [AS NAME]`".to_owned(),
                })
            }
        };
        let base = match self.expand_in(&self.global, image) {
            Ok(base) if base.is_empty() => {
                return Err(DockerfileError::MissingImage { line: ins.line })
            }
            Ok(base) => {
                let lower = base.to_ascii_lowercase();
                if lower != "scratch" && !self.is_stage(&lower) {
                    self.reference(ins.line, SourceKind::From, &base)?;
                }
                Some(base)
            }
            Err(e) => {
                self.unresolved(ins.line, image, &e);
                None
            }
        };
        self.out.stages.push(Stage {
            name: name.map(str::to_ascii_lowercase),
            line: ins.line,
            base,
        });
        self.stage_scope = Scope::new();
        Ok(())
    }

    fn is_stage(&self, name: &str) -> bool {
        self.out.stages.iter().any(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
    }

    /// `--from=` names a stage (by name or index) or an image.
    fn stage_or_image(
        &mut self,
        line: usize,
        kind: SourceKind,
        value: &str,
    ) -> Result<(), DockerfileError> {
        // Inside a stage only what the stage declares is visible (global args must be
        // re-declared with `ARG NAME`), as in BuildKit.
        match self.expand_in(&self.stage_scope, value) {
            Ok(v) if v.is_empty() => Err(DockerfileError::Malformed {
                line,
                message: "`--from` needs a stage or an image".to_owned(),
            }),
            Ok(v) => {
                let is_index = v.parse::<usize>().is_ok();
                if is_index || self.is_stage(&v) {
                    Ok(())
                } else {
                    self.reference(line, kind, &v)
                }
            }
            Err(e) => {
                self.unresolved(line, value, &e);
                Ok(())
            }
        }
    }

    fn external(
        &mut self,
        line: usize,
        kind: SourceKind,
        written: &str,
    ) -> Result<(), DockerfileError> {
        match self.expand_in(&self.global, written) {
            Ok(v) => self.reference(line, kind, &v),
            Err(e) => {
                self.unresolved(line, written, &e);
                Ok(())
            }
        }
    }

    fn reference(
        &mut self,
        line: usize,
        kind: SourceKind,
        text: &str,
    ) -> Result<(), DockerfileError> {
        let reference = ImageReference::parse(text)
            .map_err(|source| DockerfileError::InvalidReference { line, source })?;
        self.out.images.push(ImageUse {
            line,
            kind,
            reference,
        });
        Ok(())
    }

    fn unresolved(&mut self, line: usize, written: &str, error: &ExpandError) {
        self.out.warnings.push(ScanWarning {
            line,
            message: format!("cannot resolve image `{written}`: {error}"),
        });
    }
}

/// The `from=` field of a `--mount` value (comma-separated, fields may be quoted).
fn mount_from(mount: &str) -> Option<String> {
    let mount = mount.trim_matches('"');
    mount.split(',').find_map(|field| {
        let (k, v) = field.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("from")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> ImageScan {
        scan_with(text, &[])
    }

    fn scan_with(text: &str, args: &[(&str, &str)]) -> ImageScan {
        let options = ScanOptions {
            build_args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            build_platform: "linux/amd64".parse().unwrap(),
            target_platform: "linux/arm64".parse().unwrap(),
        };
        Dockerfile::parse(text).unwrap().scan(&options).unwrap()
    }

    fn images(scan: &ImageScan) -> Vec<(usize, SourceKind, String)> {
        scan.images
            .iter()
            .map(|u| (u.line, u.kind, u.reference.to_string()))
            .collect()
    }

    #[test]
    fn from_with_args_and_stages() {
        let s = scan(
            "ARG GO=1.21\nARG BASE\nFROM golang:${GO}-alpine AS Build\nRUN go build\n\
             from BUILD as again\nFROM scratch\nCOPY --from=build /x /x\nCOPY --from=0 /y /y\n",
        );
        assert_eq!(
            images(&s),
            vec![(
                3,
                SourceKind::From,
                "docker.io/library/golang:1.21-alpine".into()
            )]
        );
        assert_eq!(s.stages.len(), 3);
        assert_eq!(s.stages[0].name.as_deref(), Some("build"));
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn build_args_override_defaults() {
        let s = scan_with("ARG V=20.04\nFROM ubuntu:$V\n", &[("V", "22.04")]);
        assert_eq!(images(&s)[0].2, "docker.io/library/ubuntu:22.04");
    }

    #[test]
    fn unresolved_arg_is_a_warning() {
        let s = scan("ARG BASE\nFROM $BASE\nFROM ${NOPE:-alpine}\n");
        assert_eq!(
            images(&s),
            vec![(
                3,
                SourceKind::From,
                "docker.io/library/alpine:latest".into()
            )]
        );
        assert_eq!(s.warnings.len(), 1);
        assert_eq!(s.warnings[0].line, 2);
        assert!(
            s.warnings[0].message.contains("`BASE` has no value"),
            "{:?}",
            s.warnings
        );
    }

    #[test]
    fn automatic_platform_args() {
        let s =
            scan("FROM --platform=$BUILDPLATFORM golang:1.21 AS b\nFROM alpine:3-${TARGETARCH}\n");
        assert_eq!(images(&s)[1].2, "docker.io/library/alpine:3-arm64");
    }

    #[test]
    fn copy_and_mount_from_images() {
        let s = scan(
            "FROM alpine AS base\n\
             COPY --from=nginx:stable /etc/nginx /etc/nginx\n\
             COPY --chown=1:1 --from=base /a /b\n\
             RUN --mount=type=cache,target=/root/.cache \\\n    --mount=type=bind,from=busybox:1.36,source=/bin,target=/b true\n\
             RUN --mount=from=base,target=/x true\n",
        );
        assert_eq!(
            images(&s),
            vec![
                (
                    1,
                    SourceKind::From,
                    "docker.io/library/alpine:latest".into()
                ),
                (
                    2,
                    SourceKind::CopyFrom,
                    "docker.io/library/nginx:stable".into()
                ),
                (
                    4,
                    SourceKind::MountFrom,
                    "docker.io/library/busybox:1.36".into()
                ),
            ]
        );
    }

    #[test]
    fn stage_args_for_copy_from() {
        let s = scan(
            "ARG TOOLS=busybox:1.36\nFROM alpine\nARG TOOLS\nCOPY --from=$TOOLS /bin/sh /sh\n",
        );
        assert_eq!(images(&s)[1].2, "docker.io/library/busybox:1.36");
    }

    #[test]
    fn syntax_and_escape_directives() {
        let s = scan("# syntax=docker/dockerfile:1.4\n# escape=`\nFROM mcr.microsoft.com/windows/servercore:ltsc2022 `\n  AS w\n");
        assert_eq!(
            images(&s),
            vec![
                (
                    1,
                    SourceKind::Syntax,
                    "docker.io/docker/dockerfile:1.4".into()
                ),
                (
                    3,
                    SourceKind::From,
                    "mcr.microsoft.com/windows/servercore:ltsc2022".into()
                ),
            ]
        );
        // A directive after a comment is just a comment.
        let s = scan("# hello\n# syntax=docker/dockerfile:1\nFROM alpine\n");
        assert_eq!(images(&s).len(), 1);
    }

    #[test]
    fn duplicate_or_bad_directive() {
        assert!(matches!(
            Dockerfile::parse("# escape=x\nFROM a\n"),
            Err(DockerfileError::Directive { line: 1, .. })
        ));
        assert!(matches!(
            Dockerfile::parse("# syntax=a\n# syntax=b\nFROM a\n"),
            Err(DockerfileError::Directive { line: 2, .. })
        ));
    }

    #[test]
    fn continuation_with_comments_and_blank_lines() {
        let f = Dockerfile::parse("FROM \\\n# a comment\n\n   ubuntu:22.04 \\\n  AS x\nRUN a\n")
            .unwrap();
        assert_eq!(
            f.instructions()[0]
                .arguments
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["ubuntu:22.04", "AS", "x"]
        );
        assert_eq!(f.instructions()[1].line, 6);
    }

    #[test]
    fn heredoc_bodies_are_not_instructions() {
        let text = "FROM alpine\nRUN <<EOF cat <<-'TWO' > /x\nFROM evil:1\nEOF\n\tFROM evil:2\n\tTWO\nCOPY <<\"A\" /a\nFROM evil:3\nA\nFROM busybox\n";
        let f = Dockerfile::parse(text).unwrap();
        let kws: Vec<_> = f
            .instructions()
            .iter()
            .map(|i| (i.line, i.keyword.as_str()))
            .collect();
        assert_eq!(
            kws,
            vec![(1, "FROM"), (2, "RUN"), (7, "COPY"), (10, "FROM")]
        );
        assert_eq!(f.instructions()[1].heredocs[0].body, "FROM evil:1");
        assert_eq!(f.instructions()[1].heredocs[1].body, "FROM evil:2");
        let s = f.scan(&ScanOptions::default()).unwrap();
        assert_eq!(s.images.len(), 2);
    }

    #[test]
    fn unterminated_heredoc() {
        let err = Dockerfile::parse("FROM a\nRUN <<EOF\necho hi\n").unwrap_err();
        assert_eq!(err.line(), 2);
        assert!(err.to_string().contains("unterminated heredoc `<<EOF`"));
    }

    #[test]
    fn heredoc_lookalikes() {
        // `<<<` is a here-string, a quoted `<<` is text, JSON form has none.
        for text in [
            "FROM a\nRUN cat <<< hi\n",
            "FROM a\nRUN echo \"a <<EOF\"\n",
            "FROM a\nRUN [\"sh\", \"<<EOF\"]\n",
        ] {
            assert_eq!(
                Dockerfile::parse(text).unwrap().instructions().len(),
                2,
                "{text}"
            );
        }
    }

    #[test]
    fn crlf_bom_and_case() {
        let s = scan("\u{feff}from node:18-alpine as deps\r\nRun echo\r\nfRoM deps\r\n");
        assert_eq!(
            images(&s),
            vec![(
                1,
                SourceKind::From,
                "docker.io/library/node:18-alpine".into()
            )]
        );
    }

    #[test]
    fn errors_have_lines() {
        let f = Dockerfile::parse("FROM\n").unwrap();
        assert!(matches!(
            f.scan(&ScanOptions::default()),
            Err(DockerfileError::MissingImage { line: 1 })
        ));
        let f = Dockerfile::parse("ARG X=\nFROM $X\n").unwrap();
        assert!(matches!(
            f.scan(&ScanOptions::default()),
            Err(DockerfileError::MissingImage { line: 2 })
        ));
        let f = Dockerfile::parse("\nFROM Ubuntu/Bad:x:y\n").unwrap();
        assert!(matches!(
            f.scan(&ScanOptions::default()),
            Err(DockerfileError::InvalidReference { line: 2, .. })
        ));
        let f = Dockerfile::parse("FROM a b c d\n").unwrap();
        assert!(f.scan(&ScanOptions::default()).is_err());
    }

    #[test]
    fn digest_and_registry_port() {
        let d = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
        let s = scan(&format!("FROM localhost:5000/base:1@{d}\n"));
        assert_eq!(images(&s)[0].2, format!("localhost:5000/base:1@{d}"));
    }

    #[test]
    fn env_in_stage_feeds_copy_from() {
        let s = scan("FROM alpine\nENV IMG=redis:7-alpine\nCOPY --from=${IMG} /usr/local/bin/redis-server /\n");
        assert_eq!(images(&s)[1].2, "docker.io/library/redis:7-alpine");
    }

    #[test]
    fn quoted_arg_default() {
        let s = scan("ARG IMG=\"python:3.11-slim\"\nFROM ${IMG}\n");
        assert_eq!(images(&s)[0].2, "docker.io/library/python:3.11-slim");
    }
}
