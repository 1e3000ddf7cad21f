//! Host ports that compose services publish and something already holds (`port is
//! already allocated`, the service that will not start): a container, or a process found through
//! `/proc/net/tcp{,6}` and `/proc/*/fd`.

use super::{Check, CheckStatus};
use crate::engine::DockerEngine;
use crate::parse::compose::PublishedPort;
use crate::plan::Plan;

/// A socket in LISTEN state: its address (`0.0.0.0`, `127.0.0.1`, `::`, `::1`), port and inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listening {
    ip: String,
    port: u16,
    inode: u64,
}

/// The LISTEN sockets of a `/proc/net/tcp` (or `tcp6`) table.
fn parse_proc_net(text: &str, v6: bool) -> Vec<Listening> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 10 || cols[3] != "0A" {
            continue;
        }
        let Some((addr, port)) = cols[1].split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port, 16) else {
            continue;
        };
        let ip = if v6 {
            // Four 32-bit words, each in host (little-endian) byte order.
            let mut bytes = [0u8; 16];
            for (w, chunk) in addr.as_bytes().chunks(8).enumerate().take(4) {
                let word = std::str::from_utf8(chunk)
                    .ok()
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .unwrap_or(0);
                bytes[w * 4..w * 4 + 4].copy_from_slice(&word.swap_bytes().to_be_bytes());
            }
            std::net::Ipv6Addr::from(bytes).to_string()
        } else {
            u32::from_str_radix(addr, 16)
                .map(|a| std::net::Ipv4Addr::from(a.swap_bytes()).to_string())
                .unwrap_or_default()
        };
        out.push(Listening {
            ip,
            port,
            inode: cols[9].parse().unwrap_or(0),
        });
    }
    out
}

fn listening() -> Vec<Listening> {
    [("/proc/net/tcp", false), ("/proc/net/tcp6", true)]
        .iter()
        .filter_map(|(file, v6)| Some(parse_proc_net(&std::fs::read_to_string(file).ok()?, *v6)))
        .flatten()
        .collect()
}

/// The process holding a socket inode: `pid N (comm)`.
fn socket_owner(inode: u64) -> Option<String> {
    if inode == 0 {
        return None;
    }
    let needle = format!("socket:[{inode}]");
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = proc_entry.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == needle) {
                let comm =
                    std::fs::read_to_string(proc_entry.path().join("comm")).unwrap_or_default();
                return Some(format!("pid {pid} ({})", comm.trim()));
            }
        }
    }
    None
}

/// The published host ports of the plan's compose services, checked against this host.
pub(super) async fn ports(engine: &DockerEngine, plan: &Plan) -> Check {
    let wanted: Vec<(String, PublishedPort)> = plan
        .compose
        .iter()
        .flat_map(|p| p.services.values())
        .flat_map(|s| s.ports.iter().map(move |p| (s.name.clone(), p.clone())))
        .filter(|(_, p)| p.host_port != 0 && p.protocol == "tcp")
        .collect();
    if wanted.is_empty() {
        return Check::ok("ports", "no published host ports");
    }
    let containers = engine.published_ports().await;
    verdict(&wanted, &listening(), &containers, socket_owner)
}

fn verdict(
    wanted: &[(String, PublishedPort)],
    listening: &[Listening],
    containers: &[(u16, String)],
    owner: impl Fn(u64) -> Option<String>,
) -> Check {
    let mut busy = Vec::new();
    for (service, p) in wanted {
        let host_ip = p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into());
        let any = |ip: &str| ip == "0.0.0.0" || ip == "::";
        let held = listening
            .iter()
            .find(|l| l.port == p.host_port && (l.ip == host_ip || any(&l.ip) || any(&host_ip)));
        let by = match (
            containers.iter().find(|(port, _)| *port == p.host_port),
            held,
        ) {
            (Some((_, name)), _) => Some(format!("container {name}")),
            (None, Some(l)) => Some(owner(l.inode).unwrap_or_else(|| "another process".into())),
            (None, None) => None,
        };
        if let Some(by) = by {
            busy.push(format!(
                "port {} ({}:{}, service {service}) is in use by {by}",
                p.host_port,
                p.path.display(),
                p.line
            ));
        }
    }
    if busy.is_empty() {
        return Check::ok("ports", format!("{} published port(s) free", wanted.len()));
    }
    Check::new(
        "ports",
        CheckStatus::Fail,
        busy.join("; "),
        Some("`port is already allocated` would stop these services: stop what holds the port (`docker stop NAME`, or the process), or publish another host port".into()),
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/data/proc-net")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn parses_captured_tables() {
        let v4 = parse_proc_net(&fixture("tcp"), false);
        assert_eq!(
            v4[0],
            Listening {
                ip: "127.0.0.1".into(),
                port: 15001,
                inode: 18498
            }
        );
        assert_eq!(v4[2].ip, "0.0.0.0");
        assert_eq!(v4[2].port, 2024);
        let v6 = parse_proc_net(&fixture("tcp6"), true);
        assert_eq!(
            v6[0],
            Listening {
                ip: "::1".into(),
                port: 18081,
                inode: 51286
            }
        );
        assert_eq!(
            v6[1],
            Listening {
                ip: "::".into(),
                port: 18080,
                inode: 51285
            }
        );
    }

    fn published(port: u16, ip: Option<&str>) -> (String, PublishedPort) {
        (
            "nginx".into(),
            PublishedPort {
                host_ip: ip.map(str::to_owned),
                host_port: port,
                container_port: 80,
                protocol: "tcp".into(),
                path: "compose.yaml".into(),
                line: 8,
            },
        )
    }

    #[test]
    fn busy_ports_name_what_holds_them() {
        let listening = parse_proc_net(&fixture("tcp6"), true);
        let owner = |inode: u64| (inode == 51285).then(|| "pid 42 (nginx)".to_owned());
        let check = verdict(&[published(18080, None)], &listening, &[], owner);
        assert_eq!(check.status, CheckStatus::Fail);
        assert_eq!(
            check.message,
            "port 18080 (compose.yaml:8, service nginx) is in use by pid 42 (nginx)"
        );
        let by_container = verdict(
            &[published(8080, Some("127.0.0.1"))],
            &[],
            &[(8080, "web-1".into())],
            |_| None,
        );
        assert!(by_container
            .message
            .ends_with("is in use by container web-1"));
        let free = verdict(&[published(9999, None)], &listening, &[], |_| None);
        assert_eq!(
            (free.status, free.message.as_str()),
            (CheckStatus::Ok, "1 published port(s) free")
        );
        // `::1` holds 18081 on loopback only: a service on 127.0.0.1 is not blocked by it.
        let other_ip = verdict(
            &[published(18081, Some("127.0.0.1"))],
            &listening,
            &[],
            |_| None,
        );
        assert_eq!(other_ip.status, CheckStatus::Ok);
    }
}
