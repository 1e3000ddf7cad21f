//! What a build sends: the Dockerfile's text with named contexts and pinned images
//! written in, the directories BuildKit's API reads through drbuild's session, and
//! the tar Docker's `/build` takes.

use std::collections::BTreeMap;
use std::path::Path;

use super::context::{BuildContext, ContextError};
use super::BuildFailure;
use crate::engine::{BuildDirs, BuildEngine};
use crate::parse::compose::is_remote;
use crate::parse::dockerfile::{
    context_name, Dockerfile, DockerfileError, NamedContext, ScanOptions,
};
use crate::plan::Service;
use crate::vocab::ImageReference;

/// The Dockerfile's text to build `service` from, when it is not the file as it is:
/// with its named contexts (compose `additional_contexts`) and its pinned images
/// (`pins`, from [`BuildEngine::pins`]) written in.
///
/// Docker's `/build` API takes no named contexts, so an image stands in for its name
/// where BuildKit would put it (`FROM base` → `FROM acme/base:dev`); a directory or a
/// URL cannot. Through BuildKit's own API (`api`), those are left to it. A pin stands in for its image as a context named like the image would
/// (`FROM alpine` → `FROM docker.io/library/alpine:latest@sha256:…`), in `FROM`, `COPY
/// --from` and `RUN --mount=from`, and in the contexts that name it; never for a stage
/// of that name.
pub(super) fn dockerfile_text(
    root: &Path,
    service: &Service,
    pins: &BTreeMap<ImageReference, String>,
    api: bool,
) -> Result<Option<String>, String> {
    if service.named_contexts.is_empty() && pins.is_empty() {
        return Ok(None);
    }
    let not_images: Vec<String> = service
        .named_contexts
        .iter()
        .filter(|(name, c)| {
            **c == NamedContext::Local && !(api && service.context_sources.contains_key(*name))
        })
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    if !not_images.is_empty() {
        let what = if not_images.len() == 1 {
            "additional context {} is a directory or a URL"
        } else {
            "additional contexts {} are directories or URLs"
        }
        .replace("{}", &not_images.join(", "));
        return Err(format!(
            "service `{}`: {what}, which Docker's build API cannot take (image and \
             `service:` contexts it can); build this service with `docker compose build` \
             (plan and prefetch cover its images)",
            service.name,
        ));
    }
    let text = match &service.dockerfile_inline {
        Some(text) => text.clone(),
        None => std::fs::read_to_string(root.join(&service.dockerfile))
            .map_err(|e| format!("cannot read {}: {e}", service.dockerfile.display()))?,
    };
    let at = |e: DockerfileError| format!("{}:{}: {e}", service.dockerfile.display(), e.line());
    let file = Dockerfile::parse(&text).map_err(at)?;
    let pinned = |image: &str| {
        let reference = ImageReference::parse(image).ok()?;
        pins.get(&reference).cloned()
    };
    let mut options = ScanOptions {
        build_args: service.args.clone(),
        named_contexts: service
            .named_contexts
            .iter()
            .map(|(name, context)| {
                let context = match context {
                    NamedContext::Image(image) => {
                        NamedContext::Image(pinned(image).unwrap_or_else(|| image.clone()))
                    }
                    NamedContext::Local => NamedContext::Local,
                };
                (name.clone(), context)
            })
            .collect(),
        ..ScanOptions::default()
    };
    if let Some(platform) = service.platform.as_deref().and_then(|p| p.parse().ok()) {
        options.target_platform = platform;
    }
    if !pins.is_empty() {
        // A context named like a stage would replace the stage: such a pin is left out.
        let stages = file.scan(&options).map_err(at)?.stages;
        for (reference, pin) in pins {
            let name = context_name(reference);
            let taken = stages
                .iter()
                .filter_map(|s| s.name.as_deref())
                .chain(options.named_contexts.keys().map(String::as_str))
                .any(|n| n.eq_ignore_ascii_case(&name));
            if !taken {
                options
                    .named_contexts
                    .insert(name, NamedContext::Image(pin.clone()));
            }
        }
    }
    let scan = file.scan(&options).map_err(at)?;
    Ok(Some(file.with_image_contexts(&text, &scan)))
}

/// The build's directories for BuildKit's API: the context, the Dockerfile's text
/// (image contexts written in), its own ignore file, the named contexts.
pub(super) fn build_dirs(root: &Path, service: &Service) -> Result<BuildDirs, BuildFailure> {
    let permanent = BuildFailure::permanent;
    let context = root.join(&service.context);
    if !context.is_dir() {
        return Err(permanent(
            ContextError::NotADirectory { path: context }.to_string(),
        ));
    }
    let path = root.join(&service.dockerfile);
    let rewritten = dockerfile_text(root, service, &BTreeMap::new(), true).map_err(permanent)?;
    let dockerfile = match rewritten.or_else(|| service.dockerfile_inline.clone()) {
        Some(text) => text,
        None => std::fs::read_to_string(&path).map_err(|_| {
            permanent(ContextError::MissingDockerfile { path: path.clone() }.to_string())
        })?,
    };
    let dockerignore = if service.dockerfile_inline.is_none() {
        let mut own = path.clone().into_os_string();
        own.push(".dockerignore");
        std::fs::read_to_string(own).ok()
    } else {
        None
    };
    let (remote, local): (BTreeMap<_, _>, BTreeMap<_, _>) = service
        .context_sources
        .iter()
        .map(|(name, source)| (name.clone(), source.clone()))
        .partition(|(_, source)| is_remote(source));
    let mut named = BTreeMap::new();
    for (name, dir) in local {
        let dir = root.join(dir);
        if !dir.is_dir() {
            return Err(permanent(format!(
                "service `{}`: additional context `{name}`: `{}` is not a directory",
                service.name,
                dir.display()
            )));
        }
        named.insert(name, dir);
    }
    Ok(BuildDirs {
        context,
        dockerfile,
        dockerignore,
        named,
        remote,
    })
}

