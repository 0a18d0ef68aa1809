//! The connections to the file: one writer, used only on a blocking thread, and a small pool
//! of read-only connections, used inline on the calling task.
//!
//! Writes wait for the write lock (up to the busy timeout while another process holds it) and
//! for the commit's fsync, so a whole transaction runs in one `spawn_blocking`: one thread hop
//! per transaction (a whole batch, a claim), not two per statement as a driver with its own
//! worker thread costs. Reads do not hop at all: a lookup on a memory-mapped WAL database takes
//! microseconds, less than waking another thread and being woken again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use longrun_core::StoreError;
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

/// Prepared statements kept per connection (more than any connection uses).
const STATEMENT_CACHE: usize = 32;

/// Idle read connections kept for reuse. Reads never yield, so no more are in use at once
/// than the runtime has threads.
const MAX_IDLE_READERS: usize = 8;

/// Opens a connection with the per-connection settings: the busy timeout, `synchronous` by
/// `durability`, reads through a shared memory map (instead of copying pages into each
/// connection's cache, which other connections' commits invalidate), no foreign keys. The page
/// cache stays at SQLite's small default: a big one per connection is costly to truncate every
/// time another connection commits.
fn open(path: &Path, flags: OpenFlags, durability: Durability) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
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

/// Locks `mutex`, also after a panic while it was held: a connection's transaction is rolled
/// back when the panic drops it, so the connection is fine to use again.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The error of every call after [`crate::SqliteStore::close`].
fn closed() -> StoreError {
    StoreError::database(std::io::Error::other("the store is closed"))
}

/// The single read-write connection (`None` once closed), and the WAL's length, which it
/// restarts when long (see `checkpoint`).
#[derive(Debug, Clone)]
pub(crate) struct WriteConn(Arc<Mutex<Option<Connection>>>, Arc<WalSize>);

impl WriteConn {
    /// Opens (creating) the file in WAL mode and brings its schema up to date.
    pub(crate) fn open(
        path: &Path,
        durability: Durability,
        wal: Arc<WalSize>,
    ) -> Result<Self, StoreError> {
        let mut conn = open_writable(path, durability).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        // The checkpoint thread checkpoints (see `checkpoint`), not the writer's commits.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(db)?;
        migrate(&mut conn)?;
        Ok(Self(Arc::new(Mutex::new(Some(conn))), wal))
    }

    /// Runs `f` on the connection on a blocking thread, once the connection is free.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (conn, wal) = (self.0.clone(), self.1.clone());
        let joined = tokio::task::spawn_blocking(move || {
            let mut conn = lock(&conn);
            let conn = conn.as_mut().ok_or_else(closed)?;
            let done = f(conn);
            wal.restart_if_long(conn);
            done
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down.
            Err(e) => Err(db(e)),
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

    /// Closes the connection once the running transaction, if any, is over.
    pub(crate) async fn close(&self) {
        let conn = self.0.clone();
        // Closing may checkpoint the WAL: not on the async thread.
        let _ = tokio::task::spawn_blocking(move || drop(lock(&conn).take())).await;
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
