//! The connections to the file: one writer, owned by a thread of its own, and a small pool of
//! read-only connections, used inline on the calling task.
//!
//! Writes wait for the write lock (up to the busy timeout while another process holds it) and
//! for the commit's fsync, so a whole transaction runs as one job on the writer thread: one
//! hand-off per transaction (a whole batch, a claim), not two per statement as a driver with
//! its own worker thread costs. A thread that keeps the connection drained 12 % more than one
//! `spawn_blocking` per transaction (27,235 → 30,470 jobs/s, median of three alternating runs
//! each), which woke a pool thread and moved the connection to it every time. Reads do not hop
//! at all: a lookup on a memory-mapped WAL database takes microseconds, less than waking
//! another thread and being woken again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use longrun_core::StoreError;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::Durability;
use crate::checkpoint::WalSize;
use crate::migrate::migrate;
use crate::row::db;

/// How long a statement waits for another connection's lock before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes of the file read through the memory map: as much as SQLite allows (it caps this at
/// 2 GiB, `SQLITE_MAX_MMAP_SIZE`). Pages past the map are copied with a `pread` each: 1,000,000
/// operations take 1.5 GB, and status reads of them went from 31,554 to 33,132 requests/s
/// when the map grew from 1 GiB to the cap.
const MMAP_SIZE: u64 = 1 << 34;

/// Prepared statements kept per connection: every statement of the store, and a list
/// statement per combination of filters in use.
const STATEMENT_CACHE: usize = 64;

/// Idle read connections kept for reuse. Reads never yield, so no more are in use at once
/// than the runtime has threads.
const MAX_IDLE_READERS: usize = 8;

/// Opens a connection with the per-connection settings: the busy timeout, `synchronous` by
/// `durability`, one plan per statement, reads through a shared memory map (instead of
/// copying pages into each connection's cache, which other connections' commits invalidate),
/// no foreign keys. The page cache stays at SQLite's small default: a big one per connection
/// is costly to truncate every time another connection commits.
fn open(path: &Path, flags: OpenFlags, durability: Durability) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // One plan per statement whatever its parameters. Otherwise, once the file has statistics
    // (`ANALYZE`, which SQLite recommends running now and then), SQLite prepares a statement
    // again for every new binding of a parameter that its plan might depend on: a status read
    // and a claim then spend longer planning than running.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    let synchronous = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous};
         PRAGMA mmap_size = {MMAP_SIZE};
         PRAGMA foreign_keys = OFF;"
    ))?;
    Ok(conn)
}

/// Opens a read-write connection with the per-connection settings.
pub(crate) fn open_writable(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    open(path, OpenFlags::default(), durability)
}

/// Locks `mutex`, also after a panic while it was held (the idle list stays valid).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The error of every call after [`crate::SqliteStore::close`].
fn closed() -> StoreError {
    StoreError::database(std::io::Error::other("the store is closed"))
}

/// A job for the writer thread, on its connection (`None` once closed).
type Job = Box<dyn FnOnce(&mut Option<Connection>) + Send>;

/// Puts the file in WAL mode. On a new file that other processes or stores open at the same
/// moment, SQLite may answer "database is locked" at once, without waiting the busy timeout
/// (the switch needs the file to itself): so this tries again until the busy timeout passes.
fn wal_mode(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            done => return done,
        }
    }
}

/// The single read-write connection, owned by a thread of its own that runs one job after the
/// other. A job reaches it through a channel and answers through another: no thread is woken
/// but the writer's, and the connection never changes threads.
#[derive(Debug, Clone)]
pub(crate) struct WriteConn(std::sync::mpsc::Sender<Job>);

impl WriteConn {
    /// Opens (creating) the file in WAL mode, brings its schema up to date and starts the
    /// writer thread; the WAL is restarted between jobs when long (see `checkpoint`).
    pub(crate) fn open(
        path: &Path,
        durability: Durability,
        wal: Arc<WalSize>,
    ) -> Result<Self, StoreError> {
        let mut conn = open_writable(path, durability).map_err(db)?;
        wal_mode(&conn).map_err(db)?;
        // The checkpoint thread checkpoints (see `checkpoint`), not the writer's commits.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(db)?;
        migrate(&mut conn)?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("longrun-sqlite-writer".into())
            .spawn(move || {
                let mut conn = Some(conn);
                // Until every handle is dropped.
                while let Ok(job) = queue.recv() {
                    job(&mut conn);
                    if let Some(conn) = &conn {
                        wal.restart_if_long(conn);
                    }
                }
            })
            .map_err(db)?;
        Ok(Self(jobs))
    }

