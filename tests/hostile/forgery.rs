//! Requests that pretend: a body smuggled behind a stream request, an
//! event dressed as the server's own, a vote cast with a token that names
//! one session and another session's participant.

use std::time::Duration;

use pollcast::auth::{expiry_in, Claims};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, TestApp};
use crate::polling_helpers::{create_session, post};

async fn smuggled_stream_request(direct_streams: bool) {
    let app = TestApp::spawn_with(Backend::Memory, |c| c.direct_streams = direct_streams).await;
    let token = app.demo_token();
    let mut socket = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let request = format!(
        "GET /v1/events?topic=demo:a&access_token={token} HTTP/1.1\r\nHost: x\r\n\
         Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        read.is_ok(),
        "answered and closed, not served as a stream: {answer}"
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(!answer.contains("text/event-stream"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_both_lengths_is_refused_on_the_direct_path() {
    smuggled_stream_request(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_both_lengths_is_refused_through_hyper() {
    smuggled_stream_request(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_cannot_pass_for_the_server() {
    let app = TestApp::spawn(Backend::Memory).await;
    let token = app.demo_token();
    for event_type in [
        "system:alert",
        "system:status",
        "connection:reset",
        "presence:update",
    ] {
        let response = app
            .publish_raw(
                &token,
                "demo:a",
                json!({"type": event_type, "payload": {"level": "critical"}}),
            )
            .await;
        assert_eq!(response.status(), 422, "{event_type}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("only by the server"),
            "{body}"
        );
    }
    assert_eq!(app.history_len("topic=demo:a").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_mixing_two_sessions_cannot_vote() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let ours = create_session(&app, "ours").await;
    let theirs = create_session(&app, "theirs").await;
    for session in [&ours, &theirs] {
        session.start(&app).await;
    }
    let poll = ours.choice_poll(&app, true).await;
    ours.activate(&app, &poll).await;
    let outsider = theirs.join(&app, Some("Mallory")).await;
    // Minted with the secret: our session's id, their participant's id.
    let forged = app.keys.mint(&Claims {
        sub: Some(outsider.id.clone()),
        exp: expiry_in(Duration::from_secs(600)),
        role: Some("participant".into()),
        sid: Some(ours.id.clone()),
        subscribe: vec![format!("session:{}", ours.id)],
        ..Claims::default()
    });
    let option = poll["options"][0]["optionId"].as_str().unwrap();
    let (status, body) = post(
        &app,
        Some(&forged),
        &format!("/v1/polls/{}/votes", poll["pollId"].as_str().unwrap()),
        json!({"voteData": {"selectedOptionIds": [option]}}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let results = ours.snapshot(&app).await;
    assert_eq!(
        results["polls"][0]["voteCount"].as_i64().unwrap_or(0),
        0,
        "{results}"
    );
}
