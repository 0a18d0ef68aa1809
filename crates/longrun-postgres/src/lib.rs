//! The PostgreSQL store: any number of `longrun serve` processes and workers on one database.
//!
//! Pending operations also sit in a narrow `ready` table (migration 0004), kept by
//! `row::insert` and `row::save` in the transaction that changes them. Claims take ready
//! entries with `FOR UPDATE SKIP LOCKED`, so concurrent claimers on any node never block each
//! other nor take the same operation, and a claim reads only the rows it takes; it records how
//! it started each operation in a narrow `running` row and leaves the operation's own row
//! alone (see `longrun_core::claim`). After each commit the changes go to this node's subscribers and,
//! by `pg_notify`, to the other nodes (see `listener`); each store `LISTEN`s and re-broadcasts
//! to its local subscribers, so a long-poll on one node wakes for a change made through
//! another.

mod listener;
mod pool;
mod reads;
mod row;
mod vacuum;
mod writer;

use std::{sync::Arc, time::Duration as StdDuration};

use async_trait::async_trait;
use longrun_core::{
    ApiKey, Change, ClaimFilter, ClaimQuery, Clock, Lease, ListQuery, NewKey, NewOperation,
    Operation, Page, Status, Store, StoreError, Submitted, SystemClock, Token,
};
use sqlx::{
    PgPool, Row,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use time::OffsetDateTime;
use tokio::sync::broadcast;
use uuid::Uuid;

use listener::change;
use longrun_core::claimed::Claimed;
use longrun_core::handoff::Handoffs;
use longrun_core::write::{Edit, Write, Writer};
use pool::{Conn, Pool};
use row::{Edited, db};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connections beside the request pool: the change listener's, and two for migrations,
/// notifications to other nodes and vacuum.
const BACKGROUND_CONNECTIONS: u32 = 3;

/// Longest wait for a free connection.
const ACQUIRE_TIMEOUT: StdDuration = StdDuration::from_secs(10);

/// Connection settings of a [`PgStore`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Most connections this node holds for requests (default 16); the change listener and
    /// background work hold up to 3 more.
    pub max_connections: u32,
    /// `statement_timeout` of every connection (default 30 s; `None`: the server's).
    pub statement_timeout: Option<StdDuration>,
    /// `idle_in_transaction_session_timeout` (default 60 s; `None`: the server's).
    pub idle_in_transaction_timeout: Option<StdDuration>,
    /// Schema holding longrun's tables (default: the connection's `search_path`).
    pub schema: Option<String>,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            statement_timeout: Some(StdDuration::from_secs(30)),
            idle_in_transaction_timeout: Some(StdDuration::from_secs(60)),
            schema: None,
        }
    }
}

/// A [`Store`] on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    /// Requests and the writer.
    pool: Pool,
    /// Migrations, the change listener, notifications to other nodes, vacuum.
    background: PgPool,
    writes: Writer,
    reads: reads::Reads,
    /// Claimers of this process waiting for new operations (see `longrun_core::handoff`).
    handoffs: Arc<Handoffs>,
    /// The operations this store's claims started (see [`Claimed`]).
    claimed: Arc<Claimed>,
    clock: Arc<dyn Clock>,
    changes: broadcast::Sender<Change>,
    /// Sends committed changes to this node's subscribers and to the other nodes.
    announcer: Arc<listener::Announcer>,
    _listener: Arc<listener::Listener>,
    vacuum: Arc<vacuum::Vacuum>,
}

impl PgStore {
    /// Connects to `url` (`postgres://...`) with default options and the system clock,
    /// applying migrations.
    pub async fn open_default(url: &str) -> Result<Self, StoreError> {
        Self::open(url, PgOptions::default(), Arc::new(SystemClock)).await
    }

