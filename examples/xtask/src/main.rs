//! `cargo xtask docker [ROOT] [--force]`: prefetch a tree's base images and build its
//! services through `docker_resilience::DockerBuild`; what a Rust monorepo's xtask
//! needs, in a few lines.

use std::process::ExitCode;

use docker_resilience::{DockerBuild, Error};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some("docker") = args.first().map(String::as_str) else {
        eprintln!("usage: cargo xtask docker [ROOT] [--force]");
        return ExitCode::from(2);
    };
    let force = args.iter().any(|a| a == "--force");
    let root = args[1..]
        .iter()
        .find(|a| !a.starts_with("--"))
        .map_or(".", String::as_str);
    match DockerBuild::new(root).force(force).run() {
        Ok(report) => {
            for s in &report.build.services {
                println!("{:<20} {}", s.name, s.status.as_str());
            }
            ExitCode::SUCCESS
        }
        Err(Error::NotBuilt { failed, report }) => {
            for s in &report.build.services {
                println!("{:<20} {}", s.name, s.status.as_str());
            }
            eprintln!("not built: {}", failed.join(", "));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
