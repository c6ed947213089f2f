//! Versions and conflicts on generic topics (CONTRACT §4): a publish naming
//! an `entityId` gets the entity's next `version`; an `expectedVersion`
//! that is not the current one is 409 `conflict` with the current version,
//! and appends nothing.

use futures::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{data, Backend, TestApp};
use crate::on_both_stores;

async fn versioned(app: &TestApp, topic: &str, entity: &str, expected: Option<i64>, n: i64) -> (u16, Value) {
    let mut body = json!({"type": "doc:updated", "entityId": entity, "payload": {"n": n}});
    if let Some(expected) = expected {
        body["expectedVersion"] = json!(expected);
    }
    let response = app.publish_raw(&app.demo_token(), topic, body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn optimistic_locking_per_topic_and_entity(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut stream = app.subscribe(&["demo:docs"], None).await;
    stream.next().await; // connection:established

    let (status, created) = versioned(&app, "demo:docs", "doc-1", Some(0), 1).await;
    assert_eq!(
        (status, &created["version"], &created["entityId"]),
        (201, &json!(1), &json!("doc-1"))
    );
    let (status, updated) = versioned(&app, "demo:docs", "doc-1", Some(1), 2).await;
    assert_eq!((status, &updated["version"]), (201, &json!(2)));

    // A publisher that saw version 1 loses: told the current version, nothing appended.
    let before = app.history_len("topic=demo:docs&after=0").await;
    let (status, refused) = versioned(&app, "demo:docs", "doc-1", Some(1), 3).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "conflict");
    assert_eq!(refused["error"]["currentVersion"], 2);
    assert_eq!(refused["error"]["entityId"], "doc-1");
    assert_eq!(app.history_len("topic=demo:docs&after=0").await, before);
    // "Must be new" on an existing entity is a conflict too.
    let (status, _) = versioned(&app, "demo:docs", "doc-1", Some(0), 4).await;
    assert_eq!(status, 409);

    // Without expectedVersion the write is unconditional but still versioned.
    let (status, forced) = versioned(&app, "demo:docs", "doc-1", None, 5).await;
    assert_eq!((status, &forced["version"]), (201, &json!(3)));
    // Versions are per (topic, entity).
    let (_, other_entity) = versioned(&app, "demo:docs", "doc-2", Some(0), 6).await;
    assert_eq!(other_entity["version"], 1);
    let (_, other_topic) = versioned(&app, "demo:notes", "doc-1", None, 7).await;
    assert_eq!(other_topic["version"], 1);
    // Unversioned events carry neither field.
    let plain = app.publish("demo:docs", "doc:viewed", json!({})).await;
    assert!(
        plain.get("version").is_none() && plain.get("entityId").is_none(),
        "{plain}"
    );

    // The stream and the history carry the same stamps, in order.
    let live: Vec<Value> = stream.stored(5).await.iter().map(data).collect();
    let versions: Vec<&Value> = live.iter().map(|e| &e["version"]).collect();
    assert_eq!(
        versions,
        [&json!(1), &json!(2), &json!(3), &json!(1), &Value::Null]
    );
    let history = app
        .history_with(&app.demo_token(), "topic=demo:docs&after=0")
        .await;
    let stored: Vec<(&Value, &Value)> = history.iter().map(|e| (&e["entityId"], &e["version"])).collect();
    assert_eq!(
        stored[..3],
        [
            (&json!("doc-1"), &json!(1)),
            (&json!("doc-1"), &json!(2)),
            (&json!("doc-1"), &json!(3))
        ]
    );
}
on_both_stores!(optimistic_locking, optimistic_locking_per_topic_and_entity);

/// Twenty publishers all creating the same entity at once, spread over two
/// nodes of one database: exactly one wins, the others get 409 at version 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creators_on_two_nodes_one_wins() {
    let first = TestApp::spawn(Backend::Postgres).await;
    let mut config = crate::helpers::test_config();
    config.database_url = Some(first.db.as_ref().unwrap().url.clone().into());
    let second = TestApp::start(config, None).await;
    let attempts = (0..20).map(|n| {
        let node = if n % 2 == 0 { &first } else { &second };
        versioned(node, "demo:race", "the-one", Some(0), n)
    });
    let results = join_all(attempts).await;
    let won = results.iter().filter(|(status, _)| *status == 201).count();
    let lost: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 409)
        .map(|(_, b)| b)
        .collect();
    assert_eq!((won, lost.len()), (1, 19), "{results:?}");
    assert!(lost.iter().all(|b| b["error"]["currentVersion"] == 1));
    assert_eq!(first.history_len("topic=demo:race&after=0").await, 1);
}

async fn version_fields_are_validated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.demo_token();
    let cases = [
        json!({"type": "doc:x", "expectedVersion": 1}),
        json!({"type": "doc:x", "entityId": ""}),
        json!({"type": "doc:x", "entityId": "a\nb"}),
        json!({"type": "doc:x", "entityId": "x".repeat(201)}),
        json!({"type": "doc:x", "entityId": 7}),
        json!({"type": "doc:x", "entityId": "a", "expectedVersion": -1}),
        json!({"type": "doc:x", "entityId": "a", "expectedVersion": "1"}),
    ];
    for body in cases {
        let response = app.publish_raw(&token, "demo:v", body.clone()).await;
        let status = response.status().as_u16();
        let error: Value = response.json().await.unwrap();
        assert!(status == 422 || status == 400, "{body} → {status} {error}");
        assert_eq!(error["error"]["code"], "invalid_payload", "{body}");
    }
    assert_eq!(app.history_len("topic=demo:v&after=0").await, 0);
}
on_both_stores!(version_validation, version_fields_are_validated);
