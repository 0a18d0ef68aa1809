//! `LISTEN` on the schema's change channel and re-broadcast to this node's subscribers.

use std::time::Duration;

use longrun_core::{Change, Status, StoreError};
use sqlx::{PgPool, postgres::PgListener};
use tokio::{sync::broadcast, task::JoinHandle};

use crate::row::db;

/// The background task that forwards notifications; stopped when dropped.
#[derive(Debug)]
pub(crate) struct Listener(JoinHandle<()>);

impl Listener {
    /// Listens on `channel` (the listening is in place when this returns) and forwards every
    /// notification to `changes`.
    pub(crate) async fn start(
        pool: &PgPool,
        channel: String,
        changes: broadcast::Sender<Change>,
    ) -> Result<Self, StoreError> {
        let mut listener = PgListener::connect_with(pool).await.map_err(db)?;
        listener.listen(&channel).await.map_err(db)?;
        Ok(Self(tokio::spawn(async move {
            let mut backoff = MIN_BACKOFF;
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => match parse(notification.payload()) {
                        Some(change) => {
                            let _ = changes.send(change);
                        }
                        None => tracing::warn!(
                            payload = notification.payload(),
                            "unreadable change notification"
                        ),
                    },
                    // The connection was lost and is listening again: what was sent meanwhile
                    // is gone, so every waiter looks at the store again.
                    Ok(None) => {
                        tracing::info!("change listener reconnected");
                        backoff = MIN_BACKOFF;
                        let _ = changes.send(Change::resync());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "change listener lost the database");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        })))
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Listener {
    /// Stops listening, giving its connection back.
    pub(crate) fn stop(&self) {
        self.0.abort();
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Parses `<id> <version> <status>`.
fn parse(payload: &str) -> Option<Change> {
    let mut parts = payload.split(' ');
    let id = parts.next()?.parse().ok()?;
    let version = parts.next()?.parse().ok()?;
    let status: Status = parts.next()?.parse().ok()?;
    Some(Change {
        id,
        version,
        status,
    })
}
