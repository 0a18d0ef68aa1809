//! [`HttpBackend`]: the worker protocol over HTTP, for workers in their own process.
//!
//! Reports on leases (complete, fail, release) that queue up while one request is on its way
//! go together in the next `POST /v1/workers/reports` (see `longrun_core::batch`): a worker
//! with many short tasks in flight spends one request, not one each, on their reports. Should
//! the server refuse a whole request (a body over its limits, say), its reports go again one
//! by one on their own routes, so that each gets its own answer.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use futures::future::join_all;
use longrun_client::{Client, ClientError};
use longrun_core::Operation;
use longrun_core::batch::Batcher;
use longrun_core::wire::{
    ClaimRequest, CompleteRequest, FailRequest, HeartbeatRequest, HeartbeatResponse, LeaseGrant,
    LeaseReport, MAX_REPORTS, ReleaseRequest, ReportsRequest, SubmitRequest,
};
use uuid::Uuid;

use crate::{Backend, BackendError};

/// Most bytes of reports (as JSON) in one request: well under the server's default body limit
/// (1 MiB) even for a report carrying a result of the largest default size (256 KiB).
const MAX_REPORT_BYTES: usize = 256 * 1024;

type Reports = Batcher<LeaseReport, Result<(), BackendError>>;

/// A [`Backend`] talking to a remote longrun server.
#[derive(Debug, Clone)]
pub struct HttpBackend {
    client: Client,
    /// Started at the first report (it needs the runtime), shared by clones.
    reports: Arc<OnceLock<Reports>>,
}

impl HttpBackend {
    /// A backend using `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            reports: Arc::default(),
        }
    }

    /// Queues a report for the next request and waits for its answer.
    async fn report(&self, report: LeaseReport) -> Result<(), BackendError> {
        let reports = self.reports.get_or_init(|| {
            let client = self.client.clone();
            Batcher::spawn(MAX_REPORTS, move |reports| {
                let client = client.clone();
                async move { send_reports(&client, reports).await }
            })
        });
        reports.call(report).await
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
        self.report(LeaseReport::Complete {
            id,
            complete: request.clone(),
        })
        .await
    }

    async fn fail(&self, id: Uuid, request: &FailRequest) -> Result<(), BackendError> {
        self.report(LeaseReport::Fail {
            id,
            fail: request.clone(),
        })
        .await
    }

    async fn release(&self, id: Uuid, lease_id: Uuid) -> Result<(), BackendError> {
        self.report(LeaseReport::Release {
            id,
            release: ReleaseRequest { lease_id },
        })
        .await
    }

    async fn submit(&self, request: &SubmitRequest) -> Result<Operation, BackendError> {
        self.client.submit(request, None).await.map_err(to_backend)
    }
}

/// Sends `reports` in requests of at most [`MAX_REPORT_BYTES`] (together), answering each.
async fn send_reports(client: &Client, reports: Vec<LeaseReport>) -> Vec<Result<(), BackendError>> {
    let mut chunks: Vec<Vec<LeaseReport>> = vec![];
    // Bytes of the last chunk.
    let mut bytes = 0;
    for report in reports {
        let size = serde_json::to_vec(&report).map_or(0, |json| json.len());
        match chunks.last_mut() {
            Some(chunk) if bytes + size <= MAX_REPORT_BYTES => {
                chunk.push(report);
                bytes += size;
            }
            _ => {
                chunks.push(vec![report]);
                bytes = size;
            }
        }
    }
    let answers = join_all(
        chunks
            .into_iter()
            .map(|reports| send_chunk(client, reports)),
    )
    .await;
    answers.into_iter().flatten().collect()
}

/// One request of reports; if the server refuses it whole, each report on its own route.
async fn send_chunk(client: &Client, reports: Vec<LeaseReport>) -> Vec<Result<(), BackendError>> {
    let request = ReportsRequest { reports };
    let count = request.reports.len();
    match client.reports(&request).await {
        Ok(response) if response.results.len() == count => response
            .results
            .into_iter()
            .map(|result| ClientError::of_report(result).map_err(report_error))
            .collect(),
        Err(e) if e.is_transient() => {
            let e = to_backend(e);
            vec![Err(e); count]
        }
        _ => {
            join_all(
                request
                    .reports
                    .iter()
                    .map(|report| send_one(client, report)),
            )
            .await
        }
    }
}

/// A report on its own route.
async fn send_one(client: &Client, report: &LeaseReport) -> Result<(), BackendError> {
    let sent = match report {
        LeaseReport::Complete { id, complete } => client.complete(*id, complete).await,
        LeaseReport::Fail { id, fail } => client.fail(*id, fail).await,
        LeaseReport::Release { id, release } => client.release(*id, release.lease_id).await,
    };
    sent.map(drop).map_err(report_error)
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
