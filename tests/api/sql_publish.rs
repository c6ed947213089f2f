//! Publishing from SQL (#19, item 1): `pollcast.publish(…)` called inside
//! an application's own transaction on the server's database. The event
//! streams once that transaction commits, never when it rolls back; an
//! open application transaction holds up no one; SQL and REST publishers
//! share one gap-free order that a resumed stream follows. Postgres only:
//! the memory store has no SQL.

use std::collections::HashMap;
use std::time::Duration;

use pollcast::store::tx::OutboxRow;
use pollcast::topics::sql_publish::event_of;
use serde_json::{json, Value};

use crate::helpers::{data, ids, Backend, TestApp};

async fn app() -> TestApp {
    TestApp::spawn(Backend::Postgres).await
}

/// An application's own connection to the server's database.
async fn application(app: &TestApp) -> tokio_postgres::Client {
    app.db.as_ref().expect("a Postgres app").client().await
}

/// Given a stream on `demo:orders` and an application with an `orders`
/// table, when one transaction updates an order, publishes and rolls back,
/// and the next does the same and commits, then only the committed event
/// streams, carrying the trace id the function returned, and the table
/// and the log agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_publishes_and_a_rollback_publishes_nothing() {
    let app = app().await;
    let mut db = application(&app).await;
    db.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL);
         INSERT INTO orders VALUES (1, 'new');",
    )
    .await
    .unwrap();
    let mut stream = app.subscribe(&["demo:orders"], None).await;

    let tx = db.transaction().await.unwrap();
    tx.execute("UPDATE orders SET status = 'cancelled' WHERE id = 1", &[])
        .await
        .unwrap();
    tx.query_one(
        "SELECT pollcast.publish('demo:orders', 'order:updated', '{\"id\": 1, \"status\": \"cancelled\"}')",
        &[],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();

    let tx = db.transaction().await.unwrap();
    tx.execute("UPDATE orders SET status = 'paid' WHERE id = 1", &[])
        .await
        .unwrap();
    let trace: String = tx
        .query_one(
            "SELECT pollcast.publish('demo:orders', 'order:updated', '{\"id\": 1, \"status\": \"paid\"}')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();

    let event = data(&stream.next_stored().await);
    assert_eq!(event["type"], "order:updated");
    assert_eq!(event["topic"], "demo:orders");
    assert_eq!(event["payload"], json!({"id": 1, "status": "paid"}));
    assert_eq!(event["traceId"], trace.as_str());
    // Many times the drain's poll: had the rolled-back row been kept, it
    // would be in the log by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.history_len("topic=demo:orders").await,
        1,
        "the rollback published nothing"
    );
    let status: String = db
        .query_one("SELECT status FROM orders WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "paid");
    let waiting: i64 = db
        .query_one("SELECT count(*) FROM pollcast.outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(waiting, 0, "the outbox is drained");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("pollcast_outbox_events_total{result=\"published\"}"),
        "drained rows are counted:\n{metrics}"
    );
}

/// Given an application transaction that published and stays open, when a
/// REST publisher publishes meanwhile, then the REST event commits and
/// streams at once; the SQL event follows, with a higher id, only once the
/// long transaction commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_application_transaction_holds_up_no_one() {
    let app = app().await;
    let mut db = application(&app).await;
    let mut stream = app.subscribe(&["demo:*"], None).await;

    let tx = db.transaction().await.unwrap();
    tx.query_one(
        "SELECT pollcast.publish('demo:slow', 'job:done', '{\"n\": 1}')",
        &[],
    )
    .await
    .unwrap();
    let rest = tokio::time::timeout(
        Duration::from_secs(5),
        app.publish("demo:fast", "job:done", json!({"n": 2})),
    )
    .await
    .expect("a REST publish is not held up by the open transaction");
    let first = stream.next_stored().await;
    assert_eq!(data(&first)["topic"], "demo:fast");
    assert_eq!(first.id, rest["id"].as_str().unwrap());
    // The outbox drain runs while the transaction is open and finds nothing
    // it may take.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(app.history_len("topic=demo:slow").await, 0);

    tx.commit().await.unwrap();
    let second = stream.next_stored().await;
    assert_eq!(data(&second)["topic"], "demo:slow");
    assert!(second.id.parse::<i64>().unwrap() > first.id.parse::<i64>().unwrap());
}

