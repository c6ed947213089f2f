//! One bad request must never fail anybody else's. A NUL in a title once
//! made Postgres refuse a whole writer batch: while four clients without a
//! token created sessions titled `a\u0000b`, most of another client's
//! publishes got 500.

use std::sync::Arc;

use futures::future::join_all;
use pollcast::domain::event::{now_millis, TraceId};
use pollcast::polling::session::CreateSession;
use pollcast::polling::{new_session, Stamp};
use pollcast::store::StoreError;
use pollcast::store::{execute, Answer};
use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};
use crate::on_both_stores;

/// Legitimate publishes, sent while the hostile requests run.
const LEGIT: usize = 200;

/// What the hostile clients send: every text field the polling API stores.
async fn hostile_requests(app: &TestApp) -> Vec<(String, Value, Option<String>)> {
    let session: Value = app
        .http
        .post(app.url("/v1/sessions"))
        .json(&json!({"title": "target"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = session["sessionId"].as_str().unwrap().to_string();
    let presenter = session["presenterToken"].as_str().unwrap().to_string();
    vec![
        ("/v1/sessions".into(), json!({"title": "a\u{0}b"}), None),
        (
            format!("/v1/sessions/{id}/participants"),
            json!({"displayName": "x\u{0}"}),
            None,
        ),
        (
            format!("/v1/sessions/{id}/polls"),
            json!({"question": "why\u{0}?", "pollType": "open_text"}),
            Some(presenter.clone()),
        ),
        (
            format!("/v1/sessions/{id}/polls"),
            json!({"question": "which?", "pollType": "multiple_choice",
                   "options": ["a", "b\u{0}"]}),
            Some(presenter),
        ),
    ]
}

async fn poisoned_requests_fail_alone(backend: Backend) {
    let app = Arc::new(TestApp::spawn(backend).await);
    let hostile = hostile_requests(&app).await;
    let token = app.demo_token();
    // Four hostile clients keep sending until the legitimate ones are done.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attackers: Vec<_> = (0..4)
        .map(|n| {
            let (app, done, hostile) = (Arc::clone(&app), Arc::clone(&done), hostile.clone());
            tokio::spawn(async move {
                let mut sent = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let (path, body, token) = &hostile[(n + sent) % hostile.len()];
                    let mut request = app.http.post(app.url(path)).json(body);
                    if let Some(token) = token {
                        request = request.bearer_auth(token);
                    }
                    let response = request.send().await.unwrap();
                    let status = response.status();
                    let answer: Value = response.json().await.unwrap();
                    assert_eq!(status, 422, "{path} {body}: {answer}");
                    assert_eq!(answer["error"]["code"], "invalid_payload", "{answer}");
                    let message = answer["error"]["message"].as_str().unwrap();
                    assert!(message.contains("NUL"), "the message says why: {message}");
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let publishes = (0..LEGIT).map(|i| {
        let (app, token) = (Arc::clone(&app), token.clone());
        async move {
            let response = app
                .publish_raw(
                    &token,
                    "demo:legit",
                    json!({"type": "demo:said", "payload": {"n": i}}),
                )
                .await;
            let status = response.status();
            let body = response.text().await.unwrap();
            (status, body)
        }
    });
    let answers = join_all(publishes).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut refused_by_attackers = 0;
    for attacker in attackers {
        refused_by_attackers += attacker.await.expect("every hostile request got its 422");
    }
    assert!(refused_by_attackers > 0, "the attackers ran");
    let failed: Vec<_> = answers.iter().filter(|(status, _)| *status != 201).collect();
    assert!(
        failed.is_empty(),
        "{} of {LEGIT} legitimate publishes failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert_eq!(
        app.history_len("topic=demo:legit").await,
        LEGIT,
        "every acknowledged publish is stored"
    );
}

on_both_stores!(
    poisoned_requests_fail_alone_over_http,
    poisoned_requests_fail_alone
);

/// The edge refuses a NUL, but the writer must not depend on it: a command
/// the database refuses, in the same batches as ordinary publishes, fails
/// alone with `Rejected` and every publish beside it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_the_database_refuses_fails_alone_in_its_batch() {
    let app = Arc::new(TestApp::spawn(Backend::Postgres).await);
    let store = Arc::clone(&app.server().state().store);
    let token = app.demo_token();
    let create = |title: &str| CreateSession {
        session: new_session(title.into(), now_millis()),
        stamp: Stamp::new(TraceId::generate()),
    };
    let poison = (0..40).map(|_| {
        let (store, command) = (Arc::clone(&store), create("a\u{0}b"));
        async move { execute(store.as_ref(), command, None).await }
    });
    let publishes = (0..LEGIT).map(|i| {
        let (app, token) = (Arc::clone(&app), token.clone());
        async move {
            app.publish_raw(
                &token,
                "demo:legit",
                json!({"type": "demo:said", "payload": {"n": i}}),
            )
            .await
            .status()
        }
    });
    let (poisoned, published) = tokio::join!(join_all(poison), join_all(publishes));
    for outcome in poisoned {
        assert!(
            matches!(outcome, Err(StoreError::Rejected { .. })),
            "the refused command gets its own error: {outcome:?}"
        );
    }
    let failed = published.iter().filter(|status| **status != 201).count();
    assert_eq!(
        failed, 0,
        "publishes sharing a batch with a refused command all commit"
    );
    assert_eq!(app.history_len("topic=demo:legit").await, LEGIT);
    // A good command after all that still commits: the batch is not stuck.
    let outcome = execute(store.as_ref(), create("fine"), None).await;
    assert!(
        matches!(&outcome, Ok(Answer::Fresh(Ok(session))) if session.title == "fine"),
        "{outcome:?}"
    );
}
