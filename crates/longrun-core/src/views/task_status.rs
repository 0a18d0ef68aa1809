//! `GetStatusOfAnAsyncTask` (seed 001): the Postman API's task status.

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::{Meta, Operation, Resource, Status};

/// The Postman task status: `pending` (also while running), `completed`, `failed` (also when
/// cancelled, with the error saying so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GetStatusOfAnAsyncTaskStatus {
    /// Not finished.
    Pending,
    /// Failed or cancelled.
    Failed,
    /// Succeeded.
    Completed,
}

/// Success details: the resources the task created or updated.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TaskSuccess {
    /// The resources.
    pub resources: Vec<Resource>,
}

/// Failure details.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TaskFailure {
    /// The error.
    pub error: TaskFailureError,
}

/// The failure's error.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TaskFailureError {
    /// What went wrong.
    pub message: String,
}

/// One of success or failure details.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TaskDetails {
    /// The task completed.
    Success(TaskSuccess),
    /// The task failed.
    Failure(TaskFailure),
}

/// A Postman API task's status: exactly the seed's `GetStatusOfAnAsyncTask` fields.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetStatusOfAnAsyncTask {
    /// The task's id.
    pub id: String,
    /// The endpoint that created the task, and what it does.
    pub meta: Meta,
    /// The task's current status.
    pub status: GetStatusOfAnAsyncTaskStatus,
    /// Present once finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<TaskDetails>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<&Operation> for GetStatusOfAnAsyncTask {
    fn from(op: &Operation) -> Self {
        let (status, details) = match op.status {
            Status::Pending | Status::Running => (GetStatusOfAnAsyncTaskStatus::Pending, None),
            Status::Succeeded => (
                GetStatusOfAnAsyncTaskStatus::Completed,
                Some(TaskDetails::Success(TaskSuccess {
                    resources: op.resources.clone(),
                })),
            ),
            Status::Failed | Status::Cancelled => {
                let message = op
                    .error
                    .as_ref()
                    .map_or_else(|| op.status.to_string(), |e| e.message.clone());
                (
                    GetStatusOfAnAsyncTaskStatus::Failed,
                    Some(TaskDetails::Failure(TaskFailure {
                        error: TaskFailureError { message },
                    })),
                )
            }
        };
        Self {
            id: op.id.to_string(),
            meta: op.meta.clone(),
            status,
            details,
            created_at: op.created_at,
            updated_at: op.updated_at,
        }
    }
}
