//! The worker protocol: claim work under a lease, heartbeat, and report the outcome.
//!
//! Every route needs a worker (or admin) key. Every report carries the `leaseId` the claim
//! granted, which is also its tenant check: a lease that is no longer current (expired and
//! re-claimed, or already reported) answers `409` and changes nothing. A worker key's names
//! and queues narrow what its claims take.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::future::join_all;
use longrun_core::views::View;
use longrun_core::waiting::claim_or_wait;
use longrun_core::wire::{
    ClaimRequest, ClaimResponse, CompleteRequest, FailRequest, HeartbeatRequest, HeartbeatResponse,
    LeaseGrant, LeaseReport, MAX_REPORTS, ReleaseRequest, ReportResult, ReportsRequest,
    ReportsResponse,
};
use longrun_core::{
    ClaimFilter, ClaimQuery, Completion, Failure, Operation, OperationError, Progress, Store,
    StoreError,
};

use super::common_responses::{
    BodyRefused, LeaseNotCurrent, MalformedJson, OperationNotFound, OutcomeNotRecorded,
    RecordedMinimal, Unavailable,
};
use super::json_response;
use crate::AppState;
use crate::base_url::BaseUrl;
use crate::caller::{Action, Caller};
use crate::config::ServerConfig;
use crate::error::{ApiError, Problem};
use crate::extract::{JsonBody, OperationId};
use crate::limits;
use crate::prefer::{PREFERENCE_APPLIED, ReturnMinimal};
use crate::shutdown::Shutdown;
use longrun_core::validate;
use uuid::Uuid;

/// Lease length of a heartbeat that does not say.
const DEFAULT_LEASE_SECS: u32 = 30;

