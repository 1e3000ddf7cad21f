//! One service's build: its attempts, each sent the way its engine takes it
//! (BuildKit's API with directories, or `/build` with a tar), the daemon's failure
//! classified, transient ones retried on the run's policy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::inputs::{build_dirs, tar_context};
use super::report::{BuildEvent, BuildFailure, ServiceResult, ServiceStatus};
use super::BuildOptions;
use crate::engine::{api_takes_network, BuildEngine, BuildSpec, LogSink};
use crate::plan::Service;
use crate::resilience::classify::{Classification, ErrorClass};
use crate::resilience::retry::Decision;
use crate::support::{millis, EventSink};

/// What the daemon is asked to build for `service` (`dockerfile`: its name in the
/// context).
fn spec(service: &Service, dockerfile: &str, options: &BuildOptions) -> BuildSpec {
    BuildSpec {
        service: service.name.clone(),
        tag: service.image.clone(),
        dockerfile: dockerfile.to_owned(),
        args: service.args.clone(),
        target: service.target.clone(),
        platform: service.platform.clone(),
        network: options
            .network
            .clone()
            .or_else(|| service.network.clone())
            .or_else(|| options.default_network.clone()),
        no_cache: options.no_cache,
        cache_from: service.cache_from.clone(),
        cache_to: service.cache_to.clone(),
        secrets: options
            .secrets
            .get(&service.name)
            .cloned()
            .unwrap_or_default(),
    }
}

/// How a build reaches the daemon.
enum Route {
    /// BuildKit's own API: directories served by drbuild's session.
    Api,
    /// Docker's `/build`: a tar; why not the API.
    Build(String),
}

/// Which way `service` is built: BuildKit's API where the engine has it, else `/build`
/// (a network of the daemon's own, which only `/build` takes; no BuildKit API). A
/// service with directory or URL contexts needs the API: without it, its build fails
/// with why.
async fn route<E: BuildEngine>(engine: &E, service: &Service, network: Option<&str>) -> Route {
    if let Some(other) = network.filter(|n| !api_takes_network(n)) {
        return Route::Build(format!(
            "network `{other}` is one of the daemon's, which only its `/build` API takes"
        ));
    }
    match engine
        .builds_dirs(!service.context_sources.is_empty())
        .await
    {
        Ok(()) => Route::Api,
        Err(why) => Route::Build(why),
    }
}

