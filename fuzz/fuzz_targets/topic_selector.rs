//! `pollcast::domain::topic`: `Topic::parse`, `Selector::parse` (and
//! `parse_internal`), matching, and the regular expression the Postgres
//! store queries with.
//!
//! The input is text, one item per line:
//!   line 1: a topic or selector as a client writes it;
//!   line 2: a second selector (for `overlaps` / `is_within`);
//!   line 3: a tenant name;
//!   further lines: segments and topics to probe the matchers with.
//!
//! Invariants:
//! - never panics; whatever parses is `[a-z0-9_.:*-]` only, at most 256
//!   bytes and 8 segments, with no empty segment (and no `*` in a topic);
//! - every topic is a selector, and matches itself as an exact selector;
//! - `Selector::to_regex()` compiles with the `regex` crate and agrees
//!   with `Selector::matches` on topics generated from the selector (each
//!   `*` filled in with a probe segment, or not), the probe topics, and the
//!   same inside a tenant (where a `*` never matches the tenant segment);
//! - `in_tenant` then `display_name` gives back what the client wrote, and
//!   `parse_internal` reads a tenant's selector back as itself;
//! - `is_within` and `overlaps` agree with `matches` on those topics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pollcast::domain::topic::{is_tenant_name, Selector, Topic, MAX_SEGMENTS, MAX_TOPIC_LEN};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let second = lines.next().unwrap_or_default();
    let tenant = lines.next().unwrap_or_default();
    let probes: Vec<&str> = lines.take(16).collect();

    // Every line goes through both parsers, whatever it was meant for.
    // (Compiling a regex is what costs here: only the first line's.)
    for (i, raw) in [first, second, tenant].iter().chain(&probes).enumerate() {
        check_parsers(raw, i == 0);
    }

    let Ok(selector) = Selector::parse(first) else {
        return;
    };
    let other = Selector::parse(second).ok();

    // Topics to test the matchers on.
    let mut topics: Vec<String> = Vec::new();
    for probe in &probes {
        if Topic::parse(probe).is_ok() {
            topics.push((*probe).to_owned());
        }
    }
    let segments: Vec<&str> = probes
        .iter()
        .flat_map(|p| p.split(':'))
        .filter(|s| Topic::parse(s).is_ok())
        .chain(["x", "1", "session"])
        .collect();
    for (i, fill) in segments.iter().enumerate().take(8) {
        // Each `*` filled in with the same segment, then with rotating ones.
        let same = fill_wildcards(selector.as_str(), |_| fill);
        let rotating = fill_wildcards(selector.as_str(), |k| segments[(i + k) % segments.len()]);
        for t in [same, rotating] {
            if t.len() > MAX_TOPIC_LEN {
                continue; // a long segment filled in: no longer a topic
            }
            assert!(
                Topic::parse(&t).is_ok(),
                "filled-in {t:?} of {selector} is a topic"
            );
            assert!(
                selector.matches(&t),
                "{selector} does not match its own instance {t:?}"
            );
            topics.push(t);
        }
    }
    // One segment more or less never matches.
    let mut near = vec![format!("{}:x", fill_wildcards(selector.as_str(), |_| "x"))];
    if let Some((shorter, _)) = selector.as_str().rsplit_once(':') {
        near.push(fill_wildcards(shorter, |_| "x"));
    }
    for t in near {
        if Topic::parse(&t).is_ok() {
            assert!(!selector.matches(&t), "{selector} matches {t}, of another length");
            topics.push(t);
        }
    }

    let tenant_ok = is_tenant_name(tenant);
    let tenant_topics: Vec<String> = if tenant_ok {
        topics
            .iter()
            .filter_map(|t| Topic::parse(t).ok())
            .map(|t| t.in_tenant(tenant).as_str().to_owned())
            .collect()
    } else {
        Vec::new()
    };
    // A tenant's topics as plain strings too: no wildcard reaches them.
    let all: Vec<&str> = topics.iter().chain(&tenant_topics).map(String::as_str).collect();

    check_regex(&selector, &all);
    for t in &tenant_topics {
        assert!(
            !selector.matches(t),
            "client selector {selector} matches the tenant topic {t}"
        );
    }

    if tenant_ok {
        let scoped = selector.in_tenant(tenant);
        assert_eq!(
            scoped.display_name(),
            selector.as_str(),
            "in_tenant then display_name"
        );
        assert_eq!(
            Selector::parse_internal(scoped.as_str()).as_ref(),
            Ok(&scoped),
            "parse_internal of a tenant's selector"
        );
        check_regex(&scoped, &all);
        for t in &topics {
            assert!(
                !scoped.matches(t),
                "tenant selector {scoped} matches the plain topic {t}"
            );
            let inside = Topic::parse(t).unwrap().in_tenant(tenant);
            assert_eq!(
                scoped.matches(inside.as_str()),
                selector.matches(t),
                "{scoped} on {inside} vs {selector} on {t}"
            );
        }
    }

    if let Some(other) = other {
        for t in &all {
            let (a, b) = (selector.matches(t), other.matches(t));
            if a && b {
                assert!(
                    selector.overlaps(&other),
                    "{selector} and {other} both match {t} but do not overlap"
                );
                assert!(other.overlaps(&selector), "overlaps is not symmetric");
            }
            if a && selector.is_within(&other) {
                assert!(b, "{selector} is within {other}, yet only it matches {t}");
            }
        }
        if selector.is_within(&other) && other.is_within(&selector) {
            assert_eq!(selector, other, "within each other but different");
        }
        assert!(selector.is_within(&selector) && selector.overlaps(&selector));
    }
});

