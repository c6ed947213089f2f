//! Which topics and event types a generic publisher may not write: the
//! server's own (`system`), live polling's (`session:*`, `participant:*`,
//! `presenter:*`),
//! and the event types only the server sends.

use crate::domain::event::EventType;
use crate::domain::topic::Topic;

use super::outcome::{Owner, PublishRejection};

/// Who alone writes `topic`, when it is not a generic publisher's.
pub fn owner(topic: &Topic) -> Option<Owner> {
    match topic.kind() {
        "system" => Some(Owner::Server),
        "session" | "participant" | "presenter" => Some(Owner::Polling),
        _ => None,
    }
}

/// Types only the server sends: its stream frames (`connection:*`), its
/// own notices (`system:*`) and who is present (`presence:*`). A publisher
/// using one could pass for the server on its topic.
pub fn is_server_only(event_type: &EventType) -> bool {
    matches!(
        event_type.as_str().split(':').next(),
        Some("connection" | "system" | "presence")
    )
}

/// A generic publisher may write `topic` (checked before authorization:
/// no token may write a reserved topic).
pub fn check_topic(topic: &Topic) -> Result<(), PublishRejection> {
    match owner(topic) {
        None => Ok(()),
        Some(owner) => Err(PublishRejection::ReservedTopic {
            kind: topic.kind().to_string(),
            owner,
        }),
    }
}

/// A generic publisher may send `event_type`.
pub fn check_event_type(event_type: &EventType) -> Result<(), PublishRejection> {
    if !is_server_only(event_type) {
        return Ok(());
    }
    let domain = event_type.as_str().split(':').next().unwrap_or_default();
    Err(PublishRejection::ServerOnlyEventType {
        domain: domain.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> Topic {
        Topic::parse(name).expect("a valid topic")
    }

    fn event_type(name: &str) -> EventType {
        EventType::parse(name).expect("a valid event type")
    }

    #[test]
    fn polling_and_system_topics_are_reserved() {
        assert_eq!(owner(&topic("system")), Some(Owner::Server));
        assert_eq!(owner(&topic("session:abc")), Some(Owner::Polling));
        assert_eq!(owner(&topic("participant:abc")), Some(Owner::Polling));
        assert_eq!(owner(&topic("presenter:abc")), Some(Owner::Polling));
        assert_eq!(owner(&topic("orders:1")), None);
        assert_eq!(owner(&topic("systems:1")), None);
        assert!(check_topic(&topic("orders")).is_ok());
    }

    #[test]
    fn a_reserved_topic_is_refused_naming_its_writer() {
        let refused = check_topic(&topic("session:abc")).unwrap_err();
        assert_eq!(
            refused.message(),
            "`session:*` topics are written only by the live polling API"
        );
        let refused = check_topic(&topic("system")).unwrap_err();
        assert_eq!(
            refused.message(),
            "`system:*` topics are written only by the server itself"
        );
    }

    #[test]
    fn server_event_types_are_refused() {
        for name in ["system:status", "presence:update", "connection:established"] {
            assert!(is_server_only(&event_type(name)), "{name}");
        }
        for name in ["order:created", "systems:up", "chat:message"] {
            assert!(!is_server_only(&event_type(name)), "{name}");
            assert!(check_event_type(&event_type(name)).is_ok());
        }
        let refused = check_event_type(&event_type("system:alert")).unwrap_err();
        assert_eq!(
            refused.message(),
            "`system:*` event types are sent only by the server"
        );
    }
}
