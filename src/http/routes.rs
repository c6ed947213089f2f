//! The route table: every API route, by method and path, in one place.
//!
//! Three readers, one answer: the warp filter (`dispatch`) resolves each
//! request here and calls the route's handler; the direct SSE path
//! (`direct`) asks it whether a request head names a stream; and a request
//! no route takes gets `405` with the methods this table knows for its path
//! (`Allow`), or `404`. A new route is one [`Route`] variant, one arm in
//! [`resolve`] and one in `dispatch`; the compiler finds the third.
//!
//! Paths are matched as warp's `path!` matched them: segments split on `/`,
//! one trailing `/` ignored, no empty segment. Parameters are handed over
//! raw (not percent-decoded): each handler parses its own.
//!
//! A leaf: it names no handler, so every other module may use it.

use http::Method;

/// One API route, with its path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`
    Healthz,
    /// `GET /readyz`
    Readyz,
    /// `GET /metrics`
    Metrics,
    /// `GET /v1/events`: the stream of generic topics.
    TopicStream,
    /// `GET /v1/events/history`
    History,
    /// `POST /v1/topics/{topic}/events`
    Publish { topic: String },
    /// `POST /v1/events`: several events, on several topics, in one commit.
    PublishMany,
    /// `GET /v1/topics/{topic}/presence`
    Presence { topic: String },
    /// `POST /v1/presence/heartbeat`
    Heartbeat,
    /// `POST /v1/connections/{connection}/topics`
    JoinRoom { connection: String },
    /// `DELETE /v1/connections/{connection}/topics/{topic}`
    LeaveRoom { connection: String, topic: String },
    /// `POST /v1/sessions`
    CreateSession,
    /// `GET /v1/sessions/{key}`: by id or join code.
    GetSession { key: String },
    /// `GET /v1/sessions/{session}/events`: a session's stream.
    SessionStream { session: String },
    /// `GET /v1/sessions/{key}/qr.svg`: the join link as a QR code.
    JoinQr { key: String },
    /// `GET /v1/sessions/{session}/export.csv|json`
    Export { session: String, format: ExportFormat },
    /// `POST /v1/sessions/{session}/presenters`: a co-presenter's token.
    InvitePresenter { session: String },
    /// `POST /v1/sessions/{key}/start|end|polls|participants`
    SessionAction { key: String, action: SessionAction },
    /// `POST /v1/polls/{poll}/activate|close|reveal|hidden-answers|votes`
    PollAction { poll: String, action: PollAction },
    /// `GET /v1/polls/{poll}/results|votes`
    PollQuery { poll: String, query: PollQuery },
    /// `POST /v1/admin/revocations`
    Revoke,
    /// `GET /v1/admin/revocations`
    Revocations,
    /// `DELETE /v1/admin/connections/{connection}`
    CloseConnection { connection: String },
    // The admin console's routes (#19 item 5), kept together.
    /// `GET /v1/admin/nodes`
    AdminNodes,
    /// `GET /v1/admin/connections`: open streams per topic.
    AdminConnections,
    /// `GET /v1/admin/tail`: every event, as SSE.
    AdminTail,
    /// `POST /v1/admin/events`: a test publish.
    AdminPublish,
    /// `POST /v1/webhooks`
    CreateWebhook,
    /// `GET /v1/webhooks`
    ListWebhooks,
    /// `GET /v1/webhooks/{webhook}`
    GetWebhook { webhook: String },
    /// `PATCH /v1/webhooks/{webhook}`
    UpdateWebhook { webhook: String },
    /// `DELETE /v1/webhooks/{webhook}`
    DeleteWebhook { webhook: String },
    /// `POST /v1/webhooks/{webhook}/replay`
    ReplayWebhook { webhook: String },
}

/// What each POST route under a session does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAction {
    Start,
    End,
    CreatePoll,
    Join,
}

impl SessionAction {
    /// Its name in an Idempotency-Key's fingerprint. Kept as written
    /// (fingerprints are stored for a day), not derived from the code.
    pub fn fingerprint_name(self) -> &'static str {
        match self {
            SessionAction::Start => "Start",
            SessionAction::End => "End",
            SessionAction::CreatePoll => "CreatePoll",
            SessionAction::Join => "Join",
        }
    }
}

