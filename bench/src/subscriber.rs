//! SSE subscriber connections: a raw `TcpSocket` bound to a chosen
//! 127.0.0.x source, a hand-written `GET`, the response head, then an
//! incremental read loop that hands events to a handler. Reads go into a
//! per-thread buffer, so an idle connection holds no buffer of its own.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use crate::sse::{find, BodyDecoder, Event, SseParser};
use crate::util::{self, Bits, Target};

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// How to open one subscription.
pub struct StreamSpec {
    pub target: Target,
    /// Request line and headers, without the final blank line.
    prefix: Vec<u8>,
    sources: Vec<Ipv4Addr>,
    pub connect_timeout: Duration,
}

impl StreamSpec {
    pub fn new(target: Target, bearer: Option<&str>, source_ips: u32, connect_timeout: Duration) -> Self {
        let mut prefix = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nUser-Agent: pollcast-bench\r\n",
            target.path, target.authority
        );
        if let Some(token) = bearer {
            prefix.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let sources = util::source_ips(&target.addr, source_ips);
        StreamSpec {
            target,
            prefix: prefix.into_bytes(),
            sources,
            connect_timeout,
        }
    }

    pub fn source_count(&self) -> usize {
        self.sources.len().max(1)
    }

    /// Opens subscription number `index` (which picks its source address),
    /// resuming after `last_event_id` when given.
    pub async fn open(&self, index: usize, last_event_id: Option<&[u8]>) -> Result<Conn, OpenError> {
        match tokio::time::timeout(self.connect_timeout, self.open_inner(index, last_event_id)).await {
            Ok(result) => result,
            Err(_) => Err(OpenError::Timeout),
        }
    }

    async fn open_inner(&self, index: usize, last_event_id: Option<&[u8]>) -> Result<Conn, OpenError> {
        let addr = self.target.addr;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(OpenError::Connect)?;
        if !self.sources.is_empty() {
            let source = self.sources[index % self.sources.len()];
            socket.set_reuseaddr(true).map_err(OpenError::Connect)?;
            socket
                .bind(SocketAddr::new(source.into(), 0))
                .map_err(OpenError::Connect)?;
        }
        let mut stream = socket.connect(addr).await.map_err(OpenError::Connect)?;
        let _ = stream.set_nodelay(true);
        let mut request = Vec::with_capacity(self.prefix.len() + 64);
        request.extend_from_slice(&self.prefix);
        if let Some(id) = last_event_id.filter(|id| !id.is_empty()) {
            request.extend_from_slice(b"Last-Event-ID: ");
            request.extend_from_slice(id);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        stream.write_all(&request).await.map_err(OpenError::Io)?;

        let mut head = Vec::with_capacity(1024);
        let end = loop {
            if let Some(end) = find(&head, b"\r\n\r\n") {
                break end + 4;
            }
            if head.len() > MAX_HEAD {
                return Err(OpenError::Protocol("response head too long"));
            }
            head.reserve(1024);
            if stream.read_buf(&mut head).await.map_err(OpenError::Io)? == 0 {
                return Err(OpenError::Protocol("closed before the response head"));
            }
        };
        let (status, chunked) = parse_head(&head[..end])?;
        if status != 200 {
            let _ = stream.set_zero_linger();
            return Err(OpenError::Status(status));
        }
        Ok(Conn {
            stream,
            decoder: BodyDecoder::new(chunked),
            leftover: head[end..].to_vec(),
        })
    }
}

/// Status code and whether the body is chunked.
fn parse_head(head: &[u8]) -> Result<(u16, bool), OpenError> {
    let text = std::str::from_utf8(head).map_err(|_| OpenError::Protocol("response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or(OpenError::Protocol("bad status line"))?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
        })
    });
    Ok((status, chunked))
}

