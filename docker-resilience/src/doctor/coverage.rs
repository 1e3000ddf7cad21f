//! Coverage: how many of the plan's images a mirror already holds (a `HEAD` per
//! manifest, with the registry client's auth), so that a team sees whether its fleet's
//! mirror is warm before a release, and which images a `drbuild sync` would add.

use std::time::Duration;

use super::{Check, CheckStatus};
use crate::registry::client::{Endpoint, RegistryClient, RequestError};
use crate::registry::credentials::Credentials;
use crate::registry::transport::{RequestKind, Step, Transport, BREAKER_THRESHOLD};
use crate::resilience::retry::RetryPolicy;
use crate::vocab::ImageReference;

/// What a mirror said about one image.
pub(super) type Answer = Result<bool, String>;

/// Asks the mirror at `url` for each of `images` (those it mirrors: Docker Hub's for a
/// daemon's `registry-mirrors`).
pub(super) async fn coverage(url: &str, images: &[ImageReference], timeout: Duration) -> Check {
    let endpoint = Endpoint::daemon_mirror(url);
    // A glitch is tried once more; a check must not wait out a long backoff.
    let transport = Transport::new(
        RegistryClient::new(Credentials::from_docker_config(), timeout),
        &RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::quick()
        },
        BREAKER_THRESHOLD,
    );
    let answers = futures_util::future::join_all(images.iter().map(|image| {
        let transport = &transport;
        let endpoint = &endpoint;
        async move {
            let repository = endpoint.repository(image);
            let asked = transport.request(
                std::slice::from_ref(endpoint),
                RequestKind::Other,
                None,
                &|_| {},
                |_| {
                    let asked = transport.client().manifest_digest(
                        endpoint,
                        &repository,
                        image.tag_or_digest(),
                    );
                    async move { asked.await.map(Step::Done) }
                },
            );
            let answer = tokio::time::timeout(timeout, asked)
                .await
                .map_err(|_| format!("no answer in {}s", timeout.as_secs()))
                .and_then(|r: Result<_, RequestError>| {
                    r.map(|served| served.value.is_some())
                        .map_err(|e| e.to_string())
                });
            (image.clone(), answer)
        }
    }))
    .await;
    verdict(&endpoint.host, &answers)
}

/// The verdict from each image's answer.
pub(super) fn verdict(mirror: &str, answers: &[(ImageReference, Answer)]) -> Check {
    let name = format!("coverage {mirror}");
    let total = answers.len();
    let held = answers
        .iter()
        .filter(|(_, a)| matches!(a, Ok(true)))
        .count();
    let missing: Vec<String> = answers
        .iter()
        .filter(|(_, a)| matches!(a, Ok(false)))
        .map(|(i, _)| i.familiar())
        .collect();
    let unknown: Vec<String> = answers
        .iter()
        .filter_map(|(i, a)| a.as_ref().err().map(|e| format!("{} ({e})", i.familiar())))
        .collect();
    if total == 0 {
        return Check::ok(name, "the plan needs no image this mirror serves");
    }
    let mut message = format!("holds {held} of the plan's {total} image(s) it would serve");
    if !missing.is_empty() {
        message.push_str(&format!("; missing: {}", missing.join(", ")));
    }
    if !unknown.is_empty() {
        message.push_str(&format!("; no answer for: {}", unknown.join(", ")));
    }
    if missing.is_empty() && unknown.is_empty() {
        return Check::ok(name, message);
    }
    Check::new(
        name,
        CheckStatus::Warn,
        message,
        Some(format!(
            "every daemon behind it fetches the missing ones upstream on first pull: fill it first with `drbuild sync ROOT --to {mirror}`"
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> ImageReference {
        s.parse().expect("reference")
    }

    #[test]
    fn a_warm_mirror_is_ok_and_a_cold_one_names_what_it_lacks() {
        let all = [
            (r("nginx:stable"), Ok(true)),
            (r("redis:7-alpine"), Ok(true)),
        ];
        let check = verdict("127.0.0.1:5002", &all);
        assert_eq!(check.status, CheckStatus::Ok);
        assert_eq!(
            check.message,
            "holds 2 of the plan's 2 image(s) it would serve"
        );
        let some = [
            (r("nginx:stable"), Ok(true)),
            (r("redis:7-alpine"), Ok(false)),
            (r("alpine:3.18"), Err("HTTP 500".to_owned())),
        ];
        let check = verdict("127.0.0.1:5002", &some);
        assert_eq!(check.name, "coverage 127.0.0.1:5002");
        assert_eq!(check.status, CheckStatus::Warn);
        assert_eq!(
            check.message,
            "holds 1 of the plan's 3 image(s) it would serve; missing: redis:7-alpine; no answer for: alpine:3.18 (HTTP 500)"
        );
        assert!(check
            .hint
            .as_deref()
            .unwrap_or_default()
            .contains("drbuild sync ROOT --to 127.0.0.1:5002"));
    }
}
