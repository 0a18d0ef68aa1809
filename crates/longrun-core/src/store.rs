//! The storage contract. Every engine (SQLite, PostgreSQL) implements [`Store`] and must pass
//! the same conformance suite (`conformance` feature).

use async_trait::async_trait;
use serde_json::Value;
use time::{Duration, OffsetDateTime};
use tokio::sync::broadcast;
use uuid::Uuid;

use std::sync::Arc;

use crate::handoff::Handoffs;
use crate::write::{self, Edit};
use crate::{
    ApiKey, CancelOutcome, NewKey, NewOperation, Operation, OperationError, Resource, Status,
    Token, TransitionError,
};

pub use crate::lifecycle::ProgressUpdate as Progress;

/// Why a store call did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No operation with that id (or not visible to the caller).
    #[error("operation {0} not found")]
    NotFound(Uuid),
    /// No API key with that id.
    #[error("API key {0} not found")]
    KeyNotFound(Uuid),
    /// The lifecycle or the lease fence refused the change.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The `Idempotency-Key` was used before with a different request body.
    #[error("idempotency key `{0}` was already used with a different request")]
    IdempotencyMismatch(String),
    /// `parentId` names no operation.
    #[error("parent operation {0} not found")]
    ParentNotFound(Uuid),
    /// Only a terminal operation may be deleted.
    #[error("operation {id} is {status}; only a finished operation can be deleted")]
    NotTerminal {
        /// The operation.
        id: Uuid,
        /// Its current status.
        status: Status,
    },
    /// The database failed or could not be reached.
    #[error("storage failure: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Wraps a database driver error.
    pub fn database(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Database(Box::new(e))
    }
}

/// The result of a submit.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The operation (for a repeated idempotent submit: the existing one, as it is now).
    pub operation: Operation,
    /// `false` when an earlier submit with the same idempotency key already created it.
    pub created: bool,
}

/// Filters and cursor for listing, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this status.
    pub status: Option<Status>,
    /// Only this task name.
    pub name: Option<String>,
    /// Only children of this operation.
    pub parent_id: Option<Uuid>,
    /// Only operations of this chain.
    pub root_id: Option<Uuid>,
    /// Only this tenant (`None`: all tenants).
    pub customer: Option<i64>,
    /// Only operations with `seq` below this (the cursor of the previous page).
    pub before_seq: Option<i64>,
    /// Page size (the caller caps it).
    pub limit: u32,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    /// The operations, newest (highest `seq`) first.
    pub operations: Vec<Operation>,
    /// The `before_seq` of the next page, when there may be one.
    pub next_before_seq: Option<i64>,
}

impl ListQuery {
    /// How many rows a store fetches: one more than the page, to know whether another follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.limit.max(1)) + 1
    }
}

impl Page {
    /// The page made of rows fetched with [`ListQuery::fetch_limit`], newest first.
    pub fn from_fetched(mut operations: Vec<Operation>, query: &ListQuery) -> Self {
        let limit = query.limit.max(1) as usize;
        let more = operations.len() > limit;
        operations.truncate(limit);
        let next_before_seq = more.then(|| operations.last().map(|op| op.seq)).flatten();
        Self {
            operations,
            next_before_seq,
        }
    }
}

/// Which ready operations a worker will take.
#[derive(Debug, Clone, Default)]
pub struct ClaimFilter {
    /// Only these task names (empty: any).
    pub names: Vec<String>,
    /// Only these queues (empty: any).
    pub queues: Vec<String>,
}

impl ClaimFilter {
    /// Whether an operation passes the filter.
    pub fn accepts(&self, name: &str, queue: &str) -> bool {
        (self.names.is_empty() || self.names.iter().any(|n| n == name))
            && (self.queues.is_empty() || self.queues.iter().any(|q| q == queue))
    }
}

/// A worker's request for work.
#[derive(Debug, Clone)]
pub struct ClaimQuery {
    /// The worker's name (recorded on the operation).
    pub worker: String,
    /// What it will take.
    pub filter: ClaimFilter,
    /// At most this many.
    pub max: u32,
    /// Lease length.
    pub lease: Duration,
}

/// An operation handed to a worker.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The lease token (also the operation's `executionId`); every report must carry it.
    pub lease_id: Uuid,
    /// When the lease runs out unless heartbeated.
    pub expires_at: OffsetDateTime,
    /// The operation, now running.
    pub operation: Operation,
}

/// What a heartbeat answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// The worker should stop: a client asked to cancel.
    pub cancel_requested: bool,
    /// The new end of the lease.
    pub lease_expires_at: OffsetDateTime,
}

impl Heartbeat {
    /// What a heartbeat answers, read off the operation it just changed.
    pub fn of(op: &Operation) -> Self {
        Self {
            cancel_requested: op.cancel_requested,
            lease_expires_at: op
                .lease_expires_at
                .expect("a heartbeat leaves a running operation leased"),
        }
    }
}

/// A successful outcome.
#[derive(Debug, Clone, Default)]
pub struct Completion {
    /// The output.
    pub result: Option<Value>,
    /// Where the result lives, when not in `result`.
    pub result_url: Option<String>,
    /// Resources created or changed.
    pub resources: Vec<Resource>,
}

