//! `pollcast::http::direct::judge`: the direct SSE path's sniffing of the
//! first bytes of a new TCP connection.
//!
//! Every input is judged twice: as raw bytes (anything a client can send),
//! and as the seed of a well-formed stream request head built from the same
//! bytes (so that the `Candidate` branch is reached often, not only when
//! the mutator stumbles on `GET /v1/events HTTP/1.1\r\n\r\n`).
//!
//! Invariants:
//! - never panics, never answers `Closed` (only the socket says that);
//! - `None` only while httparse still calls the head partial;
//! - `Candidate(req)` only for a complete, body-less `GET` HTTP/1.1 head
//!   that is the whole input, whose path is `/v1/events` or
//!   `/v1/sessions/<id>/events` (`<id>` non-empty, no `/`); `req.query` is
//!   what follows the first `?` of the request target; the target names the
//!   same stream; every header made it into `req.headers`, and none of them
//!   is `Transfer-Encoding`, `Upgrade` or a non-zero `Content-Length`;
//! - hyper's `http::Uri` reads the candidate's target with the same path
//!   and query (it once did not: `?x=<` and `?a=1#&topic=b` were served
//!   here and refused or read differently by hyper);
//! - no proper prefix of a candidate head is judged a candidate: it is
//!   `None` (more bytes needed) or `NotAStream`;
//! - a well-formed stream request head is always a candidate, with the
//!   query and the session id it was built with.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use pollcast::http::direct::{judge, HeadVerdict, StreamRequest, StreamTarget};

/// Whether candidates must have request targets that `http::Uri` (so
/// hyper, so the warp routes) reads the same way. Always, since the fix.
fn strict_uri() -> bool {
    true
}

/// `pollcast::http::request::MAX_HEAD`: longer heads go to hyper (431).
const MAX_HEAD: usize = pollcast::http::request::MAX_HEAD;

fuzz_target!(|data: &[u8]| {
    check_raw(data);
    if let Ok(head) = WellFormed::arbitrary(&mut Unstructured::new(data)) {
        check_well_formed(&head);
    }
});

/// What httparse, on its own, makes of a head (the reference).
struct Reference {
    complete: Option<usize>,
    method: Option<String>,
    path: Option<String>,
    version: Option<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

fn reference(data: &[u8]) -> Result<Reference, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let status = request.parse(data)?;
    Ok(Reference {
        complete: match status {
            httparse::Status::Complete(n) => Some(n),
            httparse::Status::Partial => None,
        },
        method: request.method.map(str::to_owned),
        path: request.path.map(str::to_owned),
        version: request.version,
        headers: request
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect(),
    })
}

/// The stream a path (without its query) names, by the documented rule:
/// one trailing `/` is ignored, the session id is passed on as written.
fn expected_target(path: &str) -> Option<StreamTarget> {
    let path = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    if path == "/v1/events" {
        return Some(StreamTarget::Topics);
    }
    let id = path.strip_prefix("/v1/sessions/")?.strip_suffix("/events")?;
    if id.is_empty() || id.contains('/') {
        return None;
    }
    Some(StreamTarget::Session(id.to_owned()))
}

fn check_raw(data: &[u8]) {
    let verdict = judge(data);
    match &verdict {
        None => {
            // More bytes needed: httparse must agree the head is unfinished.
            let r = reference(data).expect("judge waits for more bytes of a head httparse refuses");
            assert!(r.complete.is_none(), "judge waits on a complete head");
        }
        Some(HeadVerdict::Closed) => panic!("judge answered Closed for {data:?}"),
        Some(HeadVerdict::NotAStream) => {}
        Some(HeadVerdict::Candidate(request)) => {
            check_candidate(data, request);
            check_prefixes(data);
        }
    }
}

