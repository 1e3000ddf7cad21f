//! A fault-injecting HTTP/1.1 proxy to put in front of a registry.
//!
//! Per request, with given probabilities and a seed, it closes the connection
//! (EOF), answers 500/502/503, answers 429 with `Retry-After`, stalls, adds
//! latency, or truncates the response body; rules filter by path kind (base,
//! manifest, blob, token) and path text. It can also be a long thin link (each
//! connection's body capped at a rate, latency on every request) and a mirror that
//! ignores `Range`; its stats count the requests forwarded at once. Counters are readable at
//! `GET /__faultproxy/stats`; `POST /__faultproxy/config` (a JSON [`Config`]) sets the
//! faults and `POST /__faultproxy/reset` clears them and the counters.
//!
//! Each request is forwarded on a new upstream connection and answered with
//! `Connection: close`, which keeps the proxy simple and exact about what it cuts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const CONTROL_PREFIX: &str = "/__faultproxy/";
const MAX_HEAD: usize = 64 * 1024;

/// What a request asks the registry for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathKind {
    /// `/v2/`, the API base (version check).
    Base,
    /// `/v2/<name>/manifests/<reference>`.
    Manifest,
    /// `/v2/<name>/blobs/<digest>`.
    Blob,
    /// A token endpoint.
    Token,
    /// Anything else.
    Other,
}

impl PathKind {
    /// Classifies a request path.
    pub fn of(path: &str) -> PathKind {
        let path = path.split('?').next().unwrap_or(path);
        if path == "/v2/" || path == "/v2" {
            PathKind::Base
        } else if path.contains("/manifests/") {
            PathKind::Manifest
        } else if path.contains("/blobs/") {
            PathKind::Blob
        } else if path.contains("token") {
            PathKind::Token
        } else {
            PathKind::Other
        }
    }
}

/// One kind of fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum Fault {
    /// Close the connection without answering.
    Eof,
    /// Answer with this HTTP status (500, 502, 503…) and a registry error body.
    Status {
        /// The status code.
        code: u16,
    },
    /// Answer 429 `toomanyrequests` with `Retry-After`.
    RateLimit {
        /// Seconds in `Retry-After`.
        retry_after_secs: u64,
    },
    /// Wait this long before forwarding.
    Stall {
        /// Seconds.
        secs: u64,
    },
    /// Wait this long before forwarding (a slow link rather than a stall).
    Latency {
        /// Milliseconds.
        ms: u64,
    },
    /// Forward, but cut the response body half-way and close.
    Truncate,
    /// Forward, but cut the response body after this many bytes and close (a ranged
    /// response too: every request dies at the same distance from its start).
    CutAfter {
        /// Bytes of the body sent before the cut.
        bytes: u64,
    },
    /// Forward the whole body with some bytes changed (right length, wrong content).
    Corrupt,
    /// Answer `503` because [`Config::max_active`] requests are under way (not chosen
    /// by rules: the limit injects it).
    Limit,
}

impl Fault {
    fn name(&self) -> String {
        match self {
            Fault::Eof => "eof".into(),
            Fault::Status { code } => code.to_string(),
            Fault::RateLimit { .. } => "429".into(),
            Fault::Stall { .. } => "stall".into(),
            Fault::Latency { .. } => "latency".into(),
            Fault::Truncate => "truncate".into(),
            Fault::CutAfter { .. } => "cut".into(),
            Fault::Corrupt => "corrupt".into(),
            Fault::Limit => "limit".into(),
        }
    }
}

/// When to inject which faults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rule {
    /// Path kinds it applies to; empty means all.
    pub kinds: Vec<PathKind>,
    /// Only paths containing this text.
    pub path_contains: Option<String>,
    /// Chance that it fires on a matching request (0.0–1.0).
    pub probability: f64,
    /// Faults to choose from, uniformly, when it fires.
    pub faults: Vec<Fault>,
    /// Fire at most this many times.
    pub times: Option<u64>,
}

/// The proxy's fault configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Seed of the random choices.
    pub seed: u64,
    /// Rules, first firing one wins.
    pub rules: Vec<Rule>,
    /// Latency added to every request, in milliseconds.
    pub latency_ms: u64,
    /// Refuse every connection with EOF (a mirror that is down).
    pub down: bool,
    /// Cap each forwarded response body at this many bytes per second (0: no cap): a
    /// long thin link, where every TCP connection is slow on its own.
    pub rate_per_connection: u64,
    /// Drop `Range` from forwarded requests (a mirror that ignores it and answers
    /// every ranged request with the whole blob).
    pub ignore_range: bool,
    /// Answer `503` to a request that arrives while this many are under way (0: no
    /// limit): a registry or mirror that limits connections, as nginx's `limit_conn`
    /// does. Refused requests are counted as the fault `limit`.
    pub max_active: u64,
}

