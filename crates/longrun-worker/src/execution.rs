//! One attempt of one operation: the handler in its own task, the heartbeat loop beside it,
//! then the report (complete, fail or release), fenced by the lease.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use longrun_core::wire::{CompleteRequest, FailRequest, HeartbeatRequest, LeaseGrant};
use time::OffsetDateTime;
use tokio::task::JoinError;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::backoff::Backoff;
use crate::worker::Slot;
use crate::{
    Backend, BackendError, Handler, TaskContext, TaskError, TaskInput, TaskOutput, WorkerOptions,
};

/// How soon a failed heartbeat is tried again (at most; never later than the usual interval).
const HEARTBEAT_RETRY: Duration = Duration::from_secs(2);

/// A leased operation and what is needed to run it.
pub(crate) struct Execution {
    backend: Arc<dyn Backend>,
    options: Arc<WorkerOptions>,
    /// The handler's view of the attempt; it owns the operation as claimed.
    ctx: TaskContext,
    /// Cancels the handler: a child of `stop`, also cancelled on request or a lost lease.
    cancel: CancellationToken,
    lease_expires_at: OffsetDateTime,
    handler: Option<Arc<dyn Handler>>,
    /// The handler's place among the worker's `concurrency`, given back when it ends.
    slot: Option<Slot>,
    /// Cancelled when the worker's shutdown grace is over.
    stop: CancellationToken,
}

/// How the handler's task ended.
enum Ending {
    Returned(Result<TaskOutput, TaskError>),
    Panicked(String),
    /// Aborted after ignoring cancellation for the cancel grace.
    Aborted,
}

/// What the heartbeats have learned about the lease.
struct LeaseState {
    expires_at: OffsetDateTime,
    cancel_requested: bool,
    lost: bool,
}

/// Where the handler is with respect to cancellation.
#[derive(Clone, Copy)]
enum Phase {
    Running,
    /// Cancelled; aborted if still running at this instant.
    Cancelling(Instant),
    Aborted,
}

