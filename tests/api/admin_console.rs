//! The admin console's API (`/v1/admin/nodes`, `/connections`, `/tail`,
//! `/events`): the admin key guards each route, the numbers are those of
//! the streams really open (on every node sharing the database), the tail
//! shows every tenant's and private topic's events, and the test publish
//! obeys the publish rules.

use std::time::Duration;

use pollcast::auth::{expiry_in, Claims};
use serde_json::{json, Value};

use crate::helpers::{data, test_config, Backend, SseClient, TestApp, TestDb};
use crate::on_both_stores;
use crate::polling_helpers::{selecting, vote, Session};

const KEY: &str = "console-key";

async fn with_key(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| c.admin_key = Some(KEY.into())).await
}

async fn admin_get(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app
        .http
        .get(app.url(path))
        .header("X-Admin-Key", KEY)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn admin_publish(app: &TestApp, body: Value) -> (u16, Value) {
    let response = app
        .http
        .post(app.url("/v1/admin/events"))
        .header("X-Admin-Key", KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn tail(app: &TestApp, query: &str) -> SseClient {
    let response = app
        .http
        .get(app.url(&format!("/v1/admin/tail{query}")))
        .header("X-Admin-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = SseClient::new(response);
    assert!(
        stream.next().await.event.starts_with("connection:"),
        "the stream is open"
    );
    stream
}

/// Retries `check` until it holds (or 15 s have passed: then its last panic).
async fn eventually<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "not within 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn streams_on(connections: &Value, selector: &str, tenant: Option<&str>) -> Option<u64> {
    connections["topics"]
        .as_array()?
        .iter()
        .find(|t| t["selector"] == json!(selector) && t["tenant"] == json!(tenant))
        .and_then(|t| t["streams"].as_u64())
}

/// Given a server without `--admin-key`, every console route is 403; given
/// one, a missing or wrong key is 401, in `X-Admin-Key` or as a bearer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_route_needs_the_admin_key() {
    let routes = [
        ("GET", "/v1/admin/nodes"),
        ("GET", "/v1/admin/connections"),
        ("GET", "/v1/admin/tail"),
        ("POST", "/v1/admin/events"),
    ];
    let request = |app: &TestApp, method: &str, path: &str| {
        let url = app.url(path);
        match method {
            "GET" => app.http.get(url),
            _ => app
                .http
                .post(url)
                .json(&json!({"topic": "demo:a", "type": "demo:said"})),
        }
    };
    let off = TestApp::spawn(Backend::Memory).await;
    for (method, path) in routes {
        let response = request(&off, method, path)
            .header("X-Admin-Key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{method} {path} without --admin-key");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let on = with_key(Backend::Memory).await;
    let jwt = on.demo_token();
    for (method, path) in routes {
        for (case, attempt) in [
            ("no key", request(&on, method, path)),
            (
                "wrong key",
                request(&on, method, path).header("X-Admin-Key", "nope"),
            ),
            ("a JWT", request(&on, method, path).bearer_auth(&jwt)),
        ] {
            let response = attempt.send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path}: {case}");
        }
        let response = request(&on, method, path).bearer_auth(KEY).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{method} {path} with the key as bearer"
        );
    }
}

/// Given streams open on some topics, the console lists this node with its
/// open streams, and counts the streams per selector (the token's
/// personal topic included).
async fn streams_are_counted_per_topic(backend: Backend) {
    let app = with_key(backend).await;
    let (status, before) = admin_get(&app, "/v1/admin/connections").await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(before["streams"], 0);
    let mut streams = vec![
        app.subscribe(&["demo:a"], None).await,
        app.subscribe(&["demo:a"], None).await,
        app.subscribe(&["demo:*"], None).await,
    ];
    for stream in &mut streams {
        stream.next().await; // open
    }
    let counted = eventually(|| async {
        let (_, answer) = admin_get(&app, "/v1/admin/connections").await;
        (streams_on(&answer, "demo:a", None) == Some(2)).then_some(answer)
    })
    .await;
    assert_eq!(streams_on(&counted, "demo:*", None), Some(1));
    assert_eq!(
        streams_on(&counted, "user:tester", None),
        Some(3),
        "the personal topic"
    );
    assert_eq!(counted["streams"], 3);
    assert_eq!(counted["complete"], true);

    let (status, nodes) = admin_get(&app, "/v1/admin/nodes").await;
    assert_eq!(status, 200);
    let this = nodes["thisNode"].as_str().unwrap();
    let me = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["nodeId"] == this)
        .unwrap();
    assert_eq!(
        (
            me["thisNode"].clone(),
            me["answered"].clone(),
            me["streams"].clone()
        ),
        (json!(true), json!(true), json!(3))
    );
    assert_eq!(me["version"], env!("CARGO_PKG_VERSION"));
    if backend == Backend::Postgres {
        // The first heartbeat is written just after start.
        eventually(|| async {
            let (_, answer) = admin_get(&app, "/v1/admin/nodes").await;
            answer["nodes"][0]["lastHeartbeat"].is_string().then_some(())
        })
        .await;
    }

    drop(streams);
    eventually(|| async {
        let (_, answer) = admin_get(&app, "/v1/admin/connections").await;
        (answer["streams"] == 0 && streams_on(&answer, "demo:a", None).is_none()).then_some(())
    })
    .await;
}
on_both_stores!(streams_are_counted_per_topic_on, streams_are_counted_per_topic);

