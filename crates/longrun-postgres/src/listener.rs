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
//!
//! A node alone on its database sends no changes at all (a notification per commit is a round
//! trip, and work for the server, that no one reads). Nodes learn of each other by presence
//! messages on the same channel: a starting node says `hello`, every node that hears it
//! answers `here`, and every node says `here` again every [`KEEPALIVE`]. A node sends its
//! changes while it has heard another node within [`PEER_TTL`]; opening a store waits (up to
//! [`PEER_WAIT`]) for the first answer, so the nodes already running know the new one before
//! it serves anything.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use longrun_core::{Change, Operation, Status, StoreError};
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, interval};
use uuid::Uuid;

use crate::row::db;

/// How often a node says it is still there.
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(20);
/// How long after the last word from another node changes are still sent to it.
pub(crate) const PEER_TTL: Duration = Duration::from_secs(60);
/// Longest wait, when a store opens, for the nodes already running to answer its `hello`.
pub(crate) const PEER_WAIT: Duration = Duration::from_millis(200);

/// The presence line asking the other nodes to answer.
const HELLO: &str = "hello";
/// The presence line of a node answering, or saying it is still there.
const HERE: &str = "here";

/// What this node knows of the others on its channel.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    /// When another node was last heard from.
    heard: Mutex<Option<Instant>>,
    /// Wakes whoever waits for another node to be heard from.
    answered: Notify,
    /// Asks the announcer to say `here` (another node said `hello`) or, after the listener
    /// reconnected, `hello` (it may have been forgotten meanwhile).
    say: Notify,
    /// What to say when `say` is notified: `hello` rather than `here`.
    greet: AtomicBool,
}

impl Peers {
    /// Whether another node was heard from within [`PEER_TTL`].
    pub(crate) fn any(&self) -> bool {
        self.heard
            .lock()
            .expect("peers lock")
            .is_some_and(|at| at.elapsed() < PEER_TTL)
    }

    fn heard_from_another(&self) {
        *self.heard.lock().expect("peers lock") = Some(Instant::now());
        self.answered.notify_waiters();
    }

    fn ask_to_say(&self, hello: bool) {
        if hello {
            self.greet.store(true, Ordering::Relaxed);
        }
        self.say.notify_one();
    }
}

/// The background task that forwards notifications; stopped when dropped.
#[derive(Debug)]
pub(crate) struct Listener(JoinHandle<()>);

impl Listener {
    /// Listens on `channel` (the listening is in place when this returns), forwards every
    /// change sent by a node other than `node` to `changes`, and keeps `peers` up to date.
    pub(crate) async fn start(
        pool: &PgPool,
        channel: String,
        node: Uuid,
        changes: broadcast::Sender<Change>,
        peers: Arc<Peers>,
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
                        peers.heard_from_another();
                        let mut lines = lines.peekable();
                        match lines.peek() {
                            Some(&HELLO) => {
                                peers.ask_to_say(false);
                                continue;
                            }
                            Some(&HERE) => continue,
                            _ => {}
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
                        peers.ask_to_say(true);
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

/// Sends committed changes: to this node's subscribers at once and, while there are other
/// nodes (see [`Peers`]), to them by `pg_notify` from a background task that sends whatever
/// queued meanwhile in one round trip. The same task sends this node's presence messages.
#[derive(Debug)]
pub(crate) struct Announcer {
    local: broadcast::Sender<Change>,
    remote: mpsc::UnboundedSender<Change>,
    peers: Arc<Peers>,
    notifier: Notifier,
    task: JoinHandle<()>,
}

/// Sends notifications on the channel as this node.
#[derive(Debug, Clone)]
struct Notifier {
    pool: PgPool,
    channel: String,
    node: Uuid,
}

impl Notifier {
    async fn send(&self, payloads: Vec<String>) {
        let sent = sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
            .bind(&self.channel)
            .bind(payloads)
            .execute(&self.pool)
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "could not notify the other nodes");
        }
    }

    async fn say(&self, presence: &str) {
        self.send(vec![format!("{}\n{presence}", self.node)]).await;
    }
}

impl Announcer {
    /// Announces on `channel` of `pool` as node `node`, locally on `local`, and to the other
    /// nodes while `peers` knows of any.
    pub(crate) fn start(
        pool: PgPool,
        channel: String,
        node: Uuid,
        local: broadcast::Sender<Change>,
        peers: Arc<Peers>,
    ) -> Self {
        let (remote, mut queued) = mpsc::unbounded_channel();
        let notifier = Notifier {
            pool,
            channel,
            node,
        };
        let task = tokio::spawn({
            let (notifier, peers) = (notifier.clone(), peers.clone());
            async move {
                let mut keepalive = interval(KEEPALIVE);
                keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
                keepalive.tick().await;
                let mut batch = Vec::new();
                loop {
                    tokio::select! {
                        received = queued.recv_many(&mut batch, usize::MAX) => {
                            if received == 0 {
                                break;
                            }
                            notifier.send(payloads(node, batch.drain(..))).await;
                        }
                        () = peers.say.notified() => {
                            let hello = peers.greet.swap(false, Ordering::Relaxed);
                            notifier.say(if hello { HELLO } else { HERE }).await;
                        }
                        _ = keepalive.tick() => notifier.say(HERE).await,
                    }
                }
            }
        });
        Self {
            local,
            remote,
            peers,
            notifier,
            task,
        }
    }

    /// Says `hello` to the nodes already on the channel and waits (up to [`PEER_WAIT`]) for
    /// the first to answer: once one did, changes made through it reach this node.
    pub(crate) async fn introduce(&self) {
        let answered = self.peers.answered.notified();
        tokio::pin!(answered);
        answered.as_mut().enable();
        self.notifier.say(HELLO).await;
        let _ = tokio::time::timeout(PEER_WAIT, answered).await;
    }

    /// Announces `changes`, which have been committed.
    pub(crate) fn announce(&self, changes: impl IntoIterator<Item = Change>) {
        let remote = self.peers.any();
        for change in changes {
            let _ = self.local.send(change);
            if remote {
                let _ = self.remote.send(change);
            }
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
