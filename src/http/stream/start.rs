//! Where a stream starts: from now, or after the `Last-Event-ID` it
//! resumes from.

use super::super::error::ApiError;
use super::super::request::RequestContext;
use crate::domain::event::{parse_event_id, EventId};

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
