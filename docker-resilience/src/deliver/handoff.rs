//! The handoff: a registry on 127.0.0.1 that serves fetched images from the blob cache
//! so that a local daemon takes them with its own pull, which both image stores do
//! about twice as fast as a `docker load` of the same blobs (measured on dockerd 20.10
//! and 28.5 with the containerd store). Each image is published under a name of this
//! registry's own (`127.0.0.1:PORT/drbuild-handoff/library/redis:7-alpine-…`); the
//! daemon pulls that, then the caller tags it with its real name and drops the
//! handoff's. A run killed in between leaves such names in the daemon: a later run
//! finds them by their namespace ([`stale_names`]) and removes those whose handoff no
//! longer listens.
//!
//! A blob the fetch has not finished yet is served when it is ready, so the daemon
//! unpacks the first layers while the last still arrive; a `Range` is honoured (a
//! daemon resuming a cut pull). Only what was published is
//! served, only on the loopback interface, only while the handoff lives.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cache::BlobCache;
use crate::fetch::FetchedImage;
use crate::support::lock;
use crate::vocab::ImageReference;

/// How long a request for a blob still downloading waits with no news before it
/// gives up (the daemon retries it).
const BLOB_WAIT: Duration = Duration::from_secs(60);

/// The first path component of every name the handoff publishes: what tells its names
/// from those of a registry the user runs on 127.0.0.1.
pub const NAMESPACE: &str = "drbuild-handoff";

type Body = BoxBody<Bytes, std::io::Error>;

#[derive(Debug, Default)]
struct Published {
    /// `repository:tag` → the tagged manifest's digest.
    tags: HashMap<String, String>,
    /// Manifest digest → its media type.
    manifests: HashMap<String, String>,
    /// Blobs that may be served (published images' config and layers).
    blobs: HashSet<String>,
    /// Blobs whose download failed: requests for them fail at once.
    failed: HashSet<String>,
    /// Names the daemon may hold that nobody removed yet.
    unsettled: HashSet<String>,
}

#[derive(Debug)]
struct Shared {
    cache: BlobCache,
    published: Mutex<Published>,
    /// Bumped whenever a blob becomes ready or fails: waiting requests look again.
    news: watch::Sender<u64>,
}

/// A loopback registry serving published images from the cache; stops when dropped.
#[derive(Debug)]
pub struct Handoff {
    address: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    /// Whether the daemon records a pulled name by digest too (a graph-driver store).
    digest_names: bool,
}

