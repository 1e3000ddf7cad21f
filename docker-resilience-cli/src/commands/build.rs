//! `drbuild build-all` and `drbuild build NAME...`.

use std::path::Path;

use docker_resilience::{
    BuildOptions, BuildReport, Builder, CancellationToken, DockerEngine, Plan, RetryPolicy,
    ServiceSet,
};

use crate::cli::{BuildAllArgs, BuildArgs, BuildFlags, Cli, PullArgs, TreeArgs};
use crate::commands::prefetch::prefetch;
use crate::commands::{cancel_on_ctrl_c, plan_options};
use crate::exit::CliError;
use crate::output;
use crate::progress::BuildProgress;

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
    let tree = TreeArgs {
        root: args.root.clone(),
        build_args: args.build_args.clone(),
        platform: None,
        no_ignore: false,
    };
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
    let plan_options = plan_options(tree)?;
    let plan = Plan::for_tree(&tree.root, &plan_options)?;
    let mut set = ServiceSet::load(&tree.root, &plan)?;
    for w in &set.warnings {
        tracing::warn!("{}:{}: {}", w.path.display(), w.line, w.value);
    }
    set.select(only, skip)?;
    // `--build-arg` reaches every build, over the services' own args (as compose does).
    for service in set.services.values_mut() {
        service.args.extend(plan_options.build_args.clone());
    }
    let config = set.config.clone().unwrap_or_default();
    let engine = DockerEngine::connect().await?;

    if !flags.no_prefetch {
        let mut pull = pull.clone();
        pull.mirrors.extend(config.mirrors.iter().cloned());
        let images: Vec<_> = needed_images(&plan, &set);
        if !images.is_empty() {
            tracing::info!("prefetching {} base image(s)", images.len());
            let report = prefetch(cli, &pull, flags.pull_jobs, engine.clone(), &images).await?;
            let s = &report.summary;
            tracing::info!(
                "prefetch: pulled {}, present {}, failed {} of {}",
                s.pulled,
                s.present,
                s.failed,
                s.total
            );
            if report.interrupted {
                return Err(CliError::Interrupted);
            }
        }
    }

    let jobs = flags.jobs.or(config.jobs).unwrap_or(2);
    if jobs == 0 {
        return Err(CliError::Usage("--jobs must be at least 1".into()));
    }
    let mut retry = RetryPolicy {
        max_attempts: flags.build_retries.saturating_add(1),
        ..RetryPolicy::default()
    };
    if let Some(attempts) = config.retry.attempts {
        retry.max_attempts = attempts.max(1);
    }
    if let Some(delay) = config.retry.delay.or(Some(pull.retry_delay)) {
        retry.min_delay = delay;
    }
    if let Some(delay) = config.retry.max_delay.or(Some(pull.retry_max_delay)) {
        retry.max_delay = delay.max(retry.min_delay);
    }
    let options = BuildOptions {
        jobs,
        no_cache: flags.force,
        missing_only: flags.missing_only,
        fail_fast: flags.fail_fast,
        network: flags.network.clone().or(config.network.clone()),
        retry,
    };
    let token = CancellationToken::new();
    cancel_on_ctrl_c(token.clone());
    let width = set.services.keys().map(String::len).max().unwrap_or(0);
    let progress = BuildProgress::new(cli.quiet, !cli.json, width, set.services.len());
    let sink = progress.clone();
    let report = Builder::new(engine, options)
        .on_event(move |event| sink.event(event))
        .cancel_on(token)
        .run(&set)
        .await;
    progress.finish();
    let report = report?;
    if cli.json {
        output::json(&report);
    } else {
        print!("{}", output::build_table(&report));
    }
    outcome(&report)
}

/// The plan's external images that the selected services' Dockerfiles use (all of
/// them when every service is selected).
fn needed_images(plan: &Plan, set: &ServiceSet) -> Vec<docker_resilience::ImageReference> {
    let dockerfiles: Vec<&Path> = set
        .services
        .values()
        .map(|s| s.dockerfile.as_path())
        .collect();
    plan.images
        .iter()
        .filter(|i| {
            i.sources
                .iter()
                .any(|s| dockerfiles.contains(&s.path.as_path()))
        })
        .map(|i| i.reference.clone())
        .collect()
}

fn outcome(report: &BuildReport) -> Result<(), CliError> {
    if report.interrupted {
        Err(CliError::Interrupted)
    } else if report.summary.failed > 0 {
        Err(CliError::Failed(format!(
            "{} service(s) failed",
            report.summary.failed
        )))
    } else {
        Ok(())
    }
}
