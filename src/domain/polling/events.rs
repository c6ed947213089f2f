//! The live polling events and their wire form: topic, type and payload
//! exactly as the catalog lists them. Every payload carries `sessionId`;
//! only unicast events on `participant:<id>` carry a participant id.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::ids::{ParticipantId, PollId, SessionId};
use super::model::{CloseReason, Participant, Poll, Session, Vote};
use super::rejection::RejectReason;
use crate::domain::event::{format_timestamp, EventType, NewEvent, TraceId};
use crate::domain::topic::Topic;

#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    SessionCreated(Session),
    SessionStarted {
        session_id: SessionId,
        at: DateTime<Utc>,
        participant_count: i64,
    },
    SessionEnded {
        session_id: SessionId,
        at: DateTime<Utc>,
        final_participant_count: i64,
    },
    PollCreated(Poll),
    PollActivated {
        poll_id: PollId,
        session_id: SessionId,
        question: String,
        at: DateTime<Utc>,
        closes_at: Option<DateTime<Utc>>,
    },
    PollClosed {
        poll_id: PollId,
        session_id: SessionId,
        at: DateTime<Utc>,
        final_vote_count: i64,
        reason: CloseReason,
    },
    /// A poll's withheld results became public; its payload carries them,
    /// filled in by whoever records the event (from the tally then).
    PollResultsRevealed {
        poll_id: PollId,
        session_id: SessionId,
        at: DateTime<Utc>,
        reason: RevealReason,
    },
    /// The presenter hid an open-text answer from the results.
    AnswerHidden {
        poll_id: PollId,
        session_id: SessionId,
        /// As the presenter gave it; it hides every answer with the same
        /// `model::answer_key`.
        answer: String,
        at: DateTime<Utc>,
    },
    /// The voter's own confirmation; its results are filled in by whoever
    /// records the vote, from the tally after it.
    VoteAccepted {
        vote: Vote,
        session_id: SessionId,
    },
    ParticipantJoined {
        participant: Participant,
        at: DateTime<Utc>,
        participant_count: i64,
    },
    ParticipantDisconnected {
        participant_id: ParticipantId,
        session_id: SessionId,
        at: DateTime<Utc>,
        participant_count: i64,
    },
}

/// What made withheld results public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevealReason {
    /// The presenter revealed them.
    Presenter,
    /// The poll closed (`after_vote` and `after_close` polls).
    Closed,
}

impl RevealReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevealReason::Presenter => "presenter",
            RevealReason::Closed => "closed",
        }
    }
}

pub fn session_topic(id: SessionId) -> Topic {
    Topic::from_stored(&format!("session:{id}"))
}

/// The presenter's own topic for a session: results the audience may not
/// see yet. Only a presenter token of the session reads it.
pub fn presenter_topic(id: SessionId) -> Topic {
    Topic::from_stored(&format!("presenter:{id}"))
}

pub fn participant_topic(id: ParticipantId) -> Topic {
    Topic::from_stored(&format!("participant:{id}"))
}

fn ts(at: &DateTime<Utc>) -> String {
    format_timestamp(at)
}

fn event(topic: Topic, event_type: &str, trace_id: &TraceId, payload: &Value) -> NewEvent {
    NewEvent::new(
        topic,
        EventType::from_stored(event_type.to_string()),
        trace_id.clone(),
        payload,
    )
}

