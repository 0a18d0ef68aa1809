//! Request preferences (RFC 7240): `Prefer: wait=N` (§4.3), how long a client is willing to
//! wait for a change, and `Prefer: return=minimal` (§4.2), an answer without the resource.
//! Other preferences and malformed values are ignored, as the RFC asks; a wait longer than the
//! server allows is clamped, and `Preference-Applied` says what was used.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::{HeaderMap, HeaderValue, header::HeaderName, request::Parts};
use utoipa::IntoParams;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};

/// The `Preference-Applied` response header.
pub static PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// The request's preferences as `(name, value)` pairs, their `;` parameters dropped.
fn preferences(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|pref| {
            let (name, value) = pref.split(';').next()?.split_once('=')?;
            Some((name.trim(), value.trim().trim_matches('"')))
        })
}

/// The requested wait in seconds, clamped to `max_secs`; `None` when the request has none.
pub fn wait_secs(headers: &HeaderMap, max_secs: u32) -> Option<u32> {
    preferences(headers).find_map(|(name, value)| {
        if !name.eq_ignore_ascii_case("wait") {
            return None;
        }
        let secs: u64 = value.parse().ok()?;
        Some(secs.min(u64::from(max_secs)) as u32)
    })
}

/// The `Preference-Applied` value for a wait of `secs`.
pub fn applied(secs: u32) -> HeaderValue {
    HeaderValue::from_str(&format!("wait={secs}")).expect("ascii digits are a valid header value")
}

/// Whether the request asked for `return=minimal`: an answer without the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnMinimal(pub bool);

impl ReturnMinimal {
    /// The `Preference-Applied` value when it is honoured.
    pub const APPLIED: HeaderValue = HeaderValue::from_static("return=minimal");
}

/// The `Prefer` header, as the routes that take `return=minimal` document it.
impl IntoParams for ReturnMinimal {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let text =
            ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Null]));
        vec![
            ParameterBuilder::new()
                .name("Prefer")
                .parameter_in(ParameterIn::Header)
                .description(Some(
                    "`return=minimal`: answer `204` without the operation.",
                ))
                .required(Required::False)
                .schema(Some(text))
                .build(),
        ]
    }
}

impl<S: Sync> FromRequestParts<S> for ReturnMinimal {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self(preferences(&parts.headers).any(|(name, value)| {
            name.eq_ignore_ascii_case("return") && value.eq_ignore_ascii_case("minimal")
        })))
    }
}
