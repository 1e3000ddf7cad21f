//! Classifying pull and build errors: retry, retry later, or give up.
//!
//! The strings are the ones dockerd and registries really return, captured from
//! every engine of the test bed into `tests/data/pull-errors/` (which the tests here
//! read): `EOF`, `request canceled while waiting for connection`, `toomanyrequests`,
//! `manifest unknown`, and the Docker Hub fallback error a graph-driver daemon
//! reports for any fault of its mirror. Anything unknown is treated as transient: on the
//! networks this crate is for, giving up on a flaky error costs a whole build,
//! while retrying a permanent one costs a bounded number of attempts.

use std::time::Duration;

use serde::Serialize;

/// What kind of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// A network or server hiccup: retry with backoff.
    Transient,
    /// The registry's rate limit: retry after a longer wait (`Retry-After` when known).
    RateLimited,
    /// Retrying cannot help (missing image, no access, wrong platform, bad reference).
    Permanent,
}

impl ErrorClass {
    /// The name used in reports (`transient`, `rate-limited`, `permanent`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::RateLimited => "rate-limited",
            ErrorClass::Permanent => "permanent",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error's class and what else the message tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// The class.
    pub class: ErrorClass,
    /// A wait the server asked for (`Retry-After`), when known.
    pub retry_after: Option<Duration>,
    /// The daemon could not resolve a registry host: a flaky resolver, or (behind a
    /// daemon mirror) the fallback to Docker Hub after the mirror failed.
    pub dns_failure: bool,
    /// The daemon failed to reach Docker Hub itself (`registry-1.docker.io`,
    /// `auth.docker.io`): behind a daemon mirror, that is dockerd's fallback after
    /// the mirror failed, and the message says nothing about what the mirror did.
    pub docker_hub_unreachable: bool,
}

const PERMANENT: &[&str] = &[
    "manifest unknown",
    "name unknown",
    "repository does not exist",
    "pull access denied",
    "no matching manifest",
    "invalid reference format",
    "unauthorized",
    "denied: ",
    "requested access to the resource is denied",
    "no space left on device",
    "not a valid repository",
];

const RATE_LIMITED: &[&str] = &["toomanyrequests", "too many requests", "429", "rate limit"];

const DNS: &[&str] = &[
    "no such host",
    "temporary failure in name resolution",
    "server misbehaving",
];

/// Classifies an error message from dockerd or a registry.
pub fn classify(message: &str) -> Classification {
    let lower = message.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    // Network causes win over words like "unauthorized" in `failed to authorize: … EOF`.
    let network_cause = any(&[
        "eof",
        "connection reset",
        "connection refused",
        "i/o timeout",
        "timeout",
        "request canceled",
        "deadline exceeded",
        "broken pipe",
        "no such host",
        "tls handshake",
    ]);
    // A registry's answer quoted by the daemon (`unexpected status from HEAD request
    // to URL: 403 Forbidden`, `received unexpected HTTP status: 500 …`) says it all.
    let class = if let Some(status) = quoted_status(&lower) {
        ErrorClass::of_status(status)
    } else if any(RATE_LIMITED) {
        ErrorClass::RateLimited
    } else if (any(PERMANENT) || bare_denial(&lower) || resolved_not_found(&lower))
        && !network_cause
    {
        ErrorClass::Permanent
    } else {
        ErrorClass::Transient
    };
    Classification {
        class,
        retry_after: retry_after(&lower),
        dns_failure: class == ErrorClass::Transient && any(DNS),
        docker_hub_unreachable: class == ErrorClass::Transient
            && network_cause
            && any(&["registry-1.docker.io", "auth.docker.io", "index.docker.io"]),
    }
}

impl ErrorClass {
    /// The class of a registry's HTTP status: 404, 401, 403 (and other 4xx but 408 and
    /// 429) permanent, 429 rate-limited, the rest (5xx, 408) transient.
    pub fn of_status(status: u16) -> ErrorClass {
        match status {
            429 => ErrorClass::RateLimited,
            408 => ErrorClass::Transient,
            400..=499 => ErrorClass::Permanent,
            _ => ErrorClass::Transient,
        }
    }
}

