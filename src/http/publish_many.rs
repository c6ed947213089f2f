//! `POST /v1/events`: a publisher appends several events, on any topics
//! its token may write, in one commit with consecutive ids, or none of
//! them. Each item is parsed, authorized and checked as a single publish
//! is (`publish.rs`); a refusal names the item by its `index`.

use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use warp::reply::Response;

use super::error::ApiError;
use super::idempotency::{idempotency_key, remember, replayed};
use super::request::{json_response, Body, RequestContext};
use super::state::AppState;
use crate::auth::Caller;
use crate::domain::event::{EventType, StoredEvent};
use crate::domain::topic::Topic;
use crate::store::{Answer, Idempotent, Remember};
use crate::topics::publish::{Publish, PublishRequest};
use crate::topics::publish_many::{publish_many, ManyOutcome, ManyRejection, PublishMany, MAX_EVENTS};
use crate::topics::reserved;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManyIn {
    events: Vec<ItemIn>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemIn {
    topic: String,
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
    json!({})
}

/// `POST /v1/events`
pub async fn handle(state: AppState, ctx: RequestContext, body: Body) -> Response {
    match publish(&state, &ctx, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(&ctx.trace_id),
    }
}

async fn publish(state: &AppState, ctx: &RequestContext, body: Body) -> Result<Response, ApiError> {
    let caller = ctx.caller(&state.keys, false)?;
    ctx.require_json()?;
    let body = body.read().await?;
    let input: ManyIn = ctx.json(&body)?;
    if !(1..=MAX_EVENTS).contains(&input.events.len()) {
        return Err(ApiError::unprocessable(format!(
            "events: give 1 to {MAX_EVENTS} events, not {}",
            input.events.len()
        )));
    }
    // Each event spends the token's publish budget, as one request would.
    for _ in 0..input.events.len() {
        if let Err(wait) = state.limits.publish.check(&caller.identity) {
            return Err(ApiError::rate_limited(
                "too many publishes from this token; slow down",
                wait,
            ));
        }
    }
    let mut items = Vec::with_capacity(input.events.len());
    let mut versioned = 0;
    for (index, item) in input.events.into_iter().enumerate() {
        versioned += usize::from(item.entity_id.is_some());
        items.push(checked(&caller, ctx, item).map_err(|e| at(index, e))?);
    }
    let Some(command) = PublishMany::new(items, versioned) else {
        return Err(ApiError::unprocessable("events: nothing to publish"));
    };
    let idempotency = idempotency_key(ctx, &caller.identity, "POST /v1/events", &body)?;
    let remember: Remember<ManyOutcome> = Box::new(|outcome: &ManyOutcome| {
        outcome
            .as_ref()
            .ok()
            .map(|events| remember(StatusCode::CREATED, &rendered(events)))
    });
    let idempotency = idempotency.map(|key| Idempotent { key, remember });
    match publish_many(state.store.as_ref(), command, idempotency).await? {
        Answer::Fresh(Ok(events)) => Ok(json_response(StatusCode::CREATED, rendered(&events))),
        Answer::Fresh(Err(ManyRejection { index, rejection })) => Err(at(index, rejection.into())),
        Answer::Replayed(remembered) => Ok(replayed(remembered)),
        Answer::KeyReused => Err(ApiError::conflict(
            "this Idempotency-Key was already used with a different request",
        )),
    }
}

/// One item as a single publish would check it: topic, reserved topics,
/// the token's right to publish there, event type, version, payload.
fn checked(caller: &Caller, ctx: &RequestContext, item: ItemIn) -> Result<Publish, ApiError> {
    let topic = Topic::parse(&item.topic).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    reserved::check_topic(&topic)?;
    let topic = caller.scope_topic(topic);
    if !caller.may_publish(&topic) {
        return Err(ApiError::forbidden(format!(
            "the token may not publish to `{}`",
            topic.display_name()
        )));
    }
    let event_type = EventType::parse(&item.event_type).map_err(ApiError::unprocessable)?;
    Ok(PublishRequest {
        topic,
        event_type,
        payload: item.payload,
        entity_id: item.entity_id,
        expected_version: item.expected_version,
        trace_id: ctx.trace_id.clone(),
    }
    .check()?)
}

/// An item's error, saying which item (`index`, from 0) and in its message.
fn at(index: usize, error: ApiError) -> ApiError {
    error
        .prefixed(&format!("events[{index}]: "))
        .with_field("index", json!(index))
}

/// `{"events": [envelope, …]}`, the envelopes as the stream sends them.
fn rendered(events: &[StoredEvent]) -> String {
    let envelopes: Vec<String> = events.iter().map(StoredEvent::envelope_json).collect();
    format!("{{\"events\":[{}]}}", envelopes.join(","))
}
