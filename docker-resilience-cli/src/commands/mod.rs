//! One module per command.

mod build;
mod bundle;
mod doctor;
mod plan;
mod prefetch;

use std::collections::BTreeMap;

use docker_resilience::{Config, ConfigFile, DiscoverOptions, PlanOptions};

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
    }
}

/// The async runtime for commands that talk to the daemon.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))
}

/// Cancels `token` on Ctrl-C (the command then reports what it did and exits 130).
pub(crate) fn cancel_on_ctrl_c(token: docker_resilience::CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("interrupted: cancelling in-flight work");
            token.cancel();
        }
    });
}

/// Plan options from the tree flags.
pub(crate) fn plan_options(tree: &TreeArgs) -> Result<PlanOptions, CliError> {
    let mut build_args = BTreeMap::new();
    for arg in &tree.build_args {
        let (k, v) = arg
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--build-arg `{arg}`: expected KEY=VALUE")))?;
        build_args.insert(k.to_owned(), v.to_owned());
    }
    let platform = tree
        .platform
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e| CliError::Usage(format!("--platform: {e}")))?;
    Ok(PlanOptions {
        discover: DiscoverOptions {
            respect_ignore_files: !tree.no_ignore,
            ..DiscoverOptions::default()
        },
        build_args,
        platform,
        env: None,
    })
}

/// `ROOT/drbuild.yaml`, if any; its unknown keys are logged as warnings.
pub(crate) fn config(root: &std::path::Path) -> Result<Option<Config>, CliError> {
    let Some(file) = ConfigFile::find(root).map_err(docker_resilience::ServiceError::from)? else {
        return Ok(None);
    };
    for w in &file.warnings {
        tracing::warn!("{}:{}: {}", w.path.display(), w.line, w.value);
    }
    Ok(Some(file.config))
}
