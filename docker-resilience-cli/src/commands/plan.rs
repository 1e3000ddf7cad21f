//! `drbuild plan`.

use docker_resilience::Plan;

use crate::cli::{Cli, PlanArgs};
use crate::exit::CliError;
use crate::output;

pub(crate) fn run(cli: &Cli, args: &PlanArgs) -> Result<(), CliError> {
    let plan = Plan::for_tree(&args.tree.root, &args.tree.plan_options())?;
    if cli.json {
        output::json(&plan);
    } else {
        out!("{}", output::plan_table(&plan));
    }
    // The process ends here: freeing a 10,000-Dockerfile plan piece by piece is work
    // nobody needs (the kernel takes the memory back at once).
    std::mem::forget(plan);
    Ok(())
}
