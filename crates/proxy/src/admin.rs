//! The admin HTTP listener: `GET /metrics` (Prometheus text format),
//! `GET /healthz` (the process is alive: always 200 `ok` while it serves),
//! `GET /readyz` (200 `ready`, or 503 with the reason: draining, a store
//! unreachable) and the runtime control API under `/api/` (JSON), which
//! [`Control`] answers. Anything else is 404, or 405 for another method.
//!
//! The control API needs `Authorization: Bearer <token>` when a token is
//! configured (`[admin] token_file`); the token is compared in constant
//! time. `/metrics`, `/healthz` and `/readyz` never need it (scrapers and
//! probes).
//!
//! It is small on purpose: HTTP/1.1 only, request bodies never read (every
//! argument is in the path or the query), header size capped, a header read
//! timeout against slow clients, and a cap on concurrent connections
//! (further ones wait in the kernel backlog).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::metrics::{Metrics, TEXT_CONTENT_TYPE};

/// Concurrent admin connections; a scraper and a health checker need two.
const MAX_CONNECTIONS: usize = 32;
/// Read buffer, which bounds the request line and headers.
const MAX_BUF: usize = 8 * 1024;
/// Header lines accepted per request.
const MAX_HEADERS: usize = 32;
/// Time a client gets to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest token accepted from `token_file`.
const MIN_TOKEN_LEN: usize = 16;

/// A control API request: the method, the path below `/api` (`/reload`,
/// `/registrations/sip:alice@example.test`, percent-decoded) and the query
/// pairs (decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
}

impl ApiRequest {
    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The answer: a status and a JSON document.
pub type ApiReply = (StatusCode, String);

/// What the admin listener asks the running proxy.
pub trait Control: Send + Sync + 'static {
    /// `/readyz`: `Ok` when listeners are up, stores reachable and the
    /// proxy is not draining; else why not.
    fn readiness(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
    /// One control API request.
    fn call(&self, req: ApiRequest) -> Pin<Box<dyn Future<Output = ApiReply> + Send + '_>>;
}

/// Read a bearer token file: its first line, trimmed, at least
/// [`MIN_TOKEN_LEN`] characters.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim().to_owned();
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!("{}: the token must be at least {MIN_TOKEN_LEN} characters", path.display()));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{}: the token must be printable ASCII without spaces", path.display()));
    }
    Ok(token)
}

/// The running listener. Dropping it stops accepting and closes open
/// connections.
#[derive(Debug)]
#[must_use = "dropping the AdminHandle stops the admin listener"]
pub struct AdminHandle {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AdminHandle {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop accepting and close open connections.
    pub async fn shutdown(mut self) {
        self.task.abort();
        // The task was aborted; its JoinError says only that.
        let _ = (&mut self.task).await;
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    metrics: Arc<Metrics>,
    control: Arc<dyn Control>,
    token: Option<String>,
}

/// Bind `addr` and serve the admin endpoints until the handle is dropped.
/// With `token`, the control API requires it as a bearer token.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    control: Arc<dyn Control>,
    token: Option<String>,
) -> Result<AdminHandle, io::Error> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let shared = Arc::new(Shared { metrics, control, token });
    let task = tokio::spawn(accept_loop(listener, shared));
    tracing::info!(%local_addr, "admin listener up");
    Ok(AdminHandle { local_addr, task })
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Owned here so that aborting this task closes every connection.
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set stays small.
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(respond(&req, &shared, peer).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_BUF)
                .max_headers(MAX_HEADERS)
                .keep_alive(true);
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%peer, error = %e, "admin connection ended");
            }
        });
    }
}

/// The answer to one request; the request body is never read.
async fn respond(req: &Request<Incoming>, shared: &Shared, peer: SocketAddr) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    let path = req.uri().path();
    if let Some(api_path) = path.strip_prefix("/api") {
        if !api_path.is_empty() && !api_path.starts_with('/') {
            return text(StatusCode::NOT_FOUND, PLAIN, "not found\n");
        }
        if let Some(expected) = &shared.token {
            if !bearer_matches(req.headers().get(AUTHORIZATION), expected) {
                tracing::warn!(%peer, path, "admin API request without a valid token refused");
                let mut r = json(StatusCode::UNAUTHORIZED, r#"{"error":"a bearer token is required"}"#.to_owned());
                r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"umproxy\""));
                return r;
            }
        }
        let Some(path) = percent_decode(api_path) else {
            return json(StatusCode::BAD_REQUEST, r#"{"error":"bad percent-encoding in the path"}"#.to_owned());
        };
        let query = req.uri().query().map(parse_query).unwrap_or_default();
        let api = ApiRequest { method: req.method().clone(), path, query };
        if api.method != Method::GET && api.method != Method::HEAD {
            tracing::info!(%peer, method = %api.method, path = %api.path, "admin API");
        }
        let (status, body) = shared.control.call(api).await;
        return json(status, body);
    }
    if path != "/metrics" && path != "/healthz" && path != "/readyz" {
        return text(StatusCode::NOT_FOUND, PLAIN, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "method not allowed\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => text(StatusCode::OK, TEXT_CONTENT_TYPE, shared.metrics.encode()),
        // Alive: this task answered.
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n"),
        _ => match shared.control.readiness().await {
            Ok(()) => text(StatusCode::OK, PLAIN, "ready\n"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("not ready: {why}\n")),
        },
    }
}