/// Given 8 SQL publishers (each transaction publishing two events) and 8
/// REST publishers at once, when every one has finished, then a live stream
/// received exactly the log's events in id order (the history), each
/// publisher's in the order it sent them; and a stream that dropped halfway
/// and resumed with `Last-Event-ID` received the same sequence, nothing lost
/// and nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql_and_rest_publishers_share_one_gap_free_order() {
    const EACH: usize = 20;
    let app = app().await;
    let mut live = app.subscribe(&["demo:*"], None).await;
    let mut resumed = app.subscribe(&["demo:*"], None).await;

    let mut publishers = tokio::task::JoinSet::new();
    for p in 0..8 {
        let db = application(&app).await;
        publishers.spawn(async move {
            let mut db = db;
            for n in 0..EACH {
                let tx = db.transaction().await.unwrap();
                for half in 0..2 {
                    let payload = json!({"by": format!("sql{p}"), "n": n * 2 + half});
                    tx.query_one(
                        "SELECT pollcast.publish('demo:sql', 'item:added', $1::text::jsonb)",
                        &[&payload.to_string()],
                    )
                    .await
                    .unwrap();
                }
                tx.commit().await.unwrap();
            }
        });
    }
    for p in 0..8 {
        let http = app.http.clone();
        let url = app.url("/v1/topics/demo:rest/events");
        let token = app.demo_token();
        publishers.spawn(async move {
            for n in 0..EACH * 2 {
                let response = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"type": "item:added", "payload": {"by": format!("rest{p}"), "n": n}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
            }
        });
    }
    let total = 16 * EACH * 2;

    // The second stream drops after a third of the events and resumes.
    let before_drop = resumed.stored(total / 3).await;
    let last = before_drop.last().unwrap().id.clone();
    drop(resumed);
    while let Some(done) = publishers.join_next().await {
        done.unwrap();
    }
    let mut resumed = app.subscribe(&["demo:*"], Some(&last)).await;
    let after_drop = resumed.stored(total - total / 3).await;
    let live = live.stored(total).await;

    let history: Vec<i64> = app
        .history_with(&app.demo_token(), "topic=demo:*&limit=1000")
        .await
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(history.len(), total);
    assert_eq!(ids(&live), history, "the live stream is the log, in id order");
    let mut rejoined = ids(&before_drop);
    rejoined.extend(ids(&after_drop));
    assert_eq!(
        rejoined, history,
        "the resumed stream lost nothing and repeated nothing"
    );

    let mut next_n: HashMap<String, i64> = HashMap::new();
    for event in &live {
        let payload = &data(event)["payload"];
        let by = payload["by"].as_str().unwrap().to_string();
        let expected = next_n.entry(by.clone()).or_insert(0);
        assert_eq!(
            payload["n"].as_i64().unwrap(),
            *expected,
            "{by}'s events in its order"
        );
        *expected += 1;
    }
    assert_eq!(next_n.len(), 16);
    assert!(next_n.values().all(|&n| n == (EACH * 2) as i64));
}

/// Given a tenant's SQL publish, then the tenant's stream sees it under
/// the plain name and a stream without the tenant does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_publish_reaches_only_that_tenant() {
    use pollcast::auth::{expiry_in, Claims};
    let app = app().await;
    let db = application(&app).await;
    let acme = app.keys.mint(&Claims {
        sub: Some("ann".into()),
        exp: expiry_in(Duration::from_secs(600)),
        subscribe: vec!["orders:*".into()],
        tenant: Some("acme".into()),
        ..Claims::default()
    });
    let plain = app.token(&[], &["orders:*"]);
    let mut tenant_stream = app.subscribe_with(&acme, &["orders:*"], None).await;
    let mut plain_stream = app.subscribe_with(&plain, &["orders:*"], None).await;
    db.query_one(
        "SELECT pollcast.publish('orders:7', 'order:paid', '{\"total\": 12}', 'acme')",
        &[],
    )
    .await
    .unwrap();
    let event = data(&tenant_stream.next_stored().await);
    assert_eq!(event["topic"], "orders:7");
    assert_eq!(event["payload"]["total"], 12);
    let mut leaked = Vec::new();
    while let Some(frame) = plain_stream.next_within(Duration::from_millis(800)).await {
        leaked.push(frame.data);
    }
    assert!(
        leaked.iter().all(|d| !d.contains("order:paid")),
        "another tenant's event reached a plain stream: {leaked:?}"
    );
}

