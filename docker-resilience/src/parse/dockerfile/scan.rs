//! Instructions to images: `ARG` scopes, stages, and the external images a build needs.

use std::collections::BTreeMap;

use super::{
    context_name, ContextUse, Dockerfile, DockerfileError, ImageScan, ImageUse, Instruction,
    NamedContext, ScanOptions, ScanWarning, Stage,
};
use crate::parse::expand::{expand, split_words, words, ExpandError, Style};
use crate::vocab::{holds_secret, ImageReference, Platform, SourceKind};

/// Variables in scope: `Some(v)` with a value, `None` declared without one.
type Scope = BTreeMap<String, Option<String>>;

/// Which scope a word is expanded in.
#[derive(Clone, Copy)]
enum Which {
    /// The global (meta) args, before the first `FROM` and in `FROM` lines.
    Global,
    /// The current stage's.
    Stage,
}

pub(super) struct Scanner<'a> {
    file: &'a Dockerfile,
    options: &'a ScanOptions,
    style: Style,
    /// Global (meta) args: declared before the first `FROM`; the automatic ones
    /// ([`Scanner::automatic`]) stand behind them.
    global: Scope,
    stage_scope: Scope,
    out: ImageScan,
}

impl<'a> Scanner<'a> {
    pub(super) fn new(file: &'a Dockerfile, options: &'a ScanOptions) -> Self {
        Scanner {
            file,
            options,
            style: Style::Dockerfile {
                escape: file.escape,
            },
            global: Scope::new(),
            stage_scope: Scope::new(),
            out: ImageScan::default(),
        }
    }