#[derive(Debug)]
pub enum OpenError {
    Connect(io::Error),
    Io(io::Error),
    Timeout,
    Status(u16),
    Protocol(&'static str),
}

impl OpenError {
    /// A short label to count failures by.
    pub fn label(&self) -> String {
        match self {
            OpenError::Connect(e) => format!("connect: {e}"),
            OpenError::Io(e) => format!("io: {e}"),
            OpenError::Timeout => "timeout".into(),
            OpenError::Status(code) => format!("status {code}"),
            OpenError::Protocol(what) => format!("protocol: {what}"),
        }
    }
}

/// An open subscription.
pub struct Conn {
    stream: TcpStream,
    decoder: BodyDecoder,
    /// Body bytes that came with the response head.
    leftover: Vec<u8>,
}

impl Conn {
    /// Closes with a reset (no FIN handshake, no TIME_WAIT left behind).
    pub fn abort(self) {
        let _ = self.stream.set_zero_linger();
    }
}

/// Why `pump` returned.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The `until` future completed.
    Stopped,
    /// The handler asked to stop.
    Done,
    /// The server ended the response or closed the connection.
    Closed,
    Error,
}

/// Reads events until `until` completes, the handler returns false, or the
/// stream ends. The handler gets each event, the receive time (unix nanos,
/// taken once per read) and this thread's latency histogram.
///
/// Reads go through `poll_read`, which marks the socket not ready after a
/// short read, so a wake-up costs one `read` call; the per-thread buffer is
/// borrowed only within one poll.
pub async fn pump<H>(
    conn: &mut Conn,
    parser: &mut SseParser,
    until: impl Future<Output = ()>,
    handler: &mut H,
) -> End
where
    H: FnMut(&Event, u64, &mut Histogram<u64>) -> bool,
{
    if !conn.leftover.is_empty() {
        let leftover = std::mem::take(&mut conn.leftover);
        if let Some(end) = process(&mut conn.decoder, parser, &leftover, handler) {
            return end;
        }
    }
    let mut until = std::pin::pin!(until);
    let Conn { stream, decoder, .. } = conn;
    std::future::poll_fn(|cx| {
        if until.as_mut().poll(cx).is_ready() {
            return Poll::Ready(End::Stopped);
        }
        loop {
            let step = util::with_scratch(|buf| {
                let mut read = ReadBuf::new(buf);
                match Pin::new(&mut *stream).poll_read(cx, &mut read) {
                    Poll::Pending => None,
                    Poll::Ready(Err(_)) => Some(Some(End::Error)),
                    Poll::Ready(Ok(())) if read.filled().is_empty() => Some(Some(End::Closed)),
                    Poll::Ready(Ok(())) => Some(process(decoder, parser, read.filled(), handler)),
                }
            });
            match step {
                None => return Poll::Pending,
                Some(Some(end)) => return Poll::Ready(end),
                Some(None) => continue,
            }
        }
    })
    .await
}

fn process<H>(decoder: &mut BodyDecoder, parser: &mut SseParser, raw: &[u8], handler: &mut H) -> Option<End>
where
    H: FnMut(&Event, u64, &mut Histogram<u64>) -> bool,
{
    let now = util::unix_nanos();
    let mut done = false;
    let decoded = util::with_latencies(|hist| {
        decoder.feed(raw, &mut |body| {
            parser.feed(body, &mut |event| {
                if !handler(event, now, hist) {
                    done = true;
                }
            })
        })
    });
    match decoded {
        Err(_) => Some(End::Error),
        Ok(_) if done => Some(End::Done),
        Ok(true) => Some(End::Closed),
        Ok(false) => None,
    }
}

/// What one subscriber saw of the benchmark's events (those with a `seq`
/// below `limit`).
#[derive(Debug)]
pub struct Tracker {
    limit: u64,
    /// Events sent before this (unix nanos) are from an earlier run, e.g.
    /// an Nchan buffer replayed to a new subscriber.
    not_before_ns: u64,
    pub seen: Bits,
    pub max_seq: Option<u64>,
    pub received: u64,
    pub duplicates: u64,
    /// Events whose stream id was not above the previous one's.
    pub out_of_order: u64,
    last_id: Option<u64>,
    /// Events whose seq is below one seen before: concurrent POSTs commit
    /// in any order, so this is expected and not a fault.
    pub reordered: u64,
    /// Events with a seq out of this run's range or sent before it began.
    pub foreign: u64,
    pub resets: u64,
    pub last_recv_ns: u64,
}