    /// Runs `f` on the connection, on the writer thread, after the jobs queued before it.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let done = match conn.as_mut() {
                Some(conn) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn))),
                None => Ok(Err(closed())),
            };
            let _ = answer.send(done);
        });
        self.0.send(job).map_err(|_| closed())?;
        match answered.await {
            Ok(Ok(done)) => done,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(closed()),
        }
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction, committed when `f` succeeds and rolled
    /// back when it fails.
    pub(crate) async fn transaction<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.run(|conn| {
            let tx = begin(conn)?;
            let done = f(&tx)?;
            tx.commit().map_err(db)?;
            Ok(done)
        })
        .await
    }

    /// Closes the connection once the jobs queued before are done; every later call fails.
    pub(crate) async fn close(&self) {
        let (done, closed) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            drop(conn.take());
            let _ = done.send(());
        });
        if self.0.send(job).is_ok() {
            let _ = closed.await;
        }
    }
}

/// Starts a `BEGIN IMMEDIATE` transaction: it takes the write lock up front (waiting for it),
/// so no other writer, in this process or another, can change what it reads before it writes.
pub(crate) fn begin(conn: &mut Connection) -> Result<Transaction<'_>, StoreError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)
}

/// Read-only connections, opened on demand and kept for reuse.
#[derive(Debug)]
pub(crate) struct Readers {
    path: PathBuf,
    durability: Durability,
    /// `None` once closed.
    idle: Mutex<Option<Vec<Connection>>>,
}

impl Readers {
    /// Readers of the file at `path` (which the writer has created).
    pub(crate) fn new(path: PathBuf, durability: Durability) -> Self {
        Self {
            path,
            durability,
            idle: Mutex::new(Some(Vec::new())),
        }
    }

    /// Runs `f` on a read-only connection, here on the calling thread.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = lock(&self.idle).as_mut().ok_or_else(closed)?.pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                self.durability,
            )
            .map_err(db)?,
        };
        let result = f(&conn);
        if let Some(idle) = lock(&self.idle).as_mut()
            && idle.len() < MAX_IDLE_READERS
        {
            idle.push(conn);
        }
        result
    }

    /// Closes the idle connections; those in use close when their read ends.
    pub(crate) fn close(&self) {
        let idle = lock(&self.idle).take();
        drop(idle);
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::{StatementStatus, params};

    use super::*;
    use crate::row::operations_where;

    /// Once a file has statistics, SQLite would prepare a statement again for each new value
    /// of a parameter its plan might depend on (a status read by id, a claim's time): the
    /// connections keep one plan per statement instead.
    #[test]
    fn statements_keep_their_plan_on_a_file_with_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writable(&dir.path().join("db"), Durability::Normal).unwrap();
        crate::migrate::migrate(&mut conn).unwrap();
        conn.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO operations (id, name, queue, priority, status, run_at, root_id,
                                     customer, created_by, version, body)
             SELECT unhex(printf('%032x', i)), 'n' || (i % 5), 'q', 0,
                    CASE i % 3 WHEN 0 THEN 'pending' WHEN 1 THEN 'running' ELSE 'failed' END,
                    i, unhex(printf('%032x', i)), 0, 0, 1, '{}'
             FROM n;
             INSERT INTO claims SELECT seq, 1, 'l', 'w', 1, 1, 1 FROM operations WHERE seq % 7 = 0;
             ANALYZE;",
        )
        .unwrap();
        let by_id = operations_where!("o.id = ?1");
        let mut stmt = conn.prepare(by_id).unwrap();
        for i in 1..=50u128 {
            // Ids are their 16 bytes, as the store writes them (here `i`, big-endian).
            stmt.query_row([i.to_be_bytes()], |_| Ok(())).unwrap();
        }
        assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0, "{by_id}");
        let mut stmt = conn.prepare(crate::CLAIMABLE).unwrap();
        for i in 0..50 {
            stmt.query(params![i, "[]", "[]", 10])
                .unwrap()
                .next()
                .unwrap();
        }
        assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0, "the claim");
    }
}
