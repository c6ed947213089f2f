//! What a real meeting needs beside the polls (#18): the join QR code, a
//! co-presenter's own link, open-text answers grouped, and the results
//! export.

use super::*;

/// The dark modules of a QR code drawn by the server, read back from its
/// SVG path (`M{x} {y}h{m}v{m}…` per module, a quiet zone of 4 modules)
/// and decoded by an independent decoder (`rqrr`).
fn decode_qr(svg: &str) -> String {
    let path = svg
        .split(" d=\"")
        .nth(1)
        .expect("an SVG path")
        .split('"')
        .next()
        .unwrap();
    let mut dark = std::collections::HashSet::new();
    let mut module = 0usize;
    for part in path.split('M').skip(1) {
        let (x, rest) = part.split_once(' ').unwrap();
        let (y, rest) = rest.split_once('h').unwrap();
        module = rest.split('v').next().unwrap().parse().unwrap();
        dark.insert((x.parse::<usize>().unwrap(), y.parse::<usize>().unwrap()));
    }
    let side: usize = svg
        .split("width=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let size = side / module - 8;
    let grid = rqrr::SimpleGrid::from_func(size, |x, y| dark.contains(&((x + 4) * module, (y + 4) * module)));
    let (_, content) = rqrr::Grid::new(grid).decode().expect("a readable QR code");
    content
}

async fn qr_of(app: &TestApp, key: &str) -> (u16, String) {
    let response = app
        .http
        .get(app.url(&format!("/v1/sessions/{key}/qr.svg")))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status == 200 {
        assert_eq!(response.headers()["content-type"], "image/svg+xml");
    }
    (status, response.text().await.unwrap())
}

/// Given a session, the QR code at its id or its join code reads as the
/// join link: the public URL's with `--public-url`, else the address the
/// caller used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_qr_code_reads_as_the_join_link() {
    let app = TestApp::spawn(Backend::Memory).await;
    let session = create_session(&app, "QR").await;
    let (status, svg) = qr_of(&app, &session.id).await;
    assert_eq!(status, 200, "{svg}");
    let host = app.base.trim_start_matches("http://");
    assert_eq!(
        decode_qr(&svg),
        format!("http://{host}/join?code={}", session.slug)
    );
    assert_eq!(qr_of(&app, &session.slug).await.1, svg, "by join code too");
    assert_eq!(qr_of(&app, "nosuch").await.0, 404);

    let public = pollcast::config::PublicUrl::parse("https://poll.example.org/team").unwrap();
    let app = TestApp::spawn_with(Backend::Memory, |c| c.public_url = Some(public)).await;
    let session = create_session(&app, "QR").await;
    let (_, svg) = qr_of(&app, &session.slug).await;
    assert_eq!(
        decode_qr(&svg),
        format!("https://poll.example.org/team/join?code={}", session.slug)
    );
}

