//! `LISTEN` on the schema's change channel and re-broadcast to this node's subscribers.

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
            loop {
                match listener.recv().await {
                    Ok(notification) => match parse(notification.payload()) {
                        Some(change) => {
                            let _ = changes.send(change);
                        }
                        None => tracing::warn!(
                            payload = notification.payload(),
                            "unreadable change notification"
                        ),
                    },
                    // The listener reconnects on the next recv; notifications sent meanwhile are
                    // lost, which waiters tolerate (they re-read the store on their deadline).
                    Err(e) => {
                        tracing::warn!(error = %e, "change listener lost its connection; reconnecting");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                }
            }
        })))
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
