//! Turning a submit request into a validated [`NewOperation`]: defaults, the retry policy,
//! trace context, the owner and the idempotency fingerprint.

use axum::http::HeaderMap;
use longrun_core::traceparent::TraceIds;
use longrun_core::wire::SubmitRequest;
use longrun_core::{Idempotency, NewOperation};
use serde_json::Value;

use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::extract::from_object;
use crate::fingerprint::fingerprint;
use crate::validate;

/// The `Idempotency-Key` request header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Longest accepted `Idempotency-Key`.
const MAX_KEY_CHARS: usize = 255;

/// Longest retry backoff (base or cap) a submit may ask for: one day.
const MAX_BACKOFF_SECS: f64 = 86_400.0;

/// Validates the parsed submit `body` and fills in every default. `request_url` (absolute)
/// becomes `meta.url` when the body gives none.
pub fn new_operation(
    body: &Value,
    headers: &HeaderMap,
    request_url: String,
    config: &ServerConfig,
) -> Result<NewOperation, ApiError> {
    let request: SubmitRequest = from_object(body.clone())?;

    validate::name("name", &request.name)?;
    let queue = request.queue.unwrap_or_else(|| "default".into());
    validate::name("queue", &queue)?;
    let args = request.args.unwrap_or_else(|| Value::Array(vec![]));
    if !args.is_array() {
        return Err(ApiError::invalid("`args` must be a JSON array"));
    }
    let kwargs = request
        .kwargs
        .unwrap_or_else(|| Value::Object(Default::default()));
    if !kwargs.is_object() {
        return Err(ApiError::invalid("`kwargs` must be a JSON object"));
    }

    let mut retry_policy = config.default_retry_policy;
    if let Some(max) = request.max_retries {
        retry_policy.max_retries = max;
    }
    if let Some(base) = request.backoff_base_secs {
        validate::range("backoffBaseSecs", base, 0.0, MAX_BACKOFF_SECS)?;
        retry_policy.backoff_base_secs = base;
    }
    if let Some(cap) = request.backoff_cap_secs {
        validate::range("backoffCapSecs", cap, 0.0, MAX_BACKOFF_SECS)?;
        retry_policy.backoff_cap_secs = cap;
    }

    let mut meta = request.meta.unwrap_or_default();
    meta.url.get_or_insert(request_url);

    let trace = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceIds::parse)
        .unwrap_or_else(TraceIds::generate);

    Ok(NewOperation {
        name: request.name,
        queue,
        priority: request.priority.unwrap_or(0),
        args,
        kwargs,
        content: request.content,
        meta,
        parent_id: request.parent_id,
        run_at: request.run_at,
        retry_policy,
        trace,
        owner: config.default_owner.clone(),
        idempotency: idempotency(headers, body)?,
    })
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
