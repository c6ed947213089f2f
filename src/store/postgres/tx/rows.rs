//! Rows of the live polling tables, and the columns that give them: how
//! a session, a poll with its options, a participant or a vote's choice
//! comes out of Postgres.

use std::collections::BTreeMap;

use serde_json::Value;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::domain::polling::ids::{OptionId, ParticipantId, PollId, PresenterId, SessionId};
use crate::domain::polling::model::{
    Choice, Participant, Poll, PollKind, PollOption, PollStatus, ResultsVisibility, Session, SessionStatus,
};
use crate::store::error::StoreError;

type R<T> = Result<T, StoreError>;

pub const SESSION_COLUMNS: &str = "id, slug, title, presenter_id, status, created_at, started_at, ended_at";
pub const POLL_COLUMNS: &str =
    "id, session_id, question, is_anonymous, poll_type, allow_multiple, min_rating, \
     max_rating, sequence_order, status, created_at, activated_at, closed_at, vote_count, \
     results_visibility, results_revealed_at, closes_at";

pub const OPTIONS_OF: &str = "SELECT poll_id, id, option_text, sequence_order FROM poll_options
      WHERE poll_id = ANY($1) ORDER BY poll_id, sequence_order";

/// Rows of [`OPTIONS_OF`], grouped by poll.
pub fn options_by_poll(rows: Vec<Row>) -> BTreeMap<Uuid, Vec<PollOption>> {
    let mut by_poll: BTreeMap<Uuid, Vec<PollOption>> = BTreeMap::new();
    for row in rows {
        by_poll.entry(row.get(0)).or_default().push(PollOption {
            id: OptionId(row.get(1)),
            text: row.get(2),
            sequence_order: row.get(3),
        });
    }
    by_poll
}

pub fn corrupt(what: &str) -> StoreError {
    StoreError::internal(format!("unexpected {what} in the database"))
}

pub fn session_from_row(row: &Row) -> R<Session> {
    Ok(Session {
        id: SessionId(row.get(0)),
        slug: row.get(1),
        title: row.get(2),
        presenter_id: PresenterId(row.get(3)),
        status: SessionStatus::parse(row.get(4)).ok_or_else(|| corrupt("session status"))?,
        created_at: row.get(5),
        started_at: row.get(6),
        ended_at: row.get(7),
    })
}

pub fn poll_from_row(row: &Row, options: Vec<PollOption>) -> R<Poll> {
    let kind = match row.get::<_, &str>(4) {
        "multiple_choice" => PollKind::MultipleChoice {
            options,
            allow_multiple: row.get(5),
        },
        "rating_scale" => PollKind::RatingScale {
            min: row
                .get::<_, Option<i32>>(6)
                .ok_or_else(|| corrupt("rating bounds"))?,
            max: row
                .get::<_, Option<i32>>(7)
                .ok_or_else(|| corrupt("rating bounds"))?,
        },
        "open_text" => PollKind::OpenText,
        _ => return Err(corrupt("poll type")),
    };
    Ok(Poll {
        id: PollId(row.get(0)),
        session_id: SessionId(row.get(1)),
        question: row.get(2),
        is_anonymous: row.get(3),
        kind,
        sequence_order: row.get(8),
        status: PollStatus::parse(row.get(9)).ok_or_else(|| corrupt("poll status"))?,
        created_at: row.get(10),
        activated_at: row.get(11),
        closed_at: row.get(12),
        vote_count: row.get(13),
        results_visibility: ResultsVisibility::parse(row.get(14))
            .ok_or_else(|| corrupt("results visibility"))?,
        results_revealed_at: row.get(15),
        closes_at: row.get(16),
    })
}

pub fn participant_from_row(row: &Row) -> Participant {
    Participant {
        id: ParticipantId(row.get(0)),
        session_id: SessionId(row.get(1)),
        display_name: row.get(2),
        joined_at: row.get(3),
        present: row.get(4),
    }
}

/// Reads back a stored choice (written by `Choice::to_json`).
pub fn choice_from_json(value: &Value) -> R<Choice> {
    if let Some(ids) = value.get("selectedOptionIds").and_then(Value::as_array) {
        let ids = ids
            .iter()
            .map(|v| {
                v.as_str()
                    .and_then(|s| OptionId::parse(s).ok())
                    .ok_or_else(|| corrupt("choice"))
            })
            .collect::<R<Vec<_>>>()?;
        return Ok(Choice::Options(ids));
    }
    if let Some(value) = value.get("ratingValue").and_then(Value::as_i64) {
        return Ok(Choice::Rating(value as i32));
    }
    if let Some(text) = value.get("textResponse").and_then(Value::as_str) {
        return Ok(Choice::Text(text.to_string()));
    }
    Err(corrupt("choice"))
}