/// Claim ready operations.
///
/// Leases up to `max` ready operations (pending and due; highest priority first, then
/// oldest), each to exactly one worker. When none is ready, waits up to `waitSecs` for one
/// (woken by submits and retries, not by polling) and answers an empty list if none came.
#[utoipa::path(
    post,
    path = "/v1/workers/claim",
    tag = "workers",
    request_body = ClaimRequest,
    responses(
        (status = 200, description = "The leases granted (possibly none).", body = ClaimResponse, links(
            ("heartbeat" = (operation_id = "heartbeat", parameters(("id" = "$response.body#/leases/0/operation/id")), request_body = json!({"leaseId": "$response.body#/leases/0/leaseId"}), description = "Heartbeat the first lease.")),
            ("complete" = (operation_id = "complete", parameters(("id" = "$response.body#/leases/0/operation/id")), request_body = json!({"leaseId": "$response.body#/leases/0/leaseId"}), description = "Report the first lease's success.")),
            ("fail" = (operation_id = "fail", parameters(("id" = "$response.body#/leases/0/operation/id")), request_body = json!({"leaseId": "$response.body#/leases/0/leaseId"}), description = "Report the first lease's failure.")),
            ("release" = (operation_id = "release", parameters(("id" = "$response.body#/leases/0/operation/id")), request_body = json!({"leaseId": "$response.body#/leases/0/leaseId"}), description = "Give the first lease back.")),
        )),
        MalformedJson,
        BodyRefused,
        (status = 422, description = "Invalid request (`max`, `leaseSecs` or `waitSecs` out of range, bad names).", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
pub async fn claim(
    caller: Caller,
    State(state): State<AppState>,
    shutdown: Shutdown,
    JsonBody(request): JsonBody<ClaimRequest>,
) -> Result<axum::Json<ClaimResponse>, ApiError> {
    caller.allow(Action::Work)?;
    let (mut query, wait) = claim_query(request, &state.config)?;
    query.filter = caller.claim_filter(query.filter)?;
    // At shutdown the wait ends with nothing claimed. Were a claim in flight at that instant,
    // its leases would be lost to this worker and come back when they expire.
    let leases = shutdown
        .unless(claim_or_wait(&*state.store, &query, wait))
        .await
        .transpose()?;
    let leases = leases
        .unwrap_or_default()
        .into_iter()
        .map(|lease| LeaseGrant {
            lease_id: lease.lease_id,
            lease_expires_at: lease.expires_at,
            operation: lease.operation,
        })
        .collect();
    Ok(axum::Json(ClaimResponse { leases }))
}

fn claim_query(
    request: ClaimRequest,
    config: &ServerConfig,
) -> Result<(ClaimQuery, Duration), ApiError> {
    validate::name("worker", &request.worker)?;
    for name in &request.names {
        validate::name("names[]", name)?;
    }
    for queue in &request.queues {
        validate::name("queues[]", queue)?;
    }
    validate::range("max", request.max, 1, config.max_claim)?;
    validate::range("leaseSecs", request.lease_secs, 1, config.max_lease_secs)?;
    validate::range("waitSecs", request.wait_secs, 0, config.max_wait_secs)?;
    let query = ClaimQuery {
        worker: request.worker,
        filter: ClaimFilter {
            names: request.names,
            queues: request.queues,
        },
        max: request.max,
        lease: time::Duration::seconds(i64::from(request.lease_secs)),
    };
    Ok((query, Duration::from_secs(u64::from(request.wait_secs))))
}

/// Heartbeat a leased operation.
///
/// Extends the lease by `leaseSecs` (default 30) from now and records progress; answers
/// whether a client asked to cancel (the worker should then stop and report a failure).
#[utoipa::path(
    post,
    path = "/v1/operations/{id}/heartbeat",
    tag = "workers",
    params(("id" = uuid::Uuid, Path, description = "Operation id.")),
    request_body = HeartbeatRequest,
    responses(
        (status = 200, description = "Lease extended.", body = HeartbeatResponse),
        MalformedJson,
        OperationNotFound,
        LeaseNotCurrent,
        BodyRefused,
        (status = 422, description = "Invalid request (`progressPct` outside 0–100, `leaseSecs` out of range).", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
pub async fn heartbeat(
    caller: Caller,
    State(state): State<AppState>,
    OperationId(id): OperationId,
    JsonBody(request): JsonBody<HeartbeatRequest>,
) -> Result<axum::Json<HeartbeatResponse>, ApiError> {
    caller.allow(Action::Work)?;
    if let Some(pct) = request.progress_pct {
        validate::range("progressPct", pct, 0.0, 100.0)?;
    }
    if let Some(detail) = &request.status_detail {
        validate::text("statusDetail", detail, validate::MAX_DETAIL_CHARS, false)?;
    }
    let lease_secs = request.lease_secs.unwrap_or(DEFAULT_LEASE_SECS);
    validate::range("leaseSecs", lease_secs, 1, state.config.max_lease_secs)?;
    let progress = Progress {
        pct: request.progress_pct,
        detail: request.status_detail,
    };
    let lease_for = time::Duration::seconds(i64::from(lease_secs));
    let beat = state
        .store
        .heartbeat(id, request.lease_id, lease_for, progress)
        .await?;
    Ok(axum::Json(HeartbeatResponse {
        cancel_requested: beat.cancel_requested,
        lease_expires_at: beat.lease_expires_at,
    }))
}

/// Report success.
#[utoipa::path(
    post,
    path = "/v1/operations/{id}/complete",
    tag = "workers",
    params(
        ("id" = uuid::Uuid, Path, description = "Operation id."),
        ReturnMinimal,
    ),
    request_body = CompleteRequest,
    responses(
        (status = 200, description = "Recorded; the operation, now succeeded.", body = Operation),
        RecordedMinimal,
        MalformedJson,
        OperationNotFound,
        OutcomeNotRecorded,
        BodyRefused,
        (status = 422, description = "Invalid request (`result` over its size limit, nesting too deep, a field of the wrong type or unknown).", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
pub async fn complete(
    caller: Caller,
    State(state): State<AppState>,
    base: BaseUrl,
    minimal: ReturnMinimal,
    OperationId(id): OperationId,
    JsonBody(request): JsonBody<CompleteRequest>,
) -> Result<Response, ApiError> {
    caller.allow(Action::Work)?;
    let op = record(&state, id, Outcome::Complete(request)).await?;
    Ok(answer(op, &base, minimal))
}

/// Report a failed attempt.
///
/// A retryable failure goes back to `pending` after a backoff while retries remain; otherwise
/// (or when not retryable) the operation ends `failed`; when cancellation was requested it ends
/// `cancelled`. `error.code` defaults to `error`.
#[utoipa::path(
    post,
    path = "/v1/operations/{id}/fail",
    tag = "workers",
    params(
        ("id" = uuid::Uuid, Path, description = "Operation id."),
        ReturnMinimal,
    ),
    request_body = FailRequest,
    responses(
        (status = 200, description = "Recorded; the operation, now pending (retry), failed or cancelled.", body = Operation),
        RecordedMinimal,
        MalformedJson,
        OperationNotFound,
        OutcomeNotRecorded,
        BodyRefused,
        (status = 422, description = "Invalid request (`error.type` missing, empty or too long, a bad `error.code`, a field of the wrong type or unknown).", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
pub async fn fail(
    caller: Caller,
    State(state): State<AppState>,
    base: BaseUrl,
    minimal: ReturnMinimal,
    OperationId(id): OperationId,
    JsonBody(request): JsonBody<FailRequest>,
) -> Result<Response, ApiError> {
    caller.allow(Action::Work)?;
    let op = record(&state, id, Outcome::Fail(request)).await?;
    Ok(answer(op, &base, minimal))
}

/// Give a leased operation back unfinished.
///
/// For a worker shutting down: the operation is ready again at once and the attempt is not
/// counted as a retry (if cancellation was requested, it ends `cancelled` instead).
#[utoipa::path(
    post,
    path = "/v1/operations/{id}/release",
    tag = "workers",
    params(
        ("id" = uuid::Uuid, Path, description = "Operation id."),
        ReturnMinimal,
    ),
    request_body = ReleaseRequest,
    responses(
        (status = 200, description = "Released; the operation, now pending (or cancelled).", body = Operation),
        RecordedMinimal,
        MalformedJson,
        OperationNotFound,
        LeaseNotCurrent,
        BodyRefused,
        (status = 422, description = "Invalid request (no `leaseId`, a field of the wrong type or unknown).", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
pub async fn release(
    caller: Caller,
    State(state): State<AppState>,
    base: BaseUrl,
    minimal: ReturnMinimal,
    OperationId(id): OperationId,
    JsonBody(request): JsonBody<ReleaseRequest>,
) -> Result<Response, ApiError> {
    caller.allow(Action::Work)?;
    let op = record(&state, id, Outcome::Release(request)).await?;
    Ok(answer(op, &base, minimal))
}

/// Report on many leases at once.
///
/// Each report is recorded as its own `complete`, `fail` or `release` route would,
/// independently of the others, and answered in order: `204` when recorded, else the status
/// and problem that route would have answered (a stale lease, an operation gone). An invalid
/// report refuses the whole request (`422` naming it) before anything is recorded. Reports
/// that arrive together share the store's transactions, so a worker with many short tasks in
/// flight spends one request on many of them. At most 1000 reports.
#[utoipa::path(
    post,
    path = "/v1/workers/reports",
    tag = "workers",
    request_body = ReportsRequest,
    responses(
        (status = 200, description = "One result per report, in order.", body = ReportsResponse),
        MalformedJson,
        BodyRefused,
        (status = 422, description = "No reports, more than 1000, or an invalid one (named by `pointer`); nothing was recorded.", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
pub async fn reports(
    caller: Caller,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<ReportsRequest>,
) -> Result<axum::Json<ReportsResponse>, ApiError> {
    caller.allow(Action::Work)?;
    validate::range("reports", request.reports.len(), 1, MAX_REPORTS)?;
    let checked = request
        .reports
        .into_iter()
        .enumerate()
        .map(|(i, report)| {
            let id = report.id();
            Outcome::from(report)
                .check(&state.config)
                .map(|report| (id, report))
                .map_err(|e| e.at(&format!("reports[{i}]"), &format!("/reports/{i}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let store = &*state.store;
    let results = join_all(checked.into_iter().map(|(id, report)| async move {
        match report.record(store, id).await {
            Ok(_) => ReportResult {
                id,
                status: StatusCode::NO_CONTENT.as_u16(),
                problem: None,
            },
            Err(e) => {
                let problem = ApiError::from(e).problem();
                ReportResult {
                    id,
                    status: problem.status,
                    problem: serde_json::to_value(problem).ok(),
                }
            }
        }
    }))
    .await;
    Ok(axum::Json(ReportsResponse { results }))
}

/// What a worker reports about its attempt, as sent.
enum Outcome {
    Complete(CompleteRequest),
    Fail(FailRequest),
    Release(ReleaseRequest),
}

impl From<LeaseReport> for Outcome {
    fn from(report: LeaseReport) -> Self {
        match report {
            LeaseReport::Complete { complete, .. } => Self::Complete(complete),
            LeaseReport::Fail { fail, .. } => Self::Fail(fail),
            LeaseReport::Release { release, .. } => Self::Release(release),
        }
    }
}

impl Outcome {
    /// Validates the report as its route does.
    fn check(self, config: &ServerConfig) -> Result<Report, ApiError> {
        Ok(match self {
            Outcome::Complete(request) => {
                limits::check_size("result", request.result.as_ref(), config.max_field_bytes)?;
                let completion = Completion {
                    result: request.result,
                    result_url: request.result_url,
                    resources: request.resources,
                };
                Report::Complete(request.lease_id, completion)
            }
            Outcome::Fail(request) => {
                validate::text(
                    "error.type",
                    &request.error.error_type,
                    validate::MAX_NAME_CHARS,
                    true,
                )?;
                if let Some(code) = &request.error.code {
                    validate::name("error.code", code)?;
                }
                let error = OperationError {
                    code: request.error.code.unwrap_or_else(|| "error".into()),
                    error_type: request.error.error_type,
                    message: request.error.message,
                };
                let failure = Failure {
                    error,
                    retryable: request.retryable,
                };
                Report::Fail(request.lease_id, failure)
            }
            Outcome::Release(request) => Report::Release(request.lease_id),
        })
    }
}

/// A valid report under a lease, ready for the store.
enum Report {
    Complete(Uuid, Completion),
    Fail(Uuid, Failure),
    Release(Uuid),
}

impl Report {
    async fn record(self, store: &dyn Store, id: Uuid) -> Result<Operation, StoreError> {
        match self {
            Report::Complete(lease, completion) => store.complete(id, lease, completion).await,
            Report::Fail(lease, failure) => store.fail(id, lease, failure).await,
            Report::Release(lease) => store.release(id, lease).await,
        }
    }
}

/// Validates a report as its route does and records it.
async fn record(state: &AppState, id: Uuid, outcome: Outcome) -> Result<Operation, ApiError> {
    let report = outcome.check(&state.config)?;
    Ok(report.record(&*state.store, id).await?)
}

/// A worker report's answer: the canonical operation (absolute `resultUrl`), or nothing when
/// the worker prefers `return=minimal` (it rarely needs the operation back).
fn answer(op: Operation, base: &BaseUrl, minimal: ReturnMinimal) -> Response {
    if minimal.0 {
        let applied = [(PREFERENCE_APPLIED.clone(), ReturnMinimal::APPLIED)];
        return (StatusCode::NO_CONTENT, applied).into_response();
    }
    json_response(StatusCode::OK, &View::Operation.render_owned(op, &base.0))
}
