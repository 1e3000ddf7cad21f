//! The builds of a tree, as the plan scans them: each service's, each compose build
//! that is not a service (a variant's, or compose beside `drbuild.yaml`), and one per
//! extra platform of a compose `build.platforms`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::services::{named_contexts, ServiceOrigin, ServiceSet};
use crate::parse::compose::ComposeProject;
use crate::parse::dockerfile::ScanOptions;
use crate::vocab::ImageReference;

/// Where a build's Dockerfile is.
pub(super) enum Source {
    /// A file, relative to the root.
    File(PathBuf),
    /// `dockerfile_inline`: its text, and the compose file and line of its `build:`.
    Inline {
        text: String,
        path: PathBuf,
        line: usize,
    },
}

/// One scan of one Dockerfile for one build.
pub(super) struct Build {
    /// The build it is part of: scans of one build for several platforms share it.
    pub id: usize,
    /// The service's name, for messages.
    pub service: String,
    /// Its key in the [`ServiceSet`], when it is one of the services.
    pub service_key: Option<String>,
    pub dockerfile: Source,
    /// Its scan options; `None`: the run's own (most builds; 10,000 copies of them
    /// were a tenth of a big tree's plan time).
    pub options: Option<Box<ScanOptions>>,
    /// The stage it builds, when it names one.
    pub target: Option<String>,
    /// The image it makes, when the tree names it (not directory services' own names).
    pub produces: Option<ImageReference>,
    /// Where it is defined.
    pub defined_in: (PathBuf, usize),
    /// A variant's build (compose files read only with `-f`): what it makes is local to
    /// that variant only.
    pub variant: bool,
    /// Its platform was given (the service's `platform:`, `build.platforms`), not the
    /// host's by default.
    pub platform_chosen: bool,
}

impl Build {
    /// Every build of the tree.
    pub fn all(
        projects: &[ComposeProject],
        services: &ServiceSet,
        base: &ScanOptions,
    ) -> Vec<Build> {
        // Sized for the services (a tree's builds are mostly theirs).
        let mut out = Vec::with_capacity(services.services.len());
        let mut next_id = 0;
        let mut id = || {
            next_id += 1;
            next_id
        };
        // Services come first: compose services are matched to theirs by where their
        // `build:` is written.
        let mut by_definition: BTreeMap<(PathBuf, usize), String> = BTreeMap::new();
        for (key, service) in &services.services {
            let defined_in = service.defined_in.clone().unwrap_or_default();
            if services.origin == ServiceOrigin::Compose {
                by_definition.insert(defined_in.clone(), key.clone());
                continue;
            }
            let options = base.for_build(
                &service.args,
                service.platform.as_deref(),
                service.named_contexts.clone(),
            );
            let produces = match services.origin {
                ServiceOrigin::Directories => None,
                _ => ImageReference::parse(&service.image).ok(),
            };
            out.push(Build {
                id: id(),
                service: service.name.clone(),
                service_key: Some(key.clone()),
                dockerfile: Source::File(service.dockerfile.clone()),
                options,
                target: service.target.clone(),
                produces,
                defined_in,
                variant: false,
                platform_chosen: service.platform.is_some(),
            });
        }
        for project in projects {
            for service in project.services.values() {
                let Some(build) = &service.build else {
                    continue;
                };
                let defined_in = (build.path.clone(), build.line);
                let key = (!project.variant)
                    .then(|| by_definition.get(&defined_in).cloned())
                    .flatten();
                let produces = project
                    .built_image(service)
                    .and_then(|i| ImageReference::parse(&i).ok());
                let dockerfile = || match &build.dockerfile_inline {
                    Some(text) => Source::Inline {
                        text: text.clone(),
                        path: build.path.clone(),
                        line: build.line,
                    },
                    None => Source::File(build.dockerfile.clone()),
                };
                // The service's platform, then each other of `build.platforms`; none
                // named: the target's.
                let mut platforms: Vec<Option<String>> =
                    service.platform.iter().cloned().map(Some).collect();
                for p in &build.platforms {
                    if !platforms.iter().any(|q| q.as_deref() == Some(p.as_str())) {
                        platforms.push(Some(p.clone()));
                    }
                }
                if platforms.is_empty() {
                    platforms.push(None);
                }
                let mut args = build.args.clone();
                if let Some(key) = &key {
                    // The service's args carry the run's `--build-arg`s.
                    args = services.services[key].args.clone();
                }
                let build_id = id();
                for (i, platform) in platforms.iter().enumerate() {
                    let options = base.for_build(
                        &args,
                        platform.as_deref(),
                        named_contexts(project, &build.additional_contexts),
                    );
                    out.push(Build {
                        id: build_id,
                        service: service.name.clone(),
                        service_key: if i == 0 { key.clone() } else { None },
                        dockerfile: dockerfile(),
                        options,
                        target: build.target.clone(),
                        produces: produces.clone(),
                        defined_in: defined_in.clone(),
                        variant: project.variant,
                        platform_chosen: platform.is_some(),
                    });
                }
            }
        }
        out
    }
}
