//! The crate's error: what any stage can fail with, and what kind of failure it is
//! (the CLI's exit codes come from [`ErrorKind`]).

use super::DockerBuildReport;
#[cfg(feature = "bundle")]
use crate::bundle::BundleError;
use crate::config::SettingsError;
use crate::engine::EngineError;
use crate::plan::{PlanError, ServiceError};

/// Why a run did not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The tree cannot be planned (an invalid Dockerfile, compose file or drbuild.yaml).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The services are invalid (a cycle, an unknown service).
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// A setting's value cannot be used.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The daemon cannot be used.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A bundle cannot be written, verified or loaded.
    #[cfg(feature = "bundle")]
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A build secret's source cannot be read (an unset variable, a missing file).
    #[error("service `{service}`: secret `{id}`: {message}")]
    Secret {
        /// The service that needs it.
        service: String,
        /// The secret's id.
        id: String,
        /// What is missing.
        message: String,
    },
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Some services were not built; the report says why.
    #[error("{} service(s) not built: {}", failed.len(), failed.join(", "))]
    NotBuilt {
        /// The services that failed or were skipped.
        failed: Vec<String>,
        /// The whole report.
        report: Box<DockerBuildReport>,
    },
}

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Invalid input: a file, a flag, a service name.
    Input,
    /// The Docker daemon cannot be reached.
    DaemonUnreachable,
    /// The run was interrupted.
    Interrupted,
    /// The work ran and something failed.
    Failed,
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Plan(_) | Error::Service(_) | Error::Settings(_) | Error::Secret { .. } => {
                ErrorKind::Input
            }
            Error::Engine(EngineError::Unreachable { .. }) => ErrorKind::DaemonUnreachable,
            #[cfg(feature = "bundle")]
            Error::Bundle(BundleError::Engine(EngineError::Unreachable { .. })) => {
                ErrorKind::DaemonUnreachable
            }
            #[cfg(feature = "bundle")]
            Error::Bundle(BundleError::Interrupted) => ErrorKind::Interrupted,
            #[cfg(feature = "bundle")]
            Error::Bundle(_) => ErrorKind::Failed,
            Error::Engine(_) | Error::Runtime(_) | Error::NotBuilt { .. } => ErrorKind::Failed,
        }
    }
}
