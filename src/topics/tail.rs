//! Which events an admin's live tail (`GET /v1/admin/tail`) shows: every
//! topic of every tenant, private ones included, narrowed by the selectors
//! and the tenant the admin asks for.
//!
//! A selector matches topics outside any tenant, as clients write them; with
//! a tenant, the same selectors inside that tenant. A tenant without
//! selectors is the whole tenant: one wildcard selector per topic length,
//! since `*` stands for exactly one segment. Nothing asked is everything.
//! Unlike a client's stream, no permission narrows it and private topics
//! are not hidden: the admin key reads all.

use crate::domain::topic::{Selector, TopicFilter, MAX_SEGMENTS};

/// The tail's filter for `selectors` (as clients write them) in `tenant`.
pub fn filter(selectors: Vec<Selector>, tenant: Option<&str>) -> TopicFilter {
    let requested: Vec<Selector> = match tenant {
        None if selectors.is_empty() => return TopicFilter::everything(),
        None => selectors,
        Some(tenant) if selectors.is_empty() => (1..=MAX_SEGMENTS)
            .map(|n| {
                Selector::parse(&vec!["*"; n].join(":"))
                    .expect("wildcards are a selector")
                    .in_tenant(tenant)
            })
            .collect(),
        Some(tenant) => selectors.iter().map(|s| s.in_tenant(tenant)).collect(),
    };
    TopicFilter::new(requested, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::topic::Topic;

    fn selectors(raw: &[&str]) -> Vec<Selector> {
        raw.iter().map(|s| Selector::parse(s).unwrap()).collect()
    }

    fn shows(filter: &TopicFilter, topic: &str, tenant: Option<&str>) -> bool {
        let topic = Topic::parse(topic).unwrap();
        let topic = match tenant {
            Some(t) => topic.in_tenant(t),
            None => topic,
        };
        filter.matches(topic.as_str())
    }

    #[test]
    fn asking_nothing_shows_every_topic_of_every_tenant_and_private_ones() {
        let all = filter(Vec::new(), None);
        assert!(all.is_everything());
        assert!(shows(&all, "demo:a", None));
        assert!(shows(&all, "orders:1", Some("acme")));
        assert!(shows(&all, "participant:p1", None));
    }

    #[test]
    fn selectors_narrow_and_private_topics_stay_visible() {
        let demo = filter(selectors(&["demo:*", "participant:*"]), None);
        assert!(shows(&demo, "demo:a", None));
        assert!(!shows(&demo, "other:a", None));
        assert!(shows(&demo, "participant:p1", None));
        assert!(
            !shows(&demo, "demo:a", Some("acme")),
            "outside the tenant asked (none)"
        );
    }

    #[test]
    fn a_tenant_alone_is_all_of_that_tenant_and_nothing_else() {
        let acme = filter(Vec::new(), Some("acme"));
        assert!(shows(&acme, "orders", Some("acme")));
        assert!(shows(&acme, "a:b:c:d:e:f:g:h", Some("acme")));
        assert!(!shows(&acme, "orders:1", Some("globex")));
        assert!(!shows(&acme, "orders:1", None));
        let orders = filter(selectors(&["orders:*"]), Some("acme"));
        assert!(shows(&orders, "orders:1", Some("acme")));
        assert!(!shows(&orders, "invoices:1", Some("acme")));
    }
}
