//! The compose loader (YAML budget, interpolation, extends, include, profiles): any
//! file loads or fails with an input error, never panics or hangs.
#![no_main]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use docker_resilience::parse::compose::ComposeProject;
use libfuzzer_sys::fuzz_target;

fn root() -> &'static tempfile::TempDir {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("p")).expect("mkdir");
        std::fs::write(
            dir.path().join("p/common.yaml"),
            "services:\n  base:\n    image: alpine:3.20\n    build: .\n",
        )
        .expect("write");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let root = root().path();
    if std::fs::write(root.join("p/compose.yaml"), data).is_err() {
        return;
    }
    let env = BTreeMap::from([("TAG".to_owned(), "1.0".to_owned())]);
    let _ = ComposeProject::load(root, &[PathBuf::from("p/compose.yaml")], &env);
});
