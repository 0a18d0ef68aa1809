//! The operations this store's claims started, as their leases carry them, kept until their
//! next change: a change of an operation that nothing but its claim changed since (its row still
//! at the version the claim started from, that claim's row still in `claims`) starts from this
//! copy instead of decoding the row's body again. In a drain, decoding the body of each
//! completed operation took 14 % of the writer thread's time.
//!
//! Anything else that changed the operation in between (another store on the same file, an
//! expired lease, a claim rolled back) left the row at another version or under another claim,
//! and its body is decoded as before: a kept copy is only ever used for the exact row it was
//! made from.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use longrun_core::{Operation, StoreError};
use rusqlite::Row;

use crate::row::db;

/// Most operations kept. Leases this process never reports on (a worker gone, another process
/// completing them) would otherwise pile up: past this many, all are dropped and the next
/// changes decode their rows.
const MAX_KEPT: usize = 16_384;

/// The copies, by `seq`; used by the writer thread only (the lock is never contended).
#[derive(Debug, Default)]
pub(crate) struct Claimed(Mutex<HashMap<i64, Kept>>);

#[derive(Debug)]
struct Kept {
    /// The row's version when claimed.
    from_version: i64,
    /// The claim's `lease_id`, as stored.
    lease: String,
    operation: Operation,
}

impl Claimed {
    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Kept>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `operation` as a claim of its row at `from_version`, under `lease`, started it.
    pub(crate) fn keep(&self, from_version: i64, lease: String, operation: Operation) {
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

    /// The kept copy of the operation on `row` (of `row::operations_where!` with the row's
    /// `version` in column 7), if the row is still the one its claim started from. The copy is
    /// not kept any longer either way: the caller is about to change the operation.
    pub(crate) fn take(&self, row: &Row<'_>) -> Result<Option<Operation>, StoreError> {
        let seq: i64 = row.get(0).map_err(db)?;
        let Some(kept) = self.kept().remove(&seq) else {
            return Ok(None);
        };
        let from: Option<i64> = row.get(2).map_err(db)?;
        let lease = row.get_ref(3).map_err(db)?.as_str_or_null().map_err(db)?;
        let version: i64 = row.get(7).map_err(db)?;
        let unchanged = from == Some(kept.from_version)
            && version == kept.from_version
            && lease == Some(kept.lease.as_str());
        Ok(unchanged.then_some(kept.operation))
    }
}
