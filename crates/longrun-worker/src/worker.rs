//! [`Worker`]: claims operations, runs their handlers (at most `concurrency` at once) and
//! shuts down gracefully.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use longrun_core::wire::{ClaimRequest, LeaseGrant};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::execution::Execution;
use crate::{Backend, Registry};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The worker's name, recorded on the operations it runs.
    pub name: String,
    /// How many handlers may run at once (default 8).
    pub concurrency: usize,
    /// How many operations the worker may hold beyond `concurrency`, claimed ahead and started
    /// as slots free up (default 0). Saves a claim round trip per batch for short tasks; a held
    /// operation's lease runs while it waits (keep `prefetch` small next to what the worker
    /// finishes within a lease), and held operations are released at shutdown.
    pub prefetch: usize,
    /// Lease length, seconds (default 30): an operation whose worker stops heartbeating for
    /// this long is retried elsewhere.
    pub lease_secs: u32,
    /// Time between heartbeats; `None` is a third of the lease.
    pub heartbeat_interval: Option<Duration>,
    /// Progress changes trigger an early heartbeat, at most once per this interval.
    pub progress_interval: Duration,
    /// How long a claim waits for work when none is ready (a server refuses more than its
    /// longest wait, 60 s by default).
    pub claim_wait_secs: u32,
    /// At shutdown, how long running handlers may go on before they are cancelled.
    pub shutdown_grace: Duration,
    /// How long a cancelled handler may take to stop before it is aborted.
    pub cancel_grace: Duration,
    /// Only these task names (empty: every name in the registry). Names without a handler are
    /// ignored.
    pub names: Vec<String>,
    /// Only these queues (empty: any).
    pub queues: Vec<String>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Self {
            name: format!("worker-{}-{}", std::process::id(), &suffix[..8]),
            concurrency: 8,
            prefetch: 0,
            lease_secs: 30,
            heartbeat_interval: None,
            progress_interval: Duration::from_millis(500),
            claim_wait_secs: 20,
            shutdown_grace: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(5),
            names: Vec::new(),
            queues: Vec::new(),
        }
    }
}

impl WorkerOptions {
    /// The fewest free places (slots plus prefetch) worth a claim while the worker has work:
    /// a quarter of them. With nothing running or held the worker claims at once (and
    /// long-polls).
    pub fn claim_batch(&self) -> usize {
        ((self.concurrency + self.prefetch) / 4).max(1)
    }

    /// Most attempts in flight: handlers running plus attempts whose handler has returned
    /// and whose outcome is still being reported, four times the places (slots plus prefetch)
    /// in all. Reports that go to the store together share its transactions, so the more may
    /// wait for one, the fewer transactions a burst of short tasks costs.
    pub fn max_in_flight(&self) -> usize {
        4 * (self.concurrency + self.prefetch)
    }

    /// The effective heartbeat interval.
    pub fn heartbeat_every(&self) -> Duration {
        self.heartbeat_interval
            .unwrap_or_else(|| Duration::from_secs(self.lease_secs.into()) / 3)
            .max(Duration::from_millis(10))
    }
}

/// What a claim answers.
type Claimed = Result<Vec<LeaseGrant>, crate::BackendError>;

/// Runs handlers for claimed operations until told to shut down.
pub struct Worker {
    backend: Arc<dyn Backend>,
    registry: Registry,
    options: Arc<WorkerOptions>,
    names: Vec<String>,
}

impl Worker {
    /// The attempt to run `grant`, its handler in `slot`.
    fn execution(&self, grant: LeaseGrant, slot: Slot, stop: &CancellationToken) -> Execution {
        let handler = self.registry.get(&grant.operation.name);
        Execution::new(
            self.backend.clone(),
            self.options.clone(),
            grant,
            handler,
            slot,
            stop,
        )
    }

    /// A worker taking operations from `backend` for the handlers in `registry`.
    ///
    /// # Panics
    /// When no handler is left to run (an empty registry, or `options.names` naming none of
    /// its handlers): such a worker would claim operations of every name.
    pub fn new(backend: Arc<dyn Backend>, registry: Registry, options: WorkerOptions) -> Self {
        let names = if options.names.is_empty() {
            registry.names()
        } else {
            let (known, unknown): (Vec<_>, Vec<_>) = options
                .names
                .iter()
                .cloned()
                .partition(|name| registry.get(name).is_some());
            if !unknown.is_empty() {
                warn!(?unknown, "ignoring task names that have no handler");
            }
            known
        };
        assert!(
            !names.is_empty(),
            "a worker needs at least one handler to run"
        );
        let options = Arc::new(WorkerOptions {
            concurrency: options.concurrency.max(1),
            ..options
        });
        Self {
            backend,
            registry,
            options,
            names,
        }
    }

