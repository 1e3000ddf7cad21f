//! Executables in build contexts that cannot run on the image's platform (the `exec
//! format error` of a macOS binary copied into a Linux image).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use super::{Check, CheckStatus};
use crate::build::context::BuildContext;
use crate::plan::ServiceSet;

/// What kind of executable a file is, from its first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BinaryFormat {
    /// Mach-O (macOS, iOS), thin or fat.
    MachO,
    /// PE (Windows `.exe`/`.dll`).
    Pe,
    /// ELF for this machine (`e_machine`) and architecture name, when known.
    Elf {
        /// The ELF `e_machine` field.
        machine: u16,
        /// Its Docker architecture name (`amd64`, `arm64`…), when known.
        arch: Option<&'static str>,
    },
}

impl BinaryFormat {
    /// Reads the format from a file's first bytes; `None` for anything that is not an
    /// executable format we know.
    pub fn detect(head: &[u8]) -> Option<BinaryFormat> {
        match head {
            [0x7f, b'E', b'L', b'F', _, data, ..] if head.len() >= 20 => {
                let bytes = [head[18], head[19]];
                let machine = if *data == 2 {
                    u16::from_be_bytes(bytes)
                } else {
                    u16::from_le_bytes(bytes)
                };
                Some(BinaryFormat::Elf {
                    machine,
                    arch: elf_arch(machine),
                })
            }
            [0xfe, 0xed, 0xfa, 0xce | 0xcf, ..] | [0xce | 0xcf, 0xfa, 0xed, 0xfe, ..] => {
                Some(BinaryFormat::MachO)
            }
            // Fat Mach-O shares 0xCAFEBABE with Java class files: a fat header's next
            // word is a small architecture count, a class file's is its version (≥ 45).
            [0xca, 0xfe, 0xba, 0xbe, a, b, c, d, ..]
                if u32::from_be_bytes([*a, *b, *c, *d]) < 20 =>
            {
                Some(BinaryFormat::MachO)
            }
            [b'M', b'Z', ..] if head.len() >= 64 => {
                let at = u32::from_le_bytes([head[60], head[61], head[62], head[63]]) as usize;
                // The PE signature may lie beyond what was read: `MZ` plus a plausible
                // offset is enough.
                match head.get(at..at + 4) {
                    Some(sig) => (sig == b"PE\0\0").then_some(BinaryFormat::Pe),
                    None => (at < 4096).then_some(BinaryFormat::Pe),
                }
            }
            _ => None,
        }
    }

