//! The event catalog `docs/events.md` against what the server really
//! sends: a scenario drives every event pollcast emits through real
//! streams, and each one must be documented with exactly its payload
//! fields; each documented event must have been seen (or be listed below
//! with where it is tested), and each example frame in the document must
//! parse and hold the fields its section lists. `POLLCAST_CATALOG_PRINT=1`
//! prints the frames seen, to refresh the examples.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use eventsource_stream::Event;
use pollcast::auth::{expiry_in, Claims};
use serde_json::{json, Value};

use crate::helpers::{data, Backend, SseClient, TestApp};
use crate::polling_helpers::{create_session, option_id, post, vote};

/// Documented events this scenario cannot produce, and where they are tested.
const SEEN_ELSEWHERE: &[(&str, &str)] = &[
    (
        "system:alert",
        "tests/faults/outages.rs (database loss and recovery)",
    ),
    (
        "connection:closing",
        "tests/hostile/lifetimes.rs (expiry, revocation, an admin's close)",
    ),
];

/// One kind of frame: its type and where it travels (`session`,
/// `participant`, `user`… for stored events; `frame` for transient ones).
type Kind = (String, String);

#[derive(Default)]
struct Seen {
    fields: BTreeMap<Kind, BTreeSet<String>>,
    examples: BTreeMap<Kind, String>,
}

impl Seen {
    fn record(&mut self, event: &Event) {
        let envelope = data(event);
        let event_type = envelope["type"].as_str().unwrap_or_default().to_string();
        // Live polling events by their topic's kind; events on generic
        // topics under `<topic>` (any topic); transient frames as `frame`.
        let kind = match envelope["topic"]
            .as_str()
            .map(|t| t.split(':').next().unwrap_or_default())
        {
            Some(kind @ ("session" | "participant" | "presenter")) => kind.to_string(),
            Some(_) => "<topic>".to_string(),
            None => "frame".to_string(),
        };
        let keys: BTreeSet<String> = envelope["payload"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let key = (event_type, kind);
        self.fields.entry(key.clone()).or_default().extend(keys);
        let id_line = if envelope.get("id").is_some() {
            format!("id: {}\n", event.id)
        } else {
            String::new()
        };
        self.examples
            .entry(key)
            .or_insert_with(|| format!("{id_line}event: {}\ndata: {}", event.event, event.data));
    }

    /// What the stream sends until it has been quiet for a moment (or for
    /// at most two seconds: `system:status` never stops).
    async fn drain(&mut self, stream: &mut SseClient) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while tokio::time::Instant::now() < deadline {
            match stream.next_within(Duration::from_millis(400)).await {
                Some(event) => self.record(&event),
                None => break,
            }
        }
    }
}

/// A section of docs/events.md.
#[derive(Debug)]
struct Documented {
    fields: BTreeSet<String>,
    required: BTreeSet<String>,
    examples: Vec<String>,
}

fn parse_catalog(text: &str) -> BTreeMap<Kind, Documented> {
    let mut sections = BTreeMap::new();
    let mut current: Option<Kind> = None;
    let mut in_example = false;
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("### `") {
            current = parse_heading(heading);
            if let Some(kind) = &current {
                let fresh = Documented {
                    fields: BTreeSet::new(),
                    required: BTreeSet::new(),
                    examples: Vec::new(),
                };
                assert!(
                    sections.insert(kind.clone(), fresh).is_none(),
                    "{kind:?} documented twice"
                );
            }
            continue;
        }
        if line.starts_with("## ") || line.starts_with("### ") {
            current = None;
            continue;
        }
        let Some(section) = current.as_ref().and_then(|k| sections.get_mut(k)) else {
            continue;
        };
        if line.trim() == "```text" {
            in_example = true;
            section.examples.push(String::new());
        } else if line.trim() == "```" {
            in_example = false;
        } else if in_example {
            let example = section.examples.last_mut().unwrap();
            example.push_str(line);
            example.push('\n');
        } else if let Some(row) = line.strip_prefix("| `") {
            let name = row.split('`').next().unwrap().to_string();
            if !row.contains("optional") {
                section.required.insert(name.clone());
            }
            section.fields.insert(name);
        }
    }
    sections
}

