//! The one place where errors become exit codes (documented in `drbuild --help`).

use docker_resilience::bundle::BundleError;
use docker_resilience::config::SettingsError;
use docker_resilience::engine::EngineError;
use docker_resilience::plan::{PlanError, ServiceError};
use docker_resilience::{Error, ErrorKind};

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
    /// The library failed (invalid input, no daemon, a bundle refused…).
    #[error(transparent)]
    Run(#[from] Error),
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

/// Every stage's error converts through the library's [`Error`].
macro_rules! from_stage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for CliError {
            fn from(e: $t) -> Self {
                CliError::Run(Error::from(e))
            }
        }
    )*};
}

from_stage_errors!(
    PlanError,
    ServiceError,
    SettingsError,
    EngineError,
    BundleError
);

impl CliError {
    /// The exit code for this error: the one table.
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Run(e) => match e.kind() {
                ErrorKind::Input => Exit::Usage,
                ErrorKind::DaemonUnreachable => Exit::DaemonUnreachable,
                ErrorKind::Interrupted => Exit::Interrupted,
                _ => Exit::Failed,
            },
            CliError::Usage(_) => Exit::Usage,
            CliError::Failed(_) => Exit::Failed,
            CliError::Interrupted => Exit::Interrupted,
        }
    }
}

impl CliError {
    /// The end of a command whose report is printed: interrupted, some of its items
    /// failed (`what`: `image(s) not pulled`), or all well.
    pub fn outcome(interrupted: bool, failed: usize, what: &str) -> Result<(), CliError> {
        if interrupted {
            Err(CliError::Interrupted)
        } else if failed > 0 {
            Err(CliError::Failed(format!("{failed} {what}")))
        } else {
            Ok(())
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
            errln!("error: {e}");
            e.exit()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        let unreachable = EngineError::Unreachable {
            host: "unix:///nowhere".into(),
            message: "no such file".into(),
        };
        assert_eq!(CliError::from(unreachable).exit(), Exit::DaemonUnreachable);
        let cycle = ServiceError::Cycle {
            cycle: vec!["a".into(), "b".into(), "a".into()],
        };
        assert_eq!(CliError::from(cycle).exit(), Exit::Usage);
        assert_eq!(
            CliError::from(BundleError::Interrupted).exit(),
            Exit::Interrupted
        );
        assert_eq!(CliError::Failed("x".into()).exit(), Exit::Failed);
        assert_eq!(
            CliError::from(EngineError::other("500")).exit(),
            Exit::Failed
        );
    }
}
