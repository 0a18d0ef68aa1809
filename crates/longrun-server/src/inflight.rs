//! Idempotency keys being processed on this node, so a retry that overtakes its first request
//! gets `409` (with `Retry-After`) instead of racing it, as the IETF `Idempotency-Key` draft
//! asks. Across nodes the database's unique index on (customer, key) does the same job
//! differently: the second insert waits for the first and then answers its operation.
//!
//! The rest of the draft is the store's: keys are scoped by customer (the unique index is on
//! customer and key), the same key and body answer the same operation, another body is `422`;
//! a key lives as long as its operation, so until the maintenance loop deletes it
//! `ServerConfig::retention` after it finished (7 days by default) or a client deletes it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::error::{ApiError, ProblemKind};

/// Seconds a client is asked to wait before retrying a request still in flight.
const RETRY_AFTER_SECS: u64 = 1;

/// The (customer, key) pairs of the submits in progress.
#[derive(Debug, Default)]
pub struct InFlight(Mutex<HashSet<(i64, String)>>);

/// A submit in progress; dropping it (the request finished, failed or was abandoned) frees
/// the key.
#[derive(Debug)]
pub struct InFlightGuard {
    set: Arc<InFlight>,
    entry: (i64, String),
}

impl InFlight {
    /// Marks `key` of `customer` as in progress; `409` when it already is.
    pub fn begin(set: &Arc<Self>, customer: i64, key: &str) -> Result<InFlightGuard, ApiError> {
        let entry = (customer, key.to_owned());
        if !set.keys().insert(entry.clone()) {
            return Err(ApiError::new(
                ProblemKind::IdempotencyKeyInFlight,
                format!(
                    "a request with idempotency key `{key}` is still being processed; retry after it finishes"
                ),
            )
            .retry_after(RETRY_AFTER_SECS));
        }
        Ok(InFlightGuard {
            set: set.clone(),
            entry,
        })
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashSet<(i64, String)>> {
        // The set stays consistent even if a holder panicked: each change is one call.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.set.keys().remove(&self.entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_busy_until_its_guard_drops_and_tenants_do_not_share_keys() {
        let set = Arc::new(InFlight::default());
        let first = InFlight::begin(&set, 1, "k").unwrap();
        let busy = InFlight::begin(&set, 1, "k").unwrap_err();
        assert_eq!(busy.kind(), ProblemKind::IdempotencyKeyInFlight);
        let _other_tenant = InFlight::begin(&set, 2, "k").unwrap();
        drop(first);
        assert!(InFlight::begin(&set, 1, "k").is_ok());
    }
}
