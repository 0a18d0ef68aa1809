//! Request and response bodies of the HTTP API, shared by the server and the client.
//!
//! Requests reject unknown fields, so a misspelt option is an error rather than ignored.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::{Ref, RefOr};
use uuid::Uuid;

use crate::{Meta, Operation, Resource};

/// `POST /v1/operations`: submit an operation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubmitRequest {
    /// Task kind, e.g. `reports.render`: 1–200 characters from `A-Z a-z 0-9 . _ : -`.
    #[schema(min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9._:-]+$")]
    pub name: String,
    /// Positional arguments (a JSON array; default `[]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Value>>)]
    pub args: Option<Value>,
    /// Keyword arguments (a JSON object; default `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub kwargs: Option<Value>,
    /// Free JSON kept with the operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// Origin metadata; `url` defaults to the URL of this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// The operation this one is a child of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<Uuid>,
    /// Retries after the first attempt (server default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Backoff before the first retry, seconds (server default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86400)]
    pub backoff_base_secs: Option<f64>,
    /// Longest backoff, seconds (server default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86400)]
    pub backoff_cap_secs: Option<f64>,
    /// Not before this instant (RFC 3339).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub run_at: Option<OffsetDateTime>,
    /// Queue (default `default`), same characters as `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9._:-]+$")]
    pub queue: Option<String>,
    /// Higher runs first (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

/// `POST /v1/operations:batch`: submit many operations in one request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchSubmitRequest {
    /// The operations, each as `POST /v1/operations` takes it.
    #[schema(min_items = 1, max_items = 1000)]
    pub operations: Vec<SubmitRequest>,
}

/// `POST /v1/operations` with `Prefer: return=minimal`: the submitted operation's id instead
/// of the operation. Closed (`additionalProperties: false`), so that an operation, which has an
/// `id` too, is never also a `SubmittedId` in the answer's `oneOf`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmittedId {
    /// The operation's id.
    pub id: Uuid,
}

/// `POST /v1/operations:batch` with `Prefer: return=minimal`: the submitted operations' ids
/// instead of the operations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubmittedIds {
    /// The operations' ids, in request order.
    pub ids: Vec<Uuid>,
}

