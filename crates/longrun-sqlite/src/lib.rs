//! The embedded SQLite store: one file, WAL mode, no server to run.
//!
//! Writes go through a pool of exactly one connection, each in a `BEGIN IMMEDIATE`
//! transaction, so claims are race-free without `SKIP LOCKED` and other processes opening the
//! same file queue behind the lock instead of failing. Reads use a separate read-only pool,
//! which WAL lets run alongside the writer. `synchronous=NORMAL` by default: a committed write
//! survives a process crash but the last transactions may be lost on power failure; choose
//! [`Durability::Full`] to fsync every commit.

mod row;
mod writer;

use std::{str::FromStr, sync::Arc, time::Duration as StdDuration};

use async_trait::async_trait;
use longrun_core::{
    ApiKey, Change, ClaimFilter, ClaimQuery, Clock, Lease, ListQuery, NewKey, NewOperation,
    Operation, Page, Store, StoreError, Submitted, SystemClock, Token,
};
use sqlx::{
    Row, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use time::OffsetDateTime;
use tokio::sync::broadcast;
use uuid::Uuid;

use longrun_core::write::{Edit, Write, Writer};
use row::{db, micros};
use writer::announce;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

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
    writer: SqlitePool,
    reader: SqlitePool,
    writes: Writer,
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
        let path = path.split('?').next().unwrap_or(path);
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(db)?
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                Durability::Normal => SqliteSynchronous::Normal,
                Durability::Full => SqliteSynchronous::Full,
            })
            .busy_timeout(StdDuration::from_secs(10))
            // Reads through a shared memory map instead of copying pages per connection (which
            // WAL commits invalidate), and a 64 MiB page cache per connection.
            .pragma("mmap_size", "1073741824")
            .pragma("cache_size", "-65536")
            .foreign_keys(false);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone().create_if_missing(true))
            .await
            .map_err(db)?;
        MIGRATOR.run(&writer).await.map_err(db)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.read_only(true))
            .await
            .map_err(db)?;
        let (changes, _) = broadcast::channel(4096);
        let writes = writer::spawn(writer.clone(), clock.clone(), changes.clone());
        Ok(Self {
            writer,
            reader,
            writes,
            clock,
            changes,
        })
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db)
    }

    fn announce(&self, op: &Operation) {
        announce(&self.changes, op);
    }

    /// Closes both pools (waits for running statements).
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

// The planner would rather use `operations_by_status` and sort every pending row; the hot
// queries name their index (each an O(1) walk to the first match).
const CLAIMABLE: &str = "SELECT seq, body FROM operations INDEXED BY operations_ready
     WHERE status = 'pending' AND run_at <= ?1
       AND (?2 = '[]' OR name IN (SELECT value FROM json_each(?2)))
       AND (?3 = '[]' OR queue IN (SELECT value FROM json_each(?3)))
     ORDER BY priority DESC, seq
     LIMIT ?4";

const NEXT_RUN_AT: &str = "SELECT MIN(run_at) FROM operations INDEXED BY operations_pending_run_at
     WHERE status = 'pending'
       AND (?1 = '[]' OR name IN (SELECT value FROM json_each(?1)))
       AND (?2 = '[]' OR queue IN (SELECT value FROM json_each(?2)))";

const LIST: &str = "SELECT seq, body FROM operations
     WHERE (?1 IS NULL OR status = ?1)
       AND (?2 IS NULL OR name = ?2)
       AND (?3 IS NULL OR parent_id = ?3)
       AND (?4 IS NULL OR root_id = ?4)
       AND (?5 IS NULL OR customer = ?5)
       AND (?6 IS NULL OR seq < ?6)
     ORDER BY seq DESC
     LIMIT ?7";

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).expect("strings serialize")
}