impl Config {
    /// Manifest requests fail with this probability, as EOF, 500 or 429 (`Retry-After: 1`)
    /// in turn: the flaky Docker Hub of our users' logs.
    pub fn manifest_faults(seed: u64, probability: f64) -> Config {
        Config {
            seed,
            rules: vec![Rule {
                kinds: vec![PathKind::Manifest],
                probability,
                faults: vec![
                    Fault::Eof,
                    Fault::Status { code: 500 },
                    Fault::RateLimit {
                        retry_after_secs: 1,
                    },
                ],
                ..Rule::default()
            }],
            ..Config::default()
        }
    }
}

impl Config {
    /// A long thin link: each connection capped at `rate` bytes per second, `latency_ms`
    /// added to every request.
    pub fn thin_link(rate: u64, latency_ms: u64) -> Config {
        Config {
            rate_per_connection: rate,
            latency_ms,
            ..Config::default()
        }
    }

    /// Every manifest and blob request fails with this probability, as EOF, 500 or a
    /// body cut half-way in turn: a link that breaks everything now and then.
    pub fn request_faults(seed: u64, probability: f64) -> Config {
        Config {
            seed,
            rules: vec![Rule {
                kinds: vec![PathKind::Manifest, PathKind::Blob],
                probability,
                faults: vec![Fault::Eof, Fault::Status { code: 500 }, Fault::Truncate],
                ..Rule::default()
            }],
            ..Config::default()
        }
    }
}

/// One request, as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When it arrived, in milliseconds since the proxy started.
    pub at_ms: u64,
    /// `GET`, `HEAD`…
    pub method: String,
    /// Its path.
    pub path: String,
    /// The fault injected, if any (`429`, `eof`, `cut`…).
    pub fault: Option<String>,
}

/// What the proxy has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests by path kind.
    pub requests: BTreeMap<String, u64>,
    /// Faults injected, by fault name (`eof`, `500`, `429`, `stall`, …).
    pub faults: BTreeMap<String, u64>,
    /// Requests forwarded to the registry.
    pub forwarded: u64,
    /// Response body bytes sent to clients (forwarded responses).
    #[serde(default)]
    pub bytes: u64,
    /// Requests being forwarded now.
    #[serde(default)]
    pub active: u64,
    /// Most requests forwarded at once (connections to the registry through the proxy).
    #[serde(default)]
    pub peak_active: u64,
    /// Ranged requests forwarded (`Range:` in the request, whether passed on or not).
    #[serde(default)]
    pub ranged: u64,
    /// Requests under way now (from arrival, latency included, until answered), the
    /// count [`Config::max_active`] limits; refused requests are not counted.
    #[serde(default)]
    pub open: u64,
}

impl Stats {
    /// Total of all injected faults.
    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }
}

struct State {
    config: Config,
    rng: StdRng,
    fired: Vec<u64>,
    stats: Stats,
    log: Vec<LogEntry>,
    started: std::time::Instant,
}

/// Requests the log keeps (the oldest are dropped past it).
const LOG_MAX: usize = 20_000;

impl State {
    fn new(config: Config) -> Self {
        State {
            rng: StdRng::seed_from_u64(config.seed),
            fired: vec![0; config.rules.len()],
            config,
            stats: Stats::default(),
            log: Vec::new(),
            started: std::time::Instant::now(),
        }
    }

    fn decide(&mut self, path: &str, kind: PathKind) -> Option<Fault> {
        for (i, rule) in self.config.rules.iter().enumerate() {
            if !rule.kinds.is_empty() && !rule.kinds.contains(&kind) {
                continue;
            }
            if rule
                .path_contains
                .as_deref()
                .is_some_and(|t| !path.contains(t))
            {
                continue;
            }
            if rule.times.is_some_and(|t| self.fired[i] >= t) || rule.faults.is_empty() {
                continue;
            }
            if self.rng.random::<f64>() < rule.probability {
                self.fired[i] += 1;
                let pick = self.rng.random_range(0..rule.faults.len());
                return Some(rule.faults[pick].clone());
            }
        }
        None
    }
}

