//! The direct SSE path: a stream request that opens successfully is served
//! straight on its socket, without an HTTP connection object behind it.
//!
//! Why: an idle SSE stream is most of what a busy node holds, and a hyper
//! HTTP/1 connection keeps an 8 KiB read buffer and an 8 KiB write buffer
//! for its whole life. Here an open stream is the socket, the
//! [`EventStream`] and its hub queue: the shared frames are written with
//! one vectored write per chunk and nothing is copied per connection.
//!
//! Every new connection is sniffed first. Only a complete, body-less
//! HTTP/1.1 `GET` of a stream path whose stream opens without error takes
//! this path; everything else — other routes, refusals (401/403/404…),
//! CORS requests when CORS is on, malformed or odd requests — is handed to
//! hyper with the bytes already read put back in front, so those answers
//! come from one place, the warp routes.

use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::connections::{client_address, InFlight, Slot};
use super::request::{self, RequestContext};
use super::routes::{self, Route};
use super::state::AppState;
use super::stream::{open_topics, EventStream, SSE_HEADERS};

/// Largest request head the sniffer reads before handing over to hyper
/// (which then answers 431 if it is too large for it too).
const MAX_HEAD: usize = 16 * 1024;
/// Most headers the sniffer parses; more goes to hyper.
const MAX_HEADERS: usize = 64;

/// What the sniffer decided for one connection.
pub enum Sniffed {
    /// A stream was served on the socket and has ended.
    Served,
    /// Not for this path: serve it with hyper, replaying what was read.
    Hyper(Rewind),
    /// The client left (or never sent a full head in time).
    Gone,
}

/// Serves the streams of successful stream requests directly.
#[derive(Clone)]
pub struct DirectStreams {
    state: AppState,
    /// With CORS on, requests carrying `Origin` go to hyper, where the CORS
    /// layer answers them.
    cors_enabled: bool,
}

impl DirectStreams {
    pub fn new(state: AppState, cors_enabled: bool) -> Self {
        DirectStreams { state, cors_enabled }
    }

    /// Reads the request head of a new connection and serves it here if it
    /// is a stream request that opens; otherwise hands it back for hyper.
    /// The head must arrive within the head timeout of the accept; an
    /// eviction (the node is at its connection cap) ends the wait.
    pub async fn sniff(&self, mut socket: TcpStream, slot: &Slot, peer: SocketAddr) -> Sniffed {
        let mut head = Vec::with_capacity(1024);
        let head_timeout = self.state.connections.limits().head_timeout;
        let verdict = tokio::select! {
            read = tokio::time::timeout(head_timeout, read_head(&mut socket, &mut head)) => match read {
                Ok(Ok(verdict)) => verdict,
                Ok(Err(_)) => return Sniffed::Gone,
                Err(_) => {
                    crate::metrics::connection_timed_out("head");
                    return Sniffed::Gone;
                }
            },
            _ = slot.evicted.cancelled() => return Sniffed::Gone,
        };
        let HeadVerdict::Candidate(request) = verdict else {
            return match verdict {
                HeadVerdict::Closed => Sniffed::Gone,
                _ => Sniffed::Hyper(Rewind::new(head, socket)),
            };
        };
        // Past the cap only short requests are served: hyper's route
        // answers this stream request with its 503.
        if slot.headroom || (self.cors_enabled && request.headers.contains_key(http::header::ORIGIN)) {
            return Sniffed::Hyper(Rewind::new(head, socket));
        }
        let on_slow = CancellationToken::new();
        let client = client_address(
            peer.ip(),
            &request.headers,
            &self.state.connections.limits().trusted_proxies,
        );
        let mut trace = [0u8; TRACE_LEN];
        let Some(stream) = self.open(&request, client, on_slow.clone(), &mut trace).await else {
            return Sniffed::Hyper(Rewind::new(head, socket));
        };
        drop(head);
        let route = request.target.route();
        drop(request);
        let trace = std::str::from_utf8(&trace).unwrap_or_default();
        let span = request::span(trace, "GET", route);
        let _busy = InFlight::start(&slot.activity);
        serve_stream(socket, stream, response_head(trace), on_slow)
            .instrument(span)
            .await;
        Sniffed::Served
    }

