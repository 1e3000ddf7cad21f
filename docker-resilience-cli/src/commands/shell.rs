//! `drbuild completions SHELL` and `drbuild man`: generated from the same clap
//! definitions as the parser, so they never drift from it. Printed as they are (not
//! through the redaction rule: they hold no value of the user's).

use std::io::Write as _;

use clap::CommandFactory;

use crate::cli::Cli;

/// Prints the completion script for `shell` on stdout.
pub(crate) fn completions(shell: clap_complete::Shell) {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "drbuild", &mut script);
    emit(&script);
}

/// Prints the man page (roff) on stdout.
pub(crate) fn man() {
    let mut page = Vec::new();
    // Rendering into memory cannot fail.
    let _ = clap_mangen::Man::new(Cli::command()).render(&mut page);
    emit(&page);
}

/// Written whole; a closed pipe (`| head`) is not an error.
fn emit(bytes: &[u8]) {
    let _ = std::io::stdout().lock().write_all(bytes);
}
