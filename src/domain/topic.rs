//! Topic names and topic selectors: parsed once at the edge, so the rest of
//! the server only ever handles valid ones.
//!
//! A topic is 1–8 `:`-separated segments of `[a-z0-9_.-]`. A selector is the
//! same shape where a segment may be `*`, standing for exactly one segment.

use std::fmt;
use std::sync::Arc;

/// The most segments a topic or selector may have (`org:acme:team:dev` has 4).
pub const MAX_SEGMENTS: usize = 8;
/// Longest topic or selector accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

/// Why a topic or selector was refused; the message is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic must not be empty")]
    Empty,
    #[error("topic is longer than {MAX_TOPIC_LEN} bytes")]
    TooLong,
    #[error("topic has more than {MAX_SEGMENTS} segments")]
    TooManySegments,
    #[error("topic segment {0:?} must be made of [a-z0-9_.-]")]
    BadSegment(String),
    #[error("a topic name cannot contain the wildcard `*`")]
    WildcardInTopic,
}

fn is_segment_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '-')
}

fn check_segments(raw: &str, allow_wildcard: bool) -> Result<(), TopicError> {
    if raw.is_empty() {
        return Err(TopicError::Empty);
    }
    if raw.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    let mut count = 0;
    for segment in raw.split(':') {
        count += 1;
        if segment == "*" {
            if !allow_wildcard {
                return Err(TopicError::WildcardInTopic);
            }
        } else if segment.is_empty() || !segment.chars().all(is_segment_char) {
            // Only a short prefix goes back to the client: the message must
            // stay small whatever was sent.
            let shown: String = segment.chars().take(40).collect();
            return Err(TopicError::BadSegment(shown));
        }
    }
    if count > MAX_SEGMENTS {
        return Err(TopicError::TooManySegments);
    }
    Ok(())
}

