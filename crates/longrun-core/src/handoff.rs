//! Handing just-submitted operations straight to idle claimers.
//!
//! A claimer that found nothing ready offers to take what comes ([`Handoffs::offer`]); the
//! store's writer, when it inserts new operations that are due and that an offer accepts,
//! starts them for that claimer in the very transaction that inserts them
//! ([`Handoffs::take_matching`], [`Waiting::grant`]). The job then starts one commit after its
//! submit, instead of after the submit's commit, a notification and a claim transaction of its
//! own. Only claimers of the same process are offered operations; the others learn of the
//! submit as before, from the change notifications.
//!
//! An offer is withdrawn when the claimer stops waiting. A writer that took it already is
//! about to answer: [`Offer::withdraw`] then waits for that answer, so no lease is lost
//! between the two. An offer dropped without being withdrawn (its claimer's request was
//! cancelled) leaves what it was granted to run out its lease and be retried, as a claim
//! answered after its caller went away always has.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::{ClaimQuery, Lease, Operation};

/// The claimers of this process waiting for work.
#[derive(Debug, Default)]
pub struct Handoffs {
    next_id: AtomicU64,
    waiting: Mutex<Vec<Waiting>>,
}

/// A claimer waiting for work, as the writer takes it.
#[derive(Debug)]
pub struct Waiting {
    id: u64,
    /// What the claimer asked for.
    pub query: ClaimQuery,
    reply: oneshot::Sender<Vec<Lease>>,
}

/// A claimer's standing offer to take new operations.
#[derive(Debug)]
pub struct Offer {
    id: u64,
    handoffs: Arc<Handoffs>,
    /// `None` once answered.
    leases: Option<oneshot::Receiver<Vec<Lease>>>,
}

impl Handoffs {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers to take operations for `query` until the offer is answered or withdrawn.
    pub fn offer(self: &Arc<Self>, query: ClaimQuery) -> Offer {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, leases) = oneshot::channel();
        self.waiting().push(Waiting { id, query, reply });
        Offer {
            id,
            handoffs: self.clone(),
            leases: Some(leases),
        }
    }

    /// Takes the offers that accept at least one of `ops` (by name and queue), oldest first.
    /// Each must be answered with [`Waiting::grant`] (dropping it answers "nothing").
    pub fn take_matching<'a>(
        &self,
        ops: impl Iterator<Item = &'a Operation> + Clone,
    ) -> Vec<Waiting> {
        let mut waiting = self.waiting();
        if waiting.is_empty() {
            return vec![];
        }
        let (taken, kept) = std::mem::take(&mut *waiting).into_iter().partition(|w| {
            ops.clone()
                .any(|op| w.query.filter.accepts(&op.name, &op.queue))
        });
        *waiting = kept;
        taken
    }

    /// Whether the offer `id` was still waiting (it is not any more).
    fn remove(&self, id: u64) -> bool {
        let mut waiting = self.waiting();
        let before = waiting.len();
        waiting.retain(|w| w.id != id);
        waiting.len() < before
    }
}

impl Waiting {
    /// Hands `leases` (committed) to the claimer; gives them back when it went away.
    pub fn grant(self, leases: Vec<Lease>) -> Result<(), Vec<Lease>> {
        self.reply.send(leases)
    }
}

impl Offer {
    /// Waits for the writer's answer: the leases it granted (maybe none); `None` when the
    /// writer failed before answering.
    pub async fn answer(&mut self) -> Option<Vec<Lease>> {
        let leases = self.leases.as_mut()?.await.ok();
        self.leases = None;
        leases
    }

    /// Stops offering. When a writer took the offer already, waits for what it grants.
    pub async fn withdraw(mut self) -> Option<Vec<Lease>> {
        if self.leases.is_none() || self.handoffs.remove(self.id) {
            return None;
        }
        self.answer().await
    }
}

impl Drop for Offer {
    fn drop(&mut self) {
        if self.leases.is_some() {
            self.handoffs.remove(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClaimFilter, NewOperation};
    use time::{Duration, OffsetDateTime};
    use uuid::Uuid;

    fn query(names: &[&str]) -> ClaimQuery {
        ClaimQuery {
            worker: "w".into(),
            filter: ClaimFilter {
                names: names.iter().map(|n| (*n).to_owned()).collect(),
                queues: vec![],
            },
            max: 1,
            lease: Duration::seconds(30),
        }
    }

    fn op(name: &str) -> Operation {
        NewOperation::named(name).into_operation(Uuid::now_v7(), None, OffsetDateTime::now_utc())
    }

    #[tokio::test]
    async fn an_offer_is_taken_only_by_operations_it_accepts_and_gets_its_grant() {
        let handoffs = Arc::new(Handoffs::default());
        let mut offer = handoffs.offer(query(&["a"]));
        assert!(handoffs.take_matching([op("b")].iter()).is_empty());
        let taken = handoffs.take_matching([op("b"), op("a")].iter());
        assert_eq!(taken.len(), 1);
        let granted = op("a");
        let lease = Lease {
            lease_id: Uuid::now_v7(),
            expires_at: OffsetDateTime::now_utc(),
            operation: granted.clone(),
        };
        for waiting in taken {
            waiting.grant(vec![lease.clone()]).unwrap();
        }
        let leases = offer.answer().await.unwrap();
        assert_eq!(leases[0].operation.id, granted.id);
        assert!(offer.withdraw().await.is_none(), "answered already");
    }

    #[tokio::test]
    async fn a_withdrawn_offer_is_not_taken_and_a_taken_one_waits_for_its_grant() {
        let handoffs = Arc::new(Handoffs::default());
        let offer = handoffs.offer(query(&[]));
        assert!(offer.withdraw().await.is_none());
        assert!(handoffs.take_matching([op("x")].iter()).is_empty());

        let offer = handoffs.offer(query(&[]));
        let taken = handoffs.take_matching([op("x")].iter());
        let withdrawn = tokio::spawn(offer.withdraw());
        for waiting in taken {
            waiting.grant(vec![]).unwrap();
        }
        assert_eq!(withdrawn.await.unwrap().map(|l| l.len()), Some(0));

        let dropped = handoffs.offer(query(&[]));
        drop(dropped);
        assert!(handoffs.take_matching([op("x")].iter()).is_empty());
    }
}
