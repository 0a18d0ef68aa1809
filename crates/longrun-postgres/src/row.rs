//! Mapping between an [`Operation`] and its row: the operation's stored body
//! ([`longrun_core::stored`], migration 0007) plus the columns that queries filter, order, lock
//! and fence on. Writing a row also keeps the operation's entries in the narrow tables that
//! stand for indexes on what changes (migrations 0004 and 0005): `ready` while it is pending
//! (with its `run_at`), `running` while it runs (with its lease expiry), `finished` once it has
//! ended (with its status and completion time). [`insert`], [`save`] and [`start`] (a claim)
//! are the only writers of those tables.
//!
//! A claim leaves the operation's row as it was and records its [`Start`] in the `running` row
//! (migration 0006); every read of operations joins `running` ([`select_operations!`],
//! [`claims_of_o!`], [`operations_where!`]) and [`decode`] applies the start to a row it finds
//! still at the version the claim started from.

use longrun_core::claim::Start;
use longrun_core::claimed::Claimed;
use longrun_core::stored;
use longrun_core::{Idempotency, Lease, Operation, Status, StoreError};
use std::collections::HashMap;

use sqlx::{PgConnection, Row, postgres::PgRow};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// The columns of a read of operations `o`: `seq`, the body, the claim that started the
/// operation since its row was written, if any (from `running c`, see [`claims_of_o!`]), and
/// the row's version.
macro_rules! select_operations {
    () => {
        "SELECT o.seq, o.body, c.lease_id AS claim_lease, c.worker AS claim_worker,
                c.started_ns AS claim_started_ns, c.lease_ns AS claim_lease_ns,
                c.from_version AS claim_from_version, o.version AS row_version"
    };
}
pub(crate) use select_operations;

/// The join that gives [`select_operations!`] its claim columns. Only a pending or running
/// operation can have a `running` row (a change that ends it deletes that row in the same
/// transaction), so a finished one is not looked up there: the `OFFSET 0` keeps PostgreSQL from
/// flattening the subquery, and it runs behind a one-time filter on the row's status instead
/// (two buffer lookups fewer per finished operation read).
macro_rules! claims_of_o {
    () => {
        " LEFT JOIN LATERAL (SELECT * FROM running r
                WHERE r.seq = o.seq AND o.status IN ('pending', 'running') OFFSET 0) c ON true "
    };
}
pub(crate) use claims_of_o;

/// A read of the operations `o` (with their claims) that `$filter` (a `WHERE` clause and what
/// follows it) picks.
macro_rules! operations_where {
    ($filter:literal) => {
        concat!(
            $crate::row::select_operations!(),
            " FROM operations o",
            $crate::row::claims_of_o!(),
            "WHERE ",
            $filter
        )
    };
}
pub(crate) use operations_where;

/// Wraps a driver error.
pub(crate) fn db(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::database(e)
}

/// Decodes a row of `(seq, body, ...)` as it is stored.
pub(crate) fn decode_stored(row: &PgRow) -> Result<Operation, StoreError> {
    let seq: i64 = row.try_get(0).map_err(db)?;
    let mut op = stored::decode(row.try_get(1).map_err(db)?)?;
    op.seq = seq;
    Ok(op)
}

/// The operation on a row of [`select_operations!`] that is about to be changed: the copy its
/// claim kept in `claimed` if nothing else changed it since, else decoded.
pub(crate) fn decode_to_change(row: &PgRow, claimed: &Claimed) -> Result<Operation, StoreError> {
    let from: Option<i64> = row.try_get("claim_from_version").map_err(db)?;
    let claim = match from {
        Some(from) => Some((from, row.try_get("claim_lease").map_err(db)?)),
        None => None,
    };
    let seq = row.try_get(0).map_err(db)?;
    let version = row.try_get("row_version").map_err(db)?;
    match claimed.take(seq, version, claim) {
        Some(op) => Ok(op),
        None => decode(row),
    }
}

