//! Answers that many routes document alike, named once for their `#[utoipa::path]` responses.
//! These types only document: the answers themselves are made by the handlers and `ApiError`.
#![expect(dead_code, reason = "documentation types, never built")]

use utoipa::IntoResponses;

use crate::error::Problem;

/// The store could not be reached.
#[derive(IntoResponses)]
#[response(
    status = 503,
    description = "Database unavailable.",
    content_type = "application/problem+json"
)]
pub(super) struct Unavailable(Problem);

/// The path names no operation (the caller may see).
#[derive(IntoResponses)]
#[response(
    status = 404,
    description = "No such operation.",
    content_type = "application/problem+json"
)]
pub(super) struct OperationNotFound(Problem);

/// A JSON body that does not parse.
#[derive(IntoResponses)]
#[response(
    status = 400,
    description = "Malformed JSON.",
    content_type = "application/problem+json"
)]
pub(super) struct MalformedJson(Problem);

/// A request body refused before it is read.
#[derive(IntoResponses)]
pub(super) enum BodyRefused {
    /// Over the body limit.
    #[response(
        status = 413,
        description = "Body over the size limit.",
        content_type = "application/problem+json"
    )]
    TooLarge(Problem),
    /// Not JSON.
    #[response(
        status = 415,
        description = "Body not sent as `application/json`.",
        content_type = "application/problem+json"
    )]
    NotJson(Problem),
}

/// A report answered without the operation, as the request preferred.
#[derive(IntoResponses)]
#[response(
    status = 204,
    description = "Recorded (`Prefer: return=minimal`).",
    headers(("Preference-Applied" = String, description = "`return=minimal`."))
)]
pub(super) struct RecordedMinimal;

/// A worker's call under a lease that another claim or the lease's expiry has ended.
#[derive(IntoResponses)]
#[response(
    status = 409,
    description = "The lease is no longer current; nothing was changed.",
    content_type = "application/problem+json"
)]
pub(super) struct LeaseNotCurrent(Problem);

/// A worker's outcome under a lease no longer current, or for an attempt already reported.
#[derive(IntoResponses)]
#[response(
    status = 409,
    description = "The lease is no longer current, or the attempt was already reported; nothing was changed.",
    content_type = "application/problem+json"
)]
pub(super) struct OutcomeNotRecorded(Problem);
