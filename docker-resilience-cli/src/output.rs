//! Human tables, JSON documents and log set-up.

use std::fmt::Write as _;

use docker_resilience::build::{BuildReport, ServiceStatus};
use docker_resilience::doctor::{Check, CheckStatus};
use docker_resilience::prefetch::{ImageStatus, PrefetchReport};
use docker_resilience::sync::{SyncReport, SyncStatus};
use docker_resilience::vocab::{redact, Platform};
use docker_resilience::{ImageReference, Plan};
use serde::Serialize;

/// Logs go to stderr through `tracing`; `RUST_LOG` overrides the level.
pub fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Redacting)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // `-v` is for finding where the time goes: each line carries the time since start.
    let _ = if verbose > 0 {
        builder
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .try_init()
    } else {
        builder.without_time().try_init()
    };
}

/// Writes `text` to stdout with the redaction rule applied (userinfo, tokens, values
/// registered as secret): every line drbuild prints goes through here or
/// [`emit_stderr`].
pub fn emit_stdout(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(redact(text).as_bytes());
    let _ = out.flush();
}

/// Writes `text` to stderr with the redaction rule applied.
pub fn emit_stderr(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stderr().lock().write_all(redact(text).as_bytes());
}

/// The log writer: each formatted event, redacted, to stderr.
struct Redacting;

impl std::io::Write for Redacting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        emit_stderr(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Prints one JSON document on stdout.
///
/// Streamed, and redacted a chunk of whole lines at a time: a JSON text holds no raw
/// newline inside a string, so whatever the redaction rule masks lies within one line.
/// (A plan of 10,000 Dockerfiles is a 2.5 MB document; made whole, then copied for
/// the newline and for redaction, it was 12 MB of memory.)
pub fn json<T: Serialize>(value: &T) {
    let mut out = LineChunks {
        pending: Vec::with_capacity(LineChunks::CHUNK + 4096),
    };
    match serde_json::to_writer_pretty(&mut out, value) {
        Ok(()) => {
            out.pending.push(b'\n');
            out.emit_all();
        }
        Err(e) => tracing::error!("cannot encode the report as JSON: {e}"),
    }
}

/// A writer that passes text on to [`emit_stdout`] in chunks that end at a newline.
struct LineChunks {
    pending: Vec<u8>,
}

impl LineChunks {
    /// About how much is held before it is passed on.
    const CHUNK: usize = 64 * 1024;

    /// Passes on every whole line held.
    fn emit_lines(&mut self) {
        if let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') {
            emit_stdout(&text(&self.pending[..=end]));
            self.pending.drain(..=end);
        }
    }

    /// Passes on all that is held.
    fn emit_all(&mut self) {
        emit_stdout(&text(&self.pending));
        self.pending.clear();
    }
}

/// serde_json's output as text (it is UTF-8: checked the fast way).
fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.into(),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