/// The context as `/build` takes it: a tar, the Dockerfile with image contexts and
/// pins ([`BuildEngine::pins`]) written in.
pub(super) async fn tar_context<E: BuildEngine>(
    engine: &E,
    root: &Path,
    service: &Service,
) -> Result<BuildContext, BuildFailure> {
    let pins = match engine.pins(&service.uses).await {
        Ok(pins) => pins,
        Err(e) => {
            tracing::warn!(
                "service `{}`: cannot ask the daemon which images it holds ({e}); its \
                 bases are built by their tags",
                service.name
            );
            BTreeMap::new()
        }
    };
    for (image, pin) in &pins {
        tracing::debug!("service `{}`: {image} pinned as {pin}", service.name);
    }
    let text = dockerfile_text(root, service, &pins, false).map_err(BuildFailure::permanent)?;
    match text.as_ref().or(service.dockerfile_inline.as_ref()) {
        Some(text) => BuildContext::inline(&root.join(&service.context), text),
        None => BuildContext::new(
            &root.join(&service.context),
            &root.join(&service.dockerfile),
        ),
    }
    .map_err(|e| BuildFailure::permanent(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_contexts_are_written_in_and_directories_refused() {
        let root = app_tree(
            "FROM base\nCOPY --from=tools /git /git\nRUN --mount=from=tools,target=/t ls /t\n",
        );
        let mut app = Service::new("app", "acme/app:1", "app", "app/Dockerfile");
        assert_eq!(
            dockerfile_text(root.path(), &app, &no_pins(), false),
            Ok(None)
        );
        app.named_contexts = BTreeMap::from([
            (
                "base".to_owned(),
                NamedContext::Image("acme/base:1".to_owned()),
            ),
            (
                "tools".to_owned(),
                NamedContext::Image("alpine/git:2.43.0".to_owned()),
            ),
        ]);
        assert_eq!(
            dockerfile_text(root.path(), &app, &no_pins(), false)
                .unwrap()
                .as_deref(),
            Some(
                "FROM acme/base:1\nCOPY --from=alpine/git:2.43.0 /git /git\n\
                 RUN --mount=from=alpine/git:2.43.0,target=/t ls /t\n"
            )
        );
        app.named_contexts
            .insert("assets".to_owned(), NamedContext::Local);
        assert_eq!(
            dockerfile_text(root.path(), &app, &no_pins(), false).unwrap_err(),
            "service `app`: additional context `assets` is a directory or a URL, which \
             Docker's build API cannot take (image and `service:` contexts it can); build \
             this service with `docker compose build` (plan and prefetch cover its images)"
        );
    }

    /// A tree holding `app/Dockerfile` with `text`.
    fn app_tree(text: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("app")).unwrap();
        std::fs::write(root.path().join("app/Dockerfile"), text).unwrap();
        root
    }

    fn no_pins() -> BTreeMap<ImageReference, String> {
        BTreeMap::new()
    }

    #[test]
    fn pinned_images_are_written_in_wherever_named_but_never_over_a_stage() {
        let root = app_tree(
            "ARG RUNTIME=alpine:latest\n\
             FROM golang:1.21-alpine AS build\n\
             RUN --mount=from=nginx:stable,target=/n \\\n    ls /n\n\
             FROM busybox AS redis\n\
             FROM redis\n\
             COPY --from=docker.io/library/nginx:stable /etc/hostname /h\n\
             COPY --from=build /out /out\n\
             FROM tools\n\
             FROM ${RUNTIME}\n\
             COPY --from=0 /out /out\n",
        );
        let mut app = Service::new("app", "acme/app:1", "app", "app/Dockerfile");
        app.named_contexts = BTreeMap::from([(
            "tools".to_owned(),
            NamedContext::Image("acme/tools:2".to_owned()),
        )]);
        let digest = |n: u8| format!("sha256:{}", format!("{n:x}").repeat(64));
        let pins: BTreeMap<ImageReference, String> = [
            "golang:1.21-alpine",
            "nginx:stable",
            "alpine",
            "redis",
            "acme/tools:2",
        ]
        .iter()
        .enumerate()
        .map(|(i, image)| {
            let reference = ImageReference::parse(image).unwrap();
            let pin = format!("{reference}@{}", digest(i as u8 + 1));
            (reference, pin)
        })
        .collect();
        let text = dockerfile_text(root.path(), &app, &pins, false)
            .unwrap()
            .unwrap();
        let d = |n| digest(n);
        assert_eq!(
            text,
            format!(
                "ARG RUNTIME=alpine:latest\n\
                 FROM docker.io/library/golang:1.21-alpine@{} AS build\n\
                 RUN --mount=from=docker.io/library/nginx:stable@{},target=/n ls /n\n\
                 FROM busybox AS redis\n\
                 FROM redis\n\
                 COPY --from=docker.io/library/nginx:stable@{} /etc/hostname /h\n\
                 COPY --from=build /out /out\n\
                 FROM docker.io/acme/tools:2@{}\n\
                 FROM docker.io/library/alpine:latest@{}\n\
                 COPY --from=0 /out /out\n",
                d(1),
                d(2),
                d(2),
                d(5),
                d(3),
            )
        );
        // Nothing pinned and no contexts: the file is sent as it is.
        app.named_contexts.clear();
        assert_eq!(
            dockerfile_text(root.path(), &app, &no_pins(), false),
            Ok(None)
        );
    }
}
