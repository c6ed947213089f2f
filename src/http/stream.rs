//! `GET /v1/events`: the SSE stream of a set of topics.
//!
//! Each stream is a small state machine: it opens with a `connection:*`
//! frame, replays from the store while its cursor is older than the hub's
//! ring, attaches to the hub (the seam is decided by id, under the hub's
//! lock), then forwards live frames and heartbeats until the client leaves,
//! the server shuts down, or the hub drops it for being too slow.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::HeaderValue;
use serde_json::json;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warp::reply::{Reply, Response};

use super::error::ApiError;
use super::request::RequestContext;
use super::server::ConnectionCloser;
use super::AppState;
use crate::auth::{Caller, Role};
use crate::domain::event::{parse_event_id, EventId};
use crate::domain::polling::events::participant_topic;
use crate::domain::topic::{is_private, Selector, Topic, TopicFilter};
use crate::fanout::frame::{self, Frame, PING};
use crate::fanout::hub::{Attach, Hub, Subscription};
use crate::limits::StreamPermit;
use crate::metrics;
use crate::polling::presence::PresenceGuard;
use crate::rooms::{system_topic, Room, StreamOwner};
use crate::store::{EventStore, StoreError};

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
/// Store reads a stream retries in a row before it ends and leaves the
/// client to resume with Last-Event-ID. A pool briefly exhausted by a burst
/// of replays, or a failover, should not send every stream's client through
/// a reconnect at once.
const STORE_RETRIES: u32 = 5;

/// The `topic` selectors of a read request as a filter for the store (the
/// history endpoint); streams build theirs in their room.
pub fn read_filter(
    ctx: &RequestContext,
    caller: &Caller,
    max_topics: usize,
) -> Result<TopicFilter, ApiError> {
    let selectors = read_selectors(ctx, caller, max_topics)?;
    let filter = TopicFilter::new(selectors, Some(caller.subscribe.clone()));
    Ok(match own_private_topic(caller) {
        Some(_) => filter,
        None => filter.without_private(),
    })
}

/// The private topic a caller may read: a participant's own.
fn own_private_topic(caller: &Caller) -> Option<Topic> {
    match caller.role {
        Some(Role::Participant { participant, .. }) => Some(participant_topic(participant)),
        _ => None,
    }
}

