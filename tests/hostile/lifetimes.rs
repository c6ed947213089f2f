//! A stream lives no longer than the right to it: its token's expiry, a
//! revocation, an admin's word, or the end of its session each end it with
//! a last frame saying why, and the client's next attempt is refused (or,
//! for an ended session, answered `204`, which stops `EventSource`).

use std::time::{Duration, Instant};

use pollcast::auth::{expiry_in, unix_now, Claims};
use pollcast::config::ServeConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{data, Backend, SseClient, TestApp, TestDb};
use crate::on_both_stores;
use crate::polling_helpers::create_session;

const ADMIN: &str = "admin-secret";

fn with_admin(config: &mut ServeConfig) {
    config.admin_key = Some(ADMIN.into());
}

fn token(app: &TestApp, sub: &str, jti: &str, ttl: Duration) -> String {
    app.keys.mint(&Claims {
        sub: Some(sub.into()),
        exp: expiry_in(ttl),
        iat: Some(unix_now()),
        jti: Some(jti.into()),
        publish: vec!["demo:*".into()],
        subscribe: vec!["demo:*".into()],
        ..Claims::default()
    })
}

/// Frames until the stream ends (or `within` passes), transient ones included.
async fn until_end(stream: &mut SseClient, within: Duration) -> Vec<eventsource_stream::Event> {
    let deadline = Instant::now() + within;
    let mut frames = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match stream.next_within(left).await {
            Some(frame) => frames.push(frame),
            None => break,
        }
    }
    frames
}

fn closing(frames: &[eventsource_stream::Event]) -> Value {
    let last = frames.last().expect("some frames");
    assert_eq!(
        last.event, "connection:closing",
        "the last frame says why: {frames:?}"
    );
    data(last)["payload"].clone()
}

