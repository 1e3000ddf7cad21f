//! Building one image on the daemon: BuildKit where the daemon has it (`version=2`,
//! a streamed context), the classic builder otherwise.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use bollard::query_parameters::{BuildImageOptionsBuilder, BuilderVersion};
use futures_util::StreamExt;

use super::buildkit::{image_caches, session_id};
use super::progress::Progress;
use super::session::Session;
use super::{
    BuildDirs, BuildEngine, BuildError, BuildSpec, ContextStream, DockerEngine, EngineError,
    ImageStore, LogSink,
};
use crate::vocab::{ImageReference, Platform};

impl BuildEngine for DockerEngine {
    async fn image_exists(&self, image: &str) -> Result<bool, EngineError> {
        self.image_id(image).await.map(|id| id.is_some())
    }

    async fn accepts_heredocs(&self) -> bool {
        self.heredocs().await
    }

    async fn version(&self) -> Option<String> {
        self.info()
            .await
            .ok()
            .map(|i| format!("Docker {}", i.version))
    }

    async fn native_platforms(&self) -> Vec<Platform> {
        match self.buildkit_workers().await {
            Ok(workers) => workers.into_iter().flat_map(|w| w.platforms).collect(),
            Err(_) => Vec::new(),
        }
    }

    async fn alive(&self) -> bool {
        let ping = self.docker().ping();
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(3), ping).await,
            Ok(Ok(_))
        )
    }

    async fn transfer(&self, image: &str, to: &Self) -> Result<(), EngineError> {
        let tar = self
            .save(&[image])
            .map(|chunk| chunk.map_err(|e| std::io::Error::other(e.to_string())));
        to.load(tar).await.map(|_| ())
    }

    async fn builds_dirs(&self, named_contexts: bool) -> Result<(), String> {
        self.solves(named_contexts).await
    }

    async fn build_dirs(
        &self,
        spec: BuildSpec,
        dirs: BuildDirs,
        log: LogSink,
    ) -> Result<(), BuildError> {
        self.solve(spec, dirs, log).await
    }

    async fn pins(
        &self,
        images: &[ImageReference],
    ) -> Result<BTreeMap<ImageReference, String>, EngineError> {
        let features = self.features().await;
        let mut pins = BTreeMap::new();
        if !(features.buildkit && features.image_store == ImageStore::Containerd) {
            return Ok(pins);
        }
        for image in images {
            if image.digest().is_some() || pins.contains_key(image) {
                continue;
            }
            // On the containerd store an image's ID is the digest of what its name
            // points at (an index or a manifest), which BuildKit finds in the content
            // store without asking a registry.
            if let Some(id) = self.image_id(&image.to_string()).await? {
                pins.insert(image.clone(), format!("{image}@{id}"));
            }
        }
        Ok(pins)
    }

    async fn build(
        &self,
        spec: BuildSpec,
        context: ContextStream,
        log: LogSink,
    ) -> Result<(), BuildError> {
        let builder = self.features().await;
        let network = spec
            .network
            .clone()
            .or_else(|| builder.default_network.map(str::to_owned));
        let args: HashMap<String, String> = spec.args.clone().into_iter().collect();
        let mut options = BuildImageOptionsBuilder::default()
            .t(&spec.tag)
            .dockerfile(&spec.dockerfile)
            .buildargs(&args)
            .nocache(spec.no_cache)
            .rm(true)
            .forcerm(true);
        if let Some(network) = &network {
            options = options.networkmode(network);
        }
        if let Some(platform) = &spec.platform {
            options = options.platform(platform);
        }
        if let Some(target) = &spec.target {
            options = options.target(target);
        }
        // `/build` imports a cache from images (their inline cache); it exports none.
        let (cache_from, unused) = image_caches(&spec.cache_from).map_err(BuildError::new)?;
        if !unused.is_empty() && !self.said_cache_import_unused.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "Docker's `/build` API imports a build cache from images only: `{}` needs \
                 BuildKit's own API, and builds here import none from it",
                unused.join("`, `")
            );
        }
        if !cache_from.is_empty() {
            options = options.cachefrom(&cache_from);
        }
        if !spec.cache_to.is_empty() && !self.said_no_cache_export.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "Docker's `/build` API exports no build cache: `cache-to` needs BuildKit's \
                 own API"
            );
        }
        // A fresh id per attempt: secrets are served by a session of our own, opened
        // first under it.
        let session = session_id(&spec.service);
        let _secrets = if spec.secrets.is_empty() {
            None
        } else {
            if !builder.buildkit {
                return Err(BuildError::new(
                    "build secrets need BuildKit, which this daemon does not use (DOCKER_BUILDKIT=0?)",
                ));
            }
            let secrets = spec.secrets.clone().into_iter().collect();
            Some(
                Session::open(self.host(), &session, secrets, None)
                    .await
                    .map_err(BuildError::new)?,
            )
        };
        options = if builder.buildkit {
            options
                .version(BuilderVersion::BuilderBuildKit)
                .session(&session)
        } else {
            options.version(BuilderVersion::BuilderV1)
        };
        let body = bollard::body_try_stream(context);
        let mut stream = self.docker().build_image(options.build(), None, Some(body));
        let mut progress = Progress::default();
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(e) => {
                    let message = match e {
                        bollard::errors::Error::DockerStreamError { error } => error,
                        bollard::errors::Error::DockerResponseServerError { message, .. } => {
                            message
                        }
                        other => {
                            // A transport or decoding glitch after the image was written
                            // (seen: `bytes remaining on stream` at the very end of a
                            // BuildKit stream) is not a failed build.
                            if progress.image_written
                                && progress.vertex_error.is_none()
                                && self.image_exists(&spec.tag).await.unwrap_or(false)
                            {
                                tracing::debug!(
                                    "{}: ignoring `{other}` after the image was written",
                                    spec.service
                                );
                                return Ok(());
                            }
                            other.to_string()
                        }
                    };
                    return Err(progress.failure(message));
                }
            };
            if let Some(error) = progress.record(info, &*log) {
                return Err(progress.failure(error));
            }
        }
        if let Some(error) = progress.vertex_error.take() {
            return Err(progress.failure(error));
        }
        Ok(())
    }
}