    /// Connects to `url`, applies migrations and starts listening for changes.
    pub async fn open(
        url: &str,
        options: PgOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let mut connect: PgConnectOptions = url.parse().map_err(db)?;
        let ms = |d: StdDuration| format!("{}ms", d.as_millis());
        if let Some(schema) = &options.schema {
            connect = connect.options([("search_path", schema.as_str())]);
        }
        if let Some(t) = options.statement_timeout {
            connect = connect.options([("statement_timeout", ms(t))]);
        }
        if let Some(t) = options.idle_in_transaction_timeout {
            connect = connect.options([("idle_in_transaction_session_timeout", ms(t))]);
        }
        // No ping before each use: a notification is one statement, and a lost connection
        // fails it (logged; the waiters it was for look again at their deadline).
        let background = PgPoolOptions::new()
            .max_connections(BACKGROUND_CONNECTIONS)
            .test_before_acquire(false)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(connect.clone())
            .await
            .map_err(db)?;
        MIGRATOR.run(&background).await.map_err(db)?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&background)
            .await
            .map_err(db)?;
        let pool = Pool::new(connect, options.max_connections, ACQUIRE_TIMEOUT);
        let channel = format!("longrun_{schema}");
        let node = Uuid::new_v4();
        let (changes, _) = broadcast::channel(4096);
        let peers = Arc::new(listener::Peers::default());
        let listener = listener::Listener::start(
            &background,
            channel.clone(),
            node,
            changes.clone(),
            peers.clone(),
        )
        .await?;
        let announcer = Arc::new(listener::Announcer::start(
            background.clone(),
            channel,
            node,
            changes.clone(),
            peers,
        ));
        announcer.introduce().await;
        let vacuum = Arc::new(vacuum::Vacuum::start(background.clone()));
        let handoffs = Arc::new(Handoffs::default());
        let claimed = Arc::new(Claimed::default());
        Ok(Self {
            writes: writer::spawn(
                pool.clone(),
                clock.clone(),
                announcer.clone(),
                handoffs.clone(),
                claimed.clone(),
            ),
            handoffs,
            claimed,
            reads: reads::spawn(pool.clone()),
            pool,
            background,
            clock,
            changes,
            announcer,
            _listener: Arc::new(listener),
            vacuum,
        })
    }

    async fn begin(&self) -> Result<Conn, StoreError> {
        self.pool.begin().await
    }

    /// Stops listening for changes and closes the pool (waits for running statements).
    pub async fn close(&self) {
        self._listener.stop();
        self.announcer.stop();
        self.vacuum.stop();
        self.pool.close().await;
        self.background.close().await;
    }
}

/// The ready entries a claim takes, deleted: the first that pass the filter and that no one
/// else holds. Their operations are then started by `row::start`, in a statement of its own, so
/// that it reads them as they are once these entries are locked.
///
/// No deadlock and no lost change: a claim never waits on a lock (`SKIP LOCKED`) and writes
/// only its own new `running` rows, never a row of `operations`. A writer that changes a
/// pending operation holds its `ready` entry first (see `writer::lock`), so it waits for a claim
/// that took the entry to commit (and then sees the operation running), and a claim skips an
/// entry a writer holds. Each ready operation goes to one claimer: whoever looks after a claim
/// committed finds the entry gone.
///
/// The entries are picked in an `ARRAY(...)` sub-select, so they are deleted by primary key
/// whatever the planner's statistics say.
const CLAIM_READY: &str = "DELETE FROM ready
     WHERE seq = ANY(ARRAY(
           SELECT seq FROM ready
           WHERE run_at <= $1
             AND (cardinality($2::text[]) = 0 OR name = ANY($2))
             AND (cardinality($3::text[]) = 0 OR queue = ANY($3))
           ORDER BY priority DESC, seq
           LIMIT $4
           FOR UPDATE SKIP LOCKED))
     RETURNING seq";

/// A claim's transaction does not wait for its WAL flush (`synchronous_commit = off`): the
/// job starts one fsync sooner. Should the database crash before the flush, the claim is lost
/// and the operation is pending again, to be run again, as after an expired lease; nothing
/// later can outlive it, as every other write waits for the flush, which takes the claim's
/// WAL with it (a completion can never be durable without its claim).
///
/// Nor does it sort (`enable_sort = off`): [`CLAIM_READY`] walks `ready_claim_order` and stops
/// at its `LIMIT`. On a queue without statistics (one that just filled up), PostgreSQL took
/// the filter on names for a rare match and sorted the whole queue instead, on every claim,
/// unbounded under `FOR UPDATE`: 4.5 ms per claim at 20,000 pending, against 0.3 ms. Where
/// nothing matches, the walk reads what the sort would have (3.5 ms against 4.1 ms).
const BEGIN_CLAIM: &str = "BEGIN; SET LOCAL synchronous_commit = off; SET LOCAL enable_sort = off";

