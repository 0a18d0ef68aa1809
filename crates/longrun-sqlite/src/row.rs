//! Mapping between an [`Operation`] and its row: the canonical JSON body plus the columns
//! that queries filter, order and fence on.

use longrun_core::{Idempotency, Operation, StoreError};
use sqlx::{Row, SqliteConnection, sqlite::SqliteRow};
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
pub(crate) fn decode(row: &SqliteRow) -> Result<Operation, StoreError> {
    let seq: i64 = row.get(0);
    let body: &str = row.get(1);
    let mut op: Operation = serde_json::from_str(body).map_err(db)?;
    op.seq = seq;
    Ok(op)
}

/// The operation with this id.
pub(crate) async fn load(
    conn: &mut SqliteConnection,
    id: Uuid,
) -> Result<Option<Operation>, StoreError> {
    let row = sqlx::query("SELECT seq, body FROM operations WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(conn)
        .await
        .map_err(db)?;
    row.as_ref().map(decode).transpose()
}

/// Inserts a new operation; returns its `seq`.
pub(crate) async fn insert(
    conn: &mut SqliteConnection,
    op: &Operation,
    idempotency: Option<&Idempotency>,
) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "INSERT INTO operations (id, name, queue, priority, status, run_at, lease_expires_at,
             completed_at, parent_id, root_id, customer, created_by, idempotency_key,
             idempotency_fingerprint, version, body)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         RETURNING seq",
    )
    .bind(op.id.to_string())
    .bind(&op.name)
    .bind(&op.queue)
    .bind(op.priority)
    .bind(op.status.as_str())
    .bind(micros(op.run_at))
    .bind(op.lease_expires_at.map(micros))
    .bind(op.completed_at.map(micros))
    .bind(op.parent_id.map(|id| id.to_string()))
    .bind(op.root_id.to_string())
    .bind(op.customer)
    .bind(op.created_by)
    .bind(idempotency.map(|i| i.key.as_str()))
    .bind(idempotency.map(|i| i.fingerprint.as_str()))
    .bind(op.version)
    .bind(body(op)?)
    .fetch_one(conn)
    .await
    .map_err(db)
}

/// Writes back an operation changed by one of its named transitions.
pub(crate) async fn save(conn: &mut SqliteConnection, op: &Operation) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE operations
         SET status = ?, run_at = ?, lease_expires_at = ?, completed_at = ?, version = ?, body = ?
         WHERE seq = ?",
    )
    .bind(op.status.as_str())
    .bind(micros(op.run_at))
    .bind(op.lease_expires_at.map(micros))
    .bind(op.completed_at.map(micros))
    .bind(op.version)
    .bind(body(op)?)
    .bind(op.seq)
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

fn body(op: &Operation) -> Result<String, StoreError> {
    serde_json::to_string(op).map_err(db)
}
