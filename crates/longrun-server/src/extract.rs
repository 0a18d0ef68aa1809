//! Extractors whose rejections are problem documents instead of axum's plain-text answers.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, ProblemKind};
use crate::limits;

/// A JSON object request body. Syntax errors answer `400`; a body that is not an object,
/// breaks the schema (wrong type, unknown or missing field, naming the field) or nests deeper
/// than `ServerConfig::max_json_depth` `422`; a missing JSON `Content-Type` `415`; a body
/// over the limit `413`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::new(
                ProblemKind::UnsupportedMediaType,
                "Expected request with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let kind = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ProblemKind::PayloadTooLarge
                } else {
                    ProblemKind::BadRequest
                };
                ApiError::new(kind, rejection.body_text())
            })?;
        limits::check_depth(&bytes, state.config.max_json_depth)?;
        let axum::Json(value) = axum::Json::<Value>::from_bytes(&bytes)?;
        from_object(value).map(JsonBody)
    }
}

/// Whether the request declares a JSON body (`application/json` or `application/*+json`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(essence) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
    else {
        return false;
    };
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

/// Deserializes a request body that must be a JSON object (serde would also take an array
/// for a struct); errors name the offending field, e.g. `kwargs.a: invalid type`.
pub fn from_object<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::invalid("the request body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value)
        .map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))
}

/// Query parameters; anything that does not parse answers `400`.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct QueryParams<T>(pub T);

/// The `{id}` of an operation route. Ids are opaque to clients, so a value that is not a UUID
/// names no operation: `404`, like an unknown UUID.
#[derive(Debug, Clone, Copy)]
pub struct OperationId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for OperationId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        raw.parse()
            .map(OperationId)
            .map_err(|_| ApiError::operation_not_found(raw))
    }
}
