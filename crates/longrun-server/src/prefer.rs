//! The `Prefer: wait=N` request preference (RFC 7240 §4.3): how long a client is willing to
//! wait for a change. Other preferences and malformed values are ignored, as the RFC asks;
//! a wait longer than the server allows is clamped, and `Preference-Applied` says what was used.

use axum::http::{HeaderMap, HeaderValue, header::HeaderName};

/// The `Preference-Applied` response header.
pub static PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// The requested wait in seconds, clamped to `max_secs`; `None` when the request has none.
pub fn wait_secs(headers: &HeaderMap, max_secs: u32) -> Option<u32> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|pref| {
            // A preference may carry `;`-separated parameters after its value.
            let (name, value) = pref.split(';').next()?.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            let secs: u64 = value.trim().trim_matches('"').parse().ok()?;
            Some(secs.min(u64::from(max_secs)) as u32)
        })
}

/// The `Preference-Applied` value for a wait of `secs`.
pub fn applied(secs: u32) -> HeaderValue {
    HeaderValue::from_str(&format!("wait={secs}")).expect("ascii digits are a valid header value")
}
