//! A distribution-API client that reports what each request really got: the endpoint,
//! the HTTP status, the registry's error code and its `Retry-After`, or the transport
//! failure. Token auth (`WWW-Authenticate: Bearer …`) and basic auth with credentials
//! from docker's config; ranged blob requests for resuming.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RANGE, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;

use super::credentials::{Credential, Credentials};
use super::manifest::accept;
use crate::resilience::classify::ErrorClass;
use crate::resilience::mirror::Mirror;
use crate::vocab::{registry_url, ImageReference, DOCKER_HUB};

/// What an endpoint is to the images asked of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// The image's own registry.
    Registry,
    /// A registry mirror of the daemon's (`registry-mirrors`): a pull-through cache of
    /// Docker Hub, whose "not found" is Docker Hub's.
    DaemonMirror,
    /// A mirror given to drbuild (`--mirror`, drbuild.yaml), which may just not hold an
    /// image.
    Mirror,
    /// A registry drbuild writes to (`sync --to`, `import --to`).
    Target,
}

impl Role {
    /// Whether its "not found" is final (the image does not exist), not only "not here".
    pub fn authoritative(self) -> bool {
        self != Role::Mirror
    }
}

/// Where a request goes: a registry or a mirror of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// How messages name it: `registry docker.io`, `mirror 127.0.0.1:5001`.
    pub label: String,
    /// What it is to the images asked of it.
    pub role: Role,
    /// `host[:port]`: what statistics are kept by.
    pub host: String,
    /// The API's base URL (`http://127.0.0.1:5001`).
    pub base: String,
    /// A path prefix repositories live under on this endpoint (a mirror's `/PREFIX`).
    pub prefix: Option<String>,
}

impl Endpoint {
    /// A registry itself (`docker.io` is served by `registry-1.docker.io`).
    pub fn registry(registry: &str) -> Self {
        let host = if registry == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            registry
        };
        Endpoint {
            label: format!("registry {registry}"),
            role: Role::Registry,
            host: host.to_owned(),
            base: registry_url(host),
            prefix: None,
        }
    }

    /// A mirror given to drbuild (`--mirror`, drbuild.yaml).
    pub fn mirror(mirror: &Mirror) -> Self {
        let text = mirror.to_string();
        let prefix = text.split_once('/').map(|(_, p)| p.to_owned());
        Endpoint {
            label: format!("mirror {}", mirror.host()),
            role: Role::Mirror,
            host: mirror.host().to_owned(),
            base: mirror.base_url(),
            prefix,
        }
    }

    /// A mirror of the daemon's (`registry-mirrors`, as a URL).
    pub fn daemon_mirror(url: &str) -> Self {
        let base = registry_url(url);
        let host = super::host_port(&base).to_owned();
        Endpoint {
            label: format!("mirror {host}"),
            role: Role::DaemonMirror,
            host,
            base,
            prefix: None,
        }
    }

    /// The path of `image`'s repository on this endpoint.
    pub fn repository(&self, image: &ImageReference) -> String {
        match &self.prefix {
            Some(prefix) => format!("{prefix}/{}", image.repository()),
            None => image.repository().to_owned(),
        }
    }
}

/// What went wrong with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The endpoint answered with an error status.
    Status {
        /// The HTTP status.
        code: u16,
        /// The registry's error code (`MANIFEST_UNKNOWN`, `TOOMANYREQUESTS`…).
        error: Option<String>,
        /// The registry's message.
        message: Option<String>,
        /// The wait the endpoint asked for (`Retry-After`, `RateLimit-Reset`).
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused or reset, EOF, timeout, TLS.
    Transport(String),
    /// The body ended before its length.
    Cut {
        /// Bytes received by this request.
        received: u64,
        /// Bytes it should have carried.
        expected: u64,
    },
    /// The body stopped coming.
    Stalled(Duration),
    /// The bytes do not match their digest.
    Corrupt(String),
    /// An answer drbuild cannot use (an unreadable manifest, no such platform).
    Unusable(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status {
                code,
                error,
                message,
                retry_after,
            } => {
                write!(f, "HTTP {code}")?;
                match (error, message) {
                    (Some(e), Some(m)) if !m.is_empty() => write!(f, " {e} ({m})")?,
                    (Some(e), _) => write!(f, " {e}")?,
                    (None, _) => {}
                }
                if let Some(wait) = retry_after {
                    write!(f, ", retry after {}s", wait.as_secs_f64())?;
                }
                Ok(())
            }
            Failure::Transport(why) => f.write_str(why),
            Failure::Cut { received, expected } => {
                write!(f, "connection cut after {received} of {expected} bytes")
            }
            Failure::Stalled(after) => write!(f, "no data for {}s", after.as_secs()),
            Failure::Corrupt(why) | Failure::Unusable(why) => f.write_str(why),
        }
    }
}

