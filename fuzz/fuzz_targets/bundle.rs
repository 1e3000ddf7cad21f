//! The bundle reader (manifest entry, zstd skippable-frame trailer, entry names): any
//! file is verified or refused with a reason, in bounded memory, never a panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use docker_resilience::bundle::{check_plain_tar, verify_bundle};
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
}

fuzz_target!(|data: &[u8]| {
    let path = dir().path().join("bundle");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let progress: docker_resilience::bundle::BytesProgress = Arc::new(|_, _| {});
    let _ = verify_bundle(&path, &progress);
    let _ = check_plain_tar(&path);
});
