//! Waiting for the store to change instead of polling it: the long-poll of a claim, of
//! `Prefer: wait` and of SSE. Every waiter subscribes before it looks, so a change that lands
//! between the look and the wait is never missed.

use time::OffsetDateTime;
use tokio::sync::broadcast::{Receiver, error::RecvError};
use tokio::time::{Instant, sleep_until, timeout_at};
use uuid::Uuid;

use crate::{ClaimQuery, Lease, Operation, Status, Store, StoreError};

/// Claims work, waiting up to `wait` for some to become ready: woken by submits and retries
/// made visible through [`Store::subscribe`], and by the earliest future `runAt`. While it
/// waits, it offers to take operations as they are submitted (where the store hands them over,
/// see [`crate::handoff`]).
pub async fn claim_or_wait(
    store: &dyn Store,
    query: &ClaimQuery,
    wait: std::time::Duration,
) -> Result<Vec<Lease>, StoreError> {
    let deadline = Instant::now() + wait;
    loop {
        let mut changes = store.subscribe();
        let leases = store.claim(query).await?;
        if !leases.is_empty() || Instant::now() >= deadline {
            return Ok(leases);
        }
        let wake_at = match store.next_run_at(&query.filter).await? {
            Some(at) => deadline.min(instant_of(at)),
            None => deadline,
        };
        // Offered only now (a failed look above would drop it); what is submitted meanwhile
        // wakes the wait below instead.
        let mut offer = store.handoffs().map(|h| h.offer(query.clone()));
        // Wait for operations handed over, for a change that may have made something ready,
        // or for the next due runAt.
        let handed = timeout_at(wake_at, async {
            loop {
                tokio::select! {
                    biased;
                    answer = async { offer.as_mut().expect("checked").answer().await }, if offer.is_some() => {
                        return answer;
                    }
                    change = changes.recv() => match change {
                        Ok(change) if change.status == Status::Pending => return None,
                        Ok(_) => continue,
                        Err(RecvError::Lagged(_)) => return None,
                        Err(RecvError::Closed) => {
                            sleep_until(wake_at).await;
                            return None;
                        }
                    },
                }
            }
        })
        .await
        .ok()
        .flatten();
        let handed = match (handed, offer) {
            (Some(leases), _) => leases,
            (None, Some(offer)) => offer.withdraw().await.unwrap_or_default(),
            (None, None) => vec![],
        };
        if !handed.is_empty() {
            return Ok(handed);
        }
    }
}

/// Waits until operation `id` has a version other than `seen` (or is gone), up to `wait`.
/// Returns the operation as it is then (`None` if it no longer exists).
pub async fn wait_for_change(
    store: &dyn Store,
    id: Uuid,
    seen: i64,
    wait: std::time::Duration,
) -> Result<Option<Operation>, StoreError> {
    let deadline = Instant::now() + wait;
    let mut changes = store.subscribe();
    loop {
        let current = store.get(id).await?;
        match &current {
            Some(op) if op.version == seen && Instant::now() < deadline => {}
            _ => return Ok(current),
        }
        if !next_change_of(&mut changes, id, deadline).await {
            return store.get(id).await;
        }
    }
}

/// Waits for a change to `id` on `changes` until `deadline`; `false` when the deadline passed.
/// A lagged receiver counts as a change (the caller re-reads the store).
pub async fn next_change_of(
    changes: &mut Receiver<crate::Change>,
    id: Uuid,
    deadline: Instant,
) -> bool {
    timeout_at(deadline, async {
        loop {
            match changes.recv().await {
                Ok(change) if change.concerns(id) => return true,
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => return true,
                Err(RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// The tokio instant at which wall-clock time `at` arrives (now, if it is past).
fn instant_of(at: OffsetDateTime) -> Instant {
    let ahead = at - OffsetDateTime::now_utc();
    Instant::now() + std::time::Duration::try_from(ahead).unwrap_or_default()
}
