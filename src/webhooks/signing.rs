//! Standard Webhooks messages: the secret's form (`whsec_` + base64), the
//! message id, the body, and the signature
//! `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
//!
//! The id is stable for one event sent to one webhook (retries and other
//! nodes send the same one), so a receiver can drop a duplicate; the
//! timestamp is the attempt's, so a receiver's replay window holds.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::Sha256;
use uuid::Uuid;

use crate::domain::event::{format_timestamp, StoredEvent};

/// What every secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";
/// Shortest and longest key, in bytes (the specification's 24 to 64).
pub const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// A webhook's signing key: the bytes its secret encodes.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(…)")
    }
}

impl SigningKey {
    /// The key of a `whsec_<base64>` secret of 24 to 64 bytes.
    pub fn parse(secret: &str) -> Result<SigningKey, String> {
        let encoded = secret
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| format!("a secret starts with `{SECRET_PREFIX}`"))?;
        let key = STANDARD.decode(encoded).map_err(|_| {
            format!("a secret is `{SECRET_PREFIX}` followed by standard base64 (with padding)")
        })?;
        if !KEY_BYTES.contains(&key.len()) {
            return Err(format!(
                "a secret's key is {} to {} bytes, this one is {}",
                KEY_BYTES.start(),
                KEY_BYTES.end(),
                key.len()
            ));
        }
        Ok(SigningKey(key))
    }

    /// `v1,<base64 signature>` of one attempt.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header of one attempt: a signature per key,
/// separated by spaces (the current secret first, then a replaced one
/// that still signs); a receiver accepts the message when any matches.
pub fn signature_header(keys: &[SigningKey], message_id: &str, timestamp: i64, body: &str) -> String {
    let signatures: Vec<String> = keys
        .iter()
        .map(|key| key.sign(message_id, timestamp, body))
        .collect();
    signatures.join(" ")
}

/// A new secret: `whsec_` and the base64 of 24 random bytes.
pub fn generate_secret() -> String {
    let key: [u8; 24] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The `webhook-id` of an event sent to a webhook: the same on every
/// attempt and from every node.
pub fn message_id(webhook: Uuid, event: &StoredEvent) -> String {
    format!("msg_{}_{}", webhook.simple(), event.id)
}

#[derive(Serialize)]
struct Message<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: &'a str,
    data: &'a RawValue,
}

/// The body of an event's message: `{"type", "timestamp", "data"}`, with
/// the event's envelope (as streams send it) as `data`.
pub fn message_body(event: &StoredEvent) -> String {
    let envelope = event.envelope_json();
    let data = RawValue::from_string(envelope).expect("an envelope is JSON");
    serde_json::to_string(&Message {
        event_type: event.event_type.as_str(),
        timestamp: &format_timestamp(&event.timestamp),
        data: &data,
    })
    .expect("a message of strings and raw JSON serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{EventType, TraceId};
    use crate::domain::topic::Topic;

    /// The example of the Standard Webhooks specification (and of its
    /// reference libraries' tests).
    #[test]
    fn the_specifications_example_signs_as_published() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            key.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn the_signature_covers_id_timestamp_and_body() {
        let key = SigningKey::parse(&generate_secret()).unwrap();
        let signed = key.sign("msg_1", 100, "{}");
        assert_ne!(signed, key.sign("msg_2", 100, "{}"));
        assert_ne!(signed, key.sign("msg_1", 101, "{}"));
        assert_ne!(signed, key.sign("msg_1", 100, "{ }"));
        assert_eq!(signed, key.sign("msg_1", 100, "{}"));
    }

    #[test]
    fn while_a_secret_is_rotated_both_sign_current_first() {
        let (current, previous) = (
            SigningKey::parse(&generate_secret()).unwrap(),
            SigningKey::parse(&generate_secret()).unwrap(),
        );
        let header = signature_header(&[current.clone(), previous.clone()], "msg_1", 100, "{}");
        assert_eq!(
            header,
            format!(
                "{} {}",
                current.sign("msg_1", 100, "{}"),
                previous.sign("msg_1", 100, "{}")
            )
        );
        assert_eq!(
            signature_header(std::slice::from_ref(&current), "msg_1", 100, "{}"),
            current.sign("msg_1", 100, "{}")
        );
    }

    #[test]
    fn secrets_are_whsec_and_24_to_64_bytes_of_standard_base64() {
        let generated = generate_secret();
        assert!(generated.starts_with("whsec_"));
        assert!(SigningKey::parse(&generated).is_ok());
        assert_ne!(generated, generate_secret());
        let of = |n: usize| format!("whsec_{}", STANDARD.encode(vec![7u8; n]));
        assert!(SigningKey::parse(&of(24)).is_ok());
        assert!(SigningKey::parse(&of(64)).is_ok());
        for bad in [
            of(23),
            of(65),
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            "whsec_".into(),
            "whsec_not base64!".into(),
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS".into(),
        ] {
            assert!(SigningKey::parse(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            format!("{:?}", SigningKey::parse(&of(24)).unwrap()),
            "SigningKey(…)"
        );
    }

    #[test]
    fn a_message_carries_the_type_the_time_and_the_envelope() {
        let event = StoredEvent {
            id: 42,
            topic: Topic::parse("demo:a").unwrap(),
            event_type: EventType::parse("demo:said").unwrap(),
            trace_id: TraceId::from_stored("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            payload: RawValue::from_string(r#"{"text":"hi"}"#.into()).unwrap(),
            timestamp: chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            entity: None,
        };
        let body: serde_json::Value = serde_json::from_str(&message_body(&event)).unwrap();
        assert_eq!(body["type"], "demo:said");
        assert_eq!(body["timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(body["data"]["id"], "42");
        assert_eq!(body["data"]["topic"], "demo:a");
        assert_eq!(body["data"]["payload"]["text"], "hi");
        let webhook = Uuid::nil();
        assert_eq!(
            message_id(webhook, &event),
            format!("msg_{}_42", webhook.simple())
        );
    }
}
