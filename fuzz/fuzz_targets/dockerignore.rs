//! The `.dockerignore` matcher: first line of the input is a path, the rest the rules.
#![no_main]

use docker_resilience::parse::dockerignore::Dockerignore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (path, rules) = text.split_once('\n').unwrap_or((&text, ""));
    if let Ok(ignore) = Dockerignore::parse(rules) {
        let _ = ignore.is_excluded(path);
        let _ = ignore.can_skip_dir(path);
    }
});
