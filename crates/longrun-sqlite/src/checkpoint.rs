//! WAL checkpoints off the write path.
//!
//! By default SQLite checkpoints in the connection whose commit pushes the WAL past 1000
//! pages: that commit also copies the WAL into the database file and syncs it, and every write
//! queued behind it waits (a latency spike every few thousand writes). Here the writer never
//! checkpoints (`wal_autocheckpoint = 0`, set in `conn`); a thread of the store does, on its
//! own connection, in `PASSIVE` mode, which never waits for readers or the writer.
//!
//! A passive checkpoint never catches up with a writer that never pauses, and SQLite writes
//! the WAL again from its start only after a checkpoint caught up, so under steady writes the
//! WAL grew without end (past 1 GB in a 12 s benchmark), every commit appending to new file
//! blocks that the kernel zeroes first. So the thread also measures the WAL ([`WalSize`]), and
//! once it is past [`RESTART_AFTER_FRAMES`] the writer, between two of its transactions, runs a
//! `RESTART` checkpoint: it copies what the thread has not yet copied, waits (briefly) until no
//! reader uses the WAL, and the next commit writes the WAL from its start.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use longrun_core::StoreError;

use crate::Durability;
use crate::conn::{BUSY_TIMEOUT, open_writable};
use crate::row::db;

/// How often the WAL is checkpointed.
const EVERY: Duration = Duration::from_millis(250);

/// WAL frames (pages) past which a checkpoint also restarts the WAL.
const RESTART_AFTER_FRAMES: i64 = 4096;

/// How long a restarting checkpoint waits for readers (the writer waits meanwhile); one that
/// cannot finish in time is tried again after the next measurement.
const RESTART_WAIT: Duration = Duration::from_millis(100);

/// The checkpoint thread; it stops when this is dropped or [`Checkpointer::stop`] is called.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    stop: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` (which exists, in WAL mode).
    pub(crate) fn start(
        path: &Path,
        durability: Durability,
        wal: Arc<WalSize>,
    ) -> Result<Self, StoreError> {
        let conn = open_writable(path, durability).map_err(db)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("longrun-sqlite-checkpoint".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(EVERY);
                    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1)) {
                        Ok(frames) => wal.0.store(frames, Ordering::Relaxed),
                        Err(e) => tracing::debug!(error = %e, "WAL checkpoint failed"),
                    }
                }
            })
            .map_err(db)?;
        Ok(Self { stop })
    }

    /// Stops the thread (after its current checkpoint).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The WAL's length in frames as the checkpoint thread last saw it.
#[derive(Debug, Default)]
pub(crate) struct WalSize(AtomicI64);

impl WalSize {
    /// On the writer's connection, between transactions: restarts the WAL when it was last seen
    /// past [`RESTART_AFTER_FRAMES`].
    pub(crate) fn restart_if_long(&self, conn: &rusqlite::Connection) {
        if self.0.load(Ordering::Relaxed) <= RESTART_AFTER_FRAMES {
            return;
        }
        self.0.store(0, Ordering::Relaxed);
        let restarted = conn
            .busy_timeout(RESTART_WAIT)
            .and_then(|()| conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())));
        // The writer's own busy timeout again, whatever happened.
        let restored = conn.busy_timeout(BUSY_TIMEOUT);
        if let Err(e) = restarted.and(restored) {
            tracing::debug!(error = %e, "WAL restart failed");
        }
    }
}
