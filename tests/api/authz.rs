//! The authorization matrix: every endpoint that takes a token, against
//! every credential that must not get through (none, garbage, expired,
//! forged, refused algorithms, the wrong holder). Each attempt must get
//! the contract's 401 or 403 with its error body, and must change
//! nothing: the whole database is compared before and after each one.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use pollcast::auth::{Claims, TokenKeys};
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp, SECRET};
use crate::polling_helpers::{create_session, get, option_id, vote};

/// Who holds a valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    /// The presenter of session A, which most rows target. A is active,
    /// with one open poll and one draft poll.
    PresenterA,
    /// A participant of A who has not voted yet.
    Alice,
    /// A participant of A who voted on the open poll.
    Bob,
    /// The presenter of session B, still a draft.
    PresenterB,
    /// A participant of B.
    Mallory,
    /// A generic token (no polling role) for `demo:*`.
    DemoPublisher,
    /// A generic token for `other:*` only.
    OtherPublisher,
    /// A generic token for every topic of one to three segments.
    Everything,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::PresenterA => "presenter of A",
            Who::Alice => "participant alice of A",
            Who::Bob => "participant bob of A",
            Who::PresenterB => "presenter of B",
            Who::Mallory => "participant mallory of B",
            Who::DemoPublisher => "generic demo:* token",
            Who::OtherPublisher => "generic other:* token",
            Who::Everything => "generic every-topic token",
        }
    }
}

/// One credential tried on one endpoint.
#[derive(Debug, Clone, Copy)]
enum Case {
    NoToken,
    Garbage,
    /// `Authorization: Basic …`
    NotBearer,
    /// The endpoint's allowed token, expired two minutes ago.
    Expired,
    /// The allowed claims, signed with another secret.
    WrongSignature,
    /// The allowed claims, unsigned (`alg: none`).
    AlgNone,
    /// The allowed claims, signed with the right secret but HS512.
    Hs512,
    /// The allowed claims without `exp`, signed right.
    NoExp,
    /// The allowed token in `?access_token=` on a POST, where only the
    /// header counts.
    QueryTokenOnPost,
    /// A valid token whose holder may not do this, and why.
    Holder(Who, &'static str),
}

impl Case {
    fn label(self) -> String {
        match self {
            Case::NoToken => "no token".into(),
            Case::Garbage => "garbage token".into(),
            Case::NotBearer => "Basic instead of Bearer".into(),
            Case::Expired => "expired token".into(),
            Case::WrongSignature => "wrong signature".into(),
            Case::AlgNone => "alg none".into(),
            Case::Hs512 => "HS512 instead of HS256".into(),
            Case::NoExp => "token without exp".into(),
            Case::QueryTokenOnPost => "allowed token in ?access_token on a POST".into(),
            Case::Holder(who, why) => format!("{} ({why})", who.name()),
        }
    }
}

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// A token is required.
    Token,
    /// No token is fine; a token, when sent, must be valid and fit.
    TokenOrNone,
    /// Public: a token, if sent, is ignored.
    Public,
}

struct Endpoint {
    /// operationId and path, for failure messages.
    name: String,
    get: bool,
    path: String,
    query: Vec<(String, String)>,
    body: Option<Value>,
    access: Access,
    /// The holder this endpoint allows; the expired, forged… tokens carry
    /// its claims, so only the credential itself is wrong.
    base: Who,
    /// Valid tokens that must get 403, and why.
    refused: Vec<(Who, &'static str)>,
    /// The contract's one side effect of a refusal: a vote naming a poll
    /// of another session appends `error:general` on the voter's topic.
    notifies: Option<(Who, String)>,
    /// What the allowed token gets, tried once the matrix is done, to show
    /// that each row's request is otherwise right.
    control: Option<u16>,
    /// Polling commands document their order of checks: the token's role
    /// and session come before the `Idempotency-Key` syntax, which comes
    /// before what needs stored state. With `Some(judged_later)`, every
    /// refused holder is tried again with a malformed key: 403 still,
    /// except the holders in `judged_later`, refused only by stored state
    /// (a poll of another session), for whom the key's 400 comes first.
    malformed_key: Option<Vec<Who>>,
}

/// How a token travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Header,
    Query,
}

