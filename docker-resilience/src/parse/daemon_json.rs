//! `/etc/docker/daemon.json`: the mistakes that cost our users hours when they switch
//! registry mirrors after Docker Hub stops answering:
//! a syntax error that keeps dockerd from starting, a mirror without its scheme.

use serde_json::Value;

/// Where dockerd reads its configuration on Linux.
pub const DAEMON_JSON: &str = "/etc/docker/daemon.json";

/// Keys dockerd 20.10+ accepts in daemon.json (a typo is reported, as dockerd refuses it).
const KNOWN_KEYS: &[&str] = &[
    "allow-nondistributable-artifacts",
    "api-cors-header",
    "authorization-plugins",
    "bip",
    "bip6",
    "bridge",
    "builder",
    "cgroup-parent",
    "containerd",
    "containerd-namespace",
    "containerd-plugins-namespace",
    "data-root",
    "debug",
    "default-address-pools",
    "default-cgroupns-mode",
    "default-gateway",
    "default-gateway-v6",
    "default-ipc-mode",
    "default-network-opts",
    "default-runtime",
    "default-shm-size",
    "default-ulimits",
    "dns",
    "dns-opts",
    "dns-search",
    "exec-opts",
    "exec-root",
    "experimental",
    "features",
    "fixed-cidr",
    "fixed-cidr-v6",
    "group",
    "host-gateway-ip",
    "hosts",
    "http-proxy",
    "https-proxy",
    "icc",
    "init",
    "init-path",
    "insecure-registries",
    "ip",
    "ip-forward",
    "ip-masq",
    "ip6tables",
    "iptables",
    "ipv6",
    "labels",
    "live-restore",
    "log-driver",
    "log-format",
    "log-level",
    "log-opts",
    "max-concurrent-downloads",
    "max-concurrent-uploads",
    "max-download-attempts",
    "metrics-addr",
    "mtu",
    "no-new-privileges",
    "no-proxy",
    "node-generic-resources",
    "oom-score-adjust",
    "pidfile",
    "proxies",
    "raw-logs",
    "registry-mirrors",
    "runtimes",
    "seccomp-profile",
    "selinux-enabled",
    "shutdown-timeout",
    "storage-driver",
    "storage-opts",
    "swarm-default-advertise-addr",
    "tls",
    "tlscacert",
    "tlscert",
    "tlskey",
    "tlsverify",
    "userland-proxy",
    "userland-proxy-path",
    "userns-remap",
    "cpu-rt-period",
    "cpu-rt-runtime",
    "cri-containerd",
    "default-runtime",
    "oom-kill-disable",
];

/// One finding about a daemon.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonJsonIssue {
    /// `true`: dockerd refuses the file or a pull breaks; `false`: worth a look.
    pub fatal: bool,
    /// What is wrong, with the line and column when known.
    pub message: String,
    /// What to do.
    pub hint: String,
}

/// What a daemon.json says that matters to pulls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonJson {
    /// `registry-mirrors`, as written.
    pub mirrors: Vec<String>,
    /// What is wrong with it.
    pub issues: Vec<DaemonJsonIssue>,
}

impl DaemonJson {
    /// Checks the text of a daemon.json.
    pub fn check(text: &str) -> DaemonJson {
        let mut out = DaemonJson::default();
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                out.issues.push(DaemonJsonIssue {
                    fatal: true,
                    message: format!("invalid JSON at line {}, column {}: {e}", e.line(), e.column()),
                    hint: "dockerd will not start with it: fix the syntax (a trailing comma or a missing quote is the usual cause), then `sudo systemctl restart docker`".into(),
                });
                return out;
            }
        };
        let Some(map) = value.as_object() else {
            out.issues.push(DaemonJsonIssue {
                fatal: true,
                message: "the top level is not a JSON object".into(),
                hint: "daemon.json holds one object: `{\"registry-mirrors\": [\"https://mirror.example.com\"]}`".into(),
            });
            return out;
        };
        for key in map.keys() {
            if !KNOWN_KEYS.contains(&key.as_str()) {
                out.issues.push(DaemonJsonIssue {
                    fatal: true,
                    message: format!("unknown key `{key}`"),
                    hint: "dockerd refuses unknown keys (check its spelling against `man dockerd`)"
                        .into(),
                });
            }
        }
        match map.get("registry-mirrors") {
            None => {}
            Some(Value::Array(items)) => {
                for item in items {
                    match item.as_str() {
                        Some(url) => {
                            out.mirrors.push(url.to_owned());
                            if !(url.starts_with("http://") || url.starts_with("https://")) {
                                out.issues.push(DaemonJsonIssue {
                                    fatal: true,
                                    message: format!("registry mirror `{url}` has no scheme"),
                                    hint: format!("write it as \"https://{url}\" (dockerd refuses a mirror without http:// or https://)"),
                                });
                            }
                        }
                        None => out.issues.push(DaemonJsonIssue {
                            fatal: true,
                            message: format!("registry mirror {item} is not a string"),
                            hint: "\"registry-mirrors\": [\"https://mirror.example.com\"]".into(),
                        }),
                    }
                }
            }
            Some(other) => out.issues.push(DaemonJsonIssue {
                fatal: true,
                message: format!("`registry-mirrors` is {other}, not a list"),
                hint: "\"registry-mirrors\": [\"https://mirror.example.com\"]".into(),
            }),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/daemon-json")
            .join(name);
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn good_file() {
        let d = DaemonJson::check(&fixture("good.json"));
        assert!(d.issues.is_empty(), "{:?}", d.issues);
        assert_eq!(
            d.mirrors,
            [
                "https://mirror.ccs.tencentyun.com",
                "https://docker.m.daocloud.io"
            ]
        );
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let d = DaemonJson::check(&fixture("trailing-comma.json"));
        assert_eq!(d.issues.len(), 1);
        assert!(
            d.issues[0]
                .message
                .starts_with("invalid JSON at line 4, column 3: trailing comma"),
            "{:?}",
            d.issues
        );
    }

    #[test]
    fn mirror_without_scheme_and_unknown_key() {
        let d = DaemonJson::check(&fixture("no-scheme.json"));
        let messages: Vec<&str> = d.issues.iter().map(|i| i.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "unknown key `registry-mirror`",
                "registry mirror `docker.m.daocloud.io` has no scheme"
            ]
        );
        assert!(d.issues[1].hint.contains("https://docker.m.daocloud.io"));
    }
}