/// A valid topic name. Cloning is an atomic increment: the fan-out hub keeps
/// one copy per stored frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    pub fn parse(raw: &str) -> Result<Self, TopicError> {
        check_segments(raw, false)?;
        Ok(Topic(Arc::from(raw)))
    }

    /// Rebuilds a topic read back from the store, where only parsed topics
    /// were ever written; skips the check on the replay path.
    pub fn from_stored(raw: &str) -> Self {
        Topic(Arc::from(raw))
    }

    /// The same name inside `tenant`'s namespace.
    pub fn in_tenant(&self, tenant: &str) -> Self {
        Topic(Arc::from(format!("{TENANT_MARK}{tenant}:{}", self.0)))
    }

    /// The name clients see (a tenant's topics without their tenant).
    pub fn display_name(&self) -> &str {
        without_tenant(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first segment: `session` for `session:42`.
    pub fn kind(&self) -> &str {
        self.0.split(':').next().unwrap_or_default()
    }
}

/// The first segment of topics only their own participant may read (its
/// votes, with its identity): generic reads never see them.
pub const PRIVATE_KIND: &str = "participant";

/// Starts the first segment of a tenant's topics inside the server:
/// `~acme:orders:1` is tenant acme's `orders:1`. Clients cannot write `~`,
/// so no topic they name is a tenant's, and a wildcard never matches a `~`
/// segment, so only a selector that names the tenant's segment (which only
/// that tenant's tokens get) reaches its topics.
pub const TENANT_MARK: char = '~';

/// Whether a tenant name is usable: the characters of a topic segment.
pub fn is_tenant_name(tenant: &str) -> bool {
    (1..=64).contains(&tenant.len()) && tenant.chars().all(is_segment_char)
}

/// A name as clients see it: without the tenant's segment.
pub fn without_tenant(name: &str) -> &str {
    if name.starts_with(TENANT_MARK) {
        name.split_once(':').map_or(name, |(_, rest)| rest)
    } else {
        name
    }
}

/// The tenant of an internal name (`~acme:orders:1` → `acme`), if any.
pub fn tenant_of(name: &str) -> Option<&str> {
    name.strip_prefix(TENANT_MARK)?
        .split_once(':')
        .map(|(tenant, _)| tenant)
}

/// `*` stands for one segment, but never a tenant's.
fn segment_matches(pattern: &str, segment: &str) -> bool {
    pattern == segment || (pattern == "*" && !segment.starts_with(TENANT_MARK))
}

/// Whether `topic` is one of the private topics.
pub fn is_private(topic: &str) -> bool {
    topic
        .strip_prefix(PRIVATE_KIND)
        .is_some_and(|rest| rest.starts_with(':'))
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A topic pattern: exact segments, or `*` for exactly one segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    raw: Arc<str>,
    has_wildcard: bool,
}

impl Selector {
    pub fn parse(raw: &str) -> Result<Self, TopicError> {
        check_segments(raw, true)?;
        Ok(Selector {
            has_wildcard: raw.split(':').any(|s| s == "*"),
            raw: Arc::from(raw),
        })
    }

    /// A selector as it travels between nodes: possibly in a tenant's
    /// namespace (`~acme:orders:*`).
    pub fn parse_internal(raw: &str) -> Result<Self, TopicError> {
        match raw.strip_prefix(TENANT_MARK).and_then(|r| r.split_once(':')) {
            Some((tenant, rest)) if is_tenant_name(tenant) => Ok(Selector::parse(rest)?.in_tenant(tenant)),
            Some(_) => Err(TopicError::BadSegment(raw.chars().take(40).collect())),
            None => Selector::parse(raw),
        }
    }

    /// The same selector inside `tenant`'s namespace.
    pub fn in_tenant(&self, tenant: &str) -> Self {
        Selector {
            raw: Arc::from(format!("{TENANT_MARK}{tenant}:{}", self.raw)),
            has_wildcard: self.has_wildcard,
        }
    }

    /// The selector as its client wrote it.
    pub fn display_name(&self) -> &str {
        without_tenant(&self.raw)
    }

    /// The selector that matches exactly one topic.
    pub fn exact(topic: &Topic) -> Self {
        Selector {
            raw: Arc::from(topic.as_str()),
            has_wildcard: false,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// `Some(topic)` when the selector has no wildcard and so names one topic.
    pub fn as_exact(&self) -> Option<&str> {
        (!self.has_wildcard).then_some(&*self.raw)
    }

    pub fn matches(&self, topic: &str) -> bool {
        if !self.has_wildcard {
            return &*self.raw == topic;
        }
        let mut pattern = self.raw.split(':');
        let mut name = topic.split(':');
        loop {
            match (pattern.next(), name.next()) {
                (None, None) => return true,
                (Some(p), Some(n)) if segment_matches(p, n) => continue,
                _ => return false,
            }
        }
    }

    /// Whether some topic matches both selectors: same number of segments,
    /// and at every position the segments are equal or one is `*`.
    pub fn overlaps(&self, other: &Selector) -> bool {
        let mut a = self.raw.split(':');
        let mut b = other.raw.split(':');
        loop {
            match (a.next(), b.next()) {
                (None, None) => return true,
                (Some(x), Some(y)) if segment_matches(x, y) || segment_matches(y, x) => continue,
                _ => return false,
            }
        }
    }

    /// Whether every topic this selector matches is matched by `other`:
    /// same length, and at each position `other` has `*` or the same segment.
    pub fn is_within(&self, other: &Selector) -> bool {
        let mut mine = self.raw.split(':');
        let mut theirs = other.raw.split(':');
        loop {
            match (mine.next(), theirs.next()) {
                (None, None) => return true,
                (Some(a), Some(b)) if segment_matches(b, a) => continue,
                _ => return false,
            }
        }
    }

    /// A POSIX regular expression matching the same topics, for the store's
    /// `topic ~ pattern` queries. Segments hold only `[a-z0-9_.-]`, of which
    /// only `.` is special in a regex.
    pub fn to_regex(&self) -> String {
        let body: Vec<String> = self
            .raw
            .split(':')
            .map(|s| match s {
                "*" => "[^:~][^:]*".to_string(),
                literal => literal.replace('.', "\\."),
            })
            .collect();
        format!("^{}$", body.join(":"))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Which events one reader may see: those whose topic matches one of the
/// selectors it asked for *and* one the caller's token allows.
#[derive(Debug, Clone)]
pub struct TopicFilter {
    requested: Vec<Selector>,
    /// `None` when the caller is not restricted beyond what it asked for.
    allowed: Option<Vec<Selector>>,
    /// Leaves out private topics even where a wildcard covers them.
    hide_private: bool,
}

impl TopicFilter {
    pub fn new(requested: Vec<Selector>, allowed: Option<Vec<Selector>>) -> Self {
        // When the permission covers everything asked for, it filters
        // nothing: drop it, so neither the hub nor the store checks it per
        // event (for the store, a regular expression per row).
        let covered = |allowed: &Vec<Selector>| {
            !requested.is_empty() && requested.iter().all(|r| allowed.iter().any(|a| r.is_within(a)))
        };
        let allowed = allowed.filter(|a| !covered(a));
        TopicFilter {
            requested,
            allowed,
            hide_private: false,
        }
    }

    /// The same filter without private topics: what a generic token reads.
    pub fn without_private(mut self) -> Self {
        self.hide_private = true;
        self
    }

    pub fn hides_private(&self) -> bool {
        self.hide_private
    }

    /// Every topic: what the hub's own tail reads.
    pub fn everything() -> Self {
        TopicFilter {
            requested: Vec::new(),
            allowed: None,
            hide_private: false,
        }
    }

    pub fn is_everything(&self) -> bool {
        self.requested.is_empty() && self.allowed.is_none() && !self.hide_private
    }

    pub fn requested(&self) -> &[Selector] {
        &self.requested
    }

    pub fn allowed(&self) -> Option<&[Selector]> {
        self.allowed.as_deref()
    }

    pub fn matches(&self, topic: &str) -> bool {
        if self.hide_private && is_private(topic) {
            return false;
        }
        let requested = self.requested.is_empty() || self.requested.iter().any(|s| s.matches(topic));
        requested
            && self
                .allowed
                .as_ref()
                .is_none_or(|allowed| allowed.iter().any(|s| s.matches(topic)))
    }

    /// The exact topics asked for, when no requested selector has a
    /// wildcard; lets the hub index the subscriber by topic.
    pub fn exact_topics(&self) -> Option<Vec<&str>> {
        if self.requested.is_empty() {
            return None;
        }
        self.requested.iter().map(|s| s.as_exact()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_never_reach_a_tenants_topics() {
        let acme = Topic::parse("orders:1").unwrap().in_tenant("acme");
        assert_eq!(acme.as_str(), "~acme:orders:1");
        assert_eq!(acme.display_name(), "orders:1");
        assert_eq!(
            (tenant_of(acme.as_str()), tenant_of("orders:1")),
            (Some("acme"), None)
        );
        for outside in ["*:*:*", "*:orders:1", "*:*:1"] {
            assert!(
                !Selector::parse(outside).unwrap().matches(acme.as_str()),
                "{outside}"
            );
        }
        let inside = Selector::parse("*:*").unwrap().in_tenant("acme");
        assert!(inside.matches(acme.as_str()));
        assert!(!inside.matches(Topic::parse("orders:1").unwrap().in_tenant("globex").as_str()));
        assert!(!Selector::parse("*:*:*").unwrap().overlaps(&inside));
        assert!(!inside.is_within(&Selector::parse("*:*:*").unwrap()));
        assert!(inside.is_within(&Selector::parse("*:*").unwrap().in_tenant("acme")));
        // The store's regular expression agrees.
        let regex = Selector::parse("*:*:*").unwrap().to_regex();
        assert_eq!(regex, "^[^:~][^:]*:[^:~][^:]*:[^:~][^:]*$");
    }

    #[test]
    fn internal_selectors_parse_with_their_tenant() {
        let s = Selector::parse_internal("~acme:orders:*").unwrap();
        assert_eq!((s.as_str(), s.display_name()), ("~acme:orders:*", "orders:*"));
        assert!(Selector::parse_internal("~Bad!:x").is_err());
        assert!(
            Selector::parse("~acme:x").is_err(),
            "clients cannot write the mark"
        );
        assert_eq!(Selector::parse_internal("a:b").unwrap().as_str(), "a:b");
    }

    #[test]
    fn topics_accept_the_documented_shape() {
        assert!(Topic::parse("org:acme:team:dev").is_ok());
        assert!(Topic::parse("a.b-c_d:0").is_ok());
        assert!(Topic::parse("a:b:c:d:e:f:g:h").is_ok());
    }

    #[test]
    fn topics_reject_everything_else() {
        for bad in [
            "",
            "A",
            "a::b",
            ":a",
            "a:",
            "a b",
            "a:*",
            "a\nb",
            "a:b:c:d:e:f:g:h:i",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(Topic::parse(&"a".repeat(257)), Err(TopicError::TooLong));
    }

    #[test]
    fn a_wildcard_stands_for_exactly_one_segment() {
        let s = Selector::parse("session:*").unwrap();
        assert!(s.matches("session:42"));
        assert!(!s.matches("session"));
        assert!(!s.matches("session:42:x"));
        assert!(!s.matches("sessions:42"));
        let mid = Selector::parse("user:*:notifications").unwrap();
        assert!(mid.matches("user:7:notifications"));
        assert!(!mid.matches("user:7:messages"));
    }

    #[test]
    fn overlap_needs_equal_length_and_compatible_segments() {
        let p = |s| Selector::parse(s).unwrap();
        assert!(p("user:*").overlaps(&p("user:42")));
        assert!(p("*:42").overlaps(&p("user:*")));
        assert!(!p("user:*").overlaps(&p("user:*:x")));
        assert!(!p("user:1").overlaps(&p("user:2")));
    }

    #[test]
    fn within_means_every_match_is_also_a_match_of_the_other() {
        let p = |s| Selector::parse(s).unwrap();
        assert!(p("bench:x").is_within(&p("bench:*")));
        assert!(p("bench:*").is_within(&p("bench:*")));
        assert!(!p("bench:*").is_within(&p("bench:x")));
        assert!(!p("bench:x:y").is_within(&p("bench:*")));
        let covered = TopicFilter::new(vec![p("demo:a")], Some(vec![p("demo:*")]));
        assert!(
            covered.allowed().is_none(),
            "a covering permission filters nothing"
        );
        let partial = TopicFilter::new(vec![p("demo:*")], Some(vec![p("demo:a")]));
        assert!(partial.allowed().is_some());
    }

    #[test]
    fn regex_translation_escapes_dots() {
        assert_eq!(Selector::parse("a.b:*").unwrap().to_regex(), "^a\\.b:[^:~][^:]*$");
    }

    #[test]
    fn a_filter_needs_both_the_request_and_the_permission() {
        let p = |s| Selector::parse(s).unwrap();
        let f = TopicFilter::new(vec![p("user:*")], Some(vec![p("user:1"), p("user:2")]));
        assert!(f.matches("user:1"));
        assert!(!f.matches("user:3"));
        assert!(f.exact_topics().is_none());
        let exact = TopicFilter::new(vec![p("a:1"), p("a:2")], None);
        let firehose = TopicFilter::new(vec![p("*:*")], None).without_private();
        assert!(firehose.matches("session:1"));
        assert!(!firehose.matches("participant:1"));
        assert!(
            firehose.matches("participants:1"),
            "only the exact first segment is private"
        );
        assert_eq!(exact.exact_topics(), Some(vec!["a:1", "a:2"]));
    }
}
