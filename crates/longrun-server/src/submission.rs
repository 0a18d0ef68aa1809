//! Turning a submit request into a validated [`NewOperation`]: defaults, the retry policy,
//! trace context, the owner and the idempotency fingerprint.

use axum::http::HeaderMap;
use longrun_core::traceparent::TraceIds;
use longrun_core::wire::SubmitRequest;
use longrun_core::{Idempotency, NewOperation, SubmitDefaults};
use serde_json::Value;

use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::extract::from_object;
use crate::fingerprint::fingerprint;

/// The `Idempotency-Key` request header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Longest accepted `Idempotency-Key`.
const MAX_KEY_CHARS: usize = 255;

/// Validates the parsed submit `body` and fills in every default. `request_url` (absolute)
/// becomes `meta.url` when the body gives none.
pub fn new_operation(
    body: &Value,
    headers: &HeaderMap,
    request_url: String,
    config: &ServerConfig,
) -> Result<NewOperation, ApiError> {
    let request: SubmitRequest = from_object(body.clone())?;
    let trace = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceIds::parse)
        .unwrap_or_else(TraceIds::generate);
    let defaults = SubmitDefaults {
        retry_policy: config.default_retry_policy,
        owner: config.default_owner.clone(),
        trace,
        request_url: Some(request_url),
    };
    let mut new = NewOperation::from_request(request, defaults)?;
    new.idempotency = idempotency(headers, body)?;
    Ok(new)
}

/// The request's `Idempotency-Key` with the body's fingerprint; `400` for an empty, overlong
/// or non-ASCII key.
fn idempotency(headers: &HeaderMap, body: &Value) -> Result<Option<Idempotency>, ApiError> {
    let Some(raw) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .map(|k| k.trim().trim_matches('"'))
        .filter(|k| {
            !k.is_empty() && k.len() <= MAX_KEY_CHARS && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`Idempotency-Key` must be 1 to {MAX_KEY_CHARS} visible ASCII characters"
            ))
        })?;
    Ok(Some(Idempotency {
        key: key.to_owned(),
        fingerprint: fingerprint(body),
    }))
}
