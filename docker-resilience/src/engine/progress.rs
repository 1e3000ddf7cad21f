//! The daemon's build stream (BuildKit vertexes and logs, or the classic builder's
//! lines) as output lines, and what failed: the step, its last lines, the error.

use std::collections::{HashMap, VecDeque};

use bollard::models::{BuildInfo, BuildInfoAux};
use bollard_buildkit_proto::moby::buildkit::v1::StatusResponse;

use super::BuildError;

/// Lines of a failing step's output kept for the report.
const TAIL_LINES: usize = 12;

/// Turns a build's progress (BuildKit vertexes and logs, or classic stream lines)
/// into output lines, and remembers the failing step and its last lines.
#[derive(Debug, Default)]
pub(super) struct Progress {
    names: HashMap<String, String>,
    started: HashMap<String, bool>,
    tails: HashMap<String, VecDeque<String>>,
    partial: HashMap<String, String>,
    classic_tail: VecDeque<String>,
    classic_step: Option<String>,
    failed_step: Option<String>,
    pub(super) vertex_error: Option<String>,
    /// The image was exported and tagged (BuildKit's `naming to …` done, or the
    /// classic `Successfully tagged`).
    pub(super) image_written: bool,
}

fn push_tail(tail: &mut VecDeque<String>, line: String) {
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line);
}

impl Progress {
    /// Records one message; returns an error the message carries.
    pub(super) fn record(
        &mut self,
        info: BuildInfo,
        log: &(dyn Fn(&str) + Send + Sync),
    ) -> Option<String> {
        if let Some(BuildInfoAux::BuildKit(status)) = info.aux {
            self.record_status(status, log);
            return None;
        }
        self.classic(info, log)
    }

    /// Records one status message of BuildKit (vertexes, their logs).
    pub(super) fn record_status(
        &mut self,
        status: StatusResponse,
        log: &(dyn Fn(&str) + Send + Sync),
    ) {
        for vertex in status.vertexes {
            if !vertex.name.is_empty() {
                self.names
                    .insert(vertex.digest.clone(), vertex.name.clone());
            }
            let name = self.names.get(&vertex.digest).cloned().unwrap_or_default();
            if vertex.completed.is_some()
                && vertex.error.is_empty()
                && name.starts_with("exporting to image")
            {
                self.image_written = true;
            }
            if vertex.started.is_some() && !self.started.contains_key(&vertex.digest) {
                self.started.insert(vertex.digest.clone(), true);
                if vertex.cached {
                    log(&format!("{name} (cached)"));
                } else {
                    log(&name);
                }
            }
            if !vertex.error.is_empty() && self.vertex_error.is_none() {
                self.failed_step = Some(name.clone());
                self.failed_tail_from(&vertex.digest);
                self.vertex_error = Some(vertex.error.clone());
            }
        }
        for entry in status.logs {
            let text = String::from_utf8_lossy(&entry.msg).into_owned();
            let buffer = self.partial.entry(entry.vertex.clone()).or_default();
            buffer.push_str(&text);
            while let Some(at) = buffer.find(['\n', '\r']) {
                let line: String = buffer.drain(..=at).collect();
                let line = line.trim_end().to_owned();
                if line.is_empty() {
                    continue;
                }
                log(&format!("  {line}"));
                push_tail(self.tails.entry(entry.vertex.clone()).or_default(), line);
            }
        }
    }

