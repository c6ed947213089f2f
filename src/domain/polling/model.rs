//! The live polling model: sessions, polls, participants, votes, and the
//! running tally of a poll. Plain data; the rules are in `decide`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::ids::{OptionId, ParticipantId, PollId, PresenterId, SessionId, VoteId};
use crate::domain::event::format_timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Draft,
    Active,
    Ended,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Draft => "draft",
            SessionStatus::Active => "active",
            SessionStatus::Ended => "ended",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "draft" => SessionStatus::Draft,
            "active" => SessionStatus::Active,
            "ended" => SessionStatus::Ended,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: SessionId,
    pub title: String,
    /// The short join code participants type.
    pub slug: String,
    pub presenter_id: PresenterId,
    pub status: SessionStatus,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

impl Session {
    /// The session's fields as clients see them.
    pub fn to_json(&self) -> Value {
        json!({
            "sessionId": self.id.to_string(),
            "title": self.title,
            "slug": self.slug,
            "presenterId": self.presenter_id.to_string(),
            "status": self.status.as_str(),
            "createdAt": format_timestamp(&self.created_at),
            "startedAt": self.started_at.as_ref().map(format_timestamp),
            "endedAt": self.ended_at.as_ref().map(format_timestamp),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStatus {
    Draft,
    Open,
    Closed,
}

impl PollStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PollStatus::Draft => "draft",
            PollStatus::Open => "open",
            PollStatus::Closed => "closed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "draft" => PollStatus::Draft,
            "open" => PollStatus::Open,
            "closed" => PollStatus::Closed,
            _ => return None,
        })
    }
}

/// Who may see a poll's results while it runs. The presenter always sees
/// them; everyone else only once they are public (or, for `AfterVote`,
/// once they voted). The server enforces it: withheld results are never
/// written to a stream, snapshot or results answer the viewer can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultsVisibility {
    /// Public from the first vote.
    Always,
    /// A participant sees them once they voted; everyone at the close.
    AfterVote,
    /// Public once the poll closes.
    AfterClose,
    /// Public when the presenter reveals them.
    Manual,
}

impl ResultsVisibility {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultsVisibility::Always => "always",
            ResultsVisibility::AfterVote => "after_vote",
            ResultsVisibility::AfterClose => "after_close",
            ResultsVisibility::Manual => "manual",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "always" => ResultsVisibility::Always,
            "after_vote" => ResultsVisibility::AfterVote,
            "after_close" => ResultsVisibility::AfterClose,
            "manual" => ResultsVisibility::Manual,
            _ => return None,
        })
    }

    /// Whether the close of a poll is what makes its results public.
    pub fn revealed_at_close(self) -> bool {
        matches!(self, ResultsVisibility::AfterVote | ResultsVisibility::AfterClose)
    }
}

/// Who is looking at a poll's results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    /// The session's presenter: sees everything.
    Presenter,
    /// A participant of the session, and whether it voted on the poll.
    Participant { voted: bool },
    /// Anyone else: a screen, a watcher without a token.
    Audience,
}

