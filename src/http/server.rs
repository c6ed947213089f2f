//! The HTTP server: accepts connections on a listener, runs each through
//! the tower-http layers and the warp routes, and shuts down in seconds.
//!
//! Each accepted connection is first admitted by [`Connections`] (caps per
//! node and per address; a refused one gets its 429 or 503 at once), then
//! offered to the direct SSE path ([`super::direct`]), which serves stream
//! requests that open without error on the bare socket; the rest goes
//! through hyper, watched for the deadlines of `connections`.
//!
//! Every request on a hyper connection carries a [`ConnectionInfo`]: its
//! closer, which the hub cancels when that connection's stream falls too
//! far behind (closing the socket even though the peer is not reading: a
//! stalled response is never polled again, so it could not end itself),
//! and where it comes from.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Request};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Service, ServiceBuilder};
use tower_http::cors::{AllowOrigin, CorsLayer};
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::connections::{
    client_address, AcceptErrorLog, Admission, ConnectionInfo, Connections, InFlight, Slot, Tracked,
    TrackedBody, Verdict,
};
use super::direct::{DirectStreams, Rewind, Sniffed};
use super::error::ApiError;
use super::request;
use crate::domain::event::TraceId;

/// Longest a request may take to produce its response head; past it the
/// client gets `503 unavailable` with `Retry-After`. Streams are not
/// affected: their head goes out at once and the body is not timed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(45);
/// How long shutdown waits for open connections before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

