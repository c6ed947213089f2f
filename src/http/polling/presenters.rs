//! `POST /v1/sessions/{sessionId}/presenters`: a co-presenter's own link.
//!
//! The presenter's token is the presenter key: the presenter view keeps it
//! in the browser and puts it in the presenter link's fragment, so any
//! browser can take control. A co-presenter gets a token of its own with
//! the same powers, its own `jti` (revocable alone through
//! `/v1/admin/revocations`) and a lifetime from now.

use http::StatusCode;
use serde_json::json;
use warp::reply::Response;

use super::super::error::ApiError;
use super::super::request::{json_response, Body, RequestContext};
use super::super::state::AppState;
use super::parse::{parse_session_id, presenter_of};
use crate::auth::POLLING_TOKEN_TTL;
use crate::domain::event::format_timestamp;

/// `POST /v1/sessions/{sessionId}/presenters`
pub async fn invite_presenter(
    raw_session: String,
    state: AppState,
    ctx: RequestContext,
    body: Body,
) -> Response {
    let result = async {
        let caller = ctx.caller(&state.keys, false)?;
        let session_id = parse_session_id(&raw_session)?;
        let (session, presenter) = presenter_of(&caller)?;
        if session != session_id {
            return Err(ApiError::forbidden("only the session's presenter may do that"));
        }
        let body = body.read().await?;
        if !body.iter().all(u8::is_ascii_whitespace) {
            ctx.require_json()?;
            let _: Empty = ctx.json(&body)?;
        }
        let issued = crate::domain::event::now_millis();
        let token = state.keys.co_presenter_token(session, presenter, issued);
        let expires = issued + chrono::Duration::from_std(POLLING_TOKEN_TTL).unwrap_or_default();
        let answer = json!({
            "sessionId": session.to_string(),
            "presenterToken": token,
            "expiresAt": format_timestamp(&expires),
        });
        Ok(json_response(StatusCode::CREATED, answer.to_string()))
    }
    .await;
    result.unwrap_or_else(|error| error.into_response(&ctx.trace_id))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}