    /// Claims and runs operations until `shutdown` resolves; then stops claiming, releases held
    /// (prefetched) operations, lets running handlers finish within the shutdown grace,
    /// cancels the rest and releases their operations back to the queue. Backend errors are
    /// logged and retried with backoff.
    ///
    /// The next claim is sent while handlers run, as soon as a quarter of the places (slots
    /// plus prefetch) are free, so short tasks do not wait for a claim round trip. A handler's
    /// slot is free as soon as it returns: its outcome is reported while the next handler runs
    /// (at most `4 × (concurrency + prefetch)` attempts in flight, reporting ones included).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let options = self.options.clone();
        let stop = CancellationToken::new();
        let slots = Slots::default();
        // Attempts: handlers running, and attempts whose handler has ended reporting.
        let mut running = JoinSet::new();
        let mut held: VecDeque<LeaseGrant> = VecDeque::new();
        let mut claim: Option<Pin<Box<dyn Future<Output = Claimed> + Send>>> = None;
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        let mut delay = Duration::ZERO;
        tokio::pin!(shutdown);
        info!(worker = %options.name, names = ?self.names, concurrency = options.concurrency, prefetch = options.prefetch, "worker started");
        loop {
            while running.try_join_next().is_some() {}
            // At most `concurrency` handlers, and `max_in_flight` attempts with those reporting.
            while slots.taken() < options.concurrency
                && running.len() < options.max_in_flight()
                && let Some(grant) = held.pop_front()
            {
                running.spawn(self.execution(grant, slots.take(), &stop).run());
            }
            let idle = slots.taken() == 0 && held.is_empty();
            // Places a claimed operation could start in soon: free slots, fewer while reports
            // pile up (an attempt starts only while fewer than `max_in_flight` are), plus the
            // prefetch, less what is held already.
            let startable = (options.concurrency - slots.taken())
                .min(options.max_in_flight().saturating_sub(running.len()));
            let free = (startable + options.prefetch).saturating_sub(held.len());
            // Claim in batches: one claim (one transaction) per freed slot would cost more than
            // short handlers themselves.
            if claim.is_none() && free > 0 && (idle || free >= options.claim_batch()) {
                let request = ClaimRequest {
                    worker: options.name.clone(),
                    names: self.names.clone(),
                    queues: options.queues.clone(),
                    max: u32::try_from(free).unwrap_or(u32::MAX),
                    lease_secs: options.lease_secs,
                    // Long-polls even while handlers run: an empty queue then costs one
                    // waiting request, not a claim per freed slot.
                    wait_secs: options.claim_wait_secs,
                };
                let backend = self.backend.clone();
                claim = Some(Box::pin(async move {
                    // Not even a zero sleep: tokio's timer fires it at its next tick (up to
                    // a millisecond later), a wait in front of every claim.
                    if !delay.is_zero() {
                        sleep(delay).await;
                    }
                    backend.claim(&request).await
                }));
            }
            // A claim in flight at shutdown is abandoned: should it have been granted already,
            // its lease runs out and the server retries the operation.
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = running.join_next(), if !running.is_empty() => {}
                () = slots.freed.notified() => {}
                claimed = async { claim.as_mut().expect("checked").await }, if claim.is_some() => {
                    claim = None;
                    match claimed {
                        Ok(grants) => {
                            backoff.reset();
                            delay = Duration::ZERO;
                            held.extend(grants);
                        }
                        Err(e) => {
                            delay = backoff.next_delay();
                            warn!(retry_in = ?delay, "claim failed: {e}");
                        }
                    }
                }
            }
        }

        if !held.is_empty() {
            info!(held = held.len(), "releasing operations claimed ahead");
            for grant in held {
                let id = grant.operation.id;
                if let Err(e) = self.backend.release(id, grant.lease_id).await {
                    warn!(%id, "could not release a held operation (its lease will run out): {e}");
                }
            }
        }
        info!(running = running.len(), grace = ?options.shutdown_grace, "shutting down");
        let deadline = Instant::now() + options.shutdown_grace;
        while !running.is_empty() {
            tokio::select! {
                () = sleep_until(deadline) => break,
                _ = running.join_next() => {}
            }
        }
        if !running.is_empty() {
            info!(
                running = running.len(),
                "grace period over; cancelling the remaining handlers"
            );
            stop.cancel();
            while running.join_next().await.is_some() {}
        }
        info!("worker stopped");
    }
}

/// How many handlers run; [`Slot`]s are taken from it.
#[derive(Default)]
struct Slots {
    taken: Arc<AtomicUsize>,
    /// Told each time a slot is given back.
    freed: Arc<Notify>,
}

impl Slots {
    fn taken(&self) -> usize {
        self.taken.load(Ordering::SeqCst)
    }

    fn take(&self) -> Slot {
        self.taken.fetch_add(1, Ordering::SeqCst);
        Slot {
            taken: self.taken.clone(),
            freed: self.freed.clone(),
        }
    }
}

/// One handler's place; given back when dropped.
pub(crate) struct Slot {
    taken: Arc<AtomicUsize>,
    freed: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.taken.fetch_sub(1, Ordering::SeqCst);
        self.freed.notify_one();
    }
}