pub struct ServerOptions {
    pub cors_origins: Vec<String>,
    /// Serves successful stream requests without hyper; `None` sends every
    /// request through hyper.
    pub direct: Option<DirectStreams>,
    /// Every open connection, with its caps and deadlines.
    pub connections: Arc<Connections>,
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
    let connections = options.connections;
    let hyper_side = Arc::new(HyperSide {
        http1,
        routes,
        cors: cors_layer(&options.cors_origins),
        connections: Arc::clone(&connections),
    });
    let direct = options.direct.map(Arc::new);
    let graceful = GracefulShutdown::new();
    let tasks = TaskTracker::new();
    let mut accept_errors = AcceptErrorLog::new(Duration::from_secs(5));
    loop {
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: wait, then go
                    // on, saying so once in a while rather than every time.
                    if let Some(suppressed) = accept_errors.failed(tokio::time::Instant::now()) {
                        tracing::warn!(%error, suppressed, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match connections.admit(peer) {
            Admission::Admitted(slot) => slot,
            Admission::Refused(error) => {
                connections.refuse(socket, error);
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let hyper_side = Arc::clone(&hyper_side);
        let watcher = graceful.watcher();
        let direct = direct.clone();
        // An open direct stream lives in this task for hours: it holds only
        // what the direct path needs; hyper's side is built when needed.
        tasks.spawn(async move {
            let socket = match direct {
                None => Rewind::untouched(socket),
                Some(direct) => match direct.sniff(socket, &slot, peer).await {
                    Sniffed::Hyper(socket) => socket,
                    Sniffed::Served | Sniffed::Gone => return,
                },
            };
            Box::pin(hyper_side.serve(socket, watcher, slot, peer)).await;
        });
    }
    drop(listener);
    tasks.close();
    let drained = async { tokio::join!(graceful.shutdown(), tasks.wait()) };
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
    connections: Arc<Connections>,
}

impl HyperSide {
    /// Serves one connection with hyper through the tower layers, until it
    /// ends, misses a deadline, is evicted, or its stream is dropped as slow.
    async fn serve(&self, socket: Rewind, watcher: Watcher, slot: Slot, peer: SocketAddr) {
        // One token ends the connection for every reason from outside: an
        // eviction at the cap, or its stream dropped as too slow.
        let closer = slot.evicted.clone();
        let tracking = Tracking {
            activity: Arc::clone(&slot.activity),
            headroom: slot.headroom,
            peer: peer.ip(),
            connections: Arc::clone(&self.connections),
            closer: closer.clone(),
        };
        let service = ServiceBuilder::new()
            .layer_fn(|inner| TrackRequests {
                inner,
                tracking: tracking.clone(),
            })
            .option_layer(self.cors.clone())
            .layer_fn(|inner| ResponseDeadline { inner })
            .service(warp::service(self.routes.clone()));
        let socket = Tracked::new(socket, Arc::clone(&slot.activity));
        let connection = self
            .http1
            .serve_connection(TokioIo::new(socket), TowerToHyperService::new(service));
        let watched = watcher.watch(connection);
        tokio::pin!(watched);
        let limits = self.connections.limits();
        loop {
            let until = match slot.activity.verdict(limits) {
                Verdict::Until(until) => until,
                Verdict::HeadTimedOut => {
                    crate::metrics::connection_timed_out("head");
                    tracing::debug!(%peer, "closed a connection whose request head did not arrive in time");
                    return;
                }
                Verdict::IdleTimedOut => {
                    crate::metrics::connection_timed_out("idle");
                    tracing::debug!(%peer, "closed an idle keep-alive connection");
                    return;
                }
            };
            tokio::select! {
                result = &mut watched => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                    return;
                }
                _ = closer.cancelled() => {
                    tracing::debug!(%peer, "closed a connection: evicted to make room, or its stream too slow");
                    return;
                }
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }
}

/// The outermost layer of each hyper connection: counts the request in its
/// connection's activity until the response body is done, and gives the
/// request its [`ConnectionInfo`].
#[derive(Clone)]
struct TrackRequests<S> {
    inner: S,
    tracking: Tracking,
}

/// What [`TrackRequests`] knows of its connection.
#[derive(Clone)]
struct Tracking {
    activity: Arc<super::connections::Activity>,
    /// The connection was admitted past the cap: no stream, and it closes
    /// after its request.
    headroom: bool,
    peer: IpAddr,
    connections: Arc<Connections>,
    closer: CancellationToken,
}

impl<S, B, R> Service<Request<B>> for TrackRequests<S>
where
    S: Service<Request<B>, Response = http::Response<R>, Error = Infallible>,
{
    type Response = http::Response<TrackedBody<R>>;
    type Error = Infallible;
    type Future = TrackedResponse<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let tracking = &self.tracking;
        let in_flight = InFlight::start(&tracking.activity);
        let client = client_address(
            tracking.peer,
            request.headers(),
            &tracking.connections.limits().trusted_proxies,
        );
        let headroom = tracking.headroom;
        let trace_id = request::trace_id(request.headers());
        let span = request::span(trace_id.as_str(), request.method().as_str(), request.uri().path());
        let trace_header = HeaderValue::from_str(trace_id.as_str()).ok();
        request.extensions_mut().insert(ConnectionInfo {
            closer: tracking.closer.clone(),
            client,
            headroom,
            trace_id,
        });
        let response = span.in_scope(|| self.inner.call(request));
        TrackedResponse {
            response,
            in_flight: Some(in_flight),
            headroom,
            span,
            trace_header,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of a tracked request: hands its [`InFlight`] to the
    /// body. A named future rather than a boxed one: one allocation fewer
    /// per request.
    pub struct TrackedResponse<F> {
        #[pin]
        response: F,
        in_flight: Option<InFlight>,
        headroom: bool,
        // The request's span: entered while the handler runs, then handed
        // to the body.
        span: tracing::Span,
        // The trace id for the response's `request::TRACE_HEADER`.
        trace_header: Option<HeaderValue>,
    }
}

impl<F, R> Future for TrackedResponse<F>
where
    F: Future<Output = Result<http::Response<R>, Infallible>>,
{
    type Output = Result<http::Response<TrackedBody<R>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let polled = {
            let _entered = this.span.enter();
            this.response.poll(cx)
        };
        let Poll::Ready(Ok(mut response)) = polled else {
            return Poll::Pending;
        };
        if let Some(trace) = this.trace_header.take() {
            response
                .headers_mut()
                .insert(HeaderName::from_static(request::TRACE_HEADER), trace);
        }
        if *this.headroom {
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        let in_flight = this.in_flight.take().expect("polled after completion");
        let span = std::mem::replace(this.span, tracing::Span::none());
        Poll::Ready(Ok(response.map(|body| TrackedBody::new(body, in_flight, span))))
    }
}

/// Answers `503 unavailable` (the contract's body, `Retry-After: 1`) when
/// the routes take longer than [`RESPONSE_TIMEOUT`] to produce a response.
#[derive(Clone)]
struct ResponseDeadline<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for ResponseDeadline<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Deadline<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let trace_id = request
            .extensions()
            .get::<ConnectionInfo>()
            .map(|c| c.trace_id.clone());
        Deadline {
            response: tokio::time::timeout(RESPONSE_TIMEOUT, self.inner.call(request)),
            trace_id,
        }
    }
}

pin_project_lite::pin_project! {
    /// A response, or the 503 of [`ResponseDeadline`] when it takes too long.
    pub struct Deadline<F> {
        #[pin]
        response: tokio::time::Timeout<F>,
        trace_id: Option<TraceId>,
    }
}

impl<F> Future for Deadline<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.response.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(response)) => Poll::Ready(response),
            Poll::Ready(Err(_)) => {
                tracing::warn!("a request took longer than {RESPONSE_TIMEOUT:?} to answer");
                let error = ApiError::unavailable("the server took too long to answer; retry shortly");
                let trace_id = this.trace_id.take().unwrap_or_else(TraceId::generate);
                Poll::Ready(Ok(error.into_response(&trace_id)))
            }
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
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                http::header::AUTHORIZATION,
                http::header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("traceparent"),
                HeaderName::from_static("x-admin-key"),
            ])
            .expose_headers([
                http::header::RETRY_AFTER,
                HeaderName::from_static(request::TRACE_HEADER),
            ])
            .max_age(Duration::from_secs(600)),
    )
}