/// Decodes a row of [`select_operations!`]: the operation as it is, started by the claim of
/// its `running` row if its stored row is still the one that claim started from.
pub(crate) fn decode(row: &PgRow) -> Result<Operation, StoreError> {
    let mut op = decode_stored(row)?;
    let from: Option<i64> = row.try_get("claim_from_version").map_err(db)?;
    if let Some(from) = from {
        let started_ns: i64 = row.try_get("claim_started_ns").map_err(db)?;
        let lease_ns: i64 = row.try_get("claim_lease_ns").map_err(db)?;
        let start = Start {
            lease: row.try_get("claim_lease").map_err(db)?,
            worker: row.try_get("claim_worker").map_err(db)?,
            at: OffsetDateTime::from_unix_timestamp_nanos(started_ns.into()).map_err(db)?,
            lease_for: Duration::nanoseconds(lease_ns),
        };
        // Should a `running` row ever outlive its claim, the operation reads as stored rather
        // than failing every batch and page it is part of.
        if let Err(e) = start.replay(&mut op, from) {
            tracing::warn!(id = %op.id, error = %e, "a claim's running row does not fit its operation");
        }
    }
    Ok(op)
}

/// Starts the pending operations `seqs`, whose `ready` entries the caller's transaction has
/// taken, for `worker` at `at` for `lease_for`: records each start (with a new lease) in a new
/// `running` row, with the version the operation's row is at, keeps each started operation in
/// `claimed` and returns their leases, in no particular order. Their rows of `operations` are
/// not written.
pub(crate) async fn start(
    conn: &mut PgConnection,
    claimed: &Claimed,
    seqs: &[i64],
    worker: &str,
    at: OffsetDateTime,
    lease_for: Duration,
) -> Result<Vec<Lease>, StoreError> {
    let leases: Vec<Uuid> = seqs.iter().map(|_| Uuid::now_v7()).collect();
    let nanos = |d: i128| i64::try_from(d).map_err(db);
    // The versions recorded and the bodies returned are read in the same statement.
    let rows = sqlx::query(
        "WITH started AS (
             INSERT INTO running (seq, lease_expires_at, lease_id, worker, started_ns, lease_ns,
                                  from_version)
             SELECT s.seq, $3, s.lease_id, $4, $5, $6,
                    (SELECT o.version FROM operations o WHERE o.seq = s.seq)
             FROM UNNEST($1::bigint[], $2::uuid[]) AS s(seq, lease_id)
             ON CONFLICT (seq) DO UPDATE SET lease_expires_at = excluded.lease_expires_at,
                 lease_id = excluded.lease_id, worker = excluded.worker,
                 started_ns = excluded.started_ns, lease_ns = excluded.lease_ns,
                 from_version = excluded.from_version
         )
         SELECT o.seq, o.body FROM operations o WHERE o.seq = ANY($1)",
    )
    .bind(seqs)
    .bind(&leases)
    .bind(at + lease_for)
    .bind(worker)
    .bind(nanos(at.unix_timestamp_nanos())?)
    .bind(nanos(lease_for.whole_nanoseconds())?)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    let lease_of: HashMap<i64, Uuid> = seqs.iter().copied().zip(leases).collect();
    rows.iter()
        .map(|row| {
            let operation = decode_stored(row)?;
            let from_version = operation.version;
            let lease = Start {
                lease: lease_of[&operation.seq],
                worker: worker.to_owned(),
                at,
                lease_for,
            }
            .lease(operation)?;
            claimed.keep(from_version, lease.lease_id, lease.operation.clone());
            Ok(lease)
        })
        .collect()
}

/// The operation with this id, row-locked for the transaction.
pub(crate) async fn lock(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Operation>, StoreError> {
    let row = sqlx::query(operations_where!("o.id = $1 FOR UPDATE OF o"))
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(db)?;
    row.as_ref().map(decode).transpose()
}

/// The operation holding an idempotency key, with the key's fingerprint.
pub(crate) async fn by_idempotency_key(
    conn: &mut PgConnection,
    customer: i64,
    key: &str,
) -> Result<(Operation, Option<String>), StoreError> {
    let row = sqlx::query(concat!(
        select_operations!(),
        ", o.idempotency_fingerprint FROM operations o",
        claims_of_o!(),
        "WHERE o.customer = $1 AND o.idempotency_key = $2"
    ))
    .bind(customer)
    .bind(key)
    .fetch_one(conn)
    .await
    .map_err(db)?;
    Ok((
        decode(&row)?,
        row.try_get("idempotency_fingerprint").map_err(db)?,
    ))
}

/// The operation's entries in the side tables: `ready` (its `run_at` while it is pending),
/// `running` (its lease expiry while it runs), `finished` (once it has ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entries {
    ready: Option<OffsetDateTime>,
    running: Option<OffsetDateTime>,
    finished: bool,
}

