//! `/v1/webhooks`: the admin's webhooks (create, list, read, change,
//! delete, replay), with the admin key like `/v1/admin/*`. Parses and
//! renders only: the rules are in `crate::webhooks`.
//!
//! Event ids are strings here as everywhere in the API (`cursor`, `head`,
//! `afterId`). The secret is shown once, when it is set (create, or a
//! PATCH that gives a new one); never in a list or a read. A PATCH's new
//! secret signs beside the old one for a day (`previousSecretExpiresAt`)
//! unless `dropPreviousSecret` ends that.

use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;
use warp::reply::Response;

use super::admin::require_admin;
use super::error::ApiError;
use super::request::{json_response, Body, RequestContext};
use super::state::AppState;
use crate::domain::event::{format_timestamp, parse_event_id, EventId};
use crate::webhooks::{CreateWebhook, UpdateWebhook, WebhookError, WebhookView, MAX_WEBHOOKS};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateIn {
    url: String,
    topics: Vec<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    after_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateIn {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    topics: Option<Vec<String>>,
    #[serde(default)]
    secret: Option<String>,
    /// Absent: unchanged; `null`: cleared.
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default, rename = "dropPreviousSecret")]
    drop_previous_secret: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ReplayIn {
    after_id: String,
}

/// A field that is present, possibly `null`: `Some(None)` for `null`.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

fn after_id(raw: &str) -> Result<EventId, ApiError> {
    parse_event_id(raw)
        .ok_or_else(|| ApiError::unprocessable("afterId: an event id, a string of 1 to 19 digits"))
}

fn webhook_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::bad_request("the webhook id must be a UUID"))
}

impl From<WebhookError> for ApiError {
    fn from(error: WebhookError) -> Self {
        match error {
            WebhookError::Invalid(message) => ApiError::unprocessable(message),
            WebhookError::NotFound => ApiError::not_found("no such webhook"),
            WebhookError::TooMany => {
                ApiError::conflict(format!("this server keeps at most {MAX_WEBHOOKS} webhooks"))
            }
            WebhookError::Store(error) => error.into(),
        }
    }
}

/// The Webhook object; with its `secret` when `with_secret`.
fn render(view: &WebhookView, with_secret: bool) -> Value {
    let row = &view.row;
    let mut body = json!({
        "id": row.id,
        "url": row.url,
        "topics": row.topics,
        "tenant": row.tenant,
        "description": row.description,
        "enabled": row.enabled,
        "status": view.status.as_str(),
        "cursor": row.cursor.to_string(),
        "head": view.head.to_string(),
        "lag": view.lag,
        "consecutiveFailures": row.consecutive_failures,
        "lastError": row.last_error.as_ref().map(|e| json!({
            "at": format_timestamp(&e.at),
            "message": e.message,
        })),
        "lastDeliveredAt": row.last_delivered_at.as_ref().map(format_timestamp),
        "deliveringNode": view.delivering_node,
        "createdAt": format_timestamp(&row.created_at),
        "previousSecretExpiresAt": row
            .previous_secret
            .as_ref()
            .filter(|previous| previous.until > chrono::Utc::now())
            .map(|previous| format_timestamp(&previous.until)),
    });
    if with_secret {
        body["secret"] = json!(row.secret);
    }
    body
}

fn answer(result: Result<Response, ApiError>, ctx: &RequestContext) -> Response {
    result.unwrap_or_else(|error| error.into_response(&ctx.trace_id))
}

/// `POST /v1/webhooks`
pub async fn create(state: AppState, ctx: RequestContext, body: Body) -> Response {
    let result = async {
        require_admin(&state, &ctx)?;
        ctx.require_json()?;
        let input: CreateIn = ctx.json(&body.read().await?)?;
        let after = input.after_id.as_deref().map(after_id).transpose()?;
        let view = state
            .webhooks
            .create(CreateWebhook {
                url: input.url,
                topics: input.topics,
                tenant: input.tenant,
                secret: input.secret,
                description: input.description,
                after,
            })
            .await?;
        Ok(json_response(
            StatusCode::CREATED,
            render(&view, true).to_string(),
        ))
    }
    .await;
    answer(result, &ctx)
}

/// `GET /v1/webhooks`
pub async fn list(state: AppState, ctx: RequestContext) -> Response {
    let result = async {
        require_admin(&state, &ctx)?;
        let views = state.webhooks.list().await?;
        let list: Vec<Value> = views.iter().map(|v| render(v, false)).collect();
        Ok(json_response(
            StatusCode::OK,
            json!({ "webhooks": list }).to_string(),
        ))
    }
    .await;
    answer(result, &ctx)
}

/// `GET /v1/webhooks/{id}`
pub async fn get(raw_id: String, state: AppState, ctx: RequestContext) -> Response {
    let result = async {
        require_admin(&state, &ctx)?;
        let view = state.webhooks.get(webhook_id(&raw_id)?).await?;
        Ok(json_response(StatusCode::OK, render(&view, false).to_string()))
    }
    .await;
    answer(result, &ctx)
}

/// `PATCH /v1/webhooks/{id}`
pub async fn update(raw_id: String, state: AppState, ctx: RequestContext, body: Body) -> Response {
    let result = async {
        require_admin(&state, &ctx)?;
        let id = webhook_id(&raw_id)?;
        ctx.require_json()?;
        let input: UpdateIn = ctx.json(&body.read().await?)?;
        let new_secret = input.secret.is_some();
        let view = state
            .webhooks
            .update(
                id,
                UpdateWebhook {
                    url: input.url,
                    topics: input.topics,
                    secret: input.secret,
                    description: input.description,
                    enabled: input.enabled,
                    drop_previous_secret: input.drop_previous_secret.unwrap_or(false),
                },
            )
            .await?;
        Ok(json_response(
            StatusCode::OK,
            render(&view, new_secret).to_string(),
        ))
    }
    .await;
    answer(result, &ctx)
}

/// `DELETE /v1/webhooks/{id}`
pub async fn delete(raw_id: String, state: AppState, ctx: RequestContext) -> Response {
    let result = async {
        require_admin(&state, &ctx)?;
        state.webhooks.delete(webhook_id(&raw_id)?).await?;
        let mut response = Response::new(Default::default());
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }
    .await;
    answer(result, &ctx)
}

/// `POST /v1/webhooks/{id}/replay`
pub async fn replay(raw_id: String, state: AppState, ctx: RequestContext, body: Body) -> Response {
    let result = async {
        require_admin(&state, &ctx)?;
        let id = webhook_id(&raw_id)?;
        ctx.require_json()?;
        let input: ReplayIn = ctx.json(&body.read().await?)?;
        let view = state.webhooks.replay(id, after_id(&input.after_id)?).await?;
        Ok(json_response(StatusCode::OK, render(&view, false).to_string()))
    }
    .await;
    answer(result, &ctx)
}
