//! `POST /v1/topics/{topic}/events`: a publisher appends one event to a
//! generic topic, answered after commit with the stored envelope.

use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use warp::reply::Response;

use super::error::ApiError;
use super::request::{stored, RequestContext};
use super::AppState;
use crate::domain::event::{EventType, NewEvent};
use crate::domain::topic::Topic;
use crate::store::{AppendOutcome, AppendRequest, IdempotencyKey, StoredResponse};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishIn {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default = "empty_object")]
    payload: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

pub async fn handle(
    state: AppState,
    raw_topic: String,
    ctx: RequestContext,
    body: Result<Bytes, ApiError>,
) -> Response {
    match publish(&state, &raw_topic, &ctx, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(&ctx.trace_id),
    }
}

async fn publish(
    state: &AppState,
    raw_topic: &str,
    ctx: &RequestContext,
    body: Result<Bytes, ApiError>,
) -> Result<Response, ApiError> {
    let caller = ctx.caller(&state.keys, false)?;
    let topic_name = percent_encoding::percent_decode_str(raw_topic).decode_utf8_lossy();
    let topic = Topic::parse(&topic_name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if topic.is_reserved() {
        return Err(ApiError::forbidden(format!(
            "`{}:*` topics are written only by the live polling API",
            topic.kind()
        )));
    }
    if !caller.may_publish(&topic) {
        return Err(ApiError::forbidden(format!(
            "the token may not publish to `{topic}`"
        )));
    }
    ctx.require_json()?;
    let body = body?;
    let input: PublishIn = ctx.json(&body)?;
    let event_type = EventType::parse(&input.event_type).map_err(ApiError::unprocessable)?;
    if event_type.as_str().starts_with("connection:") {
        return Err(ApiError::unprocessable(
            "`connection:*` types are the server's own stream frames",
        ));
    }
    let payload = input.payload;
    if !payload.is_object() {
        return Err(ApiError::unprocessable("payload must be a JSON object"));
    }
    let idempotency = idempotency_key(
        ctx,
        &caller.identity,
        &format!("POST /v1/topics/{topic}/events"),
        &body,
    )?;
    let event = NewEvent::new(topic, event_type, ctx.trace_id.clone(), &payload);
    let respond = Box::new(|events: &[crate::domain::event::StoredEvent]| StoredResponse {
        status: StatusCode::CREATED.as_u16(),
        body: events[0].envelope_json(),
    });
    let request = AppendRequest::events(vec![event], respond, idempotency);
    match state.store.append(request).await? {
        AppendOutcome::Committed { response, .. } | AppendOutcome::Replayed(response) => Ok(stored(response)),
        AppendOutcome::KeyReused => Err(ApiError::conflict(
            "this Idempotency-Key was already used with a different request",
        )),
    }
}

/// The request's `Idempotency-Key`, scoped to the caller and fingerprinted
/// with the route and the body: the same key on another route or with
/// another body is a conflict, not a new request.
pub fn idempotency_key(
    ctx: &RequestContext,
    identity: &str,
    route: &str,
    body: &[u8],
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(raw) = ctx.headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| (0x20..=0x7e).contains(&b)))
        .ok_or_else(|| {
            ApiError::bad_request("Idempotency-Key must be 1 to 255 printable ASCII characters")
        })?;
    let mut fingerprint = Sha256::new();
    fingerprint.update(route.as_bytes());
    fingerprint.update([0]);
    fingerprint.update(body);
    Ok(Some(IdempotencyKey {
        scope: identity.to_string(),
        key: key.to_string(),
        fingerprint: hex::encode(fingerprint.finalize()),
    }))
}