/// A failed attempt.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What went wrong.
    pub error: OperationError,
    /// Whether another attempt may succeed.
    pub retryable: bool,
}

/// A change to one operation, broadcast to everyone waiting on the store.
///
/// A change whose `id` is nil is a *resync*: notifications may have been lost (a shared
/// database's listener reconnected), so every waiter should look at the store again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The operation.
    pub id: Uuid,
    /// Its version after the change.
    pub version: i64,
    /// Its status after the change.
    pub status: Status,
}

impl Change {
    /// The "look again" signal sent after notifications may have been lost.
    pub fn resync() -> Self {
        Self {
            id: Uuid::nil(),
            version: 0,
            status: Status::Pending,
        }
    }

    /// Whether a waiter on operation `id` should look at the store again.
    pub fn concerns(&self, id: Uuid) -> bool {
        self.id == id || self.id.is_nil()
    }
}

/// Durable storage of operations. All lifecycle rules come from [`Operation`]'s named
/// changes; a store adds atomicity, claims that hand each ready operation to one worker, and
/// change notifications.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates an operation (or, for a repeated idempotency key with the same fingerprint,
    /// returns the existing one).
    async fn submit(&self, new: NewOperation) -> Result<Submitted, StoreError>;

    /// The operation with this id.
    async fn get(&self, id: Uuid) -> Result<Option<Operation>, StoreError>;

    /// A page of operations, newest first.
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError>;

    /// Applies one named lifecycle change ([`crate::write`]) to an operation, atomically.
    async fn edit(&self, id: Uuid, edit: Edit) -> Result<Operation, StoreError>;

    /// Cancels a pending operation, or records the request for a running one.
    async fn cancel(&self, id: Uuid) -> Result<(CancelOutcome, Operation), StoreError> {
        let op = self.edit(id, write::cancel()).await?;
        Ok((CancelOutcome::of(&op), op))
    }

    /// Forgets a terminal operation.
    async fn delete(&self, id: Uuid) -> Result<(), StoreError>;

    /// Leases up to `max` ready operations (`pending`, `runAt` ≤ now), highest priority first,
    /// then oldest; each to exactly one caller.
    async fn claim(&self, query: &ClaimQuery) -> Result<Vec<Lease>, StoreError>;

    /// The earliest `runAt` of a pending operation the filter accepts, to know how long a
    /// worker may sleep when nothing is ready.
    async fn next_run_at(&self, filter: &ClaimFilter)
    -> Result<Option<OffsetDateTime>, StoreError>;

    /// Extends a lease and records progress.
    async fn heartbeat(
        &self,
        id: Uuid,
        lease: Uuid,
        lease_for: Duration,
        progress: Progress,
    ) -> Result<Heartbeat, StoreError> {
        let op = self
            .edit(id, write::heartbeat(lease, lease_for, progress))
            .await?;
        Ok(Heartbeat::of(&op))
    }

    /// Records success.
    async fn complete(
        &self,
        id: Uuid,
        lease: Uuid,
        completion: Completion,
    ) -> Result<Operation, StoreError> {
        self.edit(id, write::complete(lease, completion)).await
    }

    /// Records a failed attempt (retried, failed or cancelled as the lifecycle says).
    async fn fail(&self, id: Uuid, lease: Uuid, failure: Failure) -> Result<Operation, StoreError> {
        self.edit(id, write::fail(lease, failure)).await
    }

    /// Gives a leased operation back unfinished, ready at once, not counted as a retry.
    async fn release(&self, id: Uuid, lease: Uuid) -> Result<Operation, StoreError> {
        self.edit(id, write::release(lease)).await
    }

    /// Ends every lease that ran out (retry or fail as the lifecycle says); returns how many.
    async fn expire_leases(&self) -> Result<u64, StoreError>;

    /// Deletes terminal operations completed before `before`; returns how many.
    async fn prune(&self, before: OffsetDateTime) -> Result<u64, StoreError>;

    /// Succeeds when the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// A stream of changes made through this store (and, for shared databases, by other nodes).
    fn subscribe(&self) -> broadcast::Receiver<Change>;

    /// Where idle claimers of this process offer to take operations as they are submitted
    /// (see [`crate::handoff`]); `None` for a store that does not hand operations over.
    fn handoffs(&self) -> Option<&Arc<Handoffs>> {
        None
    }

    /// Stores a new API key under `token`'s id and secret hash.
    async fn create_key(&self, key: NewKey, token: &Token) -> Result<ApiKey, StoreError>;

    /// The key with this id and its stored secret hash.
    async fn find_key(&self, id: Uuid) -> Result<Option<(ApiKey, String)>, StoreError>;

    /// Every key, oldest first (revoked ones too).
    async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError>;

    /// Revokes a key at once; revoking it again changes nothing.
    async fn revoke_key(&self, id: Uuid) -> Result<ApiKey, StoreError>;

    /// Whether any key that is not revoked exists (authentication is on then).
    async fn has_active_keys(&self) -> Result<bool, StoreError>;
}
