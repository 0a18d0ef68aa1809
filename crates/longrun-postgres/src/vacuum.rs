//! Keeps the `ready` table small where autovacuum is off or slow.
//!
//! Every claim deletes `ready` rows; until a vacuum removes them, their dead index entries are
//! walked by every later claim. The table's own autovacuum settings (migration 0004) handle
//! this on a server that runs autovacuum; this task does it on any server: once a second it
//! reads the table's dead-row count and vacuums it past a threshold. `SKIP_LOCKED` makes a
//! vacuum already running elsewhere (another node, autovacuum) a reason to skip, not to wait.

use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, interval};

/// Dead rows in `ready` worth a vacuum (a vacuum of a table this small takes milliseconds).
const DEAD_ROWS: i64 = 1000;

/// How often the dead-row count is read.
const EVERY: Duration = Duration::from_secs(1);

/// The background vacuum task; stopped when dropped.
#[derive(Debug)]
pub(crate) struct Vacuum(JoinHandle<()>);

impl Vacuum {
    /// Starts watching the `ready` table of the pool's schema.
    pub(crate) fn start(pool: PgPool) -> Self {
        Self(tokio::spawn(async move {
            let mut tick = interval(EVERY);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = vacuum_if_needed(&pool).await {
                    tracing::debug!(error = %e, "could not vacuum the ready table");
                }
            }
        }))
    }

    /// Stops the task.
    pub(crate) fn stop(&self) {
        self.0.abort();
    }
}

impl Drop for Vacuum {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn vacuum_if_needed(pool: &PgPool) -> Result<(), sqlx::Error> {
    let dead: Option<i64> = sqlx::query_scalar(
        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'ready'::regclass",
    )
    .fetch_optional(pool)
    .await?;
    if dead.unwrap_or(0) >= DEAD_ROWS {
        sqlx::query("VACUUM (SKIP_LOCKED) ready")
            .execute(pool)
            .await?;
    }
    Ok(())
}