impl DomainEvent {
    /// The stored event. `results` are the poll's results after a vote, for
    /// `VoteAccepted` (ignored otherwise).
    pub fn to_new_event(&self, trace_id: &TraceId, results: Option<&Value>) -> NewEvent {
        match self {
            DomainEvent::SessionCreated(session) => {
                let payload = json!({
                    "sessionId": session.id.to_string(),
                    "title": session.title,
                    "slug": session.slug,
                    "presenterId": session.presenter_id.to_string(),
                    "status": session.status.as_str(),
                    "createdAt": ts(&session.created_at),
                });
                event(session_topic(session.id), "session:created", trace_id, &payload)
            }
            DomainEvent::SessionStarted {
                session_id,
                at,
                participant_count,
            } => {
                let payload = json!({
                    "sessionId": session_id.to_string(),
                    "status": "active",
                    "startedAt": ts(at),
                    "participantCount": participant_count,
                });
                event(session_topic(*session_id), "session:started", trace_id, &payload)
            }
            DomainEvent::SessionEnded {
                session_id,
                at,
                final_participant_count,
            } => {
                let payload = json!({
                    "sessionId": session_id.to_string(),
                    "status": "ended",
                    "endedAt": ts(at),
                    "finalParticipantCount": final_participant_count,
                });
                event(session_topic(*session_id), "session:ended", trace_id, &payload)
            }
            DomainEvent::PollCreated(poll) => {
                let mut payload = poll.to_json();
                if let Some(fields) = payload.as_object_mut() {
                    // State, not definition: a new poll has neither.
                    for key in ["status", "resultsRevealed", "closesAt"] {
                        fields.remove(key);
                    }
                }
                event(session_topic(poll.session_id), "poll:created", trace_id, &payload)
            }
            DomainEvent::PollActivated {
                poll_id,
                session_id,
                question,
                at,
                closes_at,
            } => {
                let payload = json!({
                    "pollId": poll_id.to_string(),
                    "sessionId": session_id.to_string(),
                    "question": question,
                    "activatedAt": ts(at),
                    "closesAt": closes_at.as_ref().map(ts),
                });
                event(session_topic(*session_id), "poll:activated", trace_id, &payload)
            }
            DomainEvent::PollClosed {
                poll_id,
                session_id,
                at,
                final_vote_count,
                reason,
            } => {
                let payload = json!({
                    "pollId": poll_id.to_string(),
                    "sessionId": session_id.to_string(),
                    "closedAt": ts(at),
                    "finalVoteCount": final_vote_count,
                    "reason": reason.as_str(),
                });
                event(session_topic(*session_id), "poll:closed", trace_id, &payload)
            }
            DomainEvent::PollResultsRevealed {
                poll_id,
                session_id,
                at,
                reason,
            } => {
                let mut payload = json!({
                    "pollId": poll_id.to_string(),
                    "sessionId": session_id.to_string(),
                    "revealedAt": ts(at),
                    "reason": reason.as_str(),
                });
                merge_results(&mut payload, results);
                event(
                    session_topic(*session_id),
                    "poll:results_revealed",
                    trace_id,
                    &payload,
                )
            }
            DomainEvent::AnswerHidden {
                poll_id,
                session_id,
                answer,
                at,
            } => {
                let payload = json!({
                    "pollId": poll_id.to_string(),
                    "sessionId": session_id.to_string(),
                    "answer": answer,
                    "hiddenAt": ts(at),
                });
                event(
                    session_topic(*session_id),
                    "poll:answer_hidden",
                    trace_id,
                    &payload,
                )
            }
            DomainEvent::VoteAccepted { vote, session_id } => {
                let payload = vote_confirmation(vote, *session_id, results);
                event(
                    participant_topic(vote.participant_id),
                    "vote:accepted",
                    trace_id,
                    &payload,
                )
            }
            DomainEvent::ParticipantJoined {
                participant,
                at,
                participant_count,
            } => {
                let payload = json!({
                    "participantId": participant.id.to_string(),
                    "sessionId": participant.session_id.to_string(),
                    "displayName": participant.display_name,
                    "joinedAt": ts(at),
                    "participantCount": participant_count,
                });
                event(
                    session_topic(participant.session_id),
                    "participant:joined",
                    trace_id,
                    &payload,
                )
            }
            DomainEvent::ParticipantDisconnected {
                participant_id,
                session_id,
                at,
                participant_count,
            } => {
                let payload = json!({
                    "participantId": participant_id.to_string(),
                    "sessionId": session_id.to_string(),
                    "disconnectedAt": ts(at),
                    "participantCount": participant_count,
                });
                event(
                    session_topic(*session_id),
                    "participant:disconnected",
                    trace_id,
                    &payload,
                )
            }
        }
    }
}