impl DockerEngine {
    /// Builds `FROM scratch` + `COPY <<EOF` (no network, no base image): the built-in
    /// frontend either parses the heredoc or fails with `unknown instruction`. The
    /// image it makes, untagged, is removed.
    pub(super) async fn try_heredoc(&self) -> bool {
        let dockerfile = "FROM scratch\nCOPY <<EOF /drbuild-heredoc-probe\nprobe\nEOF\n";
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(dockerfile.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        if tar
            .append_data(&mut header, "Dockerfile", dockerfile.as_bytes())
            .is_err()
        {
            return true;
        }
        let Ok(body) = tar.into_inner() else {
            return true;
        };
        let features = self.features().await;
        if !features.buildkit {
            // The classic builder has never known heredocs.
            return false;
        }
        let options = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .rm(true)
            .forcerm(true)
            .version(BuilderVersion::BuilderBuildKit)
            .session(&format!("drbuild-probe-{}", std::process::id()))
            .build();
        let body = bollard::body_full(body.into());
        let mut stream = self.docker().build_image(options, None, Some(body));
        let mut progress = Progress::default();
        let mut image = None;
        let mut failed = false;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(bollard::models::BuildInfoAux::Default(id)) = &info.aux {
                        image = id.id.clone();
                    }
                    if progress.record(info, &|_| {}).is_some() {
                        failed = true;
                    }
                }
                Err(_) => failed = true,
            }
        }
        failed |= progress.vertex_error.is_some();
        if let Some(id) = image {
            let options = bollard::query_parameters::RemoveImageOptions {
                force: true,
                ..Default::default()
            };
            let _ = self.docker().remove_image(&id, Some(options), None).await;
        }
        !failed
    }
}
