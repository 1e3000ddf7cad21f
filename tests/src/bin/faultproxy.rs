//! `faultproxy --listen 127.0.0.1:5001 --upstream 127.0.0.1:5000 [--config FILE]`:
//! a fault-injecting proxy in front of a registry (see the library's `faultproxy` module).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use docker_resilience_tests::faultproxy::{serve, Config};

/// A fault-injecting registry proxy for tests (loopback only).
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5001")]
    listen: SocketAddr,
    /// The registry to forward to.
    #[arg(long, default_value = "127.0.0.1:5000")]
    upstream: SocketAddr,
    /// A JSON fault configuration to start with.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let config: Config = match &args.config {
        Some(path) => serde_json::from_slice(&std::fs::read(path)?)?,
        None => Config::default(),
    };
    let addr = serve(args.listen, args.upstream, config).await?;
    eprintln!(
        "faultproxy listening on {addr}, forwarding to {}",
        args.upstream
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