enum Auth {
    Nothing,
    /// A whole `Authorization` header value.
    Header(String),
    /// `?access_token=`
    Query(String),
}

/// Tokens by holder, with their claims.
struct Tokens {
    tokens: HashMap<Who, String>,
    claims: HashMap<Who, Claims>,
}

fn claims_of(token: &str) -> Claims {
    jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(SECRET.as_bytes()),
        &Validation::new(Algorithm::HS256),
    )
    .expect("an issued token decodes")
    .claims
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

impl Tokens {
    fn new(tokens: HashMap<Who, String>) -> Self {
        let claims = tokens.iter().map(|(who, t)| (*who, claims_of(t))).collect();
        Tokens { tokens, claims }
    }

    /// The raw token of a case, made from the claims of `base` where the
    /// case is about the credential rather than the holder.
    fn token(&self, case: Case, base: Who) -> Option<String> {
        let claims = &self.claims[&base];
        let right_key = EncodingKey::from_secret(SECRET.as_bytes());
        Some(match case {
            Case::NoToken | Case::NotBearer => return None,
            Case::Garbage => "garbage".into(),
            Case::Expired => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
                TokenKeys::new(SECRET.as_bytes()).mint(&Claims {
                    exp: now - 120,
                    ..claims.clone()
                })
            }
            Case::WrongSignature => TokenKeys::new(b"not the server's secret").mint(claims),
            Case::AlgNone => format!(
                "{}.{}.",
                base64url(br#"{"alg":"none","typ":"JWT"}"#),
                base64url(&serde_json::to_vec(claims).unwrap())
            ),
            Case::Hs512 => jsonwebtoken::encode(&Header::new(Algorithm::HS512), claims, &right_key).unwrap(),
            Case::NoExp => {
                let mut without = serde_json::to_value(claims).unwrap();
                without.as_object_mut().unwrap().remove("exp");
                jsonwebtoken::encode(&Header::new(Algorithm::HS256), &without, &right_key).unwrap()
            }
            Case::QueryTokenOnPost => self.tokens[&base].clone(),
            Case::Holder(who, _) => self.tokens[&who].clone(),
        })
    }
}

/// What an attempt must get: a status and, for errors, the code.
fn expected(endpoint: &Endpoint, case: Case, malformed_key: bool) -> (u16, Option<&'static str>) {
    if let (true, Case::Holder(who, _), Some(judged_later)) = (malformed_key, case, &endpoint.malformed_key) {
        if judged_later.contains(&who) {
            return (400, Some("invalid_payload"));
        }
    }
    match (endpoint.access, case) {
        (Access::Public, _) => (200, None),
        (Access::TokenOrNone, Case::NoToken) => (200, None),
        (_, Case::Expired) => (401, Some("token_expired")),
        (_, Case::Holder(..)) => (403, Some("forbidden")),
        _ => (401, Some("unauthorized")),
    }
}

struct Outcome {
    status: u16,
    body: Value,
    www_authenticate: Option<String>,
}

/// An `Idempotency-Key` longer than the 255 characters allowed.
const MALFORMED_KEY: &str = concat!(
    "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk",
    "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk",
    "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk",
);

async fn send(app: &TestApp, endpoint: &Endpoint, auth: &Auth, malformed_key: bool) -> Outcome {
    let url = app.url(&endpoint.path);
    let mut request = if endpoint.get {
        app.http.get(url)
    } else {
        app.http.post(url)
    };
    request = request.query(&endpoint.query);
    if let Some(body) = &endpoint.body {
        request = request.json(body);
    }
    if malformed_key {
        request = request.header("Idempotency-Key", MALFORMED_KEY);
    }
    request = match auth {
        Auth::Nothing => request,
        Auth::Header(value) => request.header(AUTHORIZATION, value),
        Auth::Query(token) => request.query(&[("access_token", token)]),
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let www_authenticate = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap_or("").to_string());
    let is_stream = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    // A stream that opened is left at once: its body never ends.
    let body = if is_stream {
        Value::Null
    } else {
        response.json().await.unwrap_or(Value::Null)
    };
    Outcome {
        status,
        body,
        www_authenticate,
    }
}