/// Given two nodes on one database, each lists both nodes and counts the
/// streams the other holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_sees_the_streams_of_the_others() {
    let db = TestDb::create().await;
    let config = || {
        let mut config = test_config();
        config.database_url = Some(db.url.clone().into());
        config.admin_key = Some(KEY.into());
        config.presence_ttl = Duration::from_secs(3);
        config
    };
    let a = TestApp::start(config(), None).await;
    let b = TestApp::start(config(), None).await;
    let mut held_by_b = b.subscribe(&["demo:far"], None).await;
    held_by_b.next().await;
    let (_, b_nodes) = admin_get(&b, "/v1/admin/nodes").await;
    let b_id = b_nodes["thisNode"].clone();
    let nodes = eventually(|| async {
        let (_, answer) = admin_get(&a, "/v1/admin/nodes").await;
        let list = answer["nodes"].as_array()?.clone();
        (list.len() == 2 && list.iter().all(|n| n["answered"] == true)).then_some(list)
    })
    .await;
    let b_seen = nodes
        .iter()
        .find(|n| n["nodeId"] == b_id)
        .expect("node b is listed");
    assert_eq!(
        (b_seen["thisNode"].clone(), b_seen["streams"].clone()),
        (json!(false), json!(1))
    );
    assert!(b_seen["lastHeartbeat"].is_string());
    let connections = eventually(|| async {
        let (_, answer) = admin_get(&a, "/v1/admin/connections").await;
        (streams_on(&answer, "demo:far", None) == Some(1)).then_some(answer)
    })
    .await;
    assert_eq!(connections["nodes"], 2);
    let topic = connections["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["selector"] == "demo:far")
        .unwrap();
    assert_eq!(topic["nodes"][b_id.as_str().unwrap()], 1, "counted on node b");
}

fn tenant_token(app: &TestApp, tenant: &str) -> String {
    app.keys.mint(&Claims {
        sub: Some("backend".into()),
        exp: expiry_in(Duration::from_secs(600)),
        publish: vec!["orders:*".into()],
        tenant: Some(tenant.into()),
        ..Claims::default()
    })
}

/// The stored events a tail delivers within a moment: (topic, tenant, type).
async fn tailed(stream: &mut SseClient) -> Vec<(String, Option<String>, String)> {
    let mut seen = Vec::new();
    while let Some(event) = stream.next_within(Duration::from_millis(700)).await {
        if event.event.starts_with("connection:") {
            continue;
        }
        let envelope = data(&event);
        seen.push((
            envelope["topic"].as_str().unwrap().to_owned(),
            envelope["tenant"].as_str().map(str::to_owned),
            envelope["type"].as_str().unwrap().to_owned(),
        ));
    }
    seen
}

