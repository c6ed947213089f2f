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
use super::parse::{optional_json, presenter_of_session, Empty};
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
        let (session, presenter) = presenter_of_session(&caller, &raw_session)?;
        optional_json::<Empty>(&ctx, &body.read().await?)?;
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
    result.unwrap_or_else(|error: ApiError| error.into_response(&ctx.trace_id))
}
