//! `/v1/admin/*`: what the holder of the admin key (`--admin-key`, sent as
//! `X-Admin-Key` or as a bearer token) may do to any client: revoke tokens
//! and end a connection. Without `--admin-key` these routes answer 403.

use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;
use warp::reply::{Reply, Response};

use super::error::ApiError;
use super::request::{Body, RequestContext};
use super::state::AppState;
use crate::domain::topic::is_tenant_name;
use crate::revocation::Revocation;
use crate::streams::CloseReason;

/// Longest `jti` or `sub` a revocation names.
const MAX_NAME: usize = 256;
/// How long a revocation lasts when its request does not say: as long as
/// the longest-lived token pollcast issues (a polling token, 7 days).
const DEFAULT_REVOCATION: chrono::Duration = chrono::Duration::days(7);
/// Longest a revocation may last.
const MAX_REVOCATION: chrono::Duration = chrono::Duration::days(366);

/// The admin key the request presents, if it is the configured one: 401
/// when it is missing or wrong, 403 when the server has none.
pub fn require_admin(state: &AppState, ctx: &RequestContext) -> Result<(), ApiError> {
    let Some(required) = &state.admin_key else {
        return Err(ApiError::forbidden(
            "the admin API is off: start the server with --admin-key",
        ));
    };
    let given = ctx.header("x-admin-key").or_else(|| ctx.bearer(false).ok());
    if given.is_some_and(|given| required.matches(given)) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this needs the admin key (X-Admin-Key)",
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeIn {
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    until: Option<String>,
}

fn name(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.is_empty() || v.chars().count() > MAX_NAME || v.chars().any(char::is_control) => {
            Err(ApiError::unprocessable(format!(
                "{field}: 1 to {MAX_NAME} characters without control characters"
            )))
        }
        other => Ok(other),
    }
}

impl RevokeIn {
    fn into_revocation(self, now: DateTime<Utc>) -> Result<Revocation, ApiError> {
        let jti = name("jti", self.jti)?;
        let subject = name("sub", self.sub)?;
        if jti.is_none() && subject.is_none() {
            return Err(ApiError::unprocessable("give a jti, a sub, or both"));
        }
        if self.tenant.as_deref().is_some_and(|t| !is_tenant_name(t)) {
            return Err(ApiError::unprocessable("tenant: 1 to 64 of [a-z0-9_.-]"));
        }
        let until = match self.until.as_deref() {
            None => now + DEFAULT_REVOCATION,
            Some(raw) => DateTime::parse_from_rfc3339(raw)
                .map_err(|_| ApiError::unprocessable("until: must be an RFC 3339 timestamp"))?
                .with_timezone(&Utc),
        };
        if until <= now || until > now + MAX_REVOCATION {
            return Err(ApiError::unprocessable(
                "until: must be in the future, and at most a year from now",
            ));
        }
        Ok(Revocation {
            id: Uuid::new_v4(),
            jti,
            subject,
            tenant: self.tenant,
            revoked_at: crate::domain::event::now_millis(),
            until,
        })
    }
}

/// `POST /v1/admin/revocations`: refuses the named tokens from now on, on
/// every node, and ends their open streams with `connection:closing`.
pub async fn revoke(state: AppState, ctx: RequestContext, body: Body) -> Response {
    let result = async {
        require_admin(&state, &ctx)?;
        ctx.require_json()?;
        let input: RevokeIn = ctx.json(&body.read().await?)?;
        let revocation = input.into_revocation(Utc::now())?;
        state.store.revoke(&revocation).await?;
        // In force here at once; the other nodes hear of it on the bus.
        state.keys.revocations().add(revocation.clone());
        let closed = state.open_streams.close_matching(
            |token| revocation.covers(token, Utc::now()),
            CloseReason::TokenRevoked,
        );
        state.cluster.revoked().await;
        let mut body = serde_json::to_value(&revocation).expect("a revocation serializes");
        body["closedStreams"] = json!(closed);
        let mut response = warp::reply::json(&body).into_response();
        *response.status_mut() = StatusCode::CREATED;
        Ok::<_, ApiError>(response)
    }
    .await;
    result.unwrap_or_else(|error| error.into_response(&ctx.trace_id))
}

/// `GET /v1/admin/revocations`: the revocations in force.
pub async fn revocations(state: AppState, ctx: RequestContext) -> Response {
    let result = async {
        require_admin(&state, &ctx)?;
        let list = state.store.revocations().await?;
        Ok::<_, ApiError>(warp::reply::json(&json!({ "revocations": list })).into_response())
    }
    .await;
    result.unwrap_or_else(|error| error.into_response(&ctx.trace_id))
}

/// `DELETE /v1/admin/connections/{connectionId}`: ends that stream,
/// whichever node holds it, with `connection:closing` (`closed_by_admin`).
pub async fn close_connection(raw_id: String, state: AppState, ctx: RequestContext) -> Response {
    let result = async {
        require_admin(&state, &ctx)?;
        let id = Uuid::parse_str(&raw_id)
            .map_err(|_| ApiError::bad_request("the connection id must be a UUID"))?;
        let closed = state.open_streams.close(id, CloseReason::ClosedByAdmin)
            || state.cluster.close_connection(id).await;
        if !closed {
            return Err(ApiError::not_found("no node holds this connection"));
        }
        let mut response = Response::new(Default::default());
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }
    .await;
    result.unwrap_or_else(|error| error.into_response(&ctx.trace_id))
}
