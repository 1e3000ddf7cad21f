//! `drbuild export` and `drbuild import`.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use docker_resilience::bundle::{
    import_bundle, import_bundle_hosts, import_unverified, push_bundle, BundleImage, BytesProgress,
    Compression, HostImport,
};
use docker_resilience::project::{registry_target, ExportOptions};
use docker_resilience::registry::client::RegistryClient;
use docker_resilience::registry::credentials::Credentials;
use docker_resilience::registry::transport::{Transport, BREAKER_THRESHOLD};
use docker_resilience::resilience::retry::RetryPolicy;
use docker_resilience::sync::SyncReport;
use docker_resilience::vocab::Wanted;
use docker_resilience::{DockerEngine, ImageReference, Project};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::cli::{Cli, ExportArgs, ImportArgs, TreeArgs};
use crate::commands::{ctrl_c_token, open};
use crate::exit::CliError;
use crate::output;
use crate::progress::PullProgress;

/// A byte bar on a terminal (not under `--json`/`-q`); nothing otherwise.
fn byte_progress(cli: &Cli, what: &'static str) -> (BytesProgress, Option<ProgressBar>) {
    if cli.json || cli.quiet || !std::io::stderr().is_terminal() {
        return (Arc::new(|_, _| {}), None);
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} {bytes}/{total_bytes} {binary_bytes_per_sec} {wide_bar}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(what);
    let sink = bar.clone();
    let progress: BytesProgress = Arc::new(move |done, total| {
        if let Some(total) = total {
            sink.set_length(total);
        }
        sink.set_position(done);
    });
    (progress, Some(bar))
}

#[derive(Serialize)]
struct ExportOutput<'a> {
    output: &'a Path,
    images: &'a [BundleImage],
    content_bytes: u64,
    content_sha256: &'a str,
    compression: Compression,
    compressed_bytes: Option<u64>,
}

pub(crate) async fn export(cli: &Cli, args: &ExportArgs) -> Result<(), CliError> {
    let (root, named) = match args.args.split_first() {
        Some((first, rest)) if Path::new(first).is_dir() => (first.clone(), rest.to_vec()),
        _ => (".".to_owned(), args.args.clone()),
    };
    let tree = TreeArgs::at(root, Vec::new());
    let overrides = args.pull.overrides(None, None);
    let project = if named.is_empty() {
        open(&tree, &overrides)?
    } else {
        Project::settings_only(&tree.root, &overrides)?
    };
    let images: Vec<Wanted> = if named.is_empty() {
        project.plan.wanted()
    } else {
        named
            .iter()
            .map(|n| {
                n.parse::<ImageReference>()
                    .map(Wanted::named)
                    .map_err(|e| CliError::Usage(format!("`{n}`: {e}")))
            })
            .collect::<Result<_, _>>()?
    };
    if images.is_empty() {
        return Err(CliError::Usage("no images to export".into()));
    }
    let token = ctrl_c_token();
    tracing::info!(
        "exporting {} image(s) to {}",
        images.len(),
        args.output.display()
    );
    let (progress, bar) = byte_progress(cli, "export");
    let pulls = PullProgress::new(cli.quiet, false);
    let sink = pulls.clone();
    let result = project
        .export(
            &images,
            &args.output,
            ExportOptions {
                compression: args.compress,
                all_platforms: args.all_platforms,
            },
            move |e| sink.event(e),
            progress,
            token,
        )
        .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let manifest = result?.manifest;
    if cli.json {
        output::json(&ExportOutput {
            output: &args.output,
            images: &manifest.images,
            content_bytes: manifest.content_bytes,
            content_sha256: &manifest.content_sha256,
            compression: manifest.compression,
            compressed_bytes: manifest.compressed_bytes,
        });
    } else {
        for image in &manifest.images {
            outln!("{}  {}", image.reference, image.id);
        }
        outln!(
            "exported {} image(s) to {} ({:.1} MiB, sha256 {})",
            manifest.images.len(),
            args.output.display(),
            manifest.content_bytes as f64 / (1024.0 * 1024.0),
            manifest.content_sha256
        );
    }
    Ok(())
}

#[derive(Serialize)]
struct ImportOutput<'a> {
    file: &'a Path,
    images: &'a [BundleImage],
    loaded: &'a [String],
    /// Images bundled only for another OS than the daemon's, not loaded.
    skipped: &'a [String],
    content_bytes: u64,
    content_sha256: &'a str,
}

