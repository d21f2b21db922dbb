//! Just enough SIP for test peers: parse a message, read one from a stream,
//! build requests and responses. Deliberately independent of the proxy's own
//! parser, so a bug there cannot hide itself here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// A parsed SIP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipMessage {
    pub start_line: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Compact header forms (RFC 3261 §7.3.3 and friends).
fn full_name(name: &str) -> &str {
    match name.to_ascii_lowercase().as_str() {
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        "k" => "supported",
        "s" => "subject",
        "e" => "content-encoding",
        _ => name,
    }
}

fn same_header(a: &str, b: &str) -> bool {
    full_name(a).eq_ignore_ascii_case(full_name(b))
}

impl SipMessage {
    /// Parse one complete message (header section and body).
    pub fn parse(raw: &[u8]) -> Option<SipMessage> {
        let end = find(raw, b"\r\n\r\n")?;
        let head = std::str::from_utf8(raw.get(..end)?).ok()?;
        let mut lines = head.split("\r\n");
        let start_line = lines.next()?.to_owned();
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                // Folded continuation line.
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            let (name, value) = line.split_once(':')?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let body = raw.get(end + 4..).unwrap_or_default().to_vec();
        Some(SipMessage { start_line, headers, body })
    }

    /// Status code of a response.
    pub fn status(&self) -> Option<u16> {
        let rest = self.start_line.strip_prefix("SIP/2.0 ")?;
        rest.get(..3)?.parse().ok()
    }

    /// Method of a request.
    pub fn method(&self) -> Option<&str> {
        if self.start_line.starts_with("SIP/2.0") {
            return None;
        }
        self.start_line.split(' ').next()
    }

    /// Request-URI of a request.
    pub fn request_uri(&self) -> Option<&str> {
        self.method()?;
        self.start_line.split(' ').nth(1)
    }

    /// First value of a header (the whole field as sent).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| same_header(n, name)).map(|(_, v)| v.as_str())
    }

    /// Every value of a header, with comma-separated fields split (commas
    /// inside `<…>` and quotes kept), top first.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers.iter().filter(|(n, _)| same_header(n, name)).flat_map(|(_, v)| split_commas(v)).collect()
    }

    /// Method named in CSeq.
    pub fn cseq_method(&self) -> Option<&str> {
        self.header("CSeq")?.split_whitespace().nth(1)
    }

    /// The message as bytes, Content-Length as given in the headers.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.start_line.clone().into_bytes();
        out.extend_from_slice(b"\r\n");
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// A response to this request (RFC 3261 §8.2.6.2): Via, From, To,
    /// Call-ID and CSeq copied, `to_tag` added to To when To has no tag.
    pub fn response(&self, status: u16, reason: &str, to_tag: Option<&str>) -> SipMessage {
        let mut headers = Vec::new();
        for v in self.header_values("Via") {
            headers.push(("Via".to_owned(), v));
        }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            if let Some(v) = self.header(name) {
                let mut v = v.to_owned();
                if name == "To" && !v.contains(";tag=") {
                    if let Some(tag) = to_tag {
                        v.push_str(";tag=");
                        v.push_str(tag);
                    }
                }
                headers.push((name.to_owned(), v));
            }
        }
        headers.push(("Content-Length".to_owned(), "0".to_owned()));
        SipMessage { start_line: format!("SIP/2.0 {status} {reason}"), headers, body: Vec::new() }
    }

    /// Insert a header before Content-Length (or at the end).
    pub fn with_header(mut self, name: &str, value: &str) -> SipMessage {
        let at = self.headers.iter().position(|(n, _)| same_header(n, "Content-Length")).unwrap_or(self.headers.len());
        self.headers.insert(at, (name.to_owned(), value.to_owned()));
        self
    }
}

impl std::fmt::Display for SipMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// Split a header value on commas that separate values.
pub fn split_commas(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut in_angle, mut in_quote) = (false, false);
    let mut cur = String::new();
    for c in v.chars() {
        match c {
            '"' => in_quote = !in_quote,
            '<' if !in_quote => in_angle = true,
            '>' if !in_quote => in_angle = false,
            ',' if !in_quote && !in_angle => {
                out.push(cur.trim().to_owned());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Read one message from a stream (CRLF keep-alives skipped). `buf` keeps
/// bytes of the next message between calls. `Ok(None)` when the peer
/// closed; an error on timeout.
pub async fn read_message<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> std::io::Result<Option<SipMessage>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        while buf.starts_with(b"\r\n") {
            buf.drain(..2);
        }
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len = head
                .split("\r\n")
                .filter_map(|l| l.split_once(':'))
                .find(|(n, _)| same_header(n.trim(), "Content-Length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let total = end + 4 + len;
            if buf.len() >= total {
                let raw: Vec<u8> = buf.drain(..total).collect();
                return SipMessage::parse(&raw)
                    .map(Some)
                    .ok_or_else(|| std::io::Error::other(format!("unparsable message: {head}")));
            }
        }
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no SIP message in time"))??;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(1);

/// A token unique within this process run (branches, tags, Call-IDs).
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id())
}

/// A request with the mandatory headers (RFC 3261 §8.1.1). `transport` is
/// the Via transport (`UDP`, `TCP`, `TLS`), `local` the sent-by address.
pub fn request(method: &str, uri: &str, transport: &str, local: std::net::SocketAddr) -> SipMessage {
    let scheme = if transport.eq_ignore_ascii_case("tls") { ";transport=tls" } else { "" };
    let headers = vec![
        ("Via".to_owned(), format!("SIP/2.0/{transport} {local};branch={};rport", unique("z9hG4bK-t"))),
        ("Max-Forwards".to_owned(), "70".to_owned()),
        ("From".to_owned(), format!("<sip:alice@example.test>;tag={}", unique("tag"))),
        ("To".to_owned(), format!("<{uri}>")),
        ("Call-ID".to_owned(), unique("call-")),
        ("CSeq".to_owned(), format!("1 {method}")),
        ("Contact".to_owned(), format!("<sip:alice@{local}{scheme}>")),
        ("Content-Length".to_owned(), "0".to_owned()),
    ];
    SipMessage { start_line: format!("{method} {uri} SIP/2.0"), headers, body: Vec::new() }
}

/// Send `msg` over UDP from a fresh socket to `to` and collect responses
/// until a final one (or `timeout`). Returns every response received.
pub async fn udp_exchange(
    to: std::net::SocketAddr,
    build: impl FnOnce(std::net::SocketAddr) -> Vec<u8>,
    timeout: Duration,
) -> std::io::Result<Vec<SipMessage>> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let local = sock.local_addr()?;
    sock.send_to(&build(local), to).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok(r) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await else { return Ok(out) };
        let (n, _) = r?;
        if let Some(m) = SipMessage::parse(&buf[..n]) {
            let is_final = m.status().is_some_and(|s| s >= 200);
            out.push(m);
            if is_final {
                return Ok(out);
            }
        }
    }
}