const NEXT_RUN_AT: &str = "SELECT min(run_at) FROM ready
     WHERE (cardinality($1::text[]) = 0 OR name = ANY($1))
       AND (cardinality($2::text[]) = 0 OR queue = ANY($2))";

/// A listing, newest first. With a status filter it walks the side table that holds exactly
/// the operations of that status (`ready`, `running`, `finished`), in `seq` order.
macro_rules! list {
    ($from:literal, $status:literal, $seq:literal) => {
        concat!(
            row::select_operations!(),
            " FROM ",
            $from,
            row::claims_of_o!(),
            " WHERE ",
            $status,
            " AND ($2::text IS NULL OR o.name = $2)
               AND ($3::uuid IS NULL OR o.parent_id = $3)
               AND ($4::uuid IS NULL OR o.root_id = $4)
               AND ($5::bigint IS NULL OR o.customer = $5)
               AND ($6::bigint IS NULL OR ",
            $seq,
            " < $6) ORDER BY ",
            $seq,
            " DESC LIMIT $7"
        )
    };
}

/// The listing query for a status filter.
fn list_sql(status: Option<Status>) -> &'static str {
    match status {
        None => list!("operations o", "$1::text IS NULL", "o.seq"),
        Some(Status::Pending) => list!(
            "ready s JOIN operations o ON o.seq = s.seq",
            "o.status = $1",
            "s.seq"
        ),
        // Every operation with a `running` row runs (its row may still say `pending`: see
        // `longrun_core::claim`).
        Some(Status::Running) => list!(
            "running s JOIN operations o ON o.seq = s.seq",
            "$1::text = 'running'",
            "s.seq"
        ),
        Some(Status::Succeeded | Status::Failed | Status::Cancelled) => list!(
            "finished s JOIN operations o ON o.seq = s.seq",
            "s.status = $1",
            "s.seq"
        ),
    }
}

/// Running operations whose lease ran out, by their `running` rows. Whether the lease did run
/// out is decided on the operation as locked (`expire_leases`): a heartbeat or a completion may
/// have committed since the statement began, and the `running` row read with it may be the one
/// from before.
const EXPIRED: &str = concat!(
    row::select_operations!(),
    " FROM running c JOIN operations o ON o.seq = c.seq
     WHERE c.lease_expires_at <= $1
     FOR UPDATE OF o SKIP LOCKED"
);

/// How a deletion is announced: one version past the last (so a waiter on the last version
/// wakes), with the status the operation had.
fn deleted(id: Uuid, version: i64, status: Status) -> Change {
    Change {
        id,
        version: version + 1,
        status,
    }
}

#[async_trait]
impl Store for PgStore {
    async fn submit(&self, new: NewOperation) -> Result<Submitted, StoreError> {
        self.writes.call(Write::Submit(Box::new(new))).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Operation>, StoreError> {
        self.reads.call(id).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let rows = self
            .pool
            .fetch_all(|| {
                sqlx::query(list_sql(query.status))
                    .bind(query.status.map(|s| s.as_str()))
                    .bind(query.name.as_deref())
                    .bind(query.parent_id)
                    .bind(query.root_id)
                    .bind(query.customer)
                    .bind(query.before_seq)
                    .bind(query.fetch_limit())
            })
            .await?;
        let operations = rows
            .iter()
            .map(row::decode)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_fetched(operations, query))
    }

    async fn edit(&self, id: Uuid, edit: Edit) -> Result<Operation, StoreError> {
        Ok(self.writes.call(Write::Edit(id, edit)).await?.operation)
    }