    /// Opens the stream a request names, in the request's span; `None`
    /// when it does not open (hyper then answers why). The request's trace
    /// id is copied into `trace`: kept on the heap among the opening's
    /// short-lived allocations for the stream's life, it fragmented the
    /// heap (6.46 KiB per idle stream at 10,000 streams, against 5.98).
    async fn open(
        &self,
        request: &StreamRequest,
        client: IpAddr,
        on_slow: CancellationToken,
        trace: &mut [u8; TRACE_LEN],
    ) -> Option<EventStream> {
        let ctx = RequestContext::new(request.headers.clone(), &request.query).from_client(client);
        if let Ok(bytes) = <[u8; TRACE_LEN]>::try_from(ctx.trace_id.as_str().as_bytes()) {
            *trace = bytes;
        }
        match &request.target {
            StreamTarget::Topics => open_topics(&self.state, &ctx, Some(on_slow)).ok(),
            StreamTarget::Session(raw) => {
                let span = request::span(ctx.trace_id.as_str(), "GET", request.target.route());
                super::polling::open_session_stream(raw, &self.state, &ctx, Some(on_slow))
                    .instrument(span)
                    .await
                    .ok()
            }
        }
    }
}

/// Length of a trace id (32 hexadecimal digits).
const TRACE_LEN: usize = 32;

/// Which stream a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamTarget {
    /// `GET /v1/events`
    Topics,
    /// `GET /v1/sessions/{id}/events`, with the id as written in the path.
    Session(String),
}

impl StreamTarget {
    /// The route's path pattern, for the request's span.
    pub fn route(&self) -> &'static str {
        match self {
            StreamTarget::Topics => "/v1/events",
            StreamTarget::Session(_) => "/v1/sessions/{id}/events",
        }
    }
}

/// A parsed stream request head.
#[derive(Debug)]
pub struct StreamRequest {
    pub target: StreamTarget,
    pub query: String,
    pub headers: HeaderMap,
}

/// What the sniffer makes of the bytes read so far (see [`judge`]).
#[derive(Debug)]
pub enum HeadVerdict {
    Candidate(StreamRequest),
    NotAStream,
    Closed,
}

/// Reads into `head` until the request head is complete or it is clear the
/// request is not for this path.
async fn read_head(socket: &mut TcpStream, head: &mut Vec<u8>) -> io::Result<HeadVerdict> {
    loop {
        if socket.read_buf(head).await? == 0 {
            return Ok(HeadVerdict::Closed);
        }
        match judge(head) {
            Some(verdict) => return Ok(verdict),
            None if head.len() >= MAX_HEAD => return Ok(HeadVerdict::NotAStream),
            None => head.reserve(1024),
        }
    }
}

/// Decides from the first bytes of a connection whether it is a stream
/// request the direct path serves; `None` while more bytes are needed to
/// decide. Public for the fuzz target `direct_head`.
pub fn judge(head: &[u8]) -> Option<HeadVerdict> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let status = match request.parse(head) {
        Ok(status) => status,
        Err(_) => return Some(HeadVerdict::NotAStream),
    };
    if let (Some(method), Some(path)) = (request.method, request.path) {
        if method != "GET" || stream_target(path).is_none() {
            return Some(HeadVerdict::NotAStream);
        }
    }
    let httparse::Status::Complete(length) = status else {
        return None;
    };
    // Pipelined bytes after the head, HTTP/1.0, a body, or a head over the
    // limit (answered 431 there): hyper's job.
    if length != head.len() || request.version != Some(1) || length > super::request::MAX_HEAD {
        return Some(HeadVerdict::NotAStream);
    }
    Some(candidate(&request).map_or(HeadVerdict::NotAStream, HeadVerdict::Candidate))
}

fn candidate(request: &httparse::Request) -> Option<StreamRequest> {
    // Read the target as hyper would (`http::Uri`'s rules): a target it
    // refuses (`<`, `"`…) or reads differently (a `#fragment`) is hyper's
    // to answer, so that both paths agree on every request. Found by the
    // fuzz target `direct_head`.
    let uri = http::uri::PathAndQuery::try_from(request.path?).ok()?;
    if request.path?.contains('#') {
        return None;
    }
    let target = stream_target(uri.path())?;
    let query = uri.query().unwrap_or("").to_owned();
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        if name == http::header::CONTENT_LENGTH && header.value != b"0" {
            return None;
        }
        if name == http::header::TRANSFER_ENCODING || name == http::header::UPGRADE {
            return None;
        }
        headers.append(name, HeaderValue::from_bytes(header.value).ok()?);
    }
    Some(StreamRequest {
        target,
        query,
        headers,
    })
}

/// The stream a request target names, if any, from the route table.
fn stream_target(target: &str) -> Option<StreamTarget> {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    match routes::resolve(&http::Method::GET, path)? {
        Route::TopicStream => Some(StreamTarget::Topics),
        Route::SessionStream { session } => Some(StreamTarget::Session(session)),
        _ => None,
    }
}

