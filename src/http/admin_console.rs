//! The admin console's API (`/admin` is its page): the nodes and what they
//! hold, open streams per topic, a live tail of every event, and a test
//! publish. Every route takes the admin key like the rest of
//! `/v1/admin/*` ([`require_admin`]: 403 without `--admin-key`, 401 with a
//! missing or wrong key).
//!
//! The tail is an SSE response like `GET /v1/events`, but authorized by the
//! `X-Admin-Key` header, never by anything in its URL: the page reads it
//! with `fetch()` and a stream reader instead of `EventSource` (which
//! cannot send headers). Minting a short-lived subscribe token for an
//! `EventSource` was the other way; it would have put a bearer credential
//! in the query string, where proxies and access logs keep it, and a token
//! able to read every tenant's and every private topic is not one to leave
//! lying there. The cost is that the page reconnects by itself (sending
//! `Last-Event-ID`, which the stream honours as any other does).
//!
//! The numbers come from `crate::cluster::census` (asked of every node on
//! the bus at each request) and the test publish is the checked publish of
//! `crate::topics::publish`, reserved topics and server-only types refused
//! as for any publisher.

use std::collections::BTreeMap;

use chrono::Utc;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use warp::reply::{Reply, Response};

use super::admin::require_admin;
use super::connections::ConnectionInfo;
use super::error::ApiError;
use super::request::{json_response, Body, RequestContext};
use super::state::AppState;
use super::stream::{address_permit, sse_response, start_point, EventStream};
use crate::cluster::census::{merge_nodes, per_topic, NodeView};
use crate::domain::event::{format_timestamp, EventType};
use crate::domain::topic::{is_tenant_name, Selector, Topic};
use crate::store::Answer;
use crate::topics::publish::{publish as run_publish, PublishRequest};
use crate::topics::{reserved, tail};

/// Runs a JSON handler and renders its error.
async fn answer(
    ctx: &RequestContext,
    result: impl std::future::Future<Output = Result<Response, ApiError>>,
) -> Response {
    result
        .await
        .unwrap_or_else(|error| error.into_response(&ctx.trace_id))
}

fn node_json(node: &NodeView, store: &str) -> Value {
    let report = node.report.as_ref();
    json!({
        "nodeId": node.node_id.to_string(),
        "thisNode": node.this_node,
        "lastHeartbeat": node.last_heartbeat.as_ref().map(format_timestamp),
        "answered": report.is_some(),
        "version": report.map(|r| r.version.clone()),
        "startedAt": report.map(|r| format_timestamp(&r.started_at)),
        "uptimeSeconds": report.map(|r| (Utc::now() - r.started_at).num_seconds().max(0)),
        "streams": report.map(|r| r.streams),
        "liveStreams": report.map(|r| r.live_streams),
        "lastEventId": report.map(|r| r.head.to_string()),
        "store": store,
    })
}

/// `GET /v1/admin/nodes`: every node sharing the store, by its heartbeat
/// or its answer, with its open streams.
pub async fn nodes(state: AppState, ctx: RequestContext) -> Response {
    answer(&ctx, async {
        require_admin(&state, &ctx)?;
        let (heartbeats, gathered) = tokio::join!(state.census.heartbeats(), state.census.gather());
        let nodes = merge_nodes(state.census.node_id(), &heartbeats?, &gathered.reports);
        let store = state.store.kind();
        let body = json!({
            "thisNode": state.census.node_id().to_string(),
            "complete": gathered.complete,
            "nodes": nodes.iter().map(|n| node_json(n, store)).collect::<Vec<_>>(),
        });
        Ok(warp::reply::json(&body).into_response())
    })
    .await
}

/// `GET /v1/admin/connections`: live streams per topic selector, summed
/// over the nodes that answered.
pub async fn connections(state: AppState, ctx: RequestContext) -> Response {
    answer(&ctx, async {
        require_admin(&state, &ctx)?;
        let gathered = state.census.gather().await;
        let topics: Vec<Value> = per_topic(&gathered.reports)
            .into_iter()
            .map(|t| {
                let nodes: BTreeMap<String, usize> =
                    t.nodes.into_iter().map(|(id, n)| (id.to_string(), n)).collect();
                json!({ "selector": t.selector, "tenant": t.tenant, "streams": t.streams, "nodes": nodes })
            })
            .collect();
        let body = json!({
            "complete": gathered.complete,
            "nodes": gathered.reports.len(),
            "streams": gathered.reports.iter().map(|r| r.streams).sum::<usize>(),
            "otherSelectors": gathered.reports.iter().map(|r| r.other_selectors).sum::<usize>(),
            "topics": topics,
        });
        Ok(warp::reply::json(&body).into_response())
    })
    .await
}

