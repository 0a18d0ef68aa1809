//! The absolute base URL (scheme and authority) clients reach this server at, for `Location`
//! headers and the absolute URLs inside operations.

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use std::convert::Infallible;

use crate::AppState;

/// `ServerConfig::public_url` when set, else `http://{Host}` of the request (or
/// `http://localhost` when the request names no host). Never ends with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(pub String);

impl BaseUrl {
    /// The absolute URL of a path on this server (`path` starts with `/`).
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }

    /// The URL of an operation.
    pub fn operation(&self, id: uuid::Uuid) -> String {
        self.join(&format!("/v1/operations/{id}"))
    }
}

impl FromRequestParts<AppState> for BaseUrl {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        if let Some(url) = &state.config.public_url {
            return Ok(BaseUrl(url.trim_end_matches('/').to_owned()));
        }
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b))
            })
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or("localhost");
        Ok(BaseUrl(format!("http://{host}")))
    }
}