impl Entries {
    fn of(op: &Operation) -> Self {
        Self {
            ready: (op.status == Status::Pending).then_some(op.run_at),
            running: (op.status == Status::Running)
                .then(|| op.lease_expires_at.unwrap_or(op.updated_at)),
            finished: op.is_terminal(),
        }
    }
}

/// An operation changed by its named transitions, and its side-table entries before them (as
/// stored: those of the row loaded before the change).
#[derive(Debug)]
pub(crate) struct Edited {
    /// The entries before the change.
    pub was: Entries,
    /// The operation after the change.
    pub op: Operation,
}

impl Edited {
    /// The operation as loaded, before any change.
    pub(crate) fn loaded(op: Operation) -> Self {
        Self {
            was: Entries::of(&op),
            op,
        }
    }
}

/// Inserts new operations, and the `ready` entries of the pending ones and the `running`
/// entries of those handed over to a claimer at once, in one statement;
/// returns the `seq` of each one inserted, by id
/// (an operation whose idempotency key is taken is not inserted).
pub(crate) async fn insert(
    conn: &mut PgConnection,
    ops: &[(&Operation, Option<&Idempotency>)],
) -> Result<HashMap<Uuid, i64>, StoreError> {
    if ops.is_empty() {
        return Ok(HashMap::new());
    }
    let col = |f: &dyn Fn(&Operation) -> &str| ops.iter().map(|(op, _)| f(op)).collect::<Vec<_>>();
    let ids: Vec<Uuid> = ops.iter().map(|(op, _)| op.id).collect();
    let priorities: Vec<i32> = ops.iter().map(|(op, _)| op.priority).collect();
    let run_at: Vec<OffsetDateTime> = ops.iter().map(|(op, _)| op.run_at).collect();
    let parents: Vec<Option<Uuid>> = ops.iter().map(|(op, _)| op.parent_id).collect();
    let roots: Vec<Uuid> = ops.iter().map(|(op, _)| op.root_id).collect();
    let customers: Vec<i64> = ops.iter().map(|(op, _)| op.customer).collect();
    let creators: Vec<i64> = ops.iter().map(|(op, _)| op.created_by).collect();
    let keys: Vec<Option<&str>> = ops.iter().map(|(_, i)| i.map(|i| i.key.as_str())).collect();
    let prints: Vec<Option<&str>> = ops
        .iter()
        .map(|(_, i)| i.map(|i| i.fingerprint.as_str()))
        .collect();
    let versions: Vec<i64> = ops.iter().map(|(op, _)| op.version).collect();
    let bodies = ops
        .iter()
        .map(|(op, _)| stored::encode(op))
        .collect::<Result<Vec<_>, _>>()?;
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "WITH new AS (
         INSERT INTO operations (id, name, queue, priority, status, run_at, parent_id, root_id,
             customer, created_by, idempotency_key, idempotency_fingerprint, version, body,
             lease_expires_at)
         SELECT id, name, queue, priority, status, run_at, parent_id, root_id, customer,
             created_by, idempotency_key, idempotency_fingerprint, version, body,
             lease_expires_at
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int[], $5::text[], $6::timestamptz[],
             $7::uuid[], $8::uuid[], $9::bigint[], $10::bigint[], $11::text[], $12::text[],
             $13::bigint[], $14::bytea[], $15::timestamptz[])
           AS new(id, name, queue, priority, status, run_at, parent_id, root_id, customer,
             created_by, idempotency_key, idempotency_fingerprint, version, body,
             lease_expires_at)
         ON CONFLICT (customer, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
         RETURNING id, seq, priority, run_at, name, queue, status, lease_expires_at
         ), queued AS (
             INSERT INTO ready (seq, priority, run_at, name, queue)
             SELECT seq, priority, run_at, name, queue FROM new WHERE status = 'pending'
         ), running AS (
             INSERT INTO running (seq, lease_expires_at)
             SELECT seq, lease_expires_at FROM new WHERE status = 'running'
         )
         SELECT id, seq FROM new",
    )
    .bind(ids)
    .bind(col(&|op| op.name.as_str()))
    .bind(col(&|op| op.queue.as_str()))
    .bind(priorities)
    .bind(col(&|op| op.status.as_str()))
    .bind(run_at)
    .bind(parents)
    .bind(roots)
    .bind(customers)
    .bind(creators)
    .bind(keys)
    .bind(prints)
    .bind(versions)
    .bind(bodies)
    .bind(
        ops.iter()
            .map(|(op, _)| op.lease_expires_at)
            .collect::<Vec<_>>(),
    )
    .fetch_all(conn)
    .await
    .map_err(db)?;
    Ok(rows.into_iter().collect())
}

