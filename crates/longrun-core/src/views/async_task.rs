//! `AsyncTask` (seed 002): an accounting product's Celery-backed task record.

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::{Operation, Status};

/// Celery-style status: cancelled renders as `FAILED` with `error_type` `Cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum AsyncTaskStatusEnum {
    /// Waiting (also waiting to retry).
    Pending,
    /// Running on a worker.
    Processing,
    /// Succeeded.
    Completed,
    /// Failed or cancelled.
    Failed,
}

/// A background task record: exactly the seed's `AsyncTask` fields, snake_case.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AsyncTask {
    /// Integer id (the operation's `seq`).
    pub id: i64,
    /// Submitting user's name.
    pub created_by_name: String,
    /// Task name.
    pub name: String,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Status.
    pub status: AsyncTaskStatusEnum,
    /// The error's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Exception class name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// Number of retry attempts.
    pub retries: u32,
    /// When it finished.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub completed_at: Option<OffsetDateTime>,
    /// When execution started.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub started_at: Option<OffsetDateTime>,
    /// The attempt's id (`executionId`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub celery_task_id: Option<String>,
    /// Root task id in the workflow chain.
    pub root_task_id: String,
    /// Parent task id, if chained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_task_id: Option<String>,
    /// Distributed trace id.
    pub trace_id: String,
    /// Span id.
    pub span_id: String,
    /// Positional arguments (a JSON array).
    #[schema(value_type = Vec<Value>)]
    pub task_args: Value,
    /// Keyword arguments.
    #[schema(value_type = Object)]
    pub task_kwargs: Value,
    /// Execution result (any JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Free JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// Tenant id.
    pub customer: i64,
    /// Submitting user's id.
    pub created_by: i64,
}

impl From<&Operation> for AsyncTask {
    fn from(op: &Operation) -> Self {
        let status = match op.status {
            Status::Pending => AsyncTaskStatusEnum::Pending,
            Status::Running => AsyncTaskStatusEnum::Processing,
            Status::Succeeded => AsyncTaskStatusEnum::Completed,
            Status::Failed | Status::Cancelled => AsyncTaskStatusEnum::Failed,
        };
        Self {
            id: op.seq,
            created_by_name: op.created_by_name.clone(),
            name: op.name.clone(),
            created_at: op.created_at,
            status,
            error_message: op.error.as_ref().map(|e| e.message.clone()),
            error_type: op.error.as_ref().map(|e| e.error_type.clone()),
            retries: op.retries,
            completed_at: op.completed_at,
            started_at: op.started_at,
            celery_task_id: op.execution_id.map(|id| id.to_string()),
            root_task_id: op.root_id.to_string(),
            parent_task_id: op.parent_id.map(|id| id.to_string()),
            trace_id: op.trace_id.clone(),
            span_id: op.span_id.clone(),
            task_args: op.args.clone(),
            task_kwargs: op.kwargs.clone(),
            result: op.result.clone(),
            content: op.content.clone(),
            customer: op.customer,
            created_by: op.created_by,
        }
    }
}
