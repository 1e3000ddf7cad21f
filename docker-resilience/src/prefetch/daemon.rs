//! The daemon path: `docker pull` (of the image, or of its name on a mirror), watched
//! for stalls, its words classified; behind the daemon's own mirrors, the mirror is
//! asked directly, since dockerd reports only its fallback's error.

use std::collections::HashMap;

use futures_util::StreamExt;

use super::{Failed, PrefetchEvent, Prefetcher, Pulled};
use crate::config::Fallback;
use crate::engine::{Engine, EngineError};
use crate::registry::client::Endpoint;
use crate::registry::{probe_manifest, ProbeResult};
use crate::resilience::classify::{classify, ErrorClass};
use crate::resilience::mirror::Mirror;
use crate::vocab::{ImageReference, Wanted};

/// Where a daemon pull goes: the image's own registry, or one of drbuild's mirrors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    Own(String),
    Mirror(Mirror),
}

impl Source {
    /// How results name it (`docker.io`, `mirror.example.com/dockerhub`).
    fn key(&self) -> String {
        match self {
            Source::Own(registry) => registry.clone(),
            Source::Mirror(m) => m.to_string(),
        }
    }

    /// What the breaker and the health know it by: its host, as on the native path
    /// (`docker.io` is `registry-1.docker.io`).
    fn host(&self) -> String {
        match self {
            Source::Own(registry) => Endpoint::registry(registry).host,
            Source::Mirror(m) => m.host().to_owned(),
        }
    }
}

impl<E: Engine> Prefetcher<E> {
    /// One attempt through the daemon, from the next source in turn that is not skipped.
    pub(super) async fn daemon_attempt(
        &self,
        wanted: &Wanted,
        attempt: u32,
        turn: &mut usize,
    ) -> Result<Pulled, Failed> {
        let image = &wanted.reference;
        let mut sources = vec![Source::Own(image.registry().to_owned())];
        if self.options.fallback != Fallback::Never {
            sources.extend(
                self.options
                    .mirrors
                    .for_image(image)
                    .iter()
                    .cloned()
                    .map(Source::Mirror),
            );
        }
        let source = self.pick(&sources, turn);
        let key = source.key();
        self.emit(PrefetchEvent::Attempt {
            image: wanted.clone(),
            attempt,
            source: key.clone(),
        });
        let outcome = match &source {
            Source::Own(_) => self.daemon_pull(wanted, image).await,
            Source::Mirror(m) => match m.image_for(image) {
                Ok(on_mirror) => match self.daemon_pull(wanted, &on_mirror).await {
                    Ok(bytes) => self.adopt_from_mirror(image, m).await.map(|()| bytes),
                    Err(e) => Err(e),
                },
                Err(e) => Err(EngineError::other(e.to_string())),
            },
        };
        let error = match outcome {
            Ok(bytes) => {
                self.transport.breaker().success(&source.host());
                return Ok(Pulled {
                    source: key,
                    bytes,
                    resumes: 0,
                    attempts: 1,
                    fetched: None,
                });
            }
            Err(e) => e,
        };
        let mut message = error.to_string();
        let mut classification = classify(&message);
        let behind_daemon_mirror = (classification.dns_failure
            || classification.docker_hub_unreachable)
            && matches!(source, Source::Own(_))
            && image.is_docker_hub()
            && !self.options.daemon_mirrors.is_empty();
        if behind_daemon_mirror {
            // dockerd reports only its fallback's error whatever the mirror did:
            // ask the mirror itself.
            match self.probe_daemon_mirrors(image).await {
                Some((mirror, ProbeResult::Missing)) => {
                    classification.class = ErrorClass::Permanent;
                    message = format!("manifest unknown: the daemon's mirror {mirror} has no `{image}` (HTTP 404)");
                }
                Some((mirror, ProbeResult::RateLimited { retry_after })) => {
                    classification.class = ErrorClass::RateLimited;
                    classification.retry_after = retry_after;
                    message = format!(
                        "toomanyrequests: the daemon's mirror {mirror} is rate limiting (HTTP 429)"
                    );
                }
                Some((mirror, ProbeResult::Unavailable { message: why })) => {
                    message = format!("the daemon's mirror {mirror} failed ({why}); dockerd then fell back to Docker Hub: {message}");
                }
                _ => {}
            }
        }
        // A 429 is a source that answers (its pace is the health's business), not one
        // that keeps failing.
        if classification.class == ErrorClass::Transient
            && self.transport.breaker().failure(&source.host())
        {
            self.emit(PrefetchEvent::SourceSkipped {
                source: key.clone(),
            });
        }
        Err(Failed {
            message,
            classification,
            source: source.host(),
            explained_by_mirror: behind_daemon_mirror,
            bytes: 0,
            resumes: 0,
            attempts: 1,
            again: true,
        })
    }

