//! What a submitter hands over: a validated request to create an operation.

use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Meta, Operation, RetryPolicy, Status, traceparent::TraceIds};

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

impl NewOperation {
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
