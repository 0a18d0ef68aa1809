//! [`TaskContext`]: what a running handler can see and do — its operation, progress
//! reports, cancellation, child submissions.

use std::sync::{Arc, Mutex};

use longrun_core::wire::{LeaseGrant, SubmitRequest};
use longrun_core::{Operation, Progress};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Backend, BackendError, TaskError};

/// A handle on the attempt a handler is running. Cheap to clone.
#[derive(Clone)]
pub struct TaskContext {
    inner: Arc<Inner>,
}

struct Inner {
    operation: Operation,
    lease_id: Uuid,
    backend: Arc<dyn Backend>,
    /// The latest progress not yet sent (coalesced: only the newest value is kept).
    progress: Mutex<Option<Progress>>,
    progress_changed: Notify,
    cancel: CancellationToken,
}

impl TaskContext {
    pub(crate) fn new(
        grant: LeaseGrant,
        backend: Arc<dyn Backend>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                operation: grant.operation,
                lease_id: grant.lease_id,
                backend,
                progress: Mutex::new(None),
                progress_changed: Notify::new(),
                cancel,
            }),
        }
    }

    /// The operation's id.
    pub fn id(&self) -> Uuid {
        self.inner.operation.id
    }

    /// The task name.
    pub fn name(&self) -> &str {
        &self.inner.operation.name
    }

    /// How many retries preceded this attempt (0 on the first).
    pub fn retries(&self) -> u32 {
        self.inner.operation.retries
    }

    /// This attempt's id: the lease token and the operation's `executionId`.
    pub fn execution_id(&self) -> Uuid {
        self.inner.lease_id
    }

    /// The operation as it was claimed.
    pub fn operation(&self) -> &Operation {
        &self.inner.operation
    }

    /// Reports progress (`pct` clamped to 0–100; an empty `detail` keeps the previous text).
    /// Never blocks: the newest value is sent with the next heartbeat, which comes early
    /// (at most once per progress interval) when progress changes.
    pub fn progress(&self, pct: f64, detail: impl Into<String>) {
        let detail = detail.into();
        let update = Progress {
            pct: (!pct.is_nan()).then(|| pct.clamp(0.0, 100.0)),
            detail: (!detail.is_empty()).then_some(detail),
        };
        *self.inner.progress.lock().expect("progress lock") = Some(update);
        self.inner.progress_changed.notify_one();
    }

    /// Resolves when the handler should stop: a client asked to cancel the operation, its
    /// lease was lost, or the worker is shutting down past its grace period. A handler that
    /// stops then should return [`TaskError::cancelled`].
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await
    }

    /// Whether [`TaskContext::cancelled`] has resolved.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Submits a child operation (`parentId` set to this operation; it inherits its `rootId`).
    /// An unreachable server is a retryable error, a refused request a fatal one.
    pub async fn submit_child(&self, mut request: SubmitRequest) -> Result<Operation, TaskError> {
        request.parent_id = Some(self.id());
        self.inner
            .backend
            .submit(&request)
            .await
            .map_err(|e| match e {
                BackendError::Unavailable(msg) => TaskError::retryable("SubmitError", msg),
                BackendError::LeaseLost(msg) | BackendError::Rejected(msg) => {
                    TaskError::fatal("SubmitError", msg)
                }
            })
    }

    /// Takes the progress not yet sent.
    pub(crate) fn take_progress(&self) -> Option<Progress> {
        self.inner.progress.lock().expect("progress lock").take()
    }

    /// Puts back progress whose heartbeat failed, unless newer progress arrived meanwhile.
    pub(crate) fn restore_progress(&self, progress: Progress) {
        self.inner
            .progress
            .lock()
            .expect("progress lock")
            .get_or_insert(progress);
    }

    /// Resolves after the next [`TaskContext::progress`] call (or at once if one came since
    /// the last wait).
    pub(crate) async fn progress_changed(&self) {
        self.inner.progress_changed.notified().await
    }
}

impl std::fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskContext")
            .field("id", &self.id())
            .field("name", &self.name())
            .field("execution_id", &self.execution_id())
            .finish()
    }
}
