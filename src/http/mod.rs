//! The HTTP edge: warp filters per resource, one request context, one
//! error boundary, SSE framing, and the server that runs them.
//!
//! Filters only route and extract; handlers parse, authorize and call the
//! store or the hub, and render their own errors, so warp's rejection
//! rules only ever decide "no such path" and "wrong method".

mod admin;
pub mod connections;
pub mod direct;
pub mod error;
mod history;
mod ops;
mod polling;
mod presence;
mod publish;
pub mod request;
pub mod rooms;
pub mod server;
pub mod stream;
mod web;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;

use crate::auth::TokenKeys;
use crate::fanout::hub::Hub;
use crate::store::EventStore;
use request::RequestContext;
use server::ConnectionInfo;

/// Stream settings shared by every SSE response.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    pub heartbeat: Duration,
    pub retry: Duration,
}

/// What handlers share, behind one reference count: warp clones the state
/// for every route a request is tried against, and a field-by-field clone
/// (ten reference counts and the shutdown token's mutex) showed up at 5 %
/// of the server's CPU under vote ingest.
#[derive(Clone)]
pub struct AppState(Arc<AppShared>);

impl AppState {
    pub fn new(shared: AppShared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppShared;

    fn deref(&self) -> &AppShared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct AppShared {
    pub store: Arc<dyn EventStore>,
    pub hub: Arc<Hub>,
    pub keys: Arc<TokenKeys>,
    pub streams: StreamSettings,
    /// Cancelled on SIGTERM/SIGINT: every open stream ends.
    pub shutdown: CancellationToken,
    pub polling: crate::polling::Polling,
    /// This node's open streams, joinable by connection id.
    pub rooms: Arc<crate::rooms::Rooms>,
    /// Room changes for streams held by other nodes.
    pub cluster: Arc<crate::cluster::Cluster>,
    pub limits: Arc<crate::limits::Limits>,
    /// `--admin-key`: required to create a session when set, and the key
    /// of the admin API.
    pub admin_key: Option<crate::secret::Secret>,
    /// Every open TCP connection of this node, with its caps and deadlines.
    pub connections: Arc<connections::Connections>,
    /// Every open stream of this node: what admins and revocations close.
    pub open_streams: Arc<crate::streams::OpenStreams>,
    /// Replay reads from the store at once on this node (`--max-catchups`):
    /// reconnecting streams past it wait their turn, first come first served.
    pub catchups: Arc<tokio::sync::Semaphore>,
}

fn with_state(
    state: AppState,
) -> impl Filter<Extract = (AppState,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || state.clone())
}

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let generic = generic_routes(&state);
    let polling = polling_routes(&state);
    let admin = admin_routes(&state);
    let healthz = warp::path!("healthz").and(warp::get()).map(ops::healthz);
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_state(state))
        .then(ops::readyz);
    let metrics = warp::path!("metrics").and(warp::get()).map(ops::metrics);

    head_limit()
        .or(generic)
        .unify()
        .or(polling)
        .unify()
        .or(admin)
        .unify()
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(web::routes())
        .unify()
        .or(unrouted())
        .unify()
        .recover(error::recover)
        .unify()
        .boxed()
}

/// Checks on the request head before any route: `431` with the contract's
/// error body for a request line and headers over [`request::MAX_HEAD`],
/// and `400` (closing the connection) for a `GET` or `DELETE` that carries
/// a chunked body. Such a body means nothing to these routes, and sent
/// with a `Content-Length` as well it is the classic shape of request
/// smuggling (hyper keeps only `Transfer-Encoding` then, so that is what is
/// checked; RFC 9112 §6.3 allows refusing it). Other requests pass on to
/// the routes.
fn head_limit() -> BoxedFilter<(Response,)> {
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(RequestContext::filter())
        .and_then(
            |method: http::Method, path: warp::path::FullPath, query: String, ctx: RequestContext| async move {
                let target = path.as_str().len() + if query.is_empty() { 0 } else { query.len() + 1 };
                if request::head_size(&method, target, &ctx.headers) > request::MAX_HEAD {
                    let error = error::ApiError::new(
                        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "invalid_payload",
                        format!("the request line and headers exceed {} bytes", request::MAX_HEAD),
                    );
                    return Ok(error.into_response(&ctx.trace_id));
                }
                let bodiless = matches!(method, http::Method::GET | http::Method::HEAD | http::Method::DELETE);
                if bodiless && ctx.headers.contains_key(http::header::TRANSFER_ENCODING) {
                    let mut response = error::ApiError::bad_request(format!(
                        "a {method} request carries no body (Transfer-Encoding)"
                    ))
                    .into_response(&ctx.trace_id);
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                    return Ok(response);
                }
                Err(warp::reject::not_found())
            },
        )
        .boxed()
}

