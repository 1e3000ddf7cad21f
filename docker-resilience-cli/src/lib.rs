//! The `drbuild` command line: argument parsing, output and exit codes.
//!
//! The binary's `main` calls [`main`]; everything else lives here so that it can be
//! tested.
#![deny(missing_docs)]

/// `println!` for drbuild's output: through the redaction rule, on stdout.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::output::emit_stdout(&format!("{}\n", format_args!($($arg)*))) };
}

/// `print!` for drbuild's output: through the redaction rule, on stdout.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::emit_stdout(&format!($($arg)*)) };
}

/// `eprintln!` for drbuild's messages: through the redaction rule, on stderr.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::output::emit_stderr(&format!("{}\n", format_args!($($arg)*))) };
}

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
            // A bad value may be a URL with a password in it: redacted like the rest.
            let text = e.render().to_string();
            if e.use_stderr() {
                output::emit_stderr(&text);
            } else {
                output::emit_stdout(&text);
            }
            return code.into();
        }
    };
    output::init_logging(cli.verbose, cli.quiet);
    let result = commands::run(&cli);
    exit::report(result).into()
}
