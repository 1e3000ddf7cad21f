//! `drbuild doctor`.

use docker_resilience::{doctor, Check, CheckStatus, DockerEngine, DoctorOptions, Plan};
use serde::Serialize;

use crate::cli::{Cli, DoctorArgs};
use crate::commands::{config, plan_options};
use crate::exit::CliError;
use crate::output;

#[derive(Serialize)]
struct Report<'a> {
    checks: &'a [Check],
}

pub(crate) async fn run(cli: &Cli, args: &DoctorArgs) -> Result<(), CliError> {
    let plan = Plan::for_tree(&args.tree.root, &plan_options(&args.tree)?)?;
    let config = config(&args.tree.root)?;
    // An unreachable daemon is exit 3, with how to start one.
    let engine = DockerEngine::connect().await?;
    let options = DoctorOptions {
        daemon_json: args.daemon_json.clone(),
        mirrors: config.map(|c| c.mirrors).unwrap_or_default(),
        timeout: args.timeout,
        ..DoctorOptions::default()
    };
    let checks = doctor(&engine, &args.tree.root, &plan, &options).await;
    if cli.json {
        output::json(&Report { checks: &checks });
    } else {
        print!("{}", output::doctor_table(&checks));
    }
    let failed = checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .count();
    if failed > 0 {
        Err(CliError::Failed(format!("{failed} check(s) failed")))
    } else {
        Ok(())
    }
}
