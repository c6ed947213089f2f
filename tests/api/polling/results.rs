//! Results: the tally in each confirmation, coalesced broadcasts, and
//! broadcasts that never name a voter.

use super::*;

/// No broadcast frame ever carries a voter's identity, for anonymous and
/// non-anonymous polls of every type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_broadcast_frame_carries_a_voter_identity() {
    let app = TestApp::spawn_with(Backend::Postgres, |c| {
        c.results_interval = Duration::from_millis(20)
    })
    .await;
    let session = create_session(&app, "Privacy").await;
    let mut raw = app
        .http
        .get(app.url(&format!("/v1/sessions/{}/events", session.id)))
        .send()
        .await
        .unwrap();
    let polls = vec![
        session.choice_poll(&app, true).await,
        session.choice_poll(&app, false).await,
        session
            .create_poll(
                &app,
                json!({"question": "Rate", "pollType": "rating_scale", "isAnonymous": false}),
            )
            .await,
        session
            .create_poll(
                &app,
                json!({"question": "Say", "pollType": "open_text", "isAnonymous": false}),
            )
            .await,
        session
            .create_poll(
                &app,
                json!({"question": "Say", "pollType": "open_text", "isAnonymous": true}),
            )
            .await,
    ];
    session.start(&app).await;
    let mut voters = Vec::new();
    for n in 0..12 {
        voters.push(session.join(&app, Some(&format!("Voter {n}"))).await);
    }
    for poll in &polls {
        session.activate(&app, poll).await;
        for (n, voter) in voters.iter().enumerate() {
            let data = match poll["pollType"].as_str().unwrap() {
                "multiple_choice" => selecting(poll, n % 3),
                "rating_scale" => json!({"ratingValue": 1 + (n % 5)}),
                _ => json!({"textResponse": format!("answer {n}")}),
            };
            assert_eq!(vote(&app, voter, poll, data).await.0, 201);
        }
    }
    session.end(&app).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut text = String::new();
    while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_millis(500), raw.chunk())
        .await
        .map(|c| c.unwrap())
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let broadcasts = text.matches("event: vote:accepted").count();
    assert!(broadcasts >= polls.len(), "results were broadcast ({broadcasts})");
    for voter in &voters {
        for frame in text.split("\n\n").filter(|f| f.contains("event: vote:accepted")) {
            assert!(
                !frame.contains(&voter.id),
                "a results broadcast names a voter: {frame}"
            );
            assert!(
                !frame.contains("participantId"),
                "a results broadcast has a participantId: {frame}"
            );
            assert!(
                !frame.contains("Voter "),
                "a results broadcast has a display name: {frame}"
            );
        }
    }
    // The final broadcast of each poll carries its final totals.
    for poll in &polls {
        let id = poll["pollId"].as_str().unwrap();
        let last = text
            .split("\n\n")
            .filter(|f| f.contains("event: vote:accepted") && f.contains(id))
            .last()
            .unwrap();
        assert!(
            last.contains("\"currentVoteCount\":12"),
            "final totals in the last broadcast: {last}"
        );
    }
}

/// Each confirmation carries the tally as it stands after that vote: the
/// rating distribution and its average (two decimals), the newest text answers oldest
/// first. On Postgres the tallies are read in the same round trip as the
/// vote's write, so this would catch a tally read before the write.
async fn each_confirmation_carries_the_tally_after_its_vote(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = create_session(&app, "Tallies").await;
    let (rating, text) = session.rating_and_text_polls(&app).await;
    session.start(&app).await;
    let mut voters = Vec::new();
    for _ in 0..3 {
        voters.push(session.join(&app, None).await);
    }
    session.activate(&app, &rating).await;
    let expected = [
        (json!({"1": 0, "2": 0, "3": 1}), 3.0),
        (json!({"1": 1, "2": 0, "3": 1}), 2.0),
        (json!({"1": 1, "2": 0, "3": 2}), 2.33),
    ];
    for ((voter, value), (distribution, average)) in voters.iter().zip([3, 1, 3]).zip(expected) {
        let (status, body) = vote(&app, voter, &rating, json!({"ratingValue": value})).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["ratingDistribution"], distribution);
        assert_eq!(body["averageRating"], average, "{body}");
    }
    session.activate(&app, &text).await;
    for (n, (voter, answer)) in voters.iter().zip(["first", "second", "third"]).enumerate() {
        let (status, body) = vote(&app, voter, &text, json!({"textResponse": answer})).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["currentVoteCount"], n + 1);
        let said: Vec<&str> = ["first", "second", "third"][..=n].to_vec();
        assert_eq!(body["textResponses"], json!(said));
    }
}
on_both_stores!(tallies, each_confirmation_carries_the_tally_after_its_vote);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_votes_is_broadcast_coalesced_with_final_totals_last() {
    let app = TestApp::spawn_with(Backend::Postgres, |c| {
        c.results_interval = Duration::from_millis(200)
    })
    .await;
    let session = create_session(&app, "Burst").await;
    let poll = session
        .open_poll(&app, json!({"question": "Rate", "pollType": "rating_scale"}))
        .await;
    let mut voters = Vec::new();
    for _ in 0..40 {
        voters.push(session.join(&app, None).await);
    }
    let mut room = session.watch(&app, None, None).await;
    room.next().await;
    let mut tasks = Vec::new();
    for (n, voter) in voters.into_iter().enumerate() {
        let app_url = app.url(&poll_path(&poll, "votes"));
        let http = app.http.clone();
        tasks.push(tokio::spawn(async move {
            http.post(app_url)
                .bearer_auth(voter.token)
                .json(&json!({"voteData": {"ratingValue": 1 + n % 5}}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 201);
    }
    let mut broadcasts = Vec::new();
    while let Some(event) = room.next_within(Duration::from_millis(800)).await {
        if event.event == "vote:accepted" {
            broadcasts.push(data(&event)["payload"].clone());
        }
    }
    assert!(!broadcasts.is_empty());
    assert!(
        broadcasts.len() < 40,
        "coalesced: {} broadcasts for 40 votes",
        broadcasts.len()
    );
    let last = broadcasts.last().unwrap();
    assert_eq!(last["currentVoteCount"], 40);
    assert_eq!(last["averageRating"], 3.0);
    assert_eq!(
        last["ratingDistribution"],
        json!({"1": 8, "2": 8, "3": 8, "4": 8, "5": 8})
    );
    let counts: Vec<i64> = broadcasts
        .iter()
        .map(|b| b["currentVoteCount"].as_i64().unwrap())
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "totals only grow: {counts:?}"
    );
    assert!(last.is_object(), "{last}");
}
