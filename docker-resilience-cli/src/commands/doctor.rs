//! `drbuild doctor`.

use docker_resilience::doctor::{doctor, doctor_hosts, CheckStatus, DoctorOptions};
use docker_resilience::{DockerEngine, Plan};
use serde::Serialize;

use crate::cli::{Cli, DoctorArgs};
use crate::exit::CliError;
use crate::output;

#[derive(Serialize)]
struct Report<'a> {
    checks: &'a [docker_resilience::doctor::Check],
}

pub(crate) async fn run(cli: &Cli, args: &DoctorArgs) -> Result<(), CliError> {
    let plan = Plan::for_tree(&args.tree.root, &args.tree.plan_options())?;
    let hosts = if args.docker_hosts.is_empty() {
        plan.config
            .as_ref()
            .and_then(|c| c.config.hosts.clone())
            .unwrap_or_default()
    } else {
        args.docker_hosts.clone()
    };
    if !hosts.is_empty() {
        return run_hosts(cli, args, &plan, &hosts).await;
    }
    // An unreachable daemon is exit 3, with how to start one.
    let engine = DockerEngine::connect().await?;
    let checks = doctor(&engine, &plan, &options(args)).await;
    if cli.json {
        output::json(&Report { checks: &checks });
    } else {
        out!("{}", output::doctor_table(&checks));
    }
    let failed = checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .count();
    CliError::outcome(false, failed, "check(s) failed")
}

fn options(args: &DoctorArgs) -> DoctorOptions {
    let defaults = DoctorOptions::default();
    DoctorOptions {
        daemon_json: args.daemon_json.clone().unwrap_or(defaults.daemon_json),
        timeout: args.timeout.unwrap_or(defaults.timeout),
        ..defaults
    }
}

/// `doctor --docker-host A --docker-host B`: each daemon's checks.
async fn run_hosts(
    cli: &Cli,
    args: &DoctorArgs,
    plan: &Plan,
    hosts: &[String],
) -> Result<(), CliError> {
    let results = doctor_hosts(hosts, plan, &options(args)).await;
    if cli.json {
        #[derive(Serialize)]
        struct Hosts<'a> {
            hosts: &'a [docker_resilience::doctor::HostChecks],
        }
        output::json(&Hosts { hosts: &results });
    } else {
        for host in &results {
            outln!("== {}", host.host);
            out!("{}", output::doctor_table(&host.checks));
        }
    }
    let failed = results
        .iter()
        .flat_map(|h| &h.checks)
        .filter(|c| c.status == CheckStatus::Fail)
        .count();
    CliError::outcome(false, failed, "check(s) failed")
}
