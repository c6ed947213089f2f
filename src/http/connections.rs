//! Every open TCP connection, with a deadline for each state it can be in
//! and a cap on how many there may be.
//!
//! A connection is either *busy* (a request is being answered, a stream is
//! open) or *waiting* for a request head (just accepted, or kept alive
//! between requests). Waiting is what an attacker can do for free, so it is
//! bounded twice:
//!
//! - in time: a request head must be complete within `head_timeout` (10 s)
//!   of its first byte (of the accept, for a new connection), and a kept-alive
//!   connection that sends nothing is closed after `idle_timeout` (75 s);
//! - in number: at `max_connections`, a new connection evicts the
//!   connection that has been waiting longest for a request, once that one
//!   has waited a second (a client sends its head in milliseconds: only a
//!   connection that sends nothing is worth closing for a newcomer). When
//!   no connection is evictable (open streams, mostly, or a burst of
//!   newcomers), a few more are admitted as *headroom*
//!   (2 %, at least 16) for short requests only: `/healthz`, a publish, a
//!   vote still get through, answered with `Connection: close`, while a new
//!   stream there is refused with a 503; past the headroom, a connection is
//!   refused at once with a 503. So neither a flood of connections that
//!   never finish their heads nor a node full of streams keeps `/healthz`
//!   or a publish out. One peer address may hold at most `max_per_address`
//!   connections (a trusted proxy is exempt: its clients are counted by
//!   their forwarded address where streams are opened).
//!
//! Busy connections have no deadline here: a request's body has its own
//! (408, see `request::Body`), a response its own (503), and a stream lasts
//! as long as its client reads it.
//!
//! Costs on the hot path: one atomic load per socket read, two atomic
//! updates per request. The registry's lock is taken at accept and close
//! only; finding whom to evict scans it, and only at the cap.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::event::TraceId;
use crate::error::ApiError;

/// The settings of [`Connections`] (flags `--head-timeout`,
/// `--idle-timeout`, `--max-connections`, `--max-connections-per-address`,
/// `--trusted-proxy`).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// From a connection's accept, or the first byte of a later request,
    /// to the end of that request's head.
    pub head_timeout: Duration,
    /// How long a kept-alive connection may send nothing.
    pub idle_timeout: Duration,
    /// Open connections on this node, all states together.
    pub max_connections: usize,
    /// Open connections from one peer address (trusted proxies excepted).
    pub max_per_address: usize,
    /// Peers whose `X-Forwarded-For` names the real client.
    pub trusted_proxies: Vec<IpNet>,
}

impl ConnectionLimits {
    /// Generous limits for embedding and tests.
    pub fn unlimited() -> Self {
        ConnectionLimits {
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_connections: usize::MAX,
            max_per_address: usize::MAX,
            trusted_proxies: Vec::new(),
        }
    }
}

/// An address or a CIDR block, for `--trusted-proxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    base: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// `10.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`.
    pub fn parse(raw: &str) -> Result<IpNet, String> {
        let (address, prefix) = match raw.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (raw, None),
        };
        let base: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("{raw:?} is not an IP address or CIDR block"))?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{raw:?}: the prefix must be 0 to {max}"))?,
        };
        Ok(IpNet { base, prefix })
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        match (self.base, address) {
            (IpAddr::V4(base), IpAddr::V4(address)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(base) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(base), IpAddr::V6(address)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(base) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

/// IPv4 addresses seen through an IPv6 socket count as IPv4.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// The address a request comes from: the peer's, or, when the peer is a
/// trusted proxy, the nearest address in `X-Forwarded-For` that is not one
/// (a client can prepend anything to that header; only what trusted proxies
/// appended is believed).
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |address: IpAddr| trusted.iter().any(|net| net.contains(address));
    let peer = canonical(peer);
    if !is_trusted(peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .map(|hop| hop.parse::<IpAddr>().ok())
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default();
    forwarded
        .into_iter()
        .rev()
        .map(canonical)
        .find(|address| !is_trusted(*address))
        .unwrap_or(peer)
}

/// Where connection times are counted from (the first use, on tokio's clock).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    Instant::now().saturating_duration_since(epoch()).as_millis() as u64
}

fn at_ms(ms: u64) -> Instant {
    epoch() + Duration::from_millis(ms)
}

const NEVER: u64 = u64::MAX;

/// What one connection is doing, kept with atomics so that the socket, the
/// request layer and the watchdog never lock anything.
#[derive(Debug)]
pub struct Activity {
    /// Requests being answered (a stream counts until it ends).
    in_flight: AtomicUsize,
    /// When the request head now awaited began: the accept, or its first
    /// byte. `NEVER` while no head is under way.
    head_started: AtomicU64,
    /// When the connection last became idle (its last response ended).
    idle_since: AtomicU64,
    /// Woken when a deadline may have moved earlier (a response ended, a
    /// head began), so the watchdog does not sleep past it.
    changed: Notify,
}

/// What the watchdog concludes about a connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Check again at this time.
    Until(Instant),
    /// The head took too long.
    HeadTimedOut,
    /// Nothing was sent for too long.
    IdleTimedOut,
}

