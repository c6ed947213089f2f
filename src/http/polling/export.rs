//! `GET /v1/sessions/{sessionId}/export.csv` and `/export.json`: a
//! session's results for its presenter to keep: every poll, its option
//! counts and shares, rating averages and distributions, open-text answers
//! grouped with counts, and when each poll opened and closed. No voter is
//! named (the voters of a non-anonymous poll stay with `listVotes`).

use http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use serde_json::{json, Value};
use warp::reply::Response;

use super::super::request::RequestContext;
use super::super::routes::ExportFormat;
use super::super::state::AppState;
use super::parse::presenter_of_session;
use super::render;
use crate::domain::event::format_timestamp;
use crate::domain::polling::model::{Poll, PollKind, Tally};
use crate::polling::outcome::SessionExport;
use crate::polling::queries::GetExport;
use crate::polling::Stamp;

/// `GET /v1/sessions/{sessionId}/export.csv|json`
pub async fn export(
    raw_session: String,
    format: ExportFormat,
    state: AppState,
    ctx: RequestContext,
) -> Response {
    let result = async {
        let caller = ctx.caller(&state.keys, true)?;
        let (session_id, presenter) = presenter_of_session(&caller, &raw_session)?;
        let query = GetExport {
            session_id,
            presenter,
            stamp: Stamp::new(ctx.trace_id.clone()),
        };
        let export = match state.polling.query(query).await? {
            Ok(export) => export,
            Err(refusal) => return Err(render::refusal(&refusal)),
        };
        Ok(match format {
            ExportFormat::Json => download(&export, "json", "application/json", as_json(&export).to_string()),
            ExportFormat::Csv => download(&export, "csv", "text/csv; charset=utf-8", as_csv(&export)),
        })
    }
    .await;
    result.unwrap_or_else(|error| error.into_response(&ctx.trace_id))
}

fn download(export: &SessionExport, extension: &str, content_type: &'static str, body: String) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The join code is letters and digits only: safe in a header.
    let name = format!("pollcast-{}.{extension}", export.session.slug);
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    response
}

/// The export as one JSON document.
pub fn as_json(export: &SessionExport) -> Value {
    let polls: Vec<Value> = export
        .polls
        .iter()
        .map(|p| {
            let mut poll = p.poll.to_json();
            poll["activatedAt"] = json!(p.poll.activated_at.as_ref().map(format_timestamp));
            poll["closedAt"] = json!(p.poll.closed_at.as_ref().map(format_timestamp));
            poll["results"] = p.tally.results_json(&p.poll);
            poll
        })
        .collect();
    let mut body = export.session.to_json();
    body["participantCount"] = json!(export.participant_count);
    body["exportedAt"] = json!(format_timestamp(&export.exported_at));
    body["polls"] = json!(polls);
    body
}

const CSV_HEADER: [&str; 11] = [
    "poll",
    "question",
    "type",
    "status",
    "opened_at",
    "closed_at",
    "votes",
    "answer",
    "count",
    "percent",
    "average_rating",
];

/// The export as CSV: one row per option, rating value or grouped text
/// answer of each poll (one row with an empty answer for a poll without
/// any), so a spreadsheet can sort and chart it.
pub fn as_csv(export: &SessionExport) -> String {
    let mut out = String::new();
    push_row(&mut out, CSV_HEADER.iter().map(|s| s.to_string()));
    for p in &export.polls {
        let (poll, tally) = (&p.poll, &p.tally);
        let average = tally
            .results_json(poll)
            .get("averageRating")
            .and_then(Value::as_f64)
            .map(|a| a.to_string())
            .unwrap_or_default();
        let rows = answer_rows(poll, tally);
        let rows = if rows.is_empty() {
            vec![(String::new(), String::new(), String::new())]
        } else {
            rows
        };
        for (answer, count, percent) in rows {
            push_row(
                &mut out,
                [
                    poll.sequence_order.to_string(),
                    poll.question.clone(),
                    poll.kind.type_name().to_string(),
                    poll.status.as_str().to_string(),
                    poll.activated_at
                        .as_ref()
                        .map(format_timestamp)
                        .unwrap_or_default(),
                    poll.closed_at.as_ref().map(format_timestamp).unwrap_or_default(),
                    tally.vote_count.to_string(),
                    answer,
                    count,
                    percent,
                    average.clone(),
                ]
                .into_iter(),
            );
        }
    }
    out
}

/// `(answer, count, percent of voters)` for each row of a poll.
fn answer_rows(poll: &Poll, tally: &Tally) -> Vec<(String, String, String)> {
    let share = |n: i64| {
        if tally.vote_count == 0 {
            "0".to_string()
        } else {
            format!("{:.2}", n as f64 * 100.0 / tally.vote_count as f64)
        }
    };
    match &poll.kind {
        PollKind::MultipleChoice { options, .. } => options
            .iter()
            .map(|o| {
                let n = tally
                    .option_counts
                    .iter()
                    .find(|(id, _)| *id == o.id)
                    .map_or(0, |(_, n)| *n);
                (o.text.clone(), n.to_string(), share(n))
            })
            .collect(),
        PollKind::RatingScale { .. } => tally
            .rating_counts
            .iter()
            .map(|(value, n)| (value.to_string(), n.to_string(), share(*n)))
            .collect(),
        PollKind::OpenText => tally
            .text_groups
            .iter()
            .map(|g| (g.text.clone(), g.count.to_string(), share(g.count)))
            .collect(),
    }
}

/// One CSV line (RFC 4180: fields with a comma, quote or line break are
/// quoted, quotes doubled). A field a spreadsheet would run as a formula
/// (`=`, `+`, `-`, `@`, tab, CR first) gets a leading `'`: answers come
/// from the audience.
fn push_row(out: &mut String, fields: impl Iterator<Item = String>) {
    for (n, field) in fields.enumerate() {
        if n > 0 {
            out.push(',');
        }
        let field = match field.chars().next() {
            Some('=' | '+' | '-' | '@' | '\t' | '\r') if field.parse::<f64>().is_err() => format!("'{field}"),
            _ => field,
        };
        if field.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&field);
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(fields: &[&str]) -> String {
        let mut out = String::new();
        push_row(&mut out, fields.iter().map(|s| s.to_string()));
        out
    }

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        assert_eq!(row(&["a", "b c"]), "a,b c\r\n");
        assert_eq!(row(&["a,b", "say \"hi\""]), "\"a,b\",\"say \"\"hi\"\"\"\r\n");
        assert_eq!(row(&["two\nlines"]), "\"two\nlines\"\r\n");
    }

    #[test]
    fn audience_text_never_runs_as_a_spreadsheet_formula() {
        assert_eq!(row(&["=HYPERLINK(\"x\")"]), "\"'=HYPERLINK(\"\"x\"\")\"\r\n");
        assert_eq!(row(&["@SUM(A1)", "+1+2"]), "'@SUM(A1),'+1+2\r\n");
        // Negative numbers stay numbers.
        assert_eq!(row(&["-3", "-2.5"]), "-3,-2.5\r\n");
    }
}
