//! One module per command. Each turns its arguments into the library's inputs (plan
//! options, [`Overrides`]), calls the library, and prints.

mod build;
mod bundle;
mod cache;
mod doctor;
mod plan;
mod prefetch;
mod shell;
mod sync;

use docker_resilience::{CancellationToken, Overrides, Project};

use crate::cli::{Cli, Command, TreeArgs};
use crate::exit::CliError;

/// Runs the command the arguments name.
pub fn run(cli: &Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Plan(args) => plan::run(cli, args),
        Command::Prefetch(args) => runtime()?.block_on(prefetch::run(cli, args)),
        Command::BuildAll(args) => runtime()?.block_on(build::run_all(cli, args)),
        Command::Build(args) => runtime()?.block_on(build::run_named(cli, args)),
        Command::Export(args) => runtime()?.block_on(bundle::export(cli, args)),
        Command::Import(args) => runtime()?.block_on(bundle::import(cli, args)),
        Command::Doctor(args) => runtime()?.block_on(doctor::run(cli, args)),
        Command::Cache(args) => cache::run(cli, args),
        Command::Sync(args) => runtime()?.block_on(sync::run(cli, args)),
        Command::Completions { shell } => {
            shell::completions(*shell);
            Ok(())
        }
        Command::Man => {
            shell::man();
            Ok(())
        }
    }
}

/// The async runtime for commands that talk to the daemon.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Run(docker_resilience::Error::Runtime(e)))
}

/// A token cancelled on Ctrl-C (the command then reports what it did and exits 130).
pub(crate) fn ctrl_c_token() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("interrupted: cancelling in-flight work");
            cancel.cancel();
        }
    });
    token
}

/// The tree the flags name, planned, with its settings resolved.
pub(crate) fn open(tree: &TreeArgs, overrides: &Overrides) -> Result<Project, CliError> {
    Ok(Project::open(&tree.root, &tree.plan_options(), overrides)?)
}