/// Given events on a plain topic, a tenant's topic and a participant's
/// private topic, the unfiltered tail shows all three (the tenant named),
/// and a filtered one only what it asked for.
async fn the_tail_shows_every_event_to_the_admin(backend: Backend) {
    let app = with_key(backend).await;
    let mut everything = tail(&app, "").await;
    let mut demo_only = tail(&app, "?topic=demo:*").await;
    let mut acme_only = tail(&app, "?tenant=acme").await;

    app.publish("demo:a", "demo:said", json!({"n": 1})).await;
    app.publish("other:a", "demo:said", json!({"n": 2})).await;
    let response = app
        .publish_raw(
            &tenant_token(&app, "acme"),
            "orders:1",
            json!({"type": "order:paid", "payload": {}}),
        )
        .await;
    assert_eq!(response.status(), 201);
    // A participant's vote confirmation goes to its private topic.
    let created = app
        .http
        .post(app.url("/v1/sessions"))
        .header("X-Admin-Key", KEY)
        .json(&json!({"title": "Private"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let session = Session::from_created(&created.json().await.unwrap());
    let poll = session.open_choice_poll(&app, true).await;
    let voter = session.join(&app, Some("Ann")).await;
    assert_eq!(vote(&app, &voter, &poll, selecting(&poll, 0)).await.0, 201);

    let all = tailed(&mut everything).await;
    let has = |list: &[(String, Option<String>, String)], topic: &str, tenant: Option<&str>| {
        list.iter().any(|(t, n, _)| t == topic && n.as_deref() == tenant)
    };
    assert!(has(&all, "demo:a", None) && has(&all, "other:a", None), "{all:?}");
    assert!(
        has(&all, "orders:1", Some("acme")),
        "the tenant's event, named: {all:?}"
    );
    let private = format!("participant:{}", voter.id);
    assert!(has(&all, &private, None), "the private topic: {all:?}");
    assert!(has(&all, &format!("session:{}", session.id), None));

    let demo = tailed(&mut demo_only).await;
    let topics: Vec<&str> = demo.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(topics, ["demo:a"]);
    let acme = tailed(&mut acme_only).await;
    assert_eq!(
        acme,
        [(
            "orders:1".to_owned(),
            Some("acme".to_owned()),
            "order:paid".to_owned()
        )]
    );

    // A tail resumed with Last-Event-ID replays what it missed, tenant named.
    let response = app
        .http
        .get(app.url("/v1/admin/tail?tenant=acme"))
        .header("X-Admin-Key", KEY)
        .header("Last-Event-ID", "0")
        .send()
        .await
        .unwrap();
    let mut resumed = SseClient::new(response);
    let replayed = data(&resumed.next_stored().await);
    assert_eq!(
        (replayed["topic"].clone(), replayed["tenant"].clone()),
        (json!("orders:1"), json!("acme"))
    );

    // More `topic` values than --max-topics (32) is a 400, empty ones too.
    let too_many = format!("?{}", vec!["topic="; 33].join("&"));
    for bad in [
        "?topic=Demo",
        "?tenant=No%20Way",
        "?topic=a::b",
        too_many.as_str(),
    ] {
        let (status, body) = admin_get(&app, &format!("/v1/admin/tail{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}
on_both_stores!(
    the_tail_shows_every_event_to_the_admin_on,
    the_tail_shows_every_event_to_the_admin
);

/// Given the admin's test publish, it is stored like any publish (in the
/// tenant asked for), and refused where any publish would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_publish_obeys_the_publish_rules() {
    let app = with_key(Backend::Memory).await;
    let (status, stored) = admin_publish(
        &app,
        json!({"topic": "demo:a", "type": "admin:test", "payload": {"x": 1}}),
    )
    .await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(
        (stored["topic"].clone(), stored["payload"]["x"].clone()),
        (json!("demo:a"), json!(1))
    );
    assert_eq!(app.history_len("topic=demo:a").await, 1);

    let (status, in_acme) = admin_publish(
        &app,
        json!({"topic": "orders:1", "type": "admin:test", "tenant": "acme"}),
    )
    .await;
    assert_eq!(status, 201, "{in_acme}");
    let reader = app.token(&[], &["orders:*"]);
    assert!(
        app.history_with(&reader, "topic=orders:1").await.is_empty(),
        "not outside the tenant"
    );

    for (body, expected) in [
        (json!({"topic": "session:x", "type": "admin:test"}), 403),
        (json!({"topic": "participant:x", "type": "admin:test"}), 403),
        (json!({"topic": "demo:a", "type": "system:status"}), 422),
        (json!({"topic": "Demo", "type": "admin:test"}), 422),
        (
            json!({"topic": "demo:a", "type": "admin:test", "payload": [1]}),
            422,
        ),
        (
            json!({"topic": "demo:a", "type": "admin:test", "tenant": "Not One"}),
            422,
        ),
        (json!({"topic": "demo:a", "type": "admin:test", "extra": 1}), 422),
    ] {
        let (status, answer) = admin_publish(&app, body.clone()).await;
        assert_eq!(status, expected, "{body}: {answer}");
        assert!(answer["error"]["code"].is_string());
    }
}
