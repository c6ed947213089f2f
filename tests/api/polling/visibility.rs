//! Results visibility (#18): results withheld from the audience never
//! reach a participant's stream, confirmation, snapshot or results
//! request, while the presenter sees them all along; a reveal (or the
//! close, for `after_vote` and `after_close`) makes them public with
//! `poll:results_revealed`.

use super::*;

/// Reads every frame a stream has sent until it stays quiet for `quiet`.
async fn drain(response: &mut reqwest::Response, quiet: Duration) -> String {
    let mut text = String::new();
    while let Ok(Some(chunk)) = tokio::time::timeout(quiet, response.chunk())
        .await
        .map(|c| c.unwrap())
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

async fn open_raw(app: &TestApp, session: &Session, token: Option<&str>) -> reqwest::Response {
    let mut request = app
        .http
        .get(app.url(&format!("/v1/sessions/{}/events", session.id)));
    if let Some(token) = token {
        request = request.query(&[("access_token", token)]);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response
}

/// The frames of `text` that name `poll_id`.
fn frames_about<'a>(text: &'a str, poll_id: &str) -> Vec<&'a str> {
    text.split("\n\n").filter(|f| f.contains(poll_id)).collect()
}

const RESULT_FIELDS: [&str; 4] = [
    "voteBreakdown",
    "ratingDistribution",
    "averageRating",
    "textResponses",
];

fn assert_no_results(frames: &[&str], who: &str) {
    for frame in frames {
        for field in RESULT_FIELDS {
            assert!(
                !frame.contains(field),
                "{who} received {field} before the reveal: {frame}"
            );
        }
    }
}

/// Given a `manual` poll with votes, when nobody has revealed it, then no
/// frame of the audience's or a voter's stream, no confirmation, snapshot
/// or results answer carries its results; the presenter's stream and
/// snapshot do. When the presenter reveals them, `poll:results_revealed`
/// carries them to everyone, and a second reveal is refused.
async fn manual_results_stay_with_the_presenter_until_revealed(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.results_interval = Duration::from_millis(20)).await;
    let session = create_session(&app, "Hidden").await;
    let poll = session
        .create_poll(
            &app,
            json!({"question": "Pick", "pollType": "multiple_choice", "options": ["A", "B"], "resultsVisibility": "manual"}),
        )
        .await;
    assert_eq!(poll["resultsVisibility"], "manual");
    assert_eq!(poll["resultsRevealed"], false);
    let poll_id = poll["pollId"].as_str().unwrap().to_string();
    session.start(&app).await;
    let voters = [
        session.join(&app, None).await,
        session.join(&app, None).await,
        session.join(&app, None).await,
    ];
    let mut audience = open_raw(&app, &session, None).await;
    let mut voter_stream = open_raw(&app, &session, Some(&voters[0].token)).await;
    let mut presenter_stream = open_raw(&app, &session, Some(&session.presenter)).await;
    session.activate(&app, &poll).await;

    for (n, voter) in voters.iter().enumerate() {
        let (status, body) = vote(&app, voter, &poll, selecting(&poll, n % 2)).await;
        assert_eq!(status, 201, "{body}");
        assert!(
            body.get("voteBreakdown").is_none(),
            "a confirmation leaked results: {body}"
        );
    }
    let (status, body) = get(&app, Some(&voters[0].token), &poll_path(&poll, "results")).await;
    assert_eq!((status, error_code(&body)), (403, "results_withheld"), "{body}");

    let path = format!("/v1/sessions/{}", session.id);
    let (_, mine) = get(&app, Some(&voters[0].token), &path).await;
    assert_eq!(mine["polls"][0]["resultsVisible"], false);
    assert_eq!(mine["polls"][0]["results"], Value::Null);
    assert_eq!(
        mine["polls"][0]["myVote"]["selectedOptionIds"],
        json!([option_id(&poll, 0)]),
        "the snapshot tells a participant what it chose: {mine}"
    );
    let (_, anyone) = get(&app, None, &path).await;
    assert_eq!(anyone["polls"][0]["results"], Value::Null);
    assert_eq!(anyone["polls"][0]["myVote"], Value::Null);
    let (_, presenter) = get(&app, Some(&session.presenter), &path).await;
    assert_eq!(
        presenter["polls"][0]["results"]["currentVoteCount"], 3,
        "{presenter}"
    );
    assert_eq!(
        presenter["polls"][0]["results"]["voteBreakdown"][0]["voteCount"],
        2
    );

    let before_audience = drain(&mut audience, Duration::from_millis(600)).await;
    let before_voter = drain(&mut voter_stream, Duration::from_millis(200)).await;
    let before_presenter = drain(&mut presenter_stream, Duration::from_millis(200)).await;
    assert_no_results(&frames_about(&before_audience, &poll_id), "the audience");
    assert_no_results(&frames_about(&before_voter, &poll_id), "a voter");
    assert!(
        before_audience.contains("\"resultsWithheld\":true")
            && before_audience.contains("\"currentVoteCount\":3"),
        "the audience hears how many answered: {before_audience}"
    );
    assert!(
        frames_about(&before_presenter, &poll_id)
            .iter()
            .any(|f| f.contains("\"currentVoteCount\":3") && f.contains("voteBreakdown")),
        "the presenter's stream has the results: {before_presenter}"
    );

    let (status, body) = post(
        &app,
        Some(&voters[0].token),
        &poll_path(&poll, "reveal"),
        json!({}),
    )
    .await;
    assert_eq!(status, 403, "only the presenter reveals: {body}");
    let (status, body) = post(
        &app,
        Some(&session.presenter),
        &poll_path(&poll, "reveal"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["resultsRevealed"], true);
    let (status, _) = post(
        &app,
        Some(&session.presenter),
        &poll_path(&poll, "reveal"),
        json!({}),
    )
    .await;
    assert_eq!(status, 409, "a second reveal is refused");

    let after = drain(&mut voter_stream, Duration::from_millis(600)).await;
    let revealed = after
        .split("\n\n")
        .find(|f| f.contains("event: poll:results_revealed"))
        .unwrap_or_else(|| panic!("no poll:results_revealed in {after}"));
    assert!(revealed.contains("\"reason\":\"presenter\""), "{revealed}");
    assert!(
        revealed.contains("\"voteCount\":2"),
        "the reveal carries the results: {revealed}"
    );
    let (status, body) = get(&app, Some(&voters[1].token), &poll_path(&poll, "results")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["currentVoteCount"], 3);
}
on_both_stores!(
    manual_reveal,
    manual_results_stay_with_the_presenter_until_revealed
);

