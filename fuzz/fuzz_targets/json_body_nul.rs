//! `pollcast::http::request::nul_at` (NUL characters, which Postgres
//! cannot store, are refused in every JSON body) and the body decoder
//! around it, `RequestContext::json`.
//!
//! The input is a request body: arbitrary bytes, meant to be JSON text.
//!
//! Invariants:
//! - never panics;
//! - `nul_at(v)` is `Some(_)` iff `serde_json::to_string(v)` holds the
//!   escape `\u0000` (as an escape: not the text `\\u0000`), and its path
//!   is `body` when the value is itself a string, and never shows a raw NUL;
//! - `RequestContext::json::<Value>` accepts the body iff it is JSON, an
//!   object, and has no NUL, and then gives that value back.
#![no_main]

use bytes::Bytes;
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use pollcast::http::request::{nul_at, RequestContext};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let parsed: Option<Value> = serde_json::from_slice(data).ok();
    if let Some(value) = &parsed {
        check(value);
    }
    // The same bytes as one JSON string (lossily decoded), and as a key.
    let text = String::from_utf8_lossy(data).into_owned();
    check(&Value::String(text.clone()));
    let mut object = serde_json::Map::new();
    object.insert(text.clone(), Value::Array(vec![Value::Null, Value::String(text)]));
    check(&Value::Object(object));

    let ctx = RequestContext::new(HeaderMap::new(), "");
    let result = ctx.json::<Value>(&Bytes::copy_from_slice(data));
    let acceptable = parsed.as_ref().filter(|v| v.is_object() && nul_at(v).is_none());
    match (&result, acceptable) {
        (Ok(got), Some(want)) => assert_eq!(got, want),
        (Err(_), None) => {}
        _ => panic!(
            "RequestContext::json gave {result:?} for {:?}",
            String::from_utf8_lossy(data)
        ),
    }
});

fn check(value: &Value) {
    let found = nul_at(value);
    let text = serde_json::to_string(value).expect("a JSON value serializes");
    assert_eq!(
        found.is_some(),
        has_nul_escape(&text),
        "nul_at = {found:?} for {text}"
    );
    if let Some(path) = &found {
        assert!(!value.is_string() || path == "body", "path {path:?} for {text}");
        assert!(!path.is_empty());
        assert!(!path.contains('\0'), "the path shows a NUL raw: {path:?}");
    }
}

/// Whether JSON text holds the escape `\u0000` (a backslash that starts an
/// escape, then `u0000`), as serde_json writes a NUL.
fn has_nul_escape(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes[i + 1..].starts_with(b"u0000") {
                return true;
            }
            i += 2; // the escaped character
        } else {
            i += 1;
        }
    }
    false
}
