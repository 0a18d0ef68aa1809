//! [`Worker`]: claims operations, runs their handlers (at most `concurrency` at once) and
//! shuts down gracefully.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use longrun_core::wire::ClaimRequest;
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
    /// How many handlers may run at once.
    pub concurrency: usize,
    /// Lease length, seconds: an operation whose worker stops heartbeating for this long is
    /// retried elsewhere.
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
            concurrency: 4,
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
    /// The fewest free slots worth a claim while handlers are running: a quarter of the
    /// concurrency. With every slot free the worker claims at once (and long-polls).
    pub fn claim_batch(&self) -> usize {
        (self.concurrency / 4).max(1)
    }

    /// The effective heartbeat interval.
    pub fn heartbeat_every(&self) -> Duration {
        self.heartbeat_interval
            .unwrap_or_else(|| Duration::from_secs(self.lease_secs.into()) / 3)
            .max(Duration::from_millis(10))
    }
}

/// Runs handlers for claimed operations until told to shut down.
pub struct Worker {
    backend: Arc<dyn Backend>,
    registry: Registry,
    options: Arc<WorkerOptions>,
    names: Vec<String>,
}

impl Worker {
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

    /// Claims and runs operations until `shutdown` resolves; then stops claiming, lets running
    /// handlers finish within the shutdown grace, cancels the rest and releases their
    /// operations back to the queue. Backend errors are logged and retried with backoff.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let options = self.options.clone();
        let stop = CancellationToken::new();
        let mut running = JoinSet::new();
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        tokio::pin!(shutdown);
        info!(worker = %options.name, names = ?self.names, concurrency = options.concurrency, "worker started");
        loop {
            while running.try_join_next().is_some() {}
            let free = options.concurrency - running.len();
            // Claim in batches: one claim (one transaction) per freed slot would cost more than
            // short handlers themselves.
            if free == 0 || (free < options.claim_batch() && !running.is_empty()) {
                tokio::select! {
                    () = &mut shutdown => break,
                    _ = running.join_next() => continue,
                }
            }
            let request = ClaimRequest {
                worker: options.name.clone(),
                names: self.names.clone(),
                queues: options.queues.clone(),
                max: u32::try_from(free).unwrap_or(u32::MAX),
                lease_secs: options.lease_secs,
                wait_secs: options.claim_wait_secs,
            };
            // A claim in flight at shutdown is abandoned: should it have been granted already,
            // its lease runs out and the server retries the operation.
            let claimed = tokio::select! {
                () = &mut shutdown => break,
                claimed = self.backend.claim(&request) => claimed,
            };
            match claimed {
                Ok(grants) => {
                    backoff.reset();
                    for grant in grants {
                        let execution = Execution {
                            backend: self.backend.clone(),
                            options: options.clone(),
                            handler: self.registry.get(&grant.operation.name),
                            grant,
                            stop: stop.clone(),
                        };
                        running.spawn(execution.run());
                    }
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    warn!(retry_in = ?delay, "claim failed: {e}");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = sleep(delay) => {}
                    }
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
