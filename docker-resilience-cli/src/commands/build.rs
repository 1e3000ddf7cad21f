//! `drbuild build-all` and `drbuild build NAME...`.

use docker_resilience::project::BuildRun;
use docker_resilience::DockerEngine;

use crate::cli::{BuildAllArgs, BuildArgs, BuildFlags, Cli, PullArgs, TreeArgs};
use crate::commands::{ctrl_c_token, open};
use crate::exit::CliError;
use crate::output;
use crate::progress::{BuildProgress, PullProgress};

pub(crate) async fn run_all(cli: &Cli, args: &BuildAllArgs) -> Result<(), CliError> {
    run(
        cli,
        &args.tree,
        &args.only,
        &args.skip,
        &args.build,
        &args.pull,
    )
    .await
}

pub(crate) async fn run_named(cli: &Cli, args: &BuildArgs) -> Result<(), CliError> {
    let tree = TreeArgs::at(args.root.clone(), args.build_args.clone());
    run(cli, &tree, &args.names, &[], &args.build, &args.pull).await
}

async fn run(
    cli: &Cli,
    tree: &TreeArgs,
    only: &[String],
    skip: &[String],
    flags: &BuildFlags,
    pull: &PullArgs,
) -> Result<(), CliError> {
    let project = open(tree, &pull.overrides(flags.pull_jobs, Some(flags)))?;
    let run = BuildRun {
        only: only.to_vec(),
        skip: skip.to_vec(),
        no_cache: flags.force,
        missing_only: flags.missing_only,
        fail_fast: flags.fail_fast,
        no_prefetch: flags.no_prefetch,
        always_pull: pull.always_pull,
        secrets: flags.secrets.clone(),
    };
    // Input errors (an unknown service, a cycle) before the daemon is asked anything.
    let set = project.services(only, skip)?;
    let engine = DockerEngine::connect()
        .await?
        .with_credentials(!pull.no_credentials);
    let pulls = PullProgress::new(cli.quiet, !cli.json);
    let width = set.services.keys().map(String::len).max().unwrap_or(0);
    let builds = BuildProgress::new(cli.quiet, !cli.json, width, set.services.len());
    let pull_sink = pulls.clone();
    let (pulls_done, build_sink) = (pulls.clone(), builds.clone());
    let outcome = project
        .build(
            engine,
            &run,
            move |event| pull_sink.event(event),
            move |event| {
                pulls_done.finish();
                build_sink.event(event);
            },
            ctrl_c_token(),
        )
        .await;
    pulls.finish();
    builds.finish();
    let Some(report) = outcome?.build else {
        return Err(CliError::Interrupted);
    };
    if cli.json {
        output::json(&report);
    } else {
        out!("{}", output::build_table(&report));
    }
    CliError::outcome(
        report.interrupted,
        report.summary.failed,
        "service(s) failed",
    )
}
