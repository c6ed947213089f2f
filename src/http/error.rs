//! The one error boundary: every failure becomes the contract's JSON body
//! `{"error": {"code", "message", "traceId"}}` with its status. Internal
//! failures are logged with their detail and shown to the client opaque.

use std::convert::Infallible;

use http::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::StatusCode;
use warp::reply::Response;
use warp::Rejection;

use crate::domain::event::TraceId;
pub use crate::error::ApiError;

impl ApiError {
    pub fn into_response(self, trace_id: &TraceId) -> Response {
        let mut response = Response::new(self.body(trace_id).into());
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(secs) = self.retry_after_secs {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // The rest of the body was not read: the connection cannot carry
        // another request, so say it closes (hyper then closes it).
        if matches!(
            self.status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE
        ) {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// A request no route took: `404`, or `405` with `Allow` when the path has
/// routes (`allowed`, as the header lists them) but not for `method`.
pub fn unrouted(allowed: Option<&'static str>, method: &http::Method, trace_id: &TraceId) -> Response {
    match allowed {
        Some(allowed) if !allowed.split(", ").any(|m| m == method.as_str()) => {
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed here; allowed: {allowed}"),
            )
            .into_response(trace_id);
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allowed));
            response
        }
        _ => ApiError::not_found("no such resource").into_response(trace_id),
    }
}

/// Renders what warp itself rejects. Routing misses are answered by
/// [`unrouted`] and every handler renders its own errors, so this is a
/// backstop.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if rejection.is_not_found() {
        ApiError::not_found("no such resource")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this resource",
        )
    } else {
        tracing::error!(?rejection, "unhandled rejection");
        ApiError::internal()
    };
    Ok(error.into_response(&TraceId::generate()))
}