/// The HTTP status a daemon quotes from a registry: `unexpected status from HEAD request
/// to URL: 500 Internal Server Error` (containerd) or `received unexpected HTTP status:
/// 503 Service Unavailable` (dockerd's own puller).
fn quoted_status(lower: &str) -> Option<u16> {
    let at = lower
        .rfind("unexpected status from")
        .or_else(|| lower.rfind("unexpected http status"))?;
    let rest = &lower[at..];
    // The status follows the last `: ` of that clause (URLs carry `:` but not `: `).
    let (_, tail) = rest.rsplit_once(": ")?;
    let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
    (digits.len() == 3).then(|| digits.parse().ok()).flatten()
}

/// A registry's `DENIED` error quoted alone (`denied`, `denied: …`).
fn bare_denial(lower: &str) -> bool {
    let t = lower.trim();
    t == "denied" || t.starts_with("denied:")
}

/// The containerd image store's word for a missing image: `failed to resolve reference
/// "R": R: not found`.
fn resolved_not_found(lower: &str) -> bool {
    lower.contains("failed to resolve reference") && lower.trim_end().ends_with(": not found")
}

/// Output of a build step that says the network failed, not the step (a package
/// mirror answering 500 or EOF inside `RUN apt-get`: apt, apk, pip and npm behind a
/// flaky mirror).
const STEP_NETWORK: &[&str] = &[
    "500 internal server error",
    "502 bad gateway",
    "503 service unavailable",
    "504 gateway time",
    "connection reset by peer",
    "temporary failure resolving",
    "temporary failure in name resolution",
    "could not resolve host",
    "tls handshake timeout",
    "unexpected eof",
    "connection timed out",
    "network is unreachable",
    "econnreset",
    "etimedout",
    "eai_again",
    "read timed out",
    "remote end closed connection",
];