/// One request's failure: which endpoint, what was asked, what it got (and, for a
/// request that went to several sources, what each of the others answered last).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{endpoint}: {failure} on {target}{}", Then(then))]
#[non_exhaustive]
pub struct RequestError {
    /// The endpoint (`mirror 127.0.0.1:5001`).
    pub endpoint: Box<str>,
    /// What was asked (`manifest library/redis:7-alpine`).
    pub target: Box<str>,
    /// What happened.
    pub failure: Failure,
    /// What the request's other sources answered, in the order they were tried (boxed:
    /// most requests have one source's answer, and errors travel in `Result`s).
    pub then: Box<Vec<RequestError>>,
}

/// `; then …` for each other source's answer.
struct Then<'a>(&'a [RequestError]);

impl std::fmt::Display for Then<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in self.0 {
            write!(f, "; then {e}")?;
        }
        Ok(())
    }
}

impl RequestError {
    /// `endpoint` answered `failure` when asked for `target`.
    pub fn new(endpoint: impl Into<String>, target: impl Into<String>, failure: Failure) -> Self {
        RequestError {
            endpoint: endpoint.into().into_boxed_str(),
            target: target.into().into_boxed_str(),
            failure,
            then: Box::default(),
        }
    }

    /// Retry, retry later, or give up: from the status and the registry's code, not
    /// from prose. For a request that went to several sources, the answer that ended
    /// it decides: a final "not found" is permanent; a mirror's "not here" followed by
    /// a registry's fault is that fault's class.
    pub fn class(&self) -> ErrorClass {
        let own = self.own_class();
        match self.then.last().map(RequestError::class) {
            Some(ErrorClass::Permanent) => ErrorClass::Permanent,
            Some(last) if own == ErrorClass::Permanent => last,
            _ => own,
        }
    }

    fn own_class(&self) -> ErrorClass {
        match &self.failure {
            Failure::Status { code, error, .. } => match error.as_deref() {
                Some("TOOMANYREQUESTS") => ErrorClass::RateLimited,
                Some(
                    "MANIFEST_UNKNOWN" | "NAME_UNKNOWN" | "BLOB_UNKNOWN" | "DENIED"
                    | "UNAUTHORIZED" | "NAME_INVALID" | "MANIFEST_INVALID",
                ) if *code != 429 && *code < 500 => ErrorClass::Permanent,
                _ => ErrorClass::of_status(*code),
            },
            Failure::Unusable(_) => ErrorClass::Permanent,
            Failure::Transport(_)
            | Failure::Cut { .. }
            | Failure::Stalled(_)
            | Failure::Corrupt(_) => ErrorClass::Transient,
        }
    }

    /// The wait the endpoint asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match &self.failure {
            Failure::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// What to do about it, when we know (credentials for 401/403).
    pub fn hint(&self) -> Option<&'static str> {
        match &self.failure {
            Failure::Status { code: 401 | 403, .. } => Some("the registry wants credentials this machine does not have or may not use: `docker login` to it (drbuild reads docker's config and credential helpers)"),
            _ => None,
        }
    }
}

/// A manifest as fetched.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// Its bytes, exactly as served (their digest is the manifest's).
    pub bytes: Bytes,
    /// The server's `Content-Type`.
    pub media_type: String,
    /// Its digest: the one asked for, else `Docker-Content-Digest`, checked.
    pub digest: String,
}

/// A blob's response, its body still to be read.
#[derive(Debug)]
pub struct BlobResponse {
    /// The server honoured the `Range`: the body continues from the offset asked.
    pub resumed: bool,
    /// Bytes the body carries, when said.
    pub length: Option<u64>,
    /// The response, for its body.
    pub response: Response,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Debug, Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct TokenBody {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// A distribution-API client.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    credentials: Credentials,
    /// Bearer tokens by endpoint base and scope.
    tokens: Arc<Mutex<HashMap<(String, String), String>>>,
    manifest_timeout: Duration,
}

impl RegistryClient {
    /// A client with docker's credentials (or none); each manifest request may take
    /// `manifest_timeout`, blob bodies are watched by their reader.
    pub fn new(credentials: Credentials, manifest_timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("drbuild/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        RegistryClient {
            http,
            credentials,
            tokens: Arc::default(),
            manifest_timeout,
        }
    }

