//! Group commit on PostgreSQL: submits and changes to single operations queue up and go to the
//! database together, one transaction per batch: all new operations in one `INSERT … UNNEST`,
//! all changed rows locked in one `SELECT … FOR UPDATE` (in `seq` order, so batches on
//! different nodes never deadlock) and written back in one `UPDATE … UNNEST`; once it
//! commits, every change is announced (see `listener::Announcer`).
//!
//! A batch locks `operations` rows first and only then touches their `ready` entries (which
//! a claimer may hold for a moment: claimers never wait on a lock, see `CLAIM_READY`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use longrun_core::claimed::Claimed;
use longrun_core::handoff::{Grant, Handoffs, spawn_writer};
use longrun_core::write::{Write, Writer, all_failed};
use longrun_core::{Change, Clock, Idempotency, Operation, Status, StoreError, Submitted};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::listener::{Announcer, change};
use crate::pool::Pool;
use crate::row::{self, Edited, db};

/// Most writes in one transaction.
const MAX_BATCH: usize = 512;

/// Starts the writer on `pool`, announcing changes on `channel` and handing new operations to
/// the claimers waiting in `handoffs`.
pub(crate) fn spawn(
    pool: Pool,
    clock: Arc<dyn Clock>,
    announcer: Arc<Announcer>,
    handoffs: Arc<Handoffs>,
    claimed: Arc<Claimed>,
) -> Writer {
    spawn_writer(MAX_BATCH, move |writes| {
        let (pool, clock, announcer, handoffs, claimed) = (
            pool.clone(),
            clock.clone(),
            announcer.clone(),
            handoffs.clone(),
            claimed.clone(),
        );
        async move { write_batch(&pool, &announcer, &handoffs, &claimed, clock.now(), writes).await }
    })
}

type Answer = Result<Submitted, StoreError>;

/// What a batch does once committed.
struct Written {
    answers: Vec<Answer>,
    changes: Vec<Change>,
    grants: Vec<Grant>,
}

/// Writes a batch; returns the answers and, once it committed, what to hand to the claimers
/// it took.
async fn write_batch(
    pool: &Pool,
    announcer: &Announcer,
    handoffs: &Handoffs,
    claimed: &Claimed,
    now: OffsetDateTime,
    writes: Vec<Write>,
) -> (Vec<Answer>, Vec<Grant>) {
    let count = writes.len();
    let outcome = async {
        // Submits without a parent or an idempotency key alone are one statement
        // (`row::insert`), which commits on its own: no `BEGIN` and `COMMIT` round trips
        // before they are answered (and handed-over jobs start).
        if writes.iter().all(|w| {
            matches!(w, Write::Submit(new) if new.parent_id.is_none() && new.idempotency.is_none())
        }) {
            let mut conn = pool.acquire().await?;
            return apply(&mut conn, handoffs, claimed, now, writes).await;
        }
        let mut tx = pool.begin().await?;
        let written = apply(&mut tx, handoffs, claimed, now, writes).await?;
        tx.commit().await?;
        Ok::<_, StoreError>(written)
    };
    match outcome.await {
        Ok(written) => {
            announcer.announce(written.changes);
            (written.answers, written.grants)
        }
        Err(e) => (all_failed(count, &e), vec![]),
    }
}