    /// Reads the first bytes of `path` and detects its format.
    pub fn of_file(path: &Path) -> Option<BinaryFormat> {
        let mut head = [0u8; 256];
        let mut file = std::fs::File::open(path).ok()?;
        let mut n = 0;
        while n < head.len() {
            match file.read(&mut head[n..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        Self::detect(&head[..n])
    }

    /// Why this binary cannot run on a Linux image of architecture `arch` (Docker's
    /// names: `amd64`, `arm64`…), or `None` when it can (or we cannot tell).
    pub fn mismatch(&self, arch: &str) -> Option<String> {
        match self {
            BinaryFormat::MachO => Some("a Mach-O (macOS) executable".into()),
            BinaryFormat::Pe => Some("a PE (Windows) executable".into()),
            BinaryFormat::Elf { arch: Some(a), .. } if !same_arch(a, arch) => {
                Some(format!("an ELF executable for {a}, not {arch}"))
            }
            BinaryFormat::Elf { .. } => None,
        }
    }
}

/// Docker's name for an architecture (`x86_64` is `amd64`, `aarch64` is `arm64`…).
fn docker_arch(arch: &str) -> String {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "armhf" | "armv7" | "armv7l" | "armv6l" => "arm",
        "i686" | "i386" | "x86" => "386",
        other => other,
    }
    .to_owned()
}

fn same_arch(a: &str, b: &str) -> bool {
    docker_arch(a) == docker_arch(b)
}

fn elf_arch(machine: u16) -> Option<&'static str> {
    Some(match machine {
        3 => "386",
        8 => "mips",
        20 => "ppc",
        21 => "ppc64le",
        22 => "s390x",
        40 => "arm",
        62 => "amd64",
        183 => "arm64",
        243 => "riscv64",
        258 => "loong64",
        _ => return None,
    })
}

/// Files the services' contexts would send (honoring `.dockerignore`) that cannot run
/// on the service's platform (the daemon's architecture when it sets none).
pub(super) fn binaries(root: &Path, set: &ServiceSet, daemon_arch: &str) -> Check {
    let mut bad = BTreeSet::new();
    let mut scanned = 0usize;
    for service in set.services.values() {
        let arch = service
            .platform
            .as_deref()
            .and_then(|p| p.split('/').nth(1))
            .map_or_else(|| docker_arch(daemon_arch), str::to_owned);
        let Ok(context) = BuildContext::new(
            &root.join(&service.context),
            &root.join(&service.dockerfile),
        ) else {
            continue;
        };
        for file in context.files().unwrap_or_default() {
            scanned += 1;
            if let Some(why) = BinaryFormat::of_file(&file).and_then(|f| f.mismatch(&arch)) {
                let shown = file
                    .strip_prefix(root)
                    .unwrap_or(&file)
                    .display()
                    .to_string();
                bad.insert(format!(
                    "{shown}: {why} (service {}, linux/{arch})",
                    service.name
                ));
            }
        }
    }
    if bad.is_empty() {
        return Check::ok(
            "binaries",
            format!(
                "{scanned} files in {} build context(s); none for another platform",
                set.services.len()
            ),
        );
    }
    Check::new(
        "binaries",
        CheckStatus::Fail,
        bad.into_iter().collect::<Vec<_>>().join("; "),
        Some("these would fail with `exec format error` in the image: build them for the image's platform (e.g. `GOOS=linux GOARCH=amd64`, or in a build stage), or exclude them in .dockerignore".into()),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::plan::{Service, ServiceOrigin};

    fn elf(machine: u16) -> Vec<u8> {
        let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        h.resize(18, 0);
        h.extend_from_slice(&machine.to_le_bytes());
        h.resize(64, 0);
        h
    }

    #[test]
    fn formats() {
        assert_eq!(
            BinaryFormat::detect(&elf(62)),
            Some(BinaryFormat::Elf {
                machine: 62,
                arch: Some("amd64")
            })
        );
        assert_eq!(
            BinaryFormat::detect(&elf(183))
                .unwrap()
                .mismatch("amd64")
                .unwrap(),
            "an ELF executable for arm64, not amd64"
        );
        assert_eq!(
            BinaryFormat::detect(&elf(62)).unwrap().mismatch("x86_64"),
            None
        );
        assert_eq!(
            BinaryFormat::detect(&[0xcf, 0xfa, 0xed, 0xfe, 7, 0, 0, 1]),
            Some(BinaryFormat::MachO)
        );
        assert_eq!(
            BinaryFormat::detect(&[0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 2]),
            Some(BinaryFormat::MachO)
        );
        assert_eq!(
            BinaryFormat::detect(&[0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 52]),
            None,
            "a Java class file"
        );
        let mut pe = vec![b'M', b'Z'];
        pe.resize(64, 0);
        pe[60] = 64;
        pe.extend_from_slice(b"PE\0\0");
        assert_eq!(BinaryFormat::detect(&pe), Some(BinaryFormat::Pe));
        assert_eq!(BinaryFormat::detect(b"#!/bin/sh\necho hi\n"), None);
        assert_eq!(BinaryFormat::detect(b""), None);
    }

    #[test]
    fn fixtures_under_tests_data() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/binaries");
        assert_eq!(
            BinaryFormat::of_file(&dir.join("hello-macos")),
            Some(BinaryFormat::MachO)
        );
        assert_eq!(
            BinaryFormat::of_file(&dir.join("hello-windows.exe")),
            Some(BinaryFormat::Pe)
        );
        assert!(matches!(
            BinaryFormat::of_file(&dir.join("hello-linux-arm64")),
            Some(BinaryFormat::Elf { machine: 183, .. })
        ));
        assert_eq!(BinaryFormat::of_file(&dir.join("script.sh")), None);
    }

    #[test]
    fn a_context_with_foreign_binaries_fails_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/binaries");
        std::fs::create_dir_all(root.join("api")).unwrap();
        std::fs::write(root.join("api/Dockerfile"), "FROM scratch\n").unwrap();
        for f in ["hello-macos", "hello-linux-arm64", "script.sh"] {
            std::fs::copy(fixtures.join(f), root.join("api").join(f)).unwrap();
        }
        std::fs::write(root.join("api/.dockerignore"), "script.sh\n").unwrap();
        let service = |platform: Option<&str>| Service {
            platform: platform.map(str::to_owned),
            ..Service::new("api", "x-api", "api", "api/Dockerfile")
        };
        let set = |platform| ServiceSet {
            root: root.to_path_buf(),
            services: BTreeMap::from([("api".to_owned(), service(platform))]),
            origin: ServiceOrigin::Directories,
        };
        let check = binaries(root, &set(None), "x86_64");
        assert_eq!(check.status, CheckStatus::Fail);
        assert_eq!(
            check.message,
            "api/hello-linux-arm64: an ELF executable for arm64, not amd64 (service api, linux/amd64); \
             api/hello-macos: a Mach-O (macOS) executable (service api, linux/amd64)"
        );
        let arm = binaries(root, &set(Some("linux/arm64")), "x86_64");
        assert_eq!(
            arm.message,
            "api/hello-macos: a Mach-O (macOS) executable (service api, linux/arm64)"
        );
    }
}
