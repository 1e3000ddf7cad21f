//! Building one image: the [`BuildEngine`] trait and its Docker daemon implementation
//! (BuildKit where the daemon has it, the classic builder otherwise).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use bollard::models::{BuildInfo, BuildInfoAux};
use bollard::query_parameters::{BuildImageOptionsBuilder, BuilderVersion, ListNetworksOptions};
use futures_util::StreamExt;

use crate::classify::{classify_build, ErrorClass};
use crate::context::BuildContext;
use crate::engine::{DockerEngine, EngineError};
use crate::service::Service;

/// Lines of a failing step's output kept for the report.
const TAIL_LINES: usize = 12;

/// Receives a build's output, one line at a time.
pub type LogSink = Arc<dyn Fn(&str) + Send + Sync>;

/// One build to run.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The service.
    pub service: Service,
    /// The tree's root (the service's paths are relative to it).
    pub root: PathBuf,
    /// Build without the cache (`--force`).
    pub no_cache: bool,
    /// Network for `RUN` steps, overriding the service's.
    pub network: Option<String>,
}

/// Why a build failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct BuildFailure {
    /// What failed, as the daemon said it.
    pub message: String,
    /// Transient failures are retried; permanent ones are not.
    pub class: ErrorClass,
    /// The failing step (`[build 3/5] RUN make`), when known.
    pub step: Option<String>,
    /// The failing step's last output lines.
    pub last_lines: Vec<String>,
    /// What to do about it, when we know.
    pub hint: Option<String>,
}

impl BuildFailure {
    /// A failure classified from its message and output.
    pub fn new(
        message: String,
        step: Option<String>,
        last_lines: Vec<String>,
        dockerfile: Option<&str>,
    ) -> Self {
        let (class, hint) = classify_build(&message, &last_lines, dockerfile);
        BuildFailure {
            message,
            class,
            step,
            last_lines,
            hint,
        }
    }

    /// A failure that no retry can fix (bad context, missing Dockerfile…).
    pub fn permanent(message: String) -> Self {
        BuildFailure {
            message,
            class: ErrorClass::Permanent,
            step: None,
            last_lines: Vec::new(),
            hint: None,
        }
    }
}

/// What builds images. [`DockerEngine`] is the real one; tests use fakes.
pub trait BuildEngine: Send + Sync {
    /// Whether an image with this name exists.
    fn image_exists(&self, image: &str) -> impl Future<Output = Result<bool, EngineError>> + Send;

    /// Builds one image, handing each output line to `log`.
    fn build(
        &self,
        request: BuildRequest,
        log: LogSink,
    ) -> impl Future<Output = Result<(), BuildFailure>> + Send;
}

impl BuildEngine for DockerEngine {
    async fn image_exists(&self, image: &str) -> Result<bool, EngineError> {
        match self.docker().inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(EngineError::Daemon {
                status: None,
                message: e.to_string(),
            }),
        }
    }

    async fn build(&self, request: BuildRequest, log: LogSink) -> Result<(), BuildFailure> {
        let service = &request.service;
        let dockerfile_path = request.root.join(&service.dockerfile);
        let context = BuildContext::new(&request.root.join(&service.context), &dockerfile_path)
            .map_err(|e| BuildFailure::permanent(e.to_string()))?;
        let dockerfile_text = std::fs::read_to_string(&dockerfile_path).ok();
        let builder = *self.builder.get_or_init(|| self.ask_builder()).await;
        let buildkit = builder.buildkit;
        let network = request
            .network
            .clone()
            .or_else(|| service.network.clone())
            .or_else(|| builder.default_network.map(str::to_owned));
        let args: HashMap<String, String> = service.args.clone().into_iter().collect();
        let mut options = BuildImageOptionsBuilder::default()
            .t(&service.image)
            .dockerfile(context.dockerfile_name())
            .buildargs(&args)
            .nocache(request.no_cache)
            .rm(true)
            .forcerm(true);
        if let Some(network) = &network {
            options = options.networkmode(network);
        }
        if let Some(platform) = &service.platform {
            options = options.platform(platform);
        }
        if let Some(target) = &service.target {
            options = options.target(target);
        }
        let session = format!("drbuild-{}-{}", service.name, std::process::id());
        if buildkit {
            options = options
                .version(BuilderVersion::BuilderBuildKit)
                .session(&session);
        } else {
            options = options.version(BuilderVersion::BuilderV1);
        }
        let body = bollard::body_try_stream(context.into_stream());
        let mut stream = self.docker().build_image(options.build(), None, Some(body));
        let mut progress = Progress::default();
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(error) = progress.record(info, &*log) {
                        return Err(progress.failure(error, dockerfile_text.as_deref()));
                    }
                }
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
                                && self.image_exists(&service.image).await.unwrap_or(false)
                            {
                                tracing::debug!(
                                    "{}: ignoring `{other}` after the image was written",
                                    service.name
                                );
                                return Ok(());
                            }
                            other.to_string()
                        }
                    };
                    return Err(progress.failure(message, dockerfile_text.as_deref()));
                }
            }
        }
        if let Some(error) = progress.vertex_error.take() {
            return Err(progress.failure(error, dockerfile_text.as_deref()));
        }
        Ok(())
    }
}