impl Execution {
    /// The attempt to run `grant` with `handler` (none: the task name has no handler), its
    /// handler in `slot`; `stop` is cancelled when the worker's shutdown grace is over.
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        options: Arc<WorkerOptions>,
        grant: LeaseGrant,
        handler: Option<Arc<dyn Handler>>,
        slot: Slot,
        stop: &CancellationToken,
    ) -> Self {
        let cancel = stop.child_token();
        let lease_expires_at = grant.lease_expires_at;
        let ctx = TaskContext::new(grant, backend.clone(), cancel.clone());
        Self {
            backend,
            options,
            ctx,
            cancel,
            lease_expires_at,
            handler,
            slot: Some(slot),
            stop: stop.clone(),
        }
    }

    /// Runs the attempt to its end and reports it.
    pub(crate) async fn run(self) {
        let ctx = &self.ctx;
        let span = info_span!(
            "operation",
            id = %ctx.id(),
            name = %ctx.name(),
            execution = %ctx.execution_id()
        );
        self.run_attempt().instrument(span).await
    }

    async fn run_attempt(mut self) {
        let mut lease = LeaseState {
            expires_at: self.lease_expires_at,
            cancel_requested: false,
            lost: false,
        };
        let Some(handler) = self.handler.clone() else {
            let error = TaskError::fatal(
                "UnknownTask",
                format!("no handler for `{}`", self.ctx.name()),
            );
            return self.report_failure(&lease, error).await;
        };
        info!(retries = self.ctx.retries(), "started");
        let input = TaskInput::of(self.ctx.operation());
        let handler_ctx = self.ctx.clone();
        // Its own task, so a panic is caught; aborted should this execution be dropped.
        let mut task = AbortOnDropHandle::new(tokio::spawn(async move {
            handler.run(handler_ctx, input).await
        }));

        let every = self.options.heartbeat_every();
        let mut last_beat = Instant::now();
        let mut next_beat = last_beat + every;
        let mut phase = Phase::Running;
        let ending = loop {
            let abort_at = match phase {
                Phase::Cancelling(at) => Some(at),
                _ => None,
            };
            tokio::select! {
                joined = &mut task => break ending_of(joined),
                () = sleep_until(next_beat), if !lease.lost => {
                    let ok = self.heartbeat(&mut lease).await;
                    last_beat = Instant::now();
                    next_beat = last_beat + if ok { every } else { every.min(HEARTBEAT_RETRY) };
                    if lease.cancel_requested || lease.lost {
                        self.cancel.cancel();
                    }
                }
                () = self.ctx.progress_changed() => {
                    next_beat = next_beat.min(last_beat + self.options.progress_interval);
                }
                () = self.cancel.cancelled(), if matches!(phase, Phase::Running) => {
                    phase = Phase::Cancelling(Instant::now() + self.options.cancel_grace);
                }
                () = sleep_until(abort_at.unwrap_or_else(Instant::now)), if abort_at.is_some() => {
                    warn!(grace = ?self.options.cancel_grace, "handler ignored cancellation; aborting it");
                    task.abort();
                    phase = Phase::Aborted;
                }
            }
        };

        // The handler is done: its slot goes to the next one while this reports.
        self.slot.take();
        if lease.lost {
            return warn!("lease lost; the outcome of this attempt is dropped");
        }
        let stopping = self.stop.is_cancelled() && !lease.cancel_requested;
        match ending {
            Ending::Returned(Ok(output)) => self.report_success(&lease, output).await,
            Ending::Returned(Err(_)) | Ending::Aborted if stopping => {
                self.report_release(&lease).await
            }
            Ending::Returned(Err(error)) => self.report_failure(&lease, error).await,
            Ending::Aborted => self.report_failure(&lease, TaskError::cancelled()).await,
            Ending::Panicked(message) => {
                self.report_failure(&lease, TaskError::retryable("Panic", message))
                    .await
            }
        }
    }

    /// Sends one heartbeat with the pending progress; `false` when it did not get through.
    async fn heartbeat(&self, lease: &mut LeaseState) -> bool {
        let progress = self.ctx.take_progress();
        let request = HeartbeatRequest {
            lease_id: self.ctx.execution_id(),
            progress_pct: progress.as_ref().and_then(|p| p.pct),
            status_detail: progress.as_ref().and_then(|p| p.detail.clone()),
            lease_secs: Some(self.options.lease_secs),
        };
        let outcome = timeout(
            self.options.heartbeat_every(),
            self.backend.heartbeat(self.ctx.id(), &request),
        );
        let failure = match outcome.await {
            Ok(Ok(response)) => {
                lease.expires_at = response.lease_expires_at;
                if response.cancel_requested && !lease.cancel_requested {
                    info!("cancellation requested");
                    lease.cancel_requested = true;
                }
                return true;
            }
            Ok(Err(BackendError::LeaseLost(msg))) => {
                warn!("heartbeat refused, lease lost: {msg}");
                lease.lost = true;
                return false;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "heartbeat timed out".to_owned(),
        };
        warn!("heartbeat failed: {failure}");
        if let Some(progress) = progress {
            self.ctx.restore_progress(progress);
        }
        false
    }

    async fn report_success(&self, lease: &LeaseState, output: TaskOutput) {
        info!("succeeded");
        let request = CompleteRequest {
            lease_id: self.ctx.execution_id(),
            result: output.result,
            result_url: output.result_url,
            resources: output.resources,
        };
        self.report("completion", lease, || {
            self.backend.complete(self.ctx.id(), &request)
        })
        .await
    }

    async fn report_failure(&self, lease: &LeaseState, error: TaskError) {
        info!(retryable = error.is_retryable(), "failed: {error}");
        let request = FailRequest {
            lease_id: self.ctx.execution_id(),
            error: error.to_reported(),
            retryable: error.is_retryable(),
        };
        self.report("failure", lease, || {
            self.backend.fail(self.ctx.id(), &request)
        })
        .await
    }

    async fn report_release(&self, lease: &LeaseState) {
        info!("stopped at shutdown; releasing it");
        let (id, lease_id) = (self.ctx.id(), self.ctx.execution_id());
        self.report("release", lease, || self.backend.release(id, lease_id))
            .await
    }

    /// Makes a report, retrying while the backend is unavailable and the lease may still be
    /// current. A lost lease drops the report: a newer attempt owns the operation.
    async fn report<F, Fut>(&self, what: &str, lease: &LeaseState, call: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), BackendError>>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match call().await {
                Ok(()) => return debug!("{what} reported"),
                Err(BackendError::LeaseLost(msg)) => {
                    return warn!("lease lost; {what} dropped: {msg}");
                }
                Err(BackendError::Rejected(msg)) => return error!("{what} refused: {msg}"),
                Err(BackendError::Unavailable(msg))
                    if OffsetDateTime::now_utc() >= lease.expires_at =>
                {
                    return error!(
                        "{what} not reported before the lease ran out ({msg}); the server will retry the operation"
                    );
                }
                Err(BackendError::Unavailable(msg)) => {
                    warn!("{what} not reported yet: {msg}");
                    sleep(backoff.next_delay()).await;
                }
            }
        }
    }
}

fn ending_of(joined: Result<Result<TaskOutput, TaskError>, JoinError>) -> Ending {
    match joined {
        Ok(returned) => Ending::Returned(returned),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "handler panicked".to_owned());
            Ending::Panicked(message)
        }
        Err(_) => Ending::Aborted,
    }
}
