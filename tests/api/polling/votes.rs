//! Voting: every rejection reason, concurrent votes, idempotent retries
//! and the vote rate limit.

use super::*;

/// Hundreds of participants vote at once, some twice, some after close:
/// the counts equal the accepted votes, one per participant, and every
/// late vote is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_votes_end_with_exact_counts_and_one_vote_each() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let (session, poll) = session_with_open_poll(&app, "Storm", true).await;
    let mut participants = Vec::new();
    for _ in 0..300 {
        participants.push(session.join(&app, None).await);
    }
    let options: Vec<String> = (0..3).map(|i| option_id(&poll, i)).collect();
    let mut tasks = Vec::new();
    for (n, participant) in participants.iter().enumerate() {
        let times = if n % 5 == 0 { 2 } else { 1 };
        for t in 0..times {
            let http = app.http.clone();
            let url = app.url(&poll_path(&poll, "votes"));
            let token = participant.token.clone();
            let option = options[(n + t) % 3].clone();
            tasks.push(tokio::spawn(async move {
                let response = http
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({"voteData": {"selectedOptionIds": [option]}}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                (status, body)
            }));
        }
    }
    let mut accepted = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            201 => accepted += 1,
            409 => assert_eq!(body["error"]["code"], "duplicate_vote"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(accepted, 300, "exactly one vote per participant");
    session.close(&app, &poll).await;
    let (status, late) = vote(
        &app,
        &participants[1],
        &poll,
        json!({"selectedOptionIds": [options[0].clone()]}),
    )
    .await;
    assert_eq!((status, error_code(&late)), (409, "poll_closed"));

    let db = app.db.as_ref().unwrap().client().await;
    let votes = count(&db, "SELECT count(*) FROM votes").await;
    let distinct = count(&db, "SELECT count(DISTINCT participant_id) FROM votes").await;
    let counter = count(&db, "SELECT vote_count FROM polls").await;
    let option_sum = count(&db, "SELECT sum(vote_count)::bigint FROM poll_options").await;
    assert_eq!((votes, distinct, counter, option_sum), (300, 300, 300, 300));
    let (_, results) = get(&app, Some(&session.presenter), &poll_path(&poll, "results")).await;
    assert_eq!(results["currentVoteCount"], 300);
    let total: i64 = results["voteBreakdown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["voteCount"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 300);
}

async fn every_vote_rejection_reason_is_answered_and_told_to_the_voter(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.vote_rate = 100).await;
    let session = create_session(&app, "Reasons").await;
    let choice = session.choice_poll(&app, true).await;
    let other = session.choice_poll(&app, true).await;
    let (rating, text) = session.rating_and_text_polls(&app).await;
    session.start(&app).await;
    let eve = session.join(&app, None).await;
    let mut own = session.watch(&app, Some(&eve.token), None).await;
    own.next().await;

    let cases: Vec<(&Value, Value, u16, &str, Option<&Value>)> = vec![
        (&choice, selecting(&choice, 0), 409, "poll_not_active", None),
        (
            &choice,
            selecting(&other, 0),
            422,
            "invalid_option",
            Some(&choice),
        ),
        (
            &choice,
            json!({"selectedOptionIds": [option_id(&choice, 0), option_id(&choice, 1)]}),
            422,
            "invalid_option",
            Some(&choice),
        ),
        (
            &rating,
            json!({"ratingValue": 4}),
            422,
            "invalid_rating",
            Some(&rating),
        ),
        (
            &text,
            json!({"textResponse": "   "}),
            422,
            "invalid_text",
            Some(&text),
        ),
        (
            &text,
            json!({"textResponse": "x".repeat(501)}),
            422,
            "invalid_text",
            Some(&text),
        ),
    ];
    for (poll, vote_data, status, reason, open_first) in cases {
        if let Some(poll) = open_first {
            if session.snapshot(&app).await["activePollId"] != poll["pollId"] {
                session.activate(&app, poll).await;
            }
        }
        let (got, body) = vote(&app, &eve, poll, vote_data).await;
        assert_eq!((got, error_code(&body)), (status, reason), "{body}");
        let event = next_on(&mut own, &format!("participant:{}", eve.id)).await;
        assert_eq!(event.event, "vote:rejected");
        assert_eq!(data(&event)["payload"]["reason"], reason);
    }
    session.close(&app, &text).await;
    let (status, body) = vote(&app, &eve, &text, json!({"textResponse": "late"})).await;
    assert_eq!((status, error_code(&body)), (409, "poll_closed"));
}
on_both_stores!(
    rejections,
    every_vote_rejection_reason_is_answered_and_told_to_the_voter
);

#[tokio::test]
async fn retried_commands_with_an_idempotency_key_happen_once() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let create = |key: &'static str| {
        app.http
            .post(app.url("/v1/sessions"))
            .header("Idempotency-Key", key)
            .json(&json!({"title": "Once"}))
            .send()
    };
    let first: Value = create("session-key-1").await.unwrap().json().await.unwrap();
    let again: Value = create("session-key-1").await.unwrap().json().await.unwrap();
    assert_eq!(first, again);
    let session = Session::from_created(&first);
    let poll = session.open_choice_poll(&app, true).await;
    let voter = session.join(&app, None).await;
    let url = app.url(&poll_path(&poll, "votes"));
    let send = || {
        app.http
            .post(&url)
            .bearer_auth(&voter.token)
            .header("Idempotency-Key", "vote-1")
            .json(&json!({"voteData": selecting(&poll, 0)}))
            .send()
    };
    let a = send().await.unwrap();
    assert_eq!(a.status(), 201);
    let a: Value = a.json().await.unwrap();
    let b = send().await.unwrap();
    assert_eq!(
        b.status(),
        201,
        "a retry gets the first answer, not duplicate_vote"
    );
    assert_eq!(a, b.json::<Value>().await.unwrap());
    let db = app.db.as_ref().unwrap().client().await;
    let sessions = count(&db, "SELECT count(*) FROM sessions").await;
    let votes = count(&db, "SELECT count(*) FROM votes").await;
    assert_eq!((sessions, votes), (1, 1));
}

#[tokio::test]
async fn votes_beyond_the_rate_are_429_with_retry_after() {
    let app = TestApp::spawn_with(Backend::Memory, |c| c.vote_rate = 1).await;
    let (session, poll) = session_with_open_poll(&app, "Rate", true).await;
    let voter = session.join(&app, None).await;
    let data = selecting(&poll, 0);
    assert_eq!(vote(&app, &voter, &poll, data.clone()).await.0, 201);
    let path = poll_path(&poll, "votes");
    let response = app
        .http
        .post(app.url(&path))
        .bearer_auth(&voter.token)
        .json(&json!({ "voteData": data }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}
