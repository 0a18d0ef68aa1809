//! Mapping between an [`Operation`] and its row: the operation's stored body
//! ([`longrun_core::stored`], a `BLOB`; rows written by earlier versions keep a JSON `TEXT`
//! until their next change) plus the columns that queries filter, order and fence on.
//!
//! A claim leaves the operation's row as it was and records its [`Start`] in a `claims` row
//! ([`start`], migration 0004); every read of operations joins `claims`
//! ([`operations_where!`]) and [`decode`] applies the start to a row still at the version the
//! claim started from. [`save`] writes the row out whole and deletes its `claims` row: at the
//! operation's next change, or at the maintenance pass once the claim is a second old.

use longrun_core::claim::Start;
use longrun_core::claimed::Claimed;
use longrun_core::stored;
use longrun_core::{Idempotency, Lease, Operation, StoreError};
use rusqlite::{Connection, Params, Row, params};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// A read of the operations `o` that `$filter` (a `WHERE` clause and what follows it) picks:
/// `seq`, the body, and the claim not yet written into the row, if any (`claims c`), in the
/// columns [`decode`] reads; then the `$extra` columns, if given (from column 7 on).
macro_rules! operations_where {
    ($filter:literal) => {
        $crate::row::operations_where!("", $filter)
    };
    ($extra:literal, $filter:literal) => {
        concat!(
            "SELECT o.seq, o.body, c.from_version, c.lease_id, c.worker, c.started_ns, c.lease_ns",
            $extra,
            " FROM operations o LEFT JOIN claims c ON c.seq = o.seq WHERE ",
            $filter
        )
    };
}
pub(crate) use operations_where;

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

/// Decodes a row of `(seq, body, ...)` as it is stored.
pub(crate) fn decode_stored(row: &Row<'_>) -> Result<Operation, StoreError> {
    let seq: i64 = row.get(0).map_err(db)?;
    let mut op = stored::decode(row.get_ref(1).map_err(db)?.as_bytes().map_err(db)?)?;
    op.seq = seq;
    Ok(op)
}

/// Decodes a row of [`operations_where!`]: the operation as it is, started by its claim if
/// the row is still the one that claim started from.
pub(crate) fn decode(row: &Row<'_>) -> Result<Operation, StoreError> {
    let mut op = decode_stored(row)?;
    let Some(from) = row.get::<_, Option<i64>>(2).map_err(db)? else {
        return Ok(op);
    };
    let lease: String = row.get(3).map_err(db)?;
    let start = Start {
        lease: Uuid::parse_str(&lease).map_err(db)?,
        worker: row.get(4).map_err(db)?,
        at: OffsetDateTime::from_unix_timestamp_nanos(row.get::<_, i64>(5).map_err(db)?.into())
            .map_err(db)?,
        lease_for: Duration::nanoseconds(row.get(6).map_err(db)?),
    };
    // A `claims` row that does not fit its operation (only a bug could leave one) is logged
    // and the operation read as stored, rather than failing every batch and page it is in.
    if let Err(e) = start.replay(&mut op, from) {
        tracing::warn!(id = %op.id, error = %e, "a claim does not fit its operation");
    }
    Ok(op)
}

/// The rows a query returns, in its order, each read by `decode`.
pub(crate) fn query_with<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    decode: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let mut rows = stmt.query(params).map_err(db)?;
    let mut found = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        found.push(decode(row)?);
    }
    Ok(found)
}

/// The operations a query of [`operations_where!`] returns, in its order.
pub(crate) fn query(
    conn: &Connection,
    sql: &str,
    params: impl Params,
) -> Result<Vec<Operation>, StoreError> {
    query_with(conn, sql, params, decode)
}

/// The operation with this id.
pub(crate) fn load(conn: &Connection, id: Uuid) -> Result<Option<Operation>, StoreError> {
    let mut found = query(conn, operations_where!("o.id = ?1"), [id.as_bytes()])?;
    Ok(found.pop())
}

