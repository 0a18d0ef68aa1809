//! WAL checkpoints off the write path.
//!
//! By default SQLite checkpoints in the connection whose commit pushes the WAL past 1000
//! pages: that commit also copies the WAL into the database file and syncs it, and every write
//! queued behind it waits (a latency spike every few thousand writes). Here the writer never
//! checkpoints (`wal_autocheckpoint = 0`, set in `conn`); a thread of the store does, on its
//! own connection, in `PASSIVE` mode, which never waits for readers or the writer.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use longrun_core::StoreError;

use crate::Durability;
use crate::conn::open_writable;
use crate::row::db;

/// How often the WAL is checkpointed.
const EVERY: Duration = Duration::from_millis(250);

/// The checkpoint thread; it stops when this is dropped or [`Checkpointer::stop`] is called.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    stop: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` (which exists, in WAL mode).
    pub(crate) fn start(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let conn = open_writable(path, durability).map_err(db)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("longrun-sqlite-checkpoint".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(EVERY);
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!(error = %e, "WAL checkpoint failed");
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
