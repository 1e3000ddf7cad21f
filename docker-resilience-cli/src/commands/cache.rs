//! `drbuild cache`, `drbuild cache prune` and `drbuild cache verify`.

use docker_resilience::cache::BlobCache;

use crate::cli::{CacheArgs, CacheCommand, Cli};
use crate::exit::CliError;
use crate::output;

pub(crate) fn run(cli: &Cli, args: &CacheArgs) -> Result<(), CliError> {
    let dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(BlobCache::default_dir);
    let cache = BlobCache::open(&dir)
        .map_err(|e| CliError::Failed(format!("the blob cache cannot be used: {e}")))?;
    match &args.command {
        None => {
            let usage = cache.usage();
            if cli.json {
                output::json(&usage);
            } else {
                outln!(
                    "{}: {} blob(s), {}; {} partial download(s), {}",
                    usage.dir.display(),
                    usage.blobs,
                    bytesize::ByteSize(usage.bytes).display().iec(),
                    usage.partial,
                    bytesize::ByteSize(usage.partial_bytes).display().iec()
                );
            }
        }
        Some(CacheCommand::Prune { max_size }) => {
            let report = cache.prune(max_size.map_or(0, |s| s.as_u64()));
            if cli.json {
                output::json(&report);
            } else {
                outln!(
                    "removed {} file(s), {}; {} blob(s), {} left",
                    report.removed,
                    bytesize::ByteSize(report.freed_bytes).display().iec(),
                    report.usage.blobs,
                    bytesize::ByteSize(report.usage.bytes).display().iec()
                );
            }
        }
        Some(CacheCommand::Verify { repair }) => {
            let report = cache
                .verify_all(*repair)
                .map_err(|e| CliError::Failed(e.to_string()))?;
            if cli.json {
                output::json(&report);
            } else {
                for corrupt in &report.corrupt {
                    let done = if corrupt.removed { ": removed" } else { "" };
                    outln!("{corrupt}{done}");
                }
                for stray in &report.stray {
                    outln!("{}: not a blob", stray.display());
                }
                outln!(
                    "{}: {} blob(s) checked, {}; {} corrupt",
                    report.dir.display(),
                    report.checked,
                    bytesize::ByteSize(report.bytes).display().iec(),
                    report.corrupt.len()
                );
            }
            let left = report.corrupt.iter().filter(|c| !c.removed).count();
            if left > 0 {
                return Err(CliError::Failed(format!(
                    "{left} corrupt blob(s) left: `drbuild cache verify --repair` removes them"
                )));
            }
        }
    }
    Ok(())
}
