//! Bad input: poll definitions outside the rules, unknown and malformed ids.

use super::*;

#[tokio::test]
async fn poll_definitions_outside_the_rules_are_422_naming_the_field_and_create_nothing() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let session = create_session(&app, "Definitions").await;
    let path = format!("/v1/sessions/{}/polls", session.id);
    let options = |n: usize| (0..n).map(|i| format!("option {i}")).collect::<Vec<_>>();
    let cases = vec![
        (
            json!({"question": "Q", "pollType": "multiple_choice", "options": options(1)}),
            "options",
        ),
        (
            json!({"question": "Q", "pollType": "multiple_choice", "options": options(21)}),
            "options",
        ),
        (
            json!({"question": "Q", "pollType": "rating_scale", "minRating": 5, "maxRating": 5}),
            "minRating",
        ),
        (json!({"question": "  ", "pollType": "open_text"}), "question"),
        (
            json!({"question": "Q".repeat(501), "pollType": "open_text"}),
            "question",
        ),
        (json!({"question": "Q", "pollType": "ranking"}), "pollType"),
        (
            json!({"question": "Q", "pollType": "multiple_choice", "options": ["a", "x".repeat(201)]}),
            "options",
        ),
        (json!({"pollType": "open_text"}), "question"),
    ];
    for (definition, field) in cases {
        let (status, body) = post(&app, Some(&session.presenter), &path, definition.clone()).await;
        assert_eq!(status, 422, "{definition}: {body}");
        assert_eq!(body["error"]["code"], "invalid_payload");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(field),
            "{field} named in {body}"
        );
    }
    assert_eq!(
        session.snapshot(&app).await["polls"],
        json!([]),
        "nothing half-created"
    );
    let ok = session
        .create_poll(
            &app,
            json!({"question": "Q", "pollType": "multiple_choice", "options": options(20)}),
        )
        .await;
    assert_eq!(ok["options"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn unknown_ids_are_404_and_malformed_ids_400() {
    let app = TestApp::spawn(Backend::Memory).await;
    let session = create_session(&app, "Ids").await;
    let unknown = uuid::Uuid::new_v4();
    let t = Some(session.presenter.as_str());
    assert_eq!(get(&app, None, &format!("/v1/sessions/{unknown}")).await.0, 404);
    assert_eq!(get(&app, None, "/v1/sessions/nosuchcode").await.0, 404);
    assert_eq!(get(&app, None, "/v1/sessions/not%20a%20code").await.0, 400);
    assert_eq!(
        post(&app, t, &format!("/v1/polls/{unknown}/activate"), json!({}))
            .await
            .0,
        404
    );
    assert_eq!(post(&app, t, "/v1/polls/xyz/activate", json!({})).await.0, 400);
    assert_eq!(post(&app, t, "/v1/sessions/xyz/start", json!({})).await.0, 400);
    assert_eq!(
        post(
            &app,
            None,
            &format!("/v1/sessions/{unknown}/participants"),
            json!({})
        )
        .await
        .0,
        404
    );
    let response = app
        .http
        .get(app.url(&format!("/v1/sessions/{unknown}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = app
        .http
        .get(app.url("/v1/sessions/bad/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // Joining by slug or by id both work.
    assert_eq!(
        post(
            &app,
            None,
            &format!("/v1/sessions/{}/participants", session.id),
            json!({})
        )
        .await
        .0,
        201
    );
    assert_eq!(
        post(
            &app,
            None,
            &format!("/v1/sessions/{}/participants", session.slug.to_uppercase()),
            json!({})
        )
        .await
        .0,
        201
    );
}
