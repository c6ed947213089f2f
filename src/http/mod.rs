//! The HTTP edge: warp filters per resource, one request context, one
//! error boundary, SSE framing, and the server that runs them.
//!
//! Filters only route and extract; handlers parse, authorize and call the
//! store or the hub, and render their own errors, so warp's rejection
//! rules only ever decide "no such path" and "wrong method".

pub mod error;
mod history;
mod ops;
mod publish;
pub mod request;
pub mod server;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;

use crate::auth::TokenKeys;
use crate::fanout::hub::Hub;
use crate::store::EventStore;
use request::{limited_body, RequestContext};
use server::ConnectionCloser;

/// Stream settings shared by every SSE response.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    pub heartbeat: Duration,
    pub retry: Duration,
}

/// What handlers share. Cloning is a handful of reference-count increments.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn EventStore>,
    pub hub: Arc<Hub>,
    pub keys: Arc<TokenKeys>,
    pub streams: StreamSettings,
    /// Cancelled on SIGTERM/SIGINT: every open stream ends.
    pub shutdown: CancellationToken,
}

fn with_state(
    state: AppState,
) -> impl Filter<Extract = (AppState,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || state.clone())
}

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let publish = warp::path!("v1" / "topics" / String / "events")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(RequestContext::filter())
        .and(limited_body())
        .then(|topic, state, ctx, body| publish::handle(state, topic, ctx, body));
    let stream = warp::path!("v1" / "events")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(RequestContext::filter())
        .and(warp::ext::optional::<ConnectionCloser>())
        .then(stream::handle);
    let history = warp::path!("v1" / "events" / "history")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(RequestContext::filter())
        .then(history::handle);
    let healthz = warp::path!("healthz").and(warp::get()).map(ops::healthz);
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_state(state))
        .then(ops::readyz);
    let metrics = warp::path!("metrics").and(warp::get()).map(ops::metrics);

    publish
        .or(stream)
        .unify()
        .or(history)
        .unify()
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .recover(error::recover)
        .unify()
        .boxed()
}