/// What no route took: `405` with the `Allow` header when the path is one of
/// ours and the method is not (RFC 9110 requires the header), `404`
/// otherwise. Keep [`allowed_methods`] in step with the routes.
fn unrouted() -> BoxedFilter<(Response,)> {
    warp::path::full()
        .and(warp::method())
        .and(RequestContext::filter())
        .map(
            |path: warp::path::FullPath, method: http::Method, ctx: RequestContext| {
                error::unrouted(allowed_methods(path.as_str()), &method, &ctx.trace_id)
            },
        )
        .boxed()
}

/// The methods the routes answer on a path, by its shape; `None` when no
/// route has that shape.
fn allowed_methods(path: &str) -> Option<&'static str> {
    if web::serves(path) {
        return Some("GET");
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    Some(match segments.as_slice() {
        ["healthz"] | ["readyz"] | ["metrics"] => "GET",
        ["v1", "events"] | ["v1", "events", "history"] => "GET",
        ["v1", "topics", _, "events"] => "POST",
        ["v1", "topics", _, "presence"] => "GET",
        ["v1", "presence", "heartbeat"] => "POST",
        ["v1", "connections", _, "topics"] => "POST",
        ["v1", "connections", _, "topics", _] => "DELETE",
        ["v1", "sessions"] => "POST",
        ["v1", "sessions", _] | ["v1", "sessions", _, "events"] => "GET",
        ["v1", "sessions", _, "start" | "end" | "polls" | "participants"] => "POST",
        ["v1", "polls", _, "activate" | "close"] => "POST",
        ["v1", "polls", _, "votes"] => "GET, POST",
        ["v1", "polls", _, "results"] => "GET",
        ["v1", "admin", "revocations"] => "GET, POST",
        ["v1", "admin", "connections", _] => "DELETE",
        _ => return None,
    })
}

/// Revocations and ending connections, for the admin key's holder.
fn admin_routes(state: &AppState) -> BoxedFilter<(Response,)> {
    let revoke = warp::path!("v1" / "admin" / "revocations")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(RequestContext::filter())
        .and(request::body(state.limits.max_body, state.limits.body_timeout))
        .then(admin::revoke);
    let revocations = warp::path!("v1" / "admin" / "revocations")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(RequestContext::filter())
        .then(admin::revocations);
    let close = warp::path!("v1" / "admin" / "connections" / String)
        .and(warp::delete())
        .and(with_state(state.clone()))
        .and(RequestContext::filter())
        .then(admin::close_connection);
    revoke.or(revocations).unify().or(close).unify().boxed()
}

