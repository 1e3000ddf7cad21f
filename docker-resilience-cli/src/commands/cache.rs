//! `drbuild cache` and `drbuild cache prune`.

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
    }
    Ok(())
}
