//! Events as the log stores them and as clients see them: ids, types, trace
//! ids, and the one JSON envelope used on the SSE wire and in history.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::value::RawValue;

use super::topic::Topic;

/// Longest event type accepted, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 128;

/// A position in the one global log. Ids are strictly increasing in commit
/// order; 0 means "before the first event".
pub type EventId = i64;

/// Parses a client-supplied event id (Last-Event-ID, `after`): a plain
/// decimal integer, no sign, no spaces.
pub fn parse_event_id(raw: &str) -> Option<EventId> {
    if raw.is_empty() || raw.len() > 19 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// An event type such as `operation:progress`: two segments of
/// `[a-z0-9_.-]`. Because no other character is allowed, a type can never
/// carry a line break into an SSE `event:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventType(String);

impl EventType {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let valid_segment = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
        };
        let mut parts = raw.split(':');
        let ok = raw.len() <= MAX_EVENT_TYPE_LEN
            && matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None) if valid_segment(a) && valid_segment(b));
        if ok {
            Ok(EventType(raw.to_string()))
        } else {
            Err("type must look like `domain:action` with segments of [a-z0-9_.-] (at most 128 bytes)".into())
        }
    }

    /// Rebuilds a type read back from the store, where only parsed types
    /// were ever written.
    pub fn from_stored(raw: String) -> Self {
        EventType(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A W3C trace id: 32 lowercase hex digits, not all zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceId(String);

impl TraceId {
    pub fn generate() -> Self {
        TraceId(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The trace id of a `traceparent` header (`00-<trace>-<parent>-<flags>`),
    /// or `None` when the header is not a valid one.
    pub fn from_traceparent(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let valid = hex(version, 2)
            && version != "ff"
            && hex(trace, 32)
            && trace.bytes().any(|b| b != b'0')
            && hex(parent, 16)
            && hex(flags, 2);
        valid.then(|| TraceId(trace.to_string()))
    }

    /// Rebuilds a trace id read back from the store, where only valid ones
    /// were ever written.
    pub fn from_stored(raw: String) -> Self {
        TraceId(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An event accepted by a command, not yet given its id.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub topic: Topic,
    pub event_type: EventType,
    pub trace_id: TraceId,
    /// The payload as JSON text: kept as text from the request to the wire,
    /// so it is serialized once, not once per reader.
    pub payload: Box<RawValue>,
    pub timestamp: DateTime<Utc>,
    /// Set when the publisher named an entity: the version this event gave it.
    pub entity: Option<EntityVersion>,
}

/// Optimistic locking of generic topics (CONTRACT §4): the entity an event
/// is about and the version it brought that entity to (1 for the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityVersion {
    pub entity_id: String,
    pub version: i64,
}

impl NewEvent {
    /// Builds an event stamped now. The payload is re-serialized compactly:
    /// JSON text from a client may hold line breaks between tokens, and
    /// those must never reach an SSE `data:` line.
    pub fn new(topic: Topic, event_type: EventType, trace_id: TraceId, payload: &serde_json::Value) -> Self {
        let compact = serde_json::to_string(payload).expect("a JSON value always serializes");
        NewEvent {
            topic,
            event_type,
            trace_id,
            payload: RawValue::from_string(compact).expect("serde_json output is valid JSON"),
            timestamp: now_millis(),
            entity: None,
        }
    }
}

/// An event in the log.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: EventId,
    pub topic: Topic,
    pub event_type: EventType,
    pub trace_id: TraceId,
    pub payload: Box<RawValue>,
    pub timestamp: DateTime<Utc>,
    pub entity: Option<EntityVersion>,
}

impl StoredEvent {
    pub fn from_new(id: EventId, event: NewEvent) -> Self {
        StoredEvent {
            id,
            topic: event.topic,
            event_type: event.event_type,
            trace_id: event.trace_id,
            payload: event.payload,
            timestamp: event.timestamp,
            entity: event.entity,
        }
    }

    /// The envelope clients see, as one line of JSON (CONTRACT §1).
    pub fn envelope_json(&self) -> String {
        let envelope = Envelope {
            id: &self.id.to_string(),
            event_type: self.event_type.as_str(),
            topic: self.topic.display_name(),
            timestamp: &format_timestamp(&self.timestamp),
            trace_id: self.trace_id.as_str(),
            entity_id: self.entity.as_ref().map(|e| e.entity_id.as_str()),
            version: self.entity.as_ref().map(|e| e.version),
            payload: &self.payload,
        };
        serde_json::to_string(&envelope).expect("an envelope of strings and raw JSON always serializes")
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    topic: &'a str,
    timestamp: &'a str,
    #[serde(rename = "traceId")]
    trace_id: &'a str,
    #[serde(rename = "entityId", skip_serializing_if = "Option::is_none")]
    entity_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
    payload: &'a RawValue,
}

/// RFC 3339, UTC, milliseconds: `2026-11-21T10:00:00.123Z`.
pub fn format_timestamp(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Current time truncated to what clients see (milliseconds), so a stored
/// event and its echo in a response print identically.
pub fn now_millis() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// `#[serde(with = ...)]` for timestamps written like every other one in
/// the API (see [`format_timestamp`]) and read as any RFC 3339 time.
pub mod timestamp_format {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_timestamp(ts))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
        let raw = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&raw)
            .map(|ts| ts.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_plain_decimals() {
        assert_eq!(parse_event_id("42"), Some(42));
        assert_eq!(parse_event_id("0"), Some(0));
        for bad in ["", "-1", "+1", " 1", "1.0", "abc", "99999999999999999999"] {
            assert_eq!(parse_event_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn event_types_are_two_safe_segments() {
        assert!(EventType::parse("operation:progress").is_ok());
        for bad in ["", "a", "a:b:c", "a:\nb", "A:b", "a:", ":b", "a :b"] {
            assert!(EventType::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn traceparent_yields_its_trace_id() {
        let t = TraceId::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(
            TraceId::from_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(TraceId::from_traceparent("garbage").is_none());
        assert_eq!(TraceId::generate().as_str().len(), 32);
    }

    #[test]
    fn the_envelope_is_one_line_with_the_contract_fields() {
        let event = StoredEvent {
            id: 7,
            topic: Topic::parse("demo:a").unwrap(),
            event_type: EventType::parse("demo:said").unwrap(),
            trace_id: TraceId::from_stored("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            payload: RawValue::from_string(r#"{"text":"line1\nline2"}"#.into()).unwrap(),
            timestamp: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            entity: None,
        };
        let json = event.envelope_json();
        assert!(!json.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["id"], "7");
        assert_eq!(v["type"], "demo:said");
        assert_eq!(v["topic"], "demo:a");
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["payload"]["text"], "line1\nline2");
    }
}
