//! The two ways a stream is served: directly on the socket (the default)
//! and through hyper (`--direct-streams false`, and every request the
//! direct path hands over). Both must look the same to a client.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, TestApp};

async fn app(direct: bool) -> TestApp {
    TestApp::spawn_with(Backend::Memory, |c| c.direct_streams = direct).await
}

/// Sends `request` in pieces and reads until `enough` says the answer so
/// far is enough (or the server closes, or 5 s pass).
async fn exchange(app: &TestApp, pieces: &[&str], enough: impl Fn(&str) -> bool) -> String {
    let mut socket = TcpStream::connect(app.server().addr()).await.unwrap();
    for piece in pieces {
        socket.write_all(piece.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while !enough(&String::from_utf8_lossy(&answer)) {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn wait_for_subscribers(app: &TestApp, count: usize) -> bool {
    let hub = &app.server().state().hub;
    for _ in 0..250 {
        if hub.subscriber_count() == count {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn both_paths_serve_the_same_headers_and_events() {
    for direct in [true, false] {
        let app = app(direct).await;
        let response = app
            .http
            .get(app.url("/v1/events?topic=demo:a"))
            .bearer_auth(app.demo_token())
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], "text/event-stream", "direct={direct}");
        assert_eq!(headers["cache-control"], "no-cache");
        assert_eq!(headers["x-accel-buffering"], "no");
        // The one correlation id: the traceparent's trace id, echoed.
        assert_eq!(
            headers["x-trace-id"], "4bf92f3577b34da6a3ce929d0e0e4736",
            "direct={direct}"
        );
        assert!(headers.contains_key("date"));
        let mut client = crate::helpers::SseClient::new(response);
        assert_eq!(client.next().await.event, "connection:established");
        let sent = app
            .publish("demo:a", "demo:said", json!({"text": "line one\nline two"}))
            .await;
        let got = client.next_stored().await;
        assert_eq!(got.id, sent["id"].as_str().unwrap(), "direct={direct}");
        assert_eq!(
            crate::helpers::data(&got)["payload"]["text"],
            "line one\nline two"
        );
    }
}

#[tokio::test]
async fn a_client_that_hangs_up_is_detached_on_both_paths() {
    for direct in [true, false] {
        let app = app(direct).await;
        let client = app.subscribe(&["demo:a"], None).await;
        assert!(wait_for_subscribers(&app, 1).await);
        drop(client);
        // Nothing is published: the server must notice the close by itself.
        assert!(
            wait_for_subscribers(&app, 0).await,
            "direct={direct}: the closed stream is still attached"
        );
    }
}

#[tokio::test]
async fn a_request_head_sent_in_pieces_still_opens_a_stream() {
    let app = app(true).await;
    let token = app.demo_token();
    let middle = format!("Host: x\r\nAuthorization: Bearer {token}\r\n");
    let answer = exchange(
        &app,
        &[
            "GET /v1/events?to",
            &format!("pic=demo:a HTTP/1.1\r\n{middle}"),
            "\r\n",
        ],
        |a| a.contains("connection:established"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("transfer-encoding: chunked"), "{answer}");
    assert!(answer.contains("connection:established"), "{answer}");
}

#[tokio::test]
async fn requests_the_direct_path_declines_are_answered_by_hyper() {
    let app = app(true).await;
    let token = app.demo_token();
    // HTTP/1.0 has no chunked encoding: hyper serves it.
    let old = format!("GET /v1/events?topic=demo:a HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n");
    let answer = exchange(&app, &[&old], |a| a.contains("connection:established")).await;
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    assert!(answer.contains("connection:established"), "{answer}");
    // A refusal on a stream path is rendered by the routes, with the body.
    let refused = exchange(
        &app,
        &["GET /v1/events?topic=demo:a HTTP/1.1\r\nHost: x\r\n\r\n"],
        |a| a.contains("unauthorized"),
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(refused.contains("\"code\":\"unauthorized\""), "{refused}");
    // Not HTTP at all.
    let garbage = exchange(&app, &["\u{1}\u{2}\u{3} hello\r\n\r\n"], |a| !a.is_empty()).await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
}

#[tokio::test]
async fn a_cross_origin_stream_gets_its_cors_headers() {
    let app = TestApp::spawn_with(Backend::Memory, |c| {
        c.cors_origins = vec!["http://app.example".into()]
    })
    .await;
    let response = app
        .http
        .get(app.url("/v1/events?topic=demo:a"))
        .bearer_auth(app.demo_token())
        .header("Origin", "http://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    assert_eq!(response.headers()["content-type"], "text/event-stream");
}
