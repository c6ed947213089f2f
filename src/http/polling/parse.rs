//! Path parameters, callers and bodies of the polling routes, parsed at
//! the edge into domain types.

use std::borrow::Cow;

use bytes::Bytes;

use super::super::error::ApiError;
use super::super::request::RequestContext;
use crate::auth::{Caller, Role};
use crate::domain::polling::ids::{PollId, PresenterId, SessionId};
use crate::polling::SessionKey;

/// A path parameter percent-decoded (the route table hands them over raw).
fn decoded(raw: &str) -> Result<Cow<'_, str>, ApiError> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("the path is not UTF-8 once percent-decoded"))
}

pub fn parse_session_id(raw: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(&decoded(raw)?).map_err(ApiError::bad_request)
}

pub fn parse_poll_id(raw: &str) -> Result<PollId, ApiError> {
    PollId::parse(&decoded(raw)?).map_err(ApiError::bad_request)
}

/// A session id, or a join code of letters and digits.
pub fn parse_session_key(raw: &str) -> Result<SessionKey, ApiError> {
    let key = SessionKey::parse(&decoded(raw)?);
    if let SessionKey::Slug(slug) = &key {
        if slug.is_empty() || slug.len() > 32 || !slug.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ApiError::bad_request("give a session id (UUID) or its join code"));
        }
    }
    Ok(key)
}

/// The caller's polling role; generic tokens have none here.
pub fn role_of(caller: &Caller) -> Result<Role, ApiError> {
    caller
        .role
        .ok_or_else(|| ApiError::forbidden("this token is not a presenter or participant token"))
}

/// The presenter of the session a path names: a presenter token of that
/// very session; any other is refused.
pub fn presenter_of_session(
    caller: &Caller,
    raw_session: &str,
) -> Result<(SessionId, PresenterId), ApiError> {
    let session_id = parse_session_id(raw_session)?;
    let (session, presenter) = presenter_of(caller)?;
    if session != session_id {
        return Err(ApiError::forbidden("only the session's presenter may do that"));
    }
    Ok((session, presenter))
}

/// The session and presenter of a presenter token; any other is refused.
pub fn presenter_of(caller: &Caller) -> Result<(SessionId, PresenterId), ApiError> {
    match role_of(caller)? {
        Role::Presenter { session, presenter } => Ok((session, presenter)),
        Role::Participant { .. } => Err(ApiError::forbidden("only the session's presenter may do that")),
    }
}

/// A JSON body, or `{}` when the request has none (start, end, activate…).
pub fn optional_json<T: serde::de::DeserializeOwned>(
    ctx: &RequestContext,
    body: &Bytes,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return ctx.json(&Bytes::from_static(b"{}"));
    }
    ctx.require_json()?;
    ctx.json(body)
}

/// A command that takes no fields: no body, or `{}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}
