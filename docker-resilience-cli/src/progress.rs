//! Pull progress: bars on a terminal, plain log lines elsewhere (CI logs).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use docker_resilience::build::BuildEvent;
use docker_resilience::prefetch::{ImageStatus, PrefetchEvent};
use docker_resilience::vocab::{redact, Platform};
use docker_resilience::ImageReference;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Turns prefetch events into bars or log lines.
#[derive(Clone)]
pub struct PullProgress {
    bars: Option<Arc<Bars>>,
    quiet: bool,
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    images: Mutex<HashMap<String, ProgressBar>>,
    finished: AtomicBool,
}

impl PullProgress {
    /// Bars when stderr is a terminal and `bars` allows them (not under `--json`);
    /// plain log lines otherwise, none when `quiet`.
    pub fn new(quiet: bool, bars: bool) -> Self {
        let bars = (bars && !quiet && std::io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let total = multi.add(ProgressBar::new(0));
            total.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {pos}/{len} images {elapsed}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            total.set_prefix("prefetch");
            Arc::new(Bars {
                multi,
                total,
                images: Mutex::new(HashMap::new()),
                finished: AtomicBool::new(false),
            })
        });
        PullProgress { bars, quiet }
    }

    /// Handles one event.
    pub fn event(&self, event: &PrefetchEvent) {
        match &self.bars {
            Some(bars) => bars.event(event),
            None if !self.quiet => log(event),
            None => {}
        }
    }

    /// Clears the bars (once; later calls do nothing).
    pub fn finish(&self) {
        if let Some(bars) = &self.bars {
            if !bars.finished.swap(true, Ordering::SeqCst) {
                bars.total.finish_and_clear();
                let _ = bars.multi.clear();
            }
        }
    }
}

/// An image's short name, with its platform when that is not the host's.
fn label(image: &ImageReference, platform: Option<&Platform>) -> String {
    match platform.filter(|p| **p != Platform::host()) {
        Some(p) => format!("{} [{p}]", image.familiar()),
        None => image.familiar(),
    }
}

fn log(event: &PrefetchEvent) {
    match event {
        PrefetchEvent::Attempt {
            image,
            attempt,
            source,
        } => tracing::info!("pulling {image} (attempt {attempt}, from {source})"),
        PrefetchEvent::AttemptFailed {
            image,
            attempt,
            error,
            class,
            retry_in: Some(delay),
        } => tracing::warn!(
            "{image}: attempt {attempt} failed ({class}): {error}; retrying in {:.1}s",
            delay.as_secs_f64()
        ),
        PrefetchEvent::SourceSkipped { source } => {
            tracing::warn!("{source} keeps failing: skipping it for the rest of this run")
        }
        PrefetchEvent::Finished(r) => match r.status {
            ImageStatus::Pulled => tracing::info!(
                "pulled {} in {:.1}s ({} attempt{})",
                r.reference,
                r.elapsed_ms as f64 / 1000.0,
                r.attempts,
                if r.attempts == 1 { "" } else { "s" }
            ),
            ImageStatus::Present => tracing::info!("present {}", r.reference),
            ImageStatus::Failed => {
                tracing::error!("{}", r.error.as_deref().unwrap_or("failed"))
            }
        },
        _ => {}
    }
}

impl Bars {
    fn bar(&self, image: &str) -> ProgressBar {
        let mut images = self.images.lock().unwrap_or_else(|e| e.into_inner());
        images
            .entry(image.to_owned())
            .or_insert_with(|| {
                let bar = self.multi.insert_before(&self.total, ProgressBar::new(0));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>40!} [{bar:30}] {bytes}/{total_bytes} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(image.to_owned());
                bar
            })
            .clone()
    }

    fn event(&self, event: &PrefetchEvent) {
        match event {
            PrefetchEvent::Attempt {
                image,
                attempt,
                source,
            } => {
                self.total
                    .set_length(self.total.length().unwrap_or(0).max(1));
                let bar = self.bar(&label(&image.reference, image.platform.as_ref()));
                bar.set_message(format!("attempt {attempt} from {source}"));
            }
            PrefetchEvent::Progress {
                image,
                current,
                total,
            } => {
                let bar = self.bar(&label(&image.reference, image.platform.as_ref()));
                bar.set_length(*total);
                bar.set_position(*current);
            }
            PrefetchEvent::AttemptFailed {
                image,
                class,
                retry_in: Some(delay),
                ..
            } => {
                self.bar(&label(&image.reference, image.platform.as_ref()))
                    .set_message(format!(
                        "{class} error, retry in {:.1}s",
                        delay.as_secs_f64()
                    ));
            }
            PrefetchEvent::SourceSkipped { source } => {
                let _ = self.multi.println(redact(&format!(
                    "{source} keeps failing: skipping it for the rest of this run"
                )));
            }
            PrefetchEvent::Finished(r) => {
                self.total.inc_length(1);
                self.total.inc(1);
                let bar = self.bar(&label(&r.reference, r.platform.as_ref()));
                let message = match r.status {
                    ImageStatus::Pulled => format!("pulled ({} attempts)", r.attempts),
                    ImageStatus::Present => "present".to_owned(),
                    ImageStatus::Failed => "failed".to_owned(),
                };
                bar.finish_with_message(message);
            }
            _ => {}
        }
    }
}