/// "`vote:accepted` — `session:<sessionId>`", "`presence:update` — `<topic>`"
/// or "`connection:reset` — frame".
fn parse_heading(rest: &str) -> Option<Kind> {
    let (event_type, after) = rest.split_once('`')?;
    let place = after.trim_start_matches([' ', '—']).trim();
    let kind = match place.strip_prefix('`') {
        Some(topic) if topic.starts_with('<') => topic.split('`').next()?.to_string(),
        Some(topic) => topic.split([':', '`']).next()?.to_string(),
        None if place.starts_with("frame") => "frame".to_string(),
        None => return None,
    };
    Some((event_type.to_string(), kind))
}

fn example_payload_keys(example: &str) -> (String, BTreeSet<String>) {
    let data_line = example
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("an example without a data line:\n{example}"));
    let envelope: Value = serde_json::from_str(data_line)
        .unwrap_or_else(|e| panic!("example data is not JSON ({e}):\n{example}"));
    let keys = envelope["payload"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    (envelope["type"].as_str().unwrap_or_default().to_string(), keys)
}

/// Drives every event the server emits through real streams.
async fn run_scenario(app: &TestApp) -> Seen {
    let mut seen = Seen::default();
    let session = create_session(app, "Catalog").await;
    let mut watcher = session.watch(app, None, None).await;
    let ann = session.join(app, Some("Ann")).await;
    let mut ann_stream = session.watch(app, Some(&ann.token), None).await;
    session.start(app).await;
    let poll = session.choice_poll(app, true).await;
    session.activate(app, &poll).await;
    let choice = json!({ "selectedOptionIds": [option_id(&poll, 0)] });
    assert_eq!(vote(app, &ann, &poll, choice.clone()).await.0, 201);
    assert_eq!(vote(app, &ann, &poll, choice).await.0, 409); // vote:rejected
    let unknown_poll = format!("/v1/polls/{}/votes", uuid::Uuid::new_v4());
    let (status, _) = post(
        app,
        Some(&ann.token),
        &unknown_poll,
        json!({"voteData": {"selectedOptionIds": []}}),
    )
    .await;
    assert_eq!(status, 404); // error:general
    seen.drain(&mut ann_stream).await;
    drop(ann_stream); // participant:disconnected after the grace period
    tokio::time::sleep(Duration::from_millis(600)).await;
    session.close(app, &poll).await;

    // Withheld results: counts only on the session topic, the results on
    // the presenter's, then a reveal; and a timed poll's `closesAt`.
    let mut presenter_stream = session.watch(app, Some(&session.presenter), None).await;
    let hidden = session
        .create_poll(
            app,
            json!({"question": "Hidden", "pollType": "multiple_choice", "options": ["A", "B"], "resultsVisibility": "manual"}),
        )
        .await;
    let (status, body) = post(
        app,
        Some(&session.presenter),
        &format!("/v1/polls/{}/activate", hidden["pollId"].as_str().unwrap()),
        json!({"durationSeconds": 600}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let voter = session.join(app, None).await;
    let choice = json!({ "selectedOptionIds": [option_id(&hidden, 1)] });
    assert_eq!(vote(app, &voter, &hidden, choice).await.0, 201);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reveal = format!("/v1/polls/{}/reveal", hidden["pollId"].as_str().unwrap());
    assert_eq!(
        post(app, Some(&session.presenter), &reveal, json!({})).await.0,
        200
    );
    session.close(app, &hidden).await;
    // An open-text answer hidden by the presenter.
    let words = session
        .create_poll(
            app,
            json!({"question": "One word?", "pollType": "open_text", "resultsVisibility": "always"}),
        )
        .await;
    session.activate(app, &words).await;
    let answer = json!({"textResponse": "Noise"});
    assert_eq!(vote(app, &voter, &words, answer).await.0, 201);
    let hide = format!("/v1/polls/{}/hidden-answers", words["pollId"].as_str().unwrap());
    assert_eq!(
        post(app, Some(&session.presenter), &hide, json!({"text": "noise"}))
            .await
            .0,
        200
    );
    session.close(app, &words).await;
    seen.drain(&mut presenter_stream).await;

    // Resuming: reconnected, and reset for an id that cannot be replayed.
    let mut resumed = session.watch(app, None, Some("0")).await;
    seen.drain(&mut resumed).await;
    let mut reset = session.watch(app, None, Some("999999")).await;
    seen.drain(&mut reset).await;
    session.end(app).await;
    seen.drain(&mut watcher).await;

    // Generic topics: versions, rooms, the personal topic, system status.
    let token = app.keys.mint(&Claims {
        sub: Some("ann".into()),
        exp: expiry_in(Duration::from_secs(60)),
        publish: vec!["demo:*".into(), "user:*".into()],
        subscribe: vec!["demo:*".into(), "system".into()],
        ..Claims::default()
    });
    let response = app
        .http
        .get(app.url("/v1/events?topic=demo:a&topic=system&presence=true"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let mut stream = SseClient::new(response);
    let hello = stream.next().await;
    seen.record(&hello);
    let connection = data(&hello)["payload"]["connectionId"]
        .as_str()
        .unwrap()
        .to_string();
    let room = format!("/v1/connections/{connection}/topics");
    assert_eq!(
        post(app, Some(&token), &room, json!({"topic": "demo:b"})).await.0,
        200
    );
    let leave = app
        .http
        .delete(app.url(&format!("{room}/demo:b")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(leave.status(), 200);
    let body = json!({"type": "doc:updated", "entityId": "doc-1", "payload": {"title": "Plan"}});
    assert_eq!(app.publish_raw(&token, "demo:a", body).await.status(), 201);
    let note = json!({"type": "notification:new", "payload": {"text": "hello"}});
    assert_eq!(app.publish_raw(&token, "user:ann", note).await.status(), 201);
    tokio::time::sleep(Duration::from_millis(300)).await; // a system:status
    seen.drain(&mut stream).await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_catalog_matches_what_the_server_sends() {
    let app = TestApp::spawn_with(Backend::Memory, |c| {
        c.grace_period = Duration::from_millis(200);
        c.status_interval = Duration::from_millis(200);
    })
    .await;
    let seen = run_scenario(&app).await;
    if std::env::var_os("POLLCAST_CATALOG_PRINT").is_some() {
        for (kind, example) in &seen.examples {
            eprintln!("{kind:?} {:?}\n{example}\n", seen.fields[kind]);
        }
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events.md");
    let catalog = parse_catalog(&std::fs::read_to_string(path).expect("docs/events.md"));
    // Publisher-defined events on generic topics are not the server's own.
    let own = |(event_type, _): &&Kind| !["doc:updated", "notification:new"].contains(&event_type.as_str());
    for (kind, fields) in seen.fields.iter().filter(|(k, _)| own(k)) {
        let documented = catalog
            .get(kind)
            .unwrap_or_else(|| panic!("{kind:?} is sent but not in docs/events.md"));
        let undocumented: Vec<&String> = fields.difference(&documented.fields).collect();
        let missing: Vec<&String> = documented.required.difference(fields).collect();
        assert!(
            undocumented.is_empty(),
            "{kind:?} sends undocumented fields {undocumented:?}"
        );
        assert!(
            missing.is_empty(),
            "{kind:?} documents fields it never sent: {missing:?} (mark them optional?)"
        );
    }
    for (kind, documented) in &catalog {
        let elsewhere = SEEN_ELSEWHERE.iter().any(|(t, _)| *t == kind.0);
        assert!(
            seen.fields.contains_key(kind) || elsewhere,
            "{kind:?} is documented but was never sent"
        );
        assert!(!documented.examples.is_empty(), "{kind:?} has no example frame");
        for example in &documented.examples {
            let (event_type, keys) = example_payload_keys(example);
            assert_eq!(event_type, kind.0, "example under {kind:?}");
            let extra: Vec<&String> = keys.difference(&documented.fields).collect();
            assert!(
                extra.is_empty(),
                "{kind:?} example has undocumented fields {extra:?}"
            );
        }
    }
}
