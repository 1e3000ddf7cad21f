//! What a build run reports: each service's result and status, a failure as
//! classified, the run's totals and the events it emits on the way.

use std::time::Duration;

use serde::Serialize;

use crate::engine::BuildError;
use crate::plan::Service;
use crate::resilience::classify::{classify_build, ErrorClass};

/// Why a build failed, classified: retry or not, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct BuildFailure {
    /// What failed, as the daemon said it.
    pub message: String,
    /// Transient failures are retried; permanent ones are not.
    pub class: ErrorClass,
    /// The failing step (`[build 3/5] RUN make`), when known.
    pub step: Option<String>,
    /// The failing step's last output lines.
    pub last_lines: Vec<String>,
    /// What to do about it, when we know.
    pub hint: Option<String>,
}

impl BuildFailure {
    /// A daemon's failure classified (`heredocs_rejected`: the Dockerfile opens
    /// heredocs that the daemon's built-in frontend does not accept).
    pub fn classify(error: BuildError, heredocs_rejected: bool) -> Self {
        let (class, hint) = classify_build(&error.message, &error.last_lines, heredocs_rejected);
        BuildFailure {
            message: error.message,
            class,
            step: error.step,
            last_lines: error.last_lines,
            hint,
        }
    }

    /// A failure that no retry can fix (bad context, missing Dockerfile…).
    pub fn permanent(message: String) -> Self {
        BuildFailure {
            message,
            class: ErrorClass::Permanent,
            step: None,
            last_lines: Vec::new(),
            hint: None,
        }
    }
}

/// What became of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceStatus {
    /// Built.
    Built,
    /// Its build failed.
    Failed,
    /// Not built: something it depends on failed (or `--fail-fast` stopped the run).
    Skipped,
    /// Not built: its image exists (`--missing-only`).
    UpToDate,
}

impl ServiceStatus {
    /// The status as the report spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Built => "built",
            ServiceStatus::Failed => "failed",
            ServiceStatus::Skipped => "skipped",
            ServiceStatus::UpToDate => "up-to-date",
        }
    }
}

/// One service's result.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceResult {
    /// The service.
    pub name: String,
    /// Its image.
    pub image: String,
    /// What became of it.
    pub status: ServiceStatus,
    /// Build attempts made.
    pub attempts: u32,
    /// Time spent on it.
    pub elapsed_ms: u64,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// The class of the last failure.
    pub error_class: Option<ErrorClass>,
    /// The failing step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The failing step's last output lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub last_lines: Vec<String>,
    /// What to do about the failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The builder it was built on (its daemon's address), when the run had several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder: Option<String>,
}

/// Totals of a build run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BuildSummary {
    /// Services in the run.
    pub total: usize,
    /// Built.
    pub built: usize,
    /// Failed.
    pub failed: usize,
    /// Skipped.
    pub skipped: usize,
    /// Up to date (not built).
    pub up_to_date: usize,
    /// Retries of transient failures.
    pub retries: u32,
    /// Wall time of the run.
    pub elapsed_ms: u64,
}

/// The result of a build run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BuildReport {
    /// Each service, in build order.
    pub services: Vec<ServiceResult>,
    /// Totals.
    pub summary: BuildSummary,
    /// The run was cancelled.
    #[serde(skip)]
    pub interrupted: bool,
}

/// What happens during a run, for progress output.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BuildEvent {
    /// An attempt starts.
    Started {
        /// The service.
        service: String,
        /// 1-based attempt.
        attempt: u32,
    },
    /// A line of build output.
    Line {
        /// The service.
        service: String,
        /// The line.
        line: String,
    },
    /// An attempt failed and will be retried.
    Retrying {
        /// The service.
        service: String,
        /// The failed attempt.
        attempt: u32,
        /// Why.
        error: String,
        /// When the next one starts.
        delay: Duration,
    },
    /// A service is done (built, failed, skipped or up to date).
    Finished(ServiceResult),
}

impl ServiceResult {
    /// `service` with this status, before any attempt.
    pub(super) fn new(service: &Service, status: ServiceStatus) -> Self {
        ServiceResult {
            name: service.name.clone(),
            image: service.image.clone(),
            status,
            attempts: 0,
            elapsed_ms: 0,
            error: None,
            error_class: None,
            step: None,
            last_lines: Vec::new(),
            hint: None,
            builder: None,
        }
    }

    /// `service` not built, and why.
    pub(super) fn skipped(service: &Service, why: String) -> Self {
        ServiceResult {
            error: Some(why),
            ..ServiceResult::new(service, ServiceStatus::Skipped)
        }
    }
}
