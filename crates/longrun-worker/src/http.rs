//! [`HttpBackend`]: the worker protocol over HTTP, for workers in their own process.

use async_trait::async_trait;
use longrun_client::{Client, ClientError};
use longrun_core::Operation;
use longrun_core::wire::{
    ClaimRequest, CompleteRequest, FailRequest, HeartbeatRequest, HeartbeatResponse, LeaseGrant,
    SubmitRequest,
};
use uuid::Uuid;

use crate::{Backend, BackendError};

/// A [`Backend`] talking to a remote longrun server.
#[derive(Debug, Clone)]
pub struct HttpBackend {
    client: Client,
}

impl HttpBackend {
    /// A backend using `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl Backend for HttpBackend {
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<LeaseGrant>, BackendError> {
        Ok(self.client.claim(request).await.map_err(to_backend)?.leases)
    }

    async fn heartbeat(
        &self,
        id: Uuid,
        request: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, BackendError> {
        self.client
            .heartbeat(id, request)
            .await
            .map_err(report_error)
    }

    async fn complete(&self, id: Uuid, request: &CompleteRequest) -> Result<(), BackendError> {
        self.client
            .complete(id, request)
            .await
            .map(drop)
            .map_err(report_error)
    }

    async fn fail(&self, id: Uuid, request: &FailRequest) -> Result<(), BackendError> {
        self.client
            .fail(id, request)
            .await
            .map(drop)
            .map_err(report_error)
    }

    async fn release(&self, id: Uuid, lease_id: Uuid) -> Result<(), BackendError> {
        self.client
            .release(id, lease_id)
            .await
            .map(drop)
            .map_err(report_error)
    }

    async fn submit(&self, request: &SubmitRequest) -> Result<Operation, BackendError> {
        self.client.submit(request, None).await.map_err(to_backend)
    }
}

/// A report on a lease: `409` (stale lease) and `404` (the operation is gone) end the attempt.
fn report_error(e: ClientError) -> BackendError {
    match e.status() {
        Some(409 | 404) => BackendError::LeaseLost(e.to_string()),
        _ => to_backend(e),
    }
}

fn to_backend(e: ClientError) -> BackendError {
    if e.is_transient() {
        BackendError::Unavailable(e.to_string())
    } else {
        BackendError::Rejected(e.to_string())
    }
}
