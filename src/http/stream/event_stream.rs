//! One open SSE stream as a state machine: opening (the `connection:*`
//! frame), catching up (replay from the store, then the hub's ring; the
//! seam is decided by id under the hub's lock), live (hub frames and
//! heartbeats), and done.
//!
//! A stream ends from the inside when its token expires, and from the
//! outside when a revocation or an admin closes it (see
//! [`crate::streams`]): its last frame is then `connection:closing`, with
//! the reason, whether to reconnect, and the id to resume from. A stream of
//! a live polling session ends right after that session's `session:ended`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::json;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::start::StartPoint;
use crate::auth::{unix_now, TokenFacts};
use crate::domain::event::EventId;
use crate::domain::topic::{Topic, TopicFilter};
use crate::fanout::frame::{self, Frame, PING};
use crate::fanout::hub::{Attach, Hub, Subscription};
use crate::http::state::AppState;
use crate::limits::StreamPermit;
use crate::metrics;
use crate::polling::presence::PresenceGuard;
use crate::rooms::{system_topic, Room};
use crate::store::{EventStore, StoreError};
use crate::streams::{CloseReason, Registration};

/// Most events read from the store per query while replaying.
const REPLAY_PAGE: usize = 2000;
/// Events in a stream's first replay page, before it knows how big its
/// events are.
const FIRST_REPLAY_PAGE: usize = 128;
/// About how many bytes one replay page may frame. A page is held in
/// memory until the client has read it, so with events near the 64 KiB
/// cap a page of 2,000 would cost 128 MiB per replaying client.
const REPLAY_PAGE_BYTES: usize = 512 * 1024;
/// Most live frames written in one chunk: batching saves syscalls when a
/// burst is queued, without holding frames back when it is not.
const LIVE_BATCH: usize = 64;
/// Most log ids a reconnect counts its missed events over before its first
/// frame: enough for every ordinary reconnect, small enough that the first
/// frame never waits on a scan (see `open`).
const COUNT_WINDOW: EventId = 10_000;
/// Most log ids one replay read looks through: the bound on the work of a
/// single read, whatever the filter (see `catch_up`).
const REPLAY_WINDOW: EventId = 20_000;
/// Store reads a stream retries in a row before it ends and leaves the
/// client to resume with Last-Event-ID. A pool briefly exhausted by a burst
/// of replays, or a failover, should not send every stream's client through
/// a reconnect at once.
const STORE_RETRIES: u32 = 5;

/// The next replay page's size: as many events as fit in
/// [`REPLAY_PAGE_BYTES`] at the size the last page's events had.
fn next_replay_page(framed_bytes: usize, events: usize) -> usize {
    if events == 0 {
        return REPLAY_PAGE;
    }
    let per_event = (framed_bytes / events).max(1);
    (REPLAY_PAGE_BYTES / per_event).clamp(16, REPLAY_PAGE)
}

enum Phase {
    Opening(StartPoint),
    /// Replaying from the store or the ring up to the live seam.
    CatchingUp,
    Live(Subscription),
    Done,
}

/// One open stream. Counts itself in the connections gauge while alive.
pub struct EventStream {
    store: Arc<dyn EventStore>,
    hub: Arc<Hub>,
    filter: TopicFilter,
    phase: Phase,
    /// Every event up to this id has been sent (or did not match).
    cursor: EventId,
    /// Frames from the ring still to send after attaching.
    backlog: VecDeque<Arc<Frame>>,
    /// Events to read in the next replay page (sized by what came before).
    replay_page: usize,
    connection_id: Uuid,
    snapshot_url: String,
    retry: Duration,
    heartbeat: Interval,
    shutdown: CancellationToken,
    on_slow: Option<CancellationToken>,
    /// A participant's presence, held as long as the stream is open.
    _presence: Option<PresenceGuard>,
    /// The stream's registration for joining and leaving topics while open.
    room: Option<Room>,
    /// Its token's and its address's open-stream permits.
    permits: Vec<StreamPermit>,
    /// Store reads that failed in a row (see [`STORE_RETRIES`]).
    store_failures: u32,
    /// The node's catch-up permits: replay reads wait for one.
    catchups: Arc<tokio::sync::Semaphore>,
    /// Its place among the node's open streams: how it is closed from
    /// outside.
    registration: Registration,
    /// When its token expires (`exp`, seconds since the epoch), and a timer
    /// set for just after it.
    expires_at: Option<u64>,
    expiry: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The polling session whose end ends this stream.
    session: Option<SessionEnd>,
    /// Every event's data names its tenant (an admin's tail).
    show_tenants: bool,
}