/// Starts a proxy on `listen` forwarding to `upstream`; both must be loopback.
/// Runs until the process ends.
pub async fn serve(
    listen: SocketAddr,
    upstream: SocketAddr,
    config: Config,
) -> std::io::Result<SocketAddr> {
    for a in [listen, upstream] {
        if !a.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{a}: the fault proxy only talks to loopback addresses"),
            ));
        }
    }
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(Mutex::new(State::new(config)));
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let _ = handle(conn, upstream, state).await;
            });
        }
    });
    Ok(addr)
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

struct Request {
    method: String,
    path: String,
    head_lines: Vec<String>,
    body: Vec<u8>,
}

async fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut first = String::new();
    if reader.read_line(&mut first).await? == 0 {
        return Ok(None);
    }
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("/").to_owned();
    let mut head_lines = Vec::new();
    let mut size = first.len();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await?;
        size += n;
        if n == 0 || size > MAX_HEAD {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        head_lines.push(line);
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).await?;
    Ok(Some(Request {
        method,
        path,
        head_lines,
        body,
    }))
}

async fn respond(
    conn: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body).await?;
    conn.shutdown().await
}

fn reason(code: u16) -> &'static str {
    match code {
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        429 => "Too Many Requests",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Error",
    }
}

async fn handle(
    conn: TcpStream,
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
) -> std::io::Result<()> {
    // A TLS ClientHello on this plain-HTTP port: answer as Go's HTTP server (the
    // registry's) does, so that clients fall back to plain HTTP as they would.
    let mut first = [0u8; 1];
    if conn.peek(&mut first).await? == 1 && first[0] == 0x16 {
        let mut conn = conn;
        conn.write_all(
            b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
        )
        .await?;
        return conn.shutdown().await;
    }
    let mut reader = BufReader::new(conn);
    let Some(request) = read_request(&mut reader).await? else {
        return Ok(());
    };
    let mut conn = reader.into_inner();

    if let Some(control) = request.path.strip_prefix(CONTROL_PREFIX) {
        return control_request(&mut conn, &request.method, control, &request.body, &state).await;
    }

    let kind = PathKind::of(&request.path);
    let mut open = None;
    let (fault, latency) = {
        let mut s = lock(&state);
        *s.stats
            .requests
            .entry(format!("{kind:?}").to_lowercase())
            .or_default() += 1;
        let limited = s.config.max_active > 0 && s.stats.open >= s.config.max_active;
        let fault = if s.config.down {
            Some(Fault::Eof)
        } else if limited {
            Some(Fault::Limit)
        } else {
            s.decide(&request.path, kind)
        };
        if !limited {
            s.stats.open += 1;
            open = Some(Open { state: &state });
        }
        if let Some(f) = &fault {
            *s.stats.faults.entry(f.name()).or_default() += 1;
        }
        if s.log.len() >= LOG_MAX {
            s.log.remove(0);
        }
        let at_ms = u64::try_from(s.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        s.log.push(LogEntry {
            at_ms,
            method: request.method.clone(),
            path: request.path.clone(),
            fault: fault.as_ref().map(Fault::name),
        });
        (fault, s.config.latency_ms)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let mut body_fault = BodyFault::None;
    match fault {
        Some(Fault::Eof) => return Ok(()), // dropping the connection is the EOF
        Some(Fault::Status { code }) => {
            // The bodies a distribution registry sends with these codes.
            let (error, message) = match code {
                401 => ("UNAUTHORIZED", "authentication required".to_owned()),
                403 => (
                    "DENIED",
                    "requested access to the resource is denied".to_owned(),
                ),
                404 => ("MANIFEST_UNKNOWN", "manifest unknown".to_owned()),
                _ => ("UNKNOWN", format!("injected {code}")),
            };
            return registry_error(&mut conn, code, error, &message).await;
        }
        Some(Fault::Limit) => {
            return registry_error(&mut conn, 503, "UNAVAILABLE", "too many connections").await;
        }
        Some(Fault::RateLimit { retry_after_secs }) => {
            let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit"}]}"#;
            return respond(
                &mut conn,
                "429 Too Many Requests",
                &[
                    ("Content-Type", "application/json".into()),
                    ("Retry-After", retry_after_secs.to_string()),
                ],
                body.as_bytes(),
            )
            .await;
        }
        Some(Fault::Stall { secs }) => tokio::time::sleep(Duration::from_secs(secs)).await,
        Some(Fault::Latency { ms }) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Some(Fault::Truncate) => body_fault = BodyFault::Half,
        Some(Fault::CutAfter { bytes }) => body_fault = BodyFault::CutAfter(bytes),
        Some(Fault::Corrupt) => body_fault = BodyFault::Corrupt,
        None => {}
    }
    let forwarded = forward(conn, upstream, request, body_fault, &state).await;
    drop(open);
    forwarded
}

/// Answers `code` with a registry's JSON error body (and, for 401, the challenge a
/// registry sends with it).
async fn registry_error(
    conn: &mut TcpStream,
    code: u16,
    error: &str,
    message: &str,
) -> std::io::Result<()> {
    let body = format!(r#"{{"errors":[{{"code":"{error}","message":"{message}"}}]}}"#);
    let status = format!("{code} {}", reason(code));
    let mut headers = vec![("Content-Type", "application/json".to_owned())];
    if code == 401 {
        headers.push((
            "WWW-Authenticate",
            r#"Basic realm="drbuild-testbed""#.into(),
        ));
    }
    respond(conn, &status, &headers, body.as_bytes()).await
}

/// A request under way (admitted under [`Config::max_active`]), counted while it lives.
struct Open<'a> {
    state: &'a Arc<Mutex<State>>,
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        let mut s = lock(self.state);
        s.stats.open = s.stats.open.saturating_sub(1);
    }
}

/// What happens to a forwarded response's body.
#[derive(Debug, Clone, Copy)]
enum BodyFault {
    None,
    /// Cut half-way.
    Half,
    /// Cut after this many bytes.
    CutAfter(u64),
    /// Every byte of the body's middle 64 bytes flipped.
    Corrupt,
}

async fn forward(
    mut conn: TcpStream,
    upstream: SocketAddr,
    request: Request,
    body_fault: BodyFault,
    state: &Arc<Mutex<State>>,
) -> std::io::Result<()> {
    let mut up = match TcpStream::connect(upstream).await {
        Ok(up) => up,
        Err(_) => {
            return respond(&mut conn, "502 Bad Gateway", &[], b"upstream unreachable").await;
        }
    };
    let (ignore_range, rate) = {
        let s = lock(state);
        (s.config.ignore_range, s.config.rate_per_connection)
    };
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.path);
    let mut ranged = false;
    for line in &request.head_lines {
        let name = line.split(':').next().unwrap_or("").trim();
        if ["connection", "keep-alive", "proxy-connection"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        if name.eq_ignore_ascii_case("range") {
            ranged = true;
            if ignore_range {
                continue;
            }
        }
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes()).await?;
    up.write_all(&request.body).await?;
    let _active = Active::enter(state, ranged);

    let mut up = BufReader::new(up);
    let mut response_head = String::new();
    let mut content_length: Option<u64> = None;
    loop {
        let mut line = String::new();
        if up.read_line(&mut line).await? == 0 {
            break;
        }
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            break;
        }
        let name = trimmed.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        if name.eq_ignore_ascii_case("content-length") {
            content_length = trimmed
                .split_once(':')
                .and_then(|(_, v)| v.trim().parse().ok());
        }
        response_head.push_str(trimmed);
        response_head.push_str("\r\n");
    }
    response_head.push_str("Connection: close\r\n\r\n");
    conn.write_all(response_head.as_bytes()).await?;
    if request.method.eq_ignore_ascii_case("HEAD") {
        return conn.shutdown().await;
    }
    let length = content_length.unwrap_or(u64::MAX);
    let cut = match body_fault {
        BodyFault::Half => Some(content_length.unwrap_or(0) / 2),
        BodyFault::CutAfter(n) => Some(n).filter(|n| *n < length),
        _ => None,
    };
    // The corrupted bytes: 64 in the middle of the body.
    let corrupt = matches!(body_fault, BodyFault::Corrupt).then(|| {
        let mid = content_length.unwrap_or(0) / 2;
        mid.saturating_sub(32)..mid + 32
    });
    let mut sent = 0u64;
    // Under a rate cap, small reads keep the pace even.
    let mut buf = vec![0u8; if rate > 0 { 16 * 1024 } else { 64 * 1024 }];
    let started = tokio::time::Instant::now();
    loop {
        let want = match cut {
            Some(limit) if sent >= limit => break,
            Some(limit) => buf.len().min((limit - sent) as usize),
            None => buf.len(),
        };
        let n = up.read(&mut buf[..want]).await?;
        if n == 0 {
            break;
        }
        if let Some(range) = &corrupt {
            for (i, b) in buf[..n].iter_mut().enumerate() {
                if range.contains(&(sent + i as u64)) {
                    *b ^= 0xff;
                }
            }
        }
        conn.write_all(&buf[..n]).await?;
        sent += n as u64;
        lock(state).stats.bytes += n as u64;
        if rate > 0 {
            // The time these bytes take at the capped rate.
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            tokio::time::sleep_until(started + due).await;
        }
    }
    if cut.is_some() {
        conn.flush().await?;
        // Drop without a clean shutdown: the client sees the body end early.
        return Ok(());
    }
    conn.shutdown().await
}

