//! Credentials from docker's config and credential helpers (`docker login`), per
//! registry host, looked up once. They are never logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::vocab::DOCKER_HUB;

/// Where Docker Hub credentials live in docker's config.
const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A credential for a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A user name and password (or access token).
    Basic {
        /// The user.
        username: String,
        /// The password.
        password: String,
    },
    /// An identity (refresh) token.
    IdentityToken(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

/// Looks credentials up in docker's config, once per registry.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    disabled: bool,
    found: Arc<Mutex<HashMap<String, Option<Credential>>>>,
}

impl Credentials {
    /// Credentials from docker's config.
    pub fn from_docker_config() -> Self {
        Credentials::default()
    }

    /// No credentials at all (`--no-credentials`).
    pub fn none() -> Self {
        Credentials {
            disabled: true,
            ..Credentials::default()
        }
    }

    /// The config's key for a registry (`docker.io` is Docker Hub's legacy URL).
    pub fn server_key(registry: &str) -> String {
        if registry == DOCKER_HUB || registry == "registry-1.docker.io" {
            DOCKER_HUB_AUTH_KEY.to_owned()
        } else {
            registry.to_owned()
        }
    }

    /// The credential for `registry` (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
    pub async fn get(&self, registry: &str) -> Option<Credential> {
        if self.disabled {
            return None;
        }
        if let Some(cached) = crate::support::lock(&self.found).get(registry) {
            return cached.clone();
        }
        let server = Self::server_key(registry);
        // docker_credential is synchronous (it may run a credential helper).
        let found = tokio::task::spawn_blocking(move || docker_credential::get_credential(&server))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|c| match c {
                docker_credential::DockerCredential::UsernamePassword(username, password) => {
                    Credential::Basic { username, password }
                }
                docker_credential::DockerCredential::IdentityToken(token) => {
                    Credential::IdentityToken(token)
                }
            });
        // Whatever else might print them (a daemon's error echoing a header…), the
        // output's redaction masks them.
        match &found {
            Some(Credential::Basic { password, .. }) => crate::vocab::register_secret(password),
            Some(Credential::IdentityToken(token)) => crate::vocab::register_secret(token),
            None => {}
        }
        crate::support::lock(&self.found).insert(registry.to_owned(), found.clone());
        found
    }
}