/// How a stream of a live polling session ends.
struct SessionEnd {
    /// `session:<id>`: the stream ends after its `session:ended` frame.
    topic: Topic,
    /// The session had ended when the stream opened: once caught up, the
    /// stream ends (its client resumes into a `204`).
    ended: bool,
    /// The `session:ended` frame has been sent.
    sent_end: bool,
}

impl Drop for EventStream {
    fn drop(&mut self) {
        ::metrics::gauge!(metrics::CONNECTIONS).decrement(1.0);
    }
}

impl EventStream {
    /// A stream opened with `token` (`None`: an anonymous session
    /// watcher), registered among the node's open streams.
    pub fn new(
        state: &AppState,
        filter: TopicFilter,
        start: StartPoint,
        snapshot_url: String,
        on_slow: Option<CancellationToken>,
        token: Option<&TokenFacts>,
    ) -> Self {
        ::metrics::gauge!(metrics::CONNECTIONS).increment(1.0);
        let every = state.streams.heartbeat;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let connection_id = Uuid::new_v4();
        let expires_at = token.map(|t| t.expires_at);
        // The token is expired once `exp` has passed (the same rule as its
        // check): wake a moment after that second.
        let expiry = expires_at.map(|exp| {
            let left = Duration::from_secs(exp.saturating_sub(unix_now())) + Duration::from_millis(1_001);
            Box::pin(tokio::time::sleep(left.min(Duration::from_secs(400 * 86_400))))
        });
        EventStream {
            store: Arc::clone(&state.store),
            hub: Arc::clone(&state.hub),
            filter,
            phase: Phase::Opening(start),
            cursor: 0,
            replay_page: FIRST_REPLAY_PAGE,
            backlog: VecDeque::new(),
            connection_id,
            snapshot_url,
            retry: state.streams.retry,
            heartbeat,
            shutdown: state.shutdown.clone(),
            on_slow,
            _presence: None,
            room: None,
            permits: Vec::new(),
            store_failures: 0,
            catchups: Arc::clone(&state.catchups),
            registration: state.open_streams.register(connection_id, token.cloned()),
            expires_at,
            expiry,
            session: None,
            show_tenants: false,
        }
    }

    /// Names each event's tenant in its data (see [`frame::with_tenant`]).
    pub fn showing_tenants(mut self) -> Self {
        self.show_tenants = true;
        self
    }

    /// A stored event's frame as this stream sends it.
    fn shown(&self, frame: &Frame) -> Bytes {
        match self.show_tenants {
            true => frame::with_tenant(&frame.bytes, &frame.topic),
            false => frame.bytes.clone(),
        }
    }

    pub fn connection_id(&self) -> Uuid {
        self.connection_id
    }

    /// Follows the topics of `room`, which it joins and leaves while open.
    pub fn with_room(mut self, room: Room) -> Self {
        self.filter = room.filter();
        self.room = Some(room);
        self
    }

    /// Ends the stream after the `session:ended` of `topic`'s session, or,
    /// when the session had `ended` already, once it has caught up.
    pub fn ending_with_session(mut self, topic: Topic, ended: bool) -> Self {
        self.session = Some(SessionEnd {
            topic,
            ended,
            sent_end: false,
        });
        self
    }

    /// Counts the stream against these limits while it is open.
    pub fn with_permit(mut self, permit: StreamPermit) -> Self {
        self.permits.push(permit);
        self
    }

    /// Ties a participant's presence to this stream's lifetime.
    pub fn with_presence(mut self, guard: Option<PresenceGuard>) -> Self {
        self._presence = guard;
        self
    }