/// `GET /v1/admin/tail?topic=…&tenant=…`: every event as it commits (with
/// `Last-Event-ID`, from after that id), of every tenant, private topics
/// included, narrowed by the selectors and tenant given.
pub async fn tail(state: AppState, ctx: RequestContext, connection: Option<ConnectionInfo>) -> Response {
    match open_tail(&state, &ctx, connection) {
        Ok(stream) => sse_response(stream),
        Err(error) => error.into_response(&ctx.trace_id),
    }
}

fn open_tail(
    state: &AppState,
    ctx: &RequestContext,
    connection: Option<ConnectionInfo>,
) -> Result<EventStream, ApiError> {
    require_admin(state, ctx)?;
    // The limit counts every `topic` value given, empty ones too: an empty
    // value is ignored, but a request is not allowed to be unbounded.
    let raw: Vec<&str> = ctx.query_all("topic").collect();
    if raw.len() > state.limits.max_topics {
        return Err(ApiError::bad_request(format!(
            "at most {} topics per request",
            state.limits.max_topics
        )));
    }
    let selectors: Vec<Selector> = raw
        .into_iter()
        .filter(|raw| !raw.is_empty())
        .map(|raw| Selector::parse(raw).map_err(|e| ApiError::bad_request(format!("topic {raw:?}: {e}"))))
        .collect::<Result<_, _>>()?;
    let tenant = ctx.query_one("tenant")?.filter(|t| !t.is_empty());
    if tenant.is_some_and(|t| !is_tenant_name(t)) {
        return Err(ApiError::bad_request("tenant: 1 to 64 of [a-z0-9_.-]"));
    }
    let start = start_point(ctx)?;
    let permit = address_permit(state, ctx)?;
    let stream = EventStream::new(
        state,
        tail::filter(selectors, tenant),
        start,
        "/v1/admin/tail".to_owned(),
        connection.map(|c| c.closer),
        None,
    );
    Ok(stream.showing_tenants().with_permit(permit))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestEventIn {
    topic: String,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default = "empty_object")]
    payload: Value,
    #[serde(default)]
    tenant: Option<String>,
}

fn empty_object() -> Value {
    json!({})
}

/// `POST /v1/admin/events`: publishes one event as a publisher would
/// (the same checks: reserved topics 403, server-only types 422), on any
/// topic, in any tenant.
pub async fn publish(state: AppState, ctx: RequestContext, body: Body) -> Response {
    answer(&ctx, async {
        require_admin(&state, &ctx)?;
        ctx.require_json()?;
        let input: TestEventIn = ctx.json(&body.read().await?)?;
        let topic = Topic::parse(&input.topic).map_err(|e| ApiError::unprocessable(format!("topic: {e}")))?;
        reserved::check_topic(&topic)?;
        let topic = match input.tenant.as_deref().filter(|t| !t.is_empty()) {
            Some(tenant) if is_tenant_name(tenant) => topic.in_tenant(tenant),
            Some(_) => return Err(ApiError::unprocessable("tenant: 1 to 64 of [a-z0-9_.-]")),
            None => topic,
        };
        let event_type = EventType::parse(&input.event_type).map_err(ApiError::unprocessable)?;
        let command = PublishRequest {
            topic,
            event_type,
            payload: input.payload,
            entity_id: None,
            expected_version: None,
            trace_id: ctx.trace_id.clone(),
        }
        .check()?;
        match run_publish(state.store.as_ref(), command, None).await? {
            Answer::Fresh(Ok(published)) => Ok(json_response(
                StatusCode::CREATED,
                published.event.envelope_json(),
            )),
            Answer::Fresh(Err(rejection)) => Err(rejection.into()),
            Answer::Replayed(_) | Answer::KeyReused => Err(ApiError::internal()),
        }
    })
    .await
}
