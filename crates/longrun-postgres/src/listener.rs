//! The schema's change channel. After a transaction that changes operations commits, its
//! changes go to this node's subscribers at once and, through an [`Announcer`], to the other
//! nodes: lines `<id> <version> <status>` after a first line naming the sending node, many
//! per notification. Each node `LISTEN`s and re-broadcasts what other nodes sent.
//!
//! Why after the commit and not inside the transaction: PostgreSQL serializes the commits of
//! transactions that `NOTIFY` (a cluster-wide lock held through the commit's WAL flush), so
//! every write transaction would wait for every other one's fsync. A notification-only
//! statement writes no WAL and holds that lock only briefly. Should the node die between the
//! commit and the notification, the other nodes' waiters learn the change at their next look
//! (every wait has a deadline), as after a lost connection.

use std::time::Duration;

use longrun_core::{Change, Operation, Status, StoreError};
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::row::db;

/// The background task that forwards notifications; stopped when dropped.
#[derive(Debug)]
pub(crate) struct Listener(JoinHandle<()>);

impl Listener {
    /// Listens on `channel` (the listening is in place when this returns) and forwards every
    /// notification sent by a node other than `node` to `changes`.
    pub(crate) async fn start(
        pool: &PgPool,
        channel: String,
        node: Uuid,
        changes: broadcast::Sender<Change>,
    ) -> Result<Self, StoreError> {
        let own = node.to_string();
        let mut listener = PgListener::connect_with(pool).await.map_err(db)?;
        listener.listen(&channel).await.map_err(db)?;
        Ok(Self(tokio::spawn(async move {
            let mut backoff = MIN_BACKOFF;
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        let mut lines = notification.payload().split('\n');
                        if lines.next() == Some(own.as_str()) {
                            continue;
                        }
                        for line in lines {
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

/// Sends committed changes: to this node's subscribers at once, to the other nodes by
/// `pg_notify` from a background task that sends whatever queued meanwhile in one round trip.
#[derive(Debug)]
pub(crate) struct Announcer {
    local: broadcast::Sender<Change>,
    remote: mpsc::UnboundedSender<Change>,
    task: JoinHandle<()>,
}

impl Announcer {
    /// Announces on `channel` of `pool` as node `node`, and locally on `local`.
    pub(crate) fn start(
        pool: PgPool,
        channel: String,
        node: Uuid,
        local: broadcast::Sender<Change>,
    ) -> Self {
        let (remote, mut queued) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut batch = Vec::new();
            while queued.recv_many(&mut batch, usize::MAX).await > 0 {
                let payloads = payloads(node, batch.drain(..));
                let sent =
                    sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
                        .bind(&channel)
                        .bind(payloads)
                        .execute(&pool)
                        .await;
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "could not tell the other nodes about changes");
                }
            }
        });
        Self {
            local,
            remote,
            task,
        }
    }

    /// Announces `changes`, which have been committed.
    pub(crate) fn announce(&self, changes: impl IntoIterator<Item = Change>) {
        for change in changes {
            let _ = self.local.send(change);
            let _ = self.remote.send(change);
        }
    }

    /// Stops sending to the other nodes.
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// PostgreSQL refuses a notification payload of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7999;

/// The changes as lines `<id> <version> <status>` joined by `\n`, as few payloads as fit,
/// each starting with the line `node`.
fn payloads(node: Uuid, changes: impl IntoIterator<Item = Change>) -> Vec<String> {
    let node = node.to_string();
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
            _ => payloads.push(format!("{node}\n{line}")),
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
        let node = Uuid::now_v7();
        let payloads = payloads(node, changes.clone());
        assert!(payloads.len() > 1, "1000 changes need several payloads");
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let parsed: Vec<Change> = payloads
            .iter()
            .flat_map(|p| {
                let mut lines = p.split('\n');
                assert_eq!(lines.next(), Some(node.to_string().as_str()));
                lines
            })
            .map(|line| parse(line).expect("readable"))
            .collect();
        assert_eq!(parsed, changes);
    }

    #[test]
    fn nothing_to_announce_is_no_payload() {
        assert!(payloads(Uuid::now_v7(), []).is_empty());
    }
}