pub(crate) async fn import(cli: &Cli, args: &ImportArgs) -> Result<(), CliError> {
    if let Some(target) = &args.to {
        return push(cli, args, target).await;
    }
    if !args.docker_hosts.is_empty() {
        return import_hosts(cli, args).await;
    }
    let engine = DockerEngine::connect().await?;
    let token = ctrl_c_token();
    let (progress, bar) = byte_progress(cli, "import");
    if args.unverified {
        let result = import_unverified(&engine, &args.file, &token, progress).await;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let loaded = result?;
        if cli.json {
            output::json(
                &serde_json::json!({"file": args.file, "loaded": loaded, "verified": false}),
            );
        } else {
            for name in &loaded {
                outln!("loaded {name}");
            }
            outln!(
                "loaded {} (unverified: a plain tar carries no proof)",
                args.file.display()
            );
        }
        return Ok(());
    }
    let result = import_bundle(&engine, &args.file, &token, progress).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = result?;
    if cli.json {
        output::json(&ImportOutput {
            file: &args.file,
            images: &report.manifest.images,
            loaded: &report.loaded,
            skipped: &report.skipped,
            content_bytes: report.manifest.content_bytes,
            content_sha256: &report.manifest.content_sha256,
        });
    } else {
        outln!(
            "verified {} ({} bytes, sha256 {})",
            args.file.display(),
            report.manifest.content_bytes,
            report.manifest.content_sha256
        );
        for name in &report.loaded {
            outln!("loaded {name}");
        }
        let imported = report.manifest.images.len() - report.skipped.len();
        if report.skipped.is_empty() {
            outln!("imported {imported} image(s)");
        } else {
            outln!(
                "imported {imported} image(s); not loaded, for another OS: {}",
                report.skipped.join(", ")
            );
        }
    }
    Ok(())
}

/// `import --to`: the bundle's images into a registry.
async fn push(cli: &Cli, args: &ImportArgs, target: &str) -> Result<(), CliError> {
    let started = std::time::Instant::now();
    let (endpoint, _, _) = registry_target(target, args.insecure).await;
    let client = RegistryClient::new(Credentials::from_docker_config(), Duration::from_secs(60));
    let transport = Arc::new(Transport::new(
        client,
        &RetryPolicy::default(),
        BREAKER_THRESHOLD,
    ));
    let (progress, bar) = byte_progress(cli, "verify");
    let result = push_bundle(&args.file, transport, &endpoint, progress).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = SyncReport::of_items(target, endpoint.is_plain_http(), result?, started);
    if cli.json {
        output::json(&report);
    } else {
        out!("{}", output::sync_table(&report));
    }
    CliError::outcome(false, report.summary.failed, "image(s) not pushed")
}

#[derive(Serialize)]
struct HostsImportOutput<'a> {
    file: &'a Path,
    images: &'a [BundleImage],
    content_bytes: u64,
    content_sha256: &'a str,
    hosts: &'a [HostImport],
}

/// `import --docker-host A --docker-host B`: verified once, loaded into each.
async fn import_hosts(cli: &Cli, args: &ImportArgs) -> Result<(), CliError> {
    let token = ctrl_c_token();
    let (progress, bar) = byte_progress(cli, "verify");
    let result = import_bundle_hosts(&args.docker_hosts, &args.file, &token, progress).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let (manifest, hosts) = result?;
    let failed = hosts.iter().filter(|h| h.error.is_some()).count();
    if cli.json {
        output::json(&HostsImportOutput {
            file: &args.file,
            images: &manifest.images,
            content_bytes: manifest.content_bytes,
            content_sha256: &manifest.content_sha256,
            hosts: &hosts,
        });
    } else {
        outln!(
            "verified {} ({} bytes, sha256 {})",
            args.file.display(),
            manifest.content_bytes,
            manifest.content_sha256
        );
        for host in &hosts {
            match &host.error {
                None => outln!("{}: loaded {} image(s)", host.host, host.loaded.len()),
                Some(e) => outln!("{}: failed: {e}", host.host),
            }
        }
        outln!(
            "imported {} image(s) into {} of {} daemon(s)",
            manifest.images.len(),
            hosts.len() - failed,
            hosts.len()
        );
    }
    CliError::outcome(false, failed, "daemon(s) not loaded")
}
