//! Registry mirrors (the daemon's and drbuild.yaml's) and the upstream registries the
//! plan needs: does each answer?

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::{Check, CheckStatus};
use crate::plan::Plan;
use crate::registry::{host_port, ping, PingResult};
use crate::vocab::DOCKER_HUB;

/// `GET /v2/` on a mirror.
pub(super) async fn probe(http: &reqwest::Client, url: &str, whose: &str, config: &Path) -> Check {
    mirror_verdict(url, ping(http, url).await, whose, config)
}

fn mirror_verdict(url: &str, answer: PingResult, whose: &str, config: &Path) -> Check {
    let name = format!("mirror {}", host_port(url));
    let hint = || {
        Some(format!(
            "{whose} mirror does not answer: fix it or remove it from `registry-mirrors` in {} (a dead mirror makes every pull wait for the fallback)",
            config.display()
        ))
    };
    match answer {
        PingResult::Answers(code) => Check::ok(name, format!("{url} answers ({code})")),
        PingResult::Status(code) => Check::new(
            name,
            CheckStatus::Fail,
            format!("{url} answered HTTP {code} to GET /v2/"),
            hint(),
        ),
        PingResult::Unreachable(why) => Check::new(
            name,
            CheckStatus::Fail,
            format!("{url} is unreachable: {why}"),
            hint(),
        ),
    }
}

/// What became of an upstream registry's probe.
#[derive(Debug)]
enum Upstream {
    DnsTimeout,
    DnsFailed(String),
    Ping(PingResult),
}

/// DNS and `GET /v2/` of each registry the plan's images come from.
pub(super) async fn upstreams(
    http: &reqwest::Client,
    plan: &Plan,
    working_mirror: bool,
    timeout: Duration,
) -> Vec<Check> {
    let registries: BTreeSet<String> = plan.references().map(|r| r.registry().to_owned()).collect();
    let mut checks = Vec::new();
    for registry in registries {
        let host = if registry == DOCKER_HUB {
            "registry-1.docker.io".to_owned()
        } else {
            registry.clone()
        };
        let (host_only, port) = match host.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_owned(), p.parse().unwrap_or(443)),
            _ => (host.clone(), 443u16),
        };
        let resolved =
            tokio::time::timeout(timeout, tokio::net::lookup_host((host_only.as_str(), port)))
                .await;
        let outcome = match resolved {
            Err(_) => Upstream::DnsTimeout,
            Ok(Err(e)) => Upstream::DnsFailed(e.to_string()),
            Ok(Ok(_)) => {
                let scheme = if host_only == "127.0.0.1" || host_only == "localhost" {
                    "http"
                } else {
                    "https"
                };
                Upstream::Ping(ping(http, &format!("{scheme}://{host}")).await)
            }
        };
        checks.push(upstream_verdict(&registry, &host, outcome, working_mirror));
    }
    checks
}

fn upstream_verdict(registry: &str, host: &str, outcome: Upstream, working_mirror: bool) -> Check {
    let name = format!("upstream {registry}");
    let host_only = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let why = match outcome {
        Upstream::Ping(PingResult::Answers(code) | PingResult::Status(code)) => {
            return Check::ok(name, format!("{host} answers ({code})"))
        }
        Upstream::DnsTimeout => format!("DNS lookup of {host_only} timed out"),
        Upstream::DnsFailed(e) => format!("DNS lookup of {host_only} failed: {e}"),
        Upstream::Ping(PingResult::Unreachable(e)) => format!("{host} is unreachable: {e}"),
    };
    if registry == DOCKER_HUB && working_mirror {
        Check::new(
            name,
            CheckStatus::Warn,
            why,
            Some("a working registry mirror covers it".into()),
        )
    } else {
        Check::new(
            name,
            CheckStatus::Fail,
            why,
            Some(format!("pulls from {registry} will fail: configure a mirror (`registry-mirrors` in daemon.json, or `drbuild prefetch --mirror`), a proxy, or bring the images over with `drbuild export`/`import`")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_verdicts() {
        let cfg = Path::new("/etc/docker/daemon.json");
        let ok = mirror_verdict(
            "http://127.0.0.1:5001",
            PingResult::Answers(401),
            "the daemon's",
            cfg,
        );
        assert_eq!(
            (ok.name.as_str(), ok.status),
            ("mirror 127.0.0.1:5001", CheckStatus::Ok)
        );
        let bad = mirror_verdict(
            "https://m.example.com",
            PingResult::Status(502),
            "the daemon's",
            cfg,
        );
        assert_eq!(bad.status, CheckStatus::Fail);
        assert_eq!(
            bad.message,
            "https://m.example.com answered HTTP 502 to GET /v2/"
        );
        assert!(bad.hint.unwrap().contains("/etc/docker/daemon.json"));
        let dead = mirror_verdict(
            "http://127.0.0.1:9",
            PingResult::Unreachable("connection refused".into()),
            "drbuild.yaml's",
            Path::new("drbuild.yaml"),
        );
        assert_eq!(
            dead.message,
            "http://127.0.0.1:9 is unreachable: connection refused"
        );
    }

    #[test]
    fn docker_hub_down_is_a_warning_only_behind_a_working_mirror() {
        let down = || Upstream::DnsFailed("no such host".into());
        let covered = upstream_verdict("docker.io", "registry-1.docker.io", down(), true);
        assert_eq!(covered.status, CheckStatus::Warn);
        assert_eq!(
            covered.message,
            "DNS lookup of registry-1.docker.io failed: no such host"
        );
        let bare = upstream_verdict("docker.io", "registry-1.docker.io", down(), false);
        assert_eq!(bare.status, CheckStatus::Fail);
        let ghcr = upstream_verdict("ghcr.io", "ghcr.io", down(), true);
        assert_eq!(
            ghcr.status,
            CheckStatus::Fail,
            "a Docker Hub mirror does not cover ghcr.io"
        );
        let up = upstream_verdict(
            "127.0.0.1:5000",
            "127.0.0.1:5000",
            Upstream::Ping(PingResult::Answers(200)),
            false,
        );
        assert_eq!(
            (up.status, up.message.as_str()),
            (CheckStatus::Ok, "127.0.0.1:5000 answers (200)")
        );
        let slow = upstream_verdict("quay.io", "quay.io", Upstream::DnsTimeout, false);
        assert_eq!(slow.message, "DNS lookup of quay.io timed out");
    }
}
