//! `drbuild prefetch`.

use docker_resilience::{
    CancellationToken, DockerEngine, ImageReference, Mirror, MirrorSet, Plan, PrefetchOptions,
    PrefetchReport, Prefetcher, RetryPolicy,
};

use crate::cli::{Cli, PrefetchArgs, PullArgs};
use crate::commands::{cancel_on_ctrl_c, plan_options};
use crate::exit::CliError;
use crate::output;
use crate::progress::PullProgress;

pub(crate) async fn run(cli: &Cli, args: &PrefetchArgs) -> Result<(), CliError> {
    let plan = Plan::for_tree(&args.tree.root, &plan_options(&args.tree)?)?;
    let images: Vec<ImageReference> = plan.references().cloned().collect();
    let config = super::config(&args.tree.root)?;
    let engine = DockerEngine::connect().await?;
    let mut pull = args.pull.clone();
    pull.mirrors
        .extend(config.map(|c| c.mirrors).unwrap_or_default());
    let report = prefetch(cli, &pull, args.jobs, engine, &images).await?;
    if cli.json {
        output::json(&report);
    } else {
        print!("{}", output::prefetch_table(&report));
    }
    outcome(&report)
}

/// Prefetches `images` with the pull flags; shared with the commands that build.
pub(crate) async fn prefetch(
    cli: &Cli,
    pull: &PullArgs,
    jobs: usize,
    engine: DockerEngine,
    images: &[ImageReference],
) -> Result<PrefetchReport, CliError> {
    let info = engine.info().await?;
    let options = prefetch_options(pull, jobs, info.mirrors)?;
    let token = CancellationToken::new();
    cancel_on_ctrl_c(token.clone());
    let progress = PullProgress::new(cli.quiet, !cli.json);
    let sink = progress.clone();
    let report = Prefetcher::new(engine.with_credentials(!pull.no_credentials), options)
        .on_event(move |event| sink.event(event))
        .cancel_on(token)
        .run(images)
        .await?;
    progress.finish();
    Ok(report)
}

fn prefetch_options(
    pull: &PullArgs,
    jobs: usize,
    daemon_mirrors: Vec<String>,
) -> Result<PrefetchOptions, CliError> {
    let mut mirrors = MirrorSet::default();
    for spec in &pull.mirrors {
        let usage = |e: docker_resilience::MirrorError| CliError::Usage(format!("--mirror: {e}"));
        match spec.split_once('=') {
            Some((registry, mirror)) => {
                mirrors.add(registry, mirror.parse::<Mirror>().map_err(usage)?)
            }
            None => mirrors.add_docker_hub(spec.parse::<Mirror>().map_err(usage)?),
        }
    }
    if jobs == 0 {
        return Err(CliError::Usage("--jobs must be at least 1".into()));
    }
    Ok(PrefetchOptions {
        jobs,
        retry: RetryPolicy {
            max_attempts: pull.retries.saturating_add(1),
            min_delay: pull.retry_delay,
            max_delay: pull.retry_max_delay.max(pull.retry_delay),
            deadline: pull.deadline,
            ..RetryPolicy::default()
        },
        stall_timeout: pull.stall_timeout,
        always_pull: pull.always_pull,
        mirrors,
        daemon_mirrors,
        ..PrefetchOptions::default()
    })
}

/// Exit status of a prefetch: interrupted, some failed, or all well.
pub(crate) fn outcome(report: &PrefetchReport) -> Result<(), CliError> {
    if report.interrupted {
        Err(CliError::Interrupted)
    } else if report.summary.failed > 0 {
        Err(CliError::Failed(format!(
            "{} image(s) not pulled",
            report.summary.failed
        )))
    } else {
        Ok(())
    }
}
