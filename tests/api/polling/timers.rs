//! Timed polls (#18): a duration on activation, `closesAt` in
//! `poll:activated`, and the server closing the poll by itself exactly
//! once, with reason `timer`, whichever nodes are up when its time comes.

use chrono::{DateTime, Utc};

use super::*;
use crate::helpers::test_config;

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

async fn activate_for(app: &TestApp, session: &Session, poll: &Value, seconds: i64) -> (u16, Value) {
    post(
        app,
        Some(&session.presenter),
        &poll_path(poll, "activate"),
        json!({ "durationSeconds": seconds }),
    )
    .await
}

/// Given a started session, when the presenter opens a poll for 5 s, then
/// `poll:activated` says when it closes and, with nobody acting, the poll
/// closes then with reason `timer`; votes after it are refused.
async fn a_timed_poll_closes_by_itself(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = create_session(&app, "Timed").await;
    let poll = session.choice_poll(&app, true).await;
    session.start(&app).await;
    let voter = session.join(&app, None).await;
    let mut stream = session.watch(&app, None, None).await;
    for (seconds, why) in [(4, "too short"), (3601, "too long")] {
        let (status, body) = activate_for(&app, &session, &poll, seconds).await;
        assert_eq!(status, 422, "{why}: {body}");
    }
    let (status, body) = activate_for(&app, &session, &poll, 5).await;
    assert_eq!(status, 200, "{body}");
    let closes_at = time(&body["closesAt"]);

    let activated = loop {
        let event = stream.next_stored().await;
        if event.event == "poll:activated" {
            break data(&event)["payload"].clone();
        }
    };
    assert_eq!(time(&activated["closesAt"]), closes_at);
    assert_eq!(
        (closes_at - time(&activated["activatedAt"])).num_seconds(),
        5,
        "{activated}"
    );
    assert_eq!(
        session.snapshot(&app).await["polls"][0]["closesAt"],
        body["closesAt"]
    );

    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let event = stream.next_stored().await;
            if event.event == "poll:closed" {
                return data(&event)["payload"].clone();
            }
        }
    })
    .await
    .expect("the poll closed by itself");
    assert_eq!(closed["reason"], "timer", "{closed}");
    assert!(
        time(&closed["closedAt"]) >= closes_at,
        "not before its time: {closed}"
    );
    let (status, body) = vote(&app, &voter, &poll, selecting(&poll, 0)).await;
    assert_eq!((status, error_code(&body)), (409, "poll_closed"));
}
on_both_stores!(timed_poll, a_timed_poll_closes_by_itself);

/// The `poll:closed` events of the test's database.
async fn closes_in(db: &tokio_postgres::Client) -> Vec<Value> {
    db.query(
        "SELECT payload::text FROM events WHERE type = 'poll:closed' ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| serde_json::from_str(row.get::<_, &str>(0)).unwrap())
    .collect()
}

async fn wait_for_closes(db: &tokio_postgres::Client, within: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let closes = closes_in(db).await;
        if !closes.is_empty() || tokio::time::Instant::now() > deadline {
            return closes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Given two nodes on one database, when a timed poll's time runs out,
/// then both try to close it and `poll:closed` is written exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_close_a_timed_poll_once() {
    let first = TestApp::spawn(Backend::Postgres).await;
    let mut config = test_config();
    config.database_url = first.db.as_ref().map(|d| d.url.clone().into());
    let second = TestApp::start(config, None).await;
    let session = create_session(&first, "Two nodes").await;
    let poll = session.choice_poll(&first, true).await;
    session.start(&first).await;
    // The second node learns of the timer from the database (its sweep).
    let (status, body) = activate_for(&second, &session, &poll, 5).await;
    assert_eq!(status, 200, "{body}");

    let db = first.db.as_ref().unwrap().client().await;
    let closes = wait_for_closes(&db, Duration::from_secs(15)).await;
    assert_eq!(closes.len(), 1, "{closes:?}");
    // Give the slower node every chance to write a second one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let closes = closes_in(&db).await;
    assert_eq!(closes.len(), 1, "closed exactly once: {closes:?}");
    assert_eq!(closes[0]["reason"], "timer");
}

/// Given a timed poll, when its node stops before the time runs out and
/// another starts after it, then the new node closes the poll on start
/// (once), so a restart never leaves a timed poll open for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_lose_a_timer() {
    let mut first = TestApp::spawn(Backend::Postgres).await;
    let session = create_session(&first, "Restart").await;
    let poll = session.choice_poll(&first, true).await;
    session.start(&first).await;
    let (status, body) = activate_for(&first, &session, &poll, 5).await;
    assert_eq!(status, 200, "{body}");
    let db = first.db.take().unwrap();
    first.stop().await;
    let client = db.client().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(closes_in(&client).await.is_empty(), "no node was up to close it");

    let mut config = test_config();
    config.database_url = Some(db.url.clone().into());
    let second = TestApp::start(config, Some(db)).await;
    let closes = wait_for_closes(&client, Duration::from_secs(10)).await;
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert_eq!(closes[0]["reason"], "timer");
    let snapshot = session.snapshot(&second).await;
    assert_eq!(snapshot["polls"][0]["status"], "closed");
}