impl Tracker {
    pub fn new(limit: u64, not_before_ns: u64) -> Self {
        Tracker {
            limit,
            not_before_ns,
            seen: Bits::with_capacity(limit.min(1 << 20)),
            max_seq: None,
            received: 0,
            duplicates: 0,
            out_of_order: 0,
            last_id: None,
            reordered: 0,
            foreign: 0,
            resets: 0,
            last_recv_ns: 0,
        }
    }

    /// Counts an event; returns its seq when it is one of this run's.
    pub fn record(&mut self, event: &Event, now: u64, hist: &mut Histogram<u64>) -> Option<u64> {
        if event.reset {
            self.resets += 1;
        }
        let seq = event.seq?;
        if seq >= self.limit || event.sent_at.is_some_and(|sent| sent < self.not_before_ns) {
            self.foreign += 1;
            return None;
        }
        self.received += 1;
        self.last_recv_ns = now;
        if let Some(id) = event.id_num {
            if self.last_id.is_some_and(|last| last >= id) {
                self.out_of_order += 1;
            }
            self.last_id = Some(id);
        }
        if let Some(sent) = event.sent_at {
            hist.saturating_record(now.saturating_sub(sent) / 1000);
        }
        if !self.seen.insert(seq) {
            self.duplicates += 1;
        } else if self.max_seq.is_some_and(|max| max > seq) {
            self.reordered += 1;
        }
        self.max_seq = self.max_seq.max(Some(seq));
        Some(seq)
    }
}

/// Connection outcomes shared by every subscriber task.
#[derive(Default)]
pub struct ConnectStats {
    pub connected: AtomicUsize,
    pub failed: AtomicUsize,
    /// Streams the server ended (or that broke) before the run stopped them.
    pub ended_early: AtomicUsize,
    failures: Mutex<BTreeMap<String, u64>>,
}

impl ConnectStats {
    pub fn fail(&self, error: &OpenError) {
        *self
            .failures
            .lock()
            .expect("failures")
            .entry(error.label())
            .or_default() += 1;
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn failures(&self) -> BTreeMap<String, u64> {
        self.failures.lock().expect("failures").clone()
    }

    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn ended_early(&self) -> usize {
        self.ended_early.load(Ordering::Relaxed)
    }
}

/// Opens subscription `index` with at most `permits` handshakes at a time,
/// counting the outcome.
pub async fn open_counted(
    spec: &StreamSpec,
    index: usize,
    last_event_id: Option<&[u8]>,
    permits: &Semaphore,
    stats: &ConnectStats,
) -> Option<Conn> {
    let permit = permits.acquire().await.ok()?;
    let opened = spec.open(index, last_event_id).await;
    drop(permit);
    match opened {
        Ok(conn) => {
            stats.connected.fetch_add(1, Ordering::Relaxed);
            Some(conn)
        }
        Err(error) => {
            stats.fail(&error);
            None
        }
    }
}

/// Waits until `n` connection attempts have finished, printing progress;
/// returns how long that took.
pub async fn wait_connected(stats: &Arc<ConnectStats>, n: usize, what: &str) -> Duration {
    let started = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let (ok, failed) = (stats.connected(), stats.failed());
        if ok + failed >= n {
            let took = started.elapsed();
            eprintln!(
                "{what}: {ok} connected, {failed} failed in {:.2}s",
                took.as_secs_f64()
            );
            return took;
        }
        if last_print.elapsed() >= Duration::from_secs(2) {
            eprintln!("{what}: {ok}/{n} connected, {failed} failed…");
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads() {
        let head =
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse_head(head), Ok((200, true))));
        assert!(matches!(
            parse_head(b"HTTP/1.1 401 Unauthorized\r\n\r\n"),
            Ok((401, false))
        ));
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
    }
}