    pub(super) fn run(mut self) -> Result<ImageScan, DockerfileError> {
        if let Some(syntax) = &self.file.syntax {
            // The frontend runs on the builder: its image is the build platform's.
            let platform = self.options.build_platform.clone();
            self.external(syntax.line, SourceKind::Syntax, &syntax.image, platform)?;
            // The frontend is needed by every build, whatever its target.
            if let Some(used) = self.out.images.last_mut() {
                used.stage = None;
            }
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

    /// BuildKit's automatic platform args (`BUILDPLATFORM`, `TARGETARCH`, …), global
    /// unless an `ARG` declares them otherwise; computed when asked for (most
    /// Dockerfiles never do).
    fn automatic(&self, name: &str) -> Option<String> {
        match name.strip_prefix("BUILD") {
            Some(field) => self.options.build_platform.arg(field),
            None => self
                .options
                .target_platform
                .arg(name.strip_prefix("TARGET")?),
        }
    }

    fn lookup(&self, scope: Which, name: &str) -> Option<String> {
        match scope {
            Which::Global => match self.global.get(name) {
                Some(value) => value.clone(),
                None => self.automatic(name),
            },
            Which::Stage => self.stage_scope.get(name).cloned().flatten(),
        }
    }

    fn expand_in(&self, scope: Which, text: &str) -> Result<String, ExpandError> {
        if !text.contains('$') && !text.contains(['"', '\'', self.file.escape]) {
            return Ok(text.to_owned());
        }
        expand(text, self.style, &|name| self.lookup(scope, name))
    }

    fn arg(&mut self, ins: &Instruction) {
        let in_stage = !self.out.stages.is_empty();
        for word in words(&ins.arguments, self.file.escape) {
            let (name, default) = match word.split_once('=') {
                Some((n, d)) => (n.to_owned(), Some(d)),
                None => (word.to_owned(), None),
            };
            self.secret_name(ins.line, "ARG", &name, default);
            let value = if let Some(v) = self.options.build_args.get(&name) {
                Some(v.clone())
            } else if let Some(default) = default {
                let scope = if in_stage {
                    Which::Stage
                } else {
                    Which::Global
                };
                self.expand_in(scope, default).ok()
            } else {
                // `ARG X` in a stage brings in the global value (and the automatic ones).
                self.lookup(Which::Global, &name)
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
            self.secret_name(ins.line, "ENV", &k, Some(&v));
            let value = self.expand_in(Which::Stage, &v).ok();
            self.stage_scope.insert(k, value);
        }
    }

    /// The platform of a `FROM`: its `--platform=` expanded with the global args, else
    /// an earlier stage's (`FROM stage`), else the target's.
    fn platform_of_from(&mut self, ins: &Instruction, base: Option<&str>) -> Platform {
        if let Some(flag) = ins.flag_values("platform").last() {
            match self.expand_in(Which::Global, flag) {
                Ok(text) => match text.parse::<Platform>() {
                    Ok(p) => return p,
                    Err(e) => self.out.warnings.push(ScanWarning {
                        line: ins.line,
                        message: format!("{e}; assuming the target platform"),
                    }),
                },
                Err(e) => self.out.warnings.push(ScanWarning {
                    line: ins.line,
                    message: format!(
                        "cannot resolve `--platform={flag}`: {e}; assuming the target platform"
                    ),
                }),
            }
        }
        base.and_then(|b| self.stage(b))
            .map(|s| s.platform.clone())
            .unwrap_or_else(|| self.options.target_platform.clone())
    }

    fn stage(&self, name: &str) -> Option<&Stage> {
        self.out.stages.iter().find(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
    }

    /// The platform of the stage being scanned.
    fn stage_platform(&self) -> Platform {
        self.out.stages.last().map_or_else(
            || self.options.target_platform.clone(),
            |s| s.platform.clone(),
        )
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
        // A stage named like a named context is replaced by it (BuildKit).
        let replaced = name.and_then(|n| self.named(n)).cloned();
        let mut needs = Vec::new();
        let (base, platform) = match self.expand_in(Which::Global, image) {
            Ok(base) if base.is_empty() => {
                return Err(DockerfileError::MissingImage { line: ins.line })
            }
            Ok(base) => {
                let lower = base.to_ascii_lowercase();
                let platform = self.platform_of_from(ins, Some(&lower));
                let stage_index = self.out.stages.len();
                let used = match (&replaced, self.stage_index(&lower)) {
                    (Some(context), _) => Some(context.clone()),
                    (None, Some(earlier)) => {
                        needs.push(earlier);
                        None
                    }
                    (None, None) if lower == "scratch" => None,
                    (None, None) => Some(
                        self.named(&lower)
                            .cloned()
                            .unwrap_or(NamedContext::Image(base.clone())),
                    ),
                };
                if let Some(NamedContext::Image(text)) = used {
                    self.reference(ins.line, SourceKind::From, &text, platform.clone())?;
                    if let Some(u) = self.out.images.last_mut() {
                        u.stage = Some(stage_index);
                    }
                    let from_context = replaced.is_some() || self.named(&lower).is_some();
                    if from_context {
                        self.out.context_uses.push(ContextUse {
                            line: ins.line,
                            kind: SourceKind::From,
                            written: image.to_owned(),
                            image: text,
                            replaces_stage: replaced.is_some(),
                        });
                    }
                }
                (Some(base), platform)
            }
            Err(e) => {
                self.unresolved(ins.line, image, &e);
                (None, self.platform_of_from(ins, None))
            }
        };
        self.out.stages.push(Stage {
            name: name.map(str::to_ascii_lowercase),
            line: ins.line,
            base,
            platform,
            needs,
        });
        self.stage_scope = Scope::new();
        Ok(())
    }

    fn stage_index(&self, name: &str) -> Option<usize> {
        self.out.stages.iter().position(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
    }

    /// The named context called `name`, if the build has one: by the name as written,
    /// else, for an image, by its familiar name as BuildKit looks it up (`FROM
    /// docker.io/library/alpine:latest` uses a context called `alpine`).
    fn named(&self, name: &str) -> Option<&'a NamedContext> {
        let contexts: &'a BTreeMap<String, NamedContext> = &self.options.named_contexts;
        if contexts.is_empty() {
            return None;
        }
        contexts
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, c)| c)
            .or_else(|| {
                let reference = ImageReference::parse(name).ok()?;
                contexts.get(&context_name(&reference))
            })
    }

    /// The stage being scanned needs stage `index`.
    fn needs(&mut self, index: usize) {
        if let Some(stage) = self.out.stages.last_mut() {
            if !stage.needs.contains(&index) {
                stage.needs.push(index);
            }
        }
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
        match self.expand_in(Which::Stage, value) {
            Ok(v) if v.is_empty() => Err(DockerfileError::Malformed {
                line,
                message: "`--from` needs a stage or an image".to_owned(),
            }),
            Ok(v) => {
                let earlier = match v.parse::<usize>() {
                    Ok(index) => Some(index).filter(|&i| i < self.out.stages.len()),
                    Err(_) => self.stage_index(&v),
                };
                if let Some(index) = earlier {
                    self.needs(index);
                    return Ok(());
                }
                if v.parse::<usize>().is_ok() {
                    return Ok(());
                }
                match self.named(&v).cloned() {
                    Some(NamedContext::Local) => Ok(()),
                    Some(NamedContext::Image(text)) => {
                        let platform = self.stage_platform();
                        self.reference(line, kind, &text, platform)?;
                        self.out.context_uses.push(ContextUse {
                            line,
                            kind,
                            written: value.to_owned(),
                            image: text,
                            replaces_stage: false,
                        });
                        Ok(())
                    }
                    None => {
                        let platform = self.stage_platform();
                        self.reference(line, kind, &v, platform)
                    }
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
        platform: Platform,
    ) -> Result<(), DockerfileError> {
        match self.expand_in(Which::Global, written) {
            Ok(v) => self.reference(line, kind, &v, platform),
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
        platform: Platform,
    ) -> Result<(), DockerfileError> {
        let reference = parse_reference(text)
            .map_err(|source| DockerfileError::InvalidReference { line, source })?;
        let stage = self.out.stages.len().checked_sub(1);
        self.out.images.push(ImageUse {
            line,
            kind,
            reference,
            platform,
            stage,
        });
        Ok(())
    }

    /// A warning when an `ARG`/`ENV` looks like it holds a secret (BuildKit's
    /// `SecretsUsedInArgOrEnv` by name, less paths and key fingerprints:
    /// [`holds_secret`]): its value would stay in the image.
    fn secret_name(&mut self, line: usize, keyword: &str, name: &str, value: Option<&str>) {
        if holds_secret(name, value) {
            self.out.warnings.push(ScanWarning {
                line,
                message: format!(
                    "`{keyword} {name}` looks like a secret, and its value stays in the image's \
                     history: pass it with `--secret id={name},env={name}` and read it in \
                     `RUN --mount=type=secret,id={name}`"
                ),
            });
        }
    }

    fn unresolved(&mut self, line: usize, written: &str, error: &ExpandError) {
        self.out.warnings.push(ScanWarning {
            line,
            message: format!("cannot resolve image `{written}`: {error}"),
        });
    }
}

/// [`ImageReference::parse`], remembered per thread: a tree names a few dozen images
/// thousands of times, and a copy of a parsed one shares its text instead of
/// allocating it again.
fn parse_reference(text: &str) -> Result<ImageReference, crate::vocab::ReferenceError> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    /// Enough for any real tree's distinct images; past it the memory starts over.
    const REMEMBERED: usize = 4096;
    thread_local! {
        static PARSED: RefCell<HashMap<Box<str>, ImageReference>> = RefCell::default();
    }
    PARSED.with(|parsed| {
        let mut parsed = parsed.borrow_mut();
        if let Some(reference) = parsed.get(text) {
            return Ok(reference.clone());
        }
        let reference = ImageReference::parse(text)?;
        if parsed.len() >= REMEMBERED {
            parsed.clear();
        }
        parsed.insert(text.into(), reference.clone());
        Ok(reference)
    })
}

/// The `from=` field of a `--mount` value (comma-separated, fields may be quoted).
pub(super) fn mount_from(mount: &str) -> Option<String> {
    let mount = mount.trim_matches('"');
    mount.split(',').find_map(|field| {
        let (k, v) = field.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("from")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}
