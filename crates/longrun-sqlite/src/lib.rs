//! The embedded SQLite store: one file, WAL mode, no server to run.
//!
//! All writes go through one read-write connection, each in a `BEGIN IMMEDIATE` transaction,
//! so claims are race-free without `SKIP LOCKED` and other processes opening the same file
//! queue behind the lock instead of failing. Submits and changes to one operation are batched
//! into shared transactions (see `writer`); claims, deletes and maintenance take the connection
//! for a transaction of their own. Either way a transaction runs whole on the writer's thread.
//! Reads use separate read-only connections, which WAL lets run alongside the writer, inline on
//! the calling task (see `conn` for why). WAL checkpoints run on a thread of their own (see
//! `checkpoint`). `synchronous=NORMAL` by default: a committed write
//! survives a process crash but the last transactions may be lost on power failure; choose
//! [`Durability::Full`] to fsync every commit.

mod checkpoint;
mod conn;
mod migrate;
mod row;
mod writer;

use std::{path::PathBuf, sync::Arc};

use async_trait::async_trait;
use longrun_core::{
    ApiKey, Change, ClaimFilter, ClaimQuery, Clock, Lease, ListQuery, NewKey, NewOperation,
    Operation, Page, Status, Store, StoreError, Submitted, SystemClock, Token,
};
use rusqlite::{OptionalExtension, ToSql, params};
use time::OffsetDateTime;
use tokio::sync::broadcast;
use uuid::Uuid;

use checkpoint::{Checkpointer, WalSize};
use conn::{Readers, WriteConn};
use longrun_core::claimed::Claimed;
use longrun_core::handoff::Handoffs;
use longrun_core::write::{Edit, Write, Writer};
use row::{db, micros};
use writer::announce;

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL`: safe against process crashes (the default).
    #[default]
    Normal,
    /// `synchronous=FULL`: also safe against power loss, slower.
    Full,
}

/// A [`Store`] on one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: WriteConn,
    checkpointer: Arc<Checkpointer>,
    readers: Arc<Readers>,
    writes: Writer,
    /// Claimers of this process waiting for new operations (see `longrun_core::handoff`).
    handoffs: Arc<Handoffs>,
    /// The operations this store's claims started (see [`Claimed`]).
    claimed: Arc<Claimed>,
    clock: Arc<dyn Clock>,
    changes: broadcast::Sender<Change>,
}

impl SqliteStore {
    /// Opens (creating and migrating) the database at `url` (`sqlite://PATH` or a bare path),
    /// with the system clock and [`Durability::Normal`].
    pub async fn open_default(url: &str) -> Result<Self, StoreError> {
        Self::open(url, Arc::new(SystemClock)).await
    }

    /// Opens the database at `url` reading time from `clock`.
    pub async fn open(url: &str, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        Self::open_with(url, clock, Durability::Normal).await
    }

    /// Opens the database at `url` with the given durability.
    pub async fn open_with(
        url: &str,
        clock: Arc<dyn Clock>,
        durability: Durability,
    ) -> Result<Self, StoreError> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let path = PathBuf::from(path.split('?').next().unwrap_or(path));
        let wal = Arc::new(WalSize::default());
        let writer = {
            let (path, wal) = (path.clone(), wal.clone());
            // Opening may wait for another process's lock (setting WAL mode, migrating).
            tokio::task::spawn_blocking(move || WriteConn::open(&path, durability, wal))
                .await
                .map_err(db)??
        };
        let checkpointer = Arc::new(Checkpointer::start(&path, durability, wal)?);
        let (changes, _) = broadcast::channel(4096);
        let handoffs = Arc::new(Handoffs::default());
        let claimed = Arc::new(Claimed::default());
        let writes = writer::spawn(
            writer.clone(),
            clock.clone(),
            changes.clone(),
            handoffs.clone(),
            claimed.clone(),
        );
        Ok(Self {
            writer,
            checkpointer,
            readers: Arc::new(Readers::new(path, durability)),
            writes,
            handoffs,
            claimed,
            clock,
            changes,
        })
    }

    fn announce(&self, op: &Operation) {
        announce(&self.changes, op);
    }

    /// Closes the connections (waits for the running write transaction); every later call
    /// fails.
    pub async fn close(&self) {
        self.checkpointer.stop();
        self.writer.close().await;
        self.readers.close();
    }
}