impl Activity {
    /// A connection just accepted: its first head is under way.
    pub fn accepted() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            head_started: AtomicU64::new(now_ms()),
            idle_since: AtomicU64::new(NEVER),
            changed: Notify::new(),
        })
    }

    /// Resolves when a deadline may have moved; the watchdog then decides
    /// again.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Bytes came in: if the connection was idle, a head has started.
    fn read_some(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0 && self.head_started.load(Ordering::Relaxed) == NEVER {
            self.head_started.store(now_ms(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// A request's head is complete and it is being answered.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(NEVER, Ordering::Relaxed);
    }

    /// A response has been sent in full (or abandoned).
    pub fn request_ended(&self) {
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.idle_since.store(now_ms(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// Since when the connection has been waiting for a request, if it is.
    fn waiting_since(&self) -> Option<u64> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let head = self.head_started.load(Ordering::Relaxed);
        Some(if head != NEVER {
            head
        } else {
            self.idle_since.load(Ordering::Relaxed)
        })
    }

    /// The decision for now, under `limits`.
    pub fn verdict(&self, limits: &ConnectionLimits) -> Verdict {
        let now = now_ms();
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // Busy: no deadline; the end of the request wakes the watchdog.
            return Verdict::Until(at_ms(now + limits.idle_timeout.as_millis() as u64));
        }
        let head = self.head_started.load(Ordering::Relaxed);
        if head != NEVER {
            let deadline = head.saturating_add(limits.head_timeout.as_millis() as u64);
            return if now >= deadline {
                Verdict::HeadTimedOut
            } else {
                Verdict::Until(at_ms(deadline))
            };
        }
        let idle = self.idle_since.load(Ordering::Relaxed);
        let deadline = idle.saturating_add(limits.idle_timeout.as_millis() as u64);
        if now >= deadline {
            Verdict::IdleTimedOut
        } else {
            Verdict::Until(at_ms(deadline))
        }
    }
}

/// Marks the end of one request on its connection when dropped: with the
/// response body (after its last byte, or when the client left).
pub struct InFlight(Arc<Activity>);

impl InFlight {
    pub fn start(activity: &Arc<Activity>) -> InFlight {
        activity.request_started();
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its request's [`InFlight`] until it is done.
    pub struct TrackedBody<B> {
        #[pin]
        body: B,
        in_flight: InFlight,
    }
}

impl<B> TrackedBody<B> {
    pub fn new(body: B, in_flight: InFlight) -> Self {
        TrackedBody { body, in_flight }
    }
}

impl<B: http_body::Body> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A socket whose reads tell its [`Activity`] that a head has begun.
pub struct Tracked<S> {
    socket: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub fn new(socket: S, activity: Arc<Activity>) -> Self {
        Tracked { socket, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.socket).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_some();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

/// The open connections of this node.
pub struct Connections {
    limits: ConnectionLimits,
    registry: Mutex<Registry>,
    /// Refusals being written right now: past a few hundred, a refused
    /// connection is closed without an answer rather than hold a descriptor.
    refusing: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Registry {
    next_key: u64,
    open: HashMap<u64, Entry>,
    per_address: HashMap<IpAddr, usize>,
}

struct Entry {
    address: Option<IpAddr>,
    activity: Arc<Activity>,
    evict: CancellationToken,
}

/// What [`Connections::admit`] decided for a new connection.
pub enum Admission {
    Admitted(Slot),
    /// Refused with this error; answer it with [`refuse`].
    Refused(ApiError),
}

/// One admitted connection: its activity, the token that evicts it, and
/// its place in the registry, given back when dropped.
pub struct Slot {
    key: u64,
    connections: Arc<Connections>,
    pub activity: Arc<Activity>,
    pub evicted: CancellationToken,
    /// Admitted past the cap, for one short request: no stream here.
    pub headroom: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut registry = self.connections.lock();
        if let Some(entry) = registry.open.remove(&self.key) {
            if let Some(address) = entry.address {
                if let Some(count) = registry.per_address.get_mut(&address) {
                    *count -= 1;
                    if *count == 0 {
                        registry.per_address.remove(&address);
                    }
                }
            }
        }
        crate::metrics::connection_closed();
    }
}

/// How long a connection must have waited for a request before a newcomer
/// at the cap may evict it.
const EVICTABLE_AFTER_MS: u64 = 1_000;

/// Refusals written at once, at most; more are closed without an answer.
const MAX_REFUSING: usize = 256;

impl Connections {
    pub fn new(limits: ConnectionLimits) -> Arc<Connections> {
        Arc::new(Connections {
            limits,
            registry: Mutex::new(Registry::default()),
            refusing: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// Connections admitted past the cap when every one is busy, for
    /// short requests: 2 % of the cap, at least 16.
    fn headroom(&self) -> usize {
        (self.limits.max_connections / 50).max(16)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many connections are open now.
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// Admits a connection from `peer`, evicting the longest-waiting one at
    /// the cap; refuses it when its address has too many, or when every
    /// open connection is busy.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Admission {
        let address = canonical(peer.ip());
        let counted = !self
            .limits
            .trusted_proxies
            .iter()
            .any(|net| net.contains(address));
        let mut registry = self.lock();
        if counted && registry.per_address.get(&address).copied().unwrap_or(0) >= self.limits.max_per_address
        {
            crate::metrics::connection_refused("per_address");
            return Admission::Refused(ApiError::rate_limited(
                format!(
                    "this address already holds {} connections",
                    self.limits.max_per_address
                ),
                Duration::from_secs(1),
            ));
        }
        let mut headroom = false;
        if registry.open.len() >= self.limits.max_connections {
            match registry.longest_waiting(now_ms()) {
                Some(key) => {
                    // Leaves the registry now; its task closes the socket.
                    let entry = registry.open.remove(&key).expect("found above");
                    registry.forget_address(entry.address);
                    entry.evict.cancel();
                    crate::metrics::connection_refused("evicted_waiting");
                }
                None if registry.open.len() < self.limits.max_connections.saturating_add(self.headroom()) => {
                    headroom = true;
                }
                None => {
                    crate::metrics::connection_refused("at_capacity");
                    return Admission::Refused(ApiError::unavailable(format!(
                        "this node is at its cap of {} connections, all busy",
                        self.limits.max_connections
                    )));
                }
            }
        }
        let key = registry.next_key;
        registry.next_key += 1;
        let activity = Activity::accepted();
        let evicted = CancellationToken::new();
        let address = counted.then_some(address);
        if let Some(address) = address {
            *registry.per_address.entry(address).or_default() += 1;
        }
        registry.open.insert(
            key,
            Entry {
                address,
                activity: Arc::clone(&activity),
                evict: evicted.clone(),
            },
        );
        drop(registry);
        crate::metrics::connection_opened();
        Admission::Admitted(Slot {
            key,
            connections: Arc::clone(self),
            activity,
            evicted,
            headroom,
        })
    }

    /// Writes a refusal on a connection that was not admitted and closes
    /// it, without reading its request. Past [`MAX_REFUSING`] at once the
    /// socket is simply closed.
    pub fn refuse(&self, socket: TcpStream, error: ApiError) {
        if self.refusing.fetch_add(1, Ordering::Relaxed) >= MAX_REFUSING {
            self.refusing.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let refusing = Arc::clone(&self.refusing);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), write_refusal(socket, &error)).await;
            refusing.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

impl Registry {
    /// The connection that has waited longest for a request, if one has
    /// waited at least [`EVICTABLE_AFTER_MS`] by `now`.
    fn longest_waiting(&self, now: u64) -> Option<u64> {
        self.open
            .iter()
            .filter_map(|(key, entry)| entry.activity.waiting_since().map(|since| (since, *key)))
            .filter(|(since, _)| now.saturating_sub(*since) >= EVICTABLE_AFTER_MS)
            .min()
            .map(|(_, key)| key)
    }

    fn forget_address(&mut self, address: Option<IpAddr>) {
        if let Some(address) = address {
            if let Some(count) = self.per_address.get_mut(&address) {
                *count -= 1;
                if *count == 0 {
                    self.per_address.remove(&address);
                }
            }
        }
    }
}

async fn write_refusal(mut socket: TcpStream, error: &ApiError) {
    let response = refusal_bytes(error);
    if socket.write_all(&response).await.is_err() {
        return;
    }
    // Half-close, then give the client a moment to read before the socket
    // is dropped (closing with unread request bytes would reset it).
    let _ = socket.shutdown().await;
    let mut scratch = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), socket.readable())
        .await
        .map(|_| socket.try_read(&mut scratch))
    {
        if n == 0 {
            break;
        }
    }
}

/// A complete `Connection: close` response carrying the contract's error
/// body.
pub fn refusal_bytes(error: &ApiError) -> Bytes {
    let body = error.body(&TraceId::generate());
    let reason = error.status.canonical_reason().unwrap_or("");
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n",
        error.status.as_u16(),
        body.len()
    );
    if let Some(secs) = error.retry_after_secs {
        head.push_str(&format!("retry-after: {secs}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    Bytes::from(head)
}

/// Logs failures to accept at most once per interval, with how many were
/// left unsaid: out of descriptors, the accept loop would otherwise log
/// twenty lines a second for as long as it lasts.
pub struct AcceptErrorLog {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrorLog {
    pub fn new(every: Duration) -> Self {
        AcceptErrorLog {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Records one failure; `Some(suppressed)` when it should be logged.
    pub fn failed(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(raw: &str) -> IpNet {
        IpNet::parse(raw).unwrap()
    }

    #[test]
    fn cidr_blocks_contain_their_addresses() {
        assert!(net("10.0.0.0/8").contains("10.1.2.3".parse().unwrap()));
        assert!(!net("10.0.0.0/8").contains("11.1.2.3".parse().unwrap()));
        assert!(net("127.0.0.1").contains("127.0.0.1".parse().unwrap()));
        assert!(net("127.0.0.1").contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(net("fd00::/8").contains("fd12::1".parse().unwrap()));
        assert!(net("0.0.0.0/0").contains("8.8.8.8".parse().unwrap()));
        assert!(IpNet::parse("10.0.0.0/33").is_err());
        assert!(IpNet::parse("proxy").is_err());
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_forwarded_address() {
        let trusted = [net("10.0.0.0/8")];
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        // A client's own claim in front is ignored; the proxy's view counts.
        let headers = forwarded("6.6.6.6, 203.0.113.9, 10.0.0.7");
        assert_eq!(
            client_address(proxy, &headers, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // An untrusted peer's header is not believed at all.
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_address(stranger, &headers, &trusted), stranger);
        // Garbage in the header: the proxy itself is the client.
        assert_eq!(
            client_address(proxy, &forwarded("not an address"), &trusted),
            proxy
        );
        assert_eq!(client_address(proxy, &HeaderMap::new(), &trusted), proxy);
    }

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            ..ConnectionLimits::unlimited()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_has_ten_seconds_and_an_idle_connection_seventy_five() {
        let activity = Activity::accepted();
        assert!(matches!(activity.verdict(&limits()), Verdict::Until(_)));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(activity.verdict(&limits()), Verdict::HeadTimedOut);

        let activity = Activity::accepted();
        let request = InFlight::start(&activity);
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!(
            matches!(activity.verdict(&limits()), Verdict::Until(_)),
            "busy: no deadline"
        );
        drop(request);
        tokio::time::advance(Duration::from_secs(74)).await;
        assert!(matches!(activity.verdict(&limits()), Verdict::Until(_)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(activity.verdict(&limits()), Verdict::IdleTimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_of_a_later_request_starts_its_head_clock() {
        let activity = Activity::accepted();
        drop(InFlight::start(&activity));
        tokio::time::advance(Duration::from_secs(30)).await;
        activity.read_some();
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(activity.verdict(&limits()), Verdict::HeadTimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_a_long_waiting_connection_makes_room_then_headroom_then_refusal() {
        let connections = Connections::new(ConnectionLimits {
            max_connections: 2,
            ..limits()
        });
        let peer: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let admit = || match connections.admit(peer) {
            Admission::Admitted(slot) => slot,
            Admission::Refused(e) => panic!("refused: {}", e.message),
        };
        let waiting = admit();
        let busy = admit();
        let _request = InFlight::start(&busy.activity);
        // A newcomer does not evict a connection that has just arrived (it
        // may be sending its head): it gets headroom.
        let early = admit();
        assert!(early.headroom && !waiting.evicted.is_cancelled());
        drop(early);
        tokio::time::advance(Duration::from_millis(1_100)).await;
        let newcomer = admit();
        assert!(!newcomer.headroom, "room was made");
        assert!(
            waiting.evicted.is_cancelled(),
            "by the connection that waited a second"
        );
        assert!(!busy.evicted.is_cancelled());
        let _second = InFlight::start(&newcomer.activity);
        // All busy: sixteen more for short requests, then refusals.
        let headroom: Vec<Slot> = (0..16).map(|_| admit()).collect();
        assert!(headroom.iter().all(|slot| slot.headroom));
        for slot in &headroom {
            std::mem::forget(InFlight::start(&slot.activity));
        }
        assert!(
            matches!(connections.admit(peer), Admission::Refused(e) if e.status == 503),
            "all busy, headroom too: refused at once"
        );
        drop(waiting);
        assert_eq!(connections.open(), 18);
    }

    #[tokio::test]
    async fn one_address_holds_at_most_its_share() {
        let connections = Connections::new(ConnectionLimits {
            max_per_address: 1,
            trusted_proxies: vec![net("10.0.0.1")],
            ..limits()
        });
        let a: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:1".parse().unwrap();
        let proxy: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let first = connections.admit(a);
        assert!(matches!(connections.admit(a), Admission::Refused(e) if e.status == 429));
        assert!(matches!(connections.admit(b), Admission::Admitted(_)));
        assert!(matches!(connections.admit(proxy), Admission::Admitted(_)));
        assert!(
            matches!(connections.admit(proxy), Admission::Admitted(_)),
            "proxies are exempt"
        );
        drop(first);
        assert!(matches!(connections.admit(a), Admission::Admitted(_)));
    }

    #[test]
    fn accept_errors_are_logged_once_per_interval() {
        let mut log = AcceptErrorLog::new(Duration::from_secs(5));
        let start = Instant::now();
        assert_eq!(log.failed(start), Some(0));
        assert_eq!(log.failed(start + Duration::from_secs(1)), None);
        assert_eq!(log.failed(start + Duration::from_secs(2)), None);
        assert_eq!(log.failed(start + Duration::from_secs(6)), Some(2));
    }

    #[test]
    fn a_refusal_is_a_complete_response_that_closes() {
        let text = String::from_utf8(refusal_bytes(&ApiError::unavailable("full")).to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(text.contains("connection: close\r\n"));
        assert!(text.contains("retry-after: 1\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(body.contains("\"unavailable\""));
    }
}
