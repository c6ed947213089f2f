//! Live polling end to end: the catalog's three scenarios, privacy of
//! voters, concurrency, authorization, bad input, presence, snapshots.
//!
//! Split by concern into the modules below; this file holds the stream
//! assertions and small readers they share. The setup (a session, its
//! polls and participants, `session_with_open_poll`) is in `polling_helpers`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{data, Backend, SseClient, TestApp};
use crate::on_both_stores;
use crate::polling_helpers::{
    create_session, get, option_id, poll_path, post, selecting, session_with_open_poll, vote, Participant,
    Session,
};

mod access;
mod input;
mod lifecycle;
mod meeting;
mod presence;
mod results;
mod scenarios;
mod timers;
mod visibility;
mod votes;

/// The next stored events, checked against the expected types in order.
async fn expect(client: &mut SseClient, types: &[&str]) -> Vec<Value> {
    let mut payloads = Vec::new();
    for expected in types {
        let event = client.next_stored().await;
        assert_eq!(&event.event, expected, "got {} instead", event.data);
        let envelope = data(&event);
        assert_eq!(envelope["id"].as_str().unwrap(), event.id);
        assert_eq!(envelope["type"], *expected);
        payloads.push(envelope["payload"].clone());
    }
    payloads
}

/// The next stored event on one topic of a merged stream.
async fn next_on(client: &mut SseClient, topic: &str) -> eventsource_stream::Event {
    loop {
        let event = client.next_stored().await;
        if data(&event)["topic"] == topic {
            return event;
        }
    }
}

fn assert_fields(payload: &Value, fields: &[&str]) {
    for field in fields {
        assert!(payload.get(field).is_some(), "missing {field} in {payload}");
    }
    assert!(
        payload["sessionId"].is_string(),
        "every payload carries sessionId: {payload}"
    );
}

/// The code of an error body, `{"error": {"code": …}}`.
fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

/// The one number `sql` returns, on the test's own database.
async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}
