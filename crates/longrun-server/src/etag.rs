//! Entity tags: an operation's `ETag` is its version, quoted; `If-None-Match` is compared
//! weakly (RFC 9110 §13.1.2), so `W/"3"` matches `"3"` and `*` matches any operation.

use axum::http::{HeaderMap, HeaderValue, header};

/// The `ETag` of version `version`.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\""))
        .expect("a quoted integer is a valid header value")
}

/// Whether the request's `If-None-Match` matches `version` (the client's copy is current).
pub fn none_match(headers: &HeaderMap, version: i64) -> bool {
    tags(headers).any(|tag| tag == "*" || tag_version(tag) == Some(version))
}

/// The version named by the request's `If-None-Match`, when it names exactly one.
pub fn if_none_match_version(headers: &HeaderMap) -> Option<i64> {
    let mut versions = tags(headers).filter_map(tag_version);
    let first = versions.next()?;
    versions.next().is_none().then_some(first)
}

fn tags(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

fn tag_version(tag: &str) -> Option<i64> {
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}
