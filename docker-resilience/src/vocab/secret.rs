//! Build secrets: what a build may mount with `RUN --mount=type=secret,id=ID`, where
//! its value comes from, and the value itself (never printed).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// Where a build secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretSource {
    /// A file (relative paths are relative to where the secret was given).
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A value already known (compose's `environment:` secret, read from the project's
    /// environment, `.env` included), named by the variable it came from.
    Value {
        /// The variable it came from.
        variable: String,
        /// The value.
        value: SecretValue,
    },
}

/// A build secret: `id=ID[,src=FILE|,env=VAR]` (`--secret`, drbuild.yaml), or compose's
/// `build.secrets` with the top-level `secrets:`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretSpec {
    /// The id a Dockerfile mounts it by.
    pub id: String,
    /// Its value's source.
    pub source: SecretSource,
}

/// A `--secret` value that is not `id=ID[,src=FILE|,env=VAR]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid secret `{given}`: {reason} (expected id=ID[,src=FILE|,env=VAR])")]
pub struct SecretSpecError {
    /// What was given.
    pub given: String,
    /// What is wrong.
    pub reason: String,
}

impl FromStr for SecretSpec {
    type Err = SecretSpecError;

    /// Docker's grammar: `id=`, then `src=`/`source=` (a file) or `env=`; `type=file|env`
    /// is accepted. With neither, the environment variable named like the id.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |reason: &str| SecretSpecError {
            given: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (mut id, mut file, mut env, mut kind) = (None, None, None, None);
        for field in s.split(',').filter(|f| !f.trim().is_empty()) {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| error(&format!("`{field}` is not KEY=VALUE")))?;
            let value = value.trim().to_owned();
            match key.trim().to_ascii_lowercase().as_str() {
                "id" => id = Some(value),
                "src" | "source" => file = Some(value),
                "env" => env = Some(value),
                "type" => kind = Some(value),
                other => return Err(error(&format!("unknown field `{other}`"))),
            }
        }
        let id = id.filter(|i| !i.is_empty()).ok_or_else(|| error("no id"))?;
        let source = match (file, env, kind.as_deref()) {
            (Some(_), Some(_), _) => return Err(error("both src and env")),
            (Some(f), None, None | Some("file")) => SecretSource::File(PathBuf::from(f)),
            (None, Some(e), None | Some("env")) => SecretSource::Env(e),
            (None, None, None | Some("env")) => SecretSource::Env(id.clone()),
            (Some(f), None, Some("env")) => SecretSource::Env(f),
            (None, None, Some("file")) => SecretSource::File(PathBuf::from(&id)),
            (_, _, Some(other)) => return Err(error(&format!("unknown type `{other}`"))),
        };
        Ok(SecretSpec { id, source })
    }
}

impl SecretSpec {
    /// This secret with a relative file made relative to `base`.
    pub fn relative_to(mut self, base: &Path) -> Self {
        if let SecretSource::File(path) = &mut self.source {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        self
    }

    /// Reads the value (and registers it for redaction). `env` looks variables up.
    pub fn read(&self, env: impl Fn(&str) -> Option<String>) -> Result<SecretValue, String> {
        let bytes = match &self.source {
            SecretSource::File(path) => std::fs::read(path)
                .map_err(|e| format!("file `{}` cannot be read: {e}", path.display()))?,
            SecretSource::Env(name) => env(name)
                .ok_or_else(|| format!("environment variable `{name}` is not set"))?
                .into_bytes(),
            SecretSource::Value { value, .. } => return Ok(value.clone()),
        };
        if let Ok(text) = std::str::from_utf8(&bytes) {
            super::register_secret(text);
        }
        Ok(SecretValue(Arc::from(bytes)))
    }
}

impl fmt::Display for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            SecretSource::File(path) => write!(f, "id={},src={}", self.id, path.display()),
            SecretSource::Env(name) | SecretSource::Value { variable: name, .. } => {
                write!(f, "id={},env={name}", self.id)
            }
        }
    }
}

/// A secret's value: bytes that are never printed (`Debug` shows `***`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretValue(Arc<[u8]>);

impl SecretValue {
    /// A value from bytes.
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Self {
        SecretValue(bytes.into())
    }

    /// The bytes, for the build session only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(super::redact::MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> SecretSpec {
        s.parse().unwrap()
    }

    #[test]
    fn docker_grammar() {
        assert_eq!(
            spec("id=tok,env=TOK").source,
            SecretSource::Env("TOK".into())
        );
        assert_eq!(
            spec("id=npm,src=.npmrc").source,
            SecretSource::File(".npmrc".into())
        );
        assert_eq!(
            spec("id=npm,source=/a,type=file").source,
            SecretSource::File("/a".into())
        );
        assert_eq!(
            spec("id=GH_TOKEN").source,
            SecretSource::Env("GH_TOKEN".into())
        );
        for bad in [
            "env=X",
            "id=a,src=b,env=c",
            "id=a,foo=b",
            "id=a,type=ssh",
            "id",
        ] {
            assert!(bad.parse::<SecretSpec>().is_err(), "{bad}");
        }
        assert_eq!(spec("id=a,src=b").to_string(), "id=a,src=b");
    }

    #[test]
    fn reading_says_what_is_missing_and_never_debugs_the_value() {
        let missing = spec("id=tok,env=DRBUILD_TEST_UNSET_TOKEN")
            .read(|_| None)
            .unwrap_err();
        assert_eq!(
            missing,
            "environment variable `DRBUILD_TEST_UNSET_TOKEN` is not set"
        );
        let value = spec("id=tok,env=T")
            .read(|_| Some("hunter2-secret".into()))
            .unwrap();
        assert_eq!(value.expose(), b"hunter2-secret");
        assert_eq!(format!("{value:?}"), "***");
        assert_eq!(crate::vocab::redact("x hunter2-secret y"), "x *** y");
    }
}
