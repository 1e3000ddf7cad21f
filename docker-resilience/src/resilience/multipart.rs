//! How big blobs are fetched over a long thin link: as several ranged parts at once
//! when one connection brings them slowly (the fetcher's `fetch::parts` does it),
//! within a budget of connections per source.

/// Requests on the wire to one registry or mirror at once, by default (`--connections`,
/// `connections:` in drbuild.yaml): the transport's budget per source. The parts of one
/// big blob ([`Multipart::DEFAULT_PARTS`]) and 8 more: at a budget of exactly the
/// parts, a big blob took every place and held the run's other images back (13 small
/// images beside a 64 MiB layer, at 4 MB/s per connection and 100 ms per request:
/// the last small one done at 2.1-2.2 s with 16, 1.1-1.4 s with 24).
pub const DEFAULT_CONNECTIONS: usize = 24;

/// How big blobs are fetched: one type for `drbuild.yaml`, flags and the fetcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Multipart {
    /// Blobs at least this big are fetched in parts when one connection brings them
    /// slowly (0: none is).
    pub threshold: u64,
    /// Parts of one blob on the wire at once (1: one stream).
    pub parts: usize,
}

impl Multipart {
    /// Blobs from 16 MiB on.
    pub const DEFAULT_THRESHOLD: u64 = 16 * 1024 * 1024;
    /// 16 parts at once: at 4 MB/s per connection and 100 ms per request, a 64 MiB
    /// layer took 0.15x `docker pull`'s time with 16 and 0.21-0.22x with 8
    /// (`scripts/bench/multipart.sh`, 28.5-containerd and 20.10).
    pub const DEFAULT_PARTS: usize = 16;

    /// One stream per blob, always.
    pub fn off() -> Self {
        Multipart {
            threshold: 0,
            parts: 1,
        }
    }

    /// Whether a blob of `size` bytes may be fetched in parts (it starts as one request,
    /// cut into parts if that one brings it slowly).
    pub fn applies(&self, size: u64) -> bool {
        self.parts > 1 && self.threshold > 0 && size >= self.threshold
    }
}

impl Default for Multipart {
    fn default() -> Self {
        Multipart {
            threshold: Self::DEFAULT_THRESHOLD,
            parts: Self::DEFAULT_PARTS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_blobs_only() {
        const MIB: u64 = 1024 * 1024;
        assert!(Multipart::default().applies(16 * MIB));
        assert!(!Multipart::default().applies(16 * MIB - 1));
        assert!(!Multipart::off().applies(u64::MAX));
        assert!(!Multipart {
            threshold: 1,
            parts: 1
        }
        .applies(MIB));
    }
}
