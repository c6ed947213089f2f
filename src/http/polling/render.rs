//! Live polling outcomes as HTTP answers: the status of each, its body,
//! and the contract's error for each refusal. The one place that decides
//! them.
//!
//! A rendering is deterministic (tokens are dated from the outcome, not
//! from the clock), so the answer an Idempotency-Key keeps, rendered inside
//! the transaction, is byte for byte the first answer the client got.

use http::StatusCode;
use serde_json::{json, Value};
use warp::reply::Response;

use super::super::error::ApiError;
use crate::auth::TokenKeys;
use crate::config::PublicUrl;
use crate::domain::event::{format_timestamp, TraceId};
use crate::domain::polling::model::{Poll, PollStatus, Session};
use crate::polling::outcome::{
    Accepted, Joined, Outcome, PollResults, PollVoters, Refusal, SessionView, Snapshot,
};
use crate::store::Remembered;

/// A status and a JSON body: what a response, and an answer an
/// Idempotency-Key keeps, are made of.
pub struct Rendered {
    pub status: StatusCode,
    pub body: String,
}

impl Rendered {
    fn json(status: StatusCode, body: Value) -> Self {
        Rendered {
            status,
            body: body.to_string(),
        }
    }

    pub fn response(self) -> Response {
        super::super::request::json_response(self.status, self.body)
    }

    pub fn remembered(&self) -> Remembered {
        super::super::idempotency::remember(self.status, &self.body)
    }
}

/// The contract's error for a refusal.
pub fn refusal(refusal: &Refusal) -> ApiError {
    match refusal {
        Refusal::NotFound(message) => ApiError::not_found(*message),
        Refusal::Forbidden(message) => ApiError::forbidden(message.clone()),
        Refusal::Conflict(message) => ApiError::conflict(message.clone()),
        Refusal::Withheld => ApiError::new(StatusCode::FORBIDDEN, refusal.code(), refusal.message()),
        Refusal::Vote { reason, message } => {
            // Content problems are 422; state problems (the poll's or the
            // participant's) are 409.
            let status = if reason.is_content() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::CONFLICT
            };
            ApiError::new(status, reason.as_str(), message.clone())
        }
        Refusal::Internal(message) => {
            tracing::error!(message, "live polling broke a rule of its own");
            ApiError::internal()
        }
    }
}

/// An outcome as a response: `ok` renders what it did, a refusal its error.
pub fn outcome<T>(outcome: &Outcome<T>, ok: impl FnOnce(&T) -> Rendered, trace_id: &TraceId) -> Response {
    match outcome {
        Ok(value) => ok(value).response(),
        Err(refused) => refusal(refused).into_response(trace_id),
    }
}

/// What an Idempotency-Key keeps of an outcome: the answer of what it did;
/// nothing of a refusal, which is decided afresh on a retry.
pub fn remember<T>(
    render: impl Fn(&T) -> Rendered + Send + Sync + 'static,
) -> crate::store::Remember<Outcome<T>> {
    Box::new(move |outcome: &Outcome<T>| outcome.as_ref().ok().map(|value| render(value).remembered()))
}

/// `201`: the session, with its presenter's token and, with
/// `--public-url`, its join link.
pub fn session_created(session: &Session, keys: &TokenKeys, public_url: Option<&PublicUrl>) -> Rendered {
    let mut body = session.to_json();
    body["presenterToken"] =
        json!(keys.presenter_token(session.id, session.presenter_id, session.created_at));
    if let Some(url) = public_url {
        body["joinUrl"] = json!(url.join_url(&session.slug));
    }
    Rendered::json(StatusCode::CREATED, body)
}

/// `200`: a session after it started or ended.
pub fn session_view(view: &SessionView) -> Rendered {
    let mut body = view.session.to_json();
    body["participantCount"] = json!(view.participant_count);
    Rendered::json(StatusCode::OK, body)
}

/// A poll, as created (`201`) or moved (`200`).
pub fn poll(poll: &Poll, status: StatusCode) -> Rendered {
    Rendered::json(status, poll.to_json())
}

/// `201`: the participant that joined, with its token.
pub fn joined(joined: &Joined, keys: &TokenKeys) -> Rendered {
    let participant = &joined.participant;
    let token = keys.participant_token(joined.session_id, participant.id, participant.joined_at);
    let body = json!({
        "participantId": participant.id.to_string(),
        "sessionId": joined.session_id.to_string(),
        "displayName": participant.display_name,
        "joinedAt": format_timestamp(&participant.joined_at),
        "participantCount": joined.participant_count,
        "participantToken": token,
    });
    Rendered::json(StatusCode::CREATED, body)
}

/// `201`: the vote's confirmation, the payload of its `vote:accepted`.
pub fn accepted(accepted: &Accepted) -> Rendered {
    Rendered {
        status: StatusCode::CREATED,
        body: accepted.confirmation.clone(),
    }
}

/// `200`: the session, its polls with the results its caller may see (and
/// a participant's own votes), where its stream resumes, and whether the
/// server keeps anything (`storage`).
pub fn snapshot(snapshot: &Snapshot, public_url: Option<&PublicUrl>, storage: &str) -> Rendered {
    let polls: Vec<Value> = snapshot
        .polls
        .iter()
        .map(|view| {
            let poll = &view.poll;
            let mut body = poll.to_json();
            // How many answered is shown to everyone, withheld or not.
            body["voteCount"] = json!(poll.vote_count);
            body["resultsVisible"] = json!(view.tally.is_some());
            body["results"] = match &view.tally {
                Some(tally) => tally.results_json(poll),
                None => Value::Null,
            };
            body["myVote"] = match &view.my_vote {
                Some(vote) => {
                    let mut mine = vote.choice.to_json();
                    mine["voteId"] = json!(vote.id.to_string());
                    mine["submittedAt"] = json!(format_timestamp(&vote.submitted_at));
                    mine
                }
                None => Value::Null,
            };
            body
        })
        .collect();
    let mut body = snapshot.session.to_json();
    body["activePollId"] = json!(snapshot
        .polls
        .iter()
        .find(|view| view.poll.status == PollStatus::Open)
        .map(|view| view.poll.id.to_string()));
    body["storage"] = json!(storage);
    body["serverTime"] = json!(format_timestamp(&crate::domain::event::now_millis()));
    body["polls"] = json!(polls);
    body["participantCount"] = json!(snapshot.participant_count);
    body["lastEventId"] = json!(snapshot.last_event_id.to_string());
    if let Some(url) = public_url {
        body["joinUrl"] = json!(url.join_url(&snapshot.session.slug));
    }
    Rendered::json(StatusCode::OK, body)
}

/// `200`: a poll's results.
pub fn results(results: &PollResults) -> Rendered {
    Rendered::json(StatusCode::OK, results.tally.results_json(&results.poll))
}

/// `200`: who voted what on a poll that is not anonymous.
pub fn voters(voters: &PollVoters) -> Rendered {
    let votes: Vec<Value> = voters
        .votes
        .iter()
        .map(|r| {
            json!({
                "voteId": r.vote.id.to_string(),
                "participantId": r.vote.participant_id.to_string(),
                "displayName": r.display_name,
                "voteData": r.vote.choice.to_json(),
                "submittedAt": format_timestamp(&r.vote.submitted_at),
                "clientSubmittedAt": r.vote.client_submitted_at.as_ref().map(format_timestamp),
            })
        })
        .collect();
    let poll = &voters.poll;
    let body =
        json!({ "pollId": poll.id.to_string(), "sessionId": poll.session_id.to_string(), "votes": votes });
    Rendered::json(StatusCode::OK, body)
}
