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

mod activity;
mod address;
mod limits;

pub use crate::net::IpNet;
pub use activity::{Activity, InFlight, Tracked, TrackedBody, Verdict};
pub use address::client_address;
pub use limits::ConnectionLimits;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use crate::domain::event::TraceId;
use crate::net::canonical;
use activity::now_ms;

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

/// What every request on a hyper connection knows of its connection: one
/// request extension (each costs an allocation per request).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Closes the TCP connection when cancelled: the hub cancels it when
    /// the connection's stream falls too far behind.
    pub closer: CancellationToken,
    /// Where the request comes from (see [`client_address`]): the key of
    /// the per-address limits.
    pub client: IpAddr,
    /// The connection was admitted past the cap: no stream may open on it.
    pub headroom: bool,
    /// The request's correlation id (see `request::trace_id`).
    pub trace_id: TraceId,
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

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            ..ConnectionLimits::unlimited()
        }
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
            trusted_proxies: vec![IpNet::parse("10.0.0.1").unwrap()],
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
