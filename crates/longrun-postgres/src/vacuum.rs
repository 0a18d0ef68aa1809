//! Keeps the tables vacuumed where autovacuum is off or too slow for a queue.
//!
//! Every claim deletes `ready` rows; until a vacuum removes them, their dead index entries are
//! walked by every later claim (and `running` churns the same way: a row per claim, deleted at
//! the end). Autovacuum wakes once a minute by default, longer than a burst of claims takes, so
//! once a second this task reads the tables' dead-row counts and vacuums `ready` and `running`
//! past [`QUEUE_DEAD_ROWS`]. It analyzes them in the same pass, and also once the rows changed
//! since their last statistics pass that count and a tenth of the table, so that the plans of
//! the statements on them follow the queue (without statistics, a completion batch deleted its
//! `running` rows by a sequential scan of the table). Where autovacuum is off altogether it
//! also vacuums (and analyzes) `operations` at autovacuum's default thresholds: every
//! transition leaves a dead row version and dead entries in its indexes, which would otherwise
//! pile up for good. `SKIP_LOCKED` makes a vacuum already running (another node, autovacuum) a
//! reason to skip, not to wait.

use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, interval};

/// Dead rows in `ready` or `running` worth a vacuum (a vacuum of a table this small takes
/// milliseconds); changed rows beyond a tenth of the table worth new statistics.
const QUEUE_DEAD_ROWS: i64 = 1000;

/// How often the dead-row counts are read.
const EVERY: Duration = Duration::from_secs(1);

/// The background vacuum task; stopped when dropped.
#[derive(Debug)]
pub(crate) struct Vacuum(JoinHandle<()>);

impl Vacuum {
    /// Starts watching the tables of the pool's schema.
    pub(crate) fn start(pool: PgPool) -> Self {
        Self(tokio::spawn(async move {
            let mut tick = interval(EVERY);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = vacuum_if_needed(&pool).await {
                    tracing::debug!(error = %e, "could not vacuum");
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

/// Whether `ready`, `running` and `operations` need a vacuum now, by their dead and live row
/// counts and (the first two) the rows changed since their last statistics.
const DUE: &str = "SELECT
       coalesce((SELECT n_dead_tup >= $1 OR n_mod_since_analyze >= $1 + 0.1 * n_live_tup
                 FROM pg_stat_user_tables WHERE relid = 'ready'::regclass), false),
       coalesce((SELECT n_dead_tup >= $1 OR n_mod_since_analyze >= $1 + 0.1 * n_live_tup
                 FROM pg_stat_user_tables WHERE relid = 'running'::regclass), false),
       current_setting('autovacuum') = 'off' AND coalesce(
           (SELECT n_dead_tup >= 50 + 0.2 * n_live_tup FROM pg_stat_user_tables
            WHERE relid = 'operations'::regclass), false)";

async fn vacuum_if_needed(pool: &PgPool) -> Result<(), sqlx::Error> {
    let (ready, running, operations): (bool, bool, bool) = sqlx::query_as(DUE)
        .bind(QUEUE_DEAD_ROWS)
        .fetch_one(pool)
        .await?;
    if ready {
        sqlx::query("VACUUM (SKIP_LOCKED, ANALYZE) ready")
            .execute(pool)
            .await?;
    }
    if running {
        sqlx::query("VACUUM (SKIP_LOCKED, ANALYZE) running")
            .execute(pool)
            .await?;
    }
    if operations {
        sqlx::query("VACUUM (SKIP_LOCKED, ANALYZE) operations")
            .execute(pool)
            .await?;
    }
    Ok(())
}
