//! The operations a store's claims started, as their leases carry them, kept until their next
//! change. A change (most often the completion) of an operation that nothing but its claim
//! changed since, its row still at the version the claim started from and held by that same
//! claim (see [`crate::claim`]), starts from this copy instead of decoding the row's body
//! again: in a SQLite drain, decoding the body of each completed operation took 14 % of the
//! writer thread's time.
//!
//! Anything else that changed the operation in between (another process on the same database,
//! an expired lease, a claim rolled back) left its row at another version or under another
//! claim, and the store decodes the row as before: a copy is only used for the exact row it
//! was made from.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use uuid::Uuid;

use crate::Operation;

/// Most operations kept. Leases this process never reports on (a worker gone, another process
/// completing them) would otherwise pile up: past this many, all are dropped, and the next
/// changes decode their rows.
pub const MAX_KEPT: usize = 16_384;

/// The copies, by `seq`.
#[derive(Debug, Default)]
pub struct Claimed(Mutex<HashMap<i64, Kept>>);

#[derive(Debug)]
struct Kept {
    from_version: i64,
    lease: Uuid,
    operation: Operation,
}

impl Claimed {
    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Kept>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `operation`, which a claim under `lease` started from its row at `from_version`.
    pub fn keep(&self, from_version: i64, lease: Uuid, operation: Operation) {
        let mut kept = self.kept();
        if kept.len() >= MAX_KEPT {
            kept.clear();
        }
        kept.insert(
            operation.seq,
            Kept {
                from_version,
                lease,
                operation,
            },
        );
    }

    /// The kept copy of operation `seq`, if its row is still at the version its claim started
    /// from (`row_version`) and held by that claim (`claim`: the claim's `from_version` and
    /// lease, if a claim holds the row). The copy is dropped either way: the caller is about to
    /// change the operation.
    pub fn take(
        &self,
        seq: i64,
        row_version: i64,
        claim: Option<(i64, Uuid)>,
    ) -> Option<Operation> {
        let kept = self.kept().remove(&seq)?;
        let unchanged =
            row_version == kept.from_version && claim == Some((kept.from_version, kept.lease));
        unchanged.then_some(kept.operation)
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::NewOperation;

    fn operation(seq: i64) -> Operation {
        let mut op = NewOperation::named("t").into_operation(
            Uuid::now_v7(),
            None,
            OffsetDateTime::UNIX_EPOCH,
        );
        op.seq = seq;
        op
    }

    #[test]
    fn a_copy_serves_only_the_row_its_claim_left() {
        let claimed = Claimed::default();
        let lease = Uuid::now_v7();
        let changed_rows = [
            (2, Some((1, lease))),          // written since
            (1, None),                      // claim gone
            (1, Some((1, Uuid::now_v7()))), // claimed again
        ];
        for (version, claim) in changed_rows {
            claimed.keep(1, lease, operation(7));
            assert_eq!(claimed.take(7, version, claim), None, "{version} {claim:?}");
            assert_eq!(claimed.take(7, 1, Some((1, lease))), None, "dropped");
        }
        let op = operation(7);
        claimed.keep(1, lease, op.clone());
        assert_eq!(
            claimed.take(8, 1, Some((1, lease))),
            None,
            "another operation"
        );
        assert_eq!(claimed.take(7, 1, Some((1, lease))), Some(op));
    }

    #[test]
    fn copies_are_dropped_past_the_limit() {
        let claimed = Claimed::default();
        let lease = Uuid::now_v7();
        for seq in 0..=MAX_KEPT as i64 {
            claimed.keep(1, lease, operation(seq));
        }
        assert_eq!(claimed.take(0, 1, Some((1, lease))), None);
        let last = MAX_KEPT as i64;
        assert!(claimed.take(last, 1, Some((1, lease))).is_some());
    }
}
