//! The one warp filter in front of every handler: checks on the request
//! head, then the route from [`super::routes`], then the route's handler;
//! the web app's files; and `405`/`404` for what nothing took.
//!
//! Handlers parse, authorize, call a service and render; warp only
//! extracts the request's parts, so its rejection rules never decide an
//! answer (the `recover` backstop aside).

use http::Method;
use warp::filters::BoxedFilter;
use warp::path::FullPath;
use warp::reply::Response;
use warp::Filter;

use super::connections::ConnectionInfo;
use super::request::{self, Body, RequestContext};
use super::routes::{self, Route};
use super::state::AppState;
use super::{
    admin, admin_console, error, history, ops, polling, presence, publish, publish_many, rooms, stream, web,
    webhooks,
};

/// Every route of the server, as one filter for [`super::server::serve`].
pub fn router(state: AppState) -> BoxedFilter<(Response,)> {
    head_limit()
        .or(api(state))
        .unify()
        .or(web::routes())
        .unify()
        .or(unrouted())
        .unify()
        .recover(error::recover)
        .unify()
        .boxed()
}

/// The API: the request's route resolved once, its parts extracted once
/// (the body left unread: handlers read it after authorizing the head).
fn api(state: AppState) -> BoxedFilter<(Response,)> {
    let body = request::body(state.limits.max_body, state.limits.body_timeout);
    warp::method()
        .and(warp::path::full())
        .and_then(|method: Method, path: FullPath| async move {
            routes::resolve(&method, path.as_str()).ok_or_else(warp::reject::not_found)
        })
        .and(warp::any().map(move || state.clone()))
        .and(RequestContext::filter())
        .and(warp::ext::optional::<ConnectionInfo>())
        .and(body)
        .then(dispatch)
        .boxed()
}

/// Calls a route's handler.
async fn dispatch(
    route: Route,
    state: AppState,
    ctx: RequestContext,
    connection: Option<ConnectionInfo>,
    body: Body,
) -> Response {
    match route {
        Route::Healthz => ops::healthz(),
        Route::Readyz => ops::readyz(state, ctx).await,
        Route::Metrics => ops::metrics(),
        Route::TopicStream => stream::handle(state, ctx, connection).await,
        Route::History => history::handle(state, ctx).await,
        Route::Publish { topic } => publish::handle(state, topic, ctx, body).await,
        Route::PublishMany => publish_many::handle(state, ctx, body).await,
        Route::Presence { topic } => presence::list(state, topic, ctx).await,
        Route::Heartbeat => presence::heartbeat(state, ctx, body).await,
        Route::JoinRoom { connection } => rooms::join(state, connection, ctx, body).await,
        Route::LeaveRoom { connection, topic } => rooms::leave(state, connection, topic, ctx).await,
        Route::CreateSession => polling::create_session(state, ctx, body).await,
        Route::GetSession { key } => polling::get_session(key, state, ctx).await,
        Route::SessionStream { session } => polling::session_stream(session, state, ctx, connection).await,
        Route::SessionAction { key, action } => polling::session_action(action, key, state, ctx, body).await,
        Route::JoinQr { key } => polling::join_qr(key, state, ctx).await,
        Route::Export { session, format } => polling::export(session, format, state, ctx).await,
        Route::InvitePresenter { session } => polling::invite_presenter(session, state, ctx, body).await,
        Route::PollAction { poll, action } => polling::poll_action(action, poll, state, ctx, body).await,
        Route::PollQuery { poll, query } => polling::poll_query(query, poll, state, ctx).await,
        Route::Revoke => admin::revoke(state, ctx, body).await,
        Route::Revocations => admin::revocations(state, ctx).await,
        Route::CloseConnection { connection } => admin::close_connection(connection, state, ctx).await,
        // The admin console's routes (#19 item 5), kept together.
        Route::AdminNodes => admin_console::nodes(state, ctx).await,
        Route::AdminConnections => admin_console::connections(state, ctx).await,
        Route::AdminTail => admin_console::tail(state, ctx, connection).await,
        Route::AdminPublish => admin_console::publish(state, ctx, body).await,
        Route::CreateWebhook => webhooks::create(state, ctx, body).await,
        Route::ListWebhooks => webhooks::list(state, ctx).await,
        Route::GetWebhook { webhook } => webhooks::get(webhook, state, ctx).await,
        Route::UpdateWebhook { webhook } => webhooks::update(webhook, state, ctx, body).await,
        Route::DeleteWebhook { webhook } => webhooks::delete(webhook, state, ctx).await,
        Route::ReplayWebhook { webhook } => webhooks::replay(webhook, state, ctx, body).await,
    }
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

/// What no route took: `405` with the `Allow` header when some route has
/// this path under another method (RFC 9110 requires the header), `404`
/// otherwise.
fn unrouted() -> BoxedFilter<(Response,)> {
    warp::path::full()
        .and(warp::method())
        .and(RequestContext::filter())
        .map(|path: FullPath, method: Method, ctx: RequestContext| {
            let allowed = if web::serves(path.as_str()) {
                Some("GET".to_owned())
            } else {
                routes::allowed(path.as_str())
            };
            error::unrouted(allowed.as_deref(), &method, &ctx.trace_id)
        })
        .boxed()
}