/// The `topic` selectors of a read request, checked against the caller's
/// `subscribe` claims and the private topics.
fn read_selectors(
    ctx: &RequestContext,
    caller: &Caller,
    max_topics: usize,
) -> Result<Vec<Selector>, ApiError> {
    let selectors: Vec<Selector> = ctx
        .query_all("topic")
        .map(|raw| {
            Selector::parse(raw)
                .map(|s| caller.scope_selector(s))
                .map_err(|e| ApiError::bad_request(format!("topic {raw:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    if selectors.is_empty() {
        return Err(ApiError::bad_request("give at least one `topic` query parameter"));
    }
    if selectors.len() > max_topics {
        return Err(ApiError::bad_request(format!(
            "at most {max_topics} topics per request"
        )));
    }
    if let Some(denied) = selectors.iter().find(|s| !caller.may_subscribe(s)) {
        return Err(ApiError::forbidden(format!(
            "the token may not subscribe to `{}`",
            denied.display_name()
        )));
    }
    // A participant's own topic carries its identity: only that
    // participant reads it (its token allows nothing else of the kind).
    // Other tokens are refused it by name, and wildcards leave it out.
    let own_topic = own_private_topic(caller);
    let owns = |s: &Selector| own_topic.as_ref().is_some_and(|t| s.as_str() == t.as_str());
    if let Some(private) = selectors.iter().find(|s| is_private(s.as_str()) && !owns(s)) {
        return Err(ApiError::forbidden(format!(
            "`{private}` is private to its participant: only that participant's token reads it"
        )));
    }
    Ok(selectors)
}

/// A token's personal topic `user:<sub>`, which every stream of that token
/// follows (CONTRACT §4), so a backend can reach the user on all of them.
/// `None` without a `sub`, or when the `sub` is not a valid topic segment.
pub fn personal_topic(caller: &Caller) -> Option<Selector> {
    let sub = caller.subject.as_deref()?;
    if caller.role.is_some() {
        return None; // polling tokens have their own topics
    }
    Selector::parse(&format!("user:{sub}"))
        .ok()
        .filter(|s| s.as_exact().is_some())
        .map(|s| caller.scope_selector(s))
}

/// Where a stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPoint {
    /// No Last-Event-ID: live from now.
    Now,
    /// Replay everything after this id, then live.
    After(EventId),
    /// A Last-Event-ID header that is not an id: treated like an unknown id
    /// (a browser answered with a 4xx would never reconnect).
    Malformed(String),
}

/// The start point of a request: the `Last-Event-ID` header wins over the
/// `lastEventId` query parameter; a malformed query parameter is a 400.
pub fn start_point(ctx: &RequestContext) -> Result<StartPoint, ApiError> {
    let from_query = match ctx.query_one("lastEventId")? {
        None => None,
        Some(raw) => Some(
            parse_event_id(raw)
                .ok_or_else(|| ApiError::bad_request("lastEventId must be a decimal event id"))?,
        ),
    };
    let header = ctx
        .headers
        .get("last-event-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    Ok(match header.filter(|h| !h.trim().is_empty()) {
        Some(raw) => match parse_event_id(raw.trim()) {
            Some(id) => StartPoint::After(id),
            None => StartPoint::Malformed(raw.chars().take(64).collect()),
        },
        None => from_query.map_or(StartPoint::Now, StartPoint::After),
    })
}

pub async fn handle(state: AppState, ctx: RequestContext, closer: Option<ConnectionCloser>) -> Response {
    match open_topics(&state, &ctx, closer.map(|c| c.0)) {
        Ok(stream) => sse_response(stream),
        Err(error) => error.into_response(&ctx.trace_id),
    }
}

/// Authorizes a `GET /v1/events` request and opens its stream; `on_slow`
/// is cancelled if the hub drops the stream for falling behind.
pub fn open_topics(
    state: &AppState,
    ctx: &RequestContext,
    on_slow: Option<CancellationToken>,
) -> Result<EventStream, ApiError> {
    let caller = ctx.caller(&state.keys, true)?;
    let mut selectors = read_selectors(ctx, &caller, state.limits.max_topics)?;
    let start = start_point(ctx)?;
    let present = match ctx.query_one("presence")? {
        None | Some("false" | "0") => false,
        Some("true" | "1") => true,
        Some(_) => return Err(ApiError::bad_request("presence must be true or false")),
    };
    let snapshot_url = history_url(&selectors);
    let permit = state.limits.streams.acquire(&caller.identity).ok_or_else(|| {
        ApiError::rate_limited(
            format!(
                "this token already holds {} open streams",
                state.limits.streams.limit()
            ),
            Duration::from_secs(1),
        )
    })?;
    let address_permit = address_permit(state, ctx)?;
    let mut allowed = caller.subscribe.clone();
    if let Some(personal) = personal_topic(&caller) {
        if !selectors.contains(&personal) {
            selectors.push(personal.clone());
        }
        allowed.push(personal);
    }
    let own_private = own_private_topic(&caller).map(|t| t.as_str().to_string());
    let mut stream = EventStream::new(state, TopicFilter::everything(), start, snapshot_url, on_slow);
    let room = state.rooms.register(
        StreamOwner {
            connection_id: stream.connection_id,
            identity: caller.identity.clone(),
            user_id: caller.role.is_none().then(|| caller.subject.clone()).flatten(),
            present,
            user_agent: ctx.header("user-agent").map(|ua| ua.chars().take(256).collect()),
            allowed,
            own_private,
        },
        selectors,
    );
    stream.filter = room.filter();
    stream.room = Some(room);
    stream.permits = vec![permit, address_permit];
    Ok(stream)
}

/// One of the open-stream permits of the request's client address (see
/// `--streams-per-address`).
pub fn address_permit(state: &AppState, ctx: &RequestContext) -> Result<StreamPermit, ApiError> {
    let address = ctx
        .client
        .map_or_else(|| "unknown".to_string(), |a| a.to_string());
    state.limits.streams_per_address.acquire(&address).ok_or_else(|| {
        ApiError::rate_limited(
            format!(
                "this address already holds {} open streams",
                state.limits.streams_per_address.limit()
            ),
            Duration::from_secs(1),
        )
    })
}

/// The next replay page's size: as many events as fit in
/// [`REPLAY_PAGE_BYTES`] at the size the last page's events had.
fn next_replay_page(framed_bytes: usize, events: usize) -> usize {
    if events == 0 {
        return REPLAY_PAGE;
    }
    let per_event = (framed_bytes / events).max(1);
    (REPLAY_PAGE_BYTES / per_event).clamp(16, REPLAY_PAGE)
}

/// The history URL for the same topics: where a reset client resyncs.
fn history_url(selectors: &[Selector]) -> String {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(selectors.iter().map(|s| ("topic", s.display_name())))
        .finish();
    format!("/v1/events/history?{query}")
}

/// Wraps a stream in the response headers every SSE stream carries.
pub fn sse_response(stream: EventStream) -> Response {
    let chunks = futures::stream::unfold(stream, |mut stream| async move {
        stream
            .next_chunk()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), stream))
    });
    // warp wants a `Sync` stream; the stream is only ever polled through
    // `&mut`, which is what SyncStream makes explicit.
    let mut response = warp::reply::stream(sync_wrapper::SyncStream::new(chunks)).into_response();
    let headers = response.headers_mut();
    for (name, value) in SSE_HEADERS {
        headers.insert(*name, HeaderValue::from_static(value));
    }
    response
}