/// Build progress: on a terminal, one spinner per running service showing its
/// current step and a total bar; elsewhere (CI logs), every line prefixed with the
/// service's name, as compose does.
#[derive(Clone)]
pub struct BuildProgress {
    /// Drawn from the first event on (after the prefetch's bars are gone).
    bars: Option<Arc<OnceLock<BuildBars>>>,
    quiet: bool,
    width: usize,
    services: usize,
}

struct BuildBars {
    multi: MultiProgress,
    total: ProgressBar,
    services: Mutex<HashMap<String, ProgressBar>>,
}

impl BuildProgress {
    /// Bars when stderr is a terminal and `bars` allows them; `width` aligns names.
    pub fn new(quiet: bool, bars: bool, width: usize, services: usize) -> Self {
        let bars =
            (bars && !quiet && std::io::stderr().is_terminal()).then(|| Arc::new(OnceLock::new()));
        BuildProgress {
            bars,
            quiet,
            width,
            services,
        }
    }

    fn bars(&self) -> Option<&BuildBars> {
        let cell = self.bars.as_ref()?;
        Some(cell.get_or_init(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let total = multi.add(ProgressBar::new(self.services as u64));
            total.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {pos}/{len} services {elapsed}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            total.set_prefix("build");
            BuildBars {
                multi,
                total,
                services: Mutex::new(HashMap::new()),
            }
        }))
    }

    /// Handles one event.
    pub fn event(&self, event: &BuildEvent) {
        let width = self.width;
        let Some(bars) = self.bars() else {
            if self.quiet {
                return;
            }
            let line = match event {
                BuildEvent::Started { service, attempt } if *attempt > 1 => format!("{service:<width$} | attempt {attempt}"),
                BuildEvent::Started { service, .. } => format!("{service:<width$} | building"),
                BuildEvent::Line { service, line } => format!("{service:<width$} | {line}"),
                BuildEvent::Retrying { service, attempt, error, delay } => format!(
                    "{service:<width$} | attempt {attempt} failed (transient): {error}; retrying in {:.1}s",
                    delay.as_secs_f64()
                ),
                BuildEvent::Finished(r) => format!("{:<width$} | {}", r.name, r.status.as_str()),
                _ => return,
            };
            errln!("{line}");
            return;
        };
        let bar = |name: &str| {
            let mut services = bars.services.lock().unwrap_or_else(|e| e.into_inner());
            services
                .entry(name.to_owned())
                .or_insert_with(|| {
                    let bar = bars
                        .multi
                        .insert_before(&bars.total, ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template(&format!(
                            "{{spinner}} {{prefix:<{width}}} {{wide_msg}}"
                        ))
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(name.to_owned());
                    bar.enable_steady_tick(std::time::Duration::from_millis(120));
                    bar
                })
                .clone()
        };
        match event {
            BuildEvent::Started { service, attempt } => {
                bar(service).set_message(format!("attempt {attempt}"))
            }
            BuildEvent::Line { service, line } => {
                bar(service).set_message(redact(line.trim()).into_owned())
            }
            BuildEvent::Retrying { service, delay, .. } => bar(service).set_message(format!(
                "transient failure, retrying in {:.1}s",
                delay.as_secs_f64()
            )),
            BuildEvent::Finished(r) => {
                bars.total.inc(1);
                let b = bar(&r.name);
                b.finish_and_clear();
                bars.multi.remove(&b);
                let _ = bars
                    .multi
                    .println(format!("{:<width$} | {}", r.name, r.status.as_str()));
            }
            _ => {}
        }
    }

    /// Clears the bars.
    pub fn finish(&self) {
        if let Some(bars) = self.bars.as_ref().and_then(|cell| cell.get()) {
            bars.total.finish_and_clear();
            let _ = bars.multi.clear();
        }
    }
}
