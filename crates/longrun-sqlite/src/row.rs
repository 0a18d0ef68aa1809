//! Mapping between an [`Operation`] and its row: the canonical JSON body plus the columns
//! that queries filter, order and fence on.

use longrun_core::{Idempotency, Operation, StoreError};
use rusqlite::{Connection, Params, Row, params};
use time::OffsetDateTime;
use uuid::Uuid;

/// Wraps a driver error.
pub(crate) fn db(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::database(e)
}

/// Unix microseconds, the column encoding of instants (orders like the instants do).
pub(crate) fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000) as i64
}

/// The instant a microseconds column holds.
pub(crate) fn from_micros(us: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000).map_err(db)
}

/// Decodes a row of `(seq, body, ...)`.
pub(crate) fn decode(row: &Row<'_>) -> Result<Operation, StoreError> {
    let seq: i64 = row.get(0).map_err(db)?;
    let body = row.get_ref(1).map_err(db)?.as_str().map_err(db)?;
    let mut op: Operation = serde_json::from_str(body).map_err(db)?;
    op.seq = seq;
    Ok(op)
}

/// The operations a query of `(seq, body)` rows returns, in its order.
pub(crate) fn query(
    conn: &Connection,
    sql: &str,
    params: impl Params,
) -> Result<Vec<Operation>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let mut rows = stmt.query(params).map_err(db)?;
    let mut ops = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        ops.push(decode(row)?);
    }
    Ok(ops)
}

/// The operation with this id.
pub(crate) fn load(conn: &Connection, id: Uuid) -> Result<Option<Operation>, StoreError> {
    let mut found = query(
        conn,
        "SELECT seq, body FROM operations WHERE id = ?1",
        [id.to_string()],
    )?;
    Ok(found.pop())
}

/// Inserts a new operation; returns its `seq`.
pub(crate) fn insert(
    conn: &Connection,
    op: &Operation,
    idempotency: Option<&Idempotency>,
) -> Result<i64, StoreError> {
    let body = serde_json::to_string(op).map_err(db)?;
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO operations (id, name, queue, priority, status, run_at, lease_expires_at,
                 completed_at, parent_id, root_id, customer, created_by, idempotency_key,
                 idempotency_fingerprint, version, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )
        .map_err(db)?;
    // `seq` is the `INTEGER PRIMARY KEY`: the rowid that `insert` returns.
    stmt.insert(params![
        op.id.to_string(),
        op.name,
        op.queue,
        op.priority,
        op.status.as_str(),
        micros(op.run_at),
        op.lease_expires_at.map(micros),
        op.completed_at.map(micros),
        op.parent_id.map(|id| id.to_string()),
        op.root_id.to_string(),
        op.customer,
        op.created_by,
        idempotency.map(|i| i.key.as_str()),
        idempotency.map(|i| i.fingerprint.as_str()),
        op.version,
        body,
    ])
    .map_err(db)
}

/// Writes back an operation changed by one of its named transitions.
pub(crate) fn save(conn: &Connection, op: &Operation) -> Result<(), StoreError> {
    let body = serde_json::to_string(op).map_err(db)?;
    let mut stmt = conn
        .prepare_cached(
            "UPDATE operations
             SET status = ?1, run_at = ?2, lease_expires_at = ?3, completed_at = ?4,
                 version = ?5, body = ?6
             WHERE seq = ?7",
        )
        .map_err(db)?;
    stmt.execute(params![
        op.status.as_str(),
        micros(op.run_at),
        op.lease_expires_at.map(micros),
        op.completed_at.map(micros),
        op.version,
        body,
        op.seq,
    ])
    .map_err(db)?;
    Ok(())
}
