//! Turning a submit request into a validated [`NewOperation`]: field size limits, defaults,
//! the retry policy, trace context, the owner and the idempotency fingerprint.

use axum::http::HeaderMap;
use longrun_core::traceparent::TraceIds;
use longrun_core::wire::SubmitRequest;
use longrun_core::{Idempotency, NewOperation, Owner, SubmitDefaults};
use serde_json::Value;

use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::extract::from_object;
use crate::fingerprint::fingerprint;
use crate::limits;

/// The `Idempotency-Key` request header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Longest accepted `Idempotency-Key`.
const MAX_KEY_CHARS: usize = 255;

/// The submit request in the parsed `body` (integer members written as `1.0` become `1`
/// there, see [`from_object`]): `422` when it breaks the schema or one of its `args`, `kwargs`
/// and `content` is over `ServerConfig::max_field_bytes`.
pub fn request(body: &mut Value, config: &ServerConfig) -> Result<SubmitRequest, ApiError> {
    let request: SubmitRequest = from_object(body)?;
    for (field, value) in [
        ("args", &request.args),
        ("kwargs", &request.kwargs),
        ("content", &request.content),
    ] {
        limits::check_size(field, value.as_ref(), config.max_field_bytes)?;
    }
    Ok(request)
}

/// Validates `request` (parsed from `body`) and fills in every default. `request_url`
/// (absolute) becomes `meta.url` when the body gives none; `owner` comes from the caller;
/// `idempotency_key` (see [`idempotency_key`]) is paired with the body's fingerprint.
pub fn new_operation(
    request: SubmitRequest,
    body: &Value,
    context: &SubmitContext,
    idempotency_key: Option<String>,
    config: &ServerConfig,
    owner: Owner,
) -> Result<NewOperation, ApiError> {
    let defaults = SubmitDefaults {
        retry_policy: config.default_retry_policy,
        owner,
        trace: context.trace.clone(),
        request_url: Some(context.request_url.clone()),
    };
    let mut new = NewOperation::from_request(request, defaults)?;
    new.idempotency = idempotency_key.map(|key| Idempotency {
        key,
        fingerprint: fingerprint(body),
    });
    Ok(new)
}

/// What a submit request's headers and URL give every operation it creates.
#[derive(Debug, Clone)]
pub struct SubmitContext {
    /// The `traceparent` header's ids (generated when absent or invalid).
    pub trace: TraceIds,
    /// The absolute URL of the request.
    pub request_url: String,
}

impl SubmitContext {
    /// The context of a request to `request_url` with `headers`.
    pub fn new(headers: &HeaderMap, request_url: String) -> Self {
        let trace = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(TraceIds::parse)
            .unwrap_or_else(TraceIds::generate);
        Self { trace, request_url }
    }
}

/// The request's `Idempotency-Key`. The key is 1 to 255 visible ASCII characters other than
/// `"`, bare or quoted as the IETF draft writes it (a structured field string), so `"k"` and
/// `k` are the same key; anything else is `400`.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .map(|k| {
            let k = k.trim();
            k.strip_prefix('"')
                .and_then(|k| k.strip_suffix('"'))
                .unwrap_or(k)
        })
        .filter(|k| {
            (1..=MAX_KEY_CHARS).contains(&k.len())
                && k.bytes().all(|b| b.is_ascii_graphic() && b != b'"')
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`Idempotency-Key` must be 1 to {MAX_KEY_CHARS} visible ASCII characters other than `\"`, optionally in double quotes"
            ))
        })?;
    Ok(Some(key.to_owned()))
}

/// The idempotency key of item `index` of a batch sent with `Idempotency-Key: key`. A header
/// key has no spaces, so these never collide with the key of a single submit.
pub fn batch_item_key(key: &str, index: usize) -> String {
    format!("{key} {index}")
}
