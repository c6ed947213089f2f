//! `/v1/webhooks` as an admin uses it: create, list, read, change,
//! delete; who may (the admin key, as for `/v1/admin/*`); what is refused
//! (clear 4xx with the contract's error body). On both stores: the memory
//! store keeps webhooks too (in memory, like its log).

use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};
use crate::on_both_stores;

pub const ADMIN_KEY: &str = "webhook-admin-key";

/// A server with an admin key (and short webhook timings for delivery).
pub async fn app_with_admin(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.admin_key = Some(ADMIN_KEY.into());
        c.webhook_lease = std::time::Duration::from_secs(1);
        c.webhook_timeout = std::time::Duration::from_millis(400);
        c.webhook_retry_base = std::time::Duration::from_millis(20);
        c.webhook_retry_max = std::time::Duration::from_millis(100);
        c.webhook_failing_after = 3;
        c.webhook_failing_retry = std::time::Duration::from_millis(300);
    })
    .await
}

/// A request to `path` with the admin key, and its status and body.
pub async fn admin(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = app
        .http
        .request(method.parse().unwrap(), app.url(path))
        .header("X-Admin-Key", ADMIN_KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn crud(backend: Backend) {
    let app = app_with_admin(backend).await;
    let head = app.publish("demo:a", "demo:said", json!({})).await["id"].clone();

    // Given a URL and selectors, when created without a secret, then one
    // is made, shown this once, and delivery starts after the head.
    let (status, created) = admin(
        &app,
        "POST",
        "/v1/webhooks",
        Some(json!({ "url": "http://127.0.0.1:9/hook", "topics": ["demo:*", "session:*"] })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(created["url"], "http://127.0.0.1:9/hook");
    assert_eq!(created["topics"], json!(["demo:*", "session:*"]));
    assert_eq!(created["description"], Value::Null);
    assert_eq!(created["enabled"], true);
    assert_eq!(created["status"], "active");
    assert_eq!(created["cursor"], head);
    assert_eq!(created["head"], head);
    assert_eq!(created["lag"], 0);
    assert_eq!(created["consecutiveFailures"], 0);
    assert_eq!(created["lastError"], Value::Null);
    assert_eq!(created["lastDeliveredAt"], Value::Null);
    assert!(created["createdAt"].as_str().unwrap().ends_with('Z'));

    // A secret given is kept; afterId sets where delivery starts.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (status, second) = admin(
        &app,
        "POST",
        "/v1/webhooks",
        Some(
            json!({ "url": "https://example.invalid/x", "topics": ["other:*"], "secret": secret,
                     "description": "billing", "afterId": "0" }),
        ),
    )
    .await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["secret"], secret);
    assert_eq!(second["cursor"], "0");
    assert_eq!(second["description"], "billing");

    // Listed and read without their secrets.
    let (status, list) = admin(&app, "GET", "/v1/webhooks", None).await;
    assert_eq!(status, 200);
    let listed = list["webhooks"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|w| w.get("secret").is_none()));
    let (status, read) = admin(&app, "GET", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(read["id"], id.as_str());
    assert!(read.get("secret").is_none());

    // Changed: description, selectors, disabled; a new secret is shown.
    let (status, changed) = admin(
        &app,
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        Some(json!({ "description": "audit", "topics": ["demo:a"], "enabled": false })),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["description"], "audit");
    assert_eq!(changed["topics"], json!(["demo:a"]));
    assert_eq!(changed["enabled"], false);
    assert_eq!(changed["status"], "disabled");
    assert_eq!(changed["deliveringNode"], Value::Null);
    assert!(changed.get("secret").is_none());
    let (_, rekeyed) = admin(
        &app,
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        Some(json!({ "secret": secret, "description": null, "enabled": true })),
    )
    .await;
    assert_eq!(rekeyed["secret"], secret);
    assert_eq!(rekeyed["description"], Value::Null);
    assert_eq!(rekeyed["status"], "active");

    // Deleted: gone, and a second delete finds nothing.
    let (status, _) = admin(&app, "DELETE", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(status, 204);
    for method in ["GET", "DELETE"] {
        let (status, body) = admin(&app, method, &format!("/v1/webhooks/{id}"), None).await;
        assert_eq!(status, 404, "{method}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (_, list) = admin(&app, "GET", "/v1/webhooks", None).await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1);
}
on_both_stores!(webhooks_are_created_listed_changed_and_deleted, crud);

async fn refusals(backend: Backend) {
    let app = app_with_admin(backend).await;
    let create = |body: Value| {
        let app = &app;
        async move { admin(app, "POST", "/v1/webhooks", Some(body)).await }
    };
    let ok_url = "http://127.0.0.1:9/hook";
    for (body, field) in [
        (
            json!({ "url": "ftp://example.org/", "topics": ["demo:*"] }),
            "url",
        ),
        (json!({ "url": "/relative", "topics": ["demo:*"] }), "url"),
        (json!({ "url": "http:///nohost", "topics": ["demo:*"] }), "url"),
        (json!({ "url": ok_url, "topics": [] }), "topics"),
        (json!({ "url": ok_url, "topics": ["Not A Topic"] }), "topics[0]"),
        (
            json!({ "url": ok_url, "topics": ["demo:*"], "secret": "hunter2" }),
            "secret",
        ),
        (
            json!({ "url": ok_url, "topics": ["demo:*"], "secret": "whsec_c2hvcnQ=" }),
            "secret",
        ),
        (
            json!({ "url": ok_url, "topics": ["demo:*"], "afterId": "999999" }),
            "afterId",
        ),
        (
            json!({ "url": ok_url, "topics": ["demo:*"], "afterId": "-1" }),
            "afterId",
        ),
        (
            json!({ "url": ok_url, "topics": ["demo:*"], "description": "x".repeat(501) }),
            "description",
        ),
        (
            json!({ "url": ok_url, "topics": ["demo:*"], "colour": "red" }),
            "colour",
        ),
        (json!({ "topics": ["demo:*"] }), "url"),
        (json!({ "url": ok_url, "topics": "demo:*" }), ""),
    ] {
        let (status, answer) = create(body.clone()).await;
        assert_eq!(status, 422, "{body} -> {answer}");
        assert_eq!(answer["error"]["code"], "invalid_payload");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    // Malformed JSON, and a body that is not JSON at all.
    let response = app
        .http
        .post(app.url("/v1/webhooks"))
        .header("X-Admin-Key", ADMIN_KEY)
        .header("Content-Type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = app
        .http
        .post(app.url("/v1/webhooks"))
        .header("X-Admin-Key", ADMIN_KEY)
        .body("url=x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    // Ids: not a UUID is a 400, an unknown one a 404, on every route.
    let (status, _) = admin(&app, "GET", "/v1/webhooks/not-a-uuid", None).await;
    assert_eq!(status, 400);
    let unknown = format!("/v1/webhooks/{}", uuid::Uuid::new_v4());
    let (status, _) = admin(&app, "PATCH", &unknown, Some(json!({ "enabled": false }))).await;
    assert_eq!(status, 404);
    let (status, _) = admin(
        &app,
        "POST",
        &format!("{unknown}/replay"),
        Some(json!({ "afterId": "0" })),
    )
    .await;
    assert_eq!(status, 404);
    // PATCH checks what it changes.
    let (_, created) = create(json!({ "url": ok_url, "topics": ["demo:*"] })).await;
    let path = format!("/v1/webhooks/{}", created["id"].as_str().unwrap());
    for body in [
        json!({ "url": "javascript:alert(1)" }),
        json!({ "topics": ["a::b"] }),
        json!({ "enabled": "yes" }),
        json!({ "cursor": "0" }),
    ] {
        let (status, answer) = admin(&app, "PATCH", &path, Some(body.clone())).await;
        assert_eq!(status, 422, "{body} -> {answer}");
    }
    let (status, answer) = admin(
        &app,
        "POST",
        &format!("{path}/replay"),
        Some(json!({ "afterId": "x" })),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    // Other methods are 405 with Allow.
    let response = app
        .http
        .put(app.url(&path))
        .header("X-Admin-Key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, PATCH, DELETE");
}
on_both_stores!(invalid_webhooks_are_refused_with_a_clear_4xx, refusals);

#[tokio::test]
async fn only_the_admin_key_opens_webhooks() {
    // Given a server with an admin key: no key or a wrong one is 401.
    let app = app_with_admin(Backend::Memory).await;
    let response = app.http.get(app.url("/v1/webhooks")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    for (method, path) in [
        ("POST", "/v1/webhooks".to_string()),
        ("GET", format!("/v1/webhooks/{}", uuid::Uuid::new_v4())),
        ("DELETE", format!("/v1/webhooks/{}", uuid::Uuid::new_v4())),
    ] {
        let response = app
            .http
            .request(method.parse().unwrap(), app.url(&path))
            .header("X-Admin-Key", "wrong")
            .json(&json!({ "url": "http://127.0.0.1:9/", "topics": ["demo:*"] }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{method} {path}");
    }
    // A publisher's token is not the admin key either.
    let response = app.get_with(&app.demo_token(), "/v1/webhooks").await;
    assert_eq!(response.status(), 401);
    // The key as a bearer token works like X-Admin-Key.
    let response = app.get_with(ADMIN_KEY, "/v1/webhooks").await;
    assert_eq!(response.status(), 200);

    // Given a server without an admin key: the API is off (403).
    let plain = TestApp::spawn(Backend::Memory).await;
    let response = plain
        .http
        .post(plain.url("/v1/webhooks"))
        .header("X-Admin-Key", ADMIN_KEY)
        .json(&json!({ "url": "http://127.0.0.1:9/", "topics": ["demo:*"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
}