/// Classifies a failed build from the daemon's message and the failing step's last
/// output lines (`heredocs_rejected`: the Dockerfile opens heredocs that the daemon's
/// built-in frontend does not accept); returns the class and, when we know one, a hint.
///
/// A base-image pull error is classified like a pull; a step whose output shows a
/// network fault is transient; `exec format error` and a heredoc that the daemon's
/// built-in frontend cannot parse are permanent with a hint; any other failing
/// step is permanent (its command failed; running it again will not help).
pub fn classify_build(
    message: &str,
    last_lines: &[String],
    heredocs_rejected: bool,
) -> (ErrorClass, Option<String>) {
    // apt prints `500  Internal Server Error`: compare with single spaces.
    let squash = |t: &str| {
        t.split(' ')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let lower = squash(&message.to_ascii_lowercase());
    let tail = squash(&last_lines.join("\n").to_ascii_lowercase());
    if lower.contains("exec format error") || tail.contains("exec format error") {
        return (
            ErrorClass::Permanent,
            Some("a binary in the image was built for another CPU architecture or OS (a macOS or arm64 binary in a linux/amd64 image?): rebuild it for the image's platform, or set the service's `platform`".into()),
        );
    }
    if lower.contains("requires buildkit") || lower.contains("failed to parse platform") {
        return (
            ErrorClass::Permanent,
            Some("this Dockerfile needs BuildKit (`RUN --mount`, `FROM --platform=$BUILDPLATFORM`), and the classic builder ran it: unset DOCKER_BUILDKIT=0, or use a daemon with BuildKit (Docker 18.09+ on Linux)".into()),
        );
    }
    if lower.contains("unknown instruction") && heredocs_rejected {
        return (
            ErrorClass::Permanent,
            Some("the daemon's built-in Dockerfile frontend does not support heredocs: add `# syntax=docker/dockerfile:1.4` (or newer) as the Dockerfile's first line, or use a newer daemon (Docker 23+)".into()),
        );
    }
    let pull = [
        "failed to resolve reference",
        "failed to do request",
        "failed to fetch oauth token",
        "failed to authorize",
        "pull access denied",
        "manifest unknown",
        "error pulling image",
        "failed to copy",
        "failed to load cache key",
    ];
    let step_failed = lower.contains("did not complete successfully")
        || lower.contains("returned a non-zero code")
        || lower.contains("exit code:");
    if !step_failed && pull.iter().any(|p| lower.contains(p)) {
        return (classify(message).class, None);
    }
    if STEP_NETWORK
        .iter()
        .any(|p| tail.contains(p) || lower.contains(p))
    {
        return (ErrorClass::Transient, None);
    }
    // The stream from the daemon broke (not the build): try again.
    let transport = [
        "bytes remaining on stream",
        "error decoding response body",
        "connection closed before message completed",
        "incomplete message",
    ];
    if !step_failed && transport.iter().any(|p| lower.contains(p)) {
        return (ErrorClass::Transient, None);
    }
    if !step_failed {
        let c = classify(message).class;
        if c != ErrorClass::Permanent
            && [
                "eof",
                "connection reset",
                "connection refused",
                "timeout",
                "tls handshake",
                "no such host",
            ]
            .iter()
            .any(|p| lower.contains(p))
        {
            return (c, None);
        }
    }
    (ErrorClass::Permanent, None)
}

/// `Retry-After: N` (seconds) inside a message, if any.
fn retry_after(lower: &str) -> Option<Duration> {
    let at = lower.find("retry-after")?;
    let digits: String = lower[at + "retry-after".len()..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_failures() {
        let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let exit3 = "process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3";
        assert_eq!(
            classify_build(exit3, &lines(&["compiling"]), false).0,
            ErrorClass::Permanent
        );
        let apt = lines(&[
            "Err:1 http://deb.debian.org/debian bookworm InRelease",
            "  500  Internal Server Error [IP: 127.0.0.1 80]",
            "E: Failed to fetch",
        ]);
        let exit100 =
            "process \"/bin/sh -c apt-get update\" did not complete successfully: exit code: 100";
        assert_eq!(
            classify_build(exit100, &apt, false).0,
            ErrorClass::Transient
        );
        let pip = lines(&[
            "ERROR: Could not install packages due to an OSError: Connection reset by peer",
        ]);
        assert_eq!(
            classify_build("returned a non-zero code: 1", &pip, false).0,
            ErrorClass::Transient
        );
        let pull = r#"failed to solve: ubuntu:22.04: failed to do request: Head "https://registry-1.docker.io/v2/library/ubuntu/manifests/22.04": EOF"#;
        assert_eq!(classify_build(pull, &[], false).0, ErrorClass::Transient);
        let missing = "failed to solve: acme/x:1: pull access denied, repository does not exist or may require authorization";
        assert_eq!(classify_build(missing, &[], false).0, ErrorClass::Permanent);
        let (class, hint) = classify_build(
            "exit code: 1",
            &lines(&["/bin/sh: ./app: exec format error"]),
            false,
        );
        assert_eq!(class, ErrorClass::Permanent);
        assert!(hint.unwrap().contains("architecture"));
        let (class, hint) = classify_build(
            "dockerfile parse error line 3: unknown instruction: ECHO",
            &[],
            true,
        );
        assert_eq!(class, ErrorClass::Permanent);
        assert!(hint.unwrap().contains("# syntax=docker/dockerfile:1.4"));
        let (class, hint) = classify_build(
            "the --mount option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/",
            &[],
            false,
        );
        assert_eq!(class, ErrorClass::Permanent);
        assert!(hint.unwrap().contains("needs BuildKit"));
    }

    fn class(m: &str) -> ErrorClass {
        classify(m).class
    }

    #[test]
    fn transient_strings() {
        for m in [
            r#"Get "https://registry-1.docker.io/v2/": EOF"#,
            r#"Head "http://127.0.0.1:5001/v2/library/redis/manifests/7-alpine": EOF"#,
            "unexpected EOF",
            "read tcp 10.0.0.2:443: connection reset by peer",
            "dial tcp: i/o timeout",
            "net/http: TLS handshake timeout",
            "net/http: request canceled while waiting for connection (Client.Timeout exceeded while awaiting headers)",
            "context deadline exceeded",
            "received unexpected HTTP status: 500 Internal Server Error",
            "received unexpected HTTP status: 502 Bad Gateway",
            "failed to fetch oauth token: Post \"https://auth.docker.io/token\": EOF",
            "failed to authorize: failed to fetch anonymous token: unexpected EOF",
            "stalled: no progress for 30s",
            "something nobody has seen before",
        ] {
            assert_eq!(class(m), ErrorClass::Transient, "{m}");
        }
    }

    #[test]
    fn permanent_strings() {
        for m in [
            "manifest for redis:nope not found: manifest unknown: manifest unknown",
            "pull access denied for acme/private, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
            "no matching manifest for linux/arm64/v8 in the manifest list entries",
            "invalid reference format",
            "name unknown: repository name not known to registry",
            "unauthorized: authentication required",
        ] {
            assert_eq!(class(m), ErrorClass::Permanent, "{m}");
        }
    }

    #[test]
    fn rate_limited() {
        let c = classify("toomanyrequests: You have reached your pull rate limit. Retry-After: 7");
        assert_eq!(c.class, ErrorClass::RateLimited);
        assert_eq!(c.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(
            class("received unexpected HTTP status: 429 Too Many Requests"),
            ErrorClass::RateLimited
        );
    }

    /// The texts each engine of the test matrix really returned (captured by
    /// `scripts/fixtures/capture-pull-errors ENGINE`), with the class each must get.
    #[test]
    fn captured_errors_of_every_engine() {
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/pull-errors");
        let mut engines = 0;
        let mut cases = 0;
        for engine in std::fs::read_dir(&root).unwrap().flatten() {
            let dir = engine.path();
            let expected = std::fs::read_to_string(dir.join("expected.tsv")).unwrap();
            engines += 1;
            for line in expected
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            {
                let (case, class) = line.split_once('\t').unwrap();
                let text = std::fs::read_to_string(dir.join(format!("{case}.txt")))
                    .unwrap_or_else(|e| panic!("{}/{case}.txt: {e}", dir.display()));
                let got = classify(text.trim()).class;
                assert_eq!(
                    got.as_str(),
                    class.trim(),
                    "{}: {case}: {text}",
                    dir.display()
                );
                cases += 1;
            }
        }
        assert!(
            engines >= 2 && cases >= 30,
            "{engines} engines, {cases} cases"
        );
    }

    #[test]
    fn statuses_quoted_by_daemons() {
        assert_eq!(quoted_status("unexpected status from head request to http://127.0.0.1:5001/v2/x/manifests/1?ns=docker.io: 403 forbidden"), Some(403));
        assert_eq!(
            quoted_status("received unexpected http status: 500 internal server error"),
            Some(500)
        );
        assert_eq!(quoted_status("eof"), None);
        assert_eq!(ErrorClass::of_status(404), ErrorClass::Permanent);
        assert_eq!(ErrorClass::of_status(429), ErrorClass::RateLimited);
        assert_eq!(ErrorClass::of_status(502), ErrorClass::Transient);
    }

    #[test]
    fn dns() {
        let c = classify(
            r#"Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on 10.0.0.53:53: no such host"#,
        );
        assert_eq!(c.class, ErrorClass::Transient);
        assert!(c.dns_failure);
        assert!(!classify("EOF").dns_failure);
        assert!(c.docker_hub_unreachable);
        let refused = classify(
            r#"Get "https://registry-1.docker.io/v2/": dial tcp 127.0.0.1:443: connect: connection refused"#,
        );
        assert_eq!(refused.class, ErrorClass::Transient);
        assert!(refused.docker_hub_unreachable && !refused.dns_failure);
        assert!(!classify("EOF").docker_hub_unreachable);
    }
}
