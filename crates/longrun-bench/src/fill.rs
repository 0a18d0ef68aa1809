//! Filling a store with N operations in mixed states, fast: the operations are built and moved
//! through their states with longrun's own lifecycle ([`Operation::start`], `succeed`, ...),
//! then inserted as rows of the stores' layout (the stored body plus the query columns), 1000
//! per round trip: a multi-row `INSERT` on PostgreSQL, a transaction of one prepared `INSERT`
//! per row on SQLite. Submitting them one by one through the API would take longer than the
//! benchmark itself.
//!
//! States, by `i % 20`: 0 pending, 1 running (lease of a day, so maintenance leaves it
//! alone), 2 failed, 3 cancelled, otherwise succeeded (80 %).

use anyhow::Context;
use longrun_core::{NewOperation, Operation, OperationError, stored};
use rusqlite::params;
use serde_json::json;
use sqlx::{Postgres, QueryBuilder};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::clock::now_ms;
use crate::handler::TASK;
use crate::log;
use crate::store::{FreshStore, Pool, SqliteConn};

/// The row columns, in the order both inserts bind them.
const INSERT: &str = "INSERT INTO operations (id, name, queue, priority, status, run_at,
     lease_expires_at, completed_at, parent_id, root_id, customer, created_by, idempotency_key,
     idempotency_fingerprint, version, body) ";

/// Inserts `n` operations, `batch` per statement, then refreshes the planner's statistics
/// (`ANALYZE`; `VACUUM ANALYZE` on PostgreSQL, as autovacuum would have by then). Returns their
/// ids.
pub async fn fill(store: &FreshStore, n: u64, batch: u64) -> anyhow::Result<Vec<Uuid>> {
    let started = now_ms();
    let now = OffsetDateTime::now_utc();
    let mut ids = Vec::with_capacity(n as usize);
    let mut pg_conn = match &store.pool {
        Pool::Postgres(pool) => Some(pool.acquire().await?),
        Pool::Sqlite(_) => None,
    };
    let mut from = 0;
    while from < n {
        let to = (from + batch).min(n);
        let ops = (from..to)
            .map(|i| operation(i, now))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let bodies = ops
            .iter()
            .map(stored::encode)
            .collect::<Result<Vec<_>, _>>()?;
        ids.extend(ops.iter().map(|op| op.id));
        match (&store.pool, pg_conn.as_mut()) {
            (Pool::Sqlite(conn), _) => insert_sqlite(conn, ops, bodies).await?,
            (Pool::Postgres(_), Some(conn)) => insert_pg(conn, &ops, bodies).await?,
            (Pool::Postgres(_), None) => unreachable!("a PostgreSQL store has a connection"),
        }
        from = to;
        if from % 100_000 == 0 {
            log!("filled {from}/{n}");
        }
    }
    if let Some(mut conn) = pg_conn {
        // The side tables hold the pending, running and finished ones, as the store keeps
        // them.
        sqlx::raw_sql(
            "INSERT INTO ready (seq, priority, run_at, name, queue)
             SELECT seq, priority, run_at, name, queue FROM operations WHERE status = 'pending';
             INSERT INTO running (seq, lease_expires_at)
             SELECT seq, lease_expires_at FROM operations WHERE status = 'running';
             INSERT INTO finished (seq, status, completed_at)
             SELECT seq, status, completed_at FROM operations
             WHERE status IN ('succeeded', 'failed', 'cancelled');",
        )
        .execute(&mut *conn)
        .await
        .context("filling the side tables")?;
    }
    store.analyze().await?;
    log!(
        "filled {n} operations in {:.1} s",
        (now_ms() - started) / 1e3
    );
    Ok(ids)
}

/// Operation `i`, moved to its state.
fn operation(i: u64, now: OffsetDateTime) -> anyhow::Result<Operation> {
    let mut new = NewOperation::named(TASK);
    new.kwargs = json!({ "i": i });
    new.meta.url = Some("http://127.0.0.1/v1/operations".into());
    let mut op = new.into_operation(Uuid::now_v7(), None, now);
    let lease = Uuid::now_v7();
    let state = i % 20;
    if state == 0 {
        return Ok(op);
    }
    if state == 3 {
        op.cancel(now)?;
        return Ok(op);
    }
    op.start(lease, "bench-fill", Duration::days(1), now)?;
    match state {
        1 => {}
        2 => {
            let error = OperationError {
                code: "error".into(),
                error_type: "ValueError".into(),
                message: format!("job {i} failed"),
            };
            op.fail(lease, error, false, now)?;
        }
        _ => op.succeed(lease, Some(json!({ "i": i })), None, vec![], now)?,
    }
    Ok(op)
}

/// SQLite stores instants as unix microseconds.
fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000) as i64
}

async fn insert_sqlite(
    conn: &SqliteConn,
    ops: Vec<Operation>,
    bodies: Vec<Vec<u8>>,
) -> anyhow::Result<()> {
    conn.run(move |c| {
        let tx = c.transaction()?;
        let mut insert = tx.prepare_cached(&format!(
            "{INSERT} VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
        ))?;
        for (op, body) in ops.iter().zip(bodies) {
            insert.execute(params![
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
                None::<String>,
                None::<String>,
                op.version,
                body,
            ])?;
        }
        drop(insert);
        tx.commit()
    })
    .await
    .context("inserting into SQLite")
}

async fn insert_pg(
    conn: &mut sqlx::PgConnection,
    ops: &[Operation],
    bodies: Vec<Vec<u8>>,
) -> anyhow::Result<()> {
    let mut query = QueryBuilder::<Postgres>::new(INSERT);
    query.push_values(ops.iter().zip(bodies), |mut row, (op, body)| {
        row.push_bind(op.id)
            .push_bind(op.name.clone())
            .push_bind(op.queue.clone())
            .push_bind(op.priority)
            .push_bind(op.status.as_str())
            .push_bind(op.run_at)
            .push_bind(op.lease_expires_at)
            .push_bind(op.completed_at)
            .push_bind(op.parent_id)
            .push_bind(op.root_id)
            .push_bind(op.customer)
            .push_bind(op.created_by)
            .push_bind(None::<String>)
            .push_bind(None::<String>)
            .push_bind(op.version)
            .push_bind(body);
    });
    query
        .build()
        .execute(conn)
        .await
        .context("inserting into PostgreSQL")?;
    Ok(())
}

/// Used by the status workload's check that the fill is what the API serves.
pub fn expected_status(i: u64) -> &'static str {
    match i % 20 {
        0 => "pending",
        1 => "running",
        2 => "failed",
        3 => "cancelled",
        _ => "succeeded",
    }
}
