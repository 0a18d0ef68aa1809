//! Every error answer is an RFC 9457 problem (`application/problem+json`) with `type`,
//! `title`, `status` and `detail`, plus extension members where they help.
//!
//! The `type` URIs (relative to the server) and when they are used:
//!
//! | type | status | when |
//! |---|---|---|
//! | `/problems/bad-request` | 400 | malformed JSON, bad query parameter (unknown `view`, `limit` out of range, bad cursor), bad header |
//! | `/problems/unauthorized` | 401 | authentication is on and the `Authorization: Bearer` key is missing, malformed, unknown, wrong or revoked (`WWW-Authenticate: Bearer`) |
//! | `/problems/forbidden` | 403 | the key is valid but its role may not do this (a worker reading operations, a submitter claiming, a worker claiming names or queues outside its key) |
//! | `/problems/not-found` | 404 | unknown route, or no operation with that id (a path id that is not a UUID names no operation, so it is `404` too) |
//! | `/problems/method-not-allowed` | 405 | the route exists but not with this method (`Allow` lists the methods) |
//! | `/problems/not-terminal` | 409 | deleting an operation that has not finished |
//! | `/problems/idempotency-key-in-flight` | 409 | a submit whose `Idempotency-Key` is still being processed by an earlier request (`Retry-After`) |
//! | `/problems/invalid-transition` | 409 | the lifecycle forbids the change (cancelling a finished operation, reporting twice); nothing was changed |
//! | `/problems/stale-lease` | 409 | a worker report with a lease that is no longer current; nothing was changed |
//! | `/problems/operation-failed` | 409 | the result of a failed operation (`error` member: `{code, type, message}`) |
//! | `/problems/operation-cancelled` | 409 | the result of a cancelled operation |
//! | `/problems/payload-too-large` | 413 | request body over the configured limit |
//! | `/problems/unsupported-media-type` | 415 | a JSON body without `Content-Type: application/json` |
//! | `/problems/validation-failed` | 422 | well-formed JSON that breaks the schema or a rule (wrong type, unknown or missing field, bad name, out-of-range number, a field over its size limit, nesting too deep) |
//! | `/problems/idempotency-key-reused` | 422 | an `Idempotency-Key` used before with a different body |
//! | `/problems/parent-not-found` | 422 | `parentId` names no operation (that the caller may see) |
//! | `/problems/rate-limited` | 429 | the key (or client) is over its rate limit (`Retry-After`) |
//! | `/problems/unavailable` | 503 | the database failed or cannot be reached (the cause is logged, not shown) |
//! | `/problems/timeout` | 503 | the request took longer than the configured request timeout |

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use longrun_core::{OperationError, Status, StoreError, TransitionError};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// The kinds of problem the API answers with; each has a fixed `type` URI, title and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// 400: the request is malformed.
    BadRequest,
    /// 401: no valid API key.
    Unauthorized,
    /// 403: the key's role may not do this.
    Forbidden,
    /// 404: no such route or operation.
    NotFound,
    /// 405: the route does not accept this method.
    MethodNotAllowed,
    /// 409: only a finished operation can be deleted.
    NotTerminal,
    /// 409: the lifecycle forbids the change.
    InvalidTransition,
    /// 409: an earlier request with the same idempotency key is still being processed.
    IdempotencyKeyInFlight,
    /// 409: the worker's lease is no longer current.
    StaleLease,
    /// 409: the operation failed, so it has no result.
    OperationFailed,
    /// 409: the operation was cancelled, so it has no result.
    OperationCancelled,
    /// 413: the body is over the limit.
    PayloadTooLarge,
    /// 415: the body is not declared as JSON.
    UnsupportedMediaType,
    /// 422: the body breaks the schema or a rule.
    ValidationFailed,
    /// 422: the idempotency key was used with another body.
    IdempotencyKeyReused,
    /// 422: the parent operation does not exist.
    ParentNotFound,
    /// 429: over the rate limit.
    RateLimited,
    /// 503: the database is unavailable.
    Unavailable,
    /// 503: the request took too long.
    Timeout,
}

impl ProblemKind {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        use ProblemKind::*;
        match self {
            BadRequest => StatusCode::BAD_REQUEST,
            Unauthorized => StatusCode::UNAUTHORIZED,
            Forbidden => StatusCode::FORBIDDEN,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            NotTerminal
            | InvalidTransition
            | IdempotencyKeyInFlight
            | StaleLease
            | OperationFailed
            | OperationCancelled => StatusCode::CONFLICT,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ValidationFailed | IdempotencyKeyReused | ParentNotFound => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Unavailable | Timeout => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `type` URI.
    pub fn type_uri(self) -> &'static str {
        use ProblemKind::*;
        match self {
            BadRequest => "/problems/bad-request",
            Unauthorized => "/problems/unauthorized",
            Forbidden => "/problems/forbidden",
            NotFound => "/problems/not-found",
            MethodNotAllowed => "/problems/method-not-allowed",
            NotTerminal => "/problems/not-terminal",
            InvalidTransition => "/problems/invalid-transition",
            IdempotencyKeyInFlight => "/problems/idempotency-key-in-flight",
            StaleLease => "/problems/stale-lease",
            OperationFailed => "/problems/operation-failed",
            OperationCancelled => "/problems/operation-cancelled",
            PayloadTooLarge => "/problems/payload-too-large",
            UnsupportedMediaType => "/problems/unsupported-media-type",
            ValidationFailed => "/problems/validation-failed",
            IdempotencyKeyReused => "/problems/idempotency-key-reused",
            ParentNotFound => "/problems/parent-not-found",
            RateLimited => "/problems/rate-limited",
            Unavailable => "/problems/unavailable",
            Timeout => "/problems/timeout",
        }
    }

