//! Operator endpoints: liveness, readiness (the store answers), metrics.
//! They carry no user data, so they need no token; keep them behind the
//! network boundary in production.

use http::header::{HeaderValue, CONTENT_TYPE};
use warp::reply::Response;

use super::error::ApiError;
use super::request::RequestContext;
use super::state::AppState;

fn json(body: &'static str) -> Response {
    let mut response = Response::new(body.into());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn healthz() -> Response {
    json(r#"{"status":"ok"}"#)
}

pub async fn readyz(state: AppState, ctx: RequestContext) -> Response {
    match state.store.ping().await {
        Ok(()) => json(r#"{"status":"ready"}"#),
        Err(error) => {
            tracing::warn!(%error, "not ready");
            ApiError::unavailable("the event store does not answer").into_response(&ctx.trace_id)
        }
    }
}

pub fn metrics() -> Response {
    let mut response = Response::new(crate::metrics::handle().render().into());
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