/// Why a poll closed, as `poll:closed` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The presenter closed it.
    Presenter,
    /// The presenter opened another poll.
    Replaced,
    /// The session ended while it was open.
    SessionEnded,
    /// Its timer ran out.
    Timer,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Presenter => "presenter",
            CloseReason::Replaced => "replaced",
            CloseReason::SessionEnded => "session_ended",
            CloseReason::Timer => "timer",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PollOption {
    pub id: OptionId,
    pub text: String,
    pub sequence_order: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PollKind {
    MultipleChoice {
        options: Vec<PollOption>,
        allow_multiple: bool,
    },
    RatingScale {
        min: i32,
        max: i32,
    },
    OpenText,
}

impl PollKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            PollKind::MultipleChoice { .. } => "multiple_choice",
            PollKind::RatingScale { .. } => "rating_scale",
            PollKind::OpenText => "open_text",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Poll {
    pub id: PollId,
    pub session_id: SessionId,
    pub question: String,
    pub kind: PollKind,
    pub is_anonymous: bool,
    /// Position of the poll within its session, from 1.
    pub sequence_order: i32,
    pub status: PollStatus,
    pub created_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    /// Accepted votes so far (kept with the poll, in the vote's transaction).
    pub vote_count: i64,
    pub results_visibility: ResultsVisibility,
    /// When the results became public, if they are withheld until then
    /// (`None` for `Always`: public from the start).
    pub results_revealed_at: Option<DateTime<Utc>>,
    /// When a timed poll closes by itself (set on activation).
    pub closes_at: Option<DateTime<Utc>>,
}

impl Poll {
    /// The `poll:created` payload fields, which are also the poll resource.
    pub fn to_json(&self) -> Value {
        let (options, allow_multiple, min, max) = match &self.kind {
            PollKind::MultipleChoice {
                options,
                allow_multiple,
            } => (
                options
                    .iter()
                    .map(|o| {
                        json!({
                            "optionId": o.id.to_string(),
                            "optionText": o.text,
                            "sequenceOrder": o.sequence_order,
                        })
                    })
                    .collect::<Vec<_>>(),
                *allow_multiple,
                None,
                None,
            ),
            PollKind::RatingScale { min, max } => (Vec::new(), false, Some(*min), Some(*max)),
            PollKind::OpenText => (Vec::new(), false, None, None),
        };
        json!({
            "pollId": self.id.to_string(),
            "sessionId": self.session_id.to_string(),
            "question": self.question,
            "pollType": self.kind.type_name(),
            "allowMultiple": allow_multiple,
            "isAnonymous": self.is_anonymous,
            "options": options,
            "minRating": min,
            "maxRating": max,
            "sequenceOrder": self.sequence_order,
            "status": self.status.as_str(),
            "createdAt": format_timestamp(&self.created_at),
            "resultsVisibility": self.results_visibility.as_str(),
            "resultsRevealed": self.results_public(),
            "closesAt": self.closes_at.as_ref().map(format_timestamp),
        })
    }

    /// Whether everyone may see the results now.
    pub fn results_public(&self) -> bool {
        self.results_visibility == ResultsVisibility::Always || self.results_revealed_at.is_some()
    }

    /// Whether `viewer` may see the results now.
    pub fn results_visible_to(&self, viewer: Viewer) -> bool {
        match viewer {
            Viewer::Presenter => true,
            Viewer::Participant { voted: true }
                if self.results_visibility == ResultsVisibility::AfterVote =>
            {
                true
            }
            Viewer::Participant { .. } | Viewer::Audience => self.results_public(),
        }
    }

    pub fn option_ids(&self) -> Vec<OptionId> {
        match &self.kind {
            PollKind::MultipleChoice { options, .. } => options.iter().map(|o| o.id).collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Participant {
    pub id: ParticipantId,
    pub session_id: SessionId,
    pub display_name: Option<String>,
    pub joined_at: DateTime<Utc>,
    /// Counted in `participantCount`: from joining until its last stream
    /// has been closed for longer than the grace period.
    pub present: bool,
}

/// What a participant chose, already checked against the poll.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    Options(Vec<OptionId>),
    Rating(i32),
    Text(String),
}

impl Choice {
    pub fn to_json(&self) -> Value {
        match self {
            Choice::Options(ids) => {
                json!({ "selectedOptionIds": ids.iter().map(|i| i.to_string()).collect::<Vec<_>>() })
            }
            Choice::Rating(value) => json!({ "ratingValue": value }),
            Choice::Text(text) => json!({ "textResponse": text }),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vote {
    pub id: VoteId,
    pub poll_id: PollId,
    pub participant_id: ParticipantId,
    pub choice: Choice,
    /// Server time of acceptance (the record's time).
    pub submitted_at: DateTime<Utc>,
    /// What the client said, kept for the presenter's audit only.
    pub client_submitted_at: Option<DateTime<Utc>>,
}

/// The aggregates of one poll: what results show, never who voted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub vote_count: i64,
    /// Votes per option, for every option of the poll (zero included).
    pub option_counts: Vec<(OptionId, i64)>,
    /// Votes per rating value, for every value of the scale.
    pub rating_counts: BTreeMap<i32, i64>,
    /// Open-text answers, oldest first, without their authors.
    pub texts: Vec<String>,
    /// Open-text answers grouped by [`answer_key`], most frequent first.
    pub text_groups: Vec<TextGroup>,
}

/// Open-text answers that say the same thing, as [`answer_key`] decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextGroup {
    /// The spelling of the group's first answer.
    pub text: String,
    pub count: i64,
}

/// What makes two answers "the same": case and runs of whitespace do not
/// count ("Focus", " focus ", "FOCUS" are one answer). Postgres groups
/// with `lower(regexp_replace(…, '\s+', ' ', 'g'))`, the same rule.
pub fn answer_key(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Groups answers given oldest first: at most `limit` groups, the most
/// frequent first, ties in the order they were first given.
pub fn group_answers<'a>(answers: impl IntoIterator<Item = &'a str>, limit: usize) -> Vec<TextGroup> {
    let mut groups: Vec<TextGroup> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for answer in answers {
        match index.entry(answer_key(answer)) {
            std::collections::hash_map::Entry::Occupied(at) => groups[*at.get()].count += 1,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(groups.len());
                groups.push(TextGroup {
                    text: answer.to_string(),
                    count: 1,
                });
            }
        }
    }
    // Stable: equal counts keep the order of first appearance.
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    groups.truncate(limit);
    groups
}

impl Tally {
    /// The results fields of `vote:accepted` and of `GET …/results`.
    pub fn results_json(&self, poll: &Poll) -> Value {
        let percentage = |n: i64, of: i64| {
            if of == 0 {
                0.0
            } else {
                ((n as f64) * 10_000.0 / (of as f64)).round() / 100.0
            }
        };
        // Shares of the voters, not of the selections: with several choices
        // allowed, "60%" still means "60% of the people who voted".
        let breakdown: Vec<Value> = self
            .option_counts
            .iter()
            .map(|(id, n)| json!({ "optionId": id.to_string(), "voteCount": n, "percentage": percentage(*n, self.vote_count) }))
            .collect();
        let rated: i64 = self.rating_counts.values().sum();
        let average = (rated > 0).then(|| {
            let sum: i64 = self.rating_counts.iter().map(|(v, n)| *v as i64 * n).sum();
            ((sum as f64 / rated as f64) * 100.0).round() / 100.0
        });
        let distribution: serde_json::Map<String, Value> = self
            .rating_counts
            .iter()
            .map(|(v, n)| (v.to_string(), json!(n)))
            .collect();
        let mut results = json!({
            "pollId": poll.id.to_string(),
            "sessionId": poll.session_id.to_string(),
            "pollType": poll.kind.type_name(),
            "currentVoteCount": self.vote_count,
            "voteBreakdown": breakdown,
            "averageRating": average,
            "ratingDistribution": if matches!(poll.kind, PollKind::RatingScale { .. }) { Value::Object(distribution) } else { Value::Null },
        });
        if matches!(poll.kind, PollKind::OpenText) {
            results["textResponses"] = json!(self.texts);
            results["textGroups"] = self
                .text_groups
                .iter()
                .map(|g| json!({ "text": g.text, "count": g.count }))
                .collect();
        }
        results
    }
}
