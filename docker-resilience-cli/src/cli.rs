//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::exit::EXIT_CODES_HELP;

/// Resilient Docker image prefetch and multi-service builds for flaky networks.
#[derive(Debug, Parser)]
#[command(name = "drbuild", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
    /// One JSON document on stdout (logs stay on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// More logs (-v debug, -vv trace); `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// `drbuild` commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every external image the tree needs, with where each comes from.
    Plan(PlanArgs),
}

/// Options shared by commands that read a tree.
#[derive(Debug, Clone, Args)]
pub struct TreeArgs {
    /// The tree to work on.
    #[arg(default_value = ".")]
    pub root: PathBuf,
    /// A build arg for every Dockerfile (`KEY=VALUE`); compose `args:` win for their services.
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Target platform (`linux/amd64`); the host's by default.
    #[arg(long)]
    pub platform: Option<String>,
    /// Also read files that .gitignore / .drbuildignore exclude.
    #[arg(long)]
    pub no_ignore: bool,
}

/// `drbuild plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The tree.
    #[command(flatten)]
    pub tree: TreeArgs,
}
