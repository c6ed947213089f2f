//! Who may do what: presenter and participant tokens, the admin key, and
//! a participant's own topic kept from generic tokens.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_right_people_may_do_each_thing() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let mine = create_session(&app, "Mine").await;
    let theirs = create_session(&app, "Theirs").await;
    let poll = mine.choice_poll(&app, true).await;
    let named = mine.choice_poll(&app, false).await;
    mine.start(&app).await;
    mine.activate(&app, &poll).await;
    let alice = mine.join(&app, None).await;
    let mallory = theirs.join(&app, None).await;
    let path_to = |action: &str| poll_path(&poll, action);
    let start = format!("/v1/sessions/{}/start", mine.id);

    // Presenter commands: no token 401, participant or other presenter 403.
    assert_eq!(post(&app, None, &start, json!({})).await.0, 401);
    assert_eq!(post(&app, Some("garbage"), &start, json!({})).await.0, 401);
    assert_eq!(post(&app, Some(&alice.token), &start, json!({})).await.0, 403);
    assert_eq!(
        post(&app, Some(&theirs.presenter), &start, json!({})).await.0,
        403
    );
    assert_eq!(
        post(&app, Some(&theirs.presenter), &path_to("close"), json!({}))
            .await
            .0,
        403
    );
    assert_eq!(
        post(&app, Some(&alice.token), &path_to("close"), json!({}))
            .await
            .0,
        403
    );
    let generic = app.demo_token();
    assert_eq!(
        post(&app, Some(&generic), &path_to("close"), json!({})).await.0,
        403
    );

    // Votes: only a participant of the poll's session, only as itself.
    let data = json!({"voteData": selecting(&poll, 0)});
    assert_eq!(post(&app, None, &path_to("votes"), data.clone()).await.0, 401);
    assert_eq!(
        post(&app, Some(&mine.presenter), &path_to("votes"), data.clone())
            .await
            .0,
        403
    );
    assert_eq!(
        post(&app, Some(&mallory.token), &path_to("votes"), data.clone())
            .await
            .0,
        403
    );
    let mut as_other = data.clone();
    as_other["participantId"] = json!(mallory.id);
    assert_eq!(
        post(&app, Some(&alice.token), &path_to("votes"), as_other)
            .await
            .0,
        403
    );
    assert_eq!(
        post(&app, Some(&alice.token), &path_to("votes"), data.clone())
            .await
            .0,
        201
    );

    // A participant's topic is readable with that participant's token only.
    let topic = format!("participant:{}", alice.id);
    for token in [&mallory.token, &mine.presenter] {
        let response = app
            .http
            .get(app.url("/v1/events"))
            .query(&[("topic", topic.as_str()), ("access_token", token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
    }
    let response = app
        .http
        .get(app.url("/v1/events"))
        .query(&[("topic", topic.as_str()), ("access_token", alice.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = app
        .http
        .get(app.url(&format!("/v1/sessions/{}/events", mine.id)))
        .query(&[("access_token", mallory.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "a token of another session");

    // Results: anyone in the session; voter identities: the presenter, on
    // non-anonymous polls only.
    assert_eq!(get(&app, Some(&alice.token), &path_to("results")).await.0, 200);
    assert_eq!(get(&app, Some(&mallory.token), &path_to("results")).await.0, 403);
    assert_eq!(get(&app, None, &path_to("results")).await.0, 401);
    assert_eq!(
        get(&app, Some(&mine.presenter), &path_to("votes")).await.0,
        403,
        "anonymous poll"
    );
    assert_eq!(get(&app, Some(&alice.token), &path_to("votes")).await.0, 403);
    mine.activate(&app, &named).await;
    let named_path = poll_path(&named, "votes");
    let named_data = json!({"voteData": selecting(&named, 2)});
    assert_eq!(
        post(&app, Some(&alice.token), &named_path, named_data).await.0,
        201
    );
    let (status, list) = get(&app, Some(&mine.presenter), &named_path).await;
    assert_eq!(status, 200);
    assert_eq!(list["votes"][0]["participantId"], alice.id);
    assert_eq!(get(&app, Some(&theirs.presenter), &named_path).await.0, 403);
}

#[tokio::test]
async fn the_admin_key_guards_session_creation_when_set() {
    let app = TestApp::spawn_with(Backend::Memory, |c| c.admin_key = Some("let-me-in".into())).await;
    let (status, body) = post(&app, None, "/v1/sessions", json!({"title": "No key"})).await;
    assert_eq!((status, error_code(&body)), (401, "unauthorized"));
    let response = app
        .http
        .post(app.url("/v1/sessions"))
        .header("X-Admin-Key", "let-me-in")
        .json(&json!({"title": "Keyed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let (status, _) = post(&app, Some("wrong"), "/v1/sessions", json!({"title": "Wrong"})).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_generic_token_never_reads_a_participants_own_topic() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let (session, poll) = session_with_open_poll(&app, "Private", false).await;
    let voter = session.join(&app, None).await;
    let firehose_token = app.token(&[], &["*:*", "participant:*"]);
    let firehose = app
        .subscribe_with(&app.token(&[], &["*:*"]), &["*:*"], None)
        .await;
    let (status, _) = vote(&app, &voter, &poll, selecting(&poll, 0)).await;
    assert_eq!(status, 201);

    // Asked for by name: refused, even with a permission that covers it.
    for path in [
        format!("/v1/events?topic=participant:{}", voter.id),
        format!("/v1/events/history?topic=participant:{}", voter.id),
        "/v1/events/history?topic=participant:*".to_string(),
    ] {
        let (status, body) = get(&app, Some(&firehose_token), &path).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    // Through a wildcard: the session's events, none of the voter's own.
    let (status, history) = get(&app, Some(&firehose_token), "/v1/events/history?topic=*:*").await;
    assert_eq!(status, 200);
    let topics: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["topic"].as_str().unwrap())
        .collect();
    assert!(topics.iter().any(|t| t.starts_with("session:")), "{topics:?}");
    assert!(
        !topics.iter().any(|t| t.starts_with("participant:")),
        "{topics:?}"
    );
    let mut firehose = firehose;
    let seen = firehose.stored(1).await;
    for event in seen
        .iter()
        .chain(firehose.next_within(Duration::from_millis(500)).await.iter())
    {
        assert!(!data(event)["topic"].as_str().unwrap().starts_with("participant:"));
    }
}
