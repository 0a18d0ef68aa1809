//! [`Backend`]: how a worker reaches the queue — in-process on a store ([`crate::LocalBackend`])
//! or over the worker protocol ([`crate::HttpBackend`]). Both speak the wire bodies of
//! [`longrun_core::wire`], so the runtime does not know which one it has.

use async_trait::async_trait;
use longrun_core::Operation;
use longrun_core::wire::{
    ClaimRequest, CompleteRequest, FailRequest, HeartbeatRequest, HeartbeatResponse, LeaseGrant,
    SubmitRequest,
};
use uuid::Uuid;

/// Why a backend call failed, sorted by what the worker does about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The lease is not current any more (expired and re-claimed, or the attempt already
    /// ended): the report is dropped, never retried.
    #[error("lease lost: {0}")]
    LeaseLost(String),
    /// The server or database could not be reached or failed: try again later.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The request was refused (invalid, unknown parent, ...): trying again will not help.
    #[error("request refused: {0}")]
    Rejected(String),
}

/// The worker protocol, in-process or remote.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Leases up to `request.max` ready operations, waiting up to `request.wait_secs`.
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<LeaseGrant>, BackendError>;

    /// Extends the lease of `id` and records progress; says whether cancellation was requested.
    async fn heartbeat(
        &self,
        id: Uuid,
        request: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, BackendError>;

    /// Reports success.
    async fn complete(&self, id: Uuid, request: &CompleteRequest) -> Result<(), BackendError>;

    /// Reports a failed attempt.
    async fn fail(&self, id: Uuid, request: &FailRequest) -> Result<(), BackendError>;

    /// Gives the operation back unfinished (it is ready again at once, not counted as a retry).
    async fn release(&self, id: Uuid, lease_id: Uuid) -> Result<(), BackendError>;

    /// Submits an operation (a handler's child).
    async fn submit(&self, request: &SubmitRequest) -> Result<Operation, BackendError>;
}
