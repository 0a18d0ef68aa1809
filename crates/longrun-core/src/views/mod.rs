//! The three seed renderings of an operation, chosen with `?view=`.
//!
//! Each view only drops and renames fields of the canonical [`Operation`]; nothing here
//! computes a value the operation does not hold, except absolute URLs made from the server's
//! base URL.

mod async_operation;
mod async_task;
mod task_status;

pub use async_operation::AsyncOperation;
pub use async_task::{AsyncTask, AsyncTaskStatusEnum};
pub use task_status::{
    GetStatusOfAnAsyncTask, GetStatusOfAnAsyncTaskStatus, TaskDetails, TaskFailure,
    TaskFailureError, TaskSuccess,
};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Operation;

/// Which rendering of an operation to answer with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum View {
    /// The canonical resource (every field).
    #[default]
    Operation,
    /// The `AsyncOperation` shape (camelCase, five statuses).
    AsyncOperation,
    /// The Postman `GetStatusOfAnAsyncTask` shape.
    TaskStatus,
    /// The Celery-backed `AsyncTask` shape (snake_case, integer id).
    AsyncTask,
}

/// An operation in one of its renderings.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Rendered {
    /// Canonical.
    Operation(Box<Operation>),
    /// `async-operation`.
    AsyncOperation(AsyncOperation),
    /// `task-status`.
    TaskStatus(GetStatusOfAnAsyncTask),
    /// `async-task`.
    AsyncTask(Box<AsyncTask>),
}

impl View {
    /// Renders `op`; `base_url` (scheme and authority, no trailing slash) makes the default
    /// `resultUrl` absolute.
    pub fn render(self, op: &Operation, base_url: &str) -> Rendered {
        match self {
            View::Operation => View::Operation.render_owned(op.clone(), base_url),
            View::AsyncOperation => {
                let result_url = op
                    .result_url
                    .clone()
                    .unwrap_or_else(|| default_result_url(op, base_url));
                Rendered::AsyncOperation(AsyncOperation::from_operation(op, result_url))
            }
            View::TaskStatus => Rendered::TaskStatus(GetStatusOfAnAsyncTask::from(op)),
            View::AsyncTask => Rendered::AsyncTask(Box::new(AsyncTask::from(op))),
        }
    }

    /// [`render`](Self::render), taking the operation: the canonical rendering is then the
    /// operation itself, not a copy of it (a status read's answer is rendered from an
    /// operation it decoded for that alone).
    pub fn render_owned(self, mut op: Operation, base_url: &str) -> Rendered {
        match self {
            View::Operation => {
                let result_url = op
                    .result_url
                    .take()
                    .unwrap_or_else(|| default_result_url(&op, base_url));
                op.result_url = Some(result_url);
                Rendered::Operation(Box::new(op))
            }
            view => view.render(&op, base_url),
        }
    }
}

/// The URL of `op`'s result when it names none of its own: its result route under `base_url`.
fn default_result_url(op: &Operation, base_url: &str) -> String {
    format!("{base_url}{}", op.default_result_path())
}

impl View {
    /// The `?view=` name.
    pub fn as_str(self) -> &'static str {
        match self {
            View::Operation => "operation",
            View::AsyncOperation => "async-operation",
            View::TaskStatus => "task-status",
            View::AsyncTask => "async-task",
        }
    }
}

impl std::str::FromStr for View {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            View::Operation,
            View::AsyncOperation,
            View::TaskStatus,
            View::AsyncTask,
        ]
        .into_iter()
        .find(|view| view.as_str() == s)
        .ok_or_else(|| {
            format!(
                "unknown view `{s}`: expected operation, async-operation, task-status or async-task"
            )
        })
    }
}

#[cfg(test)]
mod tests;
