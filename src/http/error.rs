//! The one error boundary: every failure becomes the contract's JSON body
//! `{"error": {"code", "message", "traceId"}}` with its status (the error
//! vocabulary of CONTRACT §5). Internal failures are logged with their
//! detail and shown to the client opaque.

use std::convert::Infallible;

use http::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::StatusCode;
use serde_json::json;
use warp::reply::Response;
use warp::Rejection;

use crate::auth::AuthError;
use crate::domain::event::TraceId;
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
    /// More members of the error object, beside code, message and traceId
    /// (a version conflict's `currentVersion`).
    pub fields: Vec<(&'static str, serde_json::Value)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
            fields: Vec::new(),
        }
    }

    /// The error, with one more member in its error object.
    pub fn with_field(mut self, name: &'static str, value: serde_json::Value) -> Self {
        self.fields.push((name, value));
        self
    }

    /// The error with its message prefixed (which item of a request it is
    /// about).
    pub fn prefixed(mut self, prefix: &str) -> Self {
        self.message = format!("{prefix}{}", self.message);
        self
    }

    /// Malformed input: bad JSON, bad names, bad parameters.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_payload", message)
    }

    /// Well-formed JSON of the wrong shape.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_payload", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 429 `rate_limited`, with how long to wait in `Retry-After`.
    pub fn rate_limited(message: impl Into<String>, wait: std::time::Duration) -> Self {
        ApiError {
            retry_after_secs: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            retry_after_secs: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }

    /// The contract's error body.
    pub fn body(&self, trace_id: &TraceId) -> String {
        let mut error = json!({ "code": self.code, "message": self.message, "traceId": trace_id.as_str() });
        for (name, value) in &self.fields {
            error[*name] = value.clone();
        }
        json!({ "error": error }).to_string()
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        let code = match error {
            AuthError::Expired => "token_expired",
            AuthError::Revoked => "token_revoked",
            AuthError::Missing | AuthError::Invalid(_) | AuthError::NotYetValid => "unauthorized",
        };
        ApiError::new(StatusCode::UNAUTHORIZED, code, error.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable { .. } => {
                tracing::warn!(error = %error.report(), "store unavailable");
                ApiError::unavailable("the event store is unavailable; retry shortly")
            }
            StoreError::Full { ref what } => {
                tracing::warn!(%what, "the memory store is full");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "storage_full",
                    format!("{what}; run pollcast with DATABASE_URL for more"),
                )
            }
            StoreError::Rejected { ref what, .. } => {
                tracing::warn!(error = %error.report(), "the database refused a value the edge let through");
                ApiError::unprocessable(format!("the database refused a value of this request: {what}"))
            }
            StoreError::Internal { .. } => {
                tracing::error!(error = %error.report(), "store failure");
                ApiError::internal()
            }
        }
    }
}

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
pub fn unrouted(allowed: Option<&str>, method: &http::Method, trace_id: &TraceId) -> Response {
    match allowed {
        Some(allowed) if !allowed.split(", ").any(|m| m == method.as_str()) => {
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed here; allowed: {allowed}"),
            )
            .into_response(trace_id);
            if let Ok(allowed) = HeaderValue::from_str(allowed) {
                response.headers_mut().insert(ALLOW, allowed);
            }
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
