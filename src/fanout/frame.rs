//! SSE framing, written by hand so that nothing a client sends can break a
//! frame: event types and ids are validated to `[a-z0-9_.:-]` and digits,
//! and `data:` holds one line of JSON, whose serializer escapes every
//! control character.

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use serde::Serialize;
use serde_json::Value;

use crate::domain::event::{format_timestamp, EventId, StoredEvent};
use crate::domain::topic::Topic;

/// A stored event framed once for every subscriber.
#[derive(Debug)]
pub struct Frame {
    pub id: EventId,
    pub topic: Topic,
    /// `id: …\nevent: …\ndata: …\n\n`
    pub bytes: Bytes,
    /// A `session:ended`: the streams of that session end after it.
    pub ends_session: bool,
}

/// The id of frames that are not stored: they never move a stream's cursor.
pub const TRANSIENT: EventId = 0;

impl Frame {
    /// A frame without an id (`system:*`), for the subscribers of `topic`.
    pub fn transient(topic: Topic, bytes: Bytes) -> Self {
        Frame {
            id: TRANSIENT,
            topic,
            bytes,
            ends_session: false,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.id == TRANSIENT
    }

    pub fn from_event(event: &StoredEvent) -> Self {
        let mut text = BytesMut::with_capacity(event.payload.get().len() + 256);
        write_event(&mut text, event);
        Frame {
            id: event.id,
            topic: event.topic.clone(),
            bytes: text.freeze(),
            ends_session: ends_session(event),
        }
    }
}

/// Whether the event ends a live polling session: only the polling domain
/// writes `session:*` topics, so a publisher cannot fake it.
pub fn ends_session(event: &StoredEvent) -> bool {
    event.event_type.as_str() == "session:ended" && event.topic.kind() == "session"
}

/// Appends one stored event's frame to `out`: what replay uses to frame a
/// whole page into one buffer.
pub fn write_event(out: &mut BytesMut, event: &StoredEvent) {
    let data = event.envelope_json();
    debug_assert!(!data.contains(['\n', '\r', '\0']));
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(event.id.to_string().as_bytes());
    out.extend_from_slice(b"\nevent: ");
    out.extend_from_slice(event.event_type.as_str().as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// A frame that is not stored (`connection:*`, `system:*`): no `id:` line,
/// so it never moves the client's Last-Event-ID.
pub fn transient(event_type: &str, payload: Value) -> Bytes {
    #[derive(Serialize)]
    struct Transient<'a> {
        #[serde(rename = "type")]
        event_type: &'a str,
        timestamp: String,
        payload: Value,
    }
    let data = serde_json::to_string(&Transient {
        event_type,
        timestamp: format_timestamp(&Utc::now()),
        payload,
    })
    .expect("a JSON value always serializes");
    Bytes::from(format!("event: {event_type}\ndata: {data}\n\n"))
}

/// A stored event's frame with its tenant first in the data
/// (`data: {"tenant":"acme","id":…`), for a reader who sees every tenant
/// (an admin's tail), since the envelope names topics as their tenant's
/// clients see them; outside any tenant, the frame as it is. Tenant names
/// are topic segments: nothing in them needs escaping.
pub fn with_tenant(bytes: &Bytes, topic: &Topic) -> Bytes {
    const DATA: &[u8] = b"\ndata: {";
    let Some(tenant) = crate::domain::topic::tenant_of(topic.as_str()) else {
        return bytes.clone();
    };
    let Some(at) = bytes.windows(DATA.len()).position(|w| w == DATA) else {
        return bytes.clone();
    };
    let split = at + DATA.len();
    let mut out = BytesMut::with_capacity(bytes.len() + tenant.len() + 12);
    out.extend_from_slice(&bytes[..split]);
    out.extend_from_slice(format!("\"tenant\":\"{tenant}\",").as_bytes());
    out.extend_from_slice(&bytes[split..]);
    out.freeze()
}

/// The heartbeat: an SSE comment, ignored by every client.
pub const PING: &[u8] = b": ping\n\n";

/// The reconnection delay line, sent once per stream.
pub fn retry_line(millis: u128) -> Bytes {
    Bytes::from(format!("retry: {millis}\n"))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use eventsource_stream::{Event, Eventsource};
    use futures::StreamExt;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::domain::event::{EventType, NewEvent, TraceId};
    use crate::domain::topic::Selector;

    #[test]
    fn an_admin_sees_the_tenant_of_a_tenant_event_and_nothing_else_changes() {
        let event = |topic: Topic| {
            let new = NewEvent::new(
                topic,
                EventType::parse("demo:said").unwrap(),
                TraceId::generate(),
                &json!({"a": 1}),
            );
            Frame::from_event(&StoredEvent::from_new(7, new))
        };
        let acme = event(Topic::parse("orders:1").unwrap().in_tenant("acme"));
        let shown = with_tenant(&acme.bytes, &acme.topic);
        let text = std::str::from_utf8(&shown).unwrap();
        let data: Value =
            serde_json::from_str(text.lines().nth(2).unwrap().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(
            (data["tenant"].as_str(), data["topic"].as_str()),
            (Some("acme"), Some("orders:1"))
        );
        assert!(text.starts_with("id: 7\nevent: demo:said\n") && text.ends_with("}\n\n"));
        let plain = event(Topic::parse("orders:1").unwrap());
        assert_eq!(with_tenant(&plain.bytes, &plain.topic), plain.bytes);
    }

    proptest! {
        /// Whatever a client puts in a payload (CR, LF, NUL, U+2028, long
        /// strings), its frame is exactly `id`, `event`, `data` and a blank
        /// line, and the data parses back to the same payload.
        #[test]
        fn no_payload_can_break_a_frame(text in any::<String>(), key in "\\PC{0,20}", n in any::<i64>()) {
            let payload = json!({ key.clone(): text, "n": n, "nested": ["\r\n\0", {"x": "\n\ndata: forged"}] });
            let event = NewEvent::new(
                Topic::parse("demo:a").unwrap(),
                EventType::parse("demo:said").unwrap(),
                TraceId::generate(),
                &payload,
            );
            let frame = Frame::from_event(&StoredEvent::from_new(42, event));
            let text = std::str::from_utf8(&frame.bytes).unwrap();
            prop_assert!(text.ends_with("\n\n"));
            let lines: Vec<&str> = text[..text.len() - 2].split(['\n', '\r']).collect();
            prop_assert_eq!(lines.len(), 3);
            prop_assert_eq!(lines[0], "id: 42");
            prop_assert_eq!(lines[1], "event: demo:said");
            let data: Value = serde_json::from_str(lines[2].strip_prefix("data: ").unwrap()).unwrap();
            prop_assert_eq!(&data["payload"], &payload);
        }
    }

    // What follows reads frames back with parsers that owe nothing to the
    // writer above: `eventsource-stream`, and a line splitter that follows
    // the spec's end-of-line rule (CRLF, CR or LF).

    /// Parses a byte stream with `eventsource-stream`, delivered as two
    /// chunks cut at `cut` (so inside a CRLF or a UTF-8 sequence too).
    fn parse_sse(bytes: &[u8], cut: usize) -> Vec<Event> {
        let cut = cut % (bytes.len() + 1);
        let chunks = vec![
            Ok::<_, Infallible>(bytes[..cut].to_vec()),
            Ok(bytes[cut..].to_vec()),
        ];
        futures::executor::block_on(
            futures::stream::iter(chunks)
                .eventsource()
                .map(|event| event.expect("the stream parses"))
                .collect(),
        )
    }

    /// The lines of a stream as the SSE spec ends them (CRLF, CR or LF),
    /// and whatever follows the last line break.
    fn spec_lines(text: &str) -> (Vec<&str>, &str) {
        let mut lines = Vec::new();
        let mut rest = text;
        while let Some(end) = rest.find(['\r', '\n']) {
            lines.push(&rest[..end]);
            let skip = if rest[end..].starts_with("\r\n") { 2 } else { 1 };
            rest = &rest[end + skip..];
        }
        (lines, rest)
    }

    /// Characters with a meaning in an event stream, or that trip up
    /// parsers, and now and then any character at all.
    fn nasty_char() -> impl Strategy<Value = char> {
        prop_oneof![
            Just('\r'),
            Just('\n'),
            Just('\0'),
            Just('\u{2028}'),
            Just('\u{2029}'),
            Just('\u{85}'),
            Just('\u{feff}'),
            Just('\u{1b}'),
            Just(':'),
            Just(' '),
            Just('"'),
            Just('\\'),
            any::<char>(),
        ]
    }

    /// Strings a client may send: line breaks of every kind, NUL, and
    /// pieces of SSE syntax that would forge a frame if written raw.
    fn nasty_string() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            nasty_char().prop_map(String::from),
            Just("\r\n".to_string()),
            Just("\n\n".to_string()),
            Just("\ndata: forged\n\n".to_string()),
            Just("\r\nid: 999\r\nevent: forged\r\n\r\n".to_string()),
            Just(": comment\r".to_string()),
            "\\PC{0,8}",
        ];
        prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    /// A large string, up to about 100 KB, repeating a nasty one.
    fn huge_string() -> impl Strategy<Value = String> {
        (nasty_string(), 0usize..100_000).prop_map(|(seed, len)| {
            let seed = format!("{seed}\r\n\0\u{2028}x");
            let mut text = String::with_capacity(len + seed.len());
            while text.len() < len {
                text.push_str(&seed);
            }
            text
        })
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            // Binary fractions: printed and parsed back exactly.
            (any::<i32>(), 0..8u32).prop_map(|(m, e)| Value::from(f64::from(m) / f64::from(1u32 << e))),
            nasty_string().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(nasty_string(), inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// A publishable payload: an object (the edge refuses anything else).
    fn small_payload() -> impl Strategy<Value = Value> {
        prop::collection::btree_map(nasty_string(), json_value(), 0..5)
            .prop_map(|map| Value::Object(map.into_iter().collect()))
    }

    /// A payload that is sometimes about 100 KB.
    fn payload() -> impl Strategy<Value = Value> {
        (small_payload(), prop::option::weighted(0.3, huge_string())).prop_map(|(mut payload, huge)| {
            if let Some(huge) = huge {
                payload["huge"] = Value::from(huge);
            }
            payload
        })
    }

    /// Strings near the shape of a topic or type, sometimes with one
    /// nasty character inside, sometimes anything.
    fn candidate_name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9_.-]{1,12}:[a-z0-9_.-]{1,12}",
            ("[a-z0-9_.-]{0,12}", nasty_char(), "[a-z0-9_.:-]{0,12}")
                .prop_map(|(head, bad, tail)| format!("{head}{bad}{tail}")),
            nasty_string(),
        ]
    }

    /// A stored event on `topic`, which is not validated here: the topic
    /// only travels inside the JSON of the `data:` line.
    fn stored(id: EventId, topic: &str, event_type: &str, payload: &Value) -> StoredEvent {
        StoredEvent::from_new(
            id,
            NewEvent::new(
                Topic::from_stored(topic),
                EventType::parse(event_type).expect("a valid type"),
                TraceId::generate(),
                payload,
            ),
        )
    }

    /// Checks one framed event both ways: its exact lines, and what an
    /// independent parser makes of it.
    fn check_frame(
        bytes: &[u8],
        cut: usize,
        id: EventId,
        topic: &str,
        event_type: &str,
        payload: &Value,
    ) -> Result<(), TestCaseError> {
        let text = std::str::from_utf8(bytes).expect("frames are UTF-8");
        let (lines, tail) = spec_lines(text);
        prop_assert_eq!(tail, "", "a frame ends with its blank line");
        prop_assert_eq!(lines.len(), 4, "id, event, data and a blank line: {:?}", lines);
        prop_assert_eq!(lines[0].to_string(), format!("id: {id}"));
        prop_assert_eq!(lines[1].to_string(), format!("event: {event_type}"));
        prop_assert!(lines[2].starts_with("data: {"), "a data line: {:?}", lines[2]);
        prop_assert_eq!(lines[3], "");

        let events = parse_sse(bytes, cut);
        prop_assert_eq!(events.len(), 1, "exactly one event: {:?}", events);
        let event = &events[0];
        prop_assert_eq!(&event.id, &id.to_string());
        prop_assert_eq!(&event.event, event_type);
        let data: Value = serde_json::from_str(&event.data).expect("data is one JSON document");
        prop_assert_eq!(&data["id"], &json!(id.to_string()));
        prop_assert_eq!(&data["type"], &json!(event_type));
        // Clients see a tenant's topics without their tenant segment.
        prop_assert_eq!(
            &data["topic"],
            &json!(crate::domain::topic::without_tenant(topic))
        );
        prop_assert_eq!(&data["payload"], payload);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Any topic, any valid type, any JSON payload (CR, LF, CRLF, NUL,
        /// U+2028, SSE syntax, strings up to ~100 KB): the frame reads back
        /// as exactly one event with the same id, type and data, however
        /// the bytes are chunked.
        #[test]
        fn any_event_reads_back_as_exactly_itself(
            id in 0..=i64::MAX,
            topic in nasty_string(),
            event_type in "[a-z0-9_.-]{1,30}:[a-z0-9_.-]{1,30}",
            payload in payload(),
            cut in any::<usize>(),
        ) {
            let frame = Frame::from_event(&stored(id, &topic, &event_type, &payload));
            check_frame(&frame.bytes, cut, id, &topic, &event_type, &payload)?;
        }
    }

    proptest! {
        /// A topic or event type may carry CR, LF or NUL only into the
        /// validators, which refuse it. Whatever they accept is made of
        /// `[a-z0-9_.:*-]` only, and an accepted type frames cleanly.
        #[test]
        fn validators_refuse_line_breaks_and_nul(raw in candidate_name(), cut in any::<usize>()) {
            let breaks_a_line = raw.contains(['\r', '\n', '\0']);
            let safe = |s: &str| s.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b':' | b'*' | b'-'));
            let topic = Topic::parse(&raw);
            let selector = Selector::parse(&raw);
            let event_type = EventType::parse(&raw);
            if breaks_a_line {
                prop_assert!(topic.is_err(), "topic {:?} accepted", raw);
                prop_assert!(selector.is_err(), "selector {:?} accepted", raw);
                prop_assert!(event_type.is_err(), "type {:?} accepted", raw);
            }
            for accepted in [topic.is_ok(), selector.is_ok(), event_type.is_ok()] {
                prop_assert!(!accepted || safe(&raw), "{:?} accepted", raw);
            }
            if event_type.is_ok() {
                let payload = json!({"raw": raw});
                let frame = Frame::from_event(&stored(7, "demo:a", &raw, &payload));
                check_frame(&frame.bytes, cut, 7, "demo:a", &raw, &payload)?;
            }
        }

        /// JSON text as a client writes it, escapes and all (`\u0000`,
        /// `\u2028`, lone UTF-16 surrogates, line breaks between tokens):
        /// the edge's JSON parser either refuses it, which happens only
        /// for lone surrogates, or the parsed payload frames cleanly.
        #[test]
        fn client_json_text_frames_cleanly_or_is_refused(
            pieces in prop::collection::vec(prop_oneof![
                Just(r"\n"), Just(r"\r"), Just(r"\r\n"), Just(r"\u0000"), Just(r"\u000d\u000a"),
                Just(r"\u2028"), Just("\u{2028}"), Just(r"\ud800"), Just(r"\udfff"),
                Just(r"\ud83d\ude00"), Just(r#"\""#), Just(r"\\"), Just("data: x"), Just("id: 1"),
                Just("text"),
            ], 0..16),
            pretty in any::<bool>(),
            cut in any::<usize>(),
        ) {
            let text = pieces.concat();
            let body = if pretty {
                format!("{{\r\n  \"text\" :\n \"{text}\",\r\"list\": [\n\"{text}\"\n]\n}}\r\n")
            } else {
                format!(r#"{{"text":"{text}","list":["{text}"]}}"#)
            };
            // What `RequestContext::json` does with a request body.
            match serde_json::from_slice::<Value>(body.as_bytes()) {
                Err(_) => prop_assert!(
                    text.contains(r"\ud800") || text.contains(r"\udfff"),
                    "refused without a lone surrogate: {}", body
                ),
                Ok(payload) => {
                    let frame = Frame::from_event(&stored(9, "demo:a", "demo:said", &payload));
                    check_frame(&frame.bytes, cut, 9, "demo:a", "demo:said", &payload)?;
                }
            }
        }

        /// A whole stream — the retry line, a transient frame, stored
        /// events with heartbeats between them — reads back event for
        /// event: nothing swallowed, nothing forged.
        #[test]
        fn a_stream_of_frames_reads_back_event_for_event(
            events in prop::collection::vec(
                (nasty_string(), "[a-z0-9_.-]{1,8}:[a-z0-9_.-]{1,8}", small_payload()),
                1..5,
            ),
            echo in json_value(),
            cut in any::<usize>(),
        ) {
            let mut bytes = BytesMut::new();
            bytes.extend_from_slice(&retry_line(2000));
            bytes.extend_from_slice(&transient("connection:established", json!({ "echo": echo })));
            for (i, (topic, event_type, payload)) in events.iter().enumerate() {
                bytes.extend_from_slice(PING);
                write_event(&mut bytes, &stored(i as EventId + 1, topic, event_type, payload));
            }
            let parsed = parse_sse(&bytes, cut);
            prop_assert_eq!(parsed.len(), events.len() + 1);
            prop_assert_eq!(&parsed[0].id, "", "a transient frame has no id");
            prop_assert_eq!(&parsed[0].event, "connection:established");
            prop_assert_eq!(parsed[0].retry, Some(Duration::from_millis(2000)));
            let hello: Value = serde_json::from_str(&parsed[0].data).unwrap();
            prop_assert_eq!(&hello["payload"]["echo"], &echo);
            for (i, ((topic, event_type, payload), got)) in events.iter().zip(&parsed[1..]).enumerate() {
                prop_assert_eq!(&got.id, &(i + 1).to_string());
                prop_assert_eq!(&got.event, event_type);
                let data: Value = serde_json::from_str(&got.data).unwrap();
                // Clients see a tenant's topics without their tenant segment.
        prop_assert_eq!(&data["topic"], &json!(crate::domain::topic::without_tenant(topic)));
                prop_assert_eq!(&data["payload"], payload);
            }
        }
    }

    /// A lone surrogate escape never reaches a frame: the JSON parser the
    /// edge uses refuses the body (a 400), while a proper pair is a
    /// character like any other.
    #[test]
    fn lone_surrogates_are_refused_and_pairs_frame() {
        for body in [
            r#"{"t":"\ud800"}"#,
            r#"{"t":"\udc00"}"#,
            r#"{"t":"\ud800x"}"#,
            r#"{"t":"\ud800\u0041"}"#,
        ] {
            assert!(
                serde_json::from_slice::<Value>(body.as_bytes()).is_err(),
                "{body}"
            );
        }
        let payload: Value = serde_json::from_str(r#"{"t":"\ud83d\ude00\u2028"}"#).unwrap();
        assert_eq!(payload["t"], "\u{1f600}\u{2028}");
        let frame = Frame::from_event(&stored(1, "demo:a", "demo:said", &payload));
        check_frame(&frame.bytes, 5, 1, "demo:a", "demo:said", &payload).unwrap();
    }
}
