//! Extractors whose rejections are problem documents instead of axum's plain-text answers.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::error::ApiError;

/// A JSON object request body. Syntax errors answer `400`; a body that is not an object or
/// breaks the schema (wrong type, unknown or missing field) `422`, naming the field; a missing
/// JSON `Content-Type` `415`; a body over the limit `413`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<Value>::from_request(request, state).await?;
        from_object(value).map(JsonBody)
    }
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