/// The operation with this id, about to be changed: the copy its claim kept in `claimed` if
/// nothing else changed it since, else decoded from its row.
pub(crate) fn load_to_change(
    conn: &Connection,
    id: Uuid,
    claimed: &Claimed,
) -> Result<Option<Operation>, StoreError> {
    let sql = operations_where!(", o.version", "o.id = ?1");
    let mut found = query_with(conn, sql, [id.as_bytes()], |row| {
        let claim = match row.get::<_, Option<i64>>(2).map_err(db)? {
            Some(from) => {
                let lease = row.get_ref(3).map_err(db)?.as_str().map_err(db)?;
                Some((from, Uuid::parse_str(lease).map_err(db)?))
            }
            None => None,
        };
        let (seq, version) = (row.get(0).map_err(db)?, row.get(7).map_err(db)?);
        match claimed.take(seq, version, claim) {
            Some(op) => Ok(op),
            None => decode(row),
        }
    })?;
    Ok(found.pop())
}

/// A pending operation a claim picked, as stored: its body is decoded by [`Started::lease`],
/// after the claim's transaction, off the writer thread (decoding on it was a sixth of a
/// drain's writer time, in the one thread every write waits for).
pub(crate) struct Picked {
    seq: i64,
    version: i64,
    body: Vec<u8>,
}

/// The operations a claim query (`seq`, `version`, body) picks, in its order.
pub(crate) fn pick(
    conn: &Connection,
    sql: &str,
    params: impl Params,
) -> Result<Vec<Picked>, StoreError> {
    query_with(conn, sql, params, |row| {
        Ok(Picked {
            seq: row.get(0).map_err(db)?,
            version: row.get(1).map_err(db)?,
            body: row.get_ref(2).map_err(db)?.as_bytes().map_err(db)?.to_vec(),
        })
    })
}

/// A picked operation whose start is recorded in its `claims` row.
pub(crate) struct Started {
    picked: Picked,
    start: Start,
}

impl Started {
    /// The lease: the operation decoded and started; the started copy kept in `claimed`. An
    /// error (a body that does not decode: only a bug could store one) fails the claim, whose
    /// `claims` rows then expire like those of any lease never answered.
    pub(crate) fn lease(self, claimed: &Claimed) -> Result<Lease, StoreError> {
        let Self { picked, start } = self;
        let mut op = stored::decode(&picked.body)?;
        op.seq = picked.seq;
        let lease = start.lease(op)?;
        claimed.keep(picked.version, lease.lease_id, lease.operation.clone());
        Ok(lease)
    }
}

/// Starts the `picked` operations for `worker`, each under a new lease: records each start in a
/// `claims` row. Their rows of `operations` are not written.
pub(crate) fn start(
    conn: &Connection,
    picked: Vec<Picked>,
    worker: &str,
    at: OffsetDateTime,
    lease_for: Duration,
) -> Result<Vec<Started>, StoreError> {
    let nanos = |d: i128| i64::try_from(d).map_err(db);
    let (started_ns, lease_ns) = (
        nanos(at.unix_timestamp_nanos())?,
        nanos(lease_for.whole_nanoseconds())?,
    );
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO claims (seq, from_version, lease_id, worker, started_ns, lease_ns,
                                 lease_expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(db)?;
    picked
        .into_iter()
        .map(|picked| {
            let start = Start::new(worker, at, lease_for);
            stmt.execute(params![
                picked.seq,
                picked.version,
                start.lease.to_string(),
                worker,
                started_ns,
                lease_ns,
                micros(start.expires_at()),
            ])
            .map_err(db)?;
            Ok(Started { picked, start })
        })
        .collect()
}

/// Inserts a new operation; returns its `seq`.
pub(crate) fn insert(
    conn: &Connection,
    op: &Operation,
    idempotency: Option<&Idempotency>,
) -> Result<i64, StoreError> {
    let body = stored::encode(op)?;
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
        op.id.as_bytes(),
        op.name,
        op.queue,
        op.priority,
        op.status.as_str(),
        micros(op.run_at),
        op.lease_expires_at.map(micros),
        op.completed_at.map(micros),
        op.parent_id.as_ref().map(Uuid::as_bytes),
        op.root_id.as_bytes(),
        op.customer,
        op.created_by,
        idempotency.map(|i| i.key.as_str()),
        idempotency.map(|i| i.fingerprint.as_str()),
        op.version,
        body,
    ])
    .map_err(db)
}

/// Writes back an operation changed by one of its named transitions; its claim, if one was
/// not yet written into the row, now is.
pub(crate) fn save(conn: &Connection, op: &Operation) -> Result<(), StoreError> {
    let body = stored::encode(op)?;
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
    conn.prepare_cached("DELETE FROM claims WHERE seq = ?1")
        .and_then(|mut stmt| stmt.execute([op.seq]))
        .map_err(db)?;
    Ok(())
}
