//! Prints every external image a tree needs: `cargo run --example plan_tree -- ROOT`.

use std::path::PathBuf;

use docker_resilience::{Plan, PlanOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let plan = Plan::for_tree(&root, &PlanOptions::default())?;
    for image in &plan.images {
        println!("{} ({} places)", image.reference, image.sources.len());
    }
    for local in &plan.local {
        println!("{local} (built here)");
    }
    Ok(())
}