impl Handoff {
    /// Starts serving `cache` on 127.0.0.1 (a port of the kernel's choosing).
    pub async fn start(cache: BlobCache) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            cache,
            published: Mutex::new(Published::default()),
            news: watch::channel(0).0,
        });
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, Arc::clone(&shared), stop.clone()));
        tracing::debug!("handoff registry on {address}");
        Ok(Self {
            address,
            shared,
            stop,
            digest_names: true,
        })
    }

    /// For a daemon that records a pulled image by its tag only (the containerd image
    /// store): no by-digest name is kept to remove.
    pub fn without_digest_names(mut self) -> Self {
        self.digest_names = false;
        self
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Publishes a resolved `image` (its manifests in the cache; its config and layers
    /// served as they become ready) and returns the name the daemon pulls it by.
    pub fn publish(&self, image: &FetchedImage) -> ImageReference {
        let reference = &image.wanted.reference;
        // Unique per image and platform: two platforms of one tag never share a name.
        let tag = format!(
            "{}-{}",
            reference.tag().unwrap_or("digest"),
            image
                .manifest
                .digest
                .trim_start_matches("sha256:")
                .get(..12)
                .unwrap_or("0")
        );
        let repository = format!("{NAMESPACE}/{}", reference.repository());
        let name = format!("{}/{repository}:{tag}", self.address);
        let mut published = lock(&self.shared.published);
        published
            .tags
            .insert(format!("{repository}:{tag}"), image.top.digest.clone());
        for m in [&image.top, &image.manifest] {
            published
                .manifests
                .insert(m.digest.clone(), m.media_type.clone());
        }
        published.blobs.insert(image.config.digest.clone());
        for layer in &image.layers {
            published.blobs.insert(layer.digest.clone());
            published.failed.remove(&layer.digest);
        }
        published.failed.remove(&image.config.digest);
        let named: ImageReference = name.parse().unwrap_or_else(|_| reference.clone());
        published.unsettled.extend(self.names_of(image, &named));
        drop(published);
        named
    }

    /// The names of `published` the daemon records: by tag, and by digest unless
    /// [`Handoff::without_digest_names`].
    pub fn names_of(&self, image: &FetchedImage, published: &ImageReference) -> Vec<String> {
        let by_digest = format!(
            "{}/{NAMESPACE}/{}@{}",
            self.address,
            image.wanted.reference.repository(),
            image.top.digest
        );
        std::iter::once(published.to_string())
            .chain(self.digest_names.then_some(by_digest))
            .collect()
    }

    /// Says `names` were removed from the daemon.
    pub fn settled(&self, names: &[String]) {
        let mut published = lock(&self.shared.published);
        for name in names {
            published.unsettled.remove(name);
        }
    }

    /// Names published and not yet settled (an interrupted run leaves some): for the
    /// caller to remove from the daemon.
    pub fn unsettled(&self) -> Vec<String> {
        lock(&self.shared.published)
            .unsettled
            .iter()
            .cloned()
            .collect()
    }

    /// Says a blob is in the cache.
    pub fn ready(&self, _digest: &str) {
        self.shared.news.send_modify(|n| *n += 1);
    }

    /// Says the blobs of `image` will not come (its download failed).
    pub fn failed(&self, image: &FetchedImage) {
        let mut published = lock(&self.shared.published);
        for blob in std::iter::once(&image.config).chain(&image.layers) {
            if !self.shared.cache.contains(&blob.digest) {
                published.failed.insert(blob.digest.clone());
            }
        }
        drop(published);
        self.shared.news.send_modify(|n| *n += 1);
    }
}

/// The names among `names` (a daemon's tags and digests) that a handoff gave, by the
/// port it listened on.
pub fn stale_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<(u16, String)> {
    names
        .into_iter()
        .filter_map(|name| {
            let rest = name.strip_prefix("127.0.0.1:")?;
            let (port, path) = rest.split_once('/')?;
            let port = port.parse().ok()?;
            let path = path.strip_prefix(NAMESPACE)?.strip_prefix('/')?;
            let named = path.starts_with(|c: char| c.is_ascii_alphanumeric());
            (named && !name.ends_with(":<none>")).then(|| (port, name.to_owned()))
        })
        .collect()
}

/// Whether a server listens on 127.0.0.1:`port` (a live handoff of another run).
pub async fn listening(port: u16) -> bool {
    let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
    matches!(
        tokio::time::timeout(Duration::from_secs(1), connect).await,
        Ok(Ok(_)) | Err(_)
    )
}

impl Drop for Handoff {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!("handoff registry: accept failed: {e}");
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let shared = Arc::clone(&shared);
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(answer(&shared, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// The distribution API, the part a pull uses: `/v2/`, manifests by tag or digest,
/// blobs by digest.
async fn answer(shared: &Shared, request: Request<hyper::body::Incoming>) -> Response<Body> {
    let head = request.method() == Method::HEAD;
    if request.method() != Method::GET && !head {
        return status(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", "read-only");
    }
    let path = request.uri().path();
    if path == "/v2/" || path == "/v2" {
        return json(StatusCode::OK, "{}");
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return status(StatusCode::NOT_FOUND, "NOT_FOUND", "not a registry path");
    };
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return manifest(shared, name, reference, head);
    }
    if let Some((_, digest)) = rest.rsplit_once("/blobs/") {
        let range = request
            .headers()
            .get(hyper::header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_range);
        return blob(shared, digest, head, range).await;
    }
    status(StatusCode::NOT_FOUND, "NOT_FOUND", "not a registry path")
}

fn manifest(shared: &Shared, name: &str, reference: &str, head: bool) -> Response<Body> {
    let published = lock(&shared.published);
    let digest = if reference.starts_with("sha256:") {
        reference.to_owned()
    } else {
        match published.tags.get(&format!("{name}:{reference}")) {
            Some(d) => d.clone(),
            None => {
                return status(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    "manifest unknown",
                )
            }
        }
    };
    let Some(media_type) = published.manifests.get(&digest).cloned() else {
        return status(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            "manifest unknown",
        );
    };
    drop(published);
    let Ok(Some(bytes)) = shared.cache.read(&digest) else {
        return status(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            "manifest unknown",
        );
    };
    let length = bytes.len();
    let body = if head { empty() } else { full(bytes) };
    Response::builder()
        .header("Content-Type", media_type)
        .header("Content-Length", length)
        .header("Docker-Content-Digest", digest)
        .header("Docker-Distribution-API-Version", "registry/2.0")
        .body(body)
        .unwrap_or_else(|_| internal())
}

/// `bytes=START-` or `bytes=START-END` (one range; anything else is served whole).
fn parse_range(value: &str) -> Option<(u64, Option<u64>)> {
    let (start, end) = value.trim().strip_prefix("bytes=")?.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => None,
        end => Some(end.parse().ok()?),
    };
    Some((start, end))
}

async fn blob(
    shared: &Shared,
    digest: &str,
    head: bool,
    range: Option<(u64, Option<u64>)>,
) -> Response<Body> {
    let mut news = shared.news.subscribe();
    loop {
        {
            let published = lock(&shared.published);
            if !published.blobs.contains(digest) && !published.manifests.contains_key(digest) {
                return status(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "blob unknown");
            }
            if published.failed.contains(digest) {
                return status(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "the fetch failed");
            }
        }
        if shared.cache.contains(digest) {
            break;
        }
        match tokio::time::timeout(BLOB_WAIT, news.changed()).await {
            Ok(Ok(())) => {}
            _ => {
                return status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "the blob is still downloading",
                )
            }
        }
    }
    let Ok(path) = shared.cache.path(digest) else {
        return internal();
    };
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => return status(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "blob unknown"),
    };
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    // A range within the blob is served as asked (a resumed pull, a part).
    let range = range
        .map(|(start, end)| (start, end.map_or(size, |e| e.saturating_add(1).min(size))))
        .filter(|(start, end)| start < end);
    let (start, length) = range.map_or((0, size), |(start, end)| (start, end - start));
    if start > 0 {
        use tokio::io::AsyncSeekExt;
        if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
            return internal();
        }
    }
    let body = if head {
        empty()
    } else {
        use tokio::io::AsyncReadExt;
        let frames = tokio_util::io::ReaderStream::with_capacity(file.take(length), 256 * 1024)
            .map_ok(Frame::data);
        BodyExt::boxed(StreamBody::new(frames))
    };
    let mut response = Response::builder()
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", length)
        .header("Docker-Content-Digest", digest)
        .header("Accept-Ranges", "bytes");
    if range.is_some() {
        response = response.status(StatusCode::PARTIAL_CONTENT).header(
            "Content-Range",
            format!("bytes {start}-{}/{size}", start + length - 1),
        );
    }
    response.body(body).unwrap_or_else(|_| internal())
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed()
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn json(code: StatusCode, text: &str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("Content-Type", "application/json")
        .header("Docker-Distribution-API-Version", "registry/2.0")
        .body(full(text.as_bytes().to_vec()))
        .unwrap_or_else(|_| internal())
}

fn status(code: StatusCode, error: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"errors": [{"code": error, "message": message}]}).to_string();
    json(code, &body)
}