/// The SQL function refuses what a REST publish is refused, in the
/// application's own statement, and accepts what the writer accepts: for
/// every case, the function's answer and the server's own rules agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_checks_are_the_servers_checks() {
    let app = app().await;
    let db = application(&app).await;
    let long_topic = format!("a{}", ":b".repeat(8));
    let huge_topic = "x".repeat(257);
    let long_tenant = "t".repeat(65);
    let cases: Vec<(&str, &str, Value, Option<&str>)> = vec![
        ("orders:1", "order:paid", json!({}), None),
        ("a.b_c-d:0", "x.y:z-w_1", json!({"k": [1, 2]}), Some("acme-1")),
        ("session:abc", "order:paid", json!({}), None),
        ("system", "order:paid", json!({}), None),
        ("presenter:abc", "order:paid", json!({}), None),
        ("participant:abc", "order:paid", json!({}), None),
        ("Orders", "order:paid", json!({}), None),
        ("orders::1", "order:paid", json!({}), None),
        ("orders:*", "order:paid", json!({}), None),
        (&long_topic, "order:paid", json!({}), None),
        (&huge_topic, "order:paid", json!({}), None),
        ("orders", "paid", json!({}), None),
        ("orders", "order:paid:now", json!({}), None),
        ("orders", "system:alert", json!({}), None),
        ("orders", "presence:update", json!({}), None),
        ("orders", "connection:reset", json!({}), None),
        ("orders", "order:paid", json!([1]), None),
        ("orders", "order:paid", json!("text"), None),
        ("orders", "order:paid", json!({}), Some("Acme")),
        ("orders", "order:paid", json!({}), Some("")),
        ("orders", "order:paid", json!({}), Some(&long_tenant)),
        ("orders", "order:paid", json!({"text": "x".repeat(60_000)}), None),
        ("orders", "order:paid", json!({"text": "x".repeat(70_000)}), None),
    ];
    for (topic, event_type, payload, tenant) in cases {
        let sql = db
            .query_one(
                "SELECT pollcast.publish($1, $2, $3::text::jsonb, $4)",
                &[&topic, &event_type, &payload.to_string(), &tenant],
            )
            .await;
        let rust = event_of(&OutboxRow {
            seq: 1,
            topic: topic.into(),
            event_type: event_type.into(),
            payload: payload.to_string(),
            tenant: tenant.map(str::to_string),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            entity_id: None,
        });
        assert_eq!(
            sql.is_ok(),
            rust.is_ok(),
            "{topic:.40} {event_type} {payload} {tenant:?}: SQL {:?}, server {:?}",
            sql.err()
                .map(|e| e.as_db_error().map(|d| d.message().to_string())),
            rust.err()
        );
        if let Err(error) = sql {
            let message = error.as_db_error().unwrap().message();
            assert!(message.starts_with("pollcast.publish: "), "{message}");
        }
    }
}

/// The entity ids the SQL function takes are the ones the server takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_entity_checks_are_the_servers_checks() {
    let app = app().await;
    let db = application(&app).await;
    let (longest, too_long, wide) = ("x".repeat(200), "x".repeat(201), "é".repeat(200));
    let cases = [
        "order-1",
        "",
        "a\nb",
        "tab\there",
        "del\u{7f}",
        "c1\u{85}",
        "line\u{2028}sep",
        &longest,
        &too_long,
        &wide,
    ];
    for entity in cases {
        let sql = db
            .query_one(
                "SELECT pollcast.publish('orders', 'order:paid', '{}', NULL, $1)",
                &[&entity],
            )
            .await;
        let rust = event_of(&OutboxRow {
            seq: 1,
            topic: "orders".into(),
            event_type: "order:paid".into(),
            payload: "{}".into(),
            tenant: None,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            entity_id: Some(entity.to_string()),
        });
        assert_eq!(sql.is_ok(), rust.is_ok(), "{entity:.20?}: SQL {sql:?}");
    }
}

/// Given an application that publishes about an entity from SQL, when it
/// does so in two transactions and a REST publisher then writes with the
/// version it read, then the SQL events carry versions 1 and 2 in commit
/// order, the REST write expecting 2 gets 3, and one still expecting 2 is
/// a 409: SQL and REST share the entity's versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_publishes_about_an_entity_take_its_next_versions() {
    let app = app().await;
    let db = application(&app).await;
    let mut stream = app.subscribe(&["demo:orders"], None).await;
    for status in ["paid", "shipped"] {
        db.query_one(
            "SELECT pollcast.publish('demo:orders', 'order:updated', jsonb_build_object('status', $1::text), \
             entity_id => 'order-9')",
            &[&status],
        )
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..2 {
        let event = data(&stream.next_stored().await);
        seen.push((
            event["entityId"].clone(),
            event["version"].clone(),
            event["payload"]["status"].clone(),
        ));
    }
    assert_eq!(
        seen,
        [
            (json!("order-9"), json!(1), json!("paid")),
            (json!("order-9"), json!(2), json!("shipped")),
        ]
    );
    let token = app.demo_token();
    let write = |expected: i64| {
        app.publish_raw(
            &token,
            "demo:orders",
            json!({"type": "order:updated", "entityId": "order-9", "expectedVersion": expected, "payload": {}}),
        )
    };
    let response = write(2).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.json::<Value>().await.unwrap()["version"], 3);
    assert_eq!(write(2).await.status(), 409);
}
