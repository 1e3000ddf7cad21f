//! Executable formats: which files in a build context cannot run on the image's
//! platform (the `exec format error` of a macOS binary copied into a Linux image).

use std::io::Read;
use std::path::Path;

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

fn same_arch(a: &str, b: &str) -> bool {
    let norm = |x: &str| match x {
        "x86_64" | "x86-64" => "amd64".to_owned(),
        "aarch64" => "arm64".to_owned(),
        "armhf" | "armv7" | "armv7l" | "armv6l" => "arm".to_owned(),
        "i686" | "i386" | "x86" => "386".to_owned(),
        other => other.to_owned(),
    };
    norm(a) == norm(b)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