fn check_candidate(data: &[u8], request: &StreamRequest) {
    let r = reference(data).expect("a candidate head parses");
    assert_eq!(
        r.complete,
        Some(data.len()),
        "a candidate is exactly one complete head"
    );
    assert!(data.len() <= MAX_HEAD, "a candidate head is within MAX_HEAD");
    assert_eq!(r.method.as_deref(), Some("GET"));
    assert_eq!(r.version, Some(1), "a candidate is HTTP/1.1");
    let target = r.path.expect("a complete head has a target");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target.as_str(), ""),
    };
    assert!(
        path == "/v1/events" || (path.starts_with("/v1/sessions/") && path.ends_with("/events")),
        "candidate for the path {path:?}"
    );
    assert_eq!(request.query, query, "the query is what follows the first `?`");
    assert_eq!(
        Some(&request.target),
        expected_target(path).as_ref(),
        "the stream named by {path:?}"
    );
    if strict_uri() {
        // hyper parses the target with `http::Uri`, which refuses `"`, `<`,
        // `>` in a query and drops a `#fragment`: the direct path must not
        // serve (or read differently) what hyper would answer with a 400.
        let uri: http::Uri = target
            .parse()
            .unwrap_or_else(|e| panic!("a candidate whose target hyper refuses ({e}): {target:?}"));
        assert_eq!(uri.path(), path, "hyper's path of {target:?}");
        assert_eq!(
            uri.query().unwrap_or(""),
            request.query,
            "hyper's query of {target:?}"
        );
    }
    assert_eq!(request.headers.len(), r.headers.len(), "every header is kept");
    for (name, value) in &r.headers {
        let lower = name.to_ascii_lowercase();
        assert!(
            lower != "transfer-encoding" && lower != "upgrade",
            "a candidate with {name}"
        );
        if lower == "content-length" {
            assert_eq!(value.as_slice(), b"0", "a candidate with a body");
        }
        assert!(
            request
                .headers
                .get_all(lower.as_str())
                .iter()
                .any(|v| v.as_bytes() == value.as_slice()),
            "header {name}: {value:?} was dropped"
        );
    }
}

/// No proper prefix of a candidate is a candidate (or `Closed`). Every
/// prefix of a short head is tried; of a long one, a spread of them.
fn check_prefixes(data: &[u8]) {
    let step = (data.len() / 256).max(1);
    let mut cut = 0;
    while cut < data.len() {
        match judge(&data[..cut]) {
            None | Some(HeadVerdict::NotAStream) => {}
            Some(HeadVerdict::Closed) => panic!("Closed for a prefix of {data:?}"),
            Some(HeadVerdict::Candidate(other)) => {
                panic!(
                    "the prefix {:?} of the candidate {data:?} is a candidate: {other:?}",
                    &data[..cut]
                )
            }
        }
        cut += step;
    }
    // The cuts right before the end are the interesting ones (inside the
    // final CRLF CRLF).
    for back in 1..=4.min(data.len()) {
        let prefix = &data[..data.len() - back];
        assert!(
            !matches!(
                judge(prefix),
                Some(HeadVerdict::Candidate(_) | HeadVerdict::Closed)
            ),
            "the prefix {prefix:?} of a candidate"
        );
    }
}

/// A stream request head that the direct path must take.
#[derive(Debug, Arbitrary)]
struct WellFormed {
    /// `None`: `/v1/events`; `Some`: `/v1/sessions/<id>/events`.
    session: Option<Vec<Unreserved>>,
    query: Option<Vec<QueryChar>>,
    headers: Vec<(HeaderNameSeed, Vec<ValueChar>)>,
    content_length_zero: bool,
    crlf: bool,
}

#[derive(Debug)]
struct Unreserved(u8);
impl<'a> Arbitrary<'a> for Unreserved {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        const SET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~";
        Ok(Unreserved(*u.choose(SET)?))
    }
}

#[derive(Debug)]
struct QueryChar(u8);
impl<'a> Arbitrary<'a> for QueryChar {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        // Everything httparse takes in a request target (`!`..=`~`).
        Ok(QueryChar(u.int_in_range(b'!'..=b'~')?))
    }
}

