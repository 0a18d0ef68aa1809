//! [`LocalBackend`]: the worker protocol straight on a [`Store`], for handlers running in the
//! server's process (no HTTP hop).

use std::sync::Arc;

use async_trait::async_trait;
use longrun_core::traceparent::TraceIds;
use longrun_core::waiting::claim_or_wait;
use longrun_core::wire::{
    ClaimRequest, CompleteRequest, FailRequest, HeartbeatRequest, HeartbeatResponse, LeaseGrant,
    SubmitRequest,
};
use longrun_core::{
    ClaimFilter, ClaimQuery, Completion, Failure, NewOperation, Operation, OperationError, Owner,
    Progress, RetryPolicy, Store, StoreError, SubmitDefaults, TransitionError,
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
        let defaults = SubmitDefaults {
            retry_policy: self.retry_policy,
            owner: self.owner.clone(),
            trace: TraceIds::generate(),
            request_url: None,
        };
        NewOperation::from_request(request.clone(), defaults)
            .map_err(|e| BackendError::Rejected(e.0))
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
        | StoreError::KeyNotFound(_)
        | StoreError::ParentNotFound(_)
        | StoreError::NotTerminal { .. } => BackendError::Rejected(e.to_string()),
    }
}
