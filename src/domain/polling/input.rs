//! Parsing what clients send into valid domain values ("parse, don't
//! validate"): a poll definition, a session title, a display name, and a
//! vote's data checked against its poll.

use serde::Deserialize;
use serde_json::Value;

use super::ids::OptionId;
use super::model::{Choice, Poll, PollKind, PollOption, ResultsVisibility};
use super::rejection::RejectReason;

pub const MAX_TITLE: usize = 200;
pub const MAX_QUESTION: usize = 500;
pub const MAX_OPTION_TEXT: usize = 200;
pub const MIN_OPTIONS: usize = 2;
pub const MAX_OPTIONS: usize = 20;
pub const MAX_TEXT_ANSWER: usize = 500;
pub const MAX_DISPLAY_NAME: usize = 80;
/// Rating scales stay small enough to show as a distribution.
pub const RATING_BOUNDS: (i32, i32) = (-100, 100);
pub const MAX_RATING_STEPS: i32 = 100;

/// How long a timed poll stays open: 5 seconds to an hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollDuration(u32);

impl PollDuration {
    pub const MIN_SECONDS: u32 = 5;
    pub const MAX_SECONDS: u32 = 3600;

    pub fn parse(seconds: i64) -> Result<Self, FieldError> {
        let range = Self::MIN_SECONDS as i64..=Self::MAX_SECONDS as i64;
        if range.contains(&seconds) {
            Ok(PollDuration(seconds as u32))
        } else {
            Err(field_error(
                "durationSeconds",
                format!("must be {} to {} seconds", Self::MIN_SECONDS, Self::MAX_SECONDS),
            ))
        }
    }

    pub fn seconds(self) -> u32 {
        self.0
    }

    /// When a poll opened at `at` closes.
    pub fn after(self, at: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        at + chrono::Duration::seconds(self.0 as i64)
    }
}

/// A field a client got wrong; shown as `"<field>: <message>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn field_error(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

/// Trims and checks a required text: 1..=max characters after trimming.
pub fn required_text(field: &'static str, raw: &str, max: usize) -> Result<String, FieldError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(field_error(field, "must not be empty"));
    }
    if text.chars().count() > max {
        return Err(field_error(field, format!("must be at most {max} characters")));
    }
    Ok(text.to_string())
}

/// An optional display name; blank means none.
pub fn display_name(raw: Option<&str>) -> Result<Option<String>, FieldError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(name) => required_text("displayName", name, MAX_DISPLAY_NAME).map(Some),
    }
}

/// The body of `POST /v1/sessions/{id}/polls`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PollInput {
    pub question: String,
    pub poll_type: String,
    #[serde(default)]
    pub options: Option<Vec<String>>,
    #[serde(default)]
    pub allow_multiple: Option<bool>,
    #[serde(default)]
    pub is_anonymous: Option<bool>,
    #[serde(default)]
    pub min_rating: Option<i32>,
    #[serde(default)]
    pub max_rating: Option<i32>,
    #[serde(default)]
    pub results_visibility: Option<String>,
}

/// A valid poll definition, before it has ids and a place in its session.
#[derive(Debug, Clone, PartialEq)]
pub struct PollDraft {
    pub question: String,
    pub kind: PollKind,
    pub is_anonymous: bool,
    pub results_visibility: ResultsVisibility,
}

