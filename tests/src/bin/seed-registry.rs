//! `seed-registry --registry 127.0.0.1:15000 [--busybox /bin/busybox] [--marker FILE]`:
//! writes the stand-in images (see the library's `seed` module) into a loopback
//! registry through its API. With `--marker`, a run whose catalog is already there
//! (same fingerprint) does nothing.

use std::path::PathBuf;

use clap::Parser;
use docker_resilience_tests::seed::{
    build, build_catalog, fingerprint, rootfs_layer, Format, Platforms, Pusher, StandIn,
};

/// Seeds a loopback registry with the stand-in images.
#[derive(Debug, Parser)]
struct Args {
    /// The registry, `127.0.0.1:PORT`.
    #[arg(long)]
    registry: String,
    /// A static busybox for the `linux/amd64` root filesystem.
    #[arg(long, default_value = "/bin/busybox")]
    busybox: PathBuf,
    /// A file holding the fingerprint of the last seeding.
    #[arg(long)]
    marker: Option<PathBuf>,
    /// Push only one extra image, `repository:tag`, whose last layer is `--size` bytes
    /// of incompressible data (for benchmarks: a 1 GiB blob).
    #[arg(long, requires = "size")]
    extra: Option<String>,
    /// The extra image's big layer, in bytes.
    #[arg(long)]
    size: Option<usize>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let print = fingerprint(&args.busybox)?;
    let pusher = Pusher::new(&args.registry);
    if let (Some(name), Some(size)) = (args.extra.clone(), args.size) {
        let busybox = args.busybox.clone();
        let name: &'static str = Box::leak(name.into_boxed_str());
        let built = tokio::task::spawn_blocking(move || {
            let rootfs = rootfs_layer(&busybox);
            build(
                &StandIn {
                    name,
                    format: Format::Docker,
                    platforms: Platforms::Linux,
                    layers: 1,
                    big_layer: Some(size),
                },
                &rootfs,
            )
        })
        .await?;
        pusher.push(&built).await?;
        eprintln!("seed-registry: {name} {}", built.top.1.digest);
        return Ok(());
    }
    if let Some(marker) = &args.marker {
        let same = std::fs::read_to_string(marker).is_ok_and(|m| m.trim() == print);
        if same && pusher.has_catalog().await {
            eprintln!(
                "seed-registry: {} already holds this catalog",
                args.registry
            );
            return Ok(());
        }
    }
    let busybox = args.busybox.clone();
    let built = tokio::task::spawn_blocking(move || build_catalog(&busybox)).await?;
    for image in &built {
        pusher.push(image).await?;
        eprintln!(
            "seed-registry: {}:{} {}",
            image.repository, image.tag, image.top.1.digest
        );
    }
    if let Some(marker) = &args.marker {
        std::fs::write(marker, format!("{print}\n"))?;
    }
    Ok(())
}
