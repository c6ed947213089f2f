//! The HTTP server: accepts connections on a listener, runs each through
//! the tower-http layers and the warp routes, and shuts down in seconds.
//!
//! A new connection is first offered to the direct SSE path
//! ([`super::direct`]), which serves stream requests that open without
//! error on the bare socket; the rest goes through hyper.
//!
//! Every hyper connection gets a [`ConnectionCloser`] in its request extensions:
//! the hub cancels it when that connection's stream falls too far behind,
//! which closes the socket even though the peer is not reading (a stalled
//! response is never polled again, so it could not end itself).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower_http::add_extension::AddExtensionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::direct::{DirectStreams, Rewind, Sniffed};

/// Closes one TCP connection when cancelled.
#[derive(Clone)]
pub struct ConnectionCloser(pub CancellationToken);

/// Longest a request may take to produce its response head. Streams are not
/// affected: their head goes out at once and the body is not timed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(45);
/// How long shutdown waits for open connections before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

pub struct ServerOptions {
    pub cors_origins: Vec<String>,
    /// Serves successful stream requests without hyper; `None` sends every
    /// request through hyper.
    pub direct: Option<DirectStreams>,
}

/// Serves `routes` on `listener` until `shutdown` is cancelled, then lets
/// open connections finish (streams end on the same signal) for a few
/// seconds and returns.
pub async fn serve(
    listener: TcpListener,
    routes: BoxedFilter<(Response,)>,
    options: ServerOptions,
    shutdown: CancellationToken,
) {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.max_buf_size(super::request::READ_BUFFER);
    let hyper_side = Arc::new(HyperSide {
        http1,
        routes,
        cors: cors_layer(&options.cors_origins),
    });
    let direct = options.direct.map(Arc::new);
    let graceful = GracefulShutdown::new();
    let connections = TaskTracker::new();
    loop {
        let (socket, _peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: wait, then go on.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let hyper_side = Arc::clone(&hyper_side);
        let watcher = graceful.watcher();
        let direct = direct.clone();
        // An open direct stream lives in this task for hours: it holds only
        // what the direct path needs; hyper's side is built when needed.
        connections.spawn(async move {
            let socket = match direct {
                None => Rewind::untouched(socket),
                Some(direct) => match direct.sniff(socket).await {
                    Sniffed::Hyper(socket) => socket,
                    Sniffed::Served | Sniffed::Gone => return,
                },
            };
            Box::pin(hyper_side.serve(socket, watcher)).await;
        });
    }
    drop(listener);
    connections.close();
    let drained = async { tokio::join!(graceful.shutdown(), connections.wait()) };
    tokio::select! {
        _ = drained => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("connections still open at shutdown; dropping them"),
    }
}

/// What every hyper connection is built from.
struct HyperSide {
    http1: hyper::server::conn::http1::Builder,
    routes: BoxedFilter<(Response,)>,
    cors: Option<CorsLayer>,
}

impl HyperSide {
    /// Serves one connection with hyper through the tower layers.
    async fn serve(&self, socket: Rewind, watcher: Watcher) {
        let closer = CancellationToken::new();
        let service = ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(TraceLayer::new_for_http())
            .layer(PropagateRequestIdLayer::x_request_id())
            .option_layer(self.cors.clone())
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                RESPONSE_TIMEOUT,
            ))
            .layer(AddExtensionLayer::new(ConnectionCloser(closer.clone())))
            .service(warp::service(self.routes.clone()));
        let connection = self
            .http1
            .serve_connection(TokioIo::new(socket), TowerToHyperService::new(service));
        tokio::select! {
            result = watcher.watch(connection) => if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            },
            _ = closer.cancelled() => tracing::debug!("closed a slow subscriber's connection"),
        }
    }
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                http::header::AUTHORIZATION,
                http::header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("traceparent"),
                HeaderName::from_static("x-admin-key"),
            ])
            .expose_headers([http::header::RETRY_AFTER, HeaderName::from_static("x-request-id")])
            .max_age(Duration::from_secs(600)),
    )
}
