//! The error vocabulary of the API (CONTRACT §5): a status, a code from
//! the contract's list, and a message for people. Rendered by the HTTP
//! edge, and by commands that answer from inside a transaction.

use http::StatusCode;
use serde_json::json;

use crate::auth::AuthError;
use crate::domain::event::TraceId;
use crate::store::{StoreError, StoredResponse};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
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
        json!({
            "error": { "code": self.code, "message": self.message, "traceId": trace_id.as_str() }
        })
        .to_string()
    }

    /// As a response kept by the store (an answer decided in a command).
    pub fn to_stored(&self, trace_id: &TraceId) -> StoredResponse {
        StoredResponse {
            status: self.status.as_u16(),
            body: self.body(trace_id),
        }
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
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                ApiError::unavailable("the event store is unavailable; retry shortly")
            }
            StoreError::Full(detail) => {
                tracing::warn!(%detail, "the memory store is full");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "storage_full",
                    format!("{detail}; run pollcast with DATABASE_URL for more"),
                )
            }
            StoreError::Rejected(detail) => {
                tracing::warn!(%detail, "the database refused a value the edge let through");
                ApiError::unprocessable(format!("the database refused a value of this request: {detail}"))
            }
            StoreError::Internal(detail) => {
                tracing::error!(%detail, "store failure");
                ApiError::internal()
            }
        }
    }
}
