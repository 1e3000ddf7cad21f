//! Building one image on the daemon: BuildKit where the daemon has it (`version=2`,
//! a streamed context), the classic builder otherwise.

use std::collections::HashMap;

use bollard::query_parameters::{BuildImageOptionsBuilder, BuilderVersion, ListNetworksOptions};
use futures_util::StreamExt;

use super::progress::Progress;
use super::{
    BuildEngine, BuildError, BuildSpec, ContextStream, DockerEngine, EngineError, LogSink,
};

impl BuildEngine for DockerEngine {
    async fn image_exists(&self, image: &str) -> Result<bool, EngineError> {
        self.image_id(image).await.map(|id| id.is_some())
    }

    async fn build(
        &self,
        spec: BuildSpec,
        context: ContextStream,
        log: LogSink,
    ) -> Result<(), BuildError> {
        let builder = *self.builder.get_or_init(|| self.ask_builder()).await;
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
        let session = format!("drbuild-{}-{}", spec.service, std::process::id());
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

/// What a daemon's builder offers, asked once per [`DockerEngine`].
#[derive(Debug, Clone, Copy)]
pub(super) struct DaemonBuilder {
    /// BuildKit, unless `DOCKER_BUILDKIT=0` or the daemon is not Linux.
    buildkit: bool,
    /// The network for builds that set none: `none` under BuildKit on a daemon with
    /// no `bridge` network (BuildKit's default would fail every `RUN`).
    default_network: Option<&'static str>,
}

impl DockerEngine {
    async fn ask_builder(&self) -> DaemonBuilder {
        let disabled = std::env::var("DOCKER_BUILDKIT")
            .is_ok_and(|v| v == "0" || v.eq_ignore_ascii_case("false"));
        let buildkit = !disabled
            && match self.docker().version().await {
                Ok(v) => v.os.is_none_or(|os| os.eq_ignore_ascii_case("linux")),
                Err(_) => true,
            };
        let bridge = self
            .docker()
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map(|nets| nets.iter().any(|n| n.name.as_deref() == Some("bridge")))
            .unwrap_or(true);
        let default_network = (buildkit && !bridge).then_some("none");
        if default_network.is_some() {
            tracing::info!("no `bridge` network on this daemon: RUN steps use network `none` (set `network` or --network to change)");
        }
        DaemonBuilder {
            buildkit,
            default_network,
        }
    }
}