/// A request being forwarded, counted in the stats while it lives.
struct Active<'a> {
    state: &'a Arc<Mutex<State>>,
}

impl<'a> Active<'a> {
    fn enter(state: &'a Arc<Mutex<State>>, ranged: bool) -> Self {
        let mut s = lock(state);
        s.stats.forwarded += 1;
        s.stats.ranged += u64::from(ranged);
        s.stats.active += 1;
        s.stats.peak_active = s.stats.peak_active.max(s.stats.active);
        drop(s);
        Active { state }
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let mut s = lock(self.state);
        s.stats.active = s.stats.active.saturating_sub(1);
    }
}

async fn control_request(
    conn: &mut TcpStream,
    method: &str,
    what: &str,
    body: &[u8],
    state: &Arc<Mutex<State>>,
) -> std::io::Result<()> {
    let json = [("Content-Type", "application/json".to_owned())];
    match (method, what) {
        ("GET", "stats") => {
            let stats = {
                let s = lock(state);
                serde_json::to_vec(&s.stats).unwrap_or_default()
            };
            respond(conn, "200 OK", &json, &stats).await
        }
        ("GET", "log") => {
            let log = {
                let s = lock(state);
                serde_json::to_vec(&s.log).unwrap_or_default()
            };
            respond(conn, "200 OK", &json, &log).await
        }
        ("GET", "config") => {
            let config = {
                let s = lock(state);
                serde_json::to_vec(&s.config).unwrap_or_default()
            };
            respond(conn, "200 OK", &json, &config).await
        }
        ("POST", "config") => match serde_json::from_slice::<Config>(body) {
            Ok(config) => {
                {
                    let mut s = lock(state);
                    let stats = std::mem::take(&mut s.stats);
                    *s = State::new(config);
                    s.stats = stats;
                }
                respond(conn, "200 OK", &json, b"{}").await
            }
            Err(e) => respond(conn, "400 Bad Request", &[], e.to_string().as_bytes()).await,
        },
        ("POST", "reset") => {
            *lock(state) = State::new(Config::default());
            respond(conn, "200 OK", &json, b"{}").await
        }
        _ => respond(conn, "404 Not Found", &[], b"unknown control request").await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(PathKind::of("/v2/"), PathKind::Base);
        assert_eq!(
            PathKind::of("/v2/library/redis/manifests/7-alpine"),
            PathKind::Manifest
        );
        assert_eq!(
            PathKind::of("/v2/library/redis/blobs/sha256:ab"),
            PathKind::Blob
        );
        assert_eq!(PathKind::of("/token?scope=x"), PathKind::Token);
    }

    #[test]
    fn seeded_decisions_repeat() {
        let config = Config::manifest_faults(7, 0.3);
        let run = || {
            let mut s = State::new(config.clone());
            (0..200)
                .map(|_| {
                    s.decide("/v2/x/manifests/1", PathKind::Manifest)
                        .map(|f| f.name())
                })
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let fired = a.iter().filter(|f| f.is_some()).count();
        assert!((40..=80).contains(&fired), "about 30% of 200: {fired}");
        let mut s = State::new(config.clone());
        assert!((0..100).all(|_| s.decide("/v2/x/blobs/y", PathKind::Blob).is_none()));
    }

    #[test]
    fn times_limits_firing() {
        let mut s = State::new(Config {
            rules: vec![Rule {
                probability: 1.0,
                faults: vec![Fault::Eof],
                times: Some(2),
                ..Rule::default()
            }],
            ..Config::default()
        });
        let fired = (0..5)
            .filter(|_| s.decide("/v2/", PathKind::Base).is_some())
            .count();
        assert_eq!(fired, 2);
    }
}