    /// The next bytes to write, or `None` to end the response.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            let phase = std::mem::replace(&mut self.phase, Phase::Done);
            // Live streams learn of shutdown from the hub; checking the
            // token (a shared lock) on every delivery would cost more.
            if !matches!(phase, Phase::Live(_)) && self.shutdown.is_cancelled() {
                return None;
            }
            if matches!(phase, Phase::Done) || self.session.as_ref().is_some_and(|s| s.sent_end) {
                return None;
            }
            if let Some(reason) = self.close_requested() {
                return Some(self.closing(reason));
            }
            let chunk = match phase {
                Phase::Done => return None,
                Phase::Opening(start) => self.open(start).await,
                Phase::CatchingUp => self.catch_up().await,
                Phase::Live(subscription) => self.live(subscription).await,
            };
            if let Some(chunk) = chunk {
                return Some(chunk);
            }
        }
    }

    /// Why the stream must end now, if it must.
    fn close_requested(&self) -> Option<CloseReason> {
        if let Some(reason) = self.registration.closing.reason() {
            return Some(reason);
        }
        self.expires_at
            .filter(|exp| unix_now() > *exp)
            .map(|_| CloseReason::TokenExpired)
    }

    /// The last frame, `connection:closing`; the stream is done after it.
    fn closing(&mut self, reason: CloseReason) -> Bytes {
        self.phase = Phase::Done;
        let payload = json!({
            "connectionId": self.connection_id.to_string(),
            "timestamp": crate::domain::event::format_timestamp(&chrono::Utc::now()),
            "reason": reason.as_str(),
            "reconnect": reason.reconnect(),
            "lastEventId": self.cursor.to_string(),
        });
        frame::transient("connection:closing", payload)
    }

    /// Whether `frame` ends this stream's session; remembers that it did.
    fn ends_here(&mut self, topic: &Topic, ends_session: bool) -> bool {
        match &mut self.session {
            Some(session) if ends_session && *topic == session.topic => {
                session.sent_end = true;
                true
            }
            _ => false,
        }
    }

    /// The first frame: `retry:` plus `connection:established`,
    /// `connection:reconnected` or `connection:reset`.
    async fn open(&mut self, start: StartPoint) -> Option<Bytes> {
        let connection_id = self.connection_id.to_string();
        let (event_type, payload) = match start {
            StartPoint::Now => {
                self.cursor = self.live_from();
                let payload = json!({
                    "connectionId": connection_id,
                    "timestamp": crate::domain::event::format_timestamp(&chrono::Utc::now()),
                    "serverVersion": env!("CARGO_PKG_VERSION"),
                });
                ("connection:established", payload)
            }
            StartPoint::Malformed(raw) => self.reset("malformed", raw),
            StartPoint::After(last) => {
                let retry = Phase::Opening(StartPoint::After(last));
                let bounds = match self.store.bounds().await {
                    Ok(bounds) => bounds,
                    Err(error) => return self.retry_later(retry, error).await,
                };
                if last < bounds.pruned_through {
                    self.reset("expired", last.to_string())
                } else if last > bounds.head.max(self.hub.high()) {
                    self.reset("unknown", last.to_string())
                } else {
                    // Counted only over a bounded stretch of the log: past it
                    // the count says how many events the log holds after
                    // `last` (an upper bound) and says that it is one.
                    let gap = bounds.head.saturating_sub(last);
                    let (count, exact) = if gap <= COUNT_WINDOW {
                        match self.store.count_range(last, bounds.head, &self.filter).await {
                            Ok(count) => (count, true),
                            Err(error) => return self.retry_later(retry, error).await,
                        }
                    } else {
                        (gap as u64, false)
                    };
                    self.cursor = last;
                    let payload = json!({
                        "connectionId": connection_id,
                        "timestamp": crate::domain::event::format_timestamp(&chrono::Utc::now()),
                        "replayFrom": last.to_string(),
                        "replayCount": count,
                        "replayCountExact": exact,
                    });
                    ("connection:reconnected", payload)
                }
            }
        };
        self.store_failures = 0;
        self.phase = Phase::CatchingUp;
        let mut chunk = BytesMut::from(&frame::retry_line(self.retry.as_millis())[..]);
        chunk.extend_from_slice(&frame::transient(event_type, payload));
        Some(chunk.freeze())
    }

    /// A store read failed: waits (longer each time in a row) and tries
    /// `phase` again, or, after [`STORE_RETRIES`], leaves the phase `Done`
    /// so the stream ends and EventSource retries with its Last-Event-ID.
    /// Nothing is sent meanwhile: a chunk would not help the client, and
    /// the wait is shorter than any sensible heartbeat timeout.
    async fn retry_later(&mut self, phase: Phase, error: StoreError) -> Option<Bytes> {
        self.store_failures += 1;
        if self.store_failures > STORE_RETRIES {
            tracing::warn!(%error, "a stream's store reads keep failing; ending it");
            return None;
        }
        tracing::debug!(%error, attempt = self.store_failures, "a stream's store read failed; retrying");
        let wait = Duration::from_millis(100 << self.store_failures.min(5));
        tokio::select! {
            _ = tokio::time::sleep(wait) => self.phase = phase,
            _ = self.shutdown.cancelled() => {}
        }
        None
    }

    /// Where "live from now" starts: after everything committed before this
    /// request, even what the hub has not published yet (a client that
    /// subscribes right after a POST's answer must not get that event).
    fn live_from(&self) -> EventId {
        let committed = *self.store.commit_hints().borrow();
        self.hub.high().max(committed)
    }

    /// A `connection:reset`: the client must resync from a snapshot; the
    /// stream goes on live from now.
    fn reset(&mut self, reason: &str, last: String) -> (&'static str, serde_json::Value) {
        self.cursor = self.live_from();
        let payload = json!({ "reason": reason, "lastEventId": last, "snapshotUrl": self.snapshot_url });
        ("connection:reset", payload)
    }

    /// Attaches to the hub with the stream's current filter; a stream with
    /// a room also gets the room confirmations decided while it replayed.
    fn attach(&mut self) -> (Attach, Vec<Bytes>) {
        let (hub, cursor, on_slow) = (Arc::clone(&self.hub), self.cursor, self.on_slow.clone());
        match &self.room {
            Some(room) => {
                self.filter = room.filter();
                room.attach(|filter| hub.attach(cursor, filter, on_slow))
            }
            None => (hub.attach(cursor, self.filter.clone(), on_slow), Vec::new()),
        }
    }

    async fn catch_up(&mut self) -> Option<Bytes> {
        let (attached, notices) = self.attach();
        match attached {
            Attach::Live {
                backlog,
                subscription,
            } => {
                self.phase = Phase::Live(subscription);
                let notices = notices
                    .into_iter()
                    .map(|bytes| Arc::new(Frame::transient(system_topic(), bytes)));
                self.backlog = notices.chain(backlog).collect();
                self.drain_backlog()
            }
            Attach::Behind { high } => {
                let limit = self.replay_page;
                // Each read looks at a bounded slice of the log, however
                // few events in it match: a sparse filter over millions of
                // events is many short reads, not one that pins the
                // database. Reads wait their turn for one of the node's
                // catch-up permits, in order of arrival.
                let window_end = high.min(self.cursor.saturating_add(REPLAY_WINDOW));
                let page = {
                    let Ok(_permit) = self.catchups.acquire().await else {
                        return None; // closed: the server is stopping
                    };
                    self.store
                        .read_range(self.cursor, window_end, &self.filter, limit)
                        .await
                };
                let page = match page {
                    Ok(page) => page,
                    Err(error) => return self.retry_later(Phase::CatchingUp, error).await,
                };
                self.store_failures = 0;
                self.phase = Phase::CatchingUp;
                ::metrics::counter!(metrics::REPLAYED).increment(page.len() as u64);
                // The whole page framed into one buffer: one write for
                // thousands of events.
                let mut chunk =
                    BytesMut::with_capacity(page.iter().map(|e| e.payload.get().len() + 256).sum());
                let cursor = self.cursor;
                for event in page.iter().filter(|e| e.id > cursor) {
                    let start = chunk.len();
                    frame::write_event(&mut chunk, event);
                    if self.show_tenants {
                        let written = chunk.split_off(start).freeze();
                        chunk.extend_from_slice(&frame::with_tenant(&written, &event.topic));
                    }
                    if self.ends_here(&event.topic, frame::ends_session(event)) {
                        break;
                    }
                }
                if let Some(last) = page.last() {
                    self.cursor = self.cursor.max(last.id);
                }
                self.replay_page = next_replay_page(chunk.len(), page.len());
                if page.len() < limit {
                    // Nothing else matches up to the window's end: jump there.
                    self.cursor = self.cursor.max(window_end);
                }
                if chunk.is_empty() {
                    // A long stretch without a match still shows the client
                    // the stream is alive.
                    return futures::FutureExt::now_or_never(self.heartbeat.tick())
                        .map(|_| Bytes::from_static(PING));
                }
                Some(chunk.freeze())
            }
        }
    }

    async fn live(&mut self, mut subscription: Subscription) -> Option<Bytes> {
        if !self.backlog.is_empty() {
            self.phase = Phase::Live(subscription);
            return self.drain_backlog();
        }
        if self.session.as_ref().is_some_and(|s| s.ended) {
            // Caught up with a session that had already ended: nothing
            // more will come, and the client's next attempt gets 204.
            return None;
        }
        // Shutdown is not watched here: the hub closes every subscription.
        let chunk = tokio::select! {
            biased;
            first = subscription.frames.recv() => {
                // `None`: the hub dropped us for being slow, or the server
                // is shutting down; the client resumes with Last-Event-ID.
                let first = first?;
                if subscription.frames.is_empty() {
                    // The common case: one frame, sent without a copy.
                    if first.is_transient() {
                        Some(first.bytes.clone())
                    } else if first.id <= self.cursor {
                        None
                    } else {
                        self.cursor = first.id;
                        self.ends_here(&first.topic, first.ends_session);
                        Some(self.shown(&first))
                    }
                } else {
                    let mut batch = vec![first];
                    while batch.len() < LIVE_BATCH {
                        match subscription.frames.try_recv() {
                            Ok(frame) => batch.push(frame),
                            Err(_) => break,
                        }
                    }
                    self.write_frames(batch.iter().map(|f| f.as_ref()))
                }
            }
            _ = self.heartbeat.tick() => Some(Bytes::from_static(PING)),
            _ = self.registration.closing.requested() => {
                let reason = self.registration.closing.reason().unwrap_or(CloseReason::ClosedByAdmin);
                return Some(self.closing(reason));
            }
            _ = until_expired(&mut self.expiry) => return Some(self.closing(CloseReason::TokenExpired)),
        };
        self.phase = Phase::Live(subscription);
        chunk
    }

    /// The next part of the ring's backlog, up to about
    /// [`REPLAY_PAGE_BYTES`]: the frames are shared with the ring, but a
    /// chunk is a copy held until the client reads it.
    fn drain_backlog(&mut self) -> Option<Bytes> {
        let mut bytes = 0;
        let mut take = 0;
        for frame in &self.backlog {
            if take > 0 && bytes + frame.bytes.len() > REPLAY_PAGE_BYTES {
                break;
            }
            bytes += frame.bytes.len();
            take += 1;
        }
        let part: Vec<Arc<Frame>> = self.backlog.drain(..take).collect();
        self.write_frames(part.iter().map(|f| f.as_ref()))
    }

    /// Concatenates the frames after the cursor and moves the cursor; `None`
    /// when there is nothing to send.
    fn write_frames<'a>(&mut self, frames: impl Iterator<Item = &'a Frame>) -> Option<Bytes> {
        let mut chunk = BytesMut::new();
        for frame in frames {
            if !frame.is_transient() {
                if frame.id <= self.cursor {
                    continue;
                }
                self.cursor = frame.id;
                chunk.extend_from_slice(&self.shown(frame));
            } else {
                chunk.extend_from_slice(&frame.bytes);
            }
            if self.ends_here(&frame.topic, frame.ends_session) {
                break;
            }
        }
        (!chunk.is_empty()).then(|| chunk.freeze())
    }
}

/// Resolves when the token's expiry timer fires; never without a token.
async fn until_expired(expiry: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match expiry {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_pages_hold_about_half_a_mebibyte() {
        // Small events: the full page.
        assert_eq!(next_replay_page(2000 * 200, 2000), REPLAY_PAGE);
        // 4 KiB events: 128 of them.
        assert_eq!(next_replay_page(128 * 4096, 128), 128);
        // Events at the payload cap: never fewer than 16.
        assert_eq!(next_replay_page(10 * 70_000, 10), 16);
        // An empty page says nothing about sizes.
        assert_eq!(next_replay_page(0, 0), REPLAY_PAGE);
    }
}
