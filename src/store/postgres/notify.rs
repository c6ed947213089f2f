//! What the NOTIFYs carry. The writer ends every batch with a notice on
//! [`NOTIFY_CHANNEL`] naming the new head and the node that wrote it; the
//! cluster bus ([`BUS_CHANNEL`]) carries requests and replies between
//! nodes. Both are wake-ups and messages, never the truth: the table is.

use crate::domain::event::EventId;

/// The NOTIFY channel carrying the highest committed id.
pub const NOTIFY_CHANNEL: &str = "pollcast_events";
/// The NOTIFY channel of the cluster bus: requests and replies between nodes.
pub const BUS_CHANNEL: &str = "pollcast_bus";

/// The notice of a commit: its new head and the node (`origin`) that made it.
pub fn commit_notice(head: EventId, origin: &str) -> String {
    format!("{head} {origin}")
}

/// The head a commit NOTIFY announces ("<head> <origin>"), unless this
/// node (`origin`) sent it.
pub fn other_nodes_head(payload: &str, origin: &str) -> Option<EventId> {
    let (head, from) = payload.split_once(' ').unwrap_or((payload, ""));
    if from == origin {
        return None;
    }
    head.parse().ok()
}

/// Raises the known head to `seen`; whether it moved (a watch sender's
/// `send_if_modified` wakes its readers only then).
pub fn raise(known: &mut EventId, seen: EventId) -> bool {
    if seen > *known {
        *known = seen;
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::other_nodes_head;

    #[test]
    fn a_commit_notice_counts_only_when_another_node_sent_it() {
        assert_eq!(other_nodes_head("42 abc", "def"), Some(42));
        assert_eq!(other_nodes_head("42 abc", "abc"), None);
        // A node that names no origin (an older version) still wakes us.
        assert_eq!(other_nodes_head("42", "abc"), Some(42));
        assert_eq!(other_nodes_head("junk def", "abc"), None);
    }
}
