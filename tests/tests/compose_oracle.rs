//! Differential tests: drbuild's compose loading against Docker Compose itself.
//!
//! For every fixture under `tests/data/compose/` and for generated projects (anchors
//! and merge keys, nested interpolation, override files in merge order), `docker
//! compose --profile '*' config --format json` and drbuild's resolved project must agree
//! on each service's image, build context, Dockerfile (or inline text), args, target,
//! platforms, additional contexts and `platform`. The oracle is Debian sid's
//! `docker-compose` (scripts/compose-oracle fetches it; `DRBUILD_COMPOSE` names it);
//! scripts/test turns these on with the `oracle` feature.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use docker_resilience::parse::compose::{ComposeOptions, ComposeProject, NamedContext};
use docker_resilience_tests::testbed::{data, repo_root};
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

/// What both sides must agree on, per service.
type Resolved = BTreeMap<String, Value>;

fn oracle() -> PathBuf {
    if let Ok(path) = std::env::var("DRBUILD_COMPOSE") {
        return PathBuf::from(path);
    }
    let out = Command::new(repo_root().join("scripts/compose-oracle"))
        .output()
        .expect("scripts/compose-oracle runs");
    assert!(
        out.status.success(),
        "no docker compose: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A clean environment: only what the case sets (and PATH), for both sides.
fn run_oracle(
    dir: &Path,
    files: &[&str],
    env: &BTreeMap<String, String>,
    profiles: &[&str],
) -> Resolved {
    try_oracle(dir, files, env, profiles).unwrap_or_else(|stderr| {
        panic!(
            "docker compose config failed in {}: {stderr}",
            dir.display()
        )
    })
}

/// What `docker compose config` resolves, or what it says when it refuses the files.
fn try_oracle(
    dir: &Path,
    files: &[&str],
    env: &BTreeMap<String, String>,
    profiles: &[&str],
) -> Result<Resolved, String> {
    let mut command = Command::new(oracle());
    command.env_clear().current_dir(dir).envs(env);
    command.env("PATH", std::env::var("PATH").unwrap_or_default());
    for f in files {
        command.args(["-f", f]);
    }
    for p in profiles {
        command.args(["--profile", p]);
    }
    let out = command
        .args(["config", "--format", "json"])
        .output()
        .expect("docker compose runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let doc: Value = serde_json::from_slice(&out.stdout).expect("compose prints JSON");
    let mut resolved = Resolved::new();
    for (name, service) in doc["services"].as_object().cloned().unwrap_or_default() {
        resolved.insert(name, from_oracle(&service));
    }
    Ok(resolved)
}

/// Compose escapes `$` as `$$` in what it prints (so that the output loads again).
fn unescape(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace("$$", "$")),
        other => other.clone(),
    }
}

fn from_oracle(service: &Value) -> Value {
    let mut out = Map::new();
    out.insert("image".into(), unescape(&service["image"]));
    out.insert("platform".into(), service["platform"].clone());
    if let Some(build) = service.get("build").filter(|b| b.is_object()) {
        let context = PathBuf::from(build["context"].as_str().unwrap_or_default());
        let mut b = Map::new();
        b.insert("context".into(), json!(context));
        match build.get("dockerfile_inline") {
            Some(inline) => b.insert("inline".into(), unescape(inline)),
            None => {
                let file = build["dockerfile"].as_str().unwrap_or("Dockerfile");
                b.insert("dockerfile".into(), json!(clean(&context.join(file))))
            }
        };
        let args: Map<String, Value> = build["args"]
            .as_object()
            .map(|a| a.iter().map(|(k, v)| (k.clone(), unescape(v))).collect())
            .unwrap_or_default();
        b.insert("args".into(), Value::Object(args));
        b.insert("target".into(), build["target"].clone());
        b.insert(
            "platforms".into(),
            build.get("platforms").cloned().unwrap_or(json!([])),
        );
        b.insert(
            "additional_contexts".into(),
            build
                .get("additional_contexts")
                .cloned()
                .unwrap_or(json!({})),
        );
        out.insert("build".into(), Value::Object(b));
    } else {
        out.insert("build".into(), Value::Null);
    }
    Value::Object(out)
}

fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

fn ours(
    dir: &Path,
    files: &[&str],
    env: &BTreeMap<String, String>,
    profiles: Option<&[&str]>,
) -> Resolved {
    // Load as `plan` does: relative to a root (here the directory's parent).
    let root = dir.parent().expect("test input");
    let name = dir.file_name().expect("test input");
    let files: Vec<PathBuf> = files.iter().map(|f| Path::new(name).join(f)).collect();
    let options = ComposeOptions {
        profiles: profiles.map(|p| p.iter().map(|s| s.to_string()).collect()),
        ..ComposeOptions::default()
    };
    let project = ComposeProject::load_with(root, &files, env, &options)
        .unwrap_or_else(|e| panic!("drbuild cannot load {}: {e}", dir.display()));
    let absolute = |p: &Path| json!(root.join(p));
    let mut resolved = Resolved::new();
    for (name, service) in &project.services {
        let build = service.build.as_ref().map(|b| {
            let mut m = Map::new();
            m.insert("context".into(), absolute(&b.context));
            match &b.dockerfile_inline {
                Some(text) => m.insert("inline".into(), json!(text)),
                None => m.insert("dockerfile".into(), absolute(&b.dockerfile)),
            };
            m.insert("args".into(), json!(b.args));
            m.insert("target".into(), json!(b.target));
            m.insert("platforms".into(), json!(b.platforms));
            let contexts: Map<String, Value> = b
                .additional_contexts
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        NamedContext::Service(s) => format!("service:{s}"),
                        NamedContext::Image(i) => format!("docker-image://{i}"),
                        NamedContext::Other(o) if o.contains("://") => o.clone(),
                        NamedContext::Other(o) => root.join(o).to_string_lossy().into_owned(),
                    };
                    (k.clone(), json!(text))
                })
                .collect();
            m.insert("additional_contexts".into(), Value::Object(contexts));
            Value::Object(m)
        });
        resolved.insert(
            name.clone(),
            json!({
                "image": service.image.as_ref().map(|i| i.value.clone()),
                "platform": service.platform,
                "build": build,
            }),
        );
    }
    resolved
}