// The planner would rather use `operations_by_status` and sort every pending row; the hot
// queries name their index (each an O(1) walk to the first match, past the pending rows that
// claims hold: the operations running now that no change has written out yet).
pub(crate) const CLAIMABLE: &str =
    "SELECT o.seq, o.version, o.body FROM operations o INDEXED BY operations_ready
     WHERE o.status = 'pending' AND o.run_at <= ?1
       AND (?2 = '[]' OR o.name IN (SELECT value FROM json_each(?2)))
       AND (?3 = '[]' OR o.queue IN (SELECT value FROM json_each(?3)))
       AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.seq = o.seq)
     ORDER BY o.priority DESC, o.seq
     LIMIT ?4";

const NEXT_RUN_AT: &str = "SELECT MIN(o.run_at) FROM operations o
       INDEXED BY operations_pending_run_at
     WHERE o.status = 'pending'
       AND (?1 = '[]' OR o.name IN (SELECT value FROM json_each(?1)))
       AND (?2 = '[]' OR o.queue IN (SELECT value FROM json_each(?2)))
       AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.seq = o.seq)";

/// A parameter's value, if it has one.
fn boxed<T: ToSql + 'static>(value: Option<T>) -> Option<Box<dyn ToSql>> {
    value.map(|v| Box::new(v) as Box<dyn ToSql>)
}

/// A statement and the values of its named parameters.
type Statement = (String, Vec<(&'static str, Box<dyn ToSql>)>);

/// The read of a page of [`ListQuery`]: only the filters it has, so that SQLite walks the
/// index of one of them (`(name, seq)`, `(status, seq)`, ...) newest first instead of the whole
/// table. A row that a claim holds reads as running (see `row`).
fn list_statement(query: &ListQuery) -> Statement {
    let mut sql = String::from(row::operations_where!("TRUE"));
    let mut params: Vec<(&'static str, Box<dyn ToSql>)> = vec![];
    let mut filter = |clause: &str, name: &'static str, value: Option<Box<dyn ToSql>>| {
        if let Some(value) = value {
            sql.push_str(clause);
            params.push((name, value));
        }
    };
    let id = |id: Option<Uuid>| boxed(id.map(Uuid::into_bytes));
    filter(" AND o.name = :name", ":name", boxed(query.name.clone()));
    filter(" AND o.parent_id = :parent", ":parent", id(query.parent_id));
    filter(" AND o.root_id = :root", ":root", id(query.root_id));
    filter(
        " AND o.customer = :customer",
        ":customer",
        boxed(query.customer),
    );
    filter(" AND o.seq < :before", ":before", boxed(query.before_seq));
    sql.push_str(match query.status {
        None => "",
        // Claimed rows still say `pending`: they are among the running, not the pending.
        Some(Status::Pending) => " AND o.status = 'pending' AND c.from_version IS NOT o.version",
        Some(Status::Running) => {
            " AND o.seq IN (SELECT seq FROM operations WHERE status = 'running'
                            UNION ALL SELECT seq FROM claims)
              AND (o.status = 'running' OR c.from_version = o.version)"
        }
        Some(status) => {
            params.push((":status", Box::new(status.as_str())));
            " AND o.status = :status"
        }
    });
    sql.push_str(" ORDER BY o.seq DESC LIMIT :limit");
    params.push((":limit", Box::new(query.fetch_limit())));
    (sql, params)
}

// Running operations whose lease ran out: those written out as running, and those a claim
// holds (`claims` is read whole, as for `SETTLED`: it holds about a second's claims, see
// migration 0006).
const EXPIRED: &str = row::operations_where!(
    "o.seq IN (SELECT seq FROM operations WHERE status = 'running' AND lease_expires_at <= ?1
               UNION ALL
               SELECT seq FROM claims WHERE lease_expires_at <= ?1)"
);

/// Operations whose claim started at or before `?1` (unix nanoseconds) and is not yet written
/// into their row.
const SETTLED: &str =
    row::operations_where!("o.seq IN (SELECT seq FROM claims WHERE started_ns <= ?1)");

/// How long a claim stays a `claims` row before the maintenance pass writes it into its
/// operation's row. Every claim walks past the pending rows that claims hold: 30,000 of them
/// cost a claim of 72 operations 11 ms of the writer (0.12 ms with none), so operations that
/// run for long must not stay among them. Short ones are changed again (completed) well
/// before this, and so are never written twice.
const SETTLE_CLAIMS_AFTER: time::Duration = time::Duration::seconds(1);

/// Finished operations completed before `?1`, found by the completion index: the unary `+`
/// keeps SQLite from walking every finished operation in `operations_by_status` instead,
/// which it prefers otherwise, and which made every maintenance tick cost as much as the
/// table is large.
const PRUNE: &str = "DELETE FROM operations
     WHERE completed_at IS NOT NULL AND completed_at < ?1
       AND +status IN ('succeeded', 'failed', 'cancelled')";

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).expect("strings serialize")
}

