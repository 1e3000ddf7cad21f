//! The scanner and the reference parser never panic, whatever they are given.

use docker_resilience::parse::dockerfile::{Dockerfile, ScanOptions};
use docker_resilience::ImageReference;
use proptest::prelude::*;

/// Pieces of real Dockerfiles, so that generated input reaches deep paths.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("FROM ".to_owned()),
        Just("from ".to_owned()),
        Just("ARG ".to_owned()),
        Just("ENV ".to_owned()),
        Just("RUN ".to_owned()),
        Just("COPY --from=".to_owned()),
        Just("RUN --mount=type=bind,from=".to_owned()),
        Just(" AS ".to_owned()),
        Just("<<EOF".to_owned()),
        Just("<<-'X'".to_owned()),
        Just("EOF".to_owned()),
        Just("\tX".to_owned()),
        Just("\\\n".to_owned()),
        Just("`\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("\n".to_owned()),
        Just("# syntax=".to_owned()),
        Just("# escape=`\n".to_owned()),
        Just("${A:-".to_owned()),
        Just("${A:+b}".to_owned()),
        Just("$A".to_owned()),
        Just("}".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("A=ubuntu:22.04 ".to_owned()),
        Just("@sha256:".to_owned()),
        Just("[::1]:5000/".to_owned()),
        Just("scratch".to_owned()),
        "[a-z0-9:./@_-]{0,12}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn scanner_never_panics(parts in proptest::collection::vec(fragment(), 0..40)) {
        let text: String = parts.concat();
        if let Ok(file) = Dockerfile::parse(&text) {
            let _ = file.scan(&ScanOptions::default());
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        if let Ok(file) = Dockerfile::parse(&text) {
            let _ = file.scan(&ScanOptions::default());
        }
        let _ = ImageReference::parse(&text);
    }

    #[test]
    fn reference_round_trips(text in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,10})?") {
        let once = ImageReference::parse(&text).expect("generated references are valid");
        let twice = ImageReference::parse(&once.to_string()).expect("normalized form parses");
        prop_assert_eq!(once, twice);
    }
}