/// Everything the server keeps, compared before and after each attempt.
#[derive(Debug, Clone, PartialEq)]
struct DbState {
    /// id, topic, type, payload of every event.
    events: Vec<(i64, String, String, String)>,
    /// Row count and a digest of the rows of every other table.
    tables: Vec<(&'static str, i64, String)>,
    /// Open participant streams (their `last_seen` moves by itself).
    presence_rows: i64,
}

const TABLES: [&str; 8] = [
    "sessions",
    "polls",
    "poll_options",
    "poll_rating_counts",
    "participants",
    "votes",
    "idempotency_keys",
    "log_state",
];

async fn db_state(db: &tokio_postgres::Client) -> DbState {
    let events = db
        .query(
            "SELECT id, topic, type, payload::text FROM events ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let mut tables = Vec::new();
    for table in TABLES {
        let row = db
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"
                ),
                &[],
            )
            .await
            .unwrap();
        tables.push((table, row.get(0), row.get(1)));
    }
    let presence_rows = db
        .query_one("SELECT count(*) FROM presence_connections", &[])
        .await
        .unwrap()
        .get(0);
    DbState {
        events,
        tables,
        presence_rows,
    }
}

/// The state once background work (coalesced results) has settled.
async fn settled(db: &tokio_postgres::Client) -> DbState {
    let mut last = db_state(db).await;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = db_state(db).await;
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the database never settled");
}

/// Checks that an attempt changed nothing, except the one event the
/// contract asks for when `notified` is given. Returns what is wrong.
fn changes(before: &DbState, after: &DbState, notified: Option<&str>) -> Option<String> {
    if before.tables != after.tables || before.presence_rows != after.presence_rows {
        return Some(format!(
            "tables changed: {:?} -> {:?}",
            before.tables, after.tables
        ));
    }
    let new = after.events.get(before.events.len()..).unwrap_or(&[]);
    if !after.events.starts_with(&before.events) {
        return Some("earlier events changed".into());
    }
    match notified {
        None if new.is_empty() => None,
        None => Some(format!("appended {new:?}")),
        Some(topic) => {
            let told = new.len() == 1
                && new[0].1 == topic
                && new[0].2 == "error:general"
                && serde_json::from_str::<Value>(&new[0].3).unwrap()["errorCode"] == "forbidden";
            (!told).then(|| format!("expected one error:general (forbidden) on {topic}, got {new:?}"))
        }
    }
}

fn poll_path(poll: &Value, action: &str) -> String {
    format!("/v1/polls/{}/{action}", poll["pollId"].as_str().unwrap())
}