    /// The next source in turn that is not skipped; when all are, the next in turn.
    fn pick(&self, sources: &[Source], turn: &mut usize) -> Source {
        let n = sources.len();
        for k in 0..n {
            let candidate = &sources[(*turn + k) % n];
            if !self.transport.breaker().is_open(&candidate.host()) {
                *turn += k + 1;
                return candidate.clone();
            }
        }
        let source = sources[*turn % n].clone();
        *turn += 1;
        source
    }

    /// One `docker pull` of `pull` (the image, or its name on a mirror) for the wanted
    /// platform, with the stall watchdog and progress aggregation; returns the bytes
    /// the daemon reported.
    async fn daemon_pull(
        &self,
        wanted: &Wanted,
        pull: &ImageReference,
    ) -> Result<u64, EngineError> {
        let timeout = self.options.stall_timeout;
        let mut events = self.engine.pull(pull, wanted.platform.as_ref()).await;
        let mut layers: HashMap<String, (u64, u64)> = HashMap::new();
        loop {
            match tokio::time::timeout(timeout, events.next()).await {
                Err(_) => return Err(EngineError::Stalled { timeout }),
                Ok(None) => return Ok(layers.values().map(|(_, total)| total).sum()),
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(event))) => {
                    let Some(layer) = event.layer else { continue };
                    let entry = layers.entry(layer).or_default();
                    match (event.status.as_str(), event.current, event.total) {
                        ("Downloading", Some(c), Some(t)) => *entry = (c, t),
                        ("Download complete" | "Pull complete" | "Already exists", _, _) => {
                            entry.0 = entry.1
                        }
                        _ => continue,
                    }
                    let (current, total) = layers
                        .values()
                        .fold((0, 0), |(c, t), (lc, lt)| (c + lc, t + lt));
                    self.emit(PrefetchEvent::Progress {
                        image: wanted.clone(),
                        current,
                        total,
                    });
                }
            }
        }
    }

    /// Names an image pulled from a mirror with its own name, and drops the mirror's.
    async fn adopt_from_mirror(
        &self,
        image: &ImageReference,
        mirror: &Mirror,
    ) -> Result<(), EngineError> {
        let on_mirror = mirror
            .image_for(image)
            .map_err(|e| EngineError::other(e.to_string()))?;
        if image.tag().is_some() {
            self.engine.tag(&on_mirror, image).await?;
        }
        if let Err(e) = self.engine.untag(&on_mirror).await {
            tracing::debug!("could not remove the mirror's name `{on_mirror}`: {e}");
        }
        Ok(())
    }

    /// Asks the daemon's mirrors directly; the first definite answer wins.
    async fn probe_daemon_mirrors(&self, image: &ImageReference) -> Option<(String, ProbeResult)> {
        let mut last = None;
        for mirror in &self.options.daemon_mirrors {
            let result = probe_manifest(
                self.transport.client(),
                mirror,
                image,
                self.options.probe_timeout,
            )
            .await;
            let name = mirror.trim_end_matches('/').to_owned();
            match result {
                ProbeResult::Unavailable { .. } => last = Some((name, result)),
                definite => return Some((name, definite)),
            }
        }
        last
    }
}