/// One attempt: the build sent the way the engine takes it, the daemon's failure
/// classified.
async fn attempt<E: BuildEngine>(
    engine: &E,
    root: &Path,
    service: &Service,
    options: &BuildOptions,
    log: LogSink,
) -> Result<(), BuildFailure> {
    let probe = spec(service, "Dockerfile", options);
    let result = match route(engine, service, probe.network.as_deref()).await {
        Route::Api => {
            let dirs = build_dirs(root, service)?;
            let urls: Vec<String> = dirs.remote.keys().map(|n| format!("`{n}`")).collect();
            match engine.build_dirs(probe, dirs, log).await {
                // Seen: 28.5's built-in frontend refuses an `http://` context so, before
                // it asks anything (26.1's fetches it).
                Err(e) if !urls.is_empty() && e.message.starts_with("invalid argument") => {
                    let daemon = engine
                        .version()
                        .await
                        .unwrap_or_else(|| "this daemon".to_owned());
                    return Err(BuildFailure::permanent(format!(
                        "service `{}`: {daemon}'s built-in Dockerfile frontend refused its URL \
                         context {} (`{}`)",
                        service.name,
                        urls.join(", "),
                        e.message
                    )));
                }
                other => other,
            }
        }
        Route::Build(why) => {
            if !service.context_sources.is_empty() {
                let names: Vec<String> = service
                    .context_sources
                    .keys()
                    .map(|n| format!("`{n}`"))
                    .collect();
                let what = if names.len() == 1 {
                    "additional context {} is a directory or a URL, which needs"
                } else {
                    "additional contexts {} are directories or URLs, which need"
                }
                .replace("{}", &names.join(", "));
                return Err(BuildFailure::permanent(format!(
                    "service `{}`: {what} BuildKit's own API: {why}",
                    service.name,
                )));
            }
            tracing::debug!("service `{}` built through `/build`: {why}", service.name);
            let context = tar_context(engine, root, service).await?;
            let spec = spec(service, context.dockerfile_name(), options);
            engine
                .build(spec, Box::pin(context.into_stream()), log)
                .await
        }
    };
    let error = match result {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    // The heredoc hint only where the daemon's frontend really rejects them (probed).
    let rejected = service.has_heredocs && !engine.accepts_heredocs().await;
    Err(BuildFailure::classify(error, rejected))
}

/// Builds `service` on `engine` (first bringing the images of this run it needs from
/// the builders that made them); `true` with the result when `engine` died under it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn build_one<E: BuildEngine>(
    engine: Arc<E>,
    root: PathBuf,
    service: Service,
    options: BuildOptions,
    events: EventSink<BuildEvent>,
    cancel: CancellationToken,
    bring: Vec<(String, Option<String>, Arc<E>)>,
    several: bool,
) -> (ServiceResult, bool) {
    let started = Instant::now();
    let name = service.name.clone();
    let mut result = ServiceResult::new(&service, ServiceStatus::Built);
    if options.missing_only
        && !options.no_cache
        && engine.image_exists(&service.image).await.unwrap_or(false)
    {
        result.status = ServiceStatus::UpToDate;
        return (result, false);
    }
    // The images of this run it needs, from the builders that made them.
    for (image, from_name, from) in bring {
        if let Err(e) = from.transfer(&image, &engine).await {
            let lost = several && !engine.alive().await;
            let from_name = from_name.as_deref().unwrap_or("its builder");
            result.status = ServiceStatus::Failed;
            result.error = Some(format!("cannot bring `{image}` from {from_name}: {e}"));
            result.error_class = Some(ErrorClass::Transient);
            result.elapsed_ms = millis(started.elapsed());
            return (result, lost);
        }
    }
    let mut schedule = options.retry.schedule();
    loop {
        let attempt_no = schedule.begin_attempt();
        result.attempts = attempt_no;
        events.emit(&BuildEvent::Started {
            service: name.clone(),
            attempt: attempt_no,
        });
        let sink_events = events.clone();
        let sink_name = name.clone();
        let log: LogSink = Arc::new(move |line: &str| {
            sink_events.emit(&BuildEvent::Line {
                service: sink_name.clone(),
                line: line.to_owned(),
            });
        });
        let outcome = tokio::select! {
            r = attempt(&*engine, &root, &service, &options, log) => r,
            () = cancel.cancelled() => Err(BuildFailure::permanent("interrupted".into())),
        };
        let failure = match outcome {
            Ok(()) => {
                result.status = ServiceStatus::Built;
                result.error = None;
                result.error_class = None;
                break;
            }
            Err(f) => f,
        };
        result.status = ServiceStatus::Failed;
        result.error = Some(failure.message.clone());
        result.error_class = Some(failure.class);
        result.step = failure.step.clone();
        result.last_lines = failure.last_lines.clone();
        result.hint = failure.hint.clone();
        if cancel.is_cancelled() {
            break;
        }
        if several && !engine.alive().await {
            result.elapsed_ms = millis(started.elapsed());
            return (result, true);
        }
        let classification = Classification {
            class: failure.class,
            retry_after: None,
            dns_failure: false,
            docker_hub_unreachable: false,
        };
        match schedule.after_failure(&classification, false) {
            Decision::RetryAfter(delay) => {
                events.emit(&BuildEvent::Retrying {
                    service: name.clone(),
                    attempt: attempt_no,
                    error: failure.message,
                    delay,
                });
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => break,
                }
            }
            Decision::GiveUp => break,
        }
    }
    result.elapsed_ms = millis(started.elapsed());
    (result, false)
}