/// Writes back operations changed by their named transitions (HOT updates: no indexed column
/// changes) and moves them in and out of `ready`, `running` and `finished` as their status,
/// `run_at` and lease changed, in one statement.
pub(crate) async fn save(conn: &mut PgConnection, edits: &[Edited]) -> Result<(), StoreError> {
    if edits.is_empty() {
        return Ok(());
    }
    let (mut unready, mut ready, mut unrunning, mut running, mut finished) =
        (vec![], vec![], vec![], vec![], vec![]);
    for Edited { was, op } in edits {
        let now = Entries::of(op);
        match (was.ready, now.ready) {
            (Some(_), None) => unready.push(op.seq),
            (was, Some(at)) if was != Some(at) => ready.push(op),
            _ => {}
        }
        match (was.running, now.running) {
            (Some(_), None) => unrunning.push(op.seq),
            (was, Some(until)) if was != Some(until) => running.push((op.seq, until)),
            _ => {}
        }
        if now.finished && !was.finished {
            finished.push(op);
        }
    }
    let ops = || edits.iter().map(|e| &e.op);
    let seqs: Vec<i64> = ops().map(|op| op.seq).collect();
    let statuses: Vec<&str> = ops().map(|op| op.status.as_str()).collect();
    let run_at: Vec<OffsetDateTime> = ops().map(|op| op.run_at).collect();
    let leases: Vec<Option<OffsetDateTime>> = ops().map(|op| op.lease_expires_at).collect();
    let completed: Vec<Option<OffsetDateTime>> = ops().map(|op| op.completed_at).collect();
    let versions: Vec<i64> = ops().map(|op| op.version).collect();
    let bodies = ops().map(stored::encode).collect::<Result<Vec<_>, _>>()?;
    sqlx::query(
        "WITH unready AS (
             DELETE FROM ready WHERE seq = ANY($8::bigint[])
         ), ready AS (
             INSERT INTO ready (seq, priority, run_at, name, queue)
             SELECT * FROM UNNEST($9::bigint[], $10::int[], $11::timestamptz[], $12::text[],
                                  $13::text[])
             ON CONFLICT (seq) DO UPDATE SET run_at = excluded.run_at
         ), unrunning AS (
             DELETE FROM running WHERE seq = ANY($14::bigint[])
         ), running AS (
             INSERT INTO running (seq, lease_expires_at)
             SELECT * FROM UNNEST($15::bigint[], $16::timestamptz[])
             ON CONFLICT (seq) DO UPDATE SET lease_expires_at = excluded.lease_expires_at
         ), finished AS (
             INSERT INTO finished (seq, status, completed_at)
             SELECT * FROM UNNEST($17::bigint[], $18::text[], $19::timestamptz[])
         )
         UPDATE operations o
         SET status = u.status, run_at = u.run_at, lease_expires_at = u.lease_expires_at,
             completed_at = u.completed_at, version = u.version, body = u.body
         FROM UNNEST($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[],
                     $5::timestamptz[], $6::bigint[], $7::bytea[])
              AS u(seq, status, run_at, lease_expires_at, completed_at, version, body)
         WHERE o.seq = u.seq",
    )
    .bind(seqs)
    .bind(statuses)
    .bind(run_at)
    .bind(leases)
    .bind(completed)
    .bind(versions)
    .bind(bodies)
    .bind(unready)
    .bind(ready.iter().map(|op| op.seq).collect::<Vec<_>>())
    .bind(ready.iter().map(|op| op.priority).collect::<Vec<_>>())
    .bind(ready.iter().map(|op| op.run_at).collect::<Vec<_>>())
    .bind(ready.iter().map(|op| op.name.as_str()).collect::<Vec<_>>())
    .bind(ready.iter().map(|op| op.queue.as_str()).collect::<Vec<_>>())
    .bind(unrunning)
    .bind(running.iter().map(|(seq, _)| *seq).collect::<Vec<_>>())
    .bind(running.iter().map(|(_, until)| *until).collect::<Vec<_>>())
    .bind(finished.iter().map(|op| op.seq).collect::<Vec<_>>())
    .bind(
        finished
            .iter()
            .map(|op| op.status.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        finished
            .iter()
            .map(|op| op.completed_at.unwrap_or(op.updated_at))
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}
