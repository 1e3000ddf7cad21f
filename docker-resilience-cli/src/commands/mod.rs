//! One module per command.

mod plan;

use std::collections::BTreeMap;

use docker_resilience::{DiscoverOptions, PlanOptions};

use crate::cli::{Cli, Command, TreeArgs};
use crate::exit::CliError;

/// Runs the command the arguments name.
pub fn run(cli: &Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Plan(args) => plan::run(cli, args),
    }
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