fn agree(dir: &Path, files: &[&str], env: &BTreeMap<String, String>) {
    let theirs = run_oracle(dir, files, env, &["*"]);
    let mine = ours(dir, files, env, Some(&["*"]));
    assert_eq!(
        serde_json::to_string_pretty(&mine).expect("test input"),
        serde_json::to_string_pretty(&theirs).expect("test input"),
        "drbuild (left) and docker compose (right) disagree on {} {files:?}",
        dir.display()
    );
}

#[test]
#[cfg_attr(
    not(feature = "oracle"),
    ignore = "compose oracle: needs docker compose; run scripts/test, or cargo test --features oracle"
)]
fn every_fixture_agrees_with_docker_compose() {
    let corpus = data("compose");
    let mut cases = 0;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .expect("test input")
        .map(|e| e.expect("test input").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("test input")
            .map(|e| {
                e.expect("test input")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n == "compose.yaml" || n == "compose.override.yaml")
            .collect();
        files.sort_by_key(|f| f.contains("override"));
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        agree(&dir, &files, &BTreeMap::new());
        // What Compose accepts, the plan takes (no false exit 2).
        plan_of(&dir);
        cases += 1;
    }
    assert!(cases >= 12, "the corpus has {cases} fixtures");
}

#[test]
#[cfg_attr(
    not(feature = "oracle"),
    ignore = "compose oracle: needs docker compose; run scripts/test, or cargo test --features oracle"
)]
fn the_environment_and_profiles_agree_with_docker_compose() {
    let dir = data("compose/dotenv");
    let env = BTreeMap::from([
        ("IMAGE_NAME".to_owned(), "frontend".to_owned()),
        ("IMAGE_TAG".to_owned(), "9.9".to_owned()),
    ]);
    agree(&dir, &["compose.yaml"], &env);
    let dir = data("compose/profiles");
    let theirs = run_oracle(&dir, &["compose.yaml"], &BTreeMap::new(), &["ops"]);
    let mine = ours(&dir, &["compose.yaml"], &BTreeMap::new(), Some(&["ops"]));
    assert_eq!(mine, theirs);
    assert!(mine.contains_key("metrics") && !mine.contains_key("debug"));
    let env = BTreeMap::from([("COMPOSE_PROFILES".to_owned(), "debug".to_owned())]);
    let mut command_env = env.clone();
    command_env.insert("COMPOSE_PROFILES".into(), "debug".into());
    let theirs = run_oracle(&dir, &["compose.yaml"], &command_env, &[]);
    let mine = ours(&dir, &["compose.yaml"], &env, None);
    assert_eq!(mine, theirs);
    assert!(mine.contains_key("debug"));
}