    /// The short, fixed summary.
    pub fn title(self) -> &'static str {
        use ProblemKind::*;
        match self {
            BadRequest => "Bad request",
            Unauthorized => "Unauthorized",
            Forbidden => "Forbidden",
            NotFound => "Not found",
            MethodNotAllowed => "Method not allowed",
            NotTerminal => "Operation not finished",
            InvalidTransition => "Change not allowed",
            IdempotencyKeyInFlight => "Idempotent request in progress",
            StaleLease => "Stale lease",
            OperationFailed => "Operation failed",
            OperationCancelled => "Operation cancelled",
            PayloadTooLarge => "Request body too large",
            UnsupportedMediaType => "Unsupported media type",
            ValidationFailed => "Validation failed",
            IdempotencyKeyReused => "Idempotency key reused",
            ParentNotFound => "Parent operation not found",
            RateLimited => "Too many requests",
            Unavailable => "Service unavailable",
            Timeout => "Request timed out",
        }
    }
}

/// An RFC 9457 problem details body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// URI identifying the kind of problem, e.g. `/problems/not-found`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this occurrence.
    pub detail: String,
    /// Extension members (e.g. `operationStatus`, `error` of a failed one).
    #[serde(flatten)]
    #[schema(ignore)]
    pub extensions: Map<String, Value>,
}

/// The error type of every handler: renders as `application/problem+json`.
#[derive(Debug, Clone)]
pub struct ApiError {
    kind: ProblemKind,
    detail: String,
    extensions: Map<String, Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// A problem of `kind` with a human-readable `detail`.
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            extensions: Map::new(),
            headers: Vec::new(),
        }
    }

    /// The kind of problem.
    pub fn kind(&self) -> ProblemKind {
        self.kind
    }

    /// Adds a response header (e.g. `Retry-After`, `WWW-Authenticate`).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds `Retry-After: secs`.
    pub fn retry_after(self, secs: u64) -> Self {
        self.with_header(header::RETRY_AFTER, HeaderValue::from(secs))
    }

    /// Adds an extension member.
    pub fn with(mut self, name: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.extensions.insert(name.to_owned(), value);
        self
    }

    /// The same problem about the part of the request at `location` (e.g. `operations[3]`),
    /// which `detail` names first; the location is also the `pointer` extension member.
    pub fn at(mut self, location: &str, pointer: &str) -> Self {
        self.detail = format!("{location}: {}", self.detail);
        self.with("pointer", pointer)
    }

    /// 400 with `detail`.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::BadRequest, detail)
    }

    /// 422 with `detail`.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::ValidationFailed, detail)
    }

    /// 404 for an operation id.
    pub fn operation_not_found(id: impl std::fmt::Display) -> Self {
        Self::new(ProblemKind::NotFound, format!("operation {id} not found"))
    }

    /// 409 for the result of a failed operation, carrying its error.
    pub fn operation_failed(error: Option<&OperationError>) -> Self {
        let detail = error.map_or_else(
            || "the operation failed".to_owned(),
            |e| format!("the operation failed: {}", e.message),
        );
        Self::new(ProblemKind::OperationFailed, detail).with("error", error)
    }

    /// The body it renders as.
    pub fn problem(&self) -> Problem {
        Problem {
            problem_type: self.kind.type_uri().to_owned(),
            title: self.kind.title().to_owned(),
            status: self.kind.status().as_u16(),
            detail: self.detail.clone(),
            extensions: self.extensions.clone(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.title(), self.detail)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (
            self.kind.status(),
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            )],
            body,
        )
            .into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl From<longrun_core::validate::InvalidInput> for ApiError {
    fn from(e: longrun_core::validate::InvalidInput) -> Self {
        Self::invalid(e.0)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => Self::operation_not_found(id),
            e @ StoreError::KeyNotFound(_) => Self::new(ProblemKind::NotFound, e.to_string()),
            StoreError::Transition(TransitionError::Illegal { change, from }) => {
                transition_refused(change, from)
            }
            StoreError::Transition(e @ TransitionError::StaleLease { .. }) => {
                Self::new(ProblemKind::StaleLease, format!("{e}; nothing was changed"))
            }
            e @ StoreError::IdempotencyMismatch(_) => {
                Self::new(ProblemKind::IdempotencyKeyReused, e.to_string())
            }
            e @ StoreError::ParentNotFound(_) => {
                Self::new(ProblemKind::ParentNotFound, e.to_string())
            }
            StoreError::NotTerminal { id, status } => Self::new(
                ProblemKind::NotTerminal,
                format!("operation {id} is {status}; only a finished operation can be deleted"),
            )
            .with("operationStatus", status),
            StoreError::Database(cause) => {
                tracing::error!(error = %cause, "storage failure");
                Self::new(
                    ProblemKind::Unavailable,
                    "the database is unavailable; try again later",
                )
            }
        }
    }
}

fn transition_refused(change: &str, from: Status) -> ApiError {
    let detail = if from.is_terminal() {
        format!("the operation is already {from}: cannot {change} it; nothing was changed")
    } else {
        format!("cannot {change} an operation that is {from}; nothing was changed")
    };
    ApiError::new(ProblemKind::InvalidTransition, detail).with("operationStatus", from)
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let kind = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ProblemKind::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemKind::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => ProblemKind::ValidationFailed,
            _ => ProblemKind::BadRequest,
        };
        Self::new(kind, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}