/// Applies the batch inside `tx`; returns the answers, the changes to announce and the leases
/// to hand over once it commits. An `Err` is a database failure that voids the whole batch.
async fn apply(
    tx: &mut PgConnection,
    handoffs: &Handoffs,
    claimed: &Claimed,
    now: OffsetDateTime,
    writes: Vec<Write>,
) -> Result<Written, StoreError> {
    let edited: Vec<Uuid> = writes
        .iter()
        .filter_map(|w| {
            if let Write::Edit(id, _) = w {
                Some(*id)
            } else {
                None
            }
        })
        .collect();
    let mut locked = lock(tx, claimed, &edited).await?;
    let parents: Vec<Uuid> = writes
        .iter()
        .filter_map(|w| {
            if let Write::Submit(new) = w {
                new.parent_id
            } else {
                None
            }
        })
        .collect();
    let roots = roots(tx, &parents).await?;

    let mut answers: Vec<Option<Answer>> = Vec::with_capacity(writes.len());
    let mut inserts: Vec<(usize, Operation, Option<Idempotency>)> = vec![];
    let mut dirty = HashSet::new();
    // The last change of an operation in the batch is answered with the operation itself once
    // it is saved (`moved`); an earlier one with a copy of the operation as it was then.
    let mut edits_left: HashMap<Uuid, usize> = HashMap::new();
    for id in &edited {
        *edits_left.entry(*id).or_default() += 1;
    }
    let mut moved: Vec<(usize, Uuid)> = vec![];
    for (i, write) in writes.into_iter().enumerate() {
        answers.push(match write {
            Write::Submit(new) => match new
                .parent_id
                .map(|p| roots.get(&p).copied().ok_or(StoreError::ParentNotFound(p)))
            {
                Some(Err(e)) => Some(Err(e)),
                parent => {
                    let idempotency = new.idempotency.clone();
                    let root = parent.map(|r| r.expect("checked above"));
                    inserts.push((
                        i,
                        new.into_operation(Uuid::now_v7(), root, now),
                        idempotency,
                    ));
                    None
                }
            },
            Write::Edit(id, edit) => {
                let left = edits_left.get_mut(&id).expect("counted above");
                *left -= 1;
                match locked.get_mut(&id) {
                    None => Some(Err(StoreError::NotFound(id))),
                    Some(Edited { op, .. }) => match edit(op, now) {
                        Err(e) => Some(Err(e.into())),
                        Ok(()) => {
                            dirty.insert(id);
                            if *left == 0 {
                                moved.push((i, id));
                                None
                            } else {
                                Some(Ok(Submitted {
                                    operation: op.clone(),
                                    created: false,
                                }))
                            }
                        }
                    },
                }
            }
        });
    }

    // Due operations go to claimers of this node waiting for them, in claim order.
    let mut handover = handoffs.handover();
    let mut order: Vec<usize> = (0..inserts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(inserts[i].1.priority));
    let mut assigned = vec![];
    for i in order {
        if let Some(a) = handover.assign(&mut inserts[i].1, now)? {
            assigned.push((i, a));
        }
    }
    let new_ops: Vec<(&Operation, Option<&Idempotency>)> = inserts
        .iter()
        .map(|(_, op, idem)| (op, idem.as_ref()))
        .collect();
    let seqs = row::insert(tx, &new_ops).await?;
    // Only what was inserted is handed over (an operation whose idempotency key was taken is
    // the earlier one's).
    for (i, a) in assigned {
        let op = &mut inserts[i].1;
        if let Some(&seq) = seqs.get(&op.id) {
            op.seq = seq;
            handover.stored(a, op);
        }
    }
    let grants = handover.finish();
    let mut announced = Vec::with_capacity(seqs.len() + dirty.len());
    for (i, mut op, idempotency) in inserts {
        answers[i] = Some(match (seqs.get(&op.id), idempotency) {
            (Some(&seq), _) => {
                op.seq = seq;
                announced.push(change(&op));
                Ok(Submitted {
                    operation: op,
                    created: true,
                })
            }
            // Not inserted: its key was taken (by an earlier submit, or earlier in this batch).
            (None, Some(idem)) => {
                let (existing, fingerprint) =
                    row::by_idempotency_key(tx, op.customer, &idem.key).await?;
                if fingerprint.as_deref() == Some(idem.fingerprint.as_str()) {
                    Ok(Submitted {
                        operation: existing,
                        created: false,
                    })
                } else {
                    Err(StoreError::IdempotencyMismatch(idem.key))
                }
            }
            (None, None) => unreachable!("only a keyed insert can conflict"),
        });
    }

    let changed: Vec<Edited> = dirty
        .iter()
        .map(|id| locked.remove(id).expect("edited rows are locked"))
        .collect();
    row::save(tx, &changed).await?;
    announced.extend(changed.iter().map(|e| change(&e.op)));
    let mut saved: HashMap<Uuid, Operation> =
        changed.into_iter().map(|e| (e.op.id, e.op)).collect();
    for (i, id) in moved {
        let operation = saved.remove(&id).expect("a changed operation is saved");
        answers[i] = Some(Ok(Submitted {
            operation,
            created: false,
        }));
    }
    let answers = answers
        .into_iter()
        .map(|a| a.expect("every write is answered"))
        .collect();
    Ok(Written {
        answers,
        changes: announced,
        grants,
    })
}

/// Locks the rows of `ids` for this transaction, in `seq` order, then the `ready` entries of
/// those that are pending: a claim that took such an entry meanwhile (claims do not lock
/// `operations` rows) is waited for, and the operation it started is read again, running; a
/// claim skips the entries locked here.
async fn lock(
    tx: &mut PgConnection,
    claimed: &Claimed,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Edited>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(row::operations_where!(
        "o.id = ANY($1) ORDER BY o.seq FOR UPDATE OF o"
    ))
    .bind(ids)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    let mut ops = rows
        .iter()
        .map(|r| row::decode_to_change(r, claimed).map(|op| (op.id, op)))
        .collect::<Result<HashMap<_, _>, _>>()?;
    let pending: Vec<i64> = ops
        .values()
        .filter(|op| op.status == Status::Pending)
        .map(|op| op.seq)
        .collect();
    if !pending.is_empty() {
        let still: HashSet<i64> =
            sqlx::query_scalar("SELECT seq FROM ready WHERE seq = ANY($1) ORDER BY seq FOR UPDATE")
                .bind(&pending)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?
                .into_iter()
                .collect();
        let claimed: Vec<i64> = pending.into_iter().filter(|s| !still.contains(s)).collect();
        if !claimed.is_empty() {
            let rows = sqlx::query(row::operations_where!("o.seq = ANY($1)"))
                .bind(&claimed)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            for r in &rows {
                let op = row::decode(r)?;
                ops.insert(op.id, op);
            }
        }
    }
    Ok(ops
        .into_iter()
        .map(|(id, op)| (id, Edited::loaded(op)))
        .collect())
}

/// The `rootId` of each existing operation among `parents`.
async fn roots(tx: &mut PgConnection, parents: &[Uuid]) -> Result<HashMap<Uuid, Uuid>, StoreError> {
    if parents.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT id, root_id FROM operations WHERE id = ANY($1)")
            .bind(parents)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
    Ok(rows.into_iter().collect())
}
