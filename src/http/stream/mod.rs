//! `GET /v1/events`: the SSE stream of a set of topics, and what every
//! stream shares: where it starts (`Last-Event-ID`), which topics a caller
//! may read, its response headers.
//!
//! The stream itself is a state machine in [`event_stream`]: it opens with
//! a `connection:*` frame, replays from the store while its cursor is older
//! than the hub's ring, attaches to the hub, then forwards live frames and
//! heartbeats until the client leaves, the server shuts down, the hub
//! drops it for being too slow, or it is closed (token expiry, revocation,
//! an admin, the end of its session).

mod event_stream;
mod start;

pub use event_stream::EventStream;
pub use start::{start_point, StartPoint};

use std::convert::Infallible;
use std::time::Duration;

use http::header::HeaderValue;
use tokio_util::sync::CancellationToken;
use warp::reply::{Reply, Response};

use super::connections::ConnectionInfo;
use super::error::ApiError;
use super::request::RequestContext;
use super::state::AppState;
use crate::auth::{Caller, Role};
use crate::domain::polling::events::participant_topic;
use crate::domain::topic::{is_private, Selector, Topic, TopicFilter};
use crate::limits::StreamPermit;
use crate::rooms::StreamOwner;

/// The `topic` selectors of a read request as a filter for the store (the
/// history endpoint); streams build theirs in their room.
pub fn read_filter(
    ctx: &RequestContext,
    caller: &Caller,
    max_topics: usize,
) -> Result<TopicFilter, ApiError> {
    let selectors = read_selectors(ctx, caller, max_topics)?;
    let mut allowed = caller.subscribe.clone();
    allowed.extend(personal_topic(caller));
    let filter = TopicFilter::new(selectors, Some(allowed));
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
    // The caller's personal topic needs no claim: its streams follow it
    // anyway, so naming it alone (or reading its history) is allowed too.
    let personal = personal_topic(caller);
    let may_read = |s: &Selector| caller.may_subscribe(s) || personal.as_ref() == Some(s);
    if let Some(denied) = selectors.iter().find(|s| !may_read(s)) {
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

pub async fn handle(state: AppState, ctx: RequestContext, closer: Option<ConnectionInfo>) -> Response {
    match open_topics(&state, &ctx, closer.map(|c| c.closer)) {
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
    let mut stream = EventStream::new(
        state,
        TopicFilter::everything(),
        start,
        snapshot_url,
        on_slow,
        Some(&caller.token),
    );
    if let Some(role) = caller.role {
        // A polling token's stream ends with its session.
        let topic = crate::domain::polling::events::session_topic(role.session());
        stream = stream.ending_with_session(topic, false);
    }
    let room = state.rooms.register(
        StreamOwner {
            connection_id: stream.connection_id(),
            identity: caller.identity.clone(),
            user_id: caller.role.is_none().then(|| caller.subject.clone()).flatten(),
            present,
            user_agent: ctx.header("user-agent").map(|ua| ua.chars().take(256).collect()),
            allowed,
            own_private,
        },
        selectors,
    );
    Ok(stream
        .with_room(room)
        .with_permit(permit)
        .with_permit(address_permit))
}

/// One of the open-stream permits of the request's client address (see
/// `--streams-per-address`); none on a connection admitted past the node's
/// cap, which serves short requests only.
pub fn address_permit(state: &AppState, ctx: &RequestContext) -> Result<StreamPermit, ApiError> {
    if ctx.headroom {
        return Err(ApiError::unavailable(
            "this node holds all the connections it can; retry shortly",
        ));
    }
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
