//! One Describe for every kind of resource: the records a service found (all, or those
//! named) are matched against EC2-style filters (the kind's own names, `tag:KEY` and
//! `tag-key`, values with `*` and `?` wildcards), given their tags, and cut into pages.
//!
//! Pages follow ids: with `max_results` the records are ordered by id and `next_token`
//! is the id the next page starts at, so a page stays right when resources come and go
//! between calls. Without it every match is returned in the service's own order.

use std::collections::HashMap;

use super::DaemonError;
use crate::state::tag::Tag;

/// Most filters, and values in all of them, one request may give.
const MAX_FILTERS: usize = 50;
const MAX_FILTER_VALUES: usize = 200;
/// The page sizes EC2 takes.
const PAGE_SIZES: std::ops::RangeInclusive<u32> = 5..=1000;
/// Longest next token (an id, or a resource id and a tag key).
const MAX_TOKEN_BYTES: usize = 300;

/// An EC2-style filter: the resources whose attribute `name` has one of `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The attribute: one of the kind's names, `tag:KEY` or `tag-key`.
    pub name: String,
    /// Any of these matches; `*` stands for any run of characters, `?` for one.
    pub values: Vec<String>,
}

/// Which part of a listing to return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// At most this many (5 to 1000); 0: every match, in one answer.
    pub max_results: u32,
    /// Where to start: the previous page's `next_token`.
    pub next_token: String,
}

/// A resource with its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged<T> {
    /// The resource.
    pub record: T,
    /// Its tags, by key.
    pub tags: Vec<Tag>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    /// The matching resources.
    pub items: Vec<Tagged<T>>,
    /// Where the next page starts; empty on the last.
    pub next_token: String,
}

/// What the shared Describe needs of a kind of resource.
pub trait Describable {
    /// The kind's own filter names.
    const FILTERS: &'static [&'static str];
    /// The id its tags are recorded under and pages are ordered by.
    fn id(&self) -> &str;
    /// The value of attribute `name`, one of [`Describable::FILTERS`].
    fn attribute(&self, name: &str) -> String;
}

/// The tags of each resource, by resource id.
pub type TagIndex = HashMap<String, Vec<Tag>>;

/// The page of `records` that match every filter, each with its tags from `tags`.
pub fn describe<T: Describable>(
    records: Vec<T>,
    filters: &[Filter],
    page: &Page,
    tags: &TagIndex,
) -> Result<Listing<T>, DaemonError> {
    check_filters(filters, T::FILTERS)?;
    let paged = page.max_results != 0 || !page.next_token.is_empty();
    if paged && !PAGE_SIZES.contains(&page.max_results) {
        return Err(DaemonError::InvalidParameter(format!(
            "max_results must be between {} and {}, got {}",
            PAGE_SIZES.start(),
            PAGE_SIZES.end(),
            page.max_results
        )));
    }
    if page.next_token.len() > MAX_TOKEN_BYTES || page.next_token.chars().any(char::is_control) {
        return Err(DaemonError::InvalidParameter("invalid next_token".into()));
    }
    let no_tags = Vec::new();
    let mut items: Vec<Tagged<T>> = records
        .into_iter()
        .map(|record| {
            let tags = tags.get(record.id()).unwrap_or(&no_tags).clone();
            Tagged { record, tags }
        })
        .filter(|item| filters.iter().all(|filter| matches_filter(item, filter)))
        .collect();
    if !paged {
        return Ok(Listing { items, next_token: String::new() });
    }
    items.sort_by(|a, b| a.record.id().cmp(b.record.id()));
    let start = items.partition_point(|item| item.record.id() < page.next_token.as_str());
    let mut rest = items.split_off(start);
    let next_token = match rest.get(page.max_results as usize) {
        Some(next) => next.record.id().to_owned(),
        None => String::new(),
    };
    rest.truncate(page.max_results as usize);
    Ok(Listing { items: rest, next_token })
}

fn check_filters(filters: &[Filter], known: &[&str]) -> Result<(), DaemonError> {
    let values: usize = filters.iter().map(|f| f.values.len()).sum();
    if filters.len() > MAX_FILTERS || values > MAX_FILTER_VALUES {
        return Err(DaemonError::InvalidParameter(format!(
            "at most {MAX_FILTERS} filters and {MAX_FILTER_VALUES} values in all"
        )));
    }
    for filter in filters {
        let tag_key = filter.name.strip_prefix("tag:");
        let valid = known.contains(&filter.name.as_str())
            || filter.name == "tag-key"
            || tag_key.is_some_and(|key| !key.is_empty());
        if !valid {
            return Err(DaemonError::InvalidParameter(format!(
                "filter {:?}; known: {}, tag:KEY, tag-key",
                filter.name,
                known.join(", ")
            )));
        }
    }
    Ok(())
}