/// Publish, subscribe and history on generic topics (CONTRACT §4, §3).
fn generic_routes(state: &AppState) -> BoxedFilter<(Response,)> {
    let publish = warp::path!("v1" / "topics" / String / "events")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(RequestContext::filter())
        .and(request::body(state.limits.max_body, state.limits.body_timeout))
        .then(|topic, state, ctx, body| publish::handle(state, topic, ctx, body));
    let stream = warp::path!("v1" / "events")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(RequestContext::filter())
        .and(warp::ext::optional::<ConnectionInfo>())
        .then(stream::handle);
    let history = warp::path!("v1" / "events" / "history")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(RequestContext::filter())
        .then(history::handle);
    let join = warp::path!("v1" / "connections" / String / "topics")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(RequestContext::filter())
        .and(request::body(state.limits.max_body, state.limits.body_timeout))
        .then(|connection, state, ctx, body| rooms::join(state, connection, ctx, body));
    let leave = warp::path!("v1" / "connections" / String / "topics" / String)
        .and(warp::delete())
        .and(with_state(state.clone()))
        .and(RequestContext::filter())
        .then(|connection, topic, state, ctx| rooms::leave(state, connection, topic, ctx));
    let presence = warp::path!("v1" / "topics" / String / "presence")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(RequestContext::filter())
        .then(|topic, state, ctx| presence::list(state, topic, ctx));
    let heartbeat = warp::path!("v1" / "presence" / "heartbeat")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(RequestContext::filter())
        .and(request::body(state.limits.max_body, state.limits.body_timeout))
        .then(presence::heartbeat);
    publish
        .or(presence)
        .unify()
        .or(heartbeat)
        .unify()
        .or(stream)
        .unify()
        .or(history)
        .unify()
        .or(join)
        .unify()
        .or(leave)
        .unify()
        .boxed()
}

/// Sessions, polls, participants and votes (CONTRACT §2).
fn polling_routes(state: &AppState) -> BoxedFilter<(Response,)> {
    use polling::{PollAction, PollQuery, SessionAction};
    let create_session = warp::path!("v1" / "sessions")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(RequestContext::filter())
        .and(request::body(state.limits.max_body, state.limits.body_timeout))
        .then(polling::create_session);
    let session_action = |segment: &'static str, action: SessionAction| {
        warp::path("v1")
            .and(warp::path("sessions"))
            .and(warp::path::param::<String>())
            .and(warp::path(segment))
            .and(warp::path::end())
            .and(warp::post())
            .map(move |key: String| (action, key))
            .untuple_one()
    };
    let session_actions = session_action("start", SessionAction::Start)
        .or(session_action("end", SessionAction::End))
        .unify()
        .or(session_action("polls", SessionAction::CreatePoll))
        .unify()
        .or(session_action("participants", SessionAction::Join))
        .unify()
        .and(with_state(state.clone()))
        .and(RequestContext::filter())
        .and(request::body(state.limits.max_body, state.limits.body_timeout))
        .then(polling::session_action);
    let poll_action = |segment: &'static str, action: PollAction| {
        warp::path("v1")
            .and(warp::path("polls"))
            .and(warp::path::param::<String>())
            .and(warp::path(segment))
            .and(warp::path::end())
            .and(warp::post())
            .map(move |poll: String| (action, poll))
            .untuple_one()
    };
    let poll_actions = poll_action("activate", PollAction::Activate)
        .or(poll_action("close", PollAction::Close))
        .unify()
        .or(poll_action("votes", PollAction::Vote))
        .unify()
        .and(with_state(state.clone()))
        .and(RequestContext::filter())
        .and(request::body(state.limits.max_body, state.limits.body_timeout))
        .then(polling::poll_action);
    let poll_query = |segment: &'static str, query: PollQuery| {
        warp::path("v1")
            .and(warp::path("polls"))
            .and(warp::path::param::<String>())
            .and(warp::path(segment))
            .and(warp::path::end())
            .and(warp::get())
            .map(move |poll: String| (query, poll))
            .untuple_one()
    };
    let poll_queries = poll_query("results", PollQuery::Results)
        .or(poll_query("votes", PollQuery::Votes))
        .unify()
        .and(with_state(state.clone()))
        .and(RequestContext::filter())
        .then(polling::poll_query);
    let get_session = warp::path!("v1" / "sessions" / String)
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(RequestContext::filter())
        .then(polling::get_session);
    let session_stream = warp::path!("v1" / "sessions" / String / "events")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(RequestContext::filter())
        .and(warp::ext::optional::<ConnectionInfo>())
        .then(polling::session_stream);
    create_session
        .or(session_actions)
        .unify()
        .or(poll_actions)
        .unify()
        .or(poll_queries)
        .unify()
        .or(get_session)
        .unify()
        .or(session_stream)
        .unify()
        .boxed()
}
