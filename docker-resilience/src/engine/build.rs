//! Building one image on the daemon: BuildKit where the daemon has it (`version=2`,
//! a streamed context), the classic builder otherwise.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use bollard::query_parameters::{BuildImageOptionsBuilder, BuilderVersion};
use futures_util::StreamExt;

use super::progress::Progress;
use super::session::SecretSession;
use super::{
    BuildEngine, BuildError, BuildSpec, ContextStream, DockerEngine, EngineError, LogSink,
};

impl BuildEngine for DockerEngine {
    async fn image_exists(&self, image: &str) -> Result<bool, EngineError> {
        self.image_id(image).await.map(|id| id.is_some())
    }

    async fn accepts_heredocs(&self) -> bool {
        self.heredocs().await
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
        let mut session = format!("drbuild-{}-{}", spec.service, std::process::id());
        // Secrets are served by a session of our own, opened first under a fresh id.
        let _secrets = if spec.secrets.is_empty() {
            None
        } else {
            if !builder.buildkit {
                return Err(BuildError::new(
                    "build secrets need BuildKit, which this daemon does not use (DOCKER_BUILDKIT=0?)",
                ));
            }
            static ATTEMPTS: AtomicU64 = AtomicU64::new(0);
            session = format!("{session}-{}", ATTEMPTS.fetch_add(1, Ordering::Relaxed));
            let secrets = spec.secrets.clone().into_iter().collect();
            Some(
                SecretSession::open(self.host(), &session, secrets)
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
