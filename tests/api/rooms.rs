//! Rooms on an open stream (CONTRACT §4): joining and leaving topics by
//! connection id, from the node holding the stream or another one; the
//! personal topic `user:<sub>`; and the per-token limits on streams and
//! publishes.

use std::time::Duration;

use pollcast::auth::{expiry_in, Claims};
use serde_json::{json, Value};

use crate::helpers::{data, Backend, SseClient, TestApp};
use crate::on_both_stores;

fn token_for(app: &TestApp, sub: Option<&str>, publish: &[&str], subscribe: &[&str]) -> String {
    app.keys.mint(&Claims {
        sub: sub.map(str::to_string),
        exp: expiry_in(Duration::from_secs(3600)),
        publish: publish.iter().map(|s| s.to_string()).collect(),
        subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        ..Claims::default()
    })
}

/// Opens a stream and returns it with its connection id.
async fn open(app: &TestApp, token: &str, topics: &[&str]) -> (SseClient, String) {
    let mut stream = app.subscribe_with(token, topics, None).await;
    let hello = stream.next().await;
    assert_eq!(hello.event, "connection:established");
    let id = data(&hello)["payload"]["connectionId"]
        .as_str()
        .unwrap()
        .to_string();
    (stream, id)
}

async fn room_request(
    app: &TestApp,
    token: &str,
    method: &str,
    connection: &str,
    topic: &str,
) -> (u16, Value) {
    let request = match method {
        "POST" => app
            .http
            .post(app.url(&format!("/v1/connections/{connection}/topics")))
            .json(&json!({ "topic": topic })),
        _ => app
            .http
            .delete(app.url(&format!("/v1/connections/{connection}/topics/{topic}"))),
    };
    let response = request.bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn publish_as(app: &TestApp, token: &str, topic: &str, n: i64) -> Value {
    let response = app
        .publish_raw(token, topic, json!({"type": "demo:said", "payload": {"n": n}}))
        .await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn joining_and_leaving_without_reconnecting(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.demo_token();
    let (mut stream, connection) = open(&app, &token, &["demo:a"]).await;

    publish_as(&app, &token, "demo:b", 1).await; // before the join: not for us
    let (status, joined) = room_request(&app, &token, "POST", &connection, "demo:b").await;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["changed"], true);
    assert!(
        joined["topics"].as_array().unwrap().contains(&json!("demo:b")),
        "{joined}"
    );
    let confirmed = stream.next().await;
    assert_eq!(confirmed.event, "system:subscribed");
    let notice = data(&confirmed);
    assert_eq!(notice["payload"]["topic"], "demo:b");
    assert_eq!(notice["payload"]["connectionId"], connection.as_str());
    assert!(
        notice.get("id").is_none(),
        "a confirmation is not stored: {notice}"
    );

    let after_join = publish_as(&app, &token, "demo:b", 2).await;
    assert_eq!(stream.next_stored().await.id, after_join["id"].as_str().unwrap());

    // Joining again changes nothing and sends nothing.
    let (status, again) = room_request(&app, &token, "POST", &connection, "demo:b").await;
    assert_eq!((status, &again["changed"]), (200, &json!(false)));

    let (status, _) = room_request(&app, &token, "DELETE", &connection, "demo:b").await;
    assert_eq!(status, 200);
    assert_eq!(stream.next().await.event, "system:unsubscribed");
    publish_as(&app, &token, "demo:b", 3).await; // left: not for us
    let on_a = publish_as(&app, &token, "demo:a", 4).await;
    assert_eq!(stream.next_stored().await.id, on_a["id"].as_str().unwrap());
}
on_both_stores!(join_and_leave, joining_and_leaving_without_reconnecting);

async fn room_changes_are_refused_as_the_contract_says(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = token_for(&app, None, &["demo:*"], &["demo:*"]);
    let (_stream, connection) = open(&app, &token, &["demo:a"]).await;

    let someone_else = token_for(&app, Some("mallory"), &[], &["demo:*"]);
    assert_eq!(
        room_request(&app, &someone_else, "POST", &connection, "demo:b")
            .await
            .0,
        403
    );
    assert_eq!(
        room_request(&app, &someone_else, "DELETE", &connection, "demo:a")
            .await
            .0,
        403
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, body) = room_request(&app, &token, "POST", &unknown, "demo:b").await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    assert_eq!(
        room_request(&app, &token, "POST", "not-a-uuid", "demo:b").await.0,
        404
    );
    // Topics the token may not read, private ones, malformed ones.
    assert_eq!(
        room_request(&app, &token, "POST", &connection, "other:b").await.0,
        403
    );
    let wide = token_for(&app, None, &[], &["*:*"]);
    let (_wide_stream, wide_connection) = open(&app, &wide, &["demo:a"]).await;
    let private = format!("participant:{}", uuid::Uuid::new_v4());
    assert_eq!(
        room_request(&app, &wide, "POST", &wide_connection, &private)
            .await
            .0,
        403
    );
    assert_eq!(
        room_request(&app, &token, "POST", &connection, "Demo:B!").await.0,
        400
    );
    // The last topic cannot be left: an empty stream would be everything.
    let (status, body) = room_request(&app, &token, "DELETE", &connection, "demo:a").await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")));
    // Without a token at all.
    let anonymous = app
        .http
        .post(app.url(&format!("/v1/connections/{connection}/topics")))
        .json(&json!({"topic": "demo:b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}
on_both_stores!(room_refusals, room_changes_are_refused_as_the_contract_says);

async fn a_token_with_sub_follows_its_personal_topic(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ann = token_for(&app, Some("ann"), &[], &["demo:*"]);
    let (mut laptop, _) = open(&app, &ann, &["demo:a"]).await;
    let (mut phone, _) = open(&app, &ann, &["demo:b"]).await;
    let bob = token_for(&app, Some("bob"), &[], &["demo:*"]);
    let (mut bobs, _) = open(&app, &bob, &["demo:a"]).await;

    let backend_token = token_for(&app, None, &["user:*"], &[]);
    let note = publish_as(&app, &backend_token, "user:ann", 1).await;
    for stream in [&mut laptop, &mut phone] {
        let got = stream.next_stored().await;
        assert_eq!(
            (got.id.as_str(), data(&got)["topic"].as_str()),
            (note["id"].as_str().unwrap(), Some("user:ann"))
        );
    }
    assert!(
        bobs.next_within(Duration::from_millis(500)).await.is_none(),
        "bob got ann's notification"
    );
}
on_both_stores!(personal_topic, a_token_with_sub_follows_its_personal_topic);

/// Given a token with `sub: ann` and no subscribe claim naming `user:ann`,
/// when it opens a stream on its personal topic alone and reads that
/// topic's history, then both work; another user's topic stays 403.
async fn a_personal_topic_needs_no_claim(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ann = token_for(&app, Some("ann"), &[], &["demo:*"]);
    let (mut alone, _) = open(&app, &ann, &["user:ann"]).await;
    let backend_token = token_for(&app, None, &["user:*"], &[]);
    let note = publish_as(&app, &backend_token, "user:ann", 1).await;
    assert_eq!(alone.next_stored().await.id, note["id"].as_str().unwrap());
    let history = app.history_with(&ann, "topic=user:ann").await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["id"], note["id"]);
    let bobs = app
        .http
        .get(app.url("/v1/events?topic=user:bob"))
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap();
    assert_eq!(bobs.status(), 403);
}
on_both_stores!(personal_topic_alone, a_personal_topic_needs_no_claim);

/// A stream on one node, its room changed through another node of the
/// same database: the bus carries the change to the node holding it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_changes_through_any_node() {
    let first = TestApp::spawn(Backend::Postgres).await;
    let mut config = crate::helpers::test_config();
    config.database_url = Some(first.db.as_ref().unwrap().url.clone().into());
    let second = TestApp::start(config, None).await;
    let token = first.demo_token();
    let (mut stream, connection) = open(&first, &token, &["demo:a"]).await;

    let (status, joined) = room_request(&second, &token, "POST", &connection, "demo:z").await;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(stream.next().await.event, "system:subscribed");
    let event = publish_as(&second, &token, "demo:z", 1).await;
    assert_eq!(stream.next_stored().await.id, event["id"].as_str().unwrap());

    let stranger = token_for(&first, Some("mallory"), &[], &["demo:*"]);
    assert_eq!(
        room_request(&second, &stranger, "POST", &connection, "demo:y")
            .await
            .0,
        403
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        room_request(&second, &token, "POST", &unknown, "demo:y").await.0,
        404
    );
    let (status, _) = room_request(&second, &token, "DELETE", &connection, "demo:z").await;
    assert_eq!(status, 200);
    assert_eq!(stream.next().await.event, "system:unsubscribed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_per_token_are_limited() {
    let app = TestApp::spawn_with(Backend::Memory, |c| c.streams_per_token = 2).await;
    let token = app.demo_token();
    let first = open(&app, &token, &["demo:a"]).await;
    let _second = open(&app, &token, &["demo:a"]).await;
    let refused = app.get_with(&token, "/v1/events?topic=demo:a").await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another token is not affected; closing a stream frees its place.
    let other = token_for(&app, Some("other"), &[], &["demo:*"]);
    let _theirs = open(&app, &other, &["demo:a"]).await;
    drop(first);
    let mut freed = false;
    for _ in 0..50 {
        let response = app.get_with(&token, "/v1/events?topic=demo:a").await;
        if response.status() == 200 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "the closed stream's place was never given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_per_token_are_rate_limited_and_refusals_append_nothing() {
    let app = TestApp::spawn_with(Backend::Postgres, |c| c.publish_rate = 5).await;
    let token = app.demo_token();
    let mut accepted = 0;
    let mut refused = 0;
    for n in 0..20 {
        let response = app
            .publish_raw(
                &token,
                "demo:limited",
                json!({"type": "demo:said", "payload": {"n": n}}),
            )
            .await;
        match response.status().as_u16() {
            201 => accepted += 1,
            429 => {
                assert!(response.headers().contains_key("retry-after"));
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "rate_limited");
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        accepted >= 5 && refused > 0,
        "accepted {accepted}, refused {refused}"
    );
    assert_eq!(app.history_len("topic=demo:limited&after=0").await, accepted);
    // Another token has its own budget.
    let other = token_for(&app, Some("other"), &["demo:*"], &[]);
    publish_as(&app, &other, "demo:limited", 99).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topic_and_body_caps_are_configurable() {
    let app = TestApp::spawn_with(Backend::Memory, |c| {
        c.max_topics = 2;
        c.max_body = 2048;
    })
    .await;
    let token = token_for(&app, None, &["demo:*"], &["demo:*"]);
    let too_many = app
        .get_with(&token, "/v1/events?topic=demo:a&topic=demo:b&topic=demo:c")
        .await;
    assert_eq!(too_many.status(), 400);
    let (_stream, connection) = open(&app, &token, &["demo:a", "demo:b"]).await;
    let (status, body) = room_request(&app, &token, "POST", &connection, "demo:c").await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")));
    let big = json!({"type": "demo:said", "payload": {"pad": "x".repeat(3000)}});
    let refused = app.publish_raw(&token, "demo:a", big).await;
    assert_eq!(refused.status(), 413);
    let small = json!({"type": "demo:said", "payload": {"pad": "x".repeat(1000)}});
    assert_eq!(app.publish_raw(&token, "demo:a", small).await.status(), 201);
}