    async fn delete(&self, id: Uuid) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let found = row::lock(&mut tx, id).await?;
        let op = match found {
            Some(op) if op.is_terminal() => op,
            // End the transaction now: a dropped one is rolled back only when its connection is
            // next used, and until then its row lock would hold up every change of the operation.
            other => {
                tx.rollback().await?;
                return Err(match other {
                    Some(op) => StoreError::NotTerminal {
                        id,
                        status: op.status,
                    },
                    None => StoreError::NotFound(id),
                });
            }
        };
        sqlx::query(
            "WITH finished AS (DELETE FROM finished WHERE seq = $1)
             DELETE FROM operations WHERE seq = $1",
        )
        .bind(op.seq)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await?;
        self.announcer
            .announce([deleted(op.id, op.version, op.status)]);
        Ok(())
    }

    async fn claim(&self, query: &ClaimQuery) -> Result<Vec<Lease>, StoreError> {
        if query.max == 0 {
            return Ok(vec![]);
        }
        let mut tx = self.pool.begin_with(BEGIN_CLAIM).await?;
        let now = self.clock.now();
        let seqs: Vec<i64> = sqlx::query_scalar(CLAIM_READY)
            .bind(now)
            .bind(&query.filter.names)
            .bind(&query.filter.queues)
            .bind(i64::from(query.max))
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        if seqs.is_empty() {
            tx.commit().await?;
            return Ok(vec![]);
        }
        let mut leases = row::start(
            &mut tx,
            &self.claimed,
            &seqs,
            &query.worker,
            now,
            query.lease,
        )
        .await?;
        tx.commit().await?;
        leases.sort_by_key(|l| (std::cmp::Reverse(l.operation.priority), l.operation.seq));
        self.announcer
            .announce(leases.iter().map(|l| change(&l.operation)));
        Ok(leases)
    }

    async fn next_run_at(
        &self,
        filter: &ClaimFilter,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let row = self
            .pool
            .fetch_optional(|| {
                sqlx::query(NEXT_RUN_AT)
                    .bind(&filter.names)
                    .bind(&filter.queues)
            })
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose().map_err(db)?.flatten())
    }

    async fn expire_leases(&self) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let now = self.clock.now();
        let rows = sqlx::query(EXPIRED)
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        let mut expired = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut edited = Edited::loaded(row::decode(r)?);
            // Not expired after all (it changed as it was being read): nothing to do.
            if edited.op.lease_expires_at.is_some_and(|until| until <= now)
                && edited.op.expire_lease(now).is_ok()
            {
                expired.push(edited);
            }
        }
        row::save(&mut tx, &expired).await?;
        tx.commit().await?;
        self.announcer
            .announce(expired.iter().map(|e| change(&e.op)));
        Ok(expired.len() as u64)
    }

    async fn prune(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let gone: Vec<(Uuid, i64, String)> = sqlx::query_as(
            // `operations` rows first, then their `finished` entries, as `delete` does: no
            // deadlock between the two.
            "WITH gone AS (
                 DELETE FROM operations
                 WHERE seq IN (SELECT seq FROM finished WHERE completed_at < $1)
                 RETURNING seq, id, version, status
             ), unfinished AS (
                 DELETE FROM finished WHERE seq IN (SELECT seq FROM gone)
             )
             SELECT id, version, status FROM gone",
        )
        .bind(before)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let changes = gone
            .iter()
            .map(|(id, version, status)| {
                let status = status
                    .parse()
                    .map_err(|e: String| db(std::io::Error::other(e)))?;
                Ok(deleted(*id, *version, status))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        tx.commit().await?;
        self.announcer.announce(changes);
        Ok(gone.len() as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pool
            .fetch_optional(|| sqlx::query("SELECT 1"))
            .await
            .map(drop)
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn handoffs(&self) -> Option<&Arc<Handoffs>> {
        Some(&self.handoffs)
    }

    async fn create_key(&self, key: NewKey, token: &Token) -> Result<ApiKey, StoreError> {
        let key = key.into_key(token, self.clock.now());
        self.pool
            .execute(
                sqlx::query(
                    "INSERT INTO api_keys (id, secret_hash, body) VALUES ($1, $2, $3::json)",
                )
                .bind(key.id)
                .bind(token.secret_hash())
                .bind(serde_json::to_string(&key).map_err(db)?),
            )
            .await?;
        Ok(key)
    }

    async fn find_key(&self, id: Uuid) -> Result<Option<(ApiKey, String)>, StoreError> {
        let row = self
            .pool
            .fetch_optional(|| {
                sqlx::query("SELECT body::text, secret_hash FROM api_keys WHERE id = $1").bind(id)
            })
            .await?;
        row.map(|r| {
            let body: &str = r.try_get(0).map_err(db)?;
            Ok((
                serde_json::from_str(body).map_err(db)?,
                r.try_get(1).map_err(db)?,
            ))
        })
        .transpose()
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows = self
            .pool
            .fetch_all(|| sqlx::query("SELECT body::text FROM api_keys ORDER BY seq"))
            .await?;
        rows.iter()
            .map(|r| serde_json::from_str(r.try_get(0).map_err(db)?).map_err(db))
            .collect()
    }

    async fn revoke_key(&self, id: Uuid) -> Result<ApiKey, StoreError> {
        let mut tx = self.begin().await?;
        let body: Option<String> =
            sqlx::query_scalar("SELECT body::text FROM api_keys WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        let mut key: ApiKey =
            serde_json::from_str(&body.ok_or(StoreError::KeyNotFound(id))?).map_err(db)?;
        if key.revoked_at.is_none() {
            let now = self.clock.now();
            key.revoked_at = Some(now);
            sqlx::query("UPDATE api_keys SET revoked_at = $1, body = $2::json WHERE id = $3")
                .bind(now)
                .bind(serde_json::to_string(&key).map_err(db)?)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await?;
        Ok(key)
    }

    async fn has_active_keys(&self) -> Result<bool, StoreError> {
        let row = self
            .pool
            .fetch_optional(|| {
                sqlx::query("SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)")
            })
            .await?;
        Ok(row
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(db)?
            .unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{AssertSqlSafe, Connection, PgConnection};

    use super::*;

    /// A migrated schema of its own in the test database, dropped by [`Scratch::drop_schema`].
    struct Scratch {
        admin: PgConnection,
        schema: String,
        conn: PgConnection,
    }

    impl Scratch {
        async fn new() -> Self {
            let url = std::env::var("LONGRUN_TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
            let schema = format!("longrun_plan_{}", Uuid::new_v4().simple());
            let mut admin = PgConnection::connect(&url).await.expect("connect");
            sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&mut admin)
                .await
                .expect("schema");
            let options: PgConnectOptions = url.parse().expect("url");
            let mut conn = PgConnection::connect_with(&options.options([("search_path", &schema)]))
                .await
                .expect("connect");
            MIGRATOR.run(&mut conn).await.expect("migrate");
            Self {
                admin,
                schema,
                conn,
            }
        }

        async fn drop_schema(self) {
            let Self {
                mut admin,
                schema,
                conn,
            } = self;
            drop(conn);
            sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut admin)
                .await
                .expect("drop");
        }
    }

    /// A claim on a queue without statistics walks the claim-order index: no sort.
    #[tokio::test]
    async fn a_claim_walks_the_claim_order_on_a_queue_without_statistics() {
        let mut scratch = Scratch::new().await;
        let conn = &mut scratch.conn;
        sqlx::raw_sql(
            "INSERT INTO ready SELECT i, 0, now(), 'a', 'default'
             FROM generate_series(1, 20000) i;",
        )
        .execute(&mut *conn)
        .await
        .expect("a queue");
        sqlx::raw_sql(BEGIN_CLAIM)
            .execute(&mut *conn)
            .await
            .expect("begin");
        let plan: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN {CLAIM_READY}")))
            .bind(OffsetDateTime::now_utc())
            .bind(vec!["a"])
            .bind(Vec::<String>::new())
            .bind(100_i64)
            .fetch_all(&mut *conn)
            .await
            .expect("explain");
        scratch.drop_schema().await;
        assert!(
            plan.iter()
                .any(|l| l.contains("Index Scan using ready_claim_order"))
                && !plan.iter().any(|l| l.contains("Sort")),
            "{plan:#?}"
        );
    }

    /// A read looks an operation up in `running` only when its row is pending or running.
    #[tokio::test]
    async fn a_read_looks_up_claims_only_of_unfinished_operations() {
        let mut scratch = Scratch::new().await;
        let plan: Vec<String> = sqlx::query_scalar(concat!(
            "EXPLAIN ",
            row::operations_where!("o.id = ANY($1)")
        ))
        .bind(vec![Uuid::new_v4()])
        .fetch_all(&mut scratch.conn)
        .await
        .expect("explain");
        scratch.drop_schema().await;
        let filter = plan
            .iter()
            .position(|l| l.contains("One-Time Filter") && l.contains("pending"));
        let running = plan.iter().position(|l| l.contains(" on running r"));
        assert!(
            matches!((filter, running), (Some(f), Some(r)) if f < r),
            "{plan:#?}"
        );
    }
}