/// The selector with its `k`-th `*` replaced by `fill(k)`.
fn fill_wildcards<'a>(raw: &str, fill: impl Fn(usize) -> &'a str) -> String {
    let mut k = 0;
    raw.split(':')
        .map(|s| {
            if s == "*" {
                k += 1;
                fill(k - 1)
            } else {
                s
            }
        })
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .join(":")
}

fn check_parsers(raw: &str, with_regex: bool) {
    let topic = Topic::parse(raw);
    let selector = Selector::parse(raw);
    let valid_shape = |wildcard: bool| {
        raw.len() <= MAX_TOPIC_LEN
            && raw.split(':').count() <= MAX_SEGMENTS
            && raw.split(':').all(|s| {
                (wildcard && s == "*")
                    || (!s.is_empty()
                        && s.bytes()
                            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-')))
            })
    };
    assert_eq!(
        topic.is_ok(),
        valid_shape(false),
        "Topic::parse({raw:?}) = {topic:?}"
    );
    assert_eq!(
        selector.is_ok(),
        valid_shape(true),
        "Selector::parse({raw:?}) = {selector:?}"
    );
    if let Err(e) = &selector {
        // The message goes back to the client: it stays small.
        assert!(
            e.to_string().len() < 400,
            "error message of {} bytes",
            e.to_string().len()
        );
    }
    if let Ok(topic) = topic {
        assert_eq!(topic.as_str(), raw);
        assert_eq!(topic.display_name(), raw, "a client's topic has no tenant");
        let selector = selector.expect("every topic is a selector");
        assert_eq!(selector.as_exact(), Some(raw));
        assert!(selector.matches(raw));
        let exact = Selector::exact(&topic);
        assert!(
            exact.matches(topic.as_str()),
            "{topic} does not match itself as an exact selector"
        );
        assert_eq!(exact.as_exact(), Some(raw));
        assert!(exact.is_within(&selector) && selector.is_within(&exact));
        if with_regex {
            let regex = compile(&exact.to_regex()).expect("an exact selector's regex compiles");
            assert!(regex.is_match(raw), "{} does not match {raw:?}", exact.to_regex());
        }
        // Topics parse inside a tenant the server's way too.
        assert!(Selector::parse_internal(raw).is_ok());
    }
}

fn check_regex(selector: &Selector, topics: &[&str]) {
    let pattern = selector.to_regex();
    let regex = compile(&pattern)
        .unwrap_or_else(|e| panic!("the regex {pattern:?} of {selector} does not compile: {e}"));
    for t in topics {
        assert_eq!(
            regex.is_match(t),
            selector.matches(t),
            "{pattern:?} and {selector} disagree on {t:?}"
        );
    }
}

/// `Regex::new`, remembered: compiling is most of this target's time (the
/// regex crate is instrumented too), and most inputs keep the selector of
/// the input they were mutated from.
fn compile(pattern: &str) -> Result<regex::Regex, regex::Error> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static CACHE: RefCell<HashMap<String, regex::Regex>> = RefCell::new(HashMap::new());
    }
    CACHE.with(|cache| {
        if let Some(regex) = cache.borrow().get(pattern) {
            return Ok(regex.clone());
        }
        let regex = regex::Regex::new(pattern)?;
        let mut cache = cache.borrow_mut();
        if cache.len() >= 1024 {
            cache.clear();
        }
        cache.insert(pattern.to_owned(), regex.clone());
        Ok(regex)
    })
}