/// What a daemon's builder offers, asked once per [`DockerEngine`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct DaemonBuilder {
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

/// Turns a build's progress (BuildKit vertexes and logs, or classic stream lines)
/// into output lines, and remembers the failing step and its last lines.
#[derive(Default)]
struct Progress {
    names: HashMap<String, String>,
    started: HashMap<String, bool>,
    tails: HashMap<String, VecDeque<String>>,
    partial: HashMap<String, String>,
    classic_tail: VecDeque<String>,
    classic_step: Option<String>,
    failed_step: Option<String>,
    vertex_error: Option<String>,
    /// The image was exported and tagged (BuildKit's `naming to …` done, or the
    /// classic `Successfully tagged`).
    image_written: bool,
}

fn push_tail(tail: &mut VecDeque<String>, line: String) {
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line);
}

impl Progress {
    /// Records one message; returns an error the message carries.
    fn record(&mut self, info: BuildInfo, log: &(dyn Fn(&str) + Send + Sync)) -> Option<String> {
        if let Some(BuildInfoAux::BuildKit(status)) = info.aux {
            for vertex in status.vertexes {
                if !vertex.name.is_empty() {
                    self.names
                        .insert(vertex.digest.clone(), vertex.name.clone());
                }
                let name = self.names.get(&vertex.digest).cloned().unwrap_or_default();
                if vertex.completed.is_some()
                    && vertex.error.is_empty()
                    && name.starts_with("exporting to image")
                {
                    self.image_written = true;
                }
                if vertex.started.is_some() && !self.started.contains_key(&vertex.digest) {
                    self.started.insert(vertex.digest.clone(), true);
                    if vertex.cached {
                        log(&format!("{name} (cached)"));
                    } else {
                        log(&name);
                    }
                }
                if !vertex.error.is_empty() && self.vertex_error.is_none() {
                    self.failed_step = Some(name.clone());
                    self.failed_tail_from(&vertex.digest);
                    self.vertex_error = Some(vertex.error.clone());
                }
            }
            for entry in status.logs {
                let text = String::from_utf8_lossy(&entry.msg).into_owned();
                let buffer = self.partial.entry(entry.vertex.clone()).or_default();
                buffer.push_str(&text);
                while let Some(at) = buffer.find(['\n', '\r']) {
                    let line: String = buffer.drain(..=at).collect();
                    let line = line.trim_end().to_owned();
                    if line.is_empty() {
                        continue;
                    }
                    log(&format!("  {line}"));
                    push_tail(self.tails.entry(entry.vertex.clone()).or_default(), line);
                }
            }
            return None;
        }
        if let Some(text) = info.stream {
            for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                if line.starts_with("Successfully tagged ") {
                    self.image_written = true;
                }
                if line.starts_with("Step ") {
                    self.classic_step = Some(line.to_owned());
                    self.classic_tail.clear();
                } else {
                    push_tail(&mut self.classic_tail, line.to_owned());
                }
                log(line);
            }
        }
        if let Some(detail) = info.error_detail {
            return Some(detail.message.unwrap_or_else(|| "the build failed".into()));
        }
        None
    }

    fn failed_tail_from(&mut self, digest: &str) {
        if let Some(rest) = self
            .partial
            .get_mut(digest)
            .filter(|r| !r.trim().is_empty())
        {
            let line = std::mem::take(rest).trim_end().to_owned();
            push_tail(self.tails.entry(digest.to_owned()).or_default(), line);
        }
    }

    fn failure(&mut self, message: String, dockerfile: Option<&str>) -> BuildFailure {
        let (step, tail) = if self.failed_step.is_some() {
            let digest = self
                .names
                .iter()
                .find(|(_, n)| Some(*n) == self.failed_step.as_ref())
                .map(|(d, _)| d.clone())
                .unwrap_or_default();
            (
                self.failed_step.clone(),
                self.tails.remove(&digest).unwrap_or_default(),
            )
        } else {
            (
                self.classic_step.clone(),
                std::mem::take(&mut self.classic_tail),
            )
        };
        let message = match self.vertex_error.take() {
            Some(v) if !message.contains(&v) && v != message => format!("{message}: {v}"),
            _ => message,
        };
        BuildFailure::new(message, step, tail.into_iter().collect(), dockerfile)
    }
}
