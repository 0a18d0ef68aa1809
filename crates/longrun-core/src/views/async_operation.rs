//! `AsyncOperation` (seed 000): a generic long-running operation.

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::{Operation, OperationError, Status};

/// A generic long-running operation: exactly the seed's `AsyncOperation` fields.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AsyncOperation {
    /// Operation id.
    pub id: String,
    /// Status.
    pub status: Status,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Where the result lives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_url: Option<String>,
    /// The error, when failed or cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<OperationError>,
    /// Progress, 0–100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_pct: Option<f64>,
}

impl AsyncOperation {
    pub(super) fn from_operation(op: &Operation, result_url: String) -> Self {
        Self {
            id: op.id.to_string(),
            status: op.status,
            created_at: op.created_at,
            updated_at: op.updated_at,
            result_url: Some(result_url),
            // While pending for a retry the canonical resource keeps the last attempt's error;
            // this shape has no retries, so it shows errors only once final.
            error: op.status.is_terminal().then(|| op.error.clone()).flatten(),
            progress_pct: op.progress_pct,
        }
    }
}