/// The unicast `vote:accepted` payload (also the vote's HTTP response).
pub fn vote_confirmation(vote: &Vote, session_id: SessionId, results: Option<&Value>) -> Value {
    let mut payload = json!({
        "voteId": vote.id.to_string(),
        "pollId": vote.poll_id.to_string(),
        "sessionId": session_id.to_string(),
        "participantId": vote.participant_id.to_string(),
        "submittedAt": ts(&vote.submitted_at),
    });
    merge_results(&mut payload, results);
    payload
}

/// The broadcast `vote:accepted`: results only, never who voted. `latest`
/// is the newest vote they include. Public results go to the session
/// topic; withheld ones go whole to the presenter's topic, and the session
/// topic hears only how many have answered (`resultsWithheld`).
pub fn results_broadcast(
    poll: &Poll,
    results: &Value,
    latest: Option<(String, DateTime<Utc>)>,
    trace_id: &TraceId,
) -> Vec<NewEvent> {
    let header = json!({
        "voteId": latest.as_ref().map(|(id, _)| id.clone()),
        "pollId": poll.id.to_string(),
        "sessionId": poll.session_id.to_string(),
        "submittedAt": latest.as_ref().map(|(_, at)| ts(at)),
    });
    let mut full = header.clone();
    merge_results(&mut full, Some(results));
    if poll.results_public() {
        return vec![event(
            session_topic(poll.session_id),
            "vote:accepted",
            trace_id,
            &full,
        )];
    }
    let mut count_only = header;
    count_only["currentVoteCount"] = results.get("currentVoteCount").cloned().unwrap_or(Value::Null);
    count_only["resultsWithheld"] = Value::Bool(true);
    vec![
        event(presenter_topic(poll.session_id), "vote:accepted", trace_id, &full),
        event(
            session_topic(poll.session_id),
            "vote:accepted",
            trace_id,
            &count_only,
        ),
    ]
}

fn merge_results(payload: &mut Value, results: Option<&Value>) {
    let (Some(target), Some(Value::Object(fields))) = (payload.as_object_mut(), results) else {
        return;
    };
    for key in [
        "currentVoteCount",
        "voteBreakdown",
        "averageRating",
        "ratingDistribution",
        "textResponses",
        "textGroups",
    ] {
        if let Some(value) = fields.get(key) {
            target.insert(key.to_string(), value.clone());
        }
    }
}

/// The unicast `vote:rejected` event.
pub fn vote_rejected(
    poll_id: PollId,
    session_id: SessionId,
    participant_id: ParticipantId,
    reason: RejectReason,
    message: &str,
    at: DateTime<Utc>,
    trace_id: &TraceId,
) -> NewEvent {
    let payload = json!({
        "pollId": poll_id.to_string(),
        "sessionId": session_id.to_string(),
        "participantId": participant_id.to_string(),
        "reason": reason.as_str(),
        "message": message,
        "timestamp": ts(&at),
    });
    event(
        participant_topic(participant_id),
        "vote:rejected",
        trace_id,
        &payload,
    )
}

/// The unicast `error:general` event, for a participant's failed request
/// that is not a vote rejection.
pub fn error_general(
    participant_id: ParticipantId,
    session_id: SessionId,
    code: &str,
    message: &str,
    context: Value,
    at: DateTime<Utc>,
    trace_id: &TraceId,
) -> NewEvent {
    let payload = json!({
        "sessionId": session_id.to_string(),
        "errorCode": code,
        "message": message,
        "timestamp": ts(&at),
        "requestContext": context,
    });
    event(
        participant_topic(participant_id),
        "error:general",
        trace_id,
        &payload,
    )
}