/// The response head of a direct stream: chunked, so that proxies keeping
/// upstream connections alive see where the response ends.
fn response_head(trace_id: &str) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    for (name, value) in SSE_HEADERS {
        head.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    let date = httpdate::fmt_http_date(SystemTime::now());
    let trace = trace_id;
    head.extend_from_slice(format!("{}: {trace}\r\ndate: {date}\r\n", request::TRACE_HEADER).as_bytes());
    head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    head
}

/// Writes the stream's chunks until it ends, the client leaves, or the hub
/// drops it for being slow. Shutdown ends the stream itself (the hub closes
/// live subscriptions); a write stuck on a client that stopped reading is
/// ended by the hub's slow-subscriber signal or, at exit, by the runtime.
async fn serve_stream(socket: TcpStream, mut stream: EventStream, head: Vec<u8>, on_slow: CancellationToken) {
    if write_or_give_up(&socket, &[&head], &on_slow).await.is_err() {
        return;
    }
    drop(head);
    loop {
        // A slow subscriber dropped by the hub sees its queue end here, so
        // `on_slow` only matters while a write is stuck.
        let chunk = next_chunk_while_connected(&socket, &mut stream).await;
        let Some(chunk) = chunk else {
            // The stream ended (shutdown, or dropped by the hub): finish
            // the chunked body so the client sees a clean end.
            let _ = write_or_give_up(&socket, &[b"0\r\n\r\n"], &on_slow).await;
            return;
        };
        let Ok(chunk) = chunk else { return };
        let mut size = ChunkSize::default();
        let parts: [&[u8]; 3] = [size.line(chunk.len()), &chunk, b"\r\n"];
        if write_or_give_up(&socket, &parts, &on_slow).await.is_err() {
            return;
        }
    }
}

/// The `<hex length>\r\n` line that opens a chunk, without an allocation.
#[derive(Default)]
struct ChunkSize([u8; 18]);

impl ChunkSize {
    fn line(&mut self, length: usize) -> &[u8] {
        let digits = (usize::BITS - length.leading_zeros()).div_ceil(4).max(1) as usize;
        for (i, slot) in self.0[..digits].iter_mut().enumerate() {
            let nibble = (length >> (4 * (digits - 1 - i))) & 0xf;
            *slot = b"0123456789abcdef"[nibble];
        }
        self.0[digits] = b'\r';
        self.0[digits + 1] = b'\n';
        &self.0[..digits + 2]
    }
}

/// The stream's next chunk, watching the socket meanwhile: `Err` when the
/// client has closed its end. The chunk future is polled to completion or
/// dropped with the connection, never abandoned half-way.
async fn next_chunk_while_connected(
    socket: &TcpStream,
    stream: &mut EventStream,
) -> Option<Result<Bytes, ()>> {
    let next = stream.next_chunk();
    tokio::pin!(next);
    loop {
        tokio::select! {
            chunk = &mut next => return chunk.map(Ok),
            readable = socket.readable() => {
                if readable.is_err() || client_closed(socket) {
                    return Some(Err(()));
                }
            }
        }
    }
}

