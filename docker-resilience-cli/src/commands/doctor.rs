//! `drbuild doctor`.

use docker_resilience::doctor::{doctor, CheckStatus, DoctorOptions};
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
    // An unreachable daemon is exit 3, with how to start one.
    let engine = DockerEngine::connect().await?;
    let defaults = DoctorOptions::default();
    let options = DoctorOptions {
        daemon_json: args.daemon_json.clone().unwrap_or(defaults.daemon_json),
        timeout: args.timeout.unwrap_or(defaults.timeout),
        ..defaults
    };
    let checks = doctor(&engine, &plan, &options).await;
    if cli.json {
        output::json(&Report { checks: &checks });
    } else {
        print!("{}", output::doctor_table(&checks));
    }
    let failed = checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .count();
    CliError::outcome(false, failed, "check(s) failed")
}
