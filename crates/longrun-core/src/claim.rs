//! A claim kept beside an operation's row instead of in it.
//!
//! A claim is the hottest write of a queue. Writing it as a new version of the operation's
//! whole row (its whole body, and every index on its status) costs a store more than the
//! rest of the claim together, so the stores record what the claim gave the `start`
//! transition in a narrow row of its own and leave the operation's row as it was: pending, at
//! the version the claim started from. Every read applies the [`Start`] to a row still at that
//! version; the operation's next change writes the row out whole.

use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::{Lease, Operation, TransitionError};

/// What a claim gave an operation's `start` transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The lease (the attempt's execution id).
    pub lease: Uuid,
    /// The claiming worker.
    pub worker: String,
    /// When it started.
    pub at: OffsetDateTime,
    /// The lease's length.
    pub lease_for: Duration,
}

impl Start {
    /// A new lease for `worker`, starting at `at`.
    pub fn new(worker: &str, at: OffsetDateTime, lease_for: Duration) -> Self {
        Self {
            lease: Uuid::now_v7(),
            worker: worker.to_owned(),
            at,
            lease_for,
        }
    }

    /// Starts `op`, a pending operation as stored, and returns its lease.
    pub fn lease(&self, mut op: Operation) -> Result<Lease, TransitionError> {
        self.apply(&mut op)?;
        Ok(Lease {
            lease_id: self.lease,
            expires_at: self.expires_at(),
            operation: op,
        })
    }

    /// Applies this start, recorded while the operation's row was at `from_version`, to `op`
    /// as read from that row: a row written since (its version moved on) already holds it.
    /// An error means the recorded claim does not fit the row; `op` is then left as read.
    pub fn replay(&self, op: &mut Operation, from_version: i64) -> Result<(), TransitionError> {
        if op.version == from_version {
            self.apply(op)?;
        }
        Ok(())
    }

    fn apply(&self, op: &mut Operation) -> Result<(), TransitionError> {
        op.start(self.lease, &self.worker, self.lease_for, self.at)
    }

    /// The lease's end.
    pub fn expires_at(&self) -> OffsetDateTime {
        self.at + self.lease_for
    }
}