    /// Whether an endpoint answers `GET /v2/` at all (any status: 401 is a registry).
    pub async fn reachable(&self, endpoint: &Endpoint, timeout: Duration) -> bool {
        let url = format!("{}/v2/", endpoint.base);
        matches!(
            tokio::time::timeout(timeout, self.http.get(url).send()).await,
            Ok(Ok(_))
        )
    }

    /// `GET /v2/REPO/manifests/REFERENCE` with every manifest type accepted.
    pub async fn manifest(
        &self,
        endpoint: &Endpoint,
        image: &ImageReference,
        reference: &str,
    ) -> Result<FetchedManifest, RequestError> {
        let repository = endpoint.repository(image);
        let target = format!("manifest {}:{reference}", image.repository());
        let target = target.replace(":sha256:", "@sha256:");
        let url = format!("{}/v2/{repository}/manifests/{reference}", endpoint.base);
        let scope = format!("repository:{repository}:pull");
        let fail = |failure| RequestError::new(endpoint.label.clone(), target.clone(), failure);
        let request = self
            .send(endpoint, &target, &scope, |c| {
                c.get(&url)
                    .header(ACCEPT, accept())
                    .timeout(self.manifest_timeout)
            })
            .await
            .map_err(|mut e| {
                if e.failure == Failure::Transport("timed out".into()) {
                    e.failure = Failure::Stalled(self.manifest_timeout);
                }
                e
            })?;
        let headers = request.headers().clone();
        let bytes = request
            .bytes()
            .await
            .map_err(|e| fail(Failure::Transport(transport(&e))))?;
        let computed = crate::cache::digest_of(&bytes);
        let wanted = if reference.starts_with("sha256:") {
            Some(reference.to_owned())
        } else {
            header(&headers, "docker-content-digest")
        };
        if let Some(wanted) = wanted.filter(|w| w.starts_with("sha256:")) {
            if wanted != computed {
                return Err(fail(Failure::Corrupt(format!(
                    "manifest bytes hash to {computed}, not {wanted}"
                ))));
            }
        }
        Ok(FetchedManifest {
            media_type: header(&headers, CONTENT_TYPE.as_str()).unwrap_or_default(),
            bytes,
            digest: computed,
        })
    }

    /// `GET /v2/REPO/blobs/DIGEST`, from `offset` on (`Range`) when it is not 0.
    pub async fn blob(
        &self,
        endpoint: &Endpoint,
        image: &ImageReference,
        digest: &str,
        offset: u64,
    ) -> Result<BlobResponse, RequestError> {
        let repository = endpoint.repository(image);
        let target = blob_target(image, digest);
        let url = format!("{}/v2/{repository}/blobs/{digest}", endpoint.base);
        let scope = format!("repository:{repository}:pull");
        let response = self
            .send(endpoint, &target, &scope, |c| {
                let r = c.get(&url);
                if offset > 0 {
                    r.header(RANGE, format!("bytes={offset}-"))
                } else {
                    r
                }
            })
            .await?;
        let resumed = response.status() == StatusCode::PARTIAL_CONTENT;
        Ok(BlobResponse {
            resumed,
            length: response.content_length(),
            response,
        })
    }

    /// `GET /v2/REPO/blobs/DIGEST` for the bytes `range` (a part of a big blob). The
    /// answer's `resumed` is `false` when the endpoint sent the whole blob instead (it
    /// ignores `Range`); a `206` for other bytes than asked is unusable.
    pub async fn blob_range(
        &self,
        endpoint: &Endpoint,
        image: &ImageReference,
        digest: &str,
        range: std::ops::Range<u64>,
    ) -> Result<BlobResponse, RequestError> {
        let repository = endpoint.repository(image);
        let target = blob_target(image, digest);
        let url = format!("{}/v2/{repository}/blobs/{digest}", endpoint.base);
        let scope = format!("repository:{repository}:pull");
        let value = format!("bytes={}-{}", range.start, range.end.saturating_sub(1));
        let response = self
            .send(endpoint, &target, &scope, |c| {
                c.get(&url).header(RANGE, &value)
            })
            .await?;
        let ranged = response.status() == StatusCode::PARTIAL_CONTENT;
        if ranged {
            let served = header(response.headers(), "content-range");
            let start = served
                .as_deref()
                .and_then(|v| v.trim().strip_prefix("bytes "))
                .and_then(|v| v.split_once('-'))
                .and_then(|(a, _)| a.trim().parse::<u64>().ok());
            if start != Some(range.start) {
                return Err(RequestError::new(
                    endpoint.label.clone(),
                    target,
                    Failure::Unusable(format!(
                        "asked for {value}, answered Content-Range {}",
                        served.as_deref().unwrap_or("(none)")
                    )),
                ));
            }
        }
        Ok(BlobResponse {
            resumed: ranged,
            length: response.content_length(),
            response,
        })
    }

