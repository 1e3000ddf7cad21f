//! Named contexts that are images, written into the Dockerfile: what BuildKit does with
//! `--build-context NAME=docker-image://REF` (and Compose with `service:NAME`), for a
//! builder that takes no named contexts (Docker's `/build` API).

use super::{scan::mount_from, Dockerfile, ImageScan, Instruction};
use crate::vocab::SourceKind;

impl Dockerfile {
    /// `text` (this file's text) with every [`ImageScan::context_uses`] of `scan` written
    /// in: `FROM base` becomes `FROM REF`, `COPY --from=base` `COPY --from=REF`, `RUN
    /// --mount=…,from=base` `from=REF`; a stage named like a context becomes `FROM REF
    /// AS name` with the rest of the stage gone. Instructions that change are written on
    /// one line (continuations joined, their comments dropped); every other line is
    /// kept as it is.
    pub fn with_image_contexts(&self, text: &str, scan: &ImageScan) -> String {
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let starts: Vec<usize> = self.instructions.iter().map(|i| i.line).collect();
        let mut out = String::with_capacity(text.len());
        // Lines before the first instruction: directives, comments.
        let first = starts.first().copied().unwrap_or(lines.len() + 1);
        for line in lines.iter().take(first.saturating_sub(1)) {
            out.push_str(line);
        }
        let mut dropping = false;
        for (i, ins) in self.instructions.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(lines.len() + 1);
            let own = lines
                .get(ins.line.saturating_sub(1)..end.saturating_sub(1).min(lines.len()))
                .unwrap_or_default();
            let uses: Vec<_> = scan
                .context_uses
                .iter()
                .filter(|u| u.line == ins.line)
                .collect();
            if ins.keyword == "FROM" {
                dropping = false;
            } else if dropping {
                continue;
            }
            if uses.is_empty() {
                own.iter().for_each(|l| out.push_str(l));
                continue;
            }
            let mut ins = ins.clone();
            for u in uses {
                match u.kind {
                    SourceKind::From => {
                        let args = ins.arguments.trim_start();
                        let rest = args.find(char::is_whitespace).map_or("", |at| &args[at..]);
                        ins.arguments = format!("{}{rest}", u.image);
                        dropping = u.replaces_stage;
                    }
                    SourceKind::CopyFrom => {
                        for flag in &mut ins.flags {
                            if flag.name.eq_ignore_ascii_case("from") && flag.value == u.written {
                                flag.value.clone_from(&u.image);
                            }
                        }
                    }
                    SourceKind::MountFrom => {
                        for flag in &mut ins.flags {
                            if flag.name.eq_ignore_ascii_case("mount")
                                && mount_from(&flag.value).as_deref() == Some(u.written.as_str())
                            {
                                flag.value = mount_with_from(&flag.value, &u.image);
                            }
                        }
                    }
                    _ => {}
                }
            }
            write_instruction(&mut out, &ins);
        }
        out
    }
}

/// A `--mount` value with its `from=` field set to `image` (other fields kept).
fn mount_with_from(value: &str, image: &str) -> String {
    let quoted = value.len() >= 2 && value.starts_with('"') && value.ends_with('"');
    let inner = if quoted {
        &value[1..value.len() - 1]
    } else {
        value
    };
    let fields: Vec<String> = inner
        .split(',')
        .map(|field| match field.split_once('=') {
            Some((k, _)) if k.trim().eq_ignore_ascii_case("from") => format!("{k}={image}"),
            _ => field.to_owned(),
        })
        .collect();
    let joined = fields.join(",");
    if quoted {
        format!("\"{joined}\"")
    } else {
        joined
    }
}

