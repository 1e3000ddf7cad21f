//! The Dockerfile parser and scanner: any text parses or fails with a line, never panics
//! or hangs; a parsed file scans with args from the input; with named contexts that are
//! images written in, it still parses.
#![no_main]

use docker_resilience::parse::dockerfile::{Dockerfile, NamedContext, ScanOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(file) = Dockerfile::parse(&text) {
        let _ = file.scan(&ScanOptions::default());
        let mut options = ScanOptions::default();
        options
            .build_args
            .insert("BASE".into(), "alpine:${TAG:-3.20}".into());
        if let Ok(scan) = file.scan(&options) {
            let _ = scan.needed_stages(None);
            let _ = scan.needed_stages(Some("build"));
        }
        for name in ["base", "build", "tools"] {
            options
                .named_contexts
                .insert(name.into(), NamedContext::Image("busybox:1.36".into()));
        }
        if let Ok(scan) = file.scan(&options) {
            let written = file.with_image_contexts(&text, &scan);
            assert!(
                Dockerfile::parse(&written).is_ok(),
                "contexts written in make an unreadable file:\n{written}"
            );
        }
    }
});