    /// Sends a request, answering an auth challenge once; an error status is a
    /// [`RequestError`] with what the endpoint said.
    pub(super) async fn send(
        &self,
        endpoint: &Endpoint,
        target: &str,
        scope: &str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, RequestError> {
        let fail = |failure| RequestError::new(endpoint.label.clone(), target.to_owned(), failure);
        let key = (endpoint.base.clone(), scope.to_owned());
        let mut authorization = crate::support::lock(&self.tokens)
            .get(&key)
            .map(|t| format!("Bearer {t}"));
        for round in 0..2 {
            let mut request = build(&self.http);
            if let Some(value) = &authorization {
                request = request.header(AUTHORIZATION, value);
            }
            let response = request
                .send()
                .await
                .map_err(|e| fail(Failure::Transport(transport(&e))))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status == StatusCode::UNAUTHORIZED && round == 0 {
                let challenge = header(response.headers(), "www-authenticate");
                if let Some(value) = self
                    .authorize(endpoint, challenge.as_deref(), scope, target)
                    .await?
                {
                    if value.starts_with("Bearer ") {
                        let token = value.trim_start_matches("Bearer ").to_owned();
                        crate::support::lock(&self.tokens).insert(key.clone(), token);
                    }
                    authorization = Some(value);
                    continue;
                }
            }
            return Err(fail(status_failure(response).await));
        }
        Err(fail(Failure::Unusable("authorization failed".into())))
    }

    /// The `Authorization` value a challenge asks for, when we can give one.
    async fn authorize(
        &self,
        endpoint: &Endpoint,
        challenge: Option<&str>,
        scope: &str,
        target: &str,
    ) -> Result<Option<String>, RequestError> {
        let Some(challenge) = challenge else {
            return Ok(None);
        };
        let credential = self.credentials.get(&endpoint.host).await;
        let (scheme, params) = parse_challenge(challenge);
        if scheme.eq_ignore_ascii_case("basic") {
            return Ok(match credential {
                Some(Credential::Basic { username, password }) => Some(format!(
                    "Basic {}",
                    base64_encode(format!("{username}:{password}").as_bytes())
                )),
                _ => None,
            });
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Ok(None);
        }
        let Some(realm) = params.get("realm") else {
            return Ok(None);
        };
        let service = params.get("service").cloned().unwrap_or_default();
        let scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| scope.to_owned());
        let token_target = format!("token for {target}");
        let fail =
            |failure| RequestError::new(endpoint.label.clone(), token_target.clone(), failure);
        let request = match &credential {
            Some(Credential::IdentityToken(refresh)) => self.http.post(realm).form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("service", service.as_str()),
                ("scope", scope.as_str()),
                ("client_id", "drbuild"),
            ]),
            Some(Credential::Basic { username, password }) => self
                .http
                .get(realm)
                .query(&[("service", &service), ("scope", &scope)])
                .basic_auth(username, Some(password)),
            None => self
                .http
                .get(realm)
                .query(&[("service", &service), ("scope", &scope)]),
        };
        let response = request
            .timeout(self.manifest_timeout)
            .send()
            .await
            .map_err(|e| fail(Failure::Transport(transport(&e))))?;
        if !response.status().is_success() {
            return Err(fail(status_failure(response).await));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| fail(Failure::Transport(transport(&e))))?;
        let body: TokenBody = serde_json::from_slice(&body)
            .map_err(|e| fail(Failure::Unusable(format!("unreadable token: {e}"))))?;
        Ok(body
            .token
            .or(body.access_token)
            .map(|t| format!("Bearer {t}")))
    }
}

/// How messages name a blob: `blob sha256:0123456789ab… of library/redis`.
pub(crate) fn blob_target(image: &ImageReference, digest: &str) -> String {
    let short = digest.get(..19).unwrap_or(digest);
    format!("blob {short}… of {}", image.repository())
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
}

