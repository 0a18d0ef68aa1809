//! [`LocalBackend`]: the worker protocol straight on a [`Store`], for handlers running in the
//! server's process (no HTTP hop).

use std::sync::Arc;

use async_trait::async_trait;
use longrun_core::waiting::claim_or_wait;
use longrun_core::wire::{
    ClaimRequest, CompleteRequest, FailRequest, HeartbeatRequest, HeartbeatResponse, LeaseGrant,
    SubmitRequest,
};
use longrun_core::{
    ClaimFilter, ClaimQuery, Completion, Failure, NewOperation, Operation, OperationError, Owner,
    Progress, RetryPolicy, Store, StoreError, TransitionError,
};
use time::Duration;
use uuid::Uuid;

use crate::{Backend, BackendError};

/// Lease length of a heartbeat that does not say (the wire default).
const DEFAULT_LEASE_SECS: u32 = 30;

/// A [`Backend`] over a store in this process.
#[derive(Clone)]
pub struct LocalBackend {
    store: Arc<dyn Store>,
    retry_policy: RetryPolicy,
    owner: Owner,
}

impl LocalBackend {
    /// A backend on `store`; children submitted through it get `retry_policy` (unless the
    /// request overrides parts of it) and belong to `owner`.
    pub fn new(store: Arc<dyn Store>, retry_policy: RetryPolicy, owner: Owner) -> Self {
        Self {
            store,
            retry_policy,
            owner,
        }
    }

    /// The submission a request describes, with this backend's defaults.
    fn new_operation(&self, request: &SubmitRequest) -> Result<NewOperation, BackendError> {
        let reject = |msg: &str| Err(BackendError::Rejected(msg.to_owned()));
        if request.name.trim().is_empty() {
            return reject("name must not be empty");
        }
        let mut new = NewOperation::named(request.name.clone());
        if let Some(args) = &request.args {
            if !args.is_array() {
                return reject("args must be a JSON array");
            }
            new.args = args.clone();
        }
        if let Some(kwargs) = &request.kwargs {
            if !kwargs.is_object() {
                return reject("kwargs must be a JSON object");
            }
            new.kwargs = kwargs.clone();
        }
        let mut policy = self.retry_policy;
        if let Some(max) = request.max_retries {
            policy.max_retries = max;
        }
        for (given, field) in [
            (request.backoff_base_secs, &mut policy.backoff_base_secs),
            (request.backoff_cap_secs, &mut policy.backoff_cap_secs),
        ] {
            if let Some(secs) = given {
                if !secs.is_finite() || secs < 0.0 {
                    return reject("backoff seconds must be finite and not negative");
                }
                *field = secs;
            }
        }
        new.content = request.content.clone();
        new.meta = request.meta.clone().unwrap_or_default();
        new.parent_id = request.parent_id;
        new.run_at = request.run_at;
        if let Some(queue) = &request.queue {
            new.queue = queue.clone();
        }
        new.priority = request.priority.unwrap_or(0);
        new.retry_policy = policy;
        new.owner = self.owner.clone();
        Ok(new)
    }
}

#[async_trait]
impl Backend for LocalBackend {
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<LeaseGrant>, BackendError> {
        let query = ClaimQuery {
            worker: request.worker.clone(),
            filter: ClaimFilter {
                names: request.names.clone(),
                queues: request.queues.clone(),
            },
            max: request.max,
            lease: Duration::seconds(request.lease_secs.into()),
        };
        let wait = std::time::Duration::from_secs(request.wait_secs.into());
        let leases = claim_or_wait(self.store.as_ref(), &query, wait)
            .await
            .map_err(to_backend)?;
        Ok(leases
            .into_iter()
            .map(|lease| LeaseGrant {
                lease_id: lease.lease_id,
                lease_expires_at: lease.expires_at,
                operation: lease.operation,
            })
            .collect())
    }

    async fn heartbeat(
        &self,
        id: Uuid,
        request: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, BackendError> {
        let lease_for = Duration::seconds(request.lease_secs.unwrap_or(DEFAULT_LEASE_SECS).into());
        let progress = Progress {
            pct: request.progress_pct,
            detail: request.status_detail.clone(),
        };
        let beat = self
            .store
            .heartbeat(id, request.lease_id, lease_for, progress)
            .await
            .map_err(to_backend)?;
        Ok(HeartbeatResponse {
            cancel_requested: beat.cancel_requested,
            lease_expires_at: beat.lease_expires_at,
        })
    }

    async fn complete(&self, id: Uuid, request: &CompleteRequest) -> Result<(), BackendError> {
        let completion = Completion {
            result: request.result.clone(),
            result_url: request.result_url.clone(),
            resources: request.resources.clone(),
        };
        self.store
            .complete(id, request.lease_id, completion)
            .await
            .map(drop)
            .map_err(to_backend)
    }

    async fn fail(&self, id: Uuid, request: &FailRequest) -> Result<(), BackendError> {
        let failure = Failure {
            error: OperationError {
                code: request.error.code.clone().unwrap_or_else(|| "error".into()),
                error_type: request.error.error_type.clone(),
                message: request.error.message.clone(),
            },
            retryable: request.retryable,
        };
        self.store
            .fail(id, request.lease_id, failure)
            .await
            .map(drop)
            .map_err(to_backend)
    }

    async fn release(&self, id: Uuid, lease_id: Uuid) -> Result<(), BackendError> {
        self.store
            .release(id, lease_id)
            .await
            .map(drop)
            .map_err(to_backend)
    }

    async fn submit(&self, request: &SubmitRequest) -> Result<Operation, BackendError> {
        let new = self.new_operation(request)?;
        Ok(self.store.submit(new).await.map_err(to_backend)?.operation)
    }
}

fn to_backend(e: StoreError) -> BackendError {
    match e {
        // The operation moved on without this lease (or is gone): the attempt is over.
        StoreError::Transition(
            TransitionError::StaleLease { .. } | TransitionError::Illegal { .. },
        )
        | StoreError::NotFound(_) => BackendError::LeaseLost(e.to_string()),
        StoreError::Database(_) => BackendError::Unavailable(e.to_string()),
        StoreError::IdempotencyMismatch(_)
        | StoreError::ParentNotFound(_)
        | StoreError::NotTerminal { .. } => BackendError::Rejected(e.to_string()),
    }
}
