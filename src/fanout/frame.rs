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
}

impl Frame {
    pub fn from_event(event: &StoredEvent) -> Self {
        let mut text = BytesMut::with_capacity(event.payload.get().len() + 256);
        write_event(&mut text, event);
        Frame {
            id: event.id,
            topic: event.topic.clone(),
            bytes: text.freeze(),
        }
    }
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
pub fn transient(event_type: &'static str, payload: Value) -> Bytes {
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

/// The heartbeat: an SSE comment, ignored by every client.
pub const PING: &[u8] = b": ping\n\n";

/// The reconnection delay line, sent once per stream.
pub fn retry_line(millis: u128) -> Bytes {
    Bytes::from(format!("retry: {millis}\n"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::domain::event::{EventType, NewEvent, TraceId};

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
}
