//! The client side of operations: submit, get (with long-poll), list, cancel, delete, result.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use longrun_core::views::View;
use longrun_core::wire::{
    BatchSubmitRequest, OperationList, SubmitRequest, SubmittedId, SubmittedIds,
};
use longrun_core::{CancelOutcome, ListQuery, NewOperation, Status, Submitted, validate};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::IntoParams;
use uuid::Uuid;

use super::common_responses::{BodyRefused, OperationNotFound, Unavailable};
use super::{ViewQuery, operation_response, set_location, set_retry_after};
use crate::AppState;
use crate::base_url::BaseUrl;
use crate::caller::{Action, Caller};
use crate::error::{ApiError, Problem, ProblemKind};
use crate::extract::{JsonBody, OperationId, QueryParams};
use crate::inflight::InFlight;
use crate::openapi::{BatchSubmitted, OperationSubmitted, OperationView};
use crate::prefer::{PREFERENCE_APPLIED, ReturnMinimal};
use crate::shutdown::Shutdown;
use crate::submission::SubmitContext;
use crate::{cursor, etag, prefer, submission};

/// `Idempotent-Replayed: true` marks the answer to a repeated idempotent submit.
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Submit an operation.
///
/// Answers `202 Accepted` with the new operation; with `Prefer: return=minimal`, with only its
/// id (`{"id": ...}`, `Preference-Applied: return=minimal`), as a producer that only needs to
/// know the work was accepted prefers. With an `Idempotency-Key` already used for
/// the same body (compared after parsing, so formatting and key order do not matter), answers
/// the operation that request created, as it is now, with `Idempotent-Replayed: true`; while
/// that first request is still being processed, `409` with `Retry-After`. Keys are scoped by
/// customer and kept as long as the operation exists.
///
/// The operation's `customer`, `createdBy` and `createdByName` come from the API key; a
/// child's `customer` is its parent's. A worker key may only submit children of an operation
/// it is running.
#[utoipa::path(
    post,
    path = "/v1/operations",
    tag = "operations",
    params(
        ViewQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retried submits safe: the same key and body answer the same operation; the same key with another body is `422`. 1 to 255 visible ASCII characters other than `\"`, bare or in double quotes (`\"k\"` is the key `k`).", pattern = "^([!#-~]{1,255}|\"[!#-~]{1,255}\")$"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context; its trace and span ids are recorded (generated when absent or invalid)."),
        ("Prefer" = Option<String>, Header, description = "`return=minimal`: answer with the operation's id only (`{\"id\": ...}`), not the operation."),
    ),
    request_body = SubmitRequest,
    responses(
        (status = 202, description = "Accepted; the operation in the requested view, or only its id with `Prefer: return=minimal`.", body = OperationSubmitted, headers(
            ("Location" = String, description = "The operation's URL."),
            ("Operation-Location" = String, description = "The operation's URL (Azure convention)."),
            ("Retry-After" = u32, description = "Seconds to wait before polling."),
            ("Idempotent-Replayed" = bool, description = "`true` when an earlier submit with the same `Idempotency-Key` created the operation."),
            ("Preference-Applied" = String, description = "`return=minimal` when the answer holds only the id."),
        ), links(
            ("claim" = (operation_id = "claim", request_body = json!({"names": ["$response.body#/name"], "queues": ["$response.body#/queue"]}), description = "Claim operations of the submitted one's name and queue (from the canonical view).")),
        )),
        (status = 400, description = "Malformed JSON, unknown `view` or malformed `Idempotency-Key`.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An earlier request with the same `Idempotency-Key` is still being processed; retry after `Retry-After` seconds.", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u32, description = "Seconds to wait before retrying."),
        )),
        BodyRefused,
        (status = 422, description = "Invalid request (a field over its size limit, nesting too deep), unknown `parentId`, or an `Idempotency-Key` reused with another body.", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[allow(clippy::too_many_arguments)] // one extractor per input, as axum handlers go
pub async fn submit(
    caller: Caller,
    State(state): State<AppState>,
    Extension(in_flight): Extension<Arc<InFlight>>,
    base: BaseUrl,
    uri: Uri,
    headers: HeaderMap,
    minimal: ReturnMinimal,
    QueryParams(query): QueryParams<ViewQuery>,
    JsonBody(mut body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let context = SubmitContext::new(&headers, request_url(&base, &uri));
    let key = submission::idempotency_key(&headers)?;
    let new = prepare(&caller, &state, &context, &mut body, key).await?;
    let _in_flight = new
        .idempotency
        .as_ref()
        .map(|idem| InFlight::begin(&in_flight, new.owner.customer, &idem.key))
        .transpose()?;
    let Submitted { operation, created } = state.store.submit(new).await?;
    let retry_after_secs = state.config.retry_after_secs;
    let id = operation.id;
    let mut response = if minimal.0 {
        let mut response = accepted_minimal(SubmittedId { id });
        set_retry_after(&mut response, operation.is_terminal(), retry_after_secs);
        response
    } else {
        operation_response(
            StatusCode::ACCEPTED,
            operation,
            query.view,
            &base,
            retry_after_secs,
        )
    };
    set_location(
        &mut response,
        &["location", "operation-location"],
        &base,
        id,
    );
    if !created {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `202 Accepted` with `body`, the minimal answer a submit gives with `Prefer: return=minimal`.
fn accepted_minimal(body: impl Serialize) -> Response {
    let applied = [(PREFERENCE_APPLIED.clone(), ReturnMinimal::APPLIED)];
    (StatusCode::ACCEPTED, applied, axum::Json(body)).into_response()
}

/// The validated operation a submit body describes, owned as the caller may own it.
async fn prepare(
    caller: &Caller,
    state: &AppState,
    context: &SubmitContext,
    body: &mut Value,
    idempotency_key: Option<String>,
) -> Result<NewOperation, ApiError> {
    let request = submission::request(body, &state.config)?;
    let owner = caller
        .owner_of_new(&*state.store, request.parent_id)
        .await?;
    submission::new_operation(
        request,
        body,
        context,
        idempotency_key,
        &state.config,
        owner,
    )
}

/// The absolute URL of the request.
fn request_url(base: &BaseUrl, uri: &Uri) -> String {
    base.join(
        uri.path_and_query()
            .map_or("/v1/operations", |p| p.as_str()),
    )
}

/// Submit many operations at once.
///
/// `operations` holds 1 to 1000 submit bodies, each validated and completed exactly as
/// `POST /v1/operations` does; one invalid item rejects the whole request (`422` naming the
/// item in `detail` and in the `pointer` member) before anything is stored. Answers `202
/// Accepted` with the operations in request order, in the requested view; with `Prefer:
/// return=minimal`, with only their ids (`{"ids": [...]}`, `Preference-Applied:
/// return=minimal`), as a producer enqueuing work in bulk rarely needs the operations back.
///
/// The operations are stored independently (they share commits, not one transaction): should
/// the database fail midway, some of them may exist. With `Idempotency-Key: K` item *i* is
/// submitted with the key `K i`, so sending the same batch again with the same key completes
/// it without duplicates (and answers `Idempotent-Replayed: true` when every item existed).
#[utoipa::path(
    post,
    path = "/v1/operations:batch",
    tag = "operations",
    params(
        ViewQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retried batch safe: item *i* is submitted with the idempotency key `K i`. 1 to 255 visible ASCII characters other than `\"`, bare or in double quotes.", pattern = "^([!#-~]{1,255}|\"[!#-~]{1,255}\")$"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context, recorded on every operation of the batch (generated when absent or invalid)."),
        ("Prefer" = Option<String>, Header, description = "`return=minimal`: answer with the operations' ids only (`{\"ids\": [...]}`), not the operations."),
    ),
    request_body = BatchSubmitRequest,
    responses(
        (status = 202, description = "Accepted; the operations in request order, in the requested view, or only their ids with `Prefer: return=minimal`.", body = BatchSubmitted, headers(
            ("Retry-After" = u32, description = "Seconds to wait before polling."),
            ("Idempotent-Replayed" = bool, description = "`true` when an earlier batch with the same `Idempotency-Key` created every operation."),
            ("Preference-Applied" = String, description = "`return=minimal` when the answer holds only the ids."),
        )),
        (status = 400, description = "Malformed JSON, unknown `view` or malformed `Idempotency-Key`.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An earlier request with the same `Idempotency-Key` is still being processed; retry after `Retry-After` seconds.", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u32, description = "Seconds to wait before retrying."),
        )),
        BodyRefused,
        (status = 422, description = "Not 1 to 1000 operations, or an invalid item (named in `detail` and `pointer`): a field over its size limit, unknown `parentId`, an idempotency key reused with another body.", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[allow(clippy::too_many_arguments)] // one extractor per input, as axum handlers go
pub async fn submit_batch(
    caller: Caller,
    State(state): State<AppState>,
    Extension(in_flight): Extension<Arc<InFlight>>,
    base: BaseUrl,
    uri: Uri,
    headers: HeaderMap,
    minimal: ReturnMinimal,
    QueryParams(query): QueryParams<ViewQuery>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let mut items = batch_items(body, state.config.max_batch_submit)?;
    let context = SubmitContext::new(&headers, request_url(&base, &uri));
    let key = submission::idempotency_key(&headers)?;
    let mut news = Vec::with_capacity(items.len());
    for (i, item) in items.iter_mut().enumerate() {
        let item_key = key.as_deref().map(|k| submission::batch_item_key(k, i));
        let new = prepare(&caller, &state, &context, item, item_key)
            .await
            .map_err(|e| e.at(&format!("operations[{i}]"), &format!("/operations/{i}")))?;
        news.push(new);
    }
    let _in_flight = key
        .as_deref()
        .map(|k| InFlight::begin(&in_flight, news[0].owner.customer, k))
        .transpose()?;
    let stored = futures::future::join_all(news.into_iter().map(|new| state.store.submit(new)));
    let submitted = stored.await.into_iter().collect::<Result<Vec<_>, _>>()?;
    let replayed = submitted.iter().all(|s| !s.created);
    let mut response = if minimal.0 {
        accepted_minimal(SubmittedIds {
            ids: submitted.iter().map(|s| s.operation.id).collect(),
        })
    } else {
        let view = query.view.unwrap_or_default();
        let list = OperationList {
            operations: submitted
                .iter()
                .map(|s| view.render(&s.operation, &base.0))
                .collect(),
            next_cursor: None,
        };
        (StatusCode::ACCEPTED, axum::Json(list)).into_response()
    };
    if submitted.iter().any(|s| !s.operation.is_terminal()) {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(state.config.retry_after_secs),
        );
    }
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The items of a batch body `{"operations": [...]}`: `422` unless it is exactly that, with 1
/// to `max` items.
fn batch_items(body: Value, max: u32) -> Result<Vec<Value>, ApiError> {
    let Value::Object(mut members) = body else {
        return Err(ApiError::invalid("the request body must be a JSON object"));
    };
    let operations = members.remove("operations");
    if let Some(unknown) = members.keys().next() {
        return Err(ApiError::invalid(format!(
            "invalid request body: unknown field `{unknown}`, expected `operations`"
        )));
    }
    match operations {
        Some(Value::Array(items)) if (1..=max as usize).contains(&items.len()) => Ok(items),
        Some(Value::Array(items)) => Err(ApiError::invalid(format!(
            "`operations` must hold 1 to {max} operations (got {})",
            items.len()
        ))),
        Some(_) => Err(ApiError::invalid("`operations` must be an array")),
        None => Err(ApiError::invalid(
            "invalid request body: missing field `operations`",
        )),
    }
}

/// Get an operation.
///
/// With `Prefer: wait=N` (N clamped to the server's maximum, 60 s by default) the answer waits
/// until the operation changes or N seconds pass: changes relative to the version named by
/// `If-None-Match` when given, else to the version current when the request arrived. A
/// finished operation answers at once.
#[utoipa::path(
    get,
    path = "/v1/operations/{id}",
    tag = "operations",
    params(
        ("id" = Uuid, Path, description = "Operation id."),
        ViewQuery,
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` from an earlier answer: `304` while the operation still has that version."),
        ("Prefer" = Option<String>, Header, description = "`wait=N`: long-poll up to N seconds for a change."),
    ),
    responses(
        (status = 200, description = "The operation in the requested view.", body = OperationView, headers(
            ("ETag" = String, description = "The operation's version, quoted."),
            ("Retry-After" = u32, description = "Present while the operation is not finished."),
            ("Preference-Applied" = String, description = "`wait=N` when the request's wait preference was honoured (N as applied)."),
        )),
        (status = 304, description = "Unchanged since the `If-None-Match` version.", headers(
            ("ETag" = String, description = "The operation's version, quoted."),
        )),
        (status = 400, description = "Unknown `view`.", body = Problem, content_type = "application/problem+json"),
        OperationNotFound,
        Unavailable,
    )
)]
pub async fn get(
    caller: Caller,
    State(state): State<AppState>,
    base: BaseUrl,
    OperationId(id): OperationId,
    QueryParams(query): QueryParams<ViewQuery>,
    headers: HeaderMap,
    shutdown: Shutdown,
) -> Result<Response, ApiError> {
    caller.allow(Action::Read)?;
    let mut op = caller.find(&*state.store, id).await?;
    let wait = prefer::wait_secs(&headers, state.config.max_wait_secs);
    if let Some(secs) = wait {
        let seen = etag::if_none_match_version(&headers).unwrap_or(op.version);
        if !op.is_terminal() && op.version == seen {
            let waited = longrun_core::waiting::wait_for_change(
                &*state.store,
                id,
                seen,
                Duration::from_secs(u64::from(secs)),
            );
            if let Some(after) = shutdown.unless(waited).await {
                op = after?.ok_or_else(|| ApiError::operation_not_found(id))?;
            }
        }
    }

    let version = op.version;
    let mut response = if etag::none_match(&headers, version) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        operation_response(
            StatusCode::OK,
            op,
            query.view,
            &base,
            state.config.retry_after_secs,
        )
    };
    let response_headers = response.headers_mut();
    response_headers.insert(header::ETAG, etag::etag(version));
    if let Some(secs) = wait {
        response_headers.insert(prefer::PREFERENCE_APPLIED.clone(), prefer::applied(secs));
    }
    Ok(response)
}

/// Filters, page and view of a listing.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct ListParams {
    /// Only operations with this status.
    pub status: Option<Status>,
    /// Only operations with this task name (1–200 characters from `A-Z a-z 0-9 . _ : -`).
    #[param(min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9._:-]+$")]
    pub name: Option<String>,
    /// Only children of this operation.
    pub parent_id: Option<Uuid>,
    /// Only operations of this chain (the root's id).
    pub root_id: Option<Uuid>,
    /// Only this customer's operations. Admins only: any other caller sees only its own
    /// customer's operations whatever it asks for (another customer has none it may see).
    pub customer: Option<i64>,
    /// Page size (default 100, at most 1000 unless configured otherwise).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page, unchanged.
    #[param(pattern = "^[0-9]{1,19}$")]
    pub cursor: Option<String>,
    /// The rendering of each operation.
    pub view: Option<View>,
}

/// List operations, newest first: the caller's customer's only (an admin's: every customer's,
/// or those of `customer`).
#[utoipa::path(
    get,
    path = "/v1/operations",
    tag = "operations",
    params(ListParams),
    responses(
        (status = 200, description = "A page of operations in the requested view; `nextCursor` is absent on the last page.", body = OperationList<OperationView>),
        (status = 400, description = "Bad filter, `limit` out of range, unknown `view` or invalid cursor.", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
    base: BaseUrl,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Response, ApiError> {
    caller.allow(Action::Read)?;
    let max = state.config.max_list_limit;
    let limit = params
        .limit
        .unwrap_or(state.config.default_list_limit.min(max));
    if !(1..=max).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and {max} (got {limit})"
        )));
    }
    if let Some(name) = &params.name {
        validate::name("name", name).map_err(|e| ApiError::bad_request(e.0))?;
    }
    let before_seq = params.cursor.as_deref().map(cursor::decode).transpose()?;
    let view = params.view.unwrap_or_default();
    let Some(customer) = caller.list_customer(params.customer) else {
        let empty = OperationList::<Value> {
            operations: vec![],
            next_cursor: None,
        };
        return Ok(axum::Json(empty).into_response());
    };
    let query = ListQuery {
        status: params.status,
        name: params.name,
        parent_id: params.parent_id,
        root_id: params.root_id,
        customer,
        before_seq,
        limit,
    };
    let page = state.store.list(&query).await?;
    let body = OperationList {
        operations: page
            .operations
            .iter()
            .map(|op| view.render(op, &base.0))
            .collect(),
        next_cursor: page.next_before_seq.map(cursor::encode),
    };
    Ok(axum::Json(body).into_response())
}

/// Cancel an operation.
///
/// A pending operation is cancelled at once (`200`). For a running one the request is
/// recorded (`202`, `cancelRequested: true`); its worker learns it at its next heartbeat and
/// the operation then ends `cancelled`. A finished operation is left as it is (`409`).
#[utoipa::path(
    post,
    path = "/v1/operations/{id}/cancel",
    tag = "operations",
    params(("id" = Uuid, Path, description = "Operation id."), ViewQuery),
    responses(
        (status = 200, description = "Cancelled.", body = OperationView),
        (status = 202, description = "Cancellation requested from the worker running it.", body = OperationView, headers(
            ("Location" = String, description = "The operation's URL, to follow it to the end."),
            ("Retry-After" = u32, description = "Seconds to wait before polling."),
        )),
        (status = 400, description = "Unknown `view`.", body = Problem, content_type = "application/problem+json"),
        OperationNotFound,
        (status = 409, description = "Already finished; nothing was changed.", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
pub async fn cancel(
    caller: Caller,
    State(state): State<AppState>,
    base: BaseUrl,
    OperationId(id): OperationId,
    QueryParams(query): QueryParams<ViewQuery>,
) -> Result<Response, ApiError> {
    caller.allow(Action::Manage)?;
    caller.check_sees(&*state.store, id).await?;
    let (outcome, op) = state.store.cancel(id).await?;
    let status = match outcome {
        CancelOutcome::Cancelled => StatusCode::OK,
        CancelOutcome::Requested => StatusCode::ACCEPTED,
    };
    let mut response =
        operation_response(status, op, query.view, &base, state.config.retry_after_secs);
    if outcome == CancelOutcome::Requested {
        set_location(&mut response, &["location"], &base, id);
    }
    Ok(response)
}

/// Delete a finished operation.
#[utoipa::path(
    delete,
    path = "/v1/operations/{id}",
    tag = "operations",
    params(("id" = Uuid, Path, description = "Operation id.")),
    responses(
        (status = 204, description = "Forgotten."),
        OperationNotFound,
        (status = 409, description = "Not finished yet (cancel it first).", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
pub async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    OperationId(id): OperationId,
) -> Result<StatusCode, ApiError> {
    caller.allow(Action::Manage)?;
    caller.check_sees(&*state.store, id).await?;
    state.store.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Get an operation's result.
///
/// `200` with the result JSON (`null` when the operation succeeded without one; its
/// `resultUrl` then says where the result lives). While the operation is not finished, `202`
/// with the operation, `Location` and `Retry-After`. A failed operation answers a `409`
/// problem carrying its `error`; a cancelled one a `409` problem too.
#[utoipa::path(
    get,
    path = "/v1/operations/{id}/result",
    tag = "operations",
    params(("id" = Uuid, Path, description = "Operation id."), ViewQuery),
    responses(
        (status = 200, description = "The result, as the worker reported it.", body = serde_json::Value),
        (status = 202, description = "Not finished yet; the operation in the requested view.", body = OperationView, headers(
            ("Location" = String, description = "The operation's URL."),
            ("Retry-After" = u32, description = "Seconds to wait before asking again."),
        )),
        (status = 400, description = "Unknown `view`.", body = Problem, content_type = "application/problem+json"),
        OperationNotFound,
        (status = 409, description = "Failed (the problem's `error` member holds `code`, `type` and `message`) or cancelled.", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
pub async fn result(
    caller: Caller,
    State(state): State<AppState>,
    base: BaseUrl,
    OperationId(id): OperationId,
    QueryParams(query): QueryParams<ViewQuery>,
) -> Result<Response, ApiError> {
    caller.allow(Action::Read)?;
    let op = caller.find(&*state.store, id).await?;
    match op.status {
        Status::Succeeded => Ok(axum::Json(op.result.unwrap_or(Value::Null)).into_response()),
        Status::Failed => Err(ApiError::operation_failed(op.error.as_ref())),
        Status::Cancelled => Err(ApiError::new(
            ProblemKind::OperationCancelled,
            "the operation was cancelled; it has no result",
        )),
        Status::Pending | Status::Running => {
            let mut response = operation_response(
                StatusCode::ACCEPTED,
                op,
                query.view,
                &base,
                state.config.retry_after_secs,
            );
            set_location(&mut response, &["location"], &base, id);
            Ok(response)
        }
    }
}
