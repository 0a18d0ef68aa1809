//! The canonical operation resource: everything the three seed APIs expose, losslessly.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{RetryPolicy, Status};

/// One unit of asynchronous work and everything known about it.
///
/// This is the default (canonical) rendering; [`crate::views`] derive the seed APIs' shapes
/// from it by dropping and renaming fields only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// Opaque id (UUIDv7).
    pub id: Uuid,
    /// Unique, increasing integer id (the `async-task` view's `id`).
    pub seq: i64,
    /// The task kind, e.g. `reports.render`.
    pub name: String,
    /// The queue it waits in.
    pub queue: String,
    /// Higher runs first among ready operations.
    pub priority: i32,
    /// Lifecycle status.
    pub status: Status,
    /// When it was accepted.
    #[serde(with = "crate::compact::timestamp")]
    pub created_at: OffsetDateTime,
    /// When anything about it last changed.
    #[serde(with = "crate::compact::timestamp")]
    pub updated_at: OffsetDateTime,
    /// When its current or last attempt started.
    #[serde(with = "crate::compact::timestamp_option")]
    pub started_at: Option<OffsetDateTime>,
    /// When it reached a terminal status.
    #[serde(with = "crate::compact::timestamp_option")]
    pub completed_at: Option<OffsetDateTime>,
    /// It is not handed to a worker before this instant.
    #[serde(with = "crate::compact::timestamp")]
    pub run_at: OffsetDateTime,
    /// Progress, 0–100.
    pub progress_pct: Option<f64>,
    /// Short human-readable progress text, e.g. "page 3 of 7".
    pub status_detail: Option<String>,
    /// Positional arguments (a JSON array).
    #[schema(value_type = Vec<Value>)]
    pub args: Value,
    /// Keyword arguments (a JSON object).
    #[schema(value_type = Object)]
    pub kwargs: Value,
    /// Free JSON supplied at submission.
    pub content: Option<Value>,
    /// The output, once succeeded.
    pub result: Option<Value>,
    /// Where the result lives (by default the operation's own `/result` URL).
    pub result_url: Option<String>,
    /// Resources the operation created or changed (the `task-status` success details).
    pub resources: Vec<Resource>,
    /// The last error: the final one when failed, the previous attempt's while retrying.
    pub error: Option<OperationError>,
    /// Retry attempts so far.
    pub retries: u32,
    /// How it is retried.
    pub retry_policy: RetryPolicy,
    /// Where it came from (the `task-status` view's `meta`).
    pub meta: Meta,
    /// The operation that submitted this one.
    pub parent_id: Option<Uuid>,
    /// The first operation of this workflow chain (its own id for a root).
    pub root_id: Uuid,
    /// W3C trace id (32 hex).
    #[serde(with = "crate::compact::hex_id")]
    pub trace_id: String,
    /// W3C span id (16 hex).
    #[serde(with = "crate::compact::hex_id")]
    pub span_id: String,
    /// The id of the current or last attempt on a worker (also its lease token).
    pub execution_id: Option<Uuid>,
    /// The worker holding or last holding it.
    pub worker: Option<String>,
    /// When the current lease runs out, while running.
    #[serde(with = "crate::compact::timestamp_option")]
    pub lease_expires_at: Option<OffsetDateTime>,
    /// Whether cancellation was requested while it was running.
    pub cancel_requested: bool,
    /// Tenant id.
    pub customer: i64,
    /// Id of the user who submitted it.
    pub created_by: i64,
    /// Name of the user who submitted it.
    pub created_by_name: String,
    /// Bumped on every change; the `ETag` and the SSE event id.
    pub version: i64,
}

/// An error reported for an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationError {
    /// Stable machine-readable code, e.g. `timeout`.
    pub code: String,
    /// The error class, e.g. `ValueError`.
    #[serde(rename = "type")]
    pub error_type: String,
    /// Human-readable message.
    pub message: String,
}

/// Where an operation came from: the `task-status` view's `meta`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Meta {
    /// The endpoint URL that created it.
    pub url: Option<String>,
    /// The model it works on (`collection`, `api-version`, ...).
    pub model: Option<String>,
    /// What it does to the model (`create`, `update`, ...).
    pub action: Option<String>,
}

/// A resource an operation produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// The resource's id.
    pub id: String,
    /// Where it lives.
    pub url: String,
}

impl Operation {
    /// The URL of the operation's own result, relative to the API root.
    pub fn default_result_path(&self) -> String {
        format!("/v1/operations/{}/result", self.id)
    }

    /// Whether it has reached a final status.
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }
}
