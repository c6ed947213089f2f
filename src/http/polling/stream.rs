//! `GET /v1/sessions/{id}/events`: the session's topic, plus the caller's
//! own topic with a participant token, or the presenter's topic (withheld
//! results) with a presenter token. No token is needed to watch.
//!
//! The stream ends right after the session's `session:ended`; a client
//! that has seen it (or never connected) and asks again gets `204 No
//! Content`, which makes `EventSource` stop.

use tokio_util::sync::CancellationToken;
use warp::reply::Response;

use super::super::connections::ConnectionInfo;
use super::super::error::ApiError;
use super::super::request::RequestContext;
use super::super::state::AppState;
use super::super::stream::{address_permit, sse_response, start_point, EventStream, StartPoint};
use super::parse::{parse_session_id, role_of};
use super::render;
use crate::auth::Role;
use crate::domain::event::EventId;
use crate::domain::polling::events::{participant_topic, presenter_topic, session_topic};
use crate::domain::polling::model::SessionStatus;
use crate::domain::topic::{Selector, TopicFilter};
use crate::polling::queries::GetSessionState;
use crate::polling::Stamp;

/// `GET /v1/sessions/{id}/events`
pub async fn session_stream(
    raw_session: String,
    state: AppState,
    ctx: RequestContext,
    connection: Option<ConnectionInfo>,
) -> Response {
    match open_session_stream(&raw_session, &state, &ctx, connection.map(|c| c.closer)).await {
        Ok(stream) => sse_response(stream),
        Err(refusal) => refusal,
    }
}

/// Whether a client reconnecting to an ended session has events it has
/// not seen (its `session:ended` among them): a fresh client, or one whose
/// last event is the latest, has not.
async fn missed_anything(state: &AppState, start: &StartPoint, filter: &TopicFilter) -> bool {
    let StartPoint::After(last) = start else {
        return false;
    };
    match state.store.read_range(*last, EventId::MAX, filter, 1).await {
        Ok(events) => !events.is_empty(),
        // Unsure: serve the stream, which replays whatever there is.
        Err(_) => true,
    }
}

/// Authorizes a session stream request and opens its stream, or renders
/// why not (204/401/403/404/503…).
pub async fn open_session_stream(
    raw_session: &str,
    state: &AppState,
    ctx: &RequestContext,
    on_slow: Option<CancellationToken>,
) -> Result<EventStream, Response> {
    let result = async {
        let session_id = parse_session_id(raw_session)?;
        let caller = match ctx.bearer(true) {
            Err(crate::auth::AuthError::Missing) => None,
            _ => {
                let caller = ctx.caller(&state.keys, true)?;
                if role_of(&caller)?.session() != session_id {
                    return Err(ApiError::forbidden("this token belongs to another session"));
                }
                Some(caller)
            }
        };
        let role = caller.as_ref().and_then(|c| c.role);
        let query = GetSessionState {
            session_id,
            stamp: Stamp::new(ctx.trace_id.clone()),
        };
        let ended = match state.polling.query(query).await {
            Ok(Ok(status)) => status == SessionStatus::Ended,
            Ok(Err(refusal)) => return Ok(Err(render::refusal(&refusal).into_response(&ctx.trace_id))),
            // The stream itself retries the store; let it try.
            Err(_) => false,
        };
        let start = start_point(ctx)?;
        let mut topics = vec![Selector::exact(&session_topic(session_id))];
        match role {
            Some(Role::Participant { participant, .. }) => {
                topics.push(Selector::exact(&participant_topic(participant)))
            }
            // Results the audience may not see yet reach the presenter here.
            Some(Role::Presenter { .. }) => topics.push(Selector::exact(&presenter_topic(session_id))),
            None => {}
        }
        let filter = TopicFilter::new(topics, None);
        if ended && !missed_anything(state, &start, &filter).await {
            // Over, and the client has seen its end: 204 tells EventSource
            // to stop reconnecting.
            let mut response = Response::new(Default::default());
            *response.status_mut() = http::StatusCode::NO_CONTENT;
            return Ok(Err(response));
        }
        let permit = address_permit(state, ctx)?;
        let guard = match role {
            Some(Role::Participant { participant, .. }) if !ended => {
                Some(state.polling.presence().opened(session_id, participant))
            }
            _ => None,
        };
        let snapshot_url = format!("/v1/sessions/{session_id}");
        let token = caller.as_ref().map(|c| &c.token);
        Ok(Ok(EventStream::new(
            state,
            filter,
            start,
            snapshot_url,
            on_slow,
            token,
        )
        .with_presence(guard)
        .with_permit(permit)
        .ending_with_session(session_topic(session_id), ended)))
    }
    .await;
    match result {
        Ok(opened) => opened,
        Err(error) => Err(error.into_response(&ctx.trace_id)),
    }
}
