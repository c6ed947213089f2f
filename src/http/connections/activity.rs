//! What one connection is doing, and the deadline that follows from it:
//! kept with atomics, updated by the socket (a head began), the request
//! layer (a request started, its response ended) and read by the watchdog.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::limits::ConnectionLimits;

/// Where connection times are counted from (the first use, on tokio's clock).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub(super) fn now_ms() -> u64 {
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
        })
    }

    /// Bytes came in: if the connection was idle, a head has started.
    pub(super) fn read_some(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0 && self.head_started.load(Ordering::Relaxed) == NEVER {
            self.head_started.store(now_ms(), Ordering::Relaxed);
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
        }
    }

    /// Since when the connection has been waiting for a request, if it is.
    pub(super) fn waiting_since(&self) -> Option<u64> {
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

    /// The decision for now, under `limits`. Nothing wakes the watchdog
    /// when the state changes (a wake-up it would poll on every read of
    /// the socket cost more than the rest of this module), so it never
    /// sleeps longer than a head timeout: a head that begins on a
    /// kept-alive connection is cut between one and two head timeouts after
    /// its first byte; every other deadline is kept to the millisecond.
    pub fn verdict(&self, limits: &ConnectionLimits) -> Verdict {
        let now = now_ms();
        let recheck = now + limits.head_timeout.as_millis() as u64;
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Verdict::Until(at_ms(recheck));
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
            Verdict::Until(at_ms(deadline.min(recheck)))
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
        // The request's span, entered while the body is polled: a
        // stream's logs carry its trace id for its whole life.
        span: tracing::Span,
    }
}

impl<B> TrackedBody<B> {
    pub fn new(body: B, in_flight: InFlight, span: tracing::Span) -> Self {
        TrackedBody {
            body,
            in_flight,
            span,
        }
    }
}

impl<B: http_body::Body> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let _entered = this.span.enter();
        this.body.poll_frame(cx)
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
}
