//! `pollcast::domain::event::parse_event_id` and
//! `pollcast::http::stream::start_point`: where a stream resumes, from the
//! `Last-Event-ID` header and the `lastEventId` query parameter.
//!
//! The input is split at its first two line feeds:
//!   line 1: the raw bytes of the `Last-Event-ID` header (absent when the
//!           input has no line feed; dropped when `HeaderValue` refuses it);
//!   line 2: the raw query string;
//!   rest:   a `traceparent` header.
//!
//! Invariants:
//! - never panics;
//! - `parse_event_id` accepts exactly 1 to 19 ASCII digits worth at most
//!   `i64::MAX`, and a parsed id re-serializes to the canonical decimal form
//!   (the input without leading zeros), which parses back to the same id;
//! - `start_point` follows its documented rule: a repeated or malformed
//!   `lastEventId` is an error; otherwise a non-blank header wins (an id, or
//!   `Malformed` with at most 64 characters of it), else the query's id,
//!   else `Now`;
//! - the request's trace id is always 32 lowercase hex digits, not all zero,
//!   and is the `traceparent`'s when that one is valid.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use pollcast::domain::event::{parse_event_id, TraceId};
use pollcast::http::request::RequestContext;
use pollcast::http::stream::{start_point, StartPoint};

fuzz_target!(|data: &[u8]| {
    check_id(&String::from_utf8_lossy(data));

    let mut parts = data.splitn(3, |b| *b == b'\n');
    let first = parts.next().unwrap_or_default();
    let (header, query, traceparent) = match (parts.next(), parts.next()) {
        (None, _) => (None, first, None),
        (Some(query), tp) => (Some(first), query, tp),
    };
    let query = String::from_utf8_lossy(query);

    let mut headers = HeaderMap::new();
    let header_value = header.and_then(|h| HeaderValue::from_bytes(h).ok());
    if let Some(value) = &header_value {
        headers.insert("last-event-id", value.clone());
        check_id(&String::from_utf8_lossy(value.as_bytes()));
    }
    let traceparent = traceparent.and_then(|t| HeaderValue::from_bytes(t).ok());
    if let Some(value) = &traceparent {
        headers.insert("traceparent", value.clone());
    }

    let ctx = RequestContext::new(headers, &query);

    // The trace id.
    let trace = ctx.trace_id.as_str();
    assert!(is_trace_id(trace), "trace id {trace:?}");
    if let Some(parsed) = traceparent
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(TraceId::from_traceparent)
    {
        assert!(is_trace_id(parsed.as_str()));
        assert_eq!(trace, parsed.as_str(), "the traceparent's trace id is kept");
    }

    // The start point, against the rule as documented.
    let values: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "lastEventId")
        .map(|(_, v)| v.into_owned())
        .collect();
    for v in &values {
        check_id(v);
    }
    let result = start_point(&ctx);
    let from_query = match values.as_slice() {
        [] => Ok(None),
        [one] => parse_event_id(one).map(Some).ok_or("malformed"),
        _ => Err("repeated"),
    };
    let expected = from_query.map(|from_query| {
        let header = header_value.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        match header.filter(|h| !h.trim().is_empty()) {
            Some(raw) => match parse_event_id(raw.trim()) {
                Some(id) => StartPoint::After(id),
                None => StartPoint::Malformed(raw.chars().take(64).collect()),
            },
            None => from_query.map_or(StartPoint::Now, StartPoint::After),
        }
    });
    match (&result, &expected) {
        (Ok(got), Ok(want)) => assert_eq!(got, want, "start point"),
        (Err(_), Err(_)) => {}
        _ => panic!("start_point gave {result:?}, expected {expected:?}"),
    }
    match result {
        Ok(StartPoint::After(id)) => assert!(id >= 0),
        Ok(StartPoint::Malformed(shown)) => assert!(shown.chars().count() <= 64),
        _ => {}
    }
});

fn is_trace_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) && s.bytes().any(|b| b != b'0')
}

fn check_id(raw: &str) {
    let parsed = parse_event_id(raw);
    let digits = !raw.is_empty() && raw.len() <= 19 && raw.bytes().all(|b| b.is_ascii_digit());
    let expected = digits
        .then(|| raw.parse::<u128>().ok())
        .flatten()
        .filter(|v| *v <= i64::MAX as u128)
        .map(|v| v as i64);
    assert_eq!(parsed, expected, "parse_event_id({raw:?})");
    if let Some(id) = parsed {
        let canonical = raw.trim_start_matches('0');
        let canonical = if canonical.is_empty() { "0" } else { canonical };
        assert_eq!(id.to_string(), canonical, "{raw:?} re-serialized");
        assert_eq!(parse_event_id(&id.to_string()), Some(id));
    }
}
