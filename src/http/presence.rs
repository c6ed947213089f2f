//! `GET /v1/topics/{topic}/presence` (who is on a topic, across nodes) and
//! `POST /v1/presence/heartbeat` (a client refreshing its stream's
//! `lastSeen`). Who is present, and the `presence:update` events, are
//! `crate::topics::presence`.

use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use warp::reply::{Reply, Response};

use super::error::ApiError;
use super::request::Body;
use super::request::RequestContext;
use super::rooms::{on_stream, parse_connection};
use super::state::AppState;
use crate::domain::event::format_timestamp;
use crate::domain::topic::{Selector, Topic};
use crate::rooms::Op;
use crate::topics::presence;

pub async fn list(state: AppState, raw_topic: String, ctx: RequestContext) -> Response {
    present(&state, &raw_topic, &ctx)
        .await
        .unwrap_or_else(|error| error.into_response(&ctx.trace_id))
}

async fn present(state: &AppState, raw_topic: &str, ctx: &RequestContext) -> Result<Response, ApiError> {
    let caller = ctx.caller(&state.keys, true)?;
    let name = percent_encoding::percent_decode_str(raw_topic).decode_utf8_lossy();
    let topic = Topic::parse(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    presence::check_listable(&topic).map_err(|rejection| ApiError::forbidden(rejection.message()))?;
    let topic = caller.scope_topic(topic);
    if !caller.may_subscribe(&Selector::exact(&topic)) {
        return Err(ApiError::forbidden(format!(
            "the token may not subscribe to `{}`",
            topic.display_name()
        )));
    }
    let list = presence::present(&state.rooms, &state.cluster, &topic).await;
    let body = json!({
        "topic": topic.display_name(),
        "connections": list.present.len(),
        "users": list.users,
        "present": list.present,
    });
    Ok(warp::reply::json(&body).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HeartbeatIn {
    connection_id: String,
}

pub async fn heartbeat(state: AppState, ctx: RequestContext, body: Body) -> Response {
    let outcome = async {
        let caller = ctx.caller(&state.keys, false)?;
        ctx.require_json()?;
        let input: HeartbeatIn = ctx.json(&body.read().await?)?;
        let connection_id = parse_connection(&input.connection_id)?;
        on_stream(&state, &caller.identity, connection_id, Op::Touch, None).await?;
        let body = json!({
            "connectionId": connection_id.to_string(),
            "lastSeen": format_timestamp(&Utc::now()),
        });
        Ok::<_, ApiError>(warp::reply::json(&body).into_response())
    };
    outcome
        .await
        .unwrap_or_else(|error| error.into_response(&ctx.trace_id))
}
