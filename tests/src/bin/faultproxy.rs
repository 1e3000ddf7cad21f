//! `faultproxy --listen 127.0.0.1:5001 --upstream 127.0.0.1:5000 [--config FILE]`:
//! a fault-injecting proxy in front of a registry (see the library's `faultproxy` module).
//!
//! `faultproxy preset manifest-faults --seed 7 --probability 0.3` (or `request-faults`,
//! `thin-link --rate 4000000 --latency-ms 100`) prints a preset fault
//! configuration as JSON (for `POST /__faultproxy/config`), so that scripts use the
//! same faults as the tests.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
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
    /// Print a preset configuration instead of serving.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a preset fault configuration as JSON.
    Preset {
        /// The preset.
        #[command(subcommand)]
        preset: Preset,
    },
}

#[derive(Debug, Subcommand)]
enum Preset {
    /// Manifest requests fail with a probability, as EOF, 500 or 429 in turn.
    ManifestFaults {
        /// Seed of the random choices.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Chance that a manifest request fails.
        #[arg(long, default_value_t = 0.3)]
        probability: f64,
    },
    /// Manifest and blob requests fail with a probability, as EOF, 500 or a body cut
    /// half-way in turn.
    RequestFaults {
        /// Seed of the random choices.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Chance that a request fails.
        #[arg(long, default_value_t = 0.3)]
        probability: f64,
    },
    /// A long thin link: each connection's body capped at a rate, latency added to
    /// every request.
    ThinLink {
        /// Bytes per second per connection.
        #[arg(long, default_value_t = 4_000_000)]
        rate: u64,
        /// Milliseconds added to every request.
        #[arg(long, default_value_t = 100)]
        latency_ms: u64,
        /// Also drop `Range` from requests (a mirror that ignores it).
        #[arg(long)]
        ignore_range: bool,
        /// Also answer 503 to a request arriving while this many are under way (a
        /// source that limits connections; 0: no limit).
        #[arg(long, default_value_t = 0)]
        max_active: u64,
    },
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(Command::Preset { preset }) = args.command {
        let config = match preset {
            Preset::ManifestFaults { seed, probability } => {
                Config::manifest_faults(seed, probability)
            }
            Preset::RequestFaults { seed, probability } => {
                Config::request_faults(seed, probability)
            }
            Preset::ThinLink {
                rate,
                latency_ms,
                ignore_range,
                max_active,
            } => Config {
                ignore_range,
                max_active,
                ..Config::thin_link(rate, latency_ms)
            },
        };
        println!("{}", serde_json::to_string(&config)?);
        return Ok(());
    }
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
