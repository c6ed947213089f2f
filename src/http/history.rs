//! `GET /v1/events/history`: the same events as the stream, as a JSON
//! array, for clients behind proxies that break streaming. With `wait` it
//! is a long-poll: it answers as soon as a matching event is committed.

use std::time::Duration;

use http::header::{HeaderValue, CONTENT_TYPE};
use warp::reply::Response;

use super::error::ApiError;
use super::request::RequestContext;
use super::state::AppState;
use super::stream::read_filter;
use crate::domain::event::{parse_event_id, EventId, StoredEvent};
use crate::domain::topic::TopicFilter;
use crate::fanout::hub::Attach;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;
pub const MAX_WAIT_SECS: f64 = 30.0;

struct HistoryQuery {
    after: Option<EventId>,
    limit: usize,
    wait: Duration,
}

fn parse_query(ctx: &RequestContext) -> Result<HistoryQuery, ApiError> {
    let after = match ctx.query_one("after")? {
        None => None,
        Some(raw) => Some(
            parse_event_id(raw).ok_or_else(|| ApiError::bad_request("after must be a decimal event id"))?,
        ),
    };
    let limit = match ctx.query_one("limit")? {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit must be an integer from 1 to {MAX_LIMIT}"))
            })?,
    };
    let wait = match ctx.query_one("wait")? {
        None => Duration::ZERO,
        Some(raw) => raw
            .parse::<f64>()
            .ok()
            .filter(|s| (0.0..=MAX_WAIT_SECS).contains(s))
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "wait must be a number of seconds from 0 to {MAX_WAIT_SECS}"
                ))
            })?,
    };
    Ok(HistoryQuery { after, limit, wait })
}

pub async fn handle(state: AppState, ctx: RequestContext) -> Response {
    match history(&state, &ctx).await {
        Ok(response) => response,
        Err(error) => error.into_response(&ctx.trace_id),
    }
}

async fn history(state: &AppState, ctx: &RequestContext) -> Result<Response, ApiError> {
    let caller = ctx.caller(&state.keys, true)?;
    let filter = read_filter(ctx, &caller, state.limits.max_topics)?;
    let query = parse_query(ctx)?;
    let bounds = state.store.bounds().await?;
    let after = match query.after {
        None => bounds.pruned_through,
        Some(after) if after < bounds.pruned_through => {
            return Err(ApiError::conflict(format!(
                "events after {after} are no longer retained; resync from a snapshot"
            )))
        }
        Some(after) if after > bounds.head.max(state.hub.high()) => {
            return Err(ApiError::conflict(format!(
                "event id {after} is unknown; resync from a snapshot"
            )))
        }
        Some(after) => after,
    };
    let mut events = state
        .store
        .read_range(after, EventId::MAX, &filter, query.limit)
        .await?;
    if events.is_empty() && !query.wait.is_zero() {
        events = wait_for_events(state, after, &filter, query.limit, query.wait).await?;
    }
    Ok(json_array(&events))
}

/// Waits for the hub to publish a matching event after `after`, then reads
/// it (and any others) from the store.
async fn wait_for_events(
    state: &AppState,
    after: EventId,
    filter: &TopicFilter,
    limit: usize,
    wait: Duration,
) -> Result<Vec<StoredEvent>, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    // Nothing matching exists in (after, cursor].
    let mut cursor = after;
    loop {
        match state.hub.attach(cursor, filter.clone(), None) {
            Attach::Live {
                backlog,
                mut subscription,
            } => {
                if !backlog.is_empty() {
                    return Ok(state.store.read_range(after, EventId::MAX, filter, limit).await?);
                }
                // A frame is only a reason to look: it may be an event the
                // client already has (committed before its request, but
                // reaching the hub after it attached). Keep waiting until
                // the store has something after `after`.
                loop {
                    tokio::select! {
                        frame = subscription.frames.recv() => if frame.is_none() { break },
                        _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
                        _ = state.shutdown.cancelled() => return Ok(Vec::new()),
                    }
                    let events = state.store.read_range(after, EventId::MAX, filter, limit).await?;
                    if !events.is_empty() {
                        return Ok(events);
                    }
                }
            }
            // The cursor is older than the hub's ring: check the store up to
            // where the hub is, then attach from there.
            Attach::Behind { high } => {
                let events = state.store.read_range(cursor, high, filter, limit).await?;
                if !events.is_empty() {
                    return Ok(events);
                }
                cursor = high;
            }
        }
    }
}

fn json_array(events: &[StoredEvent]) -> Response {
    let mut body = String::from("[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&event.envelope_json());
    }
    body.push(']');
    let mut response = Response::new(body.into());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
