//! `POST /v1/connections/{connectionId}/topics` and
//! `DELETE /v1/connections/{connectionId}/topics/{topic}`: join and leave
//! topics on an open stream without reconnecting (CONTRACT §4), with the
//! token that opened it. The stream itself confirms each change with a
//! `system:subscribed` / `system:unsubscribed` frame.

use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;
use warp::reply::{Reply, Response};

use super::error::ApiError;
use super::request::Body;
use super::request::RequestContext;
use super::state::AppState;
use crate::auth::Caller;
use crate::domain::topic::Selector;
use crate::rooms::{Op, RoomChange, RoomError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinIn {
    topic: String,
}

pub async fn join(state: AppState, connection: String, ctx: RequestContext, body: Body) -> Response {
    let outcome = async {
        let caller = ctx.caller(&state.keys, false)?;
        ctx.require_json()?;
        let input: JoinIn = ctx.json(&body.read().await?)?;
        change(&state, &caller, &connection, &input.topic, Op::Join).await
    };
    outcome
        .await
        .unwrap_or_else(|error| error.into_response(&ctx.trace_id))
}

pub async fn leave(state: AppState, connection: String, topic: String, ctx: RequestContext) -> Response {
    let topic = percent_encoding::percent_decode_str(&topic)
        .decode_utf8_lossy()
        .into_owned();
    let outcome = async {
        let caller = ctx.caller(&state.keys, false)?;
        change(&state, &caller, &connection, &topic, Op::Leave).await
    };
    outcome
        .await
        .unwrap_or_else(|error| error.into_response(&ctx.trace_id))
}

async fn change(
    state: &AppState,
    caller: &Caller,
    raw_connection: &str,
    raw_topic: &str,
    op: Op,
) -> Result<Response, ApiError> {
    let selector = Selector::parse(raw_topic)
        .map(|s| caller.scope_selector(s))
        .map_err(|e| ApiError::bad_request(format!("topic {raw_topic:?}: {e}")))?;
    if op == Op::Join && !caller.may_subscribe(&selector) {
        return Err(ApiError::forbidden(format!(
            "the token may not subscribe to `{raw_topic}`"
        )));
    }
    let connection_id = parse_connection(raw_connection)?;
    let change = on_stream(state, &caller.identity, connection_id, op, Some(selector)).await?;
    Ok(reply(connection_id, &change))
}

/// Not a UUID: it names no connection, like an unknown UUID.
pub fn parse_connection(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| unknown_connection())
}

/// Applies `op` to the stream, on this node if it holds it, else on the
/// node that does (over the cluster bus).
pub async fn on_stream(
    state: &AppState,
    identity: &str,
    connection_id: Uuid,
    op: Op,
    selector: Option<Selector>,
) -> Result<RoomChange, ApiError> {
    let local = state
        .rooms
        .apply_op(op, connection_id, identity, selector.clone())
        .await;
    match local {
        Err(RoomError::UnknownConnection) => state
            .cluster
            .change_room(connection_id, identity, op, selector.as_ref())
            .await
            .ok_or_else(unknown_connection)?,
        other => other,
    }
    .map_err(room_error)
}

fn unknown_connection() -> ApiError {
    ApiError::not_found("no open stream has this connectionId")
}

pub fn room_error(error: RoomError) -> ApiError {
    match error {
        RoomError::UnknownConnection => unknown_connection(),
        RoomError::NotOwner => ApiError::forbidden("this stream was opened with another token"),
        RoomError::NotAllowed => ApiError::forbidden("the stream's token may not read this topic"),
        RoomError::TooManyTopics(max) => ApiError::conflict(format!("a stream follows at most {max} topics")),
        RoomError::LastTopic => ApiError::conflict("a stream follows at least one topic; close it instead"),
    }
}

fn reply(connection_id: Uuid, change: &RoomChange) -> Response {
    let body = json!({
        "connectionId": connection_id.to_string(),
        "topics": change.topics,
        "changed": change.changed,
    });
    let mut response = warp::reply::json(&body).into_response();
    *response.status_mut() = StatusCode::OK;
    response
}
