//! Presence on generic topics (CONTRACT §4): who is on a topic, across
//! nodes; `presence:update` when a user arrives or leaves, debounced by
//! the grace period; and the heartbeat that refreshes `lastSeen`.

use std::time::Duration;

use pollcast::auth::{expiry_in, Claims};
use serde_json::{json, Value};

use crate::helpers::{data, Backend, SseClient, TestApp};
use crate::on_both_stores;

fn user_token(app: &TestApp, sub: &str) -> String {
    app.keys.mint(&Claims {
        sub: Some(sub.into()),
        exp: expiry_in(Duration::from_secs(600)),
        subscribe: vec!["demo:*".into()],
        ..Claims::default()
    })
}

async fn open_as(app: &TestApp, token: &str, agent: &str) -> (SseClient, String) {
    let response = app
        .http
        .get(app.url("/v1/events?topic=demo:room&presence=true"))
        .bearer_auth(token)
        .header("user-agent", agent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = SseClient::new(response);
    let hello = stream.next().await;
    let id = data(&hello)["payload"]["connectionId"]
        .as_str()
        .unwrap()
        .to_string();
    (stream, id)
}

async fn presence(app: &TestApp, token: &str, topic: &str) -> (u16, Value) {
    let response = app
        .http
        .get(app.url(&format!("/v1/topics/{topic}/presence")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The presence:update events a stream receives within `wait`.
async fn updates(stream: &mut SseClient, wait: Duration) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Some(event) = stream.next_within(deadline - tokio::time::Instant::now()).await {
        if event.event == "presence:update" {
            let payload = data(&event)["payload"].clone();
            let user = payload["userId"].as_str().unwrap();
            // The watcher's own arrival is announced too; keep the others.
            if user != "bob" {
                seen.push((user.into(), payload["action"].as_str().unwrap().into()));
            }
        }
    }
    seen
}

async fn who_is_here_and_who_comes_and_goes(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.grace_period = Duration::from_millis(400)).await;
    let bob = user_token(&app, "bob");
    let ann = user_token(&app, "ann");
    let (mut bobs, _) = open_as(&app, &bob, "bob-browser/1").await;
    let (anns, ann_connection) = open_as(&app, &ann, "ann-phone/2").await;
    assert_eq!(
        updates(&mut bobs, Duration::from_millis(600)).await,
        [("ann".into(), "joined".into())]
    );

    // A stream that did not ask for presence is neither listed nor announced.
    let carol = user_token(&app, "carol");
    let _carols = app.subscribe_with(&carol, &["demo:room"], None).await;
    let (status, listed) = presence(&app, &bob, "demo:room").await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        (listed["connections"].as_u64(), listed["users"].as_u64()),
        (Some(2), Some(2))
    );
    let ann_record = listed["present"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["userId"] == "ann")
        .unwrap()
        .clone();
    assert_eq!(ann_record["connectionId"], ann_connection.as_str());
    assert_eq!(ann_record["userAgent"], "ann-phone/2");
    assert!(ann_record["connectedAt"].is_string() && ann_record["lastSeen"].is_string());

    // The heartbeat refreshes lastSeen, for the stream's own token only.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let beat = |token: &str, connection: &str| {
        app.http
            .post(app.url("/v1/presence/heartbeat"))
            .bearer_auth(token)
            .json(&json!({ "connectionId": connection }))
            .send()
    };
    assert_eq!(beat(&ann, &ann_connection).await.unwrap().status(), 200);
    assert_eq!(beat(&bob, &ann_connection).await.unwrap().status(), 403);
    assert_eq!(
        beat(&ann, &uuid::Uuid::new_v4().to_string())
            .await
            .unwrap()
            .status(),
        404
    );
    let (_, after) = presence(&app, &bob, "demo:room").await;
    let refreshed = after["present"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["userId"] == "ann")
        .unwrap();
    assert!(
        refreshed["lastSeen"].as_str() > ann_record["lastSeen"].as_str(),
        "{refreshed}"
    );

    // A reconnect within the grace period does not flap.
    drop(anns);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (anns_again, _) = open_as(&app, &ann, "ann-phone/2").await;
    assert_eq!(updates(&mut bobs, Duration::from_millis(800)).await, []);
    // Leaving for good is announced once the grace period is over.
    drop(anns_again);
    assert_eq!(
        updates(&mut bobs, Duration::from_millis(1200)).await,
        [("ann".into(), "left".into())]
    );
    let (_, alone) = presence(&app, &bob, "demo:room").await;
    assert_eq!(alone["connections"], 1);

    // Refusals.
    assert_eq!(presence(&app, &bob, "other:room").await.0, 403);
    assert_eq!(presence(&app, &bob, "Bad!").await.0, 400);
    let participant = format!("participant:{}", uuid::Uuid::new_v4());
    assert_eq!(presence(&app, &bob, &participant).await.0, 403);
}
on_both_stores!(presence_on_a_topic, who_is_here_and_who_comes_and_goes);

/// Streams on two nodes of one database: either node lists both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_global_across_nodes() {
    let first = TestApp::spawn_with(Backend::Postgres, |c| c.presence_ttl = Duration::from_millis(600)).await;
    let mut config = crate::helpers::test_config();
    config.database_url = Some(first.db.as_ref().unwrap().url.clone().into());
    config.presence_ttl = Duration::from_millis(600);
    let second = TestApp::start(config, None).await;
    let ann = user_token(&first, "ann");
    let bob = user_token(&first, "bob");
    let (_on_first, ann_connection) = open_as(&first, &ann, "a").await;
    let (_on_second, bob_connection) = open_as(&second, &bob, "b").await;
    // Both nodes have seen each other's heartbeat.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for node in [&first, &second] {
        let (status, listed) = presence(node, &ann, "demo:room").await;
        assert_eq!(status, 200);
        let mut connections: Vec<&str> = listed["present"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["connectionId"].as_str().unwrap())
            .collect();
        connections.sort_unstable();
        let mut want = vec![ann_connection.as_str(), bob_connection.as_str()];
        want.sort_unstable();
        assert_eq!(connections, want, "{listed}");
    }
    // The heartbeat also reaches a stream held by the other node.
    let beat = first
        .http
        .post(first.url("/v1/presence/heartbeat"))
        .bearer_auth(&bob)
        .json(&json!({ "connectionId": bob_connection }))
        .send()
        .await
        .unwrap();
    assert_eq!(beat.status(), 200);
}
