//! `drbuild prefetch`.

use docker_resilience::vocab::Wanted;
use docker_resilience::{DockerEngine, Project};

use crate::cli::{Cli, PrefetchArgs};
use crate::commands::{ctrl_c_token, open};
use crate::exit::CliError;
use crate::output;
use crate::progress::PullProgress;

pub(crate) async fn run(cli: &Cli, args: &PrefetchArgs) -> Result<(), CliError> {
    let mut overrides = args.pull.overrides(args.jobs, None);
    if !args.docker_hosts.is_empty() {
        overrides.hosts = Some(args.docker_hosts.clone());
    }
    let project = open(&args.tree, &overrides)?;
    let images = project.plan.wanted();
    if !project.settings.hosts.is_empty() {
        return run_hosts(cli, args, &project, &images).await;
    }
    let engine = DockerEngine::connect()
        .await?
        .with_credentials(!args.pull.no_credentials);
    let progress = PullProgress::new(cli.quiet, !cli.json);
    let sink = progress.clone();
    let report = project
        .prefetch(
            engine,
            &images,
            args.pull.always_pull,
            move |event| sink.event(event),
            ctrl_c_token(),
        )
        .await;
    progress.finish();
    let report = report?;
    if cli.json {
        output::json(&report);
    } else {
        out!("{}", output::prefetch_table(&report));
    }
    CliError::outcome(
        report.interrupted,
        report.summary.failed,
        "image(s) not pulled",
    )
}

/// `prefetch` into several daemons.
async fn run_hosts(
    cli: &Cli,
    args: &PrefetchArgs,
    project: &Project,
    images: &[Wanted],
) -> Result<(), CliError> {
    // One line per event (bars of several daemons would share names).
    let progress = PullProgress::new(true, !cli.json);
    let sink = progress.clone();
    let report = project
        .prefetch_hosts(
            &project.settings.hosts,
            images,
            args.pull.always_pull,
            move |event| sink.event(event),
            ctrl_c_token(),
        )
        .await;
    progress.finish();
    if cli.json {
        output::json(&report);
    } else {
        out!("{}", output::hosts_table(&report));
    }
    CliError::outcome(
        report.interrupted(),
        report.summary.failed,
        "image(s) not pulled",
    )
}
