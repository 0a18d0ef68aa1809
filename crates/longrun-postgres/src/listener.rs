//! The schema's change channel. Every transaction that changes operations announces them
//! before it commits ([`announce`]: lines `<id> <version> <status>`, many per notification,
//! delivered by PostgreSQL at commit and only if it commits); each node `LISTEN`s and
//! re-broadcasts them to its local subscribers.

use std::time::Duration;

use longrun_core::{Change, Operation, Status, StoreError};
use sqlx::{PgConnection, PgPool, postgres::PgListener};
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
                    Ok(Some(notification)) => {
                        for line in notification.payload().split('\n') {
                            match parse(line) {
                                Some(change) => {
                                    let _ = changes.send(change);
                                }
                                None => tracing::warn!(line, "unreadable change notification"),
                            }
                        }
                    }
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

/// The change that announces `op` as it now is.
pub(crate) fn change(op: &Operation) -> Change {
    Change {
        id: op.id,
        version: op.version,
        status: op.status,
    }
}

/// Sends `changes` on `channel` as part of the transaction on `conn`, in one round trip.
pub(crate) async fn announce(
    conn: &mut PgConnection,
    channel: &str,
    changes: impl IntoIterator<Item = Change>,
) -> Result<(), StoreError> {
    let payloads = payloads(changes);
    if payloads.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
        .bind(channel)
        .bind(payloads)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}

/// PostgreSQL refuses a notification payload of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7999;

/// The changes as lines `<id> <version> <status>` joined by `\n`, as few payloads as fit.
fn payloads(changes: impl IntoIterator<Item = Change>) -> Vec<String> {
    let mut payloads: Vec<String> = vec![];
    for change in changes {
        let line = format!(
            "{} {} {}",
            change.id,
            change.version,
            change.status.as_str()
        );
        match payloads.last_mut() {
            Some(payload) if payload.len() + 1 + line.len() <= MAX_PAYLOAD => {
                payload.push('\n');
                payload.push_str(&line);
            }
            _ => payloads.push(line),
        }
    }
    payloads
}

/// Parses one line `<id> <version> <status>`.
fn parse(line: &str) -> Option<Change> {
    let mut parts = line.split(' ');
    let id = parts.next()?.parse().ok()?;
    let version = parts.next()?.parse().ok()?;
    let status: Status = parts.next()?.parse().ok()?;
    Some(Change {
        id,
        version,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn payloads_fit_and_parse_back_in_order() {
        let changes: Vec<Change> = (0..1000)
            .map(|i| Change {
                id: Uuid::now_v7(),
                version: i,
                status: Status::ALL[i as usize % Status::ALL.len()],
            })
            .collect();
        let payloads = payloads(changes.clone());
        assert!(payloads.len() > 1, "1000 changes need several payloads");
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let parsed: Vec<Change> = payloads
            .iter()
            .flat_map(|p| p.split('\n'))
            .map(|line| parse(line).expect("readable"))
            .collect();
        assert_eq!(parsed, changes);
    }

    #[test]
    fn nothing_to_announce_is_no_payload() {
        assert!(payloads([]).is_empty());
    }
}