/// The headers of every SSE response, whichever path serves it.
/// `X-Accel-Buffering: no` keeps nginx from buffering the stream.
pub const SSE_HEADERS: &[(&str, &str)] = &[
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
];

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
}

impl Drop for EventStream {
    fn drop(&mut self) {
        ::metrics::gauge!(metrics::CONNECTIONS).decrement(1.0);
    }
}

impl EventStream {
    pub fn new(
        state: &AppState,
        filter: TopicFilter,
        start: StartPoint,
        snapshot_url: String,
        on_slow: Option<CancellationToken>,
    ) -> Self {
        ::metrics::gauge!(metrics::CONNECTIONS).increment(1.0);
        let every = state.streams.heartbeat;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        EventStream {
            store: Arc::clone(&state.store),
            hub: Arc::clone(&state.hub),
            filter,
            phase: Phase::Opening(start),
            cursor: 0,
            replay_page: FIRST_REPLAY_PAGE,
            backlog: VecDeque::new(),
            connection_id: Uuid::new_v4(),
            snapshot_url,
            retry: state.streams.retry,
            heartbeat,
            shutdown: state.shutdown.clone(),
            on_slow,
            _presence: None,
            room: None,
            permits: Vec::new(),
            store_failures: 0,
        }
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
                    let count = match self.store.count_range(last, bounds.head, &self.filter).await {
                        Ok(count) => count,
                        Err(error) => return self.retry_later(retry, error).await,
                    };
                    self.cursor = last;
                    let payload = json!({
                        "connectionId": connection_id,
                        "timestamp": crate::domain::event::format_timestamp(&chrono::Utc::now()),
                        "replayFrom": last.to_string(),
                        "replayCount": count,
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
                let page = match self
                    .store
                    .read_range(self.cursor, high, &self.filter, limit)
                    .await
                {
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
                for event in page.iter().filter(|e| e.id > self.cursor) {
                    frame::write_event(&mut chunk, event);
                }
                if let Some(last) = page.last() {
                    self.cursor = self.cursor.max(last.id);
                }
                self.replay_page = next_replay_page(chunk.len(), page.len());
                if page.len() < limit {
                    // Nothing else matches up to `high`: jump there.
                    self.cursor = self.cursor.max(high);
                }
                (!chunk.is_empty()).then(|| chunk.freeze())
            }
        }
    }

    async fn live(&mut self, mut subscription: Subscription) -> Option<Bytes> {
        if !self.backlog.is_empty() {
            self.phase = Phase::Live(subscription);
            return self.drain_backlog();
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
                        Some(first.bytes.clone())
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
            }
            chunk.extend_from_slice(&frame.bytes);
        }
        (!chunk.is_empty()).then(|| chunk.freeze())
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
