//! The image reference parser: what parses prints back to something that parses the same.
#![no_main]

use docker_resilience::ImageReference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(reference) = ImageReference::parse(&text) {
        let printed = reference.to_string();
        let again = ImageReference::parse(&printed).expect("a printed reference parses");
        assert_eq!(again, reference, "{printed}");
    }
});