/// What clients read of a session: its snapshot (without `lastEventId`
/// and `serverTime`,
/// which moves with any event in the log), a poll's results and voters,
/// and the history of the session's topic.
async fn client_view(app: &TestApp, session_id: &str, presenter: &str, poll: &Value) -> Vec<(u16, Value)> {
    let (status, mut snapshot) = get(app, None, &format!("/v1/sessions/{session_id}")).await;
    snapshot.as_object_mut().unwrap().remove("lastEventId");
    snapshot.as_object_mut().unwrap().remove("serverTime");
    vec![
        (status, snapshot),
        get(app, Some(presenter), &poll_path(poll, "results")).await,
        get(app, Some(presenter), &poll_path(poll, "votes")).await,
        get(
            app,
            Some(presenter),
            &format!("/v1/events/history?topic=session:{session_id}&limit=1000"),
        )
        .await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_that_must_be_refused_gets_through_or_changes_anything() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let db = app.db.as_ref().unwrap().client().await;

    let a = create_session(&app, "A").await;
    let open = a
        .create_poll(
            &app,
            json!({"question": "Named?", "pollType": "multiple_choice", "options": ["Yes", "No"], "isAnonymous": false}),
        )
        .await;
    let draft = a
        .create_poll(&app, json!({"question": "Rate it", "pollType": "rating_scale"}))
        .await;
    a.start(&app).await;
    a.activate(&app, &open).await;
    let alice = a.join(&app, Some("Alice")).await;
    let bob = a.join(&app, Some("Bob")).await;
    let (status, body) = vote(
        &app,
        &bob,
        &open,
        json!({"selectedOptionIds": [option_id(&open, 0)]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let b = create_session(&app, "B").await;
    let mallory = b.join(&app, Some("Mallory")).await;

    let every = ["*", "*:*", "*:*:*"];
    let tokens = Tokens::new(HashMap::from([
        (Who::PresenterA, a.presenter.clone()),
        (Who::Alice, alice.token.clone()),
        (Who::Bob, bob.token.clone()),
        (Who::PresenterB, b.presenter.clone()),
        (Who::Mallory, mallory.token.clone()),
        (Who::DemoPublisher, app.token(&["demo:*"], &["demo:*"])),
        (Who::OtherPublisher, app.token(&["other:*"], &["other:*"])),
        (Who::Everything, app.token(&every, &every)),
    ]));

    let no_role = "a token without a polling role";
    let no_role_at_all = "allowed every topic, but no polling role";
    // Presenter commands on A.
    let presenter_of_a_only = vec![
        (Who::PresenterB, "presenter of another session"),
        (Who::Alice, "participant doing a presenter's action"),
        (Who::Mallory, "participant of another session"),
        (Who::DemoPublisher, no_role),
        (Who::Everything, no_role_at_all),
    ];
    let session_a_topic = format!("session:{}", a.id);
    let alice_topic = format!("participant:{}", alice.id);
    let vote_body = json!({"voteData": {"selectedOptionIds": [option_id(&open, 1)]}});
    let row = |name: &str, get: bool, path: String, body: Option<Value>, base: Who| Endpoint {
        name: format!("{name} {} {path}", if get { "GET" } else { "POST" }),
        get,
        path,
        query: Vec::new(),
        body,
        access: Access::Token,
        base,
        refused: Vec::new(),
        notifies: None,
        control: None,
        malformed_key: None,
    };
    let topics = |topic: &str| vec![("topic".to_string(), topic.to_string())];

    // In the order the positive controls can run after the matrix.
    let endpoints = vec![
        Endpoint {
            refused: vec![
                (Who::OtherPublisher, "publisher without the topic"),
                (Who::PresenterA, "presenter token: publishes nothing"),
                (Who::Alice, "participant token: publishes nothing"),
                (Who::PresenterB, "presenter token: publishes nothing"),
                (Who::Mallory, "participant token: publishes nothing"),
            ],
            control: Some(201),
            ..row(
                "publishEvent",
                false,
                "/v1/topics/demo:a/events".into(),
                Some(json!({"type": "demo:said", "payload": {"n": 1}})),
                Who::DemoPublisher,
            )
        },
        Endpoint {
            refused: vec![
                (Who::Everything, "publisher of a topic reserved for polling"),
                (Who::PresenterA, "presenter writing its session topic"),
                (Who::Alice, "participant writing its session topic"),
            ],
            ..row(
                "publishEvent",
                false,
                format!("/v1/topics/{session_a_topic}/events"),
                Some(json!({"type": "session:ended", "payload": {"sessionId": a.id}})),
                Who::Everything,
            )
        },
        Endpoint {
            query: topics(&session_a_topic),
            refused: vec![
                (Who::PresenterB, "presenter of another session"),
                (Who::Mallory, "participant of another session"),
                (Who::DemoPublisher, "subscriber without the topic"),
                (Who::OtherPublisher, "subscriber without the topic"),
            ],
            control: Some(200),
            ..row("streamEvents", true, "/v1/events".into(), None, Who::PresenterA)
        },
        Endpoint {
            query: topics(&alice_topic),
            refused: vec![
                (Who::Bob, "another participant of the same session"),
                (
                    Who::PresenterA,
                    "the session's presenter on a participant's topic",
                ),
                (Who::PresenterB, "presenter of another session"),
                (Who::Mallory, "participant of another session"),
                (Who::OtherPublisher, "subscriber without the topic"),
            ],
            control: Some(200),
            ..row("streamEvents", true, "/v1/events".into(), None, Who::Alice)
        },
        Endpoint {
            query: topics(&session_a_topic),
            refused: vec![
                (Who::PresenterB, "presenter of another session"),
                (Who::Mallory, "participant of another session"),
                (Who::DemoPublisher, "subscriber without the topic"),
                (Who::OtherPublisher, "subscriber without the topic"),
            ],
            control: Some(200),
            ..row(
                "listEvents",
                true,
                "/v1/events/history".into(),
                None,
                Who::PresenterA,
            )
        },
        Endpoint {
            query: topics(&alice_topic),
            refused: vec![
                (Who::Bob, "another participant of the same session"),
                (
                    Who::PresenterA,
                    "the session's presenter on a participant's topic",
                ),
                (Who::PresenterB, "presenter of another session"),
                (Who::Mallory, "participant of another session"),
                (Who::OtherPublisher, "subscriber without the topic"),
            ],
            control: Some(200),
            ..row("listEvents", true, "/v1/events/history".into(), None, Who::Alice)
        },
        Endpoint {
            access: Access::TokenOrNone,
            refused: vec![
                (Who::PresenterB, "presenter of another session"),
                (Who::Mallory, "participant of another session"),
                (Who::DemoPublisher, no_role),
                (Who::Everything, no_role_at_all),
            ],
            control: Some(200),
            ..row(
                "streamSession",
                true,
                format!("/v1/sessions/{}/events", a.id),
                None,
                Who::Alice,
            )
        },
        Endpoint {
            refused: vec![
                (Who::PresenterB, "presenter of another session"),
                (Who::Mallory, "participant of another session"),
                (Who::DemoPublisher, no_role),
                (Who::Everything, no_role_at_all),
            ],
            control: Some(200),
            ..row(
                "getPollResults",
                true,
                poll_path(&open, "results"),
                None,
                Who::Alice,
            )
        },
        Endpoint {
            refused: vec![
                (Who::Alice, "participant: voters are shown to the presenter only"),
                (
                    Who::Bob,
                    "participant: even its own vote is listed to the presenter only",
                ),
                (Who::PresenterB, "presenter of another session"),
                (Who::Mallory, "participant of another session"),
                (Who::DemoPublisher, no_role),
                (Who::Everything, no_role_at_all),
            ],
            control: Some(200),
            ..row(
                "listVotes",
                true,
                poll_path(&open, "votes"),
                None,
                Who::PresenterA,
            )
        },
        Endpoint {
            // No token: the audience's view; a token says who sees more
            // (withheld results, one's own votes) and must fit.
            access: Access::TokenOrNone,
            refused: vec![
                (Who::PresenterB, "presenter of another session"),
                (Who::Mallory, "participant of another session"),
                (Who::DemoPublisher, no_role),
                (Who::Everything, no_role_at_all),
            ],
            control: Some(200),
            ..row(
                "getSession",
                true,
                format!("/v1/sessions/{}", a.id),
                None,
                Who::PresenterA,
            )
        },
        Endpoint {
            refused: vec![
                (Who::PresenterA, "presenter voting"),
                (Who::PresenterB, "presenter of another session"),
                (Who::Mallory, "participant of another session"),
                (Who::DemoPublisher, no_role),
                (Who::Everything, no_role_at_all),
            ],
            notifies: Some((Who::Mallory, format!("participant:{}", mallory.id))),
            control: Some(201),
            malformed_key: Some(vec![Who::Mallory]),
            ..row(
                "submitVote",
                false,
                poll_path(&open, "votes"),
                Some(vote_body.clone()),
                Who::Alice,
            )
        },
        Endpoint {
            refused: vec![(Who::Alice, "participant voting as another participant")],
            malformed_key: Some(Vec::new()),
            ..row(
                "submitVote (participantId of bob)",
                false,
                poll_path(&open, "votes"),
                Some(json!({"voteData": vote_body["voteData"], "participantId": bob.id})),
                Who::Alice,
            )
        },
        Endpoint {
            refused: presenter_of_a_only.clone(),
            control: Some(200),
            malformed_key: Some(vec![Who::PresenterB]),
            ..row(
                "closePoll",
                false,
                poll_path(&open, "close"),
                Some(json!({})),
                Who::PresenterA,
            )
        },
        Endpoint {
            refused: presenter_of_a_only.clone(),
            control: Some(200),
            malformed_key: Some(vec![Who::PresenterB]),
            ..row(
                "activatePoll",
                false,
                poll_path(&draft, "activate"),
                Some(json!({})),
                Who::PresenterA,
            )
        },
        Endpoint {
            refused: presenter_of_a_only.clone(),
            control: Some(201),
            malformed_key: Some(Vec::new()),
            ..row(
                "createPoll",
                false,
                format!("/v1/sessions/{}/polls", a.id),
                Some(json!({"question": "Sneaky?", "pollType": "multiple_choice", "options": ["x", "y"]})),
                Who::PresenterA,
            )
        },
        Endpoint {
            refused: presenter_of_a_only.clone(),
            control: Some(200),
            malformed_key: Some(Vec::new()),
            ..row(
                "endSession",
                false,
                format!("/v1/sessions/{}/end", a.id),
                Some(json!({})),
                Who::PresenterA,
            )
        },
        Endpoint {
            refused: vec![
                (Who::PresenterA, "presenter of another session"),
                (Who::Mallory, "participant doing a presenter's action"),
                (Who::Alice, "participant of another session"),
                (Who::DemoPublisher, no_role),
                (Who::Everything, no_role_at_all),
            ],
            control: Some(200),
            malformed_key: Some(Vec::new()),
            ..row(
                "startSession",
                false,
                format!("/v1/sessions/{}/start", b.id),
                Some(json!({})),
                Who::PresenterB,
            )
        },
    ];

    let seen_before = client_view(&app, &a.id, &a.presenter, &open).await;

    let mut state = settled(&db).await;
    let mut failures = Vec::new();
    let mut attempts = 0;
    for endpoint in &endpoints {
        let mut cases = vec![
            Case::NoToken,
            Case::Garbage,
            Case::NotBearer,
            Case::Expired,
            Case::WrongSignature,
            Case::AlgNone,
            Case::Hs512,
            Case::NoExp,
        ];
        if !endpoint.get {
            cases.push(Case::QueryTokenOnPost);
        }
        cases.extend(endpoint.refused.iter().map(|&(who, why)| Case::Holder(who, why)));
        for case in cases {
            let tries: &[(Delivery, bool)] = match case {
                Case::NoToken | Case::NotBearer => &[(Delivery::Header, false)],
                Case::QueryTokenOnPost => &[(Delivery::Query, false)],
                _ if endpoint.get => &[(Delivery::Header, false), (Delivery::Query, false)],
                Case::Holder(..) if endpoint.malformed_key.is_some() => {
                    &[(Delivery::Header, false), (Delivery::Header, true)]
                }
                _ => &[(Delivery::Header, false)],
            };
            for &(delivery, malformed_key) in tries {
                attempts += 1;
                let label = format!(
                    "{} × {} (token in {delivery:?}{})",
                    endpoint.name,
                    case.label(),
                    if malformed_key {
                        ", malformed Idempotency-Key"
                    } else {
                        ""
                    }
                );
                let auth = match (case, tokens.token(case, endpoint.base), delivery) {
                    (Case::NotBearer, _, _) => Auth::Header("Basic dXNlcjpwYXNz".into()),
                    (_, None, _) => Auth::Nothing,
                    (_, Some(token), Delivery::Header) => Auth::Header(format!("Bearer {token}")),
                    (_, Some(token), Delivery::Query) => Auth::Query(token),
                };
                let outcome = send(&app, endpoint, &auth, malformed_key).await;
                let (status, code) = expected(endpoint, case, malformed_key);
                let got_code = outcome.body["error"]["code"].as_str();
                if outcome.status != status || got_code != code {
                    failures.push(format!(
                        "{label}: expected {status} {code:?}, got {} {}",
                        outcome.status, outcome.body
                    ));
                } else if code.is_some() {
                    let error = &outcome.body["error"];
                    if !error["message"].is_string() || error["traceId"].as_str().map(str::len) != Some(32) {
                        failures.push(format!(
                            "{label}: not the contract's error body: {}",
                            outcome.body
                        ));
                    }
                    if status == 401 && outcome.www_authenticate.as_deref() != Some("Bearer") {
                        failures.push(format!(
                            "{label}: 401 without WWW-Authenticate: Bearer ({:?})",
                            outcome.www_authenticate
                        ));
                    }
                } else if endpoint.access == Access::Public && outcome.body["sessionId"] != json!(a.id) {
                    failures.push(format!("{label}: not the snapshot: {}", outcome.body));
                }
                let notified = match (case, &endpoint.notifies) {
                    (Case::Holder(who, _), Some((told, topic))) if who == *told && !malformed_key => {
                        Some(topic.as_str())
                    }
                    _ => None,
                };
                let after = db_state(&db).await;
                if let Some(change) = changes(&state, &after, notified) {
                    failures.push(format!("{label}: changed the database: {change}"));
                }
                state = after;
            }
        }
    }
    eprintln!(
        "authorization matrix: {attempts} attempts on {} endpoint rows",
        endpoints.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {attempts} attempts went wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Nothing shows up later either, and clients see what they saw.
    assert_eq!(settled(&db).await, state, "a late change after the attempts");
    let seen_after = client_view(&app, &a.id, &a.presenter, &open).await;
    assert_eq!(seen_before, seen_after, "what clients read changed");

    // Every row's request is right but for its credential: the allowed
    // token gets through (in an order where each command is still valid).
    for endpoint in endpoints.iter().filter(|e| e.control.is_some()) {
        let token = tokens.tokens[&endpoint.base].clone();
        let outcome = send(&app, endpoint, &Auth::Header(format!("Bearer {token}")), false).await;
        assert_eq!(
            Some(outcome.status),
            endpoint.control,
            "{} with the {}: {}",
            endpoint.name,
            endpoint.base.name(),
            outcome.body
        );
    }
}

/// With `--admin-key`, creating a session needs the key: anything else is
/// 401 and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_admin_key_no_session_is_created() {
    let key = "let-me-in";
    let app = TestApp::spawn_with(Backend::Postgres, |c| c.admin_key = Some(key.into())).await;
    let db = app.db.as_ref().unwrap().client().await;
    let url = app.url("/v1/sessions");
    let body = json!({"title": "Keyless"});
    let jwt = app.token(&["*:*"], &["*:*"]);
    let attempts: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("no key", app.http.post(&url)),
        (
            "wrong X-Admin-Key",
            app.http.post(&url).header("X-Admin-Key", "let-me-out"),
        ),
        (
            "the key in capitals",
            app.http.post(&url).header("X-Admin-Key", "LET-ME-IN"),
        ),
        ("wrong bearer key", app.http.post(&url).bearer_auth("let-me-out")),
        (
            "a valid JWT instead of the key",
            app.http.post(&url).bearer_auth(&jwt),
        ),
        (
            "the key in a Basic header",
            app.http.post(&url).header(AUTHORIZATION, format!("Basic {key}")),
        ),
        (
            "the key as ?access_token on a POST",
            app.http.post(&url).query(&[("access_token", key)]),
        ),
    ];
    let before = settled(&db).await;
    for (case, request) in attempts {
        let response = request.json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        let www = response.headers().get(WWW_AUTHENTICATE).cloned();
        let error: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "createSession × {case}: {error}"
        );
        assert_eq!(
            www.as_ref().and_then(|v| v.to_str().ok()),
            Some("Bearer"),
            "createSession × {case}"
        );
        assert_eq!(
            changes(&before, &db_state(&db).await, None),
            None,
            "createSession × {case}"
        );
    }
    for request in [
        app.http.post(&url).header("X-Admin-Key", key),
        app.http.post(&url).bearer_auth(key),
    ] {
        let response = request.json(&body).send().await.unwrap();
        assert_eq!(response.status(), 201, "the right key creates");
    }
}
