//! Proxy settings: the shell's and the daemon's. Pulls go through the daemon's proxy,
//! not the shell's.

use super::{Check, CheckStatus};
use crate::vocab::Redacted;

const KEYS: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// The proxy variables of this process's environment.
pub(super) fn shell_proxies() -> Vec<(String, String)> {
    KEYS.iter()
        .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// The verdict on the shell's and the daemon's proxies.
pub(super) fn proxies(shell: &[(String, String)], daemon: &[(String, String)]) -> Check {
    let mut found: Vec<String> = shell
        .iter()
        .map(|(k, v)| format!("{k}={} (this shell)", Redacted(v)))
        .collect();
    found.extend(
        daemon
            .iter()
            .map(|(k, v)| format!("{k}={} (daemon)", Redacted(v))),
    );
    if found.is_empty() {
        return Check::ok("proxy", "no proxy configured (shell or daemon)");
    }
    // Pulls go through the daemon's proxy, not the shell's: say so when they differ.
    let hint = (!shell.is_empty() && daemon.is_empty()).then(|| "the daemon does not use this shell's proxy: set it in a systemd drop-in (`Environment=HTTPS_PROXY=…` in /etc/systemd/system/docker.service.d/proxy.conf) or `proxies` in daemon.json".to_owned());
    let status = if hint.is_some() {
        CheckStatus::Warn
    } else {
        CheckStatus::Ok
    };
    Check::new("proxy", status, found.join(", "), hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        let check = proxies(
            &vars(&[("HTTPS_PROXY", "http://alice:s3cr3tpw@proxy:3128")]),
            &vars(&[("HTTP_PROXY", "http://bob:hunter22@proxy:3128")]),
        );
        assert_eq!(
            check.message,
            "HTTPS_PROXY=http://alice:***@proxy:3128 (this shell), HTTP_PROXY=http://bob:***@proxy:3128 (daemon)"
        );
    }

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn verdicts() {
        assert_eq!(proxies(&[], &[]).status, CheckStatus::Ok);
        let shell_only = proxies(&vars(&[("HTTPS_PROXY", "http://proxy:3128")]), &[]);
        assert_eq!(shell_only.status, CheckStatus::Warn);
        assert_eq!(
            shell_only.message,
            "HTTPS_PROXY=http://proxy:3128 (this shell)"
        );
        let both = proxies(
            &vars(&[("HTTPS_PROXY", "http://proxy:3128")]),
            &vars(&[("HTTPS_PROXY", "http://proxy:3128")]),
        );
        assert_eq!(both.status, CheckStatus::Ok);
        assert!(both.message.ends_with("(daemon)"));
    }
}
