//! [`Client`]: one method per route of the longrun HTTP API.

use std::time::Duration;

use longrun_core::views::View;
use longrun_core::wire::{
    BatchSubmitRequest, ClaimRequest, ClaimResponse, CompleteRequest, FailRequest,
    HeartbeatRequest, HeartbeatResponse, OperationList, ReleaseRequest, ReportsRequest,
    ReportsResponse, SubmitRequest, SubmittedId, SubmittedIds,
};
use longrun_core::{Operation, Status};
use reqwest::header::{ACCEPT, IF_NONE_MATCH, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::events::{self, EventStream};
use crate::{ClientError, Problem};

/// Time allowed to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence on a connection: above the 60 s a long-poll may last, and above the SSE
/// keep-alive interval.
const READ_TIMEOUT: Duration = Duration::from_secs(90);

/// A longrun API client. Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
}

/// Filters and paging of [`Client::list`]; `None` leaves a filter out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListParams {
    /// Only this status.
    pub status: Option<Status>,
    /// Only this task name.
    pub name: Option<String>,
    /// Only children of this operation.
    pub parent_id: Option<Uuid>,
    /// Only operations of this chain.
    pub root_id: Option<Uuid>,
    /// Page size (the server caps it at 1000).
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// What `GET /v1/operations/{id}/result` says.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultState {
    /// The operation succeeded with this result (`null` when it produced none).
    Ready(Value),
    /// Not finished yet; ask again after `retry_after_secs` when the server said.
    NotReady {
        /// The server's `Retry-After`, in seconds.
        retry_after_secs: Option<u64>,
    },
    /// The operation failed or was cancelled: there will be no result.
    Failed(Problem),
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:8080`; a path prefix is
    /// kept).
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::with_http_client(base_url, Self::http_builder().build()?)
    }

    /// Like [`Client::new`], sending `api_key` (`lr_...`) as `Authorization: Bearer` on every
    /// request.
    pub fn with_api_key(base_url: &str, api_key: &str) -> Result<Self, ClientError> {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {api_key}"))
            .map_err(|_| ClientError::InvalidUrl {
                url: base_url.to_owned(),
                reason: "the API key has characters a header cannot carry".into(),
            })?;
        value.set_sensitive(true);
        let headers =
            reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, value)]);
        Self::with_http_client(
            base_url,
            Self::http_builder().default_headers(headers).build()?,
        )
    }

    fn http_builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
    }

    /// Like [`Client::new`], with a preconfigured `reqwest` client (timeouts, proxies).
    pub fn with_http_client(base_url: &str, http: reqwest::Client) -> Result<Self, ClientError> {
        let invalid = |reason: String| ClientError::InvalidUrl {
            url: base_url.to_owned(),
            reason,
        };
        let mut base = Url::parse(base_url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(invalid("expected an http:// or https:// URL".into()));
        }
        // Route paths are appended to the base path, so it must end with exactly one slash.
        let path = format!("{}/", base.path().trim_end_matches('/'));
        base.set_path(&path);
        base.set_query(None);
        Ok(Self { http, base })
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// `POST /v1/operations`: submits an operation. With an `idempotency_key`, repeating the
    /// same request returns the same operation.
    pub async fn submit(
        &self,
        request: &SubmitRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Operation, ClientError> {
        let response = self.single(request, idempotency_key).send().await?;
        decode(response, "the submitted operation").await
    }

    /// [`submit`](Self::submit) with `Prefer: return=minimal`: returns only the operation's id,
    /// which spares the server rendering and this client decoding the operation.
    pub async fn submit_id(
        &self,
        request: &SubmitRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Uuid, ClientError> {
        let response = self
            .single(request, idempotency_key)
            .header("Prefer", "return=minimal")
            .send()
            .await?;
        let submitted: SubmittedId = decode(response, "the submitted id").await?;
        Ok(submitted.id)
    }

    /// The request of a submit.
    fn single(&self, request: &SubmitRequest, idempotency_key: Option<&str>) -> RequestBuilder {
        let builder = self
            .request(Method::POST, &["v1", "operations"])
            .json(request);
        with_idempotency_key(builder, idempotency_key)
    }

    /// `POST /v1/operations:batch`: submits many operations (1 to the server's limit, 1000 by
    /// default) in one request; returns them in request order. An invalid item rejects the
    /// whole batch. With an `idempotency_key`, repeating the same batch returns the same
    /// operations.
    pub async fn submit_batch(
        &self,
        requests: &[SubmitRequest],
        idempotency_key: Option<&str>,
    ) -> Result<Vec<Operation>, ClientError> {
        let response = self.batch(requests, idempotency_key).send().await?;
        let list: OperationList = decode(response, "the submitted operations").await?;
        Ok(list.operations)
    }

    /// [`submit_batch`](Self::submit_batch) with `Prefer: return=minimal`: returns only the
    /// operations' ids, in request order, which spares the server rendering and this client
    /// decoding every operation.
    pub async fn submit_batch_ids(
        &self,
        requests: &[SubmitRequest],
        idempotency_key: Option<&str>,
    ) -> Result<Vec<Uuid>, ClientError> {
        let response = self
            .batch(requests, idempotency_key)
            .header("Prefer", "return=minimal")
            .send()
            .await?;
        let submitted: SubmittedIds = decode(response, "the submitted ids").await?;
        Ok(submitted.ids)
    }

    /// The request of a batch submit.
    fn batch(&self, requests: &[SubmitRequest], idempotency_key: Option<&str>) -> RequestBuilder {
        let body = BatchSubmitRequest {
            operations: requests.to_vec(),
        };
        let builder = self
            .request(Method::POST, &["v1", "operations:batch"])
            .json(&body);
        with_idempotency_key(builder, idempotency_key)
    }

    /// `GET /v1/operations/{id}`: the operation.
    pub async fn get(&self, id: Uuid) -> Result<Operation, ClientError> {
        decode(
            self.operation(Method::GET, id, None).send().await?,
            "an operation",
        )
        .await
    }

    /// `GET /v1/operations/{id}?view=`: the operation in one of its renderings.
    pub async fn get_view(&self, id: Uuid, view: View) -> Result<Value, ClientError> {
        let mut url = self.operation_url(id, None);
        url.query_pairs_mut().append_pair("view", view.as_str());
        decode(self.http.get(url).send().await?, "an operation view").await
    }

    /// Long-polls the operation: waits up to `wait_secs` (the server caps it at 60) for its
    /// version to differ from `seen_version`. `None` when it did not change in that time.
    pub async fn wait(
        &self,
        id: Uuid,
        seen_version: i64,
        wait_secs: u32,
    ) -> Result<Option<Operation>, ClientError> {
        let response = self
            .operation(Method::GET, id, None)
            .header("Prefer", format!("wait={wait_secs}"))
            .header(IF_NONE_MATCH, format!("\"{seen_version}\""))
            .send()
            .await?;
        if response.status() == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        decode(response, "an operation").await.map(Some)
    }

    /// `GET /v1/operations`: a page of operations, newest first.
    pub async fn list(&self, params: &ListParams) -> Result<OperationList, ClientError> {
        decode(
            self.list_request(params, None).send().await?,
            "an operation list",
        )
        .await
    }

    /// `GET /v1/operations?view=`: a page of operations in one of their renderings.
    pub async fn list_view(
        &self,
        params: &ListParams,
        view: View,
    ) -> Result<OperationList<Value>, ClientError> {
        decode(
            self.list_request(params, Some(view)).send().await?,
            "an operation list",
        )
        .await
    }

    /// `POST /v1/operations/{id}/cancel`: cancels a pending operation, or asks the worker
    /// of a running one to stop. Returns the operation as it is now.
    pub async fn cancel(&self, id: Uuid) -> Result<Operation, ClientError> {
        decode(
            self.operation(Method::POST, id, Some("cancel"))
                .send()
                .await?,
            "an operation",
        )
        .await
    }

    /// `DELETE /v1/operations/{id}`: forgets a finished operation.
    pub async fn delete(&self, id: Uuid) -> Result<(), ClientError> {
        let response = self.operation(Method::DELETE, id, None).send().await?;
        check(response).await.map(drop)
    }

    /// `GET /v1/operations/{id}/result`: the result, or why there is none (yet).
    ///
    /// The `409` problem of a failed or cancelled operation is [`ResultState::Failed`]; any
    /// other error status (e.g. `404` for an unknown id) is an error.
    pub async fn result(&self, id: Uuid) -> Result<ResultState, ClientError> {
        let response = self
            .operation(Method::GET, id, Some("result"))
            .send()
            .await?;
        let status = response.status();
        if status == StatusCode::ACCEPTED {
            let retry_after_secs = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.trim().parse().ok());
            return Ok(ResultState::NotReady { retry_after_secs });
        }
        match decode::<Value>(response, "a result").await {
            Ok(value) => Ok(ResultState::Ready(value)),
            Err(ClientError::Problem {
                status: 409,
                problem,
            }) => Ok(ResultState::Failed(*problem)),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/operations/{id}/events`: the operation after each change, as Server-Sent
    /// Events; the stream ends after the terminal state. `last_event_id` (a version)
    /// resumes after that event.
    pub async fn events(
        &self,
        id: Uuid,
        last_event_id: Option<i64>,
    ) -> Result<EventStream, ClientError> {
        let mut builder = self
            .operation(Method::GET, id, Some("events"))
            .header(ACCEPT, "text/event-stream");
        if let Some(last) = last_event_id {
            builder = builder.header("Last-Event-ID", last.to_string());
        }
        let response = check(builder.send().await?).await?;
        Ok(events::operations(response))
    }

    /// `POST /v1/workers/claim`: leases ready operations, long-polling up to `waitSecs`.
    pub async fn claim(&self, request: &ClaimRequest) -> Result<ClaimResponse, ClientError> {
        let builder = self
            .request(Method::POST, &["v1", "workers", "claim"])
            .json(request);
        decode(builder.send().await?, "a claim response").await
    }

    /// `POST /v1/operations/{id}/heartbeat`: extends the lease and reports progress.
    pub async fn heartbeat(
        &self,
        id: Uuid,
        request: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ClientError> {
        let builder = self
            .operation(Method::POST, id, Some("heartbeat"))
            .json(request);
        decode(builder.send().await?, "a heartbeat response").await
    }

    /// `POST /v1/operations/{id}/complete`: the attempt succeeded.
    pub async fn complete(
        &self,
        id: Uuid,
        request: &CompleteRequest,
    ) -> Result<Operation, ClientError> {
        let builder = self
            .operation(Method::POST, id, Some("complete"))
            .json(request);
        decode(builder.send().await?, "an operation").await
    }

    /// `POST /v1/operations/{id}/fail`: the attempt failed.
    pub async fn fail(&self, id: Uuid, request: &FailRequest) -> Result<Operation, ClientError> {
        let builder = self.operation(Method::POST, id, Some("fail")).json(request);
        decode(builder.send().await?, "an operation").await
    }

    /// `POST /v1/operations/{id}/release`: gives a leased operation back unfinished.
    pub async fn release(&self, id: Uuid, lease_id: Uuid) -> Result<Operation, ClientError> {
        let builder = self
            .operation(Method::POST, id, Some("release"))
            .json(&ReleaseRequest { lease_id });
        decode(builder.send().await?, "an operation").await
    }

    /// `POST /v1/workers/reports`: many reports in one request, each answered on its own.
    pub async fn reports(&self, request: &ReportsRequest) -> Result<ReportsResponse, ClientError> {
        let builder = self
            .request(Method::POST, &["v1", "workers", "reports"])
            .json(request);
        decode(builder.send().await?, "a reports response").await
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in Client::with_http_client: the base URL can be a base")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.http.request(method, self.url(segments))
    }

    fn operation_url(&self, id: Uuid, action: Option<&str>) -> Url {
        let id = id.to_string();
        match action {
            Some(action) => self.url(&["v1", "operations", &id, action]),
            None => self.url(&["v1", "operations", &id]),
        }
    }

    fn operation(&self, method: Method, id: Uuid, action: Option<&str>) -> RequestBuilder {
        self.http.request(method, self.operation_url(id, action))
    }

    fn list_request(&self, params: &ListParams, view: Option<View>) -> RequestBuilder {
        let mut url = self.url(&["v1", "operations"]);
        {
            let mut query = url.query_pairs_mut();
            if let Some(status) = params.status {
                query.append_pair("status", status.as_str());
            }
            if let Some(name) = &params.name {
                query.append_pair("name", name);
            }
            if let Some(parent) = params.parent_id {
                query.append_pair("parentId", &parent.to_string());
            }
            if let Some(root) = params.root_id {
                query.append_pair("rootId", &root.to_string());
            }
            if let Some(limit) = params.limit {
                query.append_pair("limit", &limit.to_string());
            }
            if let Some(cursor) = &params.cursor {
                query.append_pair("cursor", cursor);
            }
            if let Some(view) = view {
                query.append_pair("view", view.as_str());
            }
        }
        // An empty query leaves a bare `?`; drop it.
        if url.query() == Some("") {
            url.set_query(None);
        }
        self.http.get(url)
    }
}

/// `builder` with the `Idempotency-Key` header when there is a key.
fn with_idempotency_key(builder: RequestBuilder, key: Option<&str>) -> RequestBuilder {
    match key {
        Some(key) => builder.header("Idempotency-Key", key),
        None => builder,
    }
}

/// The response when its status is a success, else its problem as an error.
async fn check(response: Response) -> Result<Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.bytes().await?;
    let problem = serde_json::from_slice::<Problem>(&body).ok();
    Err(ClientError::answered(status.as_u16(), problem, &body))
}

/// The JSON body of a successful response.
async fn decode<T: DeserializeOwned>(
    response: Response,
    what: &'static str,
) -> Result<T, ClientError> {
    let body = check(response).await?.bytes().await?;
    serde_json::from_slice(&body).map_err(|source| ClientError::Decode { what, source })
}
