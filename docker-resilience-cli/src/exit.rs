//! The one place where errors become exit codes (documented in `drbuild --help`).

use docker_resilience::{BundleError, EngineError, PlanError, ServiceError};

/// `drbuild`'s exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Everything asked for succeeded.
    Success = 0,
    /// The work ran but some items failed.
    Failed = 1,
    /// Usage or input error (bad flag, invalid Dockerfile, compose or config).
    Usage = 2,
    /// The Docker daemon is unreachable.
    DaemonUnreachable = 3,
    /// Interrupted (Ctrl-C).
    Interrupted = 130,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// The exit-code table printed at the end of `drbuild --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    everything asked for succeeded
  1    the work ran but some items failed (an image not pulled, a service not built, a doctor check failed)
  2    usage or input error: bad flag, invalid Dockerfile, compose or config (`path:line: message`)
  3    Docker daemon unreachable
  130  interrupted (Ctrl-C): in-flight work cancelled, partial files removed";

/// Why a command did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The tree could not be planned (invalid input).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The services or `drbuild.yaml` are invalid (a cycle, an unknown service…).
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The Docker daemon could not be used.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A bundle could not be written, verified or loaded.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A flag's value is invalid.
    #[error("{0}")]
    Usage(String),
    /// The command ran and some items failed; the report is already printed.
    #[error("{0}")]
    Failed(String),
    /// The command was interrupted.
    #[error("interrupted")]
    Interrupted,
}

impl CliError {
    /// The exit code for this error.
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Plan(_) | CliError::Service(_) | CliError::Usage(_) => Exit::Usage,
            CliError::Engine(EngineError::Unreachable { .. })
            | CliError::Bundle(BundleError::Engine(EngineError::Unreachable { .. })) => {
                Exit::DaemonUnreachable
            }
            CliError::Bundle(BundleError::Interrupted) => Exit::Interrupted,
            CliError::Bundle(_) => Exit::Failed,
            CliError::Engine(_) | CliError::Failed(_) => Exit::Failed,
            CliError::Interrupted => Exit::Interrupted,
        }
    }
}

/// Prints an error (if any) and returns the exit code.
pub fn report(result: Result<(), CliError>) -> Exit {
    match result {
        Ok(()) => Exit::Success,
        // The report is printed already; its last line says what failed.
        Err(e @ (CliError::Failed(_) | CliError::Interrupted)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            e.exit()
        }
    }
}