#[async_trait]
impl Store for SqliteStore {
    async fn submit(&self, new: NewOperation) -> Result<Submitted, StoreError> {
        self.writes.call(Write::Submit(Box::new(new))).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Operation>, StoreError> {
        let mut conn = self.reader.acquire().await.map_err(db)?;
        row::load(&mut conn, id).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let rows = sqlx::query(LIST)
            .bind(query.status.map(|s| s.as_str()))
            .bind(query.name.as_deref())
            .bind(query.parent_id.map(|id| id.to_string()))
            .bind(query.root_id.map(|id| id.to_string()))
            .bind(query.customer)
            .bind(query.before_seq)
            .bind(query.fetch_limit())
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
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
        let found = row::load(&mut tx, id).await?;
        let op = match found {
            Some(op) if op.is_terminal() => op,
            // End the transaction now: a dropped one is rolled back only when its connection is
            // next used, and until then its row lock would make claims skip the operation.
            other => {
                tx.rollback().await.map_err(db)?;
                return Err(match other {
                    Some(op) => StoreError::NotTerminal {
                        id,
                        status: op.status,
                    },
                    None => StoreError::NotFound(id),
                });
            }
        };
        sqlx::query("DELETE FROM operations WHERE seq = ?")
            .bind(op.seq)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
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
        let mut tx = self.begin().await?;
        let now = self.clock.now();
        let rows = sqlx::query(CLAIMABLE)
            .bind(micros(now))
            .bind(json_list(&query.filter.names))
            .bind(json_list(&query.filter.queues))
            .bind(i64::from(query.max))
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        let mut leases = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut op = row::decode(r)?;
            let lease_id = Uuid::now_v7();
            op.start(lease_id, &query.worker, query.lease, now)?;
            row::save(&mut tx, &op).await?;
            leases.push(Lease {
                lease_id,
                expires_at: now + query.lease,
                operation: op,
            });
        }
        tx.commit().await.map_err(db)?;
        for lease in &leases {
            self.announce(&lease.operation);
        }
        Ok(leases)
    }

    async fn next_run_at(
        &self,
        filter: &ClaimFilter,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let at: Option<i64> = sqlx::query_scalar(NEXT_RUN_AT)
            .bind(json_list(&filter.names))
            .bind(json_list(&filter.queues))
            .fetch_one(&self.reader)
            .await
            .map_err(db)?;
        at.map(row::from_micros).transpose()
    }

    async fn expire_leases(&self) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let now = self.clock.now();
        let rows = sqlx::query(
            "SELECT seq, body FROM operations WHERE status = 'running' AND lease_expires_at <= ?",
        )
        .bind(micros(now))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut expired = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut op = row::decode(r)?;
            op.expire_lease(now)?;
            row::save(&mut tx, &op).await?;
            expired.push(op);
        }
        tx.commit().await.map_err(db)?;
        for op in &expired {
            self.announce(op);
        }
        Ok(expired.len() as u64)
    }

    async fn prune(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM operations
             WHERE completed_at IS NOT NULL AND completed_at < ?
               AND status IN ('succeeded', 'failed', 'cancelled')",
        )
        .bind(micros(before))
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(db)?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn create_key(&self, key: NewKey, token: &Token) -> Result<ApiKey, StoreError> {
        let key = key.into_key(token, self.clock.now());
        sqlx::query("INSERT INTO api_keys (id, secret_hash, body) VALUES (?, ?, ?)")
            .bind(key.id.to_string())
            .bind(token.secret_hash())
            .bind(serde_json::to_string(&key).map_err(db)?)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(key)
    }

    async fn find_key(&self, id: Uuid) -> Result<Option<(ApiKey, String)>, StoreError> {
        let row = sqlx::query("SELECT body, secret_hash FROM api_keys WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        row.map(|r| Ok((serde_json::from_str(r.get(0)).map_err(db)?, r.get(1))))
            .transpose()
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM api_keys ORDER BY seq")
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).map_err(db))
            .collect()
    }

    async fn revoke_key(&self, id: Uuid) -> Result<ApiKey, StoreError> {
        let mut tx = self.begin().await?;
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM api_keys WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let mut key: ApiKey =
            serde_json::from_str(&body.ok_or(StoreError::KeyNotFound(id))?).map_err(db)?;
        if key.revoked_at.is_none() {
            let now = self.clock.now();
            key.revoked_at = Some(now);
            sqlx::query("UPDATE api_keys SET revoked_at = ?, body = ? WHERE id = ?")
                .bind(micros(now))
                .bind(serde_json::to_string(&key).map_err(db)?)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(key)
    }

    async fn has_active_keys(&self) -> Result<bool, StoreError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)")
            .fetch_one(&self.reader)
            .await
            .map_err(db)
    }
}