/// Drains whatever the client sent (nothing is expected after the request)
/// and says whether it has closed the connection.
fn client_closed(socket: &TcpStream) -> bool {
    let mut scratch = [0u8; 64];
    loop {
        match socket.try_read(&mut scratch) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Writes every part, unless the hub gives up on this subscriber first (a
/// client that stopped reading must not hold the task forever). The common
/// case, a socket with room, is one `writev` and no waiting at all.
async fn write_or_give_up(
    socket: &TcpStream,
    parts: &[&[u8]],
    on_slow: &CancellationToken,
) -> io::Result<()> {
    let mut parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    write_some(socket, &mut parts)?;
    if parts.is_empty() {
        return Ok(());
    }
    tokio::select! {
        written = write_all_vectored(socket, parts) => written,
        _ = on_slow.cancelled() => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Writes what the socket takes right now without waiting.
fn write_some(socket: &TcpStream, parts: &mut Vec<&[u8]>) -> io::Result<()> {
    let slices: Vec<IoSlice> = parts.iter().map(|p| IoSlice::new(p)).collect();
    match socket.try_write_vectored(&slices) {
        Ok(0) if !parts.is_empty() => Err(io::ErrorKind::WriteZero.into()),
        Ok(written) => {
            advance(parts, written);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

async fn write_all_vectored(socket: &TcpStream, mut parts: Vec<&[u8]>) -> io::Result<()> {
    while !parts.is_empty() {
        socket.writable().await?;
        write_some(socket, &mut parts)?;
    }
    Ok(())
}

/// Drops `written` bytes from the front of `parts`.
fn advance(parts: &mut Vec<&[u8]>, mut written: usize) {
    let mut done = 0;
    for part in parts.iter_mut() {
        if written >= part.len() {
            written -= part.len();
            done += 1;
        } else {
            *part = &part[written..];
            break;
        }
    }
    parts.drain(..done);
}

/// A socket with bytes already read from it put back in front, so hyper
/// sees the connection from its first byte.
pub struct Rewind {
    prefix: Bytes,
    socket: TcpStream,
}

impl Rewind {
    /// A socket nothing has been read from yet.
    pub fn untouched(socket: TcpStream) -> Self {
        Rewind::new(Vec::new(), socket)
    }

    fn new(prefix: Vec<u8>, socket: TcpStream) -> Self {
        Rewind {
            prefix: Bytes::from(prefix),
            socket,
        }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let taken = self.prefix.split_to(n);
            buf.put_slice(&taken);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(raw: &str) -> Option<HeadVerdict> {
        judge(raw.as_bytes())
    }

    #[test]
    fn a_complete_stream_get_is_a_candidate() {
        let Some(HeadVerdict::Candidate(request)) =
            verdict("GET /v1/events?topic=a&topic=b HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 7\r\n\r\n")
        else {
            panic!("expected a candidate");
        };
        assert_eq!(request.target, StreamTarget::Topics);
        assert_eq!(request.query, "topic=a&topic=b");
        assert_eq!(request.headers.get("last-event-id").unwrap(), "7");
    }

    #[test]
    fn a_session_stream_is_a_candidate_with_its_id_as_written() {
        let Some(HeadVerdict::Candidate(request)) =
            verdict("GET /v1/sessions/AB%2DCD/events HTTP/1.1\r\nHost: x\r\n\r\n")
        else {
            panic!("expected a candidate");
        };
        assert_eq!(request.target, StreamTarget::Session("AB%2DCD".into()));
    }

    #[test]
    fn an_incomplete_stream_head_needs_more_bytes() {
        assert!(verdict("GET /v1/events?topic=a HTTP/1.1\r\nHost: x\r\n").is_none());
        assert!(verdict("GET /v1/ev").is_none());
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for raw in [
            "POST /v1/events HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /v1/events/history?topic=a HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /v1/sessions/a/b/events HTTP/1.1\r\n\r\n",
            "GET /v1/events HTTP/1.0\r\n\r\n",
            "GET /v1/events HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
            "GET /v1/events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /v1/events HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
            "GET /v1/events?topic=demo:a&x=< HTTP/1.1\r\n\r\n",
            "GET /v1/events?topic=demo:a&x=#&topic=demo:b HTTP/1.1\r\n\r\n",
            "OPTIONS /v1/events HTTP/1.1\r\n",
            "\u{1}\u{2} garbage\r\n\r\n",
        ] {
            assert!(
                matches!(verdict(raw), Some(HeadVerdict::NotAStream)),
                "{raw:?} should go to hyper"
            );
        }
    }

    #[test]
    fn advancing_drops_whole_parts_then_splits_one() {
        let mut parts: Vec<&[u8]> = vec![b"abc", b"de", b"fgh"];
        advance(&mut parts, 4);
        assert_eq!(parts, vec![&b"e"[..], &b"fgh"[..]]);
        advance(&mut parts, 1);
        assert_eq!(parts, vec![&b"fgh"[..]]);
    }

    #[test]
    fn chunk_sizes_are_lowercase_hex_lines() {
        for (length, line) in [(0, "0\r\n"), (9, "9\r\n"), (255, "ff\r\n"), (4096, "1000\r\n")] {
            assert_eq!(ChunkSize::default().line(length), line.as_bytes());
        }
        let big = usize::MAX;
        assert_eq!(ChunkSize::default().line(big), format!("{big:x}\r\n").as_bytes());
    }

    #[test]
    fn the_response_head_is_chunked_sse() {
        let trace = crate::domain::event::TraceId::generate();
        let head = String::from_utf8(response_head(trace.as_str())).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("content-type: text/event-stream\r\n"));
        assert!(head.contains("x-accel-buffering: no\r\n"));
        assert!(head.contains(&format!("x-trace-id: {}\r\n", trace.as_str())));
        assert!(head.ends_with("transfer-encoding: chunked\r\n\r\n"));
    }
}
