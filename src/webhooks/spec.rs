//! What a webhook may be: its URL, its topic selectors, its secret, its
//! description. Pure checks, each with the message a client sees.
//!
//! Selectors are parsed as a stream's `topic` parameters are
//! ([`Selector::parse`]); a wildcard leaves out participants' private
//! topics, as it does for streams, unless a selector names the private
//! kind itself (`participant:*`): the admin asked for them by name.
//! A selector never names a tenant's mark; a webhook created with a
//! `tenant` has its selectors read inside that tenant's topics, as a
//! tenant's token's are, and then gets only that tenant's events.

use crate::domain::topic::{is_tenant_name, Selector, TopicFilter, PRIVATE_KIND};

use super::signing::SigningKey;

/// Longest URL accepted, in bytes.
pub const MAX_URL: usize = 2048;
/// Most selectors one webhook follows.
pub const MAX_TOPICS: usize = 32;
/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 500;

/// An absolute `http://` or `https://` URL with a host, as written.
pub fn check_url(raw: &str) -> Result<String, String> {
    let shape = "url: an absolute http:// or https:// URL";
    if raw.len() > MAX_URL {
        return Err(format!("url: at most {MAX_URL} bytes"));
    }
    // The URL parser would quietly drop spaces, tabs and line breaks and
    // accept `HTTP://`: what is stored is what was checked.
    // And it would read `http:///host` as `http://host/`, and `\` as `/`.
    let after_scheme = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"));
    if after_scheme.is_none_or(|rest| rest.starts_with('/'))
        || raw
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Err(shape.into());
    }
    let url = url::Url::parse(raw).map_err(|e| format!("{shape} ({e})"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{shape} with a host"));
    }
    if url.fragment().is_some() {
        return Err("url: no #fragment (it is never sent)".into());
    }
    Ok(raw.to_owned())
}

/// One to [`MAX_TOPICS`] selectors, each as a stream's `topic` parameter.
pub fn check_topics(raw: &[String]) -> Result<Vec<Selector>, String> {
    if raw.is_empty() || raw.len() > MAX_TOPICS {
        return Err(format!("topics: 1 to {MAX_TOPICS} topic selectors"));
    }
    raw.iter()
        .enumerate()
        .map(|(i, s)| Selector::parse(s).map_err(|e| format!("topics[{i}]: {e}")))
        .collect()
}

/// A `whsec_…` secret whose key is 24 to 64 bytes.
pub fn check_secret(raw: &str) -> Result<String, String> {
    SigningKey::parse(raw).map_err(|e| format!("secret: {e}"))?;
    Ok(raw.to_owned())
}

/// At most [`MAX_DESCRIPTION`] characters.
pub fn check_description(raw: Option<String>) -> Result<Option<String>, String> {
    match raw {
        Some(text) if text.chars().count() > MAX_DESCRIPTION => {
            Err(format!("description: at most {MAX_DESCRIPTION} characters"))
        }
        other => Ok(other),
    }
}

/// Which events a webhook gets (see the module's header on private topics).
pub fn filter(selectors: Vec<Selector>) -> TopicFilter {
    let names_private = selectors
        .iter()
        .any(|s| s.as_str().split(':').next() == Some(PRIVATE_KIND));
    let filter = TopicFilter::new(selectors, None);
    if names_private {
        filter
    } else {
        filter.without_private()
    }
}

/// A webhook's tenant: a tenant's name, as in a token's `tenant` claim.
pub fn check_tenant(tenant: Option<String>) -> Result<Option<String>, String> {
    match tenant {
        Some(name) if !is_tenant_name(&name) => Err("tenant: 1 to 64 characters of [a-z0-9_.-]".into()),
        other => Ok(other),
    }
}

/// The filter of stored selectors (checked when they were written; one
/// that no longer parses matches nothing), inside `tenant`'s topics when
/// the webhook has one, as a tenant's token's selectors are.
pub fn stored_filter(topics: &[String], tenant: Option<&str>) -> TopicFilter {
    let selectors: Vec<Selector> = topics
        .iter()
        .filter_map(|s| Selector::parse(s).ok())
        .map(|s| match tenant {
            Some(tenant) => s.in_tenant(tenant),
            None => s,
        })
        .collect();
    if selectors.is_empty() {
        // An empty request would mean "everything": match nothing instead.
        return TopicFilter::new(Vec::new(), Some(Vec::new()));
    }
    filter(selectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_absolute_http_or_https_with_a_host() {
        for good in [
            "http://127.0.0.1:9000/hook",
            "https://example.org/a?b=c",
            "https://[::1]:8443/",
        ] {
            assert_eq!(check_url(good).as_deref(), Ok(good));
        }
        for bad in [
            "",
            "/relative",
            "example.org/hook",
            "ftp://example.org/",
            "HTTP://example.org/",
            "http://",
            "http:///path",
            "http://a\\b/",
            "https://exa mple.org/",
            " https://example.org/",
            "https://example.org/\n",
            "https://example.org/#frag",
            "mailto:a@b.c",
        ] {
            assert!(check_url(bad).is_err(), "{bad:?}");
        }
        assert!(check_url(&format!("https://example.org/{}", "a".repeat(MAX_URL))).is_err());
    }

    #[test]
    fn topics_parse_as_a_streams_selectors() {
        let parsed = check_topics(&["demo:*".into(), "session:42".into()]).unwrap();
        assert_eq!(parsed.len(), 2);
        assert!(check_topics(&[]).is_err());
        assert!(check_topics(&vec!["a:b".to_string(); MAX_TOPICS + 1]).is_err());
        let refused = check_topics(&["demo:*".into(), "Bad Topic".into()]).unwrap_err();
        assert!(refused.starts_with("topics[1]"), "{refused}");
        assert!(check_topics(&["~acme:x".into()]).is_err(), "no tenant's mark");
    }

    #[test]
    fn a_wildcard_leaves_out_private_topics_unless_they_are_named() {
        let p = |raw: &[&str]| {
            filter(check_topics(&raw.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap())
        };
        let everything = p(&["*:*"]);
        assert!(everything.matches("session:1"));
        assert!(!everything.matches("participant:1"));
        assert!(p(&["participant:*"]).matches("participant:1"));
        assert!(!stored_filter(&[], None).matches("demo:a"));
        assert!(stored_filter(&["demo:*".into()], None).matches("demo:a"));
    }

    #[test]
    fn a_tenants_webhook_gets_that_tenants_topics_only() {
        let acme = stored_filter(&["orders:*".into()], Some("acme"));
        assert!(acme.matches("~acme:orders:1"));
        assert!(!acme.matches("orders:1"));
        assert!(!acme.matches("~globex:orders:1"));
        let plain = stored_filter(&["orders:*".into()], None);
        assert!(plain.matches("orders:1"));
        assert!(!plain.matches("~acme:orders:1"));
        assert_eq!(check_tenant(Some("acme".into())), Ok(Some("acme".into())));
        assert_eq!(check_tenant(None), Ok(None));
        assert!(check_tenant(Some("Acme Corp".into())).is_err());
        assert!(check_tenant(Some(String::new())).is_err());
    }

    #[test]
    fn descriptions_and_secrets_have_limits() {
        assert_eq!(check_description(None), Ok(None));
        assert!(check_description(Some("é".repeat(MAX_DESCRIPTION))).is_ok());
        assert!(check_description(Some("é".repeat(MAX_DESCRIPTION + 1))).is_err());
        assert!(check_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert!(check_secret("secret").unwrap_err().starts_with("secret: "));
    }
}