fn internal() -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::manifest::Descriptor;
    use crate::vocab::{Platform, Wanted};
    use sha2::{Digest, Sha256};

    fn digest(bytes: &[u8]) -> String {
        format!("sha256:{:x}", Sha256::digest(bytes))
    }

    fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: digest(bytes),
            size: bytes.len() as u64,
            platform: None,
        }
    }

    fn store(cache: &BlobCache, bytes: &[u8]) {
        cache.put(&digest(bytes), bytes).expect("put");
    }

    #[tokio::test]
    async fn serves_published_images_and_waits_for_blobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache::open(dir.path()).expect("cache");
        let layer = b"layer bytes".to_vec();
        let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&layer), "size": layer.len()}],
        }))
        .expect("json");
        store(&cache, &manifest);
        store(&cache, &config);
        let top = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
        let image = FetchedImage {
            wanted: Wanted::any_platform("redis:7-alpine".parse().expect("reference")),
            top: top.clone(),
            manifest: top,
            platform: Platform::host(),
            config: descriptor("application/vnd.oci.image.config.v1+json", &config),
            layers: vec![descriptor(
                "application/vnd.oci.image.layer.v1.tar+gzip",
                &layer,
            )],
            source: "127.0.0.1:5000".into(),
            bytes: 0,
            resumes: 0,
        };
        let handoff = Handoff::start(cache.clone()).await.expect("start");
        let name = handoff.publish(&image);
        let base = format!("http://{}/v2/", handoff.address());
        assert!(
            name.to_string().starts_with(&handoff.address().to_string()),
            "{name}"
        );
        let client = reqwest::Client::new();
        let tag = name.tag().expect("tag").to_owned();
        let got = client
            .get(format!(
                "{base}drbuild-handoff/library/redis/manifests/{tag}"
            ))
            .send()
            .await
            .expect("manifest");
        assert_eq!(got.status(), 200);
        assert_eq!(
            got.headers()["content-type"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(got.bytes().await.expect("body").to_vec(), manifest);
        let unknown = client
            .get(format!(
                "{base}drbuild-handoff/library/redis/manifests/other"
            ))
            .send()
            .await
            .expect("unknown");
        assert_eq!(unknown.status(), 404);
        // The layer is not in the cache yet: the request waits until it is.
        let layer_url = format!(
            "{base}drbuild-handoff/library/redis/blobs/{}",
            digest(&layer)
        );
        let waiting = tokio::spawn({
            let client = client.clone();
            let url = layer_url.clone();
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .expect("blob")
                    .bytes()
                    .await
                    .expect("body")
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        store(&cache, &layer);
        handoff.ready(&digest(&layer));
        assert_eq!(waiting.await.expect("join").to_vec(), layer);
        // Blobs of nothing published are not served, even when cached.
        store(&cache, b"secret");
        let other = client
            .get(format!(
                "{base}drbuild-handoff/library/redis/blobs/{}",
                digest(b"secret")
            ))
            .send()
            .await
            .expect("other");
        assert_eq!(other.status(), 404);
    }

    #[test]
    fn stale_names_are_the_handoffs_own() {
        let names = [
            "127.0.0.1:41234/drbuild-handoff/library/redis:7-alpine-0123456789ab",
            "127.0.0.1:41234/drbuild-handoff/library/redis@sha256:00",
            "127.0.0.1:5000/library/redis:7-alpine",
            "127.0.0.1:5000/drbuild-handoffs/x:1",
            "localhost:41234/drbuild-handoff/library/redis:1",
            "127.0.0.1:41234/drbuild-handoff/:1",
            "redis:7-alpine",
        ];
        assert_eq!(
            stale_names(names),
            vec![(41234, names[0].to_owned()), (41234, names[1].to_owned())]
        );
    }

    #[tokio::test]
    async fn a_failed_fetch_fails_waiting_requests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache::open(dir.path()).expect("cache");
        let manifest = br#"{"schemaVersion":2}"#.to_vec();
        store(&cache, &manifest);
        let top = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
        let image = FetchedImage {
            wanted: Wanted::any_platform("alpine:3.18".parse().expect("reference")),
            top: top.clone(),
            manifest: top,
            platform: Platform::host(),
            config: descriptor("application/vnd.oci.image.config.v1+json", b"{}"),
            layers: vec![descriptor(
                "application/vnd.oci.image.layer.v1.tar+gzip",
                b"never",
            )],
            source: "127.0.0.1:5000".into(),
            bytes: 0,
            resumes: 0,
        };
        let handoff = Handoff::start(cache).await.expect("start");
        handoff.publish(&image);
        let url = format!(
            "http://{}/v2/library/alpine/blobs/{}",
            handoff.address(),
            digest(b"never")
        );
        let waiting = tokio::spawn(async move { reqwest::get(url).await.expect("blob").status() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        handoff.failed(&image);
        assert_eq!(waiting.await.expect("join"), 404);
    }
}
