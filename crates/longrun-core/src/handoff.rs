//! Handing just-submitted operations straight to idle claimers.
//!
//! A claimer that found nothing ready offers to take what comes ([`Handoffs::offer`]); the
//! store's writer, when it inserts a new operation that is due and that an offer accepts,
//! starts it for that claimer before it inserts it, in the same transaction
//! ([`Handoffs::handover`], [`Handover::assign`]), and hands the lease over once the
//! transaction commits. The job then starts one commit after its submit, instead of after the
//! submit's commit, a notification and a claim transaction of its own. Only claimers of the
//! same process are offered operations; the others learn of the submit as before, from the
//! change notifications.
//!
//! An offer is withdrawn when the claimer stops waiting. A writer that took it already is
//! about to answer: [`Offer::withdraw`] then waits for that answer, so no lease is lost
//! between the two. An offer dropped without being withdrawn (its claimer's request was
//! cancelled) leaves what it was granted to run out its lease and be retried, as a claim
//! answered after its caller went away always has.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use time::OffsetDateTime;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::batch::Batcher;
use crate::write::{self, WeakWriter, Write, Writer};
use crate::{ClaimQuery, Lease, Operation, Status, StoreError, Submitted, TransitionError};

/// The claimers of this process waiting for work.
#[derive(Debug, Default)]
pub struct Handoffs {
    next_id: AtomicU64,
    waiting: Mutex<Vec<Waiting>>,
}

/// A claimer waiting for work, as a writer takes it.
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

    /// How many claimers wait for work.
    pub fn waiting_claimers(&self) -> usize {
        self.waiting().len()
    }

    /// The hand-over of one write batch.
    pub fn handover(&self) -> Handover<'_> {
        Handover {
            handoffs: self,
            takers: vec![],
        }
    }

    /// Takes the oldest offer that accepts `op`, if any.
    fn take_for(&self, op: &Operation) -> Option<Waiting> {
        let mut waiting = self.waiting();
        let at = waiting
            .iter()
            .position(|w| w.query.filter.accepts(&op.name, &op.queue))?;
        Some(waiting.remove(at))
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

/// A claimer a batch took, and the leases of what it started for it.
pub type Grant = (Waiting, Vec<Lease>);

/// Spawns a store's writer (see [`Batcher::spawn`]) that hands new operations over:
/// `process` writes a batch and returns its answers and, once it committed, the [`Grant`]s of
/// its [`Handover`]. Each claimer gets its leases then; what a claimer that went away meanwhile
/// (its request cancelled) was handed goes back to `pending` through the writer itself, as a
/// release (not counted as a retry), instead of waiting for its lease to run out.
pub fn spawn_writer<F, Fut>(max_batch: usize, mut process: F) -> Writer
where
    F: FnMut(Vec<Write>) -> Fut + Send + 'static,
    Fut: Future<Output = (Vec<Result<Submitted, StoreError>>, Vec<Grant>)> + Send + 'static,
{
    // The writer's own handle, weak so that it does not keep its task alive.
    let itself = Arc::new(OnceLock::<WeakWriter>::new());
    let writer = {
        let itself = itself.clone();
        Batcher::spawn(max_batch, move |writes| {
            let (batch, itself) = (process(writes), itself.clone());
            async move {
                let (answers, grants) = batch.await;
                if !grants.is_empty() {
                    grant_all(grants, itself.get());
                    // The claimers just granted run next, on this thread. Tokio runs the
                    // task woken last first, and the submitters' answers (sent once this
                    // returns) would wake theirs after the claimers, leaving those to wait
                    // or to be stolen by another thread; a hand-over is for a quick start.
                    tokio::task::yield_now().await;
                }
                answers
            }
        })
    };
    let _ = itself.set(writer.downgrade());
    writer
}

/// Hands each claimer its leases, releasing through `writer` those of claimers gone.
fn grant_all(grants: Vec<Grant>, writer: Option<&WeakWriter>) {
    for (waiting, leases) in grants {
        let Err(leases) = waiting.grant(leases) else {
            continue;
        };
        let Some(writer) = writer.and_then(WeakWriter::upgrade) else {
            continue;
        };
        for lease in leases {
            let writer = writer.clone();
            let (id, lease_id) = (lease.operation.id, lease.lease_id);
            // Should the release fail too, the lease runs out and the operation is retried.
            tokio::spawn(async move {
                let _ = writer.call(Write::Edit(id, write::release(lease_id))).await;
            });
        }
    }
}

/// The hand-over of one write batch: the offers it took and what it started for each.
/// Dropped (the batch failed), it answers every claimer it took with nothing.
#[derive(Debug)]
pub struct Handover<'a> {
    handoffs: &'a Handoffs,
    takers: Vec<Taker>,
}

