//! `pollcast::fanout::frame`: SSE framing of stored events
//! (`write_event`, `Frame::from_event`) and of transient frames
//! (`transient`), read back with a small parser written here from the
//! WHATWG EventSource rules, which owes nothing to the writer.
//!
//! The input is text. Its first line holds tab-separated fields, each
//! optional: `id`, `topic`, `type`, `tenant`, `entity id`, `entity version`,
//! `timestamp in ms`; an invalid topic or type falls back to `demo:a` /
//! `demo:said`. The rest is the payload: parsed as JSON, or, when it is not
//! JSON, taken as one JSON string.
//!
//! Invariants:
//! - never panics;
//! - the frame is UTF-8 and parses as exactly one event; its `id` and
//!   `event` are the event's, its `data` is exactly `envelope_json()` and
//!   parses as the same JSON (with the payload, the topic as clients see it
//!   and the entity); `Frame::from_event` writes the same bytes;
//! - a transient frame of the same type and payload parses as exactly one
//!   event with that type and payload, and does not move the last event id;
//! - the two frames one after the other parse as exactly those two events.
//!
//! Together: no payload, entity id or topic can break out of its frame.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pollcast::domain::event::{EntityVersion, EventType, NewEvent, StoredEvent, TraceId};
use pollcast::domain::topic::{is_tenant_name, Topic};
use pollcast::fanout::frame::{self, Frame};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (config, body) = text.split_once('\n').unwrap_or((&text, ""));
    let mut fields = config.split('\t');
    let mut field = || fields.next().filter(|f| !f.is_empty());

    let id: i64 = field().and_then(|f| f.parse().ok()).unwrap_or(42);
    let topic = field()
        .and_then(|f| Topic::parse(f).ok())
        .unwrap_or_else(|| Topic::parse("demo:a").unwrap());
    let event_type = field()
        .and_then(|f| EventType::parse(f).ok())
        .unwrap_or_else(|| EventType::parse("demo:said").unwrap());
    let topic = match field() {
        Some(tenant) if is_tenant_name(tenant) => topic.in_tenant(tenant),
        _ => topic,
    };
    let entity_id = field().map(str::to_owned);
    let version: i64 = field().and_then(|f| f.parse().ok()).unwrap_or(1);
    let timestamp = field()
        .and_then(|f| f.parse::<i64>().ok())
        .and_then(chrono::DateTime::from_timestamp_millis);

    let payload: Value = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));

    let mut new = NewEvent::new(topic.clone(), event_type.clone(), TraceId::generate(), &payload);
    new.entity = entity_id
        .clone()
        .map(|entity_id| EntityVersion { entity_id, version });
    if let Some(ts) = timestamp {
        new.timestamp = ts;
    }
    let event = StoredEvent::from_new(id, new);
    let envelope = event.envelope_json();

    // The stored event's frame.
    let mut out = BytesMut::new();
    frame::write_event(&mut out, &event);
    assert_eq!(
        &out[..],
        &Frame::from_event(&event).bytes[..],
        "write_event and Frame::from_event"
    );
    let events = parse_sse(&out);
    assert_eq!(
        events.len(),
        1,
        "exactly one event from {:?}",
        String::from_utf8_lossy(&out)
    );
    let got = &events[0];
    assert_eq!(got.id, id.to_string(), "the id");
    assert_eq!(got.event, event_type.as_str(), "the event type");
    assert_eq!(got.data, envelope, "the data is the envelope");
    let data: Value = serde_json::from_str(&got.data).expect("data is one JSON document");
    let expected: Value = serde_json::from_str(&envelope).expect("the envelope is JSON");
    assert_eq!(data, expected, "the data parses as the envelope");
    assert_eq!(data["id"], Value::from(id.to_string()));
    assert_eq!(data["type"], Value::from(event_type.as_str()));
    assert_eq!(data["topic"], Value::from(topic.display_name()));
    match &entity_id {
        Some(e) => {
            assert_eq!(data["entityId"], Value::from(e.as_str()));
            assert_eq!(data["version"], Value::from(version));
        }
        None => assert!(data.get("entityId").is_none() && data.get("version").is_none()),
    }
    if !has_float(&payload) {
        // (A float may not survive a JSON text round trip bit for bit.)
        assert_eq!(data["payload"], payload, "the payload");
    }

    // A transient frame of the same type and payload.
    let transient = frame::transient(event_type.as_str(), payload.clone());
    let events = parse_sse(&transient);
    assert_eq!(
        events.len(),
        1,
        "exactly one transient event from {:?}",
        String::from_utf8_lossy(&transient)
    );
    assert_eq!(events[0].id, "", "a transient frame has no id");
    assert_eq!(events[0].event, event_type.as_str());
    let data: Value = serde_json::from_str(&events[0].data).expect("transient data is JSON");
    assert_eq!(data["type"], Value::from(event_type.as_str()));
    if !has_float(&payload) {
        assert_eq!(data["payload"], payload);
    }

    // Both, one after the other, as a stream carries them.
    let mut both = out.to_vec();
    both.extend_from_slice(&transient);
    both.extend_from_slice(frame::PING);
    let events = parse_sse(&both);
    assert_eq!(events.len(), 2, "two frames, two events");
    assert_eq!(events[0].data, envelope);
    assert_eq!(
        events[1].id,
        id.to_string(),
        "the transient frame keeps the last event id"
    );
    assert_eq!(events[1].event, event_type.as_str());
});

fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(fields) => fields.values().any(has_float),
        _ => false,
    }
}

/// One dispatched event, as an EventSource sees it.
#[derive(Debug)]
struct SseEvent {
    /// The last event id at dispatch.
    id: String,
    event: String,
    data: String,
}

/// The WHATWG "Interpreting an event stream" rules: UTF-8 (one leading BOM
/// dropped), lines ending in CRLF, LF or CR, `:` comments, `field: value`
/// with one leading space dropped, a blank line dispatching; what follows
/// the last line break is an incomplete line and is not processed.
fn parse_sse(bytes: &[u8]) -> Vec<SseEvent> {
    let text = std::str::from_utf8(bytes).expect("frames are UTF-8");
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut events = Vec::new();
    let (mut last_id, mut event_type, mut data) = (String::new(), String::new(), String::new());
    let mut rest = text;
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        let skip = if rest[end..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[end + skip..];
        if line.is_empty() {
            if data.is_empty() {
                event_type.clear();
                continue;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            let event = if event_type.is_empty() {
                "message".to_owned()
            } else {
                std::mem::take(&mut event_type)
            };
            events.push(SseEvent {
                id: last_id.clone(),
                event,
                data: std::mem::take(&mut data),
            });
            event_type.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "event" => event_type = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => last_id = value.to_owned(),
            _ => {} // retry and unknown fields
        }
    }
    assert!(rest.is_empty(), "bytes after the last line break: {rest:?}");
    events
}
