//! What a store's writer queues: new operations and named changes to existing ones. Both
//! stores batch these (group commit); the changes themselves are the lifecycle's methods.

use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::batch::Batcher;
use crate::{
    Completion, Failure, NewOperation, Operation, Progress, StoreError, Submitted, TransitionError,
};

/// A named change to apply to one operation, at the time the writer gives it.
pub type Edit =
    Box<dyn FnOnce(&mut Operation, OffsetDateTime) -> Result<(), TransitionError> + Send>;

/// One queued write.
pub enum Write {
    /// Create an operation.
    Submit(Box<NewOperation>),
    /// Change an existing one.
    Edit(Uuid, Edit),
}

/// A writer's queue; answers with the operation as written (and whether a submit created it).
pub type Writer = Batcher<Write, Result<Submitted, StoreError>>;

/// A writer's queue as its own task holds it (see [`Batcher::downgrade`]).
pub type WeakWriter = crate::batch::WeakBatcher<Write, Result<Submitted, StoreError>>;

/// The answer to each of the `count` requests of a batch that failed as a whole (a write that
/// could not be committed, a read the database did not answer).
pub fn all_failed<T>(count: usize, e: &dyn std::fmt::Display) -> Vec<Result<T, StoreError>> {
    (0..count)
        .map(|_| Err(StoreError::database(std::io::Error::other(e.to_string()))))
        .collect()
}

/// A client cancels.
pub fn cancel() -> Edit {
    Box::new(|op, now| op.cancel(now).map(drop))
}

/// A worker heartbeats under `lease`.
pub fn heartbeat(lease: Uuid, lease_for: Duration, progress: Progress) -> Edit {
    Box::new(move |op, now| op.heartbeat(lease, lease_for, progress, now).map(drop))
}

/// A worker reports success.
pub fn complete(lease: Uuid, completion: Completion) -> Edit {
    let Completion {
        result,
        result_url,
        resources,
    } = completion;
    Box::new(move |op, now| op.succeed(lease, result, result_url, resources, now))
}

/// A worker reports a failed attempt.
pub fn fail(lease: Uuid, failure: Failure) -> Edit {
    Box::new(move |op, now| {
        op.fail(lease, failure.error, failure.retryable, now)
            .map(drop)
    })
}

/// A worker gives the operation back.
pub fn release(lease: Uuid) -> Edit {
    Box::new(move |op, now| op.release(lease, now))
}