#[derive(Debug)]
struct ValueChar(u8);
impl<'a> Arbitrary<'a> for ValueChar {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        // Visible ASCII (no spaces: httparse trims them at the ends).
        Ok(ValueChar(u.int_in_range(b'!'..=b'~')?))
    }
}

#[derive(Debug)]
struct HeaderNameSeed(String);
impl<'a> Arbitrary<'a> for HeaderNameSeed {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        const COMMON: &[&str] = &[
            "Host",
            "Accept",
            "Authorization",
            "Last-Event-ID",
            "Cache-Control",
            "X-Forwarded-For",
            "traceparent",
            "Origin",
            "User-Agent",
            "X-Request-Id",
        ];
        if u.ratio(1, 2)? {
            return Ok(HeaderNameSeed((*u.choose(COMMON)?).to_owned()));
        }
        const TCHAR: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
        let len = u.int_in_range(1..=20)?;
        let name: String = (0..len)
            .map(|_| u.choose(TCHAR).map(|b| *b as char))
            .collect::<Result<_, _>>()?;
        // The three that take a request off the direct path.
        let lower = name.to_ascii_lowercase();
        if matches!(lower.as_str(), "content-length" | "transfer-encoding" | "upgrade") {
            return Ok(HeaderNameSeed("X-Other".into()));
        }
        Ok(HeaderNameSeed(name))
    }
}

impl WellFormed {
    fn render(&self) -> (Vec<u8>, StreamTarget, String) {
        let eol: &[u8] = if self.crlf { b"\r\n" } else { b"\n" };
        let (path, target) = match &self.session {
            Some(id) if !id.is_empty() => {
                let id: String = id.iter().map(|c| c.0 as char).collect();
                (format!("/v1/sessions/{id}/events"), StreamTarget::Session(id))
            }
            _ => ("/v1/events".to_owned(), StreamTarget::Topics),
        };
        let query: String = self
            .query
            .as_ref()
            .map(|q| q.iter().map(|c| c.0 as char).collect())
            .unwrap_or_default();
        let mut head = format!("GET {path}").into_bytes();
        if self.query.is_some() {
            head.push(b'?');
            head.extend_from_slice(query.as_bytes());
        }
        head.extend_from_slice(b" HTTP/1.1");
        head.extend_from_slice(eol);
        for (name, value) in self.headers.iter().take(32) {
            head.extend_from_slice(name.0.as_bytes());
            head.extend_from_slice(b": ");
            head.extend(value.iter().map(|c| c.0));
            head.extend_from_slice(eol);
        }
        if self.content_length_zero {
            head.extend_from_slice(b"Content-Length: 0");
            head.extend_from_slice(eol);
        }
        head.extend_from_slice(eol);
        (head, target, query)
    }
}

fn check_well_formed(spec: &WellFormed) {
    let (head, target, query) = spec.render();
    // The head must also pass every raw-bytes check.
    check_raw(&head);
    if head.len() > MAX_HEAD {
        assert!(
            matches!(judge(&head), Some(HeadVerdict::NotAStream)),
            "an oversized head goes to hyper"
        );
        return;
    }
    // A target hyper's `http::Uri` refuses (a `"` in the query…) is
    // hyper's to answer, as is one with a fragment.
    let raw_target = String::from_utf8_lossy(&head);
    let raw_target = raw_target.split(' ').nth(1).unwrap_or("");
    if http::uri::PathAndQuery::try_from(raw_target).is_err() || raw_target.contains('#') {
        assert!(
            matches!(judge(&head), Some(HeadVerdict::NotAStream)),
            "a target hyper would not read the same goes to hyper"
        );
        return;
    }
    match judge(&head) {
        Some(HeadVerdict::Candidate(request)) => {
            assert_eq!(request.target, target);
            assert_eq!(request.query, query);
        }
        other => panic!(
            "a well-formed stream request is not a candidate: {other:?}\n{}",
            String::from_utf8_lossy(&head)
        ),
    }
}
