//! Dockerfiles as BuildKit reads them: parser directives, the escape token, line
//! continuations (with comment and blank lines inside), heredocs, CRLF, instructions in
//! any case (`parser`), then `ARG` scoping and the external images a build needs
//! (`scan`).
//!
//! It does not build anything; it finds the instructions and the images they need.

use std::collections::BTreeMap;

use crate::vocab::{ImageReference, Platform, ReferenceError, SourceKind};

mod contexts;
mod parser;
mod scan;

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
    pub(crate) fn flag_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanOptions {
    /// Build args (`--build-arg`, compose `args:`) overriding `ARG` defaults.
    pub build_args: BTreeMap<String, String>,
    /// The platform of the builder (`BUILDPLATFORM`…). Defaults to the host.
    pub build_platform: Platform,
    /// The platform built for (`TARGETPLATFORM`…). Defaults to the host.
    pub target_platform: Platform,
    /// Named build contexts (`--build-context`, compose `additional_contexts`), by
    /// name: `FROM name`, `COPY --from=name` and `RUN --mount=from=name` use them
    /// before any image of that name, and a stage named like one is replaced by it.
    pub named_contexts: BTreeMap<String, NamedContext>,
}

/// What a named build context stands for, as far as images go.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum NamedContext {
    /// An image (`docker-image://REF`, or the image another service builds).
    Image(String),
    /// Something that is not an image: a directory, a URL.
    Local,
}

/// The name BuildKit looks up a named context by for an image: its familiar form
/// without `:latest` (`alpine` for `docker.io/library/alpine:latest`, `nginx:stable`,
/// `127.0.0.1:5000/acme/base:1`). A context by that name stands in for the image
/// wherever the Dockerfile names it, however it spells it.
///
/// ```
/// use docker_resilience::parse::dockerfile::context_name;
/// use docker_resilience::vocab::ImageReference;
///
/// let alpine = ImageReference::parse("docker.io/library/alpine").unwrap();
/// assert_eq!(context_name(&alpine), "alpine");
/// let nginx = ImageReference::parse("nginx:stable").unwrap();
/// assert_eq!(context_name(&nginx), "nginx:stable");
/// ```
pub fn context_name(reference: &ImageReference) -> String {
    let familiar = reference.familiar();
    match familiar.strip_suffix(":latest") {
        Some(name) => name.to_owned(),
        None => familiar,
    }
}

/// A place where a named context that is an image stands in for what is written
/// (`FROM base`, `COPY --from=base`, `RUN --mount=from=base`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextUse {
    /// 1-based line of the instruction.
    pub line: usize,
    /// Which instruction.
    pub kind: SourceKind,
    /// The name as written there (`base`, `${BASE}`).
    pub written: String,
    /// The image the context stands for.
    pub image: String,
    /// Whether a stage named like the context is replaced by it (its `FROM` and the
    /// rest of the stage give way to the image).
    pub replaces_stage: bool,
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
    /// The platform it is needed for: `FROM --platform=…` (expanded), else the
    /// stage's (for `COPY --from`, `RUN --mount from=`), else the target platform;
    /// the build platform for `# syntax=`.
    pub platform: Platform,
    /// The stage that needs it (index into [`ImageScan::stages`]); `None` for the
    /// `# syntax=` frontend, which every build needs.
    pub stage: Option<usize>,
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
    /// The platform the stage runs on (its `FROM --platform=…`, else the target's).
    pub platform: Platform,
    /// The earlier stages it needs (`FROM stage`, `COPY --from=stage`, `RUN
    /// --mount=from=stage`), as indexes.
    pub needs: Vec<usize>,
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
    /// Where named contexts that are images stand in for a name.
    pub context_uses: Vec<ContextUse>,
}

impl ImageScan {
    /// The stages a build of `target` runs, as BuildKit prunes them: the target (the
    /// last stage when `None`) and what it needs through `FROM`, `COPY --from` and `RUN
    /// --mount=from`, transitively. `None` when no stage has that name.
    pub fn needed_stages(&self, target: Option<&str>) -> Option<std::collections::BTreeSet<usize>> {
        let start = match target {
            Some(name) => self.stages.iter().position(|s| {
                s.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })?,
            None => self.stages.len().checked_sub(1)?,
        };
        let mut needed = std::collections::BTreeSet::new();
        let mut todo = vec![start];
        while let Some(i) = todo.pop() {
            if needed.insert(i) {
                todo.extend(self.stages[i].needs.iter().copied());
            }
        }
        Some(needed)
    }
}

impl Dockerfile {
    /// Parses a Dockerfile's text.
    pub fn parse(text: &str) -> Result<Self, DockerfileError> {
        parser::Parser::new(text).parse()
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
        scan::Scanner::new(self, options).run()
    }