/// What each POST route under a poll does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollAction {
    Activate,
    Close,
    Reveal,
    HideAnswer,
    Vote,
}

impl PollAction {
    /// Its name in an Idempotency-Key's fingerprint (see
    /// [`SessionAction::fingerprint_name`]).
    pub fn fingerprint_name(self) -> &'static str {
        match self {
            PollAction::Activate => "Activate",
            PollAction::Close => "Close",
            PollAction::Reveal => "Reveal",
            PollAction::HideAnswer => "HideAnswer",
            PollAction::Vote => "Vote",
        }
    }
}

/// The two forms of a session's export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Json,
}

/// What each GET route under a poll returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollQuery {
    Results,
    Votes,
}

/// The methods [`allowed`] tries, in the order `Allow` lists them.
const METHODS: [Method; 4] = [Method::GET, Method::POST, Method::PATCH, Method::DELETE];

/// The route a method and path (without its query) name, if any.
pub fn resolve(method: &Method, path: &str) -> Option<Route> {
    let segments = segments(path)?;
    let get = *method == Method::GET;
    let post = *method == Method::POST;
    let delete = *method == Method::DELETE;
    let patch = *method == Method::PATCH;
    let own = |s: &str| s.to_owned();
    Some(match segments.as_slice() {
        ["healthz"] if get => Route::Healthz,
        ["readyz"] if get => Route::Readyz,
        ["metrics"] if get => Route::Metrics,
        ["v1", "events"] if get => Route::TopicStream,
        ["v1", "events"] if post => Route::PublishMany,
        ["v1", "events", "history"] if get => Route::History,
        ["v1", "topics", topic, "events"] if post => Route::Publish { topic: own(topic) },
        ["v1", "topics", topic, "presence"] if get => Route::Presence { topic: own(topic) },
        ["v1", "presence", "heartbeat"] if post => Route::Heartbeat,
        ["v1", "connections", connection, "topics"] if post => Route::JoinRoom {
            connection: own(connection),
        },
        ["v1", "connections", connection, "topics", topic] if delete => Route::LeaveRoom {
            connection: own(connection),
            topic: own(topic),
        },
        ["v1", "sessions"] if post => Route::CreateSession,
        ["v1", "sessions", key] if get => Route::GetSession { key: own(key) },
        ["v1", "sessions", session, "events"] if get => Route::SessionStream {
            session: own(session),
        },
        ["v1", "sessions", key, "qr.svg"] if get => Route::JoinQr { key: own(key) },
        ["v1", "sessions", session, "export.csv"] if get => Route::Export {
            session: own(session),
            format: ExportFormat::Csv,
        },
        ["v1", "sessions", session, "export.json"] if get => Route::Export {
            session: own(session),
            format: ExportFormat::Json,
        },
        ["v1", "sessions", session, "presenters"] if post => Route::InvitePresenter {
            session: own(session),
        },
        ["v1", "sessions", key, action] if post => Route::SessionAction {
            key: own(key),
            action: match *action {
                "start" => SessionAction::Start,
                "end" => SessionAction::End,
                "polls" => SessionAction::CreatePoll,
                "participants" => SessionAction::Join,
                _ => return None,
            },
        },
        ["v1", "polls", poll, action] if post => Route::PollAction {
            poll: own(poll),
            action: match *action {
                "activate" => PollAction::Activate,
                "close" => PollAction::Close,
                "reveal" => PollAction::Reveal,
                "hidden-answers" => PollAction::HideAnswer,
                "votes" => PollAction::Vote,
                _ => return None,
            },
        },
        ["v1", "polls", poll, query] if get => Route::PollQuery {
            poll: own(poll),
            query: match *query {
                "results" => PollQuery::Results,
                "votes" => PollQuery::Votes,
                _ => return None,
            },
        },
        ["v1", "admin", "revocations"] if post => Route::Revoke,
        ["v1", "admin", "revocations"] if get => Route::Revocations,
        ["v1", "admin", "connections", connection] if delete => Route::CloseConnection {
            connection: own(connection),
        },
        // The admin console's routes (#19 item 5), kept together.
        ["v1", "admin", "nodes"] if get => Route::AdminNodes,
        ["v1", "admin", "connections"] if get => Route::AdminConnections,
        ["v1", "admin", "tail"] if get => Route::AdminTail,
        ["v1", "admin", "events"] if post => Route::AdminPublish,
        ["v1", "webhooks"] if post => Route::CreateWebhook,
        ["v1", "webhooks"] if get => Route::ListWebhooks,
        ["v1", "webhooks", webhook] if get => Route::GetWebhook {
            webhook: own(webhook),
        },
        ["v1", "webhooks", webhook] if patch => Route::UpdateWebhook {
            webhook: own(webhook),
        },
        ["v1", "webhooks", webhook] if delete => Route::DeleteWebhook {
            webhook: own(webhook),
        },
        ["v1", "webhooks", webhook, "replay"] if post => Route::ReplayWebhook {
            webhook: own(webhook),
        },
        _ => return None,
    })
}