/// The variants of a directory (files Compose reads only with `-f`): read alone and
/// over the base, both sides agree; and what the plan makes of them.
#[test]
#[cfg_attr(
    not(feature = "oracle"),
    ignore = "compose oracle: needs docker compose; run scripts/test, or cargo test --features oracle"
)]
fn variants_read_alone_and_over_their_base_agree_with_docker_compose() {
    let dir = data("compose/prebuilt");
    let none = BTreeMap::new();
    agree(&dir, &["compose.prebuilt.yml"], &none);
    agree(&dir, &["compose.yaml", "compose.prebuilt.yml"], &none);
    // Alone, Compose pulls the prebuilt images: the plan has them as external.
    let plan = plan_of(&dir);
    let external: Vec<String> = plan.references().map(ToString::to_string).collect();
    for image in ["docker.io/acme/web:1", "docker.io/acme/worker:1"] {
        assert!(external.contains(&image.to_owned()), "{external:?}");
    }

    // An opt-in fragment whose required variables the project's `.env` leaves unset:
    // Compose refuses it (unless they are given), the default project is fine, and the
    // plan goes on with a warning naming the file.
    let dir = data("compose/optional_fragment");
    run_oracle(&dir, &["compose.yaml"], &none, &["*"]);
    let deploy = dir.join("deploy");
    let files = ["compose.yaml", "compose.secrets.yaml"];
    let refused = try_oracle(&deploy, &files, &none, &["*"]).expect_err("compose refuses it");
    assert!(refused.contains("required variable"), "{refused}");
    let given = BTreeMap::from(
        [
            ("DB_SECRET_FILE", "/etc/acme/db-password"),
            ("BACKUP_HOST", "db"),
            ("REVIEWER", "ops"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    agree(&deploy, &files, &given);
    let plan = plan_of(&dir);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.path == Path::new("deploy/compose.secrets.yaml")
                && w.message.contains("DB_SECRET_FILE")),
        "{:?}",
        plan.warnings
    );
    assert!(plan
        .references()
        .any(|r| r.to_string() == "docker.io/hashicorp/vault:1.15"));

    // `COMPOSE_PROFILES` in a committed `.env`: Compose starts that profile; the plan
    // still covers every profile (drbuild's rule: only `--profile` or the environment
    // narrow it).
    let dir = data("compose/dotenv_profiles");
    let theirs = run_oracle(&dir, &["compose.yaml"], &none, &[]);
    let mine = ours(&dir, &["compose.yaml"], &none, None);
    assert_eq!(mine, theirs);
    assert_eq!(mine.keys().collect::<Vec<_>>(), ["app", "db"]);
    let plan = plan_of(&dir);
    assert_eq!(plan.images.len(), 4, "{:?}", plan.images);
    assert!(plan.profiles.is_none());
}

/// The plan of a fixture tree, in a clean environment.
fn plan_of(dir: &Path) -> docker_resilience::Plan {
    let options = docker_resilience::PlanOptions {
        env: Some(BTreeMap::new()),
        platform: Some("linux/amd64".parse().expect("platform")),
        ..Default::default()
    };
    docker_resilience::Plan::for_tree(dir, &options)
        .unwrap_or_else(|e| panic!("plan of {}: {e}", dir.display()))
}

/// Random projects: anchors and merge keys, nested interpolation with and without
/// values, `.env` files that refer to earlier lines, and override files merged in order.
#[test]
#[cfg_attr(
    not(feature = "oracle"),
    ignore = "compose oracle: needs docker compose; run scripts/test, or cargo test --features oracle"
)]
fn generated_projects_agree_with_docker_compose() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0c0_4905e);
    for case in 0..60 {
        let dir = tempfile::tempdir().expect("test input");
        let project = dir.path().join(format!("gen{case}"));
        std::fs::create_dir_all(&project).expect("test input");
        let (files, env) = generate(&mut rng, &project);
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        agree(&project, &files, &env);
    }
}

const IMAGES: [&str; 6] = [
    "redis:7-alpine",
    "postgres:16",
    "ghcr.io/acme/tool:1.2",
    "busybox",
    "registry.local:5000/team/app",
    "nginx@sha256:0d17b565c37bcbd895e9d92315a05c1c3c9a29f762b011a10c54a66cd53c9b31",
];

fn pick<'a, R: Rng>(rng: &mut R, list: &[&'a str]) -> &'a str {
    list[rng.random_range(0..list.len())]
}

