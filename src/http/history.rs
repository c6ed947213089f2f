//! `GET /v1/events/history`: the same events as the stream, as a JSON
//! array, for clients behind proxies that break streaming. With `wait` it
//! is a long-poll: it answers as soon as a matching event is committed.
//! The handler parses and authorizes; [`crate::topics::history`] reads.

use std::time::Duration;

use http::header::{HeaderValue, CONTENT_TYPE};
use warp::reply::Response;

use super::error::ApiError;
use super::request::RequestContext;
use super::state::AppState;
use super::stream::read_filter;
use crate::domain::event::{parse_event_id, StoredEvent};
use crate::topics::history::{read, HistoryQuery};

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;
pub const MAX_WAIT_SECS: f64 = 30.0;

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
    match read(state.store.as_ref(), &state.hub, &state.shutdown, &filter, &query).await? {
        Ok(events) => Ok(json_array(&events)),
        Err(rejection) => Err(ApiError::conflict(rejection.message())),
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
