//! The daemon.json checker: any text gives findings, never a panic.
#![no_main]

use docker_resilience::parse::daemon_json::DaemonJson;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = DaemonJson::check(&text);
});
