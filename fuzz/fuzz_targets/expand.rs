//! Variable expansion (`${X:-${Y}}`, `$$`, escapes) as Compose and Dockerfiles do it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lookup = |name: &str| match name {
        "SET" => Some("value".to_owned()),
        "EMPTY" => Some(String::new()),
        "NESTED" => Some("${SET}".to_owned()),
        _ => None,
    };
    let _ = docker_resilience::parse::fuzz_expand(&text, true, &lookup);
    let _ = docker_resilience::parse::fuzz_expand(&text, false, &lookup);
});
