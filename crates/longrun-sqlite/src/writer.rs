//! The single writer. Every submit and every change to one operation is queued to one task,
//! which writes everything that queued up meanwhile in one `BEGIN IMMEDIATE` transaction: many
//! concurrent writers share one commit, and SQLite never sees two writers race. The whole
//! batch runs synchronously as one job of the writer thread (see `conn`).

use std::sync::Arc;

use longrun_core::claimed::Claimed;
use longrun_core::handoff::{Grant, Handoffs, Handover, spawn_writer};
use longrun_core::write::{Edit, Write, Writer, all_failed};
use longrun_core::{Change, Clock, NewOperation, Operation, StoreError, Submitted};
use rusqlite::{Connection, OptionalExtension};
use time::OffsetDateTime;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::conn::{WriteConn, begin};
use crate::row::{self, db};

/// Most writes in one transaction.
const MAX_BATCH: usize = 512;

/// Starts the writer on `conn`; every committed change is announced on `changes`. Changes of
/// operations claimed through this store start from the copies in `claimed`.
///
/// New operations that claimers of this process wait for are started for them in the
/// transaction that inserts them (see `longrun_core::handoff`).
pub(crate) fn spawn(
    conn: WriteConn,
    clock: Arc<dyn Clock>,
    changes: broadcast::Sender<Change>,
    handoffs: Arc<Handoffs>,
    claimed: Arc<Claimed>,
) -> Writer {
    spawn_writer(MAX_BATCH, move |writes| {
        let (conn, clock, changes, handoffs, claimed) = (
            conn.clone(),
            clock.clone(),
            changes.clone(),
            handoffs.clone(),
            claimed.clone(),
        );
        async move {
            let count = writes.len();
            let (results, grants) = conn
                .run(move |conn| Ok(write_batch(conn, &*clock, &handoffs, &claimed, writes)))
                .await
                .unwrap_or_else(|e| (all_failed(count, &e), vec![]));
            for written in results.iter().flatten() {
                announce(&changes, &written.operation);
            }
            (results, grants)
        }
    })
}

/// Tells everyone waiting on the store about a committed change (no receivers is fine).
pub(crate) fn announce(changes: &broadcast::Sender<Change>, op: &Operation) {
    let _ = changes.send(Change {
        id: op.id,
        version: op.version,
        status: op.status,
    });
}

/// The answers to a batch, and the leases to hand over once it is committed.
type Written = (Vec<Result<Submitted, StoreError>>, Vec<Grant>);

fn write_batch(
    conn: &mut Connection,
    clock: &dyn Clock,
    handoffs: &Handoffs,
    claimed: &Claimed,
    writes: Vec<Write>,
) -> Written {
    let count = writes.len();
    let tx = match begin(conn) {
        Ok(tx) => tx,
        Err(e) => return (all_failed(count, &e), vec![]),
    };
    let mut handover = handoffs.handover();
    let mut results = Vec::with_capacity(count);
    for write in writes {
        let now = clock.now();
        let result = match write {
            Write::Submit(new) => submit(&tx, *new, &mut handover, now),
            Write::Edit(id, edit) => change(&tx, claimed, id, edit, now),
        };
        // A database failure may have left the transaction unusable: give up on the batch.
        if let Err(e @ StoreError::Database(_)) = &result {
            return (all_failed(count, e), vec![]);
        }
        results.push(result);
    }
    match tx.commit() {
        Ok(()) => (results, handover.finish()),
        Err(e) => (all_failed(count, &e), vec![]),
    }
}

fn submit(
    conn: &Connection,
    new: NewOperation,
    handover: &mut Handover<'_>,
    now: OffsetDateTime,
) -> Result<Submitted, StoreError> {
    if let Some(idem) = &new.idempotency {
        let mut stmt = conn
            .prepare_cached(row::operations_where!(
                ", o.idempotency_fingerprint",
                "o.customer = ?1 AND o.idempotency_key = ?2"
            ))
            .map_err(db)?;
        let mut rows = stmt.query((new.owner.customer, &idem.key)).map_err(db)?;
        if let Some(existing) = rows.next().map_err(db)? {
            let fingerprint: Option<String> = existing.get(7).map_err(db)?;
            if fingerprint.as_deref() != Some(idem.fingerprint.as_str()) {
                return Err(StoreError::IdempotencyMismatch(idem.key.clone()));
            }
            return Ok(Submitted {
                operation: row::decode(existing)?,
                created: false,
            });
        }
    }
    let root_id = match new.parent_id {
        None => None,
        Some(parent) => {
            let root: Option<[u8; 16]> = conn
                .prepare_cached("SELECT root_id FROM operations WHERE id = ?1")
                .and_then(|mut stmt| {
                    stmt.query_row([parent.as_bytes()], |row| row.get(0))
                        .optional()
                })
                .map_err(db)?;
            let root = root.ok_or(StoreError::ParentNotFound(parent))?;
            Some(Uuid::from_bytes(root))
        }
    };
    let idempotency = new.idempotency.clone();
    let mut op = new.into_operation(Uuid::now_v7(), root_id, now);
    let handed = handover.assign(&mut op, now)?;
    op.seq = row::insert(conn, &op, idempotency.as_ref())?;
    if let Some(handed) = handed {
        handover.stored(handed, &op);
    }
    Ok(Submitted {
        operation: op,
        created: true,
    })
}

fn change(
    conn: &Connection,
    claimed: &Claimed,
    id: Uuid,
    edit: Edit,
    now: OffsetDateTime,
) -> Result<Submitted, StoreError> {
    let mut op = row::load_to_change(conn, id, claimed)?.ok_or(StoreError::NotFound(id))?;
    edit(&mut op, now)?;
    row::save(conn, &op)?;
    Ok(Submitted {
        operation: op,
        created: false,
    })
}
