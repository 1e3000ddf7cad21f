//! `drbuild prefetch`.

use docker_resilience::DockerEngine;

use crate::cli::{Cli, PrefetchArgs};
use crate::commands::{ctrl_c_token, open};
use crate::exit::CliError;
use crate::output;
use crate::progress::PullProgress;

pub(crate) async fn run(cli: &Cli, args: &PrefetchArgs) -> Result<(), CliError> {
    let project = open(&args.tree, &args.pull.overrides(args.jobs, None))?;
    let images = project.plan.wanted();
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
        print!("{}", output::prefetch_table(&report));
    }
    CliError::outcome(
        report.interrupted,
        report.summary.failed,
        "image(s) not pulled",
    )
}