    /// Whether an instruction opens a heredoc (`RUN <<EOF`): BuildKit's built-in
    /// frontend before Docker 23 rejects them.
    pub fn has_heredocs(&self) -> bool {
        self.instructions.iter().any(|i| !i.heredocs.is_empty())
    }
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
            ..ScanOptions::default()
        };
        Dockerfile::parse(text).unwrap().scan(&options).unwrap()
    }

    fn images(scan: &ImageScan) -> Vec<(usize, SourceKind, String)> {
        scan.images
            .iter()
            .map(|u| (u.line, u.kind, u.reference.to_string()))
            .collect()
    }

    /// Each image's line and reference.
    fn lines_and_refs(scan: &ImageScan) -> Vec<(usize, String)> {
        images(scan).into_iter().map(|(l, _, r)| (l, r)).collect()
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
    fn each_image_carries_its_platform() {
        // build platform linux/amd64, target linux/arm64 (see `scan_with`)
        let s = scan(
            "# syntax=docker/dockerfile:1\nARG P=linux/arm/v7\n\
             FROM --platform=$BUILDPLATFORM golang:1.21 AS build\n\
             COPY --from=busybox:1.36 /bin/sh /sh\n\
             FROM --platform=linux/arm64/v8 alpine:3.18 AS arm\n\
             FROM --platform=${P} alpine:3.18 AS v7\n\
             FROM build AS again\n\
             COPY --from=nginx:stable /etc /etc\n\
             FROM debian:bookworm-slim\n",
        );
        let got: Vec<(String, String)> = s
            .images
            .iter()
            .map(|u| (u.reference.familiar(), u.platform.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("docker/dockerfile:1".to_owned(), "linux/amd64".to_owned()),
                ("golang:1.21".to_owned(), "linux/amd64".to_owned()),
                ("busybox:1.36".to_owned(), "linux/amd64".to_owned()),
                ("alpine:3.18".to_owned(), "linux/arm64".to_owned()),
                ("alpine:3.18".to_owned(), "linux/arm/v7".to_owned()),
                ("nginx:stable".to_owned(), "linux/amd64".to_owned()),
                ("debian:bookworm-slim".to_owned(), "linux/arm64".to_owned()),
            ]
        );
        let s = scan("FROM --platform=$NOPE alpine\n");
        assert_eq!(s.images[0].platform.to_string(), "linux/arm64");
        assert!(
            s.warnings[0]
                .message
                .contains("assuming the target platform"),
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

    #[test]
    fn secret_looking_args_and_envs_are_warned_about() {
        let s =
            scan("FROM alpine\nARG NPM_TOKEN\nARG PUBLIC_KEY\nENV DB_PASSWORD=x GO_VERSION=1\n");
        let lines: Vec<(usize, bool)> = s
            .warnings
            .iter()
            .map(|w| (w.line, w.message.contains("--secret id=")))
            .collect();
        assert_eq!(lines, [(2, true), (4, true)], "{:?}", s.warnings);
        assert!(s.warnings[1]
            .message
            .starts_with("`ENV DB_PASSWORD` looks like a secret"));
    }

    #[test]
    fn key_fingerprints_and_credential_paths_are_not_secrets() {
        let s = scan(
            "FROM alpine\n\
             ENV GPG_KEY 3F1C0A5E7D2B94C8E61A07F53B9D2C4E8A6F1D70\n\
             ENV GOOGLE_APPLICATION_CREDENTIALS=/run/app/key.json\n\
             ARG SSH_KEY_PATH=~/.ssh/id_ed25519 SSH_KEY=/run/secrets/ssh\n\
             ENV REGISTRY_PASSWORD=Adm1n2024\n",
        );
        let warned: Vec<(usize, &str)> = s
            .warnings
            .iter()
            .map(|w| (w.line, w.message.split(' ').nth(1).unwrap_or("")))
            .collect();
        assert_eq!(warned, [(5, "REGISTRY_PASSWORD`")], "{:?}", s.warnings);
    }

    #[test]
    fn named_contexts_and_target_pruning() {
        let text = "FROM base AS deps\nFROM golang:1.22 AS build\nCOPY --from=tools /x /x\n\
                    FROM scratch AS final\nCOPY --from=build /app /app\nFROM busybox AS debug\n";
        let file = Dockerfile::parse(text).unwrap();
        let options = ScanOptions {
            named_contexts: BTreeMap::from([
                ("base".to_owned(), NamedContext::Local),
                (
                    "tools".to_owned(),
                    NamedContext::Image("alpine/git:2.43.0".to_owned()),
                ),
            ]),
            ..ScanOptions::default()
        };
        let s = file.scan(&options).unwrap();
        assert_eq!(
            lines_and_refs(&s),
            [
                (2, "docker.io/library/golang:1.22".to_owned()),
                (3, "docker.io/alpine/git:2.43.0".to_owned()),
                (6, "docker.io/library/busybox:latest".to_owned()),
            ]
        );
        let needed = s.needed_stages(Some("final")).unwrap();
        assert_eq!(needed.into_iter().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(
            s.needed_stages(None)
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            [3]
        );
        assert!(s.needed_stages(Some("nope")).is_none());
    }

    #[test]
    fn an_image_finds_its_context_by_its_familiar_name_as_in_buildkit() {
        let text = "FROM docker.io/library/alpine:latest\nCOPY --from=library/nginx:stable /a /a\n\
                    FROM alpine:3.19\n";
        let file = Dockerfile::parse(text).unwrap();
        let options = ScanOptions {
            named_contexts: BTreeMap::from([
                (
                    "alpine".to_owned(),
                    NamedContext::Image("acme/a:1".to_owned()),
                ),
                ("nginx:stable".to_owned(), NamedContext::Local),
            ]),
            ..ScanOptions::default()
        };
        let s = file.scan(&options).unwrap();
        assert_eq!(
            lines_and_refs(&s),
            [
                (1, "docker.io/acme/a:1".to_owned()),
                (3, "docker.io/library/alpine:3.19".to_owned()),
            ]
        );
        assert_eq!(s.context_uses.len(), 1);
        assert_eq!(s.context_uses[0].written, "docker.io/library/alpine:latest");
    }
}
