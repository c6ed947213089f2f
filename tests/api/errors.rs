//! Bad input gets the contract's error body and the right 4xx, and changes
//! nothing.

use std::time::Duration;

use pollcast::auth::Claims;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};

async fn error_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body: Value = response.json().await.expect("error bodies are JSON");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert_eq!(
        body["error"]["traceId"].as_str().map(str::len),
        Some(32),
        "{body}"
    );
    (status, body)
}

#[tokio::test]
async fn malformed_publishes_are_4xx_and_append_nothing() {
    let app = TestApp::spawn(Backend::Memory).await;
    let token = app.demo_token();
    let url = app.url("/v1/topics/demo:a/events");
    let post = || app.http.post(&url).bearer_auth(&token);

    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            post()
                .header("content-type", "application/json")
                .body("{not json"),
            StatusCode::BAD_REQUEST,
            "invalid_payload",
        ),
        (
            post()
                .header("content-type", "text/plain")
                .body(r#"{"type":"demo:x"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            post().body(r#"{"type":"demo:x"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            post().json(&json!({"payload": {}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_payload",
        ),
        (
            post().json(&json!({"type": "nocolon"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_payload",
        ),
        (
            post().json(&json!({"type": "a:b\nevent: x"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_payload",
        ),
        (
            post().json(&json!({"type": "demo:x", "payload": 3})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_payload",
        ),
        (
            post().json(&json!({"type": "demo:x", "payload": null})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_payload",
        ),
        (
            post().json(&json!({"type": "demo:x", "expectedVersion": 1})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_payload",
        ),
        (
            post().json(&json!({"type": "connection:established"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_payload",
        ),
        (
            post().json(&json!({"type": "demo:x", "payload": {"pad": "x".repeat(70_000)}})),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (request, status, code) in cases {
        let (got, body) = error_of(request.send().await.unwrap()).await;
        assert_eq!(
            (got, body["error"]["code"].as_str().unwrap()),
            (status, code),
            "{body}"
        );
    }
    assert_eq!(
        app.history_len("topic=demo:*&topic=other:*").await,
        0,
        "nothing was appended"
    );
}

#[tokio::test]
async fn an_oversized_chunked_body_is_refused_without_a_length() {
    let app = TestApp::spawn(Backend::Memory).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..20).map(|_| Ok(vec![b' '; 8 * 1024])).collect();
    let response = app
        .http
        .post(app.url("/v1/topics/demo:a/events"))
        .bearer_auth(app.demo_token())
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(response).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
}

#[tokio::test]
async fn bad_topics_are_400_and_disallowed_topics_403() {
    let app = TestApp::spawn(Backend::Memory).await;
    let body = json!({"type": "demo:x"});
    for topic in ["Demo:A", "demo::a", "a:b:c:d:e:f:g:h:i", "demo%20a", "demo:*"] {
        let (status, err) = error_of(app.publish_raw(&app.demo_token(), topic, body.clone()).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{topic}: {err}");
    }
    let (status, _) = error_of(app.publish_raw(&app.demo_token(), "secret:a", body.clone()).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let everything = app.token(&["session:*", "participant:*"], &[]);
    for reserved in ["session:abc", "participant:abc"] {
        let (status, err) = error_of(app.publish_raw(&everything, reserved, body.clone()).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{reserved}: {err}");
    }
    // `%3A` is a colon.
    let response = app
        .publish_raw(&app.demo_token(), "demo%3Aencoded", body.clone())
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn missing_invalid_and_expired_tokens_are_401() {
    let app = TestApp::spawn(Backend::Memory).await;
    let expired = app.keys.mint(&Claims {
        sub: Some("x".into()),
        exp: 1,
        publish: vec!["demo:*".into()],
        subscribe: vec!["demo:*".into()],
        ..Claims::default()
    });
    let forged = pollcast::auth::TokenKeys::new(b"another secret").mint(&Claims {
        sub: None,
        exp: pollcast::auth::expiry_in(Duration::from_secs(60)),
        publish: vec!["demo:*".into()],
        subscribe: vec!["demo:*".into()],
        ..Claims::default()
    });
    let body = json!({"type": "demo:x"});
    let url = app.url("/v1/topics/demo:a/events");
    let (status, err) = error_of(app.http.post(&url).json(&body).send().await.unwrap()).await;
    assert_eq!(
        (status, err["error"]["code"].as_str().unwrap()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    for (token, code) in [
        ("garbage", "unauthorized"),
        (forged.as_str(), "unauthorized"),
        (expired.as_str(), "token_expired"),
    ] {
        let (status, err) = error_of(app.publish_raw(token, "demo:a", body.clone()).await).await;
        assert_eq!(
            (status, err["error"]["code"].as_str().unwrap()),
            (StatusCode::UNAUTHORIZED, code)
        );
    }
    // Streams and history check the token too, from the header or the query.
    for path in ["/v1/events?topic=demo:a", "/v1/events/history?topic=demo:a"] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let response = app
            .http
            .get(app.url(&format!("{path}&access_token={expired}")))
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(response).await.1["error"]["code"], "token_expired");
        let response = app
            .http
            .get(app.url(&format!("{path}&access_token={}", app.demo_token())))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    // A query token does not count on POST.
    let response = app
        .http
        .post(format!("{url}?access_token={}", app.demo_token()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_stream_and_history_requests_are_400_or_403() {
    let app = TestApp::spawn(Backend::Memory).await;
    let token = app.token(&[], &["demo:a"]);
    for path in ["/v1/events", "/v1/events/history"] {
        for (query, status) in [
            ("", StatusCode::BAD_REQUEST),
            ("?topic=Bad", StatusCode::BAD_REQUEST),
            ("?topic=demo:a&lastEventId=x", StatusCode::BAD_REQUEST),
            ("?topic=demo:b", StatusCode::FORBIDDEN),
            ("?topic=demo:*:x", StatusCode::FORBIDDEN),
        ] {
            if path.ends_with("history") && query.contains("lastEventId") {
                continue;
            }
            let response = app
                .http
                .get(app.url(&format!("{path}{query}")))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let (got, err) = error_of(response).await;
            assert_eq!(got, status, "{path}{query}: {err}");
        }
    }
    for query in [
        "after=-1",
        "limit=0",
        "limit=1001",
        "wait=31",
        "wait=soon",
        "after=1&after=2",
    ] {
        let response = app
            .http
            .get(app.url(&format!("/v1/events/history?topic=demo:a&{query}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(response).await.0, StatusCode::BAD_REQUEST, "{query}");
    }
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let app = TestApp::spawn(Backend::Memory).await;
    let (status, body) = error_of(app.http.get(app.url("/v1/nothing")).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, _) = error_of(
        app.http
            .delete(app.url("/v1/events?topic=demo:a"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

/// A request line and headers over 8 KiB: 431 with the contract's error
/// body, on a stream request (which the direct path would otherwise take)
/// and on a publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_is_431_with_the_error_body() {
    let app = TestApp::spawn(Backend::Memory).await;
    let token = app.demo_token();
    let long_query: String = (0..30)
        .map(|n| format!("topic=demo:{}&", "x".repeat(300) + &n.to_string()))
        .collect();
    let stream = app
        .http
        .get(app.url(&format!("/v1/events?{long_query}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let publish = app
        .http
        .post(app.url("/v1/topics/demo:a/events"))
        .bearer_auth(&token)
        .header("x-padding", "p".repeat(9000))
        .json(&json!({"type": "demo:said"}))
        .send()
        .await
        .unwrap();
    for response in [stream, publish] {
        let (status, body) = error_of(response).await;
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(body["error"]["code"], "invalid_payload", "{body}");
    }
    assert_eq!(app.history_len("topic=demo:a&after=0").await, 0);
    // Just under the limit is served as usual.
    let fine = app
        .http
        .get(app.url("/v1/events/history?topic=demo:a&after=0"))
        .bearer_auth(&token)
        .header("x-padding", "p".repeat(6000))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);
}
