//! The longrun domain: an [`Operation`] and its lifecycle, the [`RetryPolicy`], the three
//! wire [`views`] of the seed APIs, the HTTP wire bodies, and the [`Store`] contract that every
//! storage engine implements (with its conformance suite behind the `conformance` feature).
//!
//! Nothing here performs I/O: time comes from a [`Clock`], randomness (retry jitter) is derived
//! from the operation itself, and stores are reached only through the [`Store`] trait.

pub mod batch;
pub mod claim;
pub mod claimed;
pub mod clock;
pub mod compact;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod handoff;
pub mod keys;
pub mod lifecycle;
pub mod operation;
pub mod retry;
pub mod status;
pub mod store;
pub mod stored;
pub mod submission;
pub mod traceparent;
pub mod validate;
pub mod views;
pub mod waiting;
pub mod wire;
pub mod write;

pub use clock::{Clock, ManualClock, SystemClock};
pub use keys::{ApiKey, NewKey, Role, Token};
pub use lifecycle::{CancelOutcome, TransitionError};
pub use operation::{Meta, Operation, OperationError, Resource};
pub use retry::RetryPolicy;
pub use status::Status;
pub use store::{
    Change, ClaimFilter, ClaimQuery, Completion, Failure, Heartbeat, Lease, ListQuery, Page,
    Progress, Store, StoreError, Submitted,
};
pub use submission::{Idempotency, NewOperation, Owner, SubmitDefaults};