#[async_trait]
impl Store for SqliteStore {
    async fn submit(&self, new: NewOperation) -> Result<Submitted, StoreError> {
        self.writes.call(Write::Submit(Box::new(new))).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Operation>, StoreError> {
        self.readers.read(|conn| row::load(conn, id))
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let (sql, params) = list_statement(query);
        let params: Vec<(&str, &dyn ToSql)> = params.iter().map(|(n, v)| (*n, &**v)).collect();
        let operations = self
            .readers
            .read(|conn| row::query(conn, &sql, params.as_slice()))?;
        Ok(Page::from_fetched(operations, query))
    }

    async fn edit(&self, id: Uuid, edit: Edit) -> Result<Operation, StoreError> {
        Ok(self.writes.call(Write::Edit(id, edit)).await?.operation)
    }

    async fn delete(&self, id: Uuid) -> Result<(), StoreError> {
        let op = self
            .writer
            .transaction(move |tx| {
                let op = match row::load(tx, id)? {
                    Some(op) if op.is_terminal() => op,
                    Some(op) => {
                        return Err(StoreError::NotTerminal {
                            id,
                            status: op.status,
                        });
                    }
                    None => return Err(StoreError::NotFound(id)),
                };
                tx.prepare_cached("DELETE FROM operations WHERE seq = ?1")
                    .and_then(|mut stmt| stmt.execute([op.seq]))
                    .map_err(db)?;
                Ok(op)
            })
            .await?;
        // Waiters re-read it and find it gone.
        self.announce(&Operation {
            version: op.version + 1,
            ..op
        });
        Ok(())
    }

    async fn claim(&self, query: &ClaimQuery) -> Result<Vec<Lease>, StoreError> {
        if query.max == 0 {
            return Ok(vec![]);
        }
        let (query, clock, claimed) = (query.clone(), self.clock.clone(), self.claimed.clone());
        let started = self
            .writer
            .transaction(move |tx| {
                let now = clock.now();
                let picked = row::pick(
                    tx,
                    CLAIMABLE,
                    params![
                        micros(now),
                        json_list(&query.filter.names),
                        json_list(&query.filter.queues),
                        query.max,
                    ],
                )?;
                row::start(tx, picked, &query.worker, now, query.lease)
            })
            .await?;
        let leases = started
            .into_iter()
            .map(|started| started.lease(&claimed))
            .collect::<Result<Vec<_>, _>>()?;
        for lease in &leases {
            self.announce(&lease.operation);
        }
        Ok(leases)
    }

    async fn next_run_at(
        &self,
        filter: &ClaimFilter,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let at: Option<i64> = self.readers.read(|conn| {
            conn.prepare_cached(NEXT_RUN_AT)
                .and_then(|mut stmt| {
                    stmt.query_row(
                        (json_list(&filter.names), json_list(&filter.queues)),
                        |row| row.get(0),
                    )
                })
                .map_err(db)
        })?;
        at.map(row::from_micros).transpose()
    }

    async fn expire_leases(&self) -> Result<u64, StoreError> {
        let clock = self.clock.clone();
        let expired = self
            .writer
            .transaction(move |tx| {
                let now = clock.now();
                let mut running = row::query(tx, EXPIRED, [micros(now)])?;
                for op in &mut running {
                    op.expire_lease(now)?;
                    row::save(tx, op)?;
                }
                // Claims held for a while are written out: the operations read the same, and
                // claims no longer walk past them.
                let settle_before = (now - SETTLE_CLAIMS_AFTER).unix_timestamp_nanos();
                let settle_before = i64::try_from(settle_before).map_err(db)?;
                for op in row::query(tx, SETTLED, [settle_before])? {
                    row::save(tx, &op)?;
                }
                Ok(running)
            })
            .await?;
        for op in &expired {
            self.announce(op);
        }
        Ok(expired.len() as u64)
    }

    async fn prune(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let done = self
            .writer
            .transaction(move |tx| {
                tx.prepare_cached(PRUNE)
                    .and_then(|mut stmt| stmt.execute([micros(before)]))
                    .map_err(db)
            })
            .await?;
        Ok(done as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.readers.read(|conn| {
            conn.prepare_cached("SELECT 1")
                .and_then(|mut stmt| stmt.query_row([], |_| Ok(())))
                .map_err(db)
        })
    }

    fn handoffs(&self) -> Option<&Arc<Handoffs>> {
        Some(&self.handoffs)
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn create_key(&self, key: NewKey, token: &Token) -> Result<ApiKey, StoreError> {
        let key = key.into_key(token, self.clock.now());
        let row = (
            key.id.to_string(),
            token.secret_hash(),
            serde_json::to_string(&key).map_err(db)?,
        );
        self.writer
            .transaction(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO api_keys (id, secret_hash, body) VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut stmt| stmt.execute(row))
                .map_err(db)
            })
            .await?;
        Ok(key)
    }

    async fn find_key(&self, id: Uuid) -> Result<Option<(ApiKey, String)>, StoreError> {
        let found: Option<(String, String)> = self.readers.read(|conn| {
            conn.prepare_cached("SELECT body, secret_hash FROM api_keys WHERE id = ?1")
                .and_then(|mut stmt| {
                    stmt.query_row([id.to_string()], |row| Ok((row.get(0)?, row.get(1)?)))
                        .optional()
                })
                .map_err(db)
        })?;
        found
            .map(|(body, hash)| Ok((serde_json::from_str(&body).map_err(db)?, hash)))
            .transpose()
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let bodies: Vec<String> = self.readers.read(|conn| {
            conn.prepare_cached("SELECT body FROM api_keys ORDER BY seq")
                .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
                .map_err(db)
        })?;
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).map_err(db))
            .collect()
    }

    async fn revoke_key(&self, id: Uuid) -> Result<ApiKey, StoreError> {
        let clock = self.clock.clone();
        self.writer
            .transaction(move |tx| {
                let body: Option<String> = tx
                    .prepare_cached("SELECT body FROM api_keys WHERE id = ?1")
                    .and_then(|mut stmt| {
                        stmt.query_row([id.to_string()], |row| row.get(0))
                            .optional()
                    })
                    .map_err(db)?;
                let mut key: ApiKey =
                    serde_json::from_str(&body.ok_or(StoreError::KeyNotFound(id))?).map_err(db)?;
                if key.revoked_at.is_none() {
                    let now = clock.now();
                    key.revoked_at = Some(now);
                    let body = serde_json::to_string(&key).map_err(db)?;
                    tx.prepare_cached(
                        "UPDATE api_keys SET revoked_at = ?1, body = ?2 WHERE id = ?3",
                    )
                    .and_then(|mut stmt| stmt.execute(params![micros(now), body, id.to_string()]))
                    .map_err(db)?;
                }
                Ok(key)
            })
            .await
    }

    async fn has_active_keys(&self) -> Result<bool, StoreError> {
        self.readers.read(|conn| {
            conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)")
                .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
                .map_err(db)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every filter of a list walks an index newest first: none reads the whole table.
    #[test]
    fn each_list_filter_walks_an_index() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        migrate::migrate(&mut conn).unwrap();
        let one = ListQuery {
            limit: 10,
            ..ListQuery::default()
        };
        let filtered = [
            ListQuery {
                name: Some("n".into()),
                ..one.clone()
            },
            ListQuery {
                parent_id: Some(Uuid::nil()),
                ..one.clone()
            },
            ListQuery {
                root_id: Some(Uuid::nil()),
                ..one.clone()
            },
            ListQuery {
                customer: Some(1),
                ..one.clone()
            },
            ListQuery {
                status: Some(Status::Pending),
                ..one.clone()
            },
            ListQuery {
                status: Some(Status::Running),
                ..one.clone()
            },
            ListQuery {
                status: Some(Status::Failed),
                customer: Some(1),
                before_seq: Some(100),
                ..one.clone()
            },
        ];
        for query in &filtered {
            let (sql, params) = list_statement(query);
            let params: Vec<(&str, &dyn ToSql)> = params.iter().map(|(n, v)| (*n, &**v)).collect();
            let plan = plan(&conn, &sql, params.as_slice());
            assert!(
                !plan.iter().any(|step| step == "SCAN o"),
                "{query:?} reads the whole table: {plan:?}"
            );
        }
    }

    /// Pruning finds what it deletes by completion time: its cost follows what it deletes,
    /// not how many finished operations the file holds.
    #[test]
    fn prune_searches_by_completion_time() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        migrate::migrate(&mut conn).unwrap();
        assert_eq!(
            plan(&conn, PRUNE, [0]),
            [
                "SEARCH operations USING INDEX operations_completed (completed_at>? AND completed_at<?)"
            ]
        );
    }

    /// The steps of the plan SQLite makes for `sql`.
    fn plan(conn: &rusqlite::Connection, sql: &str, params: impl rusqlite::Params) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        stmt.query_map(params, |row| row.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }
}