/// The methods some route answers on this path, as an `Allow` value
/// (`"GET, POST"`); `None` when no route has this path.
pub fn allowed(path: &str) -> Option<String> {
    let methods: Vec<&str> = METHODS
        .iter()
        .filter(|method| resolve(method, path).is_some())
        .map(Method::as_str)
        .collect();
    (!methods.is_empty()).then(|| methods.join(", "))
}

/// A path's segments as warp's `path!` saw them: after the leading `/`,
/// split on `/`, one trailing `/` dropped; `None` if a segment is empty.
fn segments(path: &str) -> Option<Vec<&str>> {
    let path = path.strip_prefix('/')?;
    let path = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    segments.iter().all(|s| !s.is_empty()).then_some(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_path_resolves_to_its_route() {
        let cases = [
            (Method::GET, "/v1/events", Route::TopicStream),
            (Method::GET, "/v1/events/history", Route::History),
            (
                Method::POST,
                "/v1/topics/demo:a/events",
                Route::Publish {
                    topic: "demo:a".into(),
                },
            ),
            (
                Method::GET,
                "/v1/sessions/AB%2DCD/events",
                Route::SessionStream {
                    session: "AB%2DCD".into(),
                },
            ),
            (
                Method::POST,
                "/v1/sessions/k/participants",
                Route::SessionAction {
                    key: "k".into(),
                    action: SessionAction::Join,
                },
            ),
            (
                Method::GET,
                "/v1/polls/p/votes",
                Route::PollQuery {
                    poll: "p".into(),
                    query: PollQuery::Votes,
                },
            ),
            (
                Method::POST,
                "/v1/polls/p/votes",
                Route::PollAction {
                    poll: "p".into(),
                    action: PollAction::Vote,
                },
            ),
            (
                Method::DELETE,
                "/v1/connections/c/topics/t",
                Route::LeaveRoom {
                    connection: "c".into(),
                    topic: "t".into(),
                },
            ),
        ];
        for (method, path, route) in cases {
            assert_eq!(resolve(&method, path), Some(route), "{method} {path}");
        }
    }

    #[test]
    fn paths_match_as_warp_matched_them() {
        // One trailing slash is ignored; empty segments match nothing.
        assert_eq!(resolve(&Method::GET, "/v1/events/"), Some(Route::TopicStream));
        assert_eq!(resolve(&Method::GET, "/v1/events//"), None);
        assert_eq!(resolve(&Method::GET, "/v1//events"), None);
        assert_eq!(resolve(&Method::GET, "/v1/sessions//events"), None);
        assert_eq!(resolve(&Method::GET, "v1/events"), None);
        assert_eq!(resolve(&Method::GET, "/"), None);
        assert_eq!(resolve(&Method::POST, "/v1/sessions/k/pause"), None);
    }

    #[test]
    fn allow_lists_every_method_of_a_path_in_a_fixed_order() {
        assert_eq!(allowed("/v1/polls/p/votes").as_deref(), Some("GET, POST"));
        assert_eq!(allowed("/v1/admin/revocations").as_deref(), Some("GET, POST"));
        assert_eq!(allowed("/v1/sessions").as_deref(), Some("POST"));
        assert_eq!(allowed("/v1/connections/c/topics/t").as_deref(), Some("DELETE"));
        assert_eq!(allowed("/v1/webhooks/w").as_deref(), Some("GET, PATCH, DELETE"));
        assert_eq!(allowed("/v1/nothing"), None);
    }
}
