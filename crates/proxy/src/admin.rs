//! The admin HTTP listener: `GET /metrics` (Prometheus text format) and
//! `GET /healthz` (200 `ok` or 503 `unhealthy`); anything else is 404, or
//! 405 for another method on those paths.
//!
//! It is small on purpose: HTTP/1.1 only, request bodies never read, header
//! size capped, a header read timeout against slow clients, and a cap on
//! concurrent connections (further ones wait in the kernel backlog).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
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

/// Bind `addr` and serve the admin endpoints until the handle is dropped.
/// `health` is asked on every `/healthz`; it must be cheap.
pub async fn serve<H>(addr: SocketAddr, metrics: Arc<Metrics>, health: H) -> Result<AdminHandle, io::Error>
where
    H: Fn() -> bool + Send + Sync + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let health = Arc::new(health);
    let task = tokio::spawn(accept_loop(listener, metrics, health));
    tracing::info!(%local_addr, "admin listener up");
    Ok(AdminHandle { local_addr, task })
}

async fn accept_loop<H>(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<H>)
where
    H: Fn() -> bool + Send + Sync + 'static,
{
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
        let metrics = metrics.clone();
        let health = health.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let reply = respond(&req, &metrics, &*health);
                async move { Ok::<_, Infallible>(reply) }
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
fn respond(req: &Request<Incoming>, metrics: &Metrics, health: &dyn Fn() -> bool) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path != "/metrics" && path != "/healthz" {
        return text(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "method not allowed\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == "/metrics" {
        text(StatusCode::OK, TEXT_CONTENT_TYPE, metrics.encode())
    } else if health() {
        text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", "unhealthy\n")
    }
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
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

    async fn start() -> (AdminHandle, Arc<Metrics>, Arc<AtomicBool>) {
        let metrics = Arc::new(Metrics::new());
        let healthy = Arc::new(AtomicBool::new(true));
        let h = healthy.clone();
        let handle =
            serve("127.0.0.1:0".parse().unwrap(), metrics.clone(), move || h.load(Ordering::Relaxed)).await.unwrap();
        (handle, metrics, healthy)
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
    async fn healthz_follows_the_health_function() {
        let (handle, _, healthy) = start().await;
        let r = get(handle.local_addr(), &request("GET", "/healthz")).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nok\n"), "{r}");
        healthy.store(false, Ordering::Relaxed);
        let r = get(handle.local_addr(), &request("GET", "/healthz")).await;
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
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
