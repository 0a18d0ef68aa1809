//! Extractors whose rejections are problem documents instead of axum's plain-text answers.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::Value;
use utoipa::PartialSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{Schema, SchemaType, Type};
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

impl<T: DeserializeOwned + PartialSchema> FromRequest<AppState> for JsonBody<T> {
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
        // Most bodies are what `T` expects and parse straight from the bytes. Any other (a
        // syntax error, `2.0` for an integer, a schema error, a repeated member) takes the
        // way through a `Value`, which decides as before: it answers the same errors, takes
        // such floats as integers and a repeated member's last value.
        if starts_an_object(&bytes)
            && let Ok(body) = serde_json::from_slice(&bytes)
        {
            return Ok(JsonBody(body));
        }
        let axum::Json(mut value) = axum::Json::<Value>::from_bytes(&bytes)?;
        from_object(&mut value).map(JsonBody)
    }
}

/// Whether `bytes` begin, after JSON whitespace, with `{`: serde would also read a struct
/// from an array, which a body must not be.
fn starts_an_object(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|&b| b == b'{')
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
///
/// JSON Schema counts `1.0` as an integer and serde does not, so first each member that `T`'s
/// schema types as an integer and that holds a float without a fractional part is rewritten
/// in `value` as that integer: what the OpenAPI document accepts, the server accepts. `T`'s
/// schema is built only for a body that holds such a float: building it costs more than the
/// rest of a submit.
pub fn from_object<T: DeserializeOwned + PartialSchema>(value: &mut Value) -> Result<T, ApiError> {
    let Value::Object(members) = value else {
        return Err(ApiError::invalid("the request body must be a JSON object"));
    };
    if members.values().any(|member| as_integer(member).is_some())
        && let RefOr::T(Schema::Object(schema)) = T::schema()
    {
        for (name, property) in &schema.properties {
            if let (Some(member), RefOr::T(Schema::Object(property))) =
                (members.get_mut(name), property)
                && allows_integer(&property.schema_type)
                && let Some(integer) = as_integer(member)
            {
                *member = integer;
            }
        }
    }
    serde_path_to_error::deserialize(&*value)
        .map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))
}

fn allows_integer(schema_type: &SchemaType) -> bool {
    match schema_type {
        SchemaType::Type(one) => *one == Type::Integer,
        SchemaType::Array(types) => types.contains(&Type::Integer),
        SchemaType::AnyValue => false,
    }
}

/// A float without a fractional part (e.g. `3.0`) that fits a 64-bit integer, as that
/// integer; `None` for every other value.
fn as_integer(value: &Value) -> Option<Value> {
    let float = value
        .as_number()
        .filter(|n| n.is_f64())
        .and_then(|n| n.as_f64())?;
    // 2^63 and 2^64 are exact as f64; `as` saturates, so check the range first.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if float.fract() != 0.0 || !(-TWO_POW_63..2.0 * TWO_POW_63).contains(&float) {
        return None;
    }
    Some(if float < 0.0 {
        Value::from(float as i64)
    } else {
        Value::from(float as u64)
    })
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