/// Given a presenter, when it invites a co-presenter, then the new token
/// runs the session as the presenter's does; nobody else may invite.
async fn a_co_presenter_has_the_presenters_powers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = create_session(&app, "Two at the desk").await;
    let other = create_session(&app, "Elsewhere").await;
    let poll = session.choice_poll(&app, true).await;
    let participant = session.join(&app, None).await;
    let path = format!("/v1/sessions/{}/presenters", session.id);
    for (token, who) in [
        (&participant.token, "a participant"),
        (&other.presenter, "another session's presenter"),
    ] {
        let (status, body) = post(&app, Some(token), &path, json!({})).await;
        assert_eq!(status, 403, "{who}: {body}");
    }
    let (status, body) = post(&app, None, &path, json!({})).await;
    assert_eq!(status, 401, "{body}");
    let (status, invited) = post(&app, Some(&session.presenter), &path, json!({})).await;
    assert_eq!(status, 201, "{invited}");
    let co = invited["presenterToken"].as_str().unwrap();
    assert_ne!(co, session.presenter);
    let start = format!("/v1/sessions/{}/start", session.id);
    assert_eq!(post(&app, Some(co), &start, json!({})).await.0, 200);
    let (status, body) = post(&app, Some(co), &poll_path(&poll, "activate"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (_, snapshot) = get(&app, Some(co), &format!("/v1/sessions/{}", session.id)).await;
    assert_eq!(snapshot["status"], "active");
}
on_both_stores!(co_presenter, a_co_presenter_has_the_presenters_powers);

/// Open-text answers are grouped ignoring case and runs of spaces, shown
/// with the first spelling, the most frequent first, on both stores.
async fn open_text_answers_are_grouped(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = create_session(&app, "Words").await;
    let poll = session
        .open_poll(&app, json!({"question": "One word?", "pollType": "open_text"}))
        .await;
    for answer in [
        "Speed",
        "Focus",
        "focus ",
        "FOCUS",
        "speed",
        "Team  spirit",
        "team spirit",
        "focus",
    ] {
        let voter = session.join(&app, None).await;
        assert_eq!(
            vote(&app, &voter, &poll, json!({"textResponse": answer})).await.0,
            201
        );
    }
    let (status, results) = get(&app, Some(&session.presenter), &poll_path(&poll, "results")).await;
    assert_eq!(status, 200, "{results}");
    assert_eq!(
        results["textGroups"],
        json!([
            {"text": "Focus", "count": 4},
            {"text": "Speed", "count": 2},
            {"text": "Team  spirit", "count": 2},
        ])
    );
    assert_eq!(
        results["textResponses"].as_array().unwrap().len(),
        8,
        "every answer is kept"
    );
}
on_both_stores!(grouping, open_text_answers_are_grouped);

/// Given a session with a choice, a rating and an open-text poll, the
/// presenter downloads every result as JSON and CSV; no one else may.
async fn the_presenter_exports_every_result(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = create_session(&app, "Quarterly").await;
    let choice = session.choice_poll(&app, true).await;
    let (rating, text) = session.rating_and_text_polls(&app).await;
    session.start(&app).await;
    let voters = [session.join(&app, None).await, session.join(&app, None).await];
    session.activate(&app, &choice).await;
    for (n, voter) in voters.iter().enumerate() {
        assert_eq!(vote(&app, voter, &choice, selecting(&choice, n)).await.0, 201);
    }
    session.activate(&app, &rating).await;
    for (voter, value) in voters.iter().zip([1, 3]) {
        assert_eq!(
            vote(&app, voter, &rating, json!({"ratingValue": value})).await.0,
            201
        );
    }
    session.activate(&app, &text).await;
    for (voter, answer) in voters.iter().zip(["=cmd|' /C calc'!A0", "Ship it, now"]) {
        assert_eq!(
            vote(&app, voter, &text, json!({"textResponse": answer})).await.0,
            201
        );
    }
    session.close(&app, &text).await;

    let download = |path: &str, token: Option<&str>| {
        let mut request = app
            .http
            .get(app.url(&format!("/v1/sessions/{}/{path}", session.id)));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let response = download("export.json", Some(&session.presenter)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains(&format!("pollcast-{}.json", session.slug)));
    let json: Value = response.json().await.unwrap();
    let polls = json["polls"].as_array().unwrap();
    assert_eq!(polls.len(), 3);
    assert_eq!(polls[0]["results"]["currentVoteCount"], 2);
    assert_eq!(polls[0]["results"]["voteBreakdown"][1]["voteCount"], 1);
    assert_eq!(polls[1]["results"]["averageRating"], 2.0);
    assert!(polls[2]["closedAt"].is_string() && polls[2]["activatedAt"].is_string());
    assert_eq!(polls[2]["results"]["textGroups"][1]["text"], "Ship it, now");

    let response = download("export.csv", Some(&session.presenter)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = response.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("poll,question,type,status"), "{csv}");
    // Three options, three rating values, two answers.
    assert_eq!(lines.len(), 1 + 3 + 3 + 2, "{csv}");
    assert!(
        lines[1].starts_with("1,Pick one,multiple_choice,closed,"),
        "{csv}"
    );
    assert!(
        csv.contains(",'=cmd|' /C calc'!A0,1,50.00,"),
        "formula defused: {csv}"
    );
    assert!(csv.contains(",\"Ship it, now\",1,50.00,"), "{csv}");
    assert!(
        csv.contains(",3,1,50.00,2\r\n"),
        "rating 3 once, average 2: {csv}"
    );

    assert_eq!(
        download("export.csv", Some(&voters[0].token))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(download("export.json", None).await.unwrap().status(), 401);
}
on_both_stores!(export, the_presenter_exports_every_result);

/// Given grouped answers, when the presenter hides one, then it leaves
/// every result (all its spellings), the stream says so, and only the
/// presenter may do it, on open-text polls, once.
async fn a_hidden_answer_leaves_the_results(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.results_interval = Duration::from_millis(20)).await;
    let session = create_session(&app, "Moderated").await;
    let poll = session
        .open_poll(
            &app,
            json!({"question": "One word?", "pollType": "open_text", "resultsVisibility": "always"}),
        )
        .await;
    let mut voters = Vec::new();
    for answer in ["Focus", "Rude  word", "rude word", "focus"] {
        let voter = session.join(&app, None).await;
        assert_eq!(
            vote(&app, &voter, &poll, json!({"textResponse": answer})).await.0,
            201
        );
        voters.push(voter);
    }
    let mut audience = session.watch(&app, None, None).await;
    let path = poll_path(&poll, "hidden-answers");
    let (status, _) = post(&app, Some(&voters[0].token), &path, json!({"text": "rude word"})).await;
    assert_eq!(status, 403, "only the presenter hides answers");
    let (status, body) = post(&app, Some(&session.presenter), &path, json!({"text": "  "})).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = post(
        &app,
        Some(&session.presenter),
        &path,
        json!({"text": "RUDE word"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = post(
        &app,
        Some(&session.presenter),
        &path,
        json!({"text": "rude word"}),
    )
    .await;
    assert_eq!(status, 409, "hidden already");

    let (_, results) = get(&app, Some(&voters[0].token), &poll_path(&poll, "results")).await;
    assert_eq!(
        results["textGroups"],
        json!([{"text": "Focus", "count": 2}]),
        "{results}"
    );
    assert_eq!(results["textResponses"], json!(["Focus", "focus"]));
    assert_eq!(results["currentVoteCount"], 4, "the votes themselves stay");
    let (mut hidden, mut rebroadcast) = (None, None);
    while hidden.is_none() || rebroadcast.is_none() {
        let event = audience.next_stored().await;
        let payload = data(&event)["payload"].clone();
        match event.event.as_str() {
            "poll:answer_hidden" => hidden = Some(payload),
            "vote:accepted" if hidden.is_some() => rebroadcast = Some(payload),
            _ => {}
        }
    }
    assert_eq!(hidden.unwrap()["answer"], "RUDE word");
    assert_eq!(
        rebroadcast.unwrap()["textGroups"],
        json!([{"text": "Focus", "count": 2}])
    );

    let choice = session.choice_poll(&app, true).await;
    let (status, _) = post(
        &app,
        Some(&session.presenter),
        &poll_path(&choice, "hidden-answers"),
        json!({"text": "A"}),
    )
    .await;
    assert_eq!(status, 409, "only open-text answers");
}
on_both_stores!(hiding, a_hidden_answer_leaves_the_results);