impl PollDraft {
    pub fn parse(input: PollInput) -> Result<Self, FieldError> {
        let question = required_text("question", &input.question, MAX_QUESTION)?;
        let kind = match input.poll_type.as_str() {
            "multiple_choice" => {
                if input.min_rating.is_some() || input.max_rating.is_some() {
                    return Err(field_error("minRating", "only rating_scale polls have ratings"));
                }
                let texts = input
                    .options
                    .ok_or_else(|| field_error("options", "a multiple_choice poll needs options"))?;
                if !(MIN_OPTIONS..=MAX_OPTIONS).contains(&texts.len()) {
                    return Err(field_error(
                        "options",
                        format!(
                            "must have {MIN_OPTIONS} to {MAX_OPTIONS} options, not {}",
                            texts.len()
                        ),
                    ));
                }
                let options = texts
                    .iter()
                    .enumerate()
                    .map(|(i, text)| {
                        Ok(PollOption {
                            id: OptionId::new(),
                            text: required_text("options", text, MAX_OPTION_TEXT)?,
                            sequence_order: i as i32 + 1,
                        })
                    })
                    .collect::<Result<Vec<_>, FieldError>>()?;
                PollKind::MultipleChoice {
                    options,
                    allow_multiple: input.allow_multiple.unwrap_or(false),
                }
            }
            "rating_scale" => {
                no_options(&input.options)?;
                no_multiple(input.allow_multiple)?;
                let min = input.min_rating.unwrap_or(1);
                let max = input.max_rating.unwrap_or(5);
                let (lowest, highest) = RATING_BOUNDS;
                if !(lowest..=highest).contains(&min) || !(lowest..=highest).contains(&max) {
                    return Err(field_error(
                        "minRating",
                        format!("ratings must lie in {lowest}..={highest}"),
                    ));
                }
                if min >= max {
                    return Err(field_error("minRating", "must be less than maxRating"));
                }
                if max - min > MAX_RATING_STEPS {
                    return Err(field_error(
                        "maxRating",
                        format!("a scale has at most {MAX_RATING_STEPS} steps"),
                    ));
                }
                PollKind::RatingScale { min, max }
            }
            "open_text" => {
                no_options(&input.options)?;
                no_multiple(input.allow_multiple)?;
                if input.min_rating.is_some() || input.max_rating.is_some() {
                    return Err(field_error("minRating", "only rating_scale polls have ratings"));
                }
                PollKind::OpenText
            }
            other => {
                let shown: String = other.chars().take(40).collect();
                return Err(field_error(
                    "pollType",
                    format!("{shown:?} is not one of multiple_choice, rating_scale, open_text"),
                ));
            }
        };
        let results_visibility = match input.results_visibility.as_deref() {
            Some(raw) => ResultsVisibility::parse(raw).ok_or_else(|| {
                let shown: String = raw.chars().take(40).collect();
                field_error(
                    "resultsVisibility",
                    format!("{shown:?} is not one of always, after_vote, after_close, manual"),
                )
            })?,
            // Open-text answers are the audience's own words: each
            // participant sees only its own until the presenter shows them.
            None if kind == PollKind::OpenText => ResultsVisibility::Manual,
            None => ResultsVisibility::Always,
        };
        Ok(PollDraft {
            question,
            kind,
            results_visibility,
            // Anonymous unless the presenter says otherwise: the safer default.
            is_anonymous: input.is_anonymous.unwrap_or(true),
        })
    }
}

fn no_options(options: &Option<Vec<String>>) -> Result<(), FieldError> {
    match options {
        Some(list) if !list.is_empty() => {
            Err(field_error("options", "only multiple_choice polls have options"))
        }
        _ => Ok(()),
    }
}

fn no_multiple(allow_multiple: Option<bool>) -> Result<(), FieldError> {
    match allow_multiple {
        Some(true) => Err(field_error(
            "allowMultiple",
            "only multiple_choice polls allow several choices",
        )),
        _ => Ok(()),
    }
}

/// Checks a vote's `voteData` against its poll. The reason says which
/// content rule failed (`invalid_option`, `invalid_rating`, `invalid_text`).
pub fn parse_choice(poll: &Poll, vote_data: &Value) -> Result<Choice, (RejectReason, String)> {
    match &poll.kind {
        PollKind::MultipleChoice {
            options,
            allow_multiple,
        } => {
            let invalid = |m: &str| (RejectReason::InvalidOption, m.to_string());
            let raw = vote_data
                .get("selectedOptionIds")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("voteData.selectedOptionIds must be an array of option ids"))?;
            if raw.is_empty() {
                return Err(invalid("select at least one option"));
            }
            if raw.len() > 1 && !allow_multiple {
                return Err(invalid("this poll allows a single option"));
            }
            let mut chosen = Vec::with_capacity(raw.len());
            for item in raw {
                let id = item
                    .as_str()
                    .and_then(|s| OptionId::parse(s).ok())
                    .filter(|id| options.iter().any(|o| o.id == *id))
                    .ok_or_else(|| invalid("an option id does not belong to this poll"))?;
                if chosen.contains(&id) {
                    return Err(invalid("an option is selected twice"));
                }
                chosen.push(id);
            }
            Ok(Choice::Options(chosen))
        }
        PollKind::RatingScale { min, max } => {
            let value = vote_data
                .get("ratingValue")
                .and_then(Value::as_i64)
                .filter(|v| (*min as i64..=*max as i64).contains(v))
                .ok_or_else(|| {
                    (
                        RejectReason::InvalidRating,
                        format!("voteData.ratingValue must be an integer from {min} to {max}"),
                    )
                })?;
            Ok(Choice::Rating(value as i32))
        }
        PollKind::OpenText => {
            let text = vote_data
                .get("textResponse")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|t| !t.is_empty() && t.chars().count() <= MAX_TEXT_ANSWER)
                .ok_or_else(|| {
                    (
                        RejectReason::InvalidText,
                        format!("voteData.textResponse must be 1 to {MAX_TEXT_ANSWER} characters"),
                    )
                })?;
            Ok(Choice::Text(text.to_string()))
        }
    }
}
