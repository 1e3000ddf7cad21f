//! Config: `drbuild.yaml` ([`file`](mod@file)) and the one resolution of settings
//! ([`settings`]): flags over the file over defaults, used alike by `drbuild` and by
//! the [`DockerBuild`](crate::DockerBuild) runner.
//!
//! May import: `vocab`, `parse`, `resilience`.

pub mod file;
pub mod settings;

pub use file::{Config, ConfigFile, Fallback, RetrySettings, ServiceConfig, Via, CONFIG_FILE};
pub use settings::{Overrides, Settings, SettingsError};