/// A value with interpolation: plain, `${X}`, `${X:-d}`, `${X-d}`, nested defaults.
fn interpolated<R: Rng>(rng: &mut R, vars: &[&str], fallback: &str) -> String {
    let v = pick(rng, vars);
    let w = pick(rng, vars);
    match rng.random_range(0..5) {
        0 => fallback.to_owned(),
        1 => format!("${{{v}:-{fallback}}}"),
        2 => format!("${{{v}-{fallback}}}"),
        3 => format!("${{{v}:-${{{w}:-{fallback}}}}}"),
        _ => format!(
            "${{{v}:+{fallback}}}{}",
            if rng.random_bool(0.5) { "" } else { "-x" }
        ),
    }
}

fn generate<R: Rng>(rng: &mut R, dir: &Path) -> (Vec<String>, BTreeMap<String, String>) {
    let vars = ["A", "B", "C", "EMPTY", "UNSET"];
    let mut env = BTreeMap::new();
    if rng.random_bool(0.5) {
        env.insert("A".to_owned(), "from-env".to_owned());
    }
    // `.env`: later lines may use earlier ones; the environment wins.
    let mut dotenv = String::from("EMPTY=\n");
    if rng.random_bool(0.7) {
        dotenv.push_str("B=dotenv-b\n");
        dotenv.push_str(&format!("C=\"${{B}}-{}\"\n", rng.random_range(0..9)));
        dotenv.push_str("A=${A:-dotenv-a}\n");
    }
    std::fs::write(dir.join(".env"), dotenv).expect("test input");
    std::fs::create_dir_all(dir.join("ctx")).expect("test input");
    std::fs::write(dir.join("ctx/Dockerfile"), "FROM scratch\n").expect("test input");

    let anchors = rng.random_range(1..4);
    let mut text = String::new();
    for a in 0..anchors {
        let tag = interpolated(rng, &vars, "1.0");
        text.push_str(&format!(
            "x-svc-{a}: &svc{a}\n  image: {}:{tag}\n  platform: linux/amd64\n",
            pick(rng, &["acme/one", "acme/two", "ghcr.io/x/y"])
        ));
        text.push_str(&format!(
            "x-build-{a}: &build{a}\n  context: ./ctx\n  args:\n    ARG{a}: \"{}\"\n    COMMON: from-anchor-{a}\n",
            interpolated(rng, &vars, "v")
        ));
    }
    text.push_str("services:\n");
    let count = rng.random_range(2..7);
    for s in 0..count {
        text.push_str(&format!("  s{s}:\n"));
        let a = rng.random_range(0..anchors);
        match rng.random_range(0..4) {
            0 => text.push_str(&format!("    <<: *svc{a}\n")),
            1 => text.push_str(&format!(
                "    <<: *svc{a}\n    image: {}\n",
                pick(rng, &IMAGES)
            )),
            2 => text.push_str(&format!("    build: *build{a}\n")),
            _ => {
                let fallback = pick(rng, &IMAGES);
                text.push_str(&format!(
                    "    image: \"{}\"\n    build:\n      <<: *build{a}\n      target: t{s}\n",
                    interpolated(rng, &vars, fallback)
                ))
            }
        }
    }
    std::fs::write(dir.join("compose.yaml"), &text).expect("test input");
    let mut files = vec!["compose.yaml".to_owned()];
    // Override files, merged in the order given.
    for o in 0..rng.random_range(0..3) {
        let mut over = String::from("services:\n");
        for s in 0..count {
            if rng.random_bool(0.5) {
                continue;
            }
            over.push_str(&format!("  s{s}:\n"));
            match rng.random_range(0..3) {
                0 => over.push_str(&format!("    image: {}\n", pick(rng, &IMAGES))),
                1 => over.push_str(&format!(
                    "    build:\n      context: ./ctx\n      args:\n        COMMON: override-{o}\n        ONLY{o}: \"{}\"\n",
                    interpolated(rng, &vars, "o")
                )),
                _ => over.push_str("    platform: linux/arm64\n"),
            }
        }
        if rng.random_bool(0.3) || over == "services:\n" {
            over.push_str(&format!("  new{o}:\n    image: {}\n", pick(rng, &IMAGES)));
        }
        let name = format!("over{o}.yaml");
        std::fs::write(dir.join(&name), over).expect("test input");
        files.push(name);
    }
    (files, env)
}