async fn open(app: &TestApp, token: &str, query: &str) -> reqwest::Response {
    app.http
        .get(app.url(&format!("/v1/events?topic=demo:life{query}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn a_stream_ends_when_its_token_expires(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // `exp` has a resolution of a second: valid for 2 s from now, at least 1.
    let short = token(&app, "ann", "short", Duration::from_secs(2));
    let response = open(&app, &short, "").await;
    assert_eq!(response.status(), 200);
    let mut stream = SseClient::new(response);
    assert_eq!(stream.next().await.event, "connection:established");
    let first = app.publish("demo:life", "demo:said", json!({"n": 1})).await;
    let started = Instant::now();
    let frames = until_end(&mut stream, Duration::from_secs(6)).await;
    let payload = closing(&frames);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ended at expiry, not later"
    );
    assert_eq!(payload["reason"], "token_expired");
    assert_eq!(payload["reconnect"], true);
    assert_eq!(payload["lastEventId"], first["id"], "{payload}");
    assert!(
        stream.ends_within(Duration::from_secs(1)).await,
        "and the stream is over"
    );
    // Missed while away, then picked up with a fresh token from lastEventId.
    let missed = app.publish("demo:life", "demo:said", json!({"n": 2})).await;
    let again = open(&app, &short, "").await;
    assert_eq!(again.status(), 401);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"]["code"], "token_expired");
    let fresh = token(&app, "ann", "fresh", Duration::from_secs(3600));
    let resumed = open(
        &app,
        &fresh,
        &format!("&lastEventId={}", payload["lastEventId"].as_str().unwrap()),
    )
    .await;
    let mut resumed = SseClient::new(resumed);
    assert_eq!(resumed.next().await.event, "connection:reconnected");
    assert_eq!(data(&resumed.next_stored().await)["id"], missed["id"]);
}

on_both_stores!(token_expiry_ends_a_stream, a_stream_ends_when_its_token_expires);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_not_valid_before_its_nbf() {
    let app = TestApp::spawn(Backend::Memory).await;
    let early = app.keys.mint(&Claims {
        sub: Some("ann".into()),
        exp: expiry_in(Duration::from_secs(3600)),
        nbf: Some(unix_now() + 600),
        subscribe: vec!["demo:*".into()],
        ..Claims::default()
    });
    let response = open(&app, &early, "").await;
    assert_eq!(response.status(), 401);
}

/// Two nodes on one database, both with the admin key.
async fn two_nodes() -> (TestApp, TestApp) {
    let a = TestApp::spawn_with(Backend::Postgres, with_admin).await;
    let mut config = crate::helpers::test_config();
    config.database_url = a.db.as_ref().map(|db: &TestDb| db.url.clone().into());
    with_admin(&mut config);
    let b = TestApp::start(config, None).await;
    (a, b)
}

async fn admin(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app
        .http
        .request(method, app.url(path))
        .header("X-Admin-Key", ADMIN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_ends_streams_on_every_node_within_a_second() {
    let (a, b) = two_nodes().await;
    let doomed = token(&b, "ann", "doomed-jti", Duration::from_secs(3600));
    let spared = token(&b, "bob", "spared-jti", Duration::from_secs(3600));
    let mut on_b = SseClient::new(open(&b, &doomed, "").await);
    let mut bystander = SseClient::new(open(&b, &spared, "").await);
    assert_eq!(on_b.next().await.event, "connection:established");
    assert_eq!(bystander.next().await.event, "connection:established");

    let started = Instant::now();
    let (status, body) = admin(
        &a,
        reqwest::Method::POST,
        "/v1/admin/revocations",
        Some(json!({"jti": "doomed-jti"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let frames = until_end(&mut on_b, Duration::from_secs(3)).await;
    let payload = closing(&frames);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "reached the other node in {:?}",
        started.elapsed()
    );
    assert_eq!(payload["reason"], "token_revoked");
    assert_eq!(payload["reconnect"], false);
    assert!(
        bystander.next_within(Duration::from_millis(500)).await.is_none(),
        "other tokens are untouched"
    );

    for node in [&a, &b] {
        let refused = open(node, &doomed, "").await;
        assert_eq!(refused.status(), 401);
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "token_revoked");
        assert_eq!(open(node, &spared, "").await.status(), 200);
    }
    let (status, list) = admin(&b, reqwest::Method::GET, "/v1/admin/revocations", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["revocations"][0]["jti"], "doomed-jti", "{list}");

    // By subject: the tokens issued so far, not the ones issued after.
    let (status, _) = admin(
        &b,
        reqwest::Method::POST,
        "/v1/admin/revocations",
        Some(json!({"sub": "bob"})),
    )
    .await;
    assert_eq!(status, 201);
    let frames = until_end(&mut bystander, Duration::from_secs(3)).await;
    assert_eq!(closing(&frames)["reason"], "token_revoked");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let reissued = token(&a, "bob", "new-jti", Duration::from_secs(3600));
    assert_eq!(
        open(&a, &reissued, "").await.status(),
        200,
        "a token issued after the revocation works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_ends_a_connection_held_by_another_node() {
    let (a, b) = two_nodes().await;
    let ann = token(&b, "ann", "ann-1", Duration::from_secs(3600));
    let mut stream = SseClient::new(open(&b, &ann, "").await);
    let hello = stream.next().await;
    let connection = data(&hello)["payload"]["connectionId"]
        .as_str()
        .unwrap()
        .to_string();

    let path = format!("/v1/admin/connections/{connection}");
    let refused = a.http.delete(a.url(&path)).send().await.unwrap();
    assert_eq!(refused.status(), 401, "the admin key is required");
    let (status, _) = admin(&a, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    let frames = until_end(&mut stream, Duration::from_secs(3)).await;
    assert_eq!(closing(&frames)["reason"], "closed_by_admin");
    let (status, body) = admin(&a, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 404, "gone now: {body}");
    // The token itself is still good.
    assert_eq!(open(&a, &ann, "").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_key_the_admin_api_is_off() {
    let app = TestApp::spawn(Backend::Memory).await;
    let response = app
        .http
        .post(app.url("/v1/admin/revocations"))
        .header("X-Admin-Key", "anything")
        .json(&json!({"sub": "ann"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

async fn ending_a_session_ends_its_streams(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = create_session(&app, "ends").await;
    session.start(&app).await;
    let participant = session.join(&app, Some("Pat")).await;
    let mut watcher = session.watch(&app, None, None).await;
    let mut voter = session.watch(&app, Some(&participant.token), None).await;
    assert_eq!(watcher.next().await.event, "connection:established");
    assert_eq!(voter.next().await.event, "connection:established");
    let before_end = app.server().state().hub.high();
    session.end(&app).await;
    let mut ended_id = String::new();
    for stream in [&mut watcher, &mut voter] {
        let frames = until_end(stream, Duration::from_secs(5)).await;
        let last = frames.last().expect("frames");
        assert_eq!(
            last.event, "session:ended",
            "the stream ends right after session:ended: {frames:?}"
        );
        ended_id = last.id.clone();
    }
    let url = app.url(&format!("/v1/sessions/{}/events", session.id));
    // Seen the end, or never connected: 204, and EventSource stops.
    for last in [Some(ended_id.as_str()), None] {
        let mut request = app.http.get(&url);
        if let Some(id) = last {
            request = request.header("Last-Event-ID", id);
        }
        assert_eq!(
            request.send().await.unwrap().status(),
            204,
            "Last-Event-ID {last:?}"
        );
    }
    // Away since before the end: replayed up to the end, then over.
    let response = app
        .http
        .get(&url)
        .header("Last-Event-ID", before_end.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let frames = until_end(&mut SseClient::new(response), Duration::from_secs(5)).await;
    assert_eq!(frames.last().unwrap().event, "session:ended", "{frames:?}");
}

on_both_stores!(session_end_ends_its_streams, ending_a_session_ends_its_streams);