/// Given `after_vote` and `after_close` polls, a voter of the first sees
/// its results at once (a participant who has not voted does not), a voter
/// of the second does not; closing either makes them public with
/// `poll:results_revealed` (reason `closed`).
async fn results_follow_the_vote_or_the_close(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = create_session(&app, "Later").await;
    let define = |visibility: &str| json!({"question": "Pick", "pollType": "multiple_choice", "options": ["A", "B"], "resultsVisibility": visibility});
    let after_vote = session.create_poll(&app, define("after_vote")).await;
    let after_close = session.create_poll(&app, define("after_close")).await;
    session.start(&app).await;
    let voter = session.join(&app, None).await;
    let bystander = session.join(&app, None).await;
    let mut audience = session.watch(&app, None, None).await;

    session.activate(&app, &after_vote).await;
    let (_, body) = vote(&app, &voter, &after_vote, selecting(&after_vote, 1)).await;
    assert_eq!(
        body["voteBreakdown"][1]["voteCount"], 1,
        "a voter sees after_vote results: {body}"
    );
    let (status, _) = get(&app, Some(&voter.token), &poll_path(&after_vote, "results")).await;
    assert_eq!(status, 200);
    let (status, _) = get(&app, Some(&bystander.token), &poll_path(&after_vote, "results")).await;
    assert_eq!(status, 403, "a participant who has not voted does not");

    // Opening the next poll closes this one, which reveals its results.
    session.activate(&app, &after_close).await;
    let (_, body) = vote(&app, &voter, &after_close, selecting(&after_close, 0)).await;
    assert!(
        body.get("voteBreakdown").is_none(),
        "after_close: not before the close: {body}"
    );
    session.close(&app, &after_close).await;

    let mut reveals = Vec::new();
    while reveals.len() < 2 {
        let event = audience.next_stored().await;
        let envelope = data(&event);
        match event.event.as_str() {
            "poll:closed" => assert!(envelope["payload"]["reason"].is_string(), "{envelope}"),
            "poll:results_revealed" => reveals.push(envelope["payload"].clone()),
            _ => {}
        }
    }
    assert_eq!(reveals[0]["pollId"], after_vote["pollId"]);
    assert_eq!(reveals[1]["pollId"], after_close["pollId"]);
    for revealed in &reveals {
        assert_eq!(revealed["reason"], "closed");
        assert_eq!(revealed["currentVoteCount"], 1);
    }
    let (status, _) = get(&app, Some(&bystander.token), &poll_path(&after_vote, "results")).await;
    assert_eq!(status, 200, "public once closed");
}
on_both_stores!(vote_or_close, results_follow_the_vote_or_the_close);

/// Open-text answers are each participant's own until shown: the default
/// for an open_text poll is `manual`; an unknown visibility is a 422.
async fn open_text_answers_are_withheld_by_default(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = create_session(&app, "Words").await;
    let text = session
        .create_poll(&app, json!({"question": "One word?", "pollType": "open_text"}))
        .await;
    assert_eq!(text["resultsVisibility"], "manual");
    let (status, body) = post(
        &app,
        Some(&session.presenter),
        &format!("/v1/sessions/{}/polls", session.id),
        json!({"question": "Q", "pollType": "open_text", "resultsVisibility": "sometimes"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("resultsVisibility"));
    session.start(&app).await;
    let voter = session.join(&app, None).await;
    session.activate(&app, &text).await;
    let (_, body) = vote(&app, &voter, &text, json!({"textResponse": "Focus"})).await;
    assert!(body.get("textResponses").is_none(), "{body}");
    let (_, mine) = get(&app, Some(&voter.token), &format!("/v1/sessions/{}", session.id)).await;
    assert_eq!(mine["polls"][0]["myVote"]["textResponse"], "Focus", "{mine}");
    assert_eq!(mine["polls"][0]["results"], Value::Null);
}
on_both_stores!(open_text_default, open_text_answers_are_withheld_by_default);
