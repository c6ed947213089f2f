//! `POST /v1/topics/{topic}/events`: a publisher appends one event to a
//! generic topic, answered after commit with the stored envelope. The
//! handler parses, authorizes and calls [`crate::topics::publish`]; the
//! statuses of its outcomes are decided here.

use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use warp::reply::Response;

use super::error::ApiError;
use super::idempotency::{idempotency_key, remember, replayed};
use super::request::{json_response, Body, RequestContext};
use super::state::AppState;
use crate::domain::event::EventType;
use crate::domain::topic::Topic;
use crate::store::{Answer, Idempotent, Remember};
use crate::topics::outcome::{PublishOutcome, PublishRejection};
use crate::topics::publish::{publish as run_publish, PublishRequest};
use crate::topics::reserved;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishIn {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default = "empty_object")]
    payload: serde_json::Value,
    #[serde(rename = "entityId")]
    entity_id: Option<String>,
    #[serde(rename = "expectedVersion")]
    expected_version: Option<i64>,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

pub async fn handle(state: AppState, raw_topic: String, ctx: RequestContext, body: Body) -> Response {
    match publish(&state, &raw_topic, &ctx, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(&ctx.trace_id),
    }
}

async fn publish(
    state: &AppState,
    raw_topic: &str,
    ctx: &RequestContext,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = ctx.caller(&state.keys, false)?;
    if let Err(wait) = state.limits.publish.check(&caller.identity) {
        return Err(ApiError::rate_limited(
            "too many publishes from this token; slow down",
            wait,
        ));
    }
    let topic_name = percent_encoding::percent_decode_str(raw_topic).decode_utf8_lossy();
    let topic = Topic::parse(&topic_name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    reserved::check_topic(&topic)?;
    // A tenant's token names topics inside its tenant, whatever it writes.
    let topic = caller.scope_topic(topic);
    if !caller.may_publish(&topic) {
        return Err(ApiError::forbidden(format!(
            "the token may not publish to `{}`",
            topic.display_name()
        )));
    }
    ctx.require_json()?;
    let body = body.read().await?;
    let input: PublishIn = ctx.json(&body)?;
    let event_type = EventType::parse(&input.event_type).map_err(ApiError::unprocessable)?;
    let route = format!("POST /v1/topics/{topic}/events");
    let command = PublishRequest {
        topic,
        event_type,
        payload: input.payload,
        entity_id: input.entity_id,
        expected_version: input.expected_version,
        trace_id: ctx.trace_id.clone(),
    }
    .check()?;
    let idempotency = idempotency_key(ctx, &caller.identity, &route, &body)?;
    let remember: Remember<PublishOutcome> = Box::new(|outcome: &PublishOutcome| {
        outcome
            .as_ref()
            .ok()
            .map(|published| remember(StatusCode::CREATED, &published.event.envelope_json()))
    });
    let idempotency = idempotency.map(|key| Idempotent { key, remember });
    match run_publish(state.store.as_ref(), command, idempotency).await? {
        Answer::Fresh(Ok(published)) => Ok(json_response(
            StatusCode::CREATED,
            published.event.envelope_json(),
        )),
        Answer::Fresh(Err(rejection)) => Err(rejection.into()),
        Answer::Replayed(remembered) => Ok(replayed(remembered)),
        Answer::KeyReused => Err(ApiError::conflict(
            "this Idempotency-Key was already used with a different request",
        )),
    }
}

/// The contract's error for a refused publish: 403 for a reserved topic,
/// 422 for what the request holds, 409 `conflict` with the version the
/// publisher should have expected.
impl From<PublishRejection> for ApiError {
    fn from(rejection: PublishRejection) -> Self {
        let message = rejection.message();
        match rejection {
            PublishRejection::ReservedTopic { .. } => ApiError::forbidden(message),
            PublishRejection::ServerOnlyEventType { .. }
            | PublishRejection::VersionWithoutEntity
            | PublishRejection::BadEntityId
            | PublishRejection::NegativeVersion
            | PublishRejection::PayloadNotObject => ApiError::unprocessable(message),
            PublishRejection::VersionConflict {
                entity_id, current, ..
            } => ApiError::conflict(message)
                .with_field("entityId", json!(entity_id))
                .with_field("currentVersion", json!(current)),
        }
    }
}
