//! `drbuild sync`.

use docker_resilience::vocab::Wanted;

use crate::cli::{Cli, SyncArgs, TreeArgs};
use crate::commands::open;
use crate::exit::CliError;
use crate::output;

pub(crate) async fn run(cli: &Cli, args: &SyncArgs) -> Result<(), CliError> {
    let tree = TreeArgs::at(args.root.clone(), args.build_args.clone());
    let project = open(&tree, &args.pull.overrides(args.jobs, None))?;
    let mut wanted = project.plan.wanted();
    if !args.platforms.is_empty() {
        let mut seen = std::collections::BTreeSet::new();
        wanted = wanted
            .iter()
            .filter(|w| seen.insert(w.reference.to_string()))
            .flat_map(|w| {
                args.platforms.iter().map(|p| Wanted {
                    reference: w.reference.clone(),
                    platform: Some(p.clone()),
                })
            })
            .collect();
    }
    let report = project.sync(&wanted, &args.to, args.insecure).await;
    if cli.json {
        output::json(&report);
    } else {
        out!("{}", output::sync_table(&report));
    }
    CliError::outcome(false, report.summary.failed, "image(s) not copied")
}
