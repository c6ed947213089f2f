//! Idempotency-Key at the edge: the key read from the request and
//! fingerprinted, and what is kept of an answer so that a retry gets back
//! exactly what the first request got.

use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::request::{json_response, RequestContext};
use crate::store::{IdempotencyKey, Remembered};

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

/// What an Idempotency-Key keeps of an answer: `<status> <body>`.
pub fn remember(status: http::StatusCode, body: &str) -> Remembered {
    Remembered(format!("{} {body}", status.as_u16()))
}

/// The answer an Idempotency-Key kept, as it was first given.
pub fn replayed(remembered: Remembered) -> warp::reply::Response {
    let (status, body) = remembered.0.split_once(' ').unwrap_or(("200", ""));
    let status = status
        .parse::<u16>()
        .ok()
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .unwrap_or(http::StatusCode::OK);
    json_response(status, body.to_owned())
}