/// What an error status says: the registry's error code and message, and the wait it
/// asks for.
async fn status_failure(response: Response) -> Failure {
    let code = response.status().as_u16();
    let headers = response.headers().clone();
    let retry_after = header(&headers, RETRY_AFTER.as_str())
        .or_else(|| header(&headers, "ratelimit-reset"))
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64);
    let body = response.bytes().await.unwrap_or_default();
    let first = serde_json::from_slice::<ErrorBody>(&body)
        .ok()
        .and_then(|b| b.errors.into_iter().next());
    Failure::Status {
        code,
        error: first
            .as_ref()
            .map(|e| e.code.clone())
            .filter(|c| !c.is_empty()),
        message: first.map(|e| e.message).filter(|m| !m.is_empty()),
        retry_after,
    }
}

/// A transport error as a short fragment: its innermost cause (`connection refused`),
/// and whether it was a timeout.
fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    let text = source.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut lower = text.to_owned();
    if let Some(first) = lower.get_mut(..1) {
        first.make_ascii_lowercase();
    }
    if lower.contains("connection closed before message completed") || lower == "unexpected eof" {
        return "EOF (connection closed without an answer)".into();
    }
    lower
}

/// `Bearer realm="…",service="…"` → (`Bearer`, {realm, service}).
fn parse_challenge(value: &str) -> (String, HashMap<String, String>) {
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (val, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(key, val.to_owned());
        rest = next.trim_start_matches(',').trim();
    }
    (scheme.to_owned(), params)
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let (scheme, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/redis:pull""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/redis:pull");
        let (scheme, p) = parse_challenge(r#"Basic realm="drbuild-testbed""#);
        assert_eq!(
            (scheme.as_str(), p["realm"].as_str()),
            ("Basic", "drbuild-testbed")
        );
        assert_eq!(base64_encode(b"alice:s3cr3t"), "YWxpY2U6czNjcjN0");
        assert_eq!(base64_encode(b"ab"), "YWI=");
    }

    #[test]
    fn messages_and_classes() {
        let e = |failure| {
            RequestError::new(
                "mirror 127.0.0.1:5001",
                "manifest library/redis:7-alpine",
                failure,
            )
        };
        let status = |code, error: Option<&str>| Failure::Status {
            code,
            error: error.map(str::to_owned),
            message: None,
            retry_after: None,
        };
        let s500 = e(status(500, None));
        assert_eq!(
            s500.to_string(),
            "mirror 127.0.0.1:5001: HTTP 500 on manifest library/redis:7-alpine"
        );
        assert_eq!(s500.class(), ErrorClass::Transient);
        let missing = e(Failure::Status {
            code: 404,
            error: Some("MANIFEST_UNKNOWN".into()),
            message: Some("manifest unknown".into()),
            retry_after: None,
        });
        assert_eq!(
            missing.to_string(),
            "mirror 127.0.0.1:5001: HTTP 404 MANIFEST_UNKNOWN (manifest unknown) on manifest library/redis:7-alpine"
        );
        assert_eq!(missing.class(), ErrorClass::Permanent);
        let limited = e(Failure::Status {
            code: 429,
            error: Some("TOOMANYREQUESTS".into()),
            message: None,
            retry_after: Some(Duration::from_secs(2)),
        });
        assert_eq!(limited.class(), ErrorClass::RateLimited);
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(2)));
        assert!(limited
            .to_string()
            .contains("HTTP 429 TOOMANYREQUESTS, retry after 2s"));
        assert_eq!(
            e(status(401, Some("UNAUTHORIZED"))).class(),
            ErrorClass::Permanent
        );
        assert!(e(status(403, None))
            .hint()
            .unwrap()
            .contains("docker login"));
        assert_eq!(
            e(Failure::Cut {
                received: 8,
                expected: 64
            })
            .class(),
            ErrorClass::Transient
        );
        assert_eq!(
            e(Failure::Unusable("no linux/ppc64le".into())).class(),
            ErrorClass::Permanent
        );
    }

    #[test]
    fn endpoints() {
        let hub = Endpoint::registry("docker.io");
        assert_eq!(hub.base, "https://registry-1.docker.io");
        assert_eq!(hub.label, "registry docker.io");
        let m: Mirror = "harbor.example.com/dockerhub".parse().unwrap();
        let m = Endpoint::mirror(&m);
        let redis = ImageReference::parse("redis:7-alpine").unwrap();
        assert_eq!(m.repository(&redis), "dockerhub/library/redis");
        assert_eq!(m.label, "mirror harbor.example.com");
        let d = Endpoint::daemon_mirror("http://127.0.0.1:15001/");
        assert_eq!(
            (d.base.as_str(), d.host.as_str()),
            ("http://127.0.0.1:15001", "127.0.0.1:15001")
        );
    }
}