#[derive(Debug)]
struct Taker {
    waiting: Waiting,
    /// Operations started for it, stored or not.
    assigned: usize,
    /// Those stored.
    leases: Vec<Lease>,
}

/// An operation started for a claimer, to be recorded with [`Handover::stored`].
#[derive(Debug, Clone, Copy)]
pub struct Assigned {
    taker: usize,
    lease_id: Uuid,
    expires_at: OffsetDateTime,
}

impl Handover<'_> {
    /// Starts `op`, new and not stored yet, for a waiting claimer that accepts it (one this
    /// batch took already while it has room, else the oldest offer), when it is pending and
    /// due.
    pub fn assign(
        &mut self,
        op: &mut Operation,
        now: OffsetDateTime,
    ) -> Result<Option<Assigned>, TransitionError> {
        if op.status != Status::Pending || op.run_at > now {
            return Ok(None);
        }
        let has_room = |t: &Taker| {
            t.assigned < t.waiting.query.max as usize
                && t.waiting.query.filter.accepts(&op.name, &op.queue)
        };
        let taker = match self.takers.iter().position(has_room) {
            Some(taker) => taker,
            None => match self.handoffs.take_for(op) {
                Some(waiting) => {
                    self.takers.push(Taker {
                        waiting,
                        assigned: 0,
                        leases: vec![],
                    });
                    self.takers.len() - 1
                }
                None => return Ok(None),
            },
        };
        let query = &self.takers[taker].waiting.query;
        let lease_id = Uuid::now_v7();
        op.start(lease_id, &query.worker, query.lease, now)?;
        let expires_at = now + query.lease;
        self.takers[taker].assigned += 1;
        Ok(Some(Assigned {
            taker,
            lease_id,
            expires_at,
        }))
    }

    /// Records `op`, as stored (with its `seq`), for the claimer it was started for.
    pub fn stored(&mut self, assigned: Assigned, op: &Operation) {
        self.takers[assigned.taker].leases.push(Lease {
            lease_id: assigned.lease_id,
            expires_at: assigned.expires_at,
            operation: op.clone(),
        });
    }

    /// The claimers taken, each with the leases of what was stored for it; hand them over
    /// with [`Waiting::grant`] once the batch committed.
    pub fn finish(self) -> Vec<Grant> {
        self.takers
            .into_iter()
            .map(|t| (t.waiting, t.leases))
            .collect()
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
    use time::Duration;

    fn query(names: &[&str], max: u32) -> ClaimQuery {
        ClaimQuery {
            worker: "w".into(),
            filter: ClaimFilter {
                names: names.iter().map(|n| (*n).to_owned()).collect(),
                queues: vec![],
            },
            max,
            lease: Duration::seconds(30),
        }
    }

    fn op(name: &str) -> Operation {
        NewOperation::named(name).into_operation(Uuid::now_v7(), None, OffsetDateTime::now_utc())
    }

    /// Runs a batch that stores `ops`, handing over what it can; returns each op's status.
    fn batch(handoffs: &Handoffs, ops: &mut [Operation]) -> Vec<Grant> {
        let now = OffsetDateTime::now_utc();
        let mut handover = handoffs.handover();
        for (seq, op) in ops.iter_mut().enumerate() {
            let assigned = handover.assign(op, now).unwrap();
            op.seq = seq as i64 + 1;
            if let Some(assigned) = assigned {
                handover.stored(assigned, op);
            }
        }
        handover.finish()
    }

    #[tokio::test]
    async fn an_offer_takes_what_it_accepts_up_to_its_max_and_gets_it_once_granted() {
        let handoffs = Arc::new(Handoffs::default());
        let mut offer = handoffs.offer(query(&["a"], 2));
        let mut ops = [op("b"), op("a"), op("a"), op("a")];
        let grants = batch(&handoffs, &mut ops);
        let statuses: Vec<Status> = ops.iter().map(|op| op.status).collect();
        assert_eq!(
            statuses,
            [
                Status::Pending,
                Status::Running,
                Status::Running,
                Status::Pending
            ]
        );
        assert_eq!(grants.len(), 1);
        for (waiting, leases) in grants {
            waiting.grant(leases).unwrap();
        }
        let leases = offer.answer().await.unwrap();
        let handed: Vec<Uuid> = leases.iter().map(|l| l.operation.id).collect();
        assert_eq!(handed, [ops[1].id, ops[2].id]);
        assert_eq!(leases[0].operation.seq, 2);
        assert_eq!(ops[1].execution_id, Some(leases[0].lease_id));
        assert!(offer.withdraw().await.is_none(), "answered already");
    }

    #[tokio::test]
    async fn what_a_claimer_gone_meanwhile_was_handed_is_released() {
        let handoffs = Arc::new(Handoffs::default());
        let offer = handoffs.offer(query(&[], 1));
        let mut ops = [op("x")];
        let now = OffsetDateTime::now_utc();
        let mut handover = handoffs.handover();
        let assigned = handover.assign(&mut ops[0], now).unwrap().unwrap();
        handover.stored(assigned, &ops[0]);
        drop(offer);
        // A writer that applies what it is asked to the operation handed over.
        let (released, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let handed = ops[0].clone();
        let writer = Batcher::spawn(8, move |writes: Vec<Write>| {
            let (released, handed) = (released.clone(), handed.clone());
            async move {
                writes
                    .into_iter()
                    .map(|write| {
                        let Write::Edit(id, edit) = write else {
                            panic!("only releases are written")
                        };
                        let mut op = handed.clone();
                        assert_eq!(id, op.id);
                        edit(&mut op, OffsetDateTime::now_utc()).map_err(StoreError::from)?;
                        let _ = released.send(op.clone());
                        Ok(Submitted {
                            operation: op,
                            created: false,
                        })
                    })
                    .collect::<Vec<Result<Submitted, StoreError>>>()
            }
        });
        grant_all(handover.finish(), Some(&writer.downgrade()));
        let op = tokio::time::timeout(std::time::Duration::from_secs(5), seen.recv())
            .await
            .expect("a release is written")
            .expect("an operation");
        assert_eq!((op.status, op.retries), (Status::Pending, 0));
    }

    #[tokio::test]
    async fn a_withdrawn_offer_is_not_taken_and_a_taken_one_waits_for_its_grant() {
        let handoffs = Arc::new(Handoffs::default());
        let offer = handoffs.offer(query(&[], 1));
        assert!(offer.withdraw().await.is_none());
        assert!(batch(&handoffs, &mut [op("x")]).is_empty());

        let offer = handoffs.offer(query(&[], 1));
        let grants = batch(&handoffs, &mut [op("x")]);
        let withdrawn = tokio::spawn(offer.withdraw());
        for (waiting, leases) in grants {
            waiting.grant(leases).unwrap();
        }
        assert_eq!(withdrawn.await.unwrap().map(|l| l.len()), Some(1));

        drop(handoffs.offer(query(&[], 1)));
        assert!(batch(&handoffs, &mut [op("x")]).is_empty());
    }
}
