//! The single writer. Every submit and every change to one operation is queued to one task,
//! which writes everything that queued up meanwhile in one `BEGIN IMMEDIATE` transaction: many
//! concurrent writers share one commit, and SQLite never sees two writers race.

use std::sync::Arc;

use longrun_core::batch::Batcher;
use longrun_core::write::{Edit, Write, Writer};
use longrun_core::{Change, Clock, NewOperation, Operation, StoreError, Submitted};
use sqlx::{Row, SqliteConnection, SqlitePool};
use time::OffsetDateTime;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::row::{self, db};

/// Most writes in one transaction.
const MAX_BATCH: usize = 512;

/// Starts the writer on the single-connection `pool`; every committed change is announced on
/// `changes`.
pub(crate) fn spawn(
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
    changes: broadcast::Sender<Change>,
) -> Writer {
    Batcher::spawn(MAX_BATCH, move |writes| {
        let (pool, clock, changes) = (pool.clone(), clock.clone(), changes.clone());
        async move {
            let results = write_batch(&pool, &*clock, writes).await;
            for written in results.iter().flatten() {
                announce(&changes, &written.operation);
            }
            results
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

async fn write_batch(
    pool: &SqlitePool,
    clock: &dyn Clock,
    writes: Vec<Write>,
) -> Vec<Result<Submitted, StoreError>> {
    let count = writes.len();
    let all_failed = |e: &dyn std::fmt::Display| {
        (0..count)
            .map(|_| Err(StoreError::database(std::io::Error::other(e.to_string()))))
            .collect()
    };
    let mut tx = match pool.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => return all_failed(&e),
    };
    let mut results = Vec::with_capacity(count);
    for write in writes {
        let now = clock.now();
        let result = match write {
            Write::Submit(new) => submit(&mut tx, *new, now).await,
            Write::Edit(id, edit) => change(&mut tx, id, edit, now).await,
        };
        // A database failure may have left the transaction unusable: give up on the batch.
        if let Err(e @ StoreError::Database(_)) = &result {
            return all_failed(e);
        }
        results.push(result);
    }
    match tx.commit().await {
        Ok(()) => results,
        Err(e) => all_failed(&e),
    }
}

async fn submit(
    tx: &mut SqliteConnection,
    new: NewOperation,
    now: OffsetDateTime,
) -> Result<Submitted, StoreError> {
    if let Some(idem) = &new.idempotency {
        let existing = sqlx::query(
            "SELECT seq, body, idempotency_fingerprint FROM operations
             WHERE customer = ? AND idempotency_key = ?",
        )
        .bind(new.owner.customer)
        .bind(&idem.key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        if let Some(existing) = existing {
            let fingerprint: Option<String> = existing.get(2);
            if fingerprint.as_deref() != Some(idem.fingerprint.as_str()) {
                return Err(StoreError::IdempotencyMismatch(idem.key.clone()));
            }
            return Ok(Submitted {
                operation: row::decode(&existing)?,
                created: false,
            });
        }
    }
    let root_id = match new.parent_id {
        None => None,
        Some(parent) => {
            let root: Option<String> =
                sqlx::query_scalar("SELECT root_id FROM operations WHERE id = ?")
                    .bind(parent.to_string())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
            let root = root.ok_or(StoreError::ParentNotFound(parent))?;
            Some(Uuid::parse_str(&root).map_err(db)?)
        }
    };
    let idempotency = new.idempotency.clone();
    let mut op = new.into_operation(Uuid::now_v7(), root_id, now);
    op.seq = row::insert(tx, &op, idempotency.as_ref()).await?;
    Ok(Submitted {
        operation: op,
        created: true,
    })
}

async fn change(
    tx: &mut SqliteConnection,
    id: Uuid,
    edit: Edit,
    now: OffsetDateTime,
) -> Result<Submitted, StoreError> {
    let mut op = row::load(tx, id).await?.ok_or(StoreError::NotFound(id))?;
    edit(&mut op, now)?;
    row::save(tx, &op).await?;
    Ok(Submitted {
        operation: op,
        created: false,
    })
}
