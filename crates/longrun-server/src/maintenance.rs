//! The maintenance loop: ends leases that ran out (their operations are retried or failed)
//! and deletes finished operations past the retention period.

use std::sync::Arc;

use longrun_core::Store;
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::ServerConfig;

/// Runs maintenance every `config.maintenance_interval` until `shutdown` is cancelled. Store
/// failures are logged and retried at the next tick; the task never panics on them.
pub fn spawn_maintenance(
    store: Arc<dyn Store>,
    config: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(config.maintenance_interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => run_once(&*store, &config).await,
            }
        }
    })
}

async fn run_once(store: &dyn Store, config: &ServerConfig) {
    match store.expire_leases().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(expired = n, "ended expired leases"),
        Err(e) => tracing::error!(error = %e, "expiring leases failed"),
    }
    if let Some(retention) = config.retention {
        match store.prune(OffsetDateTime::now_utc() - retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "deleted finished operations past retention"),
            Err(e) => tracing::error!(error = %e, "pruning finished operations failed"),
        }
    }
}
