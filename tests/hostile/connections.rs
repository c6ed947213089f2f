//! Connections that never finish what they started: a head that never
//! ends, a kept-alive connection that never sends another request, a body
//! that never arrives, and more connections than the node has room for.
//! Each must be cut off at its deadline or refused at once, while
//! `/healthz` keeps answering. Deadlines are shortened here (the defaults
//! are 10 s for a head and a body, 75 s of idleness).

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, TestApp};

const HEAD: Duration = Duration::from_secs(1);
const IDLE: Duration = Duration::from_secs(2);
const BODY: Duration = Duration::from_secs(1);

async fn app(direct_streams: bool, adjust: impl FnOnce(&mut pollcast::config::ServeConfig)) -> TestApp {
    TestApp::spawn_with(Backend::Memory, |config| {
        config.head_timeout = HEAD;
        config.idle_timeout = IDLE;
        config.body_timeout = BODY;
        config.direct_streams = direct_streams;
        adjust(config);
    })
    .await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes; returns what it sent and when it closed
/// (`None` if it still had not after `within`).
async fn read_until_closed(socket: &mut TcpStream, within: Duration) -> (String, Option<Duration>) {
    let start = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = within.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, socket.read(&mut buffer)).await {
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), None),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&received).into_owned(),
                    Some(start.elapsed()),
                )
            }
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

async fn healthz_answers(app: &TestApp) {
    let response = tokio::time::timeout(Duration::from_secs(3), app.http.get(app.url("/healthz")).send())
        .await
        .expect("/healthz answers within 3 s")
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn an_unfinished_head_is_cut_off(direct_streams: bool) {
    let app = app(direct_streams, |_| {}).await;
    let opened = Instant::now();
    let mut partial = connect(&app).await;
    partial.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let mut silent = connect(&app).await;
    let mut stream_partial = connect(&app).await;
    stream_partial
        .write_all(b"GET /v1/events?topic=demo:a HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    for (name, socket) in [
        ("partial head", &mut partial),
        ("nothing sent", &mut silent),
        ("partial stream head", &mut stream_partial),
    ] {
        let (_, closed) = read_until_closed(socket, HEAD * 4).await;
        assert!(closed.is_some(), "{name}: still open after {:?}", HEAD * 4);
        let closed = opened.elapsed();
        assert!(
            closed >= HEAD - Duration::from_millis(200),
            "{name}: closed too early, after {closed:?}"
        );
    }
    healthz_answers(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_head_is_cut_off_at_its_deadline() {
    an_unfinished_head_is_cut_off(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_head_is_cut_off_without_direct_streams() {
    an_unfinished_head_is_cut_off(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = app(true, |_| {}).await;
    for request in [
        &b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"[..],
    ] {
        let mut socket = connect(&app).await;
        socket.write_all(request).await.unwrap();
        let (received, closed) = read_until_closed(&mut socket, IDLE * 4).await;
        assert!(received.starts_with("HTTP/1."), "answered first: {received}");
        let closed = closed.expect("closed once idle");
        assert!(
            closed >= IDLE - Duration::from_millis(300),
            "not before the idle timeout: {closed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_gets_408() {
    let app = app(true, |_| {}).await;
    let token = app.demo_token();
    let mut socket = connect(&app).await;
    let head = format!(
        "POST /v1/topics/demo:a/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"type\":"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let (received, closed) = read_until_closed(&mut socket, BODY * 5).await;
    assert!(closed.is_some(), "the connection is closed after the 408");
    assert!(received.starts_with("HTTP/1.1 408"), "{received}");
    assert!(
        received.to_ascii_lowercase().contains("connection: close"),
        "{received}"
    );
    let body: Value = serde_json::from_str(received.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_without_a_token_is_refused_before_its_body() {
    let app = app(true, |config| config.body_timeout = Duration::from_secs(30)).await;
    let mut socket = connect(&app).await;
    socket
        .write_all(b"POST /v1/topics/demo:a/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut buffer = [0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut buffer))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&buffer[..n]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

/// A slowloris flood at the cap: connections that never send their heads
/// take the cap and its headroom, the rest are refused at once, and once
/// they have waited a second a real request makes room by evicting one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_long_waiting_connections_make_room_for_real_requests() {
    let app = app(true, |config| {
        config.max_connections = 12;
        config.head_timeout = Duration::from_secs(30);
    })
    .await;
    // The cap is 12, with a headroom of 16: 28 are held, 12 refused.
    let mut idle = Vec::new();
    for _ in 0..40 {
        let mut socket = connect(&app).await;
        socket.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        idle.push(socket);
    }
    let (answer, closed) = read_until_closed(idle.last_mut().unwrap(), Duration::from_secs(2)).await;
    assert!(
        closed.is_some() && answer.starts_with("HTTP/1.1 503"),
        "refused at once: {answer}"
    );
    assert!(
        answer.contains("\"unavailable\"") && answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    healthz_answers(&app).await;
    let token = app.demo_token();
    let publish = app
        .publish_raw(
            &token,
            "demo:a",
            serde_json::json!({"type": "demo:said", "payload": {}}),
        )
        .await;
    assert_eq!(publish.status(), 201);
    assert_eq!(
        app.subscribe(&["demo:a"], None).await.next().await.event,
        "connection:established"
    );
}

/// A node full of busy connections (open streams): short requests still
/// get through on the headroom, a new stream is refused, and past the
/// headroom a connection is refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_full_of_streams_keeps_headroom_for_short_requests() {
    let app = app(true, |config| {
        config.max_connections = 12;
        config.body_timeout = Duration::from_secs(30);
    })
    .await;
    let token = app.demo_token();
    let mut streams = Vec::new();
    for _ in 0..12 {
        streams.push(app.subscribe(&["demo:a"], None).await);
    }
    healthz_answers(&app).await;
    let publish = app
        .publish_raw(
            &token,
            "demo:a",
            serde_json::json!({"type": "demo:said", "payload": {}}),
        )
        .await;
    assert_eq!(publish.status(), 201, "a publish gets through at the cap");
    let refused = app
        .http
        .get(app.url("/v1/events?topic=demo:a"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503, "no new stream past the cap");
    // The headroom taken too, by requests whose bodies never come: a new
    // connection is refused at once, not left hanging.
    let mut stalled = Vec::new();
    for _ in 0..16 {
        let mut socket = connect(&app).await;
        let head = format!(
            "POST /v1/topics/demo:a/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        stalled.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut refused = connect(&app).await;
    let (answer, closed) = read_until_closed(&mut refused, Duration::from_secs(2)).await;
    assert!(closed.is_some(), "refused at once, not left hanging");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    drop(stalled);
    drop(streams);
    tokio::time::sleep(Duration::from_millis(300)).await;
    healthz_answers(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_share_of_connections() {
    let app = app(true, |config| config.max_connections_per_address = 4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut socket = connect(&app).await;
        socket.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(socket);
    }
    let mut fifth = connect(&app).await;
    let (answer, closed) = read_until_closed(&mut fifth, Duration::from_secs(2)).await;
    assert!(closed.is_some());
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("\"rate_limited\""), "{answer}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    healthz_answers(&app).await;
}