/// `Authorization: Bearer <token>`, compared without an early exit.
fn bearer_matches(header: Option<&HeaderValue>, expected: &str) -> bool {
    let Some(given) = header.and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), expected.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (i, &e) in b.iter().enumerate() {
        diff |= e ^ a.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// `%XX` decoding (and `+` as space in queries); `None` on a bad escape or
/// bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(&k.replace('+', " "))?, percent_decode(&v.replace('+', " "))?))
        })
        .take(16)
        .collect()
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json(status: StatusCode, mut body: String) -> Response<Full<Bytes>> {
    body.push('\n');
    text(status, "application/json", body)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// One request over a raw TCP connection; returns the whole response.
    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await.unwrap().unwrap();
        String::from_utf8(buf).unwrap()
    }

    fn request(method: &str, path: &str) -> String {
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    }

    /// Ready while the flag holds; echoes API requests.
    struct Fake(Arc<AtomicBool>);

    impl Control for Fake {
        fn readiness(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
            let ready = self.0.load(Ordering::Relaxed);
            Box::pin(async move {
                if ready {
                    Ok(())
                } else {
                    Err("draining".into())
                }
            })
        }
        fn call(&self, req: ApiRequest) -> Pin<Box<dyn Future<Output = ApiReply> + Send + '_>> {
            Box::pin(async move {
                (
                    StatusCode::OK,
                    format!("{{\"method\":\"{}\",\"path\":{:?},\"q\":{:?}}}", req.method, req.path, req.param("level")),
                )
            })
        }
    }

    async fn start_with(token: Option<&str>) -> (AdminHandle, Arc<Metrics>, Arc<AtomicBool>) {
        let metrics = Arc::new(Metrics::new());
        let ready = Arc::new(AtomicBool::new(true));
        let control: Arc<dyn Control> = Arc::new(Fake(ready.clone()));
        let handle =
            serve("127.0.0.1:0".parse().unwrap(), metrics.clone(), control, token.map(str::to_owned)).await.unwrap();
        (handle, metrics, ready)
    }

    async fn start() -> (AdminHandle, Arc<Metrics>, Arc<AtomicBool>) {
        start_with(None).await
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_the_text_format() {
        let (handle, metrics, _) = start().await;
        metrics.request(sip_message::Method::Invite, crate::metrics::Direction::In);
        let r = get(handle.local_addr(), &request("GET", "/metrics")).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{r}");
        assert!(r.contains("umproxy_requests_total{direction=\"in\",method=\"INVITE\"} 1"), "{r}");
    }

    #[tokio::test]
    async fn readyz_follows_readiness_while_healthz_stays_ok() {
        let (handle, _, ready) = start().await;
        let r = get(handle.local_addr(), &request("GET", "/readyz")).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nready\n"), "{r}");
        ready.store(false, Ordering::Relaxed);
        let r = get(handle.local_addr(), &request("GET", "/readyz")).await;
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n") && r.ends_with("not ready: draining\n"), "{r}");
        let r = get(handle.local_addr(), &request("GET", "/healthz")).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nok\n"), "{r}");
    }

    #[tokio::test]
    async fn the_api_gets_decoded_paths_and_queries() {
        let (handle, _, _) = start().await;
        let r = get(handle.local_addr(), &request("DELETE", "/api/registrations/sip%3Aalice%40example.test?level=a+b"))
            .await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains(r#"{"method":"DELETE","path":"/registrations/sip:alice@example.test","q":Some("a b")}"#),
            "{r}"
        );
        let r = get(handle.local_addr(), &request("GET", "/api/x%zz")).await;
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        let r = get(handle.local_addr(), &request("GET", "/apix")).await;
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
    }

    #[tokio::test]
    async fn with_a_token_the_api_refuses_requests_without_it_but_probes_need_none() {
        let (handle, _, _) = start_with(Some("0123456789abcdef-token")).await;
        let addr = handle.local_addr();
        let r = get(addr, &request("POST", "/api/reload")).await;
        assert!(r.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{r}");
        assert!(r.to_ascii_lowercase().contains("www-authenticate: bearer"), "{r}");
        let wrong = "POST /api/reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer 0123456789abcdef-tokex\r\nConnection: close\r\n\r\n";
        assert!(get(addr, wrong).await.starts_with("HTTP/1.1 401 "));
        let right = "POST /api/reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer 0123456789abcdef-token\r\nConnection: close\r\n\r\n";
        assert!(get(addr, right).await.starts_with("HTTP/1.1 200 OK\r\n"));
        for probe in ["/metrics", "/healthz", "/readyz"] {
            assert!(get(addr, &request("GET", probe)).await.starts_with("HTTP/1.1 200 OK\r\n"), "{probe}");
        }
    }

    #[test]
    fn token_files_must_hold_a_long_printable_token() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "short\n").unwrap();
        assert!(read_token(&f).unwrap_err().contains("at least 16"));
        std::fs::write(&f, "0123456789abcdef0123\nignored\n").unwrap();
        assert_eq!(read_token(&f).unwrap(), "0123456789abcdef0123");
        assert!(read_token(&dir.path().join("missing")).is_err());
    }

    #[tokio::test]
    async fn other_paths_and_methods_are_refused() {
        let (handle, _, _) = start().await;
        let r = get(handle.local_addr(), &request("GET", "/")).await;
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        let r = get(handle.local_addr(), &request("POST", "/metrics")).await;
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
        assert!(r.to_ascii_lowercase().contains("allow: get, head"), "{r}");
    }

    #[tokio::test]
    async fn oversized_headers_are_refused() {
        let (handle, _, _) = start().await;
        let big = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_BUF * 2));
        let r = get(handle.local_addr(), &big).await;
        assert!(r.starts_with("HTTP/1.1 431 ") || r.is_empty(), "{r}");
    }

    #[tokio::test]
    async fn dropping_the_handle_stops_the_listener() {
        let (handle, _, _) = start().await;
        let addr = handle.local_addr();
        handle.shutdown().await;
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