impl std::io::Write for LineChunks {
    // serde_json writes a token at a time: inlined, that is a copy and a compare.
    #[inline]
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= Self::CHUNK {
            self.emit_lines();
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// References longer than this get a line of their own in tables.
const NAME_COLUMN_MAX: usize = 48;

/// An image as tables show it: with its platforms when they are not just the host's.
fn with_platforms(reference: &ImageReference, platforms: &[Platform]) -> String {
    if platforms.is_empty() || platforms == [Platform::host()] {
        return reference.to_string();
    }
    let list: Vec<String> = platforms.iter().map(ToString::to_string).collect();
    format!("{reference} [{}]", list.join(", "))
}

/// The width of a table's image column: the longest name that fits.
fn name_width(names: impl Iterator<Item = String>) -> usize {
    names
        .map(|n| n.len())
        .filter(|&w| w <= NAME_COLUMN_MAX)
        .max()
        .unwrap_or(5)
        .max(5)
}

/// The plan as a table: each image with every place that needs it.
pub fn plan_table(plan: &Plan) -> String {
    let mut out = String::new();
    // An optional image (only stages a build's target skips use it) is listed, marked.
    let label = |i: &docker_resilience::plan::PlannedImage| {
        let name = with_platforms(&i.reference, &i.platforms);
        if i.optional {
            format!("{name} (optional)")
        } else {
            name
        }
    };
    let width = name_width(plan.images.iter().map(label));
    let _ = writeln!(out, "{:<width$}  SOURCE", "IMAGE");
    for image in &plan.images {
        let mut name = label(image);
        if name.len() > width {
            let _ = writeln!(out, "{name}");
            name.clear();
        }
        for source in &image.sources {
            let _ = writeln!(
                out,
                "{name:<width$}  {}:{} ({})",
                source.path.display(),
                source.line,
                source.kind
            );
            name.clear();
        }
    }
    for local in &plan.local {
        let _ = writeln!(out, "local: {local}");
    }
    if let Some(filter) = &plan.profiles {
        let _ = writeln!(out, "profiles: {filter}");
    }
    for w in &plan.warnings {
        let _ = writeln!(
            out,
            "warning: {}:{}: {}",
            w.path.display(),
            w.line,
            w.message
        );
    }
    let optional = plan.images.iter().filter(|i| i.optional).count();
    let _ = writeln!(
        out,
        "{} external image{}{}, {} local, {} warning{}",
        plan.images.len(),
        plural(plan.images.len()),
        if optional > 0 {
            format!(" ({optional} optional, not fetched)")
        } else {
            String::new()
        },
        plan.local.len(),
        plan.warnings.len(),
        plural(plan.warnings.len())
    );
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The prefetch report as a table, failures explained, totals last.
pub fn prefetch_table(report: &PrefetchReport) -> String {
    let mut out = String::new();
    let width = name_width(
        report
            .images
            .iter()
            .map(|i| with_platforms(&i.reference, i.platform.as_slice())),
    );
    let _ = writeln!(
        out,
        "{:<width$}  {:<7}  {:>8}  {:<16}  TIME",
        "IMAGE", "STATUS", "ATTEMPTS", "SOURCE"
    );
    for r in &report.images {
        let status = match r.status {
            ImageStatus::Pulled => "pulled",
            ImageStatus::Present => "present",
            ImageStatus::Failed => "failed",
        };
        let mut name = with_platforms(&r.reference, r.platform.as_slice());
        if name.len() > width {
            let _ = writeln!(out, "{name}");
            name.clear();
        }
        let _ = writeln!(
            out,
            "{name:<width$}  {status:<7}  {:>8}  {:<16}  {:.1}s",
            r.attempts,
            r.source.as_deref().unwrap_or("-"),
            r.elapsed_ms as f64 / 1000.0
        );
        if let Some(error) = &r.error {
            let class = r.error_class.map(|c| format!(" ({c})")).unwrap_or_default();
            let _ = writeln!(out, "    {error}{class}");
        }
    }
    endpoint_lines(&mut out, &report.endpoints);
    let s = &report.summary;
    let _ = writeln!(
        out,
        "pulled {}, present {}, failed {} of {}; {} retr{}; {:.1}s",
        s.pulled,
        s.present,
        s.failed,
        s.total,
        s.retries,
        if s.retries == 1 { "y" } else { "ies" },
        s.elapsed_ms as f64 / 1000.0
    );
    if report.interrupted {
        let _ = writeln!(out, "interrupted: unfinished pulls were cancelled");
    }
    out
}

/// A prefetch into several daemons: each daemon's table, what the endpoints did (for
/// all of them), and the totals.
pub fn hosts_table(report: &docker_resilience::project::HostsReport) -> String {
    let mut out = String::new();
    for host in &report.hosts {
        let _ = writeln!(out, "== {}", host.host);
        if let Some(error) = &host.error {
            let _ = writeln!(out, "   unreachable: {error}");
        }
        let mut one = host.report.clone();
        one.endpoints.clear();
        out.push_str(&prefetch_table(&one));
    }
    endpoint_lines(&mut out, &report.endpoints);
    let s = &report.summary;
    let failed_hosts = report
        .hosts
        .iter()
        .filter(|h| h.report.summary.failed > 0)
        .count();
    let _ = writeln!(
        out,
        "{} daemon(s), {} with failures: pulled {}, present {}, failed {} of {}; {:.1}s",
        report.hosts.len(),
        failed_hosts,
        s.pulled,
        s.present,
        s.failed,
        s.total,
        s.elapsed_ms as f64 / 1000.0
    );
    out
}

/// What each registry endpoint did, a line each.
fn endpoint_lines(out: &mut String, endpoints: &[docker_resilience::fetch::EndpointStats]) {
    for e in endpoints {
        let _ = writeln!(
            out,
            "  {}: {} request(s){}, {}, {} resume(s), {} at once at most; faults: {} transient, {} rate-limited, {} permanent; {:.1}s",
            e.endpoint,
            e.requests,
            if e.parts > 0 {
                format!(" ({} ranged part(s))", e.parts)
            } else {
                String::new()
            },
            bytesize::ByteSize(e.bytes).display().iec(),
            e.resumes,
            e.max_connections,
            e.faults.transient,
            e.faults.rate_limited,
            e.faults.permanent,
            e.elapsed_ms as f64 / 1000.0
        );
    }
}

/// The summary of a sync: an image per line with where it went, what the sources did,
/// and the totals.
pub fn sync_table(report: &SyncReport) -> String {
    let mut out = String::new();
    let width = name_width(report.images.iter().map(|i| i.reference.to_string()));
    let _ = writeln!(
        out,
        "{:<width$}  {:<7}  {:>10}  TARGET",
        "IMAGE", "STATUS", "SENT"
    );
    for item in &report.images {
        let status = match item.status {
            SyncStatus::Copied => "copied",
            SyncStatus::Present => "present",
            SyncStatus::Failed => "failed",
        };
        let mut name = item.reference.to_string();
        if name.len() > width {
            let _ = writeln!(out, "{name}");
            name.clear();
        }
        let _ = writeln!(
            out,
            "{name:<width$}  {status:<7}  {:>10}  {}",
            bytesize::ByteSize(item.bytes).display().iec().to_string(),
            item.target
        );
        if let Some(error) = &item.error {
            let class = item
                .error_class
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            let _ = writeln!(out, "    {error}{class}");
        }
    }
    endpoint_lines(&mut out, &report.endpoints);
    let s = &report.summary;
    let _ = writeln!(
        out,
        "copied {}, present {}, failed {} of {} to {}{}; {} sent; {:.1}s",
        s.copied,
        s.present,
        s.failed,
        s.total,
        report.target,
        if report.plain_http {
            " (plain HTTP)"
        } else {
            ""
        },
        bytesize::ByteSize(s.bytes).display().iec(),
        s.elapsed_ms as f64 / 1000.0
    );
    out
}

/// The summary of a build run: a table, each failure's step and last output lines,
/// and a last line like `built 9/11; failed: backend-init, apphub`.
pub fn build_table(report: &BuildReport) -> String {
    let mut out = String::new();
    let width = report
        .services
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let _ = writeln!(
        out,
        "{:<width$}  {:<10}  {:>8}  {:>7}  IMAGE",
        "SERVICE", "STATUS", "ATTEMPTS", "TIME"
    );
    for r in &report.services {
        // With several builders, which one built it.
        let on = r
            .builder
            .as_deref()
            .map(|b| format!("  on {b}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<width$}  {:<10}  {:>8}  {:>6.1}s  {}{on}",
            r.name,
            r.status.as_str(),
            r.attempts,
            r.elapsed_ms as f64 / 1000.0,
            r.image
        );
    }
    for r in report
        .services
        .iter()
        .filter(|r| r.status == ServiceStatus::Failed)
    {
        let class = r.error_class.map(|c| format!(" ({c})")).unwrap_or_default();
        let _ = writeln!(out);
        match &r.step {
            Some(step) => {
                let _ = writeln!(
                    out,
                    "{} failed at `{step}`{class} after {} attempt(s):",
                    r.name, r.attempts
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "{} failed{class} after {} attempt(s):",
                    r.name, r.attempts
                );
            }
        }
        for line in &r.last_lines {
            let _ = writeln!(out, "    {line}");
        }
        if let Some(error) = &r.error {
            let _ = writeln!(out, "  error: {error}");
        }
        if let Some(hint) = &r.hint {
            let _ = writeln!(out, "  hint: {hint}");
        }
    }
    let names = |status: ServiceStatus| {
        report
            .services
            .iter()
            .filter(|r| r.status == status)
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let s = &report.summary;
    let mut last = format!("built {}/{}", s.built, s.total);
    if s.up_to_date > 0 {
        let _ = write!(last, "; up-to-date {}", s.up_to_date);
    }
    if s.failed > 0 {
        let _ = write!(last, "; failed: {}", names(ServiceStatus::Failed));
    }
    if s.skipped > 0 {
        let _ = write!(last, "; skipped: {}", names(ServiceStatus::Skipped));
    }
    if report.interrupted {
        last.push_str("; interrupted");
    }
    let _ = writeln!(out, "{last}");
    out
}

/// The doctor's checks as a compact table, each hint under its check, and a last
/// line with the counts.
pub fn doctor_table(checks: &[Check]) -> String {
    let mut out = String::new();
    let width = checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    for c in checks {
        let _ = writeln!(
            out,
            "{:<4}  {:<width$}  {}",
            c.status.as_str(),
            c.name,
            c.message
        );
        if let Some(hint) = c.hint.as_ref().filter(|_| c.status != CheckStatus::Ok) {
            let _ = writeln!(out, "{:<4}  {:<width$}  hint: {hint}", "", "");
        }
    }
    let count = |s: CheckStatus| checks.iter().filter(|c| c.status == s).count();
    let _ = writeln!(
        out,
        "{} ok, {} warnings, {} failed",
        count(CheckStatus::Ok),
        count(CheckStatus::Warn),
        count(CheckStatus::Fail)
    );
    out
}

#[cfg(test)]
mod tests {
    use docker_resilience::build::{BuildSummary, ServiceResult};
    use docker_resilience::resilience::classify::ErrorClass;

    use super::*;

    fn service(name: &str, status: ServiceStatus, attempts: u32) -> ServiceResult {
        ServiceResult {
            name: name.into(),
            image: format!("ai-infra-{name}:v0.3.6-dev"),
            status,
            attempts,
            elapsed_ms: 1200,
            error: None,
            error_class: None,
            step: None,
            last_lines: Vec::new(),
            hint: None,
            builder: None,
        }
    }

    #[test]
    fn build_summary_names_failures_with_their_last_lines() {
        let mut apphub = service("apphub", ServiceStatus::Failed, 3);
        apphub.error = Some("failed to solve: ubuntu:22.04: failed to do request: Head \"https://registry-1.docker.io/v2/library/ubuntu/manifests/22.04\": EOF".into());
        apphub.error_class = Some(ErrorClass::Transient);
        apphub.step = Some("[internal] load metadata for docker.io/library/ubuntu:22.04".into());
        let mut init = service("backend-init", ServiceStatus::Failed, 1);
        init.error = Some(
            "process \"/bin/sh -c ./migrate\" did not complete successfully: exit code: 3".into(),
        );
        init.error_class = Some(ErrorClass::Permanent);
        init.step = Some("[2/2] RUN ./migrate".into());
        init.last_lines = vec![
            "connecting to postgres".into(),
            "migration 0042 failed".into(),
        ];
        let report = BuildReport {
            services: vec![
                service("backend", ServiceStatus::Built, 1),
                init,
                apphub,
                service("nginx", ServiceStatus::Skipped, 0),
                service("frontend", ServiceStatus::UpToDate, 0),
            ],
            summary: BuildSummary {
                total: 5,
                built: 1,
                failed: 2,
                skipped: 1,
                up_to_date: 1,
                retries: 2,
                elapsed_ms: 9000,
            },
            interrupted: false,
        };
        insta::assert_snapshot!(build_table(&report));
    }

    #[test]
    fn doctor_table_shows_hints_for_problems_only() {
        let checks = vec![
            Check {
                name: "daemon".into(),
                status: CheckStatus::Ok,
                message: "Docker 20.10.24 (API 1.41)".into(),
                hint: None,
            },
            Check {
                name: "mirror 127.0.0.1:15001".into(),
                status: CheckStatus::Fail,
                message: "http://127.0.0.1:15001 is unreachable: connection refused".into(),
                hint: Some("fix it or remove it from `registry-mirrors`".into()),
            },
            Check {
                name: "upstream docker.io".into(),
                status: CheckStatus::Warn,
                message: "registry-1.docker.io is unreachable".into(),
                hint: Some("a working registry mirror covers it".into()),
            },
        ];
        insta::assert_snapshot!(doctor_table(&checks));
    }
}