    fn classic(&mut self, info: BuildInfo, log: &(dyn Fn(&str) + Send + Sync)) -> Option<String> {
        if let Some(text) = info.stream {
            for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                if line.starts_with("Successfully tagged ") {
                    self.image_written = true;
                }
                if line.starts_with("Step ") {
                    self.classic_step = Some(line.to_owned());
                    self.classic_tail.clear();
                } else {
                    push_tail(&mut self.classic_tail, line.to_owned());
                }
                log(line);
            }
        }
        if let Some(detail) = info.error_detail {
            return Some(detail.message.unwrap_or_else(|| "the build failed".into()));
        }
        None
    }

    fn failed_tail_from(&mut self, digest: &str) {
        if let Some(rest) = self
            .partial
            .get_mut(digest)
            .filter(|r| !r.trim().is_empty())
        {
            let line = std::mem::take(rest).trim_end().to_owned();
            push_tail(self.tails.entry(digest.to_owned()).or_default(), line);
        }
    }

    pub(super) fn failure(&mut self, message: String) -> BuildError {
        let (step, tail) = if self.failed_step.is_some() {
            let digest = self
                .names
                .iter()
                .find(|(_, n)| Some(*n) == self.failed_step.as_ref())
                .map(|(d, _)| d.clone())
                .unwrap_or_default();
            (
                self.failed_step.clone(),
                self.tails.remove(&digest).unwrap_or_default(),
            )
        } else {
            (
                self.classic_step.clone(),
                std::mem::take(&mut self.classic_tail),
            )
        };
        let message = match self.vertex_error.take() {
            Some(v) if !message.contains(&v) && v != message => format!("{message}: {v}"),
            _ => message,
        };
        BuildError {
            message,
            step,
            last_lines: tail.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;

    use super::*;

    /// Replays a captured daemon stream (`tests/data/build-streams/ENGINE/CASE.jsonl`)
    /// through the parser, as the engine does: the lines it logs, and the failure.
    fn replay(engine: &str, case: &str) -> (Vec<String>, Option<BuildError>, bool) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/build-streams")
            .join(engine)
            .join(format!("{case}.jsonl"));
        let text = std::fs::read_to_string(&path).unwrap();
        let logged = Mutex::new(Vec::new());
        let log = |line: &str| logged.lock().unwrap().push(line.to_owned());
        let mut progress = Progress::default();
        let mut failure = None;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let info: BuildInfo = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: {e}: {line}", path.display()));
            if let Some(error) = progress.record(info, &log) {
                failure = Some(progress.failure(error));
                break;
            }
        }
        if failure.is_none() {
            if let Some(error) = progress.vertex_error.take() {
                failure = Some(progress.failure(error));
            }
        }
        (
            logged.into_inner().unwrap(),
            failure,
            progress.image_written,
        )
    }

    /// The engines whose streams are captured under `tests/data/build-streams/`.
    const ENGINES: [&str; 2] = ["20.10", "28.5-containerd"];

    #[test]
    fn buildkit_success_logs_steps_and_output() {
        for engine in ENGINES {
            let (lines, failure, written) = replay(engine, "buildkit-ok");
            assert_eq!(failure, None, "{engine}");
            assert!(written, "{engine}: exporting to image completed");
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with("[2/3] RUN echo hello from the build")),
                "{engine}: {lines:#?}"
            );
            assert!(
                lines.contains(&"  hello from the build".to_owned()),
                "{engine}: {lines:#?}"
            );
        }
    }

    #[test]
    fn buildkit_failing_step_names_the_step_and_its_last_lines() {
        for engine in ENGINES {
            let (_, failure, written) = replay(engine, "buildkit-exit-3");
            let f = failure.expect("a failure");
            assert!(!written, "{engine}");
            assert_eq!(
                f.step.as_deref(),
                Some("[2/2] RUN echo compiling && echo linking >&2 && exit 3"),
                "{engine}"
            );
            // stdout and stderr are separate streams: their order is the daemon's choice.
            let mut tail = f.last_lines.clone();
            tail.sort();
            assert_eq!(tail, ["compiling", "linking"], "{engine}");
            assert!(
                f.message.contains("exit code: 3"),
                "{engine}: {}",
                f.message
            );
        }
    }

    #[test]
    fn buildkit_mirror_500_output_is_kept_for_the_classifier() {
        for engine in ENGINES {
            let (_, failure, _) = replay(engine, "buildkit-apt-500");
            let f = failure.expect("a failure");
            assert!(
                f.last_lines
                    .iter()
                    .any(|l| l.contains("500  Internal Server Error")),
                "{engine}: {f:?}"
            );
            assert!(
                f.message.contains("exit code: 100"),
                "{engine}: {}",
                f.message
            );
        }
    }

    #[test]
    fn heredocs_fail_to_parse_on_20_10_and_build_on_28_5() {
        let (_, failure, _) = replay("20.10", "buildkit-heredoc");
        let f = failure.expect("20.10's frontend rejects heredocs");
        assert!(f.message.contains("unknown instruction"), "{}", f.message);
        assert_eq!(f.step, None);
        let (_, failure, written) = replay("28.5-containerd", "buildkit-heredoc");
        assert_eq!(failure, None);
        assert!(written);
    }

    #[test]
    fn classic_builder_step_and_tail() {
        for engine in ENGINES {
            let (lines, failure, written) = replay(engine, "classic-exit-3");
            let f = failure.expect("a failure");
            assert!(!written, "{engine}");
            assert_eq!(
                f.step.as_deref(),
                Some("Step 2/2 : RUN echo compiling && exit 3"),
                "{engine}"
            );
            assert!(
                f.last_lines.contains(&"compiling".to_owned()),
                "{engine}: {f:?}"
            );
            assert!(
                f.message.contains("returned a non-zero code: 3"),
                "{engine}"
            );
            assert!(lines.contains(&"compiling".to_owned()), "{engine}");
            let (_, failure, written) = replay(engine, "classic-ok");
            assert_eq!(failure, None, "{engine}");
            assert!(written, "{engine}: `Successfully tagged` seen");
        }
    }
}