/// `GET /v1/operations`: a page of operations, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationList<T = Operation> {
    /// The operations, in the requested view.
    pub operations: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /v1/workers/claim`: ask for work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimRequest {
    /// The worker's name, recorded on the operations it takes (same characters as a task name).
    #[schema(min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9._:-]+$")]
    pub worker: String,
    /// Only these task names (absent or empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = task_names)]
    pub names: Vec<String>,
    /// Only these queues (absent or empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = queue_names)]
    pub queues: Vec<String>,
    /// At most this many operations (default 1).
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max: u32,
    /// Lease length in seconds (default 30).
    #[serde(default = "thirty")]
    #[schema(minimum = 1, maximum = 3600)]
    pub lease_secs: u32,
    /// Wait up to this many seconds for work when none is ready (default 0).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 60)]
    pub wait_secs: u32,
}

/// The schema of `ClaimRequest::names` (the doc comment of a field with `schema_with` is lost).
fn task_names() -> utoipa::openapi::schema::Array {
    names("Only these task names (absent or empty: any).")
}

/// The schema of `ClaimRequest::queues`.
fn queue_names() -> utoipa::openapi::schema::Array {
    names("Only these queues (absent or empty: any).")
}

/// A list of names, each like `SubmitRequest::name`.
fn names(description: &str) -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let name = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(200))
        .pattern(Some("^[A-Za-z0-9._:-]+$"));
    ArrayBuilder::new()
        .items(name)
        .description(Some(description))
        .build()
}

fn one() -> u32 {
    1
}

fn thirty() -> u32 {
    30
}

/// One operation leased to the worker.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseGrant {
    /// The lease token every report must carry.
    pub lease_id: Uuid,
    /// When the lease runs out unless heartbeated.
    #[serde(with = "time::serde::rfc3339")]
    pub lease_expires_at: OffsetDateTime,
    /// The operation (canonical), now running.
    pub operation: Operation,
}

/// The answer to a claim (empty when nothing was ready within `waitSecs`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimResponse {
    /// The leases granted.
    pub leases: Vec<LeaseGrant>,
}

/// `POST /v1/operations/{id}/heartbeat`: the worker is alive; optional progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The current lease.
    pub lease_id: Uuid,
    /// Progress, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 100)]
    pub progress_pct: Option<f64>,
    /// Short progress text (at most 1000 characters, no control characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 1000, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub status_detail: Option<String>,
    /// New lease length from now, seconds (default: 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3600)]
    pub lease_secs: Option<u32>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResponse {
    /// A client asked to cancel: stop and report a failure (the operation then ends cancelled).
    pub cancel_requested: bool,
    /// The new end of the lease.
    #[serde(with = "time::serde::rfc3339")]
    pub lease_expires_at: OffsetDateTime,
}

/// `POST /v1/operations/{id}/complete`: the attempt succeeded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompleteRequest {
    /// The current lease.
    pub lease_id: Uuid,
    /// The output (any JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Where the result lives, if elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_url: Option<String>,
    /// Resources created or changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Resource>,
}

/// The error a worker reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReportedError {
    /// Error class, e.g. `ValueError`: 1–200 characters, not blank, no control characters.
    #[serde(rename = "type")]
    // The pattern spells out Unicode white space: `\s` differs between regex dialects.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub error_type: String,
    /// Human-readable message.
    pub message: String,
    /// Stable machine-readable code (default: `error`), same characters as a task name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9._:-]+$")]
    pub code: Option<String>,
}

/// `POST /v1/operations/{id}/fail`: the attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailRequest {
    /// The current lease.
    pub lease_id: Uuid,
    /// What went wrong.
    pub error: ReportedError,
    /// Whether another attempt may succeed (retried while the policy allows).
    pub retryable: bool,
}

/// Most reports in one `POST /v1/workers/reports`.
pub const MAX_REPORTS: usize = 1000;

/// `POST /v1/workers/reports`: reports on many leases in one request, each recorded as its own
/// `POST /v1/operations/{id}/complete`, `/fail` or `/release` would record it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReportsRequest {
    /// The reports, answered in this order.
    #[schema(min_items = 1, max_items = 1000)]
    pub reports: Vec<LeaseReport>,
}

/// One report of [`ReportsRequest`]: the operation, and exactly one of `complete`, `fail` and
/// `release`, with the body that route takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    deny_unknown_fields,
    expecting = "a report: `id` and exactly one of `complete`, `fail` and `release`, each the body of its route"
)]
pub enum LeaseReport {
    /// The attempt succeeded.
    Complete {
        /// The operation.
        id: Uuid,
        /// As `POST /v1/operations/{id}/complete` takes it.
        complete: CompleteRequest,
    },
    /// The attempt failed.
    Fail {
        /// The operation.
        id: Uuid,
        /// As `POST /v1/operations/{id}/fail` takes it.
        fail: FailRequest,
    },
    /// The operation goes back unfinished.
    Release {
        /// The operation.
        id: Uuid,
        /// As `POST /v1/operations/{id}/release` takes it.
        release: ReleaseRequest,
    },
}

impl LeaseReport {
    /// The operation reported on.
    pub fn id(&self) -> Uuid {
        match self {
            Self::Complete { id, .. } | Self::Fail { id, .. } | Self::Release { id, .. } => *id,
        }
    }
}

// Written out because the schema must say what the untagged enum accepts: one of three closed
// objects, each with `id` and its one outcome.
impl utoipa::PartialSchema for LeaseReport {
    fn schema() -> RefOr<Schema> {
        let report = |outcome: &str, body: Cow<'static, str>, what: &str| {
            ObjectBuilder::new()
                .description(Some(format!(
                    "The attempt {what}: `{outcome}` is the body of `POST /v1/operations/{{id}}/{outcome}`."
                )))
                .property(
                    "id",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                        .description(Some("The operation.")),
                )
                .required("id")
                .property(outcome, Ref::from_schema_name(body))
                .required(outcome)
                .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        };
        OneOfBuilder::new()
            .item(report("complete", CompleteRequest::name(), "succeeded"))
            .item(report("fail", FailRequest::name(), "failed"))
            .item(report(
                "release",
                ReleaseRequest::name(),
                "goes back unfinished",
            ))
            .description(Some(
                "One report: the operation and exactly one of `complete`, `fail` and `release`.",
            ))
            .into()
    }
}

impl ToSchema for LeaseReport {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("LeaseReport")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        add_schema::<CompleteRequest>(schemas);
        add_schema::<FailRequest>(schemas);
        add_schema::<ReleaseRequest>(schemas);
    }
}

/// Adds `T`'s schema and those it refers to, for a hand-written [`ToSchema::schemas`] whose
/// schema refers to `T`.
pub fn add_schema<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
}

/// The answer to [`ReportsRequest`]: one result per report, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportsResponse {
    /// The results, in the order of the reports.
    pub results: Vec<ReportResult>,
}

/// How one report went: `204` when it was recorded, else the status and RFC 9457 problem
/// that its own route would have answered (nothing was changed for it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportResult {
    /// The operation.
    pub id: Uuid,
    /// `204`, or the problem's status.
    pub status: u16,
    /// Why the report was not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub problem: Option<Value>,
}

/// `POST /v1/operations/{id}/release`: give a leased operation back unfinished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The current lease.
    pub lease_id: Uuid,
}
