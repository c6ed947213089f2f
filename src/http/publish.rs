//! `POST /v1/topics/{topic}/events`: a publisher appends one event to a
//! generic topic, answered after commit with the stored envelope.

use async_trait::async_trait;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use warp::reply::Response;

use super::error::ApiError;
use super::request::{json_response, remember, replayed, Body, RequestContext};
use super::state::AppState;
use crate::domain::event::{EntityVersion, EventType, NewEvent, StoredEvent};
use crate::domain::topic::Topic;
use crate::store::Tx;
use crate::store::{execute, Answer, Idempotent, Remember};
use crate::store::{Command, IdempotencyKey, StoreError};

/// Longest `entityId` accepted: ids of other systems, not documents.
const MAX_ENTITY_ID: usize = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishIn {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default = "empty_object")]
    payload: serde_json::Value,
    /// The entity this event changes; its version is kept per topic.
    #[serde(rename = "entityId")]
    entity_id: Option<String>,
    /// The version the publisher last saw (0: the entity must be new).
    #[serde(rename = "expectedVersion")]
    expected_version: Option<i64>,
}

/// `entityId` / `expectedVersion` of a publish, checked.
struct VersionCheck {
    entity_id: String,
    expected: Option<i64>,
}

impl PublishIn {
    fn version_check(&self) -> Result<Option<VersionCheck>, ApiError> {
        let Some(entity_id) = &self.entity_id else {
            if self.expected_version.is_some() {
                return Err(ApiError::unprocessable("expectedVersion needs an entityId"));
            }
            return Ok(None);
        };
        if entity_id.is_empty()
            || entity_id.chars().count() > MAX_ENTITY_ID
            || entity_id.chars().any(char::is_control)
        {
            return Err(ApiError::unprocessable(format!(
                "entityId must be 1 to {MAX_ENTITY_ID} characters without control characters"
            )));
        }
        if self.expected_version.is_some_and(|v| v < 0) {
            return Err(ApiError::unprocessable("expectedVersion must be 0 or more"));
        }
        Ok(Some(VersionCheck {
            entity_id: entity_id.clone(),
            expected: self.expected_version,
        }))
    }
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
    if topic.is_reserved() {
        let writer = if topic.kind() == "system" {
            "the server itself"
        } else {
            "the live polling API"
        };
        return Err(ApiError::forbidden(format!(
            "`{}:*` topics are written only by {writer}",
            topic.kind()
        )));
    }
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
    if event_type.is_server_only() {
        let domain = event_type.as_str().split(':').next().unwrap_or_default();
        return Err(ApiError::unprocessable(format!(
            "`{domain}:*` event types are sent only by the server"
        )));
    }
    let version_check = input.version_check()?;
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
    let remember: Remember<Published> = Box::new(|published: &Published| {
        published
            .as_ref()
            .ok()
            .map(|event| remember(StatusCode::CREATED, &event.envelope_json()))
    });
    let idempotency = idempotency.map(|key| Idempotent { key, remember });
    let command = Publish {
        event: Some(event),
        check: version_check,
    };
    match execute(state.store.as_ref(), command, idempotency).await? {
        Answer::Fresh(Ok(event)) => Ok(json_response(StatusCode::CREATED, event.envelope_json())),
        Answer::Fresh(Err(conflict)) => Err(conflict.into()),
        Answer::Replayed(remembered) => Ok(replayed(remembered)),
        Answer::KeyReused => Err(ApiError::conflict(
            "this Idempotency-Key was already used with a different request",
        )),
    }
}

/// What a publish comes to: the event as stored, or the version the
/// entity was really at.
type Published = Result<StoredEvent, VersionConflict>;

/// A publish; one naming an entity is compared with the entity's current
/// version and stamped with the next one inside the writer's transaction,
/// so two publishers racing on one version cannot both win, on any node.
struct Publish {
    event: Option<NewEvent>,
    check: Option<VersionCheck>,
}

/// The entity was not at the version the publisher expected.
#[derive(Debug)]
struct VersionConflict {
    entity_id: String,
    expected: i64,
    current: i64,
}

#[async_trait]
impl Command for Publish {
    type Outcome = Published;
    type Decided = Result<(), VersionConflict>;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        let Some(mut event) = self.event.take() else {
            return Err(StoreError::internal("a publish ran twice"));
        };
        let Some(check) = self.check.take() else {
            return Ok((vec![event], Ok(())));
        };
        let topic = event.topic.as_str().to_string();
        let current = tx.entity_version(&topic, &check.entity_id).await?;
        if let Some(expected) = check.expected.filter(|expected| *expected != current) {
            let conflict = VersionConflict {
                entity_id: check.entity_id,
                expected,
                current,
            };
            return Ok((Vec::new(), Err(conflict)));
        }
        let version = current + 1;
        tx.set_entity_version(&topic, &check.entity_id, version).await?;
        event.entity = Some(EntityVersion {
            entity_id: check.entity_id,
            version,
        });
        Ok((vec![event], Ok(())))
    }

    fn outcome(decided: Self::Decided, events: &[StoredEvent]) -> Published {
        decided?;
        // The store hands back exactly the events `run` returned: one.
        Ok(events[0].clone())
    }

    fn touches_tables(&self) -> bool {
        self.check.is_some()
    }

    fn known_event_count(&self) -> Option<usize> {
        // A versioned publish may append nothing (a conflict).
        self.check.is_none().then_some(1)
    }
}

/// 409 `conflict`, with the version the publisher should have expected.
impl From<VersionConflict> for ApiError {
    fn from(conflict: VersionConflict) -> Self {
        let message = format!(
            "entity `{}` is at version {}, not {}",
            conflict.entity_id, conflict.current, conflict.expected
        );
        ApiError::conflict(message)
            .with_field("entityId", json!(conflict.entity_id))
            .with_field("currentVersion", json!(conflict.current))
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