/// One instruction on one line, then its heredocs' bodies and delimiters.
fn write_instruction(out: &mut String, ins: &Instruction) {
    out.push_str(&ins.keyword);
    for flag in &ins.flags {
        out.push_str(&format!(" --{}={}", flag.name, flag.value));
    }
    if !ins.arguments.is_empty() {
        out.push(' ');
        out.push_str(ins.arguments.trim_start());
    }
    out.push('\n');
    for heredoc in &ins.heredocs {
        if !heredoc.body.is_empty() {
            out.push_str(&heredoc.body);
            out.push('\n');
        }
        out.push_str(&heredoc.delimiter);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{NamedContext, ScanOptions};
    use super::*;

    fn rewrite(text: &str, contexts: &[(&str, Option<&str>)]) -> String {
        let options = ScanOptions {
            named_contexts: contexts
                .iter()
                .map(|(n, image)| {
                    let context =
                        image.map_or(NamedContext::Local, |i| NamedContext::Image(i.to_owned()));
                    (n.to_string(), context)
                })
                .collect::<BTreeMap<_, _>>(),
            build_args: BTreeMap::from([("BASE".to_owned(), "base".to_owned())]),
            ..ScanOptions::default()
        };
        let file = Dockerfile::parse(text).unwrap();
        let scan = file.scan(&options).unwrap();
        let out = file.with_image_contexts(text, &scan);
        // What comes out reads as a Dockerfile naming the images directly.
        let again = Dockerfile::parse(&out).unwrap().scan(&ScanOptions {
            build_args: options.build_args.clone(),
            ..ScanOptions::default()
        });
        assert!(again.is_ok(), "{out}");
        out
    }

    #[test]
    fn from_copy_and_mount_name_the_image() {
        let text = "# syntax=docker/dockerfile:1\n\
                    ARG BASE\n\
                    FROM ${BASE} AS app\n\
                    # kept\n\
                    COPY --from=tools --chown=1:1 /usr/bin/git \\\n    /usr/bin/git\n\
                    RUN --mount=type=cache,target=/c --mount=\"type=bind,from=tools,source=/x,target=/y\" \\\n    ls /y\n\
                    COPY --from=app /a /b\n";
        let out = rewrite(
            text,
            &[
                ("base", Some("acme/base:dev")),
                ("tools", Some("alpine/git:2.43.0")),
            ],
        );
        assert_eq!(
            out,
            "# syntax=docker/dockerfile:1\n\
             ARG BASE\n\
             FROM acme/base:dev AS app\n\
             COPY --from=alpine/git:2.43.0 --chown=1:1 /usr/bin/git     /usr/bin/git\n\
             RUN --mount=type=cache,target=/c --mount=\"type=bind,from=alpine/git:2.43.0,source=/x,target=/y\" ls /y\n\
             COPY --from=app /a /b\n"
        );
    }

    #[test]
    fn a_stage_named_like_a_context_is_replaced_whole() {
        let text = "FROM ubuntu:22.04 AS base\nRUN apt-get update\nRUN <<EOF\necho hi\nEOF\n\
                    FROM base\nCOPY --from=base /etc/os-release /\n";
        let out = rewrite(text, &[("base", Some("acme/base:dev"))]);
        assert_eq!(
            out,
            "FROM acme/base:dev AS base\nFROM base\nCOPY --from=base /etc/os-release /\n"
        );
    }

    #[test]
    fn heredocs_and_untouched_lines_stay_as_written() {
        let text = "FROM base\r\nRUN --mount=from=base,target=/b <<-EOF\n\tcat /b/x\nEOF\n\
                    RUN echo \\\n  done\n";
        let out = rewrite(text, &[("base", Some("busybox:1.36"))]);
        assert_eq!(
            out,
            "FROM busybox:1.36\nRUN --mount=from=busybox:1.36,target=/b <<-EOF\ncat /b/x\nEOF\n\
             RUN echo \\\n  done\n"
        );
    }

    #[test]
    fn nothing_named_nothing_changed() {
        let text = "FROM alpine:3.19\n# c\nRUN true\n";
        assert_eq!(rewrite(text, &[("other", Some("busybox"))]), text);
    }
}
