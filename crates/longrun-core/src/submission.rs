//! What a submitter hands over: a validated request to create an operation.

use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    Meta, Operation, RetryPolicy, Status,
    traceparent::TraceIds,
    validate::{self, InvalidInput, MAX_BACKOFF_SECS},
    wire::SubmitRequest,
};

/// Who an operation belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Tenant id.
    pub customer: i64,
    /// Submitting user's id.
    pub user: i64,
    /// Submitting user's name.
    pub user_name: String,
}

/// An `Idempotency-Key` and a fingerprint of the request body it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The client's key.
    pub key: String,
    /// A digest of the request body: same key + other body is a conflict.
    pub fingerprint: String,
}

/// A request to create an operation, already validated.
#[derive(Debug, Clone)]
pub struct NewOperation {
    /// Task kind.
    pub name: String,
    /// Queue name.
    pub queue: String,
    /// Higher runs first.
    pub priority: i32,
    /// Positional arguments (array).
    pub args: Value,
    /// Keyword arguments (object).
    pub kwargs: Value,
    /// Free JSON.
    pub content: Option<Value>,
    /// Origin metadata (`url` already defaulted by the caller).
    pub meta: Meta,
    /// Parent operation, if this is a child.
    pub parent_id: Option<Uuid>,
    /// Not before this instant; `None` means now.
    pub run_at: Option<OffsetDateTime>,
    /// Retry policy for this operation.
    pub retry_policy: RetryPolicy,
    /// Trace context.
    pub trace: TraceIds,
    /// Owner.
    pub owner: Owner,
    /// Idempotency key, when the request had one.
    pub idempotency: Option<Idempotency>,
}

/// What a submit request leaves out, filled in by whoever accepts it.
#[derive(Debug, Clone)]
pub struct SubmitDefaults {
    /// The retry policy the request's fields override.
    pub retry_policy: RetryPolicy,
    /// Who the operation belongs to.
    pub owner: Owner,
    /// The trace context (from `traceparent`, a parent operation, or new).
    pub trace: TraceIds,
    /// `meta.url` when the request gives none: the URL the request was sent to.
    pub request_url: Option<String>,
}

impl NewOperation {
    /// Validates a submit request and fills in every default: queue `default`, priority 0,
    /// `args` `[]`, `kwargs` `{}`, the retry policy overridden field by field. The
    /// idempotency key is the caller's to set.
    pub fn from_request(
        request: SubmitRequest,
        defaults: SubmitDefaults,
    ) -> Result<Self, InvalidInput> {
        validate::name("name", &request.name)?;
        let queue = request.queue.unwrap_or_else(|| "default".into());
        validate::name("queue", &queue)?;
        let args = request.args.unwrap_or_else(|| Value::Array(vec![]));
        if !args.is_array() {
            return Err(InvalidInput("`args` must be a JSON array".into()));
        }
        let kwargs = request
            .kwargs
            .unwrap_or_else(|| Value::Object(Default::default()));
        if !kwargs.is_object() {
            return Err(InvalidInput("`kwargs` must be a JSON object".into()));
        }
        let mut retry_policy = defaults.retry_policy;
        if let Some(max) = request.max_retries {
            retry_policy.max_retries = max;
        }
        if let Some(base) = request.backoff_base_secs {
            validate::range("backoffBaseSecs", base, 0.0, MAX_BACKOFF_SECS)?;
            retry_policy.backoff_base_secs = base;
        }
        if let Some(cap) = request.backoff_cap_secs {
            validate::range("backoffCapSecs", cap, 0.0, MAX_BACKOFF_SECS)?;
            retry_policy.backoff_cap_secs = cap;
        }
        let mut meta = request.meta.unwrap_or_default();
        if meta.url.is_none() {
            meta.url = defaults.request_url;
        }
        Ok(Self {
            name: request.name,
            queue,
            priority: request.priority.unwrap_or(0),
            args,
            kwargs,
            content: request.content,
            meta,
            parent_id: request.parent_id,
            run_at: request.run_at,
            retry_policy,
            trace: defaults.trace,
            owner: defaults.owner,
            idempotency: None,
        })
    }

    /// A submission with defaults everywhere but the name (handy in tests and for children).
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            queue: "default".into(),
            priority: 0,
            args: Value::Array(vec![]),
            kwargs: Value::Object(Default::default()),
            content: None,
            meta: Meta::default(),
            parent_id: None,
            run_at: None,
            retry_policy: RetryPolicy::default(),
            trace: TraceIds::generate(),
            owner: Owner {
                customer: 1,
                user: 1,
                user_name: "default".into(),
            },
            idempotency: None,
        }
    }

    /// The new pending operation, given its id, the root of its chain and the time. `seq` is 0
    /// until the store assigns one.
    pub fn into_operation(self, id: Uuid, root_id: Option<Uuid>, now: OffsetDateTime) -> Operation {
        Operation {
            id,
            seq: 0,
            name: self.name,
            queue: self.queue,
            priority: self.priority,
            status: Status::Pending,
            created_at: now,
            updated_at: now,
            started_at: None,
            completed_at: None,
            run_at: self.run_at.unwrap_or(now),
            progress_pct: None,
            status_detail: None,
            args: self.args,
            kwargs: self.kwargs,
            content: self.content,
            result: None,
            result_url: None,
            resources: vec![],
            error: None,
            retries: 0,
            retry_policy: self.retry_policy,
            meta: self.meta,
            parent_id: self.parent_id,
            root_id: root_id.unwrap_or(id),
            trace_id: self.trace.trace_id,
            span_id: self.trace.span_id,
            execution_id: None,
            worker: None,
            lease_expires_at: None,
            cancel_requested: false,
            customer: self.owner.customer,
            created_by: self.owner.user,
            created_by_name: self.owner.user_name,
            version: 1,
        }
    }
}