fn matches_filter<T: Describable>(item: &Tagged<T>, filter: &Filter) -> bool {
    let any = |text: &str| filter.values.iter().any(|pattern| wildcard_match(pattern, text));
    if let Some(key) = filter.name.strip_prefix("tag:") {
        return item.tags.iter().any(|tag| tag.key == key && any(&tag.value));
    }
    if filter.name == "tag-key" {
        return item.tags.iter().any(|tag| any(&tag.key));
    }
    any(&item.record.attribute(&filter.name))
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters and `?`
/// for one (EC2's filter wildcards). Linear in the lengths: the last `*` is the only
/// point to come back to.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (pattern, text): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Thing(String, &'static str);

    impl Describable for Thing {
        const FILTERS: &'static [&'static str] = &["thing-id", "colour"];
        fn id(&self) -> &str {
            &self.0
        }
        fn attribute(&self, name: &str) -> String {
            match name {
                "thing-id" => self.0.clone(),
                _ => self.1.to_owned(),
            }
        }
    }

    fn things(n: usize) -> Vec<Thing> {
        (0..n).rev().map(|i| Thing(format!("t-{i:03}"), if i % 2 == 0 { "red" } else { "blue" })).collect()
    }

    fn filter(name: &str, values: &[&str]) -> Filter {
        Filter { name: name.into(), values: values.iter().map(|v| v.to_string()).collect() }
    }

    fn ids<T: Describable>(listing: &Listing<T>) -> Vec<&str> {
        listing.items.iter().map(|i| i.record.id()).collect()
    }

    #[test]
    fn filters_match_attributes_and_tags_with_wildcards() {
        let mut tags = TagIndex::new();
        tags.insert("t-001".into(), vec![Tag { key: "Name".into(), value: "web-1".into() }]);
        tags.insert("t-002".into(), vec![Tag { key: "Name".into(), value: "db".into() }]);
        let all = Page::default();
        let red = describe(things(4), &[filter("colour", &["red"])], &all, &tags).unwrap();
        assert_eq!(ids(&red), ["t-002", "t-000"], "the service's order without pages");
        let web = describe(things(4), &[filter("tag:Name", &["web-*"])], &all, &tags).unwrap();
        assert_eq!(ids(&web), ["t-001"]);
        assert_eq!(web.items[0].tags[0].value, "web-1");
        let named = describe(things(4), &[filter("tag-key", &["Na?e"])], &all, &tags).unwrap();
        assert_eq!(ids(&named), ["t-002", "t-001"]);
        let both = [filter("tag-key", &["Name"]), filter("colour", &["blue", "green"])];
        assert_eq!(ids(&describe(things(4), &both, &all, &tags).unwrap()), ["t-001"]);
        for bad in [filter("size", &["1"]), filter("tag:", &["x"])] {
            let err = describe(things(1), &[bad], &all, &tags).unwrap_err();
            assert!(matches!(err, DaemonError::InvalidParameter(_)), "{err}");
        }
        let many = vec![filter("colour", &["red"]); MAX_FILTERS + 1];
        assert!(describe(things(1), &many, &all, &tags).is_err(), "filters are capped");
    }

    #[test]
    fn pages_follow_ids_and_survive_changes_between_calls() {
        let tags = TagIndex::new();
        let page = |token: &str| Page { max_results: 5, next_token: token.into() };
        let first = describe(things(12), &[], &page(""), &tags).unwrap();
        assert_eq!(ids(&first), ["t-000", "t-001", "t-002", "t-003", "t-004"]);
        assert_eq!(first.next_token, "t-005");
        // t-005 went away meanwhile: the next page starts at the next id there is.
        let fewer: Vec<Thing> = things(12).into_iter().filter(|t| t.0 != "t-005").collect();
        let second = describe(fewer, &[], &page(&first.next_token), &tags).unwrap();
        assert_eq!(ids(&second), ["t-006", "t-007", "t-008", "t-009", "t-010"]);
        let last = describe(things(12), &[], &page(&second.next_token), &tags).unwrap();
        assert_eq!((ids(&last), last.next_token.as_str()), (vec!["t-011"], ""));
        for bad in
            [Page { max_results: 4, next_token: String::new() }, Page { max_results: 1001, ..page("") }]
        {
            assert!(describe(things(1), &[], &bad, &tags).is_err(), "{bad:?}");
        }
        assert!(describe(things(1), &[], &page(&"x".repeat(MAX_TOKEN_BYTES + 1)), &tags).is_err());
    }

    #[test]
    fn wildcards() {
        for (pattern, text, expected) in [
            ("web-*", "web-1", true),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("?", "", false),
            ("??", "ab", true),
            ("web", "web-1", false),
            ("*-1", "web-1", true),
        ] {
            assert_eq!(wildcard_match(pattern, text), expected, "{pattern} ~ {text}");
        }
    }
}
