//! Helpers for the live polling tests: a session with its presenter, its
//! participants, one-line calls for the REST commands, and the setup most
//! voting tests start from (`session_with_open_poll`).

use serde_json::{json, Value};

use crate::helpers::{SseClient, TestApp};

pub struct Session {
    pub id: String,
    pub slug: String,
    pub presenter: String,
}

pub struct Participant {
    pub id: String,
    pub token: String,
}

/// POSTs JSON with an optional bearer token; returns status and body.
pub async fn post(app: &TestApp, token: Option<&str>, path: &str, body: Value) -> (u16, Value) {
    let mut request = app.http.post(app.url(path)).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn get(app: &TestApp, token: Option<&str>, path: &str) -> (u16, Value) {
    let mut request = app.http.get(app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn create_session(app: &TestApp, title: &str) -> Session {
    let (status, body) = post(app, None, "/v1/sessions", json!({ "title": title })).await;
    assert_eq!(status, 201, "{body}");
    Session::from_created(&body)
}

/// A new session, started, with one open multiple-choice poll (options A,
/// B, C): create → choice poll → start → activate. Returns the session and
/// the poll.
pub async fn session_with_open_poll(app: &TestApp, title: &str, anonymous: bool) -> (Session, Value) {
    let session = create_session(app, title).await;
    let poll = session.open_choice_poll(app, anonymous).await;
    (session, poll)
}

impl Participant {
    /// The participant from the body of a `201` join.
    pub fn from_joined(body: &Value) -> Participant {
        Participant {
            id: body["participantId"].as_str().unwrap().into(),
            token: body["participantToken"].as_str().unwrap().into(),
        }
    }
}

impl Session {
    /// The session from the body of a `201` to `POST /v1/sessions`.
    pub fn from_created(body: &Value) -> Session {
        Session {
            id: body["sessionId"].as_str().unwrap().into(),
            slug: body["slug"].as_str().unwrap().into(),
            presenter: body["presenterToken"].as_str().unwrap().into(),
        }
    }

    pub async fn start(&self, app: &TestApp) -> Value {
        let (status, body) = post(
            app,
            Some(&self.presenter),
            &format!("/v1/sessions/{}/start", self.id),
            json!({}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn end(&self, app: &TestApp) -> Value {
        let (status, body) = post(
            app,
            Some(&self.presenter),
            &format!("/v1/sessions/{}/end", self.id),
            json!({}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// A rating poll from 1 to 3 and an open-text poll whose answers are
    /// public from the start (open text is `manual` by default).
    pub async fn rating_and_text_polls(&self, app: &TestApp) -> (Value, Value) {
        let rating = self
            .create_poll(
                app,
                json!({"question": "Rate", "pollType": "rating_scale", "minRating": 1, "maxRating": 3}),
            )
            .await;
        let text = self
            .create_poll(
                app,
                json!({"question": "Say", "pollType": "open_text", "resultsVisibility": "always"}),
            )
            .await;
        (rating, text)
    }

    pub async fn create_poll(&self, app: &TestApp, definition: Value) -> Value {
        let (status, body) = post(
            app,
            Some(&self.presenter),
            &format!("/v1/sessions/{}/polls", self.id),
            definition,
        )
        .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// A multiple-choice poll with options A, B, C.
    pub async fn choice_poll(&self, app: &TestApp, anonymous: bool) -> Value {
        self.create_poll(app, choice_definition(anonymous)).await
    }

    /// Creates the poll, starts the session and activates the poll.
    pub async fn open_poll(&self, app: &TestApp, definition: Value) -> Value {
        let poll = self.create_poll(app, definition).await;
        self.start(app).await;
        self.activate(app, &poll).await;
        poll
    }

    /// `open_poll` for a multiple-choice poll with options A, B, C.
    pub async fn open_choice_poll(&self, app: &TestApp, anonymous: bool) -> Value {
        self.open_poll(app, choice_definition(anonymous)).await
    }

    pub async fn activate(&self, app: &TestApp, poll: &Value) -> Value {
        let path = poll_path(poll, "activate");
        let (status, body) = post(app, Some(&self.presenter), &path, json!({})).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn close(&self, app: &TestApp, poll: &Value) -> Value {
        let path = poll_path(poll, "close");
        let (status, body) = post(app, Some(&self.presenter), &path, json!({})).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn join(&self, app: &TestApp, name: Option<&str>) -> Participant {
        let body = match name {
            Some(name) => json!({ "displayName": name }),
            None => json!({}),
        };
        let (status, body) = post(
            app,
            None,
            &format!("/v1/sessions/{}/participants", self.slug),
            body,
        )
        .await;
        assert_eq!(status, 201, "{body}");
        Participant::from_joined(&body)
    }

    /// The session stream, as a participant (counts as presence) or anonymous.
    pub async fn watch(&self, app: &TestApp, token: Option<&str>, last_event_id: Option<&str>) -> SseClient {
        let mut request = app.http.get(app.url(&format!("/v1/sessions/{}/events", self.id)));
        if let Some(token) = token {
            request = request.query(&[("access_token", token)]);
        }
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        SseClient::new(response)
    }

    pub async fn snapshot(&self, app: &TestApp) -> Value {
        let (status, body) = get(app, None, &format!("/v1/sessions/{}", self.id)).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

fn choice_definition(anonymous: bool) -> Value {
    json!({"question": "Pick one", "pollType": "multiple_choice", "options": ["A", "B", "C"], "isAnonymous": anonymous})
}

/// `/v1/polls/{pollId}/{action}`: `activate`, `close`, `votes`, `results`.
pub fn poll_path(poll: &Value, action: &str) -> String {
    format!("/v1/polls/{}/{action}", poll["pollId"].as_str().unwrap())
}

pub fn option_id(poll: &Value, index: usize) -> String {
    poll["options"][index]["optionId"].as_str().unwrap().into()
}

/// The `voteData` that selects the poll's option at `index`.
pub fn selecting(poll: &Value, index: usize) -> Value {
    json!({"selectedOptionIds": [option_id(poll, index)]})
}

pub async fn vote(app: &TestApp, participant: &Participant, poll: &Value, vote_data: Value) -> (u16, Value) {
    let path = poll_path(poll, "votes");
    post(
        app,
        Some(&participant.token),
        &path,
        json!({ "voteData": vote_data }),
    )
    .await
}
