//! The `drbuild` command line: argument parsing, output and exit codes.
//!
//! The binary's `main` calls [`main`]; everything else lives here so that it can be
//! tested.
#![deny(missing_docs)]

pub mod cli;
mod commands;
mod exit;
mod output;
mod progress;

pub use cli::Cli;

pub use exit::{CliError, Exit};

use clap::Parser;

/// Parses the process arguments, runs the command and returns its exit code.
pub fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            };
            let _ = e.print();
            return code.into();
        }
    };
    output::init_logging(cli.verbose, cli.quiet);
    let result = commands::run(&cli);
    exit::report(result).into()
}
