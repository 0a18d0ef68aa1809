//! The worker runtime end to end: real handlers and shell commands, a real SQLite store in a
//! temporary directory, in-process ([`LocalBackend`]) and over HTTP ([`HttpBackend`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use longrun_core::waiting::wait_for_change;
use longrun_core::wire::{
    ClaimRequest, CompleteRequest, FailRequest, HeartbeatRequest, HeartbeatResponse, LeaseGrant,
    SubmitRequest,
};
use longrun_core::{CancelOutcome, NewOperation, Operation, Owner, RetryPolicy, Status, Store};
use longrun_sqlite::SqliteStore;
use longrun_worker::{
    Backend, BackendError, CommandHandler, HttpBackend, LocalBackend, Registry, TaskContext,
    TaskError, TaskInput, Worker, WorkerOptions,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use uuid::Uuid;

/// A store in a temporary directory and a local backend on it.
struct Harness {
    store: Arc<SqliteStore>,
    backend: Arc<LocalBackend>,
    dir: TempDir,
}

impl Harness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("longrun.db").display());
        let store = Arc::new(SqliteStore::open_default(&url).await.unwrap());
        let owner = Owner {
            customer: 7,
            user: 8,
            user_name: "worker-tests".into(),
        };
        let backend = Arc::new(LocalBackend::new(store.clone(), fast_retries(3), owner));
        Self {
            store,
            backend,
            dir,
        }
    }

    async fn submit(&self, name: &str, kwargs: Value, max_retries: u32) -> Operation {
        let mut new = NewOperation::named(name);
        new.kwargs = kwargs;
        new.retry_policy = fast_retries(max_retries);
        self.store.submit(new).await.unwrap().operation
    }

    fn start(&self, registry: Registry, options: WorkerOptions) -> RunningWorker {
        RunningWorker::start(self.backend.clone(), registry, options)
    }

    /// Waits (on store changes, up to 20 s) until `id` satisfies `done`.
    async fn wait_for(&self, id: Uuid, what: &str, done: impl Fn(&Operation) -> bool) -> Operation {
        wait_until(self.store.as_ref(), id, what, done).await
    }
}

async fn wait_until(
    store: &dyn Store,
    id: Uuid,
    what: &str,
    done: impl Fn(&Operation) -> bool,
) -> Operation {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut op = store.get(id).await.unwrap().expect("operation exists");
    while !done(&op) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {op:#?}"
        );
        op = wait_for_change(store, id, op.version, Duration::from_millis(500))
            .await
            .unwrap()
            .expect("operation exists");
    }
    op
}

/// Retries after 50–100 ms, so retry tests are quick.
fn fast_retries(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        backoff_base_secs: 0.05,
        backoff_cap_secs: 0.1,
    }
}

/// Short intervals, so the tests are quick.
fn options() -> WorkerOptions {
    WorkerOptions {
        concurrency: 2,
        lease_secs: 10,
        heartbeat_interval: Some(Duration::from_millis(200)),
        progress_interval: Duration::from_millis(50),
        claim_wait_secs: 1,
        shutdown_grace: Duration::from_secs(5),
        cancel_grace: Duration::from_secs(5),
        ..WorkerOptions::default()
    }
}

/// [`options`] with one handler at a time.
fn one_at_a_time() -> WorkerOptions {
    WorkerOptions {
        concurrency: 1,
        ..options()
    }
}

/// A worker running in the background until [`RunningWorker::shutdown`].
struct RunningWorker {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningWorker {
    fn start(
        backend: Arc<dyn longrun_worker::Backend>,
        registry: Registry,
        options: WorkerOptions,
    ) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let worker = Worker::new(backend, registry, options);
        let task = tokio::spawn(worker.run(async {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    /// Signals shutdown and waits for `run` to return.
    async fn shutdown(self) {
        let _ = self.stop.send(());
        timeout(Duration::from_secs(30), self.task)
            .await
            .expect("worker stops")
            .expect("worker does not panic");
    }
}

fn status_is(status: Status) -> impl Fn(&Operation) -> bool {
    move |op| op.status == status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_result_is_stored_with_the_operation() {
    #[derive(Deserialize)]
    struct Args {
        x: i64,
    }
    let h = Harness::new().await;
    let registry = Registry::new().handler("math.double", |ctx: TaskContext, input: TaskInput| async move {
        let args: Args = input.kwargs_as()?;
        Ok(json!({"doubled": args.x * 2, "retries": ctx.retries(), "execution": ctx.execution_id()}))
    });
    let worker = h.start(registry, options());
    let op = h.submit("math.double", json!({"x": 21}), 3).await;

    let done = h
        .wait_for(op.id, "success", status_is(Status::Succeeded))
        .await;
    assert_eq!(done.result.as_ref().unwrap()["doubled"], 42);
    assert_eq!(done.result.as_ref().unwrap()["retries"], 0);
    assert_eq!(
        done.result.as_ref().unwrap()["execution"],
        json!(done.execution_id.unwrap())
    );
    assert_eq!(done.progress_pct, Some(100.0));
    assert!(done.worker.as_deref().unwrap().starts_with("worker-"));
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn input_that_does_not_fit_the_handler_fails_at_once() {
    let h = Harness::new().await;
    let registry = Registry::new().handler("typed", |_ctx, input: TaskInput| async move {
        let (n,): (u32,) = input.args_as()?;
        Ok(n)
    });
    let worker = h.start(registry, options());
    let op = h.submit("typed", json!({}), 3).await;

    let done = h
        .wait_for(op.id, "failure", status_is(Status::Failed))
        .await;
    let error = done.error.unwrap();
    assert_eq!(
        (error.error_type.as_str(), error.code.as_str()),
        ("ValueError", "invalid_input")
    );
    assert!(
        error.message.starts_with("invalid args"),
        "{}",
        error.message
    );
    assert_eq!(done.retries, 0);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retryable_failure_is_retried_until_it_succeeds() {
    let h = Harness::new().await;
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = attempts.clone();
    let registry = Registry::new().handler("flaky", move |ctx: TaskContext, _input| {
        let attempts = counted.clone();
        async move {
            attempts.fetch_add(1, Ordering::SeqCst);
            if ctx.retries() < 2 {
                return Err(TaskError::retryable(
                    "Timeout",
                    format!("attempt {} timed out", ctx.retries()),
                ));
            }
            Ok("third time lucky")
        }
    });
    let worker = h.start(registry, options());
    let op = h.submit("flaky", json!({}), 3).await;

    let done = h
        .wait_for(op.id, "success", status_is(Status::Succeeded))
        .await;
    assert_eq!(done.retries, 2);
    assert_eq!(done.result, Some(json!("third time lucky")));
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fatal_failure_is_not_retried() {
    let h = Harness::new().await;
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = attempts.clone();
    let registry = Registry::new().handler("strict", move |_ctx, _input| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            Err::<(), _>(
                TaskError::fatal("ValueError", "page size must be positive")
                    .with_code("bad_page_size"),
            )
        }
    });
    let worker = h.start(registry, options());
    let op = h.submit("strict", json!({}), 5).await;

    let done = h
        .wait_for(op.id, "failure", status_is(Status::Failed))
        .await;
    let error = done.error.unwrap();
    assert_eq!(error.error_type, "ValueError");
    assert_eq!(error.code, "bad_page_size");
    assert_eq!(error.message, "page size must be positive");
    assert_eq!(done.retries, 0);
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_handler_is_a_retryable_failure_and_the_worker_goes_on() {
    let h = Harness::new().await;
    let registry = Registry::new()
        .handler("explodes", |_ctx, _input| async {
            if true {
                panic!("boom at page 3")
            } else {
                Ok(())
            }
        })
        .handler("fine", |_ctx, _input| async { Ok("ok") });
    let worker = h.start(registry, options());
    let op = h.submit("explodes", json!({}), 1).await;

    let done = h
        .wait_for(op.id, "failure", status_is(Status::Failed))
        .await;
    assert_eq!(done.retries, 1, "a panic is retryable");
    let error = done.error.unwrap();
    assert_eq!(error.error_type, "Panic");
    assert_eq!(error.message, "boom at page 3");

    let after = h.submit("fine", json!({}), 0).await;
    h.wait_for(
        after.id,
        "success after a panic",
        status_is(Status::Succeeded),
    )
    .await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progress_is_visible_in_the_store_while_the_handler_runs() {
    let h = Harness::new().await;
    let release = Arc::new(Notify::new());
    let waiting = release.clone();
    let registry = Registry::new().handler("render", move |ctx: TaskContext, _input| {
        let release = waiting.clone();
        async move {
            for page in 1..=3 {
                ctx.progress(f64::from(page) * 10.0, format!("page {page} of 10"));
            }
            release.notified().await;
            Ok(())
        }
    });
    // Heartbeats every 60 s: progress must go out early, not with the next regular heartbeat.
    let worker = h.start(
        registry,
        WorkerOptions {
            lease_secs: 120,
            heartbeat_interval: Some(Duration::from_secs(60)),
            ..options()
        },
    );
    let op = h.submit("render", json!({}), 0).await;

    let running = h
        .wait_for(op.id, "progress 30", |op| op.progress_pct == Some(30.0))
        .await;
    assert_eq!(running.status, Status::Running);
    assert_eq!(running.status_detail.as_deref(), Some("page 3 of 10"));
    release.notify_one();
    let done = h
        .wait_for(op.id, "success", status_is(Status::Succeeded))
        .await;
    assert_eq!(done.result, None, "`()` is no result");
    worker.shutdown().await;
}

/// A handler that returns [`TaskError::cancelled`] once cancelled, recording that it saw it.
fn cooperative(saw_cancel: Arc<AtomicBool>) -> Registry {
    Registry::new().handler("long", move |ctx: TaskContext, _input| {
        let saw_cancel = saw_cancel.clone();
        async move {
            ctx.progress(5.0, "started");
            ctx.cancelled().await;
            saw_cancel.store(ctx.is_cancelled(), Ordering::SeqCst);
            Err::<(), _>(TaskError::cancelled())
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_request_reaches_the_handler_and_the_operation_ends_cancelled() {
    let h = Harness::new().await;
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let worker = h.start(cooperative(saw_cancel.clone()), options());
    let op = h.submit("long", json!({}), 3).await;

    h.wait_for(op.id, "the handler to start", |op| {
        op.progress_pct == Some(5.0)
    })
    .await;
    let (outcome, _) = h.store.cancel(op.id).await.unwrap();
    assert_eq!(outcome, CancelOutcome::Requested);
    let done = h
        .wait_for(op.id, "cancellation", status_is(Status::Cancelled))
        .await;
    assert!(saw_cancel.load(Ordering::SeqCst));
    assert_eq!(done.retries, 0);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_ignoring_cancellation_is_aborted_after_the_cancel_grace() {
    let h = Harness::new().await;
    let registry = Registry::new().handler("stubborn", |ctx: TaskContext, _input| async move {
        ctx.progress(1.0, "ignoring everyone");
        sleep(Duration::from_secs(3600)).await;
        Ok(())
    });
    let started = Instant::now();
    let worker = h.start(
        registry,
        WorkerOptions {
            cancel_grace: Duration::from_millis(300),
            ..options()
        },
    );
    let op = h.submit("stubborn", json!({}), 3).await;

    h.wait_for(op.id, "the handler to start", |op| {
        op.progress_pct == Some(1.0)
    })
    .await;
    h.store.cancel(op.id).await.unwrap();
    h.wait_for(op.id, "cancellation", status_is(Status::Cancelled))
        .await;
    assert!(started.elapsed() < Duration::from_secs(20));
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_more_handlers_run_at_once_than_the_concurrency_limit() {
    let h = Harness::new().await;
    let current = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (c, p) = (current.clone(), peak.clone());
    let registry = Registry::new().handler("busy", move |_ctx, _input| {
        let (current, peak) = (c.clone(), p.clone());
        async move {
            let now = current.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            sleep(Duration::from_millis(150)).await;
            current.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let mut ops = Vec::new();
    for _ in 0..10 {
        ops.push(h.submit("busy", json!({}), 0).await);
    }
    let worker = h.start(
        registry,
        WorkerOptions {
            concurrency: 3,
            ..options()
        },
    );
    for op in &ops {
        h.wait_for(op.id, "success", status_is(Status::Succeeded))
            .await;
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "ten ready operations should fill exactly three slots"
    );
    worker.shutdown().await;
}

/// A backend whose completions take `delay` to get through.
/// Completions wait until the gate opens (its write lock is dropped).
struct SlowCompletions {
    inner: Arc<LocalBackend>,
    gate: Arc<tokio::sync::RwLock<()>>,
}

impl SlowCompletions {
    /// A backend whose completions wait, and the guard that holds them until dropped.
    async fn closed(
        inner: Arc<LocalBackend>,
    ) -> (Arc<Self>, tokio::sync::OwnedRwLockWriteGuard<()>) {
        let gate = Arc::new(tokio::sync::RwLock::new(()));
        let closed = gate.clone().write_owned().await;
        (Arc::new(Self { inner, gate }), closed)
    }
}

#[async_trait::async_trait]
impl Backend for SlowCompletions {
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<LeaseGrant>, BackendError> {
        self.inner.claim(request).await
    }

    async fn heartbeat(
        &self,
        id: Uuid,
        request: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, BackendError> {
        self.inner.heartbeat(id, request).await
    }

    async fn complete(&self, id: Uuid, request: &CompleteRequest) -> Result<(), BackendError> {
        let _open = self.gate.read().await;
        self.inner.complete(id, request).await
    }

    async fn fail(&self, id: Uuid, request: &FailRequest) -> Result<(), BackendError> {
        self.inner.fail(id, request).await
    }

    async fn release(&self, id: Uuid, lease_id: Uuid) -> Result<(), BackendError> {
        self.inner.release(id, lease_id).await
    }

    async fn submit(&self, request: &SubmitRequest) -> Result<Operation, BackendError> {
        self.inner.submit(request).await
    }
}

/// A backend with `left` operations to hand out, one per claim; reports are taken at once
/// (each completion is sent on `completed`). Once none is left, a claim waits forever, as a
/// long-poll of an empty queue does.
struct OnePerClaim {
    left: AtomicUsize,
    completed: tokio::sync::mpsc::UnboundedSender<Uuid>,
}

/// The lease [`OnePerClaim`] grants and extends.
const ONE_PER_CLAIM_LEASE: time::Duration = time::Duration::seconds(30);

#[async_trait::async_trait]
impl Backend for OnePerClaim {
    async fn claim(&self, _request: &ClaimRequest) -> Result<Vec<LeaseGrant>, BackendError> {
        let taken = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if taken.is_err() {
            std::future::pending::<()>().await;
        }
        let now = time::OffsetDateTime::now_utc();
        let lease = Uuid::now_v7();
        let mut operation = NewOperation::named("quick").into_operation(Uuid::now_v7(), None, now);
        operation
            .start(lease, "test", ONE_PER_CLAIM_LEASE, now)
            .unwrap();
        Ok(vec![LeaseGrant {
            lease_id: lease,
            lease_expires_at: operation.lease_expires_at.expect("started"),
            operation,
        }])
    }

    async fn heartbeat(
        &self,
        _id: Uuid,
        _request: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, BackendError> {
        Ok(HeartbeatResponse {
            cancel_requested: false,
            lease_expires_at: time::OffsetDateTime::now_utc() + ONE_PER_CLAIM_LEASE,
        })
    }

    async fn complete(&self, id: Uuid, _request: &CompleteRequest) -> Result<(), BackendError> {
        let _ = self.completed.send(id);
        Ok(())
    }

    async fn fail(&self, _id: Uuid, _request: &FailRequest) -> Result<(), BackendError> {
        Ok(())
    }

    async fn release(&self, _id: Uuid, _lease_id: Uuid) -> Result<(), BackendError> {
        Ok(())
    }

    async fn submit(&self, _request: &SubmitRequest) -> Result<Operation, BackendError> {
        Err(BackendError::Rejected("no submits here".into()))
    }
}

/// The next claim goes out as soon as a slot is free, without waiting on the timer: on tokio's
/// paused clock, which moves only when every task waits for a timer, twenty one-operation
/// claims whose handlers each take half a millisecond take ten milliseconds. A claim that
/// first slept, even for no time at all, waited for the timer's next millisecond each time.
#[tokio::test(start_paused = true)]
async fn claims_do_not_wait_on_the_timer() {
    const JOBS: u32 = 20;
    const HANDLER_TAKES: Duration = Duration::from_micros(500);
    let (completed, mut completions) = tokio::sync::mpsc::unbounded_channel();
    let backend = Arc::new(OnePerClaim {
        left: AtomicUsize::new(JOBS as usize),
        completed,
    });
    let registry = Registry::new().handler("quick", |_ctx, _input| async {
        tokio::time::advance(HANDLER_TAKES).await;
        Ok(())
    });
    let started = Instant::now();
    let worker = RunningWorker::start(backend, registry, one_at_a_time());
    for _ in 0..JOBS {
        completions.recv().await.expect("the worker runs");
    }
    assert_eq!(started.elapsed(), HANDLER_TAKES * JOBS);
    worker.shutdown().await;
}

/// A handler's slot is free as soon as it returns: the next handler starts while the
/// completion of the first is still on its way to the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_next_handler_starts_while_a_completion_is_being_reported() {
    let h = Harness::new().await;
    let first = h.submit("quick", json!({}), 0).await;
    let second = h.submit("quick", json!({}), 0).await;
    let (seen, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let store = h.store.clone();
    let first_id = first.id;
    let registry = Registry::new().handler("quick", move |ctx, _input| {
        let (seen, store) = (seen.clone(), store.clone());
        async move {
            if ctx.id() != first_id {
                let first = store.get(first_id).await.unwrap().unwrap();
                let _ = seen.send(first.status);
            }
            Ok(())
        }
    });
    let (backend, closed) = SlowCompletions::closed(h.backend.clone()).await;
    let worker = RunningWorker::start(backend, registry, one_at_a_time());
    let status = timeout(Duration::from_secs(20), seen_rx.recv())
        .await
        .expect("the second handler ran")
        .expect("a status");
    assert_eq!(
        status,
        Status::Running,
        "the first completion was not reported yet when the second handler ran"
    );
    drop(closed);
    for op in [&first, &second] {
        h.wait_for(op.id, "success", status_is(Status::Succeeded))
            .await;
    }
    worker.shutdown().await;
}

/// At most `max_in_flight` attempts run or report at once; the next handler waits for one of
/// the reports to finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attempts_still_reporting_are_bounded() {
    let h = Harness::new().await;
    let options = WorkerOptions {
        concurrency: 1,
        prefetch: 2,
        ..options()
    };
    let limit = options.max_in_flight();
    assert_eq!(limit, 12);
    let mut ops = vec![];
    for _ in 0..limit + 2 {
        ops.push(h.submit("quick", json!({}), 0).await);
    }
    let ran = Arc::new(AtomicUsize::new(0));
    let registry = Registry::new().handler("quick", {
        let ran = ran.clone();
        move |_ctx, _input| {
            ran.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        }
    });
    let (backend, closed) = SlowCompletions::closed(h.backend.clone()).await;
    let worker = RunningWorker::start(backend, registry, options);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ran.load(Ordering::SeqCst) < limit {
        assert!(Instant::now() < deadline, "{limit} handlers did not run");
        sleep(Duration::from_millis(20)).await;
    }
    sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ran.load(Ordering::SeqCst),
        limit,
        "no handler starts while {limit} attempts wait for their completion"
    );
    drop(closed);
    for op in &ops {
        h.wait_for(op.id, "success", status_is(Status::Succeeded))
            .await;
    }
    assert_eq!(ran.load(Ordering::SeqCst), limit + 2);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefetch_holds_that_many_more_and_shutdown_gives_them_back() {
    let h = Harness::new().await;
    let mut ops = Vec::new();
    for _ in 0..10 {
        ops.push(h.submit("long", json!({}), 3).await);
    }
    let options = WorkerOptions {
        concurrency: 2,
        prefetch: 3,
        shutdown_grace: Duration::from_millis(200),
        ..options()
    };
    let worker = h.start(cooperative(Arc::new(AtomicBool::new(false))), options);
    let store = h.store.clone();
    let count = |status: Status, started: bool| {
        let (store, ops) = (store.clone(), ops.clone());
        async move {
            let mut n = 0;
            for op in ops {
                let op = store.get(op.id).await.unwrap().unwrap();
                n += usize::from(op.status == status && op.progress_pct.is_some() == started);
            }
            n
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(Status::Running, true).await < 2 || count(Status::Running, false).await < 3 {
        assert!(
            Instant::now() < deadline,
            "the worker did not fill its slots and prefetch"
        );
        sleep(Duration::from_millis(50)).await;
    }
    // Two handlers run, three more are held, the other five stay queued.
    sleep(Duration::from_millis(300)).await;
    assert_eq!(count(Status::Running, true).await, 2);
    assert_eq!(count(Status::Running, false).await, 3);
    assert_eq!(count(Status::Pending, false).await, 5);

    worker.shutdown().await;
    for op in &ops {
        let op = h.store.get(op.id).await.unwrap().unwrap();
        assert_eq!((op.status, op.retries), (Status::Pending, 0), "{op:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn children_submitted_by_a_handler_carry_its_lineage() {
    let h = Harness::new().await;
    let registry = Registry::new()
        .handler("parent", |ctx: TaskContext, _input| async move {
            let child = ctx
                .submit_child(SubmitRequest {
                    name: "child".into(),
                    kwargs: Some(json!({"level": 1})),
                    ..Default::default()
                })
                .await?;
            Ok(json!({"child": child.id}))
        })
        .handler("child", |ctx: TaskContext, _input| async move {
            let grandchild = ctx
                .submit_child(SubmitRequest {
                    name: "leaf".into(),
                    ..Default::default()
                })
                .await?;
            Ok(json!({"grandchild": grandchild.id}))
        })
        .handler("leaf", |_ctx, _input| async { Ok(()) })
        .handler("bad-parent", |ctx: TaskContext, _input| async move {
            ctx.submit_child(SubmitRequest {
                name: "child".into(),
                args: Some(json!({"not": "an array"})),
                ..Default::default()
            })
            .await
        });
    let worker = h.start(registry, options());
    let parent = h.submit("parent", json!({}), 0).await;

    let parent = h
        .wait_for(parent.id, "parent success", status_is(Status::Succeeded))
        .await;
    let child_id: Uuid = serde_json::from_value(parent.result.unwrap()["child"].clone()).unwrap();
    let child = h
        .wait_for(child_id, "child success", status_is(Status::Succeeded))
        .await;
    assert_eq!(child.parent_id, Some(parent.id));
    assert_eq!(child.root_id, parent.id);
    assert_eq!(child.kwargs, json!({"level": 1}));
    assert_eq!(
        (child.customer, child.created_by_name.as_str()),
        (7, "worker-tests")
    );
    let leaf_id: Uuid =
        serde_json::from_value(child.result.unwrap()["grandchild"].clone()).unwrap();
    let leaf = h
        .wait_for(leaf_id, "leaf success", status_is(Status::Succeeded))
        .await;
    assert_eq!(leaf.parent_id, Some(child.id));
    assert_eq!(leaf.root_id, parent.id);

    let bad = h.submit("bad-parent", json!({}), 3).await;
    let bad = h
        .wait_for(bad.id, "refused child", status_is(Status::Failed))
        .await;
    assert_eq!(bad.retries, 0, "a refused child submission is fatal");
    assert!(
        bad.error
            .unwrap()
            .message
            .contains("`args` must be a JSON array")
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_lets_running_handlers_finish_within_the_grace() {
    let h = Harness::new().await;
    let registry = Registry::new().handler("short", |ctx: TaskContext, _input| async move {
        ctx.progress(50.0, "halfway");
        sleep(Duration::from_millis(500)).await;
        Ok("finished")
    });
    let worker = h.start(registry, options());
    let op = h.submit("short", json!({}), 0).await;
    h.wait_for(op.id, "the handler to start", |op| {
        op.progress_pct == Some(50.0)
    })
    .await;

    worker.shutdown().await;
    let op = h.store.get(op.id).await.unwrap().unwrap();
    assert_eq!(op.status, Status::Succeeded);
    assert_eq!(op.result, Some(json!("finished")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_releases_operations_still_running_after_the_grace() {
    let h = Harness::new().await;
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let options = WorkerOptions {
        shutdown_grace: Duration::from_millis(200),
        ..options()
    };
    let worker = h.start(cooperative(saw_cancel.clone()), options.clone());
    let op = h.submit("long", json!({}), 3).await;
    let running = h
        .wait_for(op.id, "the handler to start", |op| {
            op.progress_pct == Some(5.0)
        })
        .await;

    worker.shutdown().await;
    assert!(
        saw_cancel.load(Ordering::SeqCst),
        "the handler is told to stop"
    );
    let released = h.store.get(op.id).await.unwrap().unwrap();
    assert_eq!(released.status, Status::Pending);
    assert_eq!(released.retries, 0, "a release is not a retry");
    assert!(
        released.run_at <= time::OffsetDateTime::now_utc(),
        "ready again at once"
    );
    assert!(released.error.is_none());

    // Another worker picks it up at once.
    let next = h.start(cooperative(Arc::new(AtomicBool::new(false))), options);
    let again = h
        .wait_for(op.id, "a new attempt", |op| {
            op.status == Status::Running && op.execution_id != running.execution_id
        })
        .await;
    assert_eq!(again.retries, 0);
    next.shutdown().await;
}

/// A [`CommandHandler`] worker for `script`, run by `sh -c` in the harness's directory.
fn command(name: &str, script: &str) -> Registry {
    Registry::new().register(
        name,
        CommandHandler::new(script).with_kill_grace(Duration::from_secs(2)),
    )
}

fn quoted(path: &Path) -> String {
    format!("'{}'", path.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_gets_the_operation_on_stdin_and_its_stdout_is_the_result() {
    let h = Harness::new().await;
    let input = h.dir.path().join("input.json");
    let go = h.dir.path().join("go");
    let script = format!(
        r#"cat > {input}
echo "progress: 40 rendering page 3" >&2
echo "a plain log line" >&2
while [ ! -e {go} ]; do sleep 0.02; done
printf '{{"id": "%s", "execution": "%s", "retries": %s}}\n' "$LONGRUN_OPERATION_ID" "$LONGRUN_EXECUTION_ID" "$LONGRUN_RETRIES""#,
        input = quoted(&input),
        go = quoted(&go),
    );
    let worker = h.start(command("reports.render", &script), options());
    let op = h.submit("reports.render", json!({"pages": 7}), 0).await;

    let running = h
        .wait_for(op.id, "progress 40", |op| op.progress_pct == Some(40.0))
        .await;
    assert_eq!(running.status_detail.as_deref(), Some("rendering page 3"));
    std::fs::write(&go, "").unwrap();
    let done = h
        .wait_for(op.id, "success", status_is(Status::Succeeded))
        .await;
    assert_eq!(
        done.result,
        Some(json!({"id": op.id, "execution": done.execution_id.unwrap(), "retries": 0}))
    );
    let stdin: Operation = serde_json::from_slice(&std::fs::read(&input).unwrap()).unwrap();
    assert_eq!((stdin.id, stdin.kwargs), (op.id, json!({"pages": 7})));
    assert_eq!(stdin.status, Status::Running);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn command_output_that_is_not_json_is_a_string_result_and_none_is_no_result() {
    let h = Harness::new().await;
    let registry = command("text", "echo 'all done'")
        .register("quiet", CommandHandler::new("cat > /dev/null"));
    let worker = h.start(registry, options());
    let text = h.submit("text", json!({}), 0).await;
    let quiet = h.submit("quiet", json!({}), 0).await;

    let text = h
        .wait_for(text.id, "success", status_is(Status::Succeeded))
        .await;
    assert_eq!(text.result, Some(json!("all done")));
    let quiet = h
        .wait_for(quiet.id, "success", status_is(Status::Succeeded))
        .await;
    assert_eq!(quiet.result, None);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn command_exit_status_100_fails_without_retry() {
    let h = Harness::new().await;
    let script = "echo 'starting' >&2; echo 'ValueError: pages must be positive' >&2; exit 100";
    let worker = h.start(command("strict", script), options());
    let op = h.submit("strict", json!({}), 3).await;

    let done = h
        .wait_for(op.id, "failure", status_is(Status::Failed))
        .await;
    assert_eq!(done.retries, 0);
    let error = done.error.unwrap();
    assert_eq!(
        (error.error_type.as_str(), error.code.as_str()),
        ("CommandFailed", "exit_100")
    );
    assert_eq!(
        error.message,
        "starting\nValueError: pages must be positive"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn command_exit_status_1_is_retried() {
    let h = Harness::new().await;
    let script = r#"if [ "$LONGRUN_RETRIES" -lt 2 ]; then echo "flaky network" >&2; exit 1; fi; echo '"ok"'"#;
    let worker = h.start(command("flaky", script), options());
    let op = h.submit("flaky", json!({}), 3).await;
    let done = h
        .wait_for(op.id, "success", status_is(Status::Succeeded))
        .await;
    assert_eq!(done.retries, 2);
    assert_eq!(done.result, Some(json!("ok")));

    let always = h.submit("flaky", json!({}), 0).await;
    let failed = h
        .wait_for(always.id, "failure", status_is(Status::Failed))
        .await;
    let error = failed.error.unwrap();
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        ("exit_1", "flaky network")
    );
    worker.shutdown().await;
}

/// Whether `pid` is gone (or a zombie waiting to be reaped).
fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancellation_kills_the_command_and_its_children() {
    let h = Harness::new().await;
    let pids = h.dir.path().join("pids");
    // A background child: killing only `sh` would leave it running.
    let script = format!(
        "sleep 300 & echo \"$$ $!\" > {pids}.tmp; mv {pids}.tmp {pids}; echo 'progress: 1 sleeping' >&2; wait",
        pids = quoted(&pids)
    );
    let worker = h.start(command("sleepy", &script), options());
    let op = h.submit("sleepy", json!({}), 3).await;

    h.wait_for(op.id, "the command to start", |op| {
        op.progress_pct == Some(1.0)
    })
    .await;
    let pids: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(pids.iter().all(|&pid| !is_dead(pid)));
    h.store.cancel(op.id).await.unwrap();
    let done = h
        .wait_for(op.id, "cancellation", status_is(Status::Cancelled))
        .await;
    assert_eq!(done.retries, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids.iter().all(|&pid| is_dead(pid)) {
        assert!(
            Instant::now() < deadline,
            "processes {pids:?} survived cancellation"
        );
        sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await;
}

/// A longrun server on loopback for `h`'s store, with `config`.
struct RemoteServer {
    url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RemoteServer {
    async fn start(h: &Harness, config: longrun_server::ServerConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(listener, h, config)
    }

    fn on(
        listener: tokio::net::TcpListener,
        h: &Harness,
        config: longrun_server::ServerConfig,
    ) -> Self {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = longrun_server::AppState {
            store: h.store.clone(),
            config: Arc::new(config),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(longrun_server::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Self { url, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_http_backend_runs_handlers_against_a_remote_server() {
    let h = Harness::new().await;
    let server = RemoteServer::start(&h, longrun_server::ServerConfig::default()).await;
    let client = longrun_client::Client::new(&server.url).unwrap();
    let backend = Arc::new(HttpBackend::new(client.clone()));
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let registry = cooperative(saw_cancel.clone())
        .handler(
            "remote.parent",
            |ctx: TaskContext, input: TaskInput| async move {
                ctx.progress(50.0, "spawning a child");
                let child = ctx
                    .submit_child(SubmitRequest {
                        name: "remote.child".into(),
                        ..Default::default()
                    })
                    .await?;
                Ok(json!({"child": child.id, "got": input.kwargs}))
            },
        )
        .handler("remote.child", |_ctx, _input| async { Ok("child done") })
        .handler("remote.fatal", |_ctx, _input| async {
            Err::<(), _>(TaskError::fatal("ValueError", "nope"))
        });
    let worker = RunningWorker::start(backend, registry, options());

    let submit = |name: &str| SubmitRequest {
        name: name.into(),
        kwargs: Some(json!({"k": 1})),
        max_retries: Some(2),
        ..Default::default()
    };
    let parent = client.submit(&submit("remote.parent"), None).await.unwrap();
    let done = h
        .wait_for(parent.id, "parent success", status_is(Status::Succeeded))
        .await;
    assert_eq!(done.result.as_ref().unwrap()["got"], json!({"k": 1}));
    let child_id: Uuid = serde_json::from_value(done.result.unwrap()["child"].clone()).unwrap();
    let child = h
        .wait_for(child_id, "child success", status_is(Status::Succeeded))
        .await;
    assert_eq!(
        (child.parent_id, child.root_id),
        (Some(parent.id), parent.id)
    );
    assert_eq!(child.result, Some(json!("child done")));

    let fatal = client.submit(&submit("remote.fatal"), None).await.unwrap();
    let fatal = h
        .wait_for(fatal.id, "failure", status_is(Status::Failed))
        .await;
    assert_eq!(
        (fatal.retries, fatal.error.unwrap().message.as_str()),
        (0, "nope")
    );

    let long = client.submit(&submit("long"), None).await.unwrap();
    h.wait_for(long.id, "the handler to start", |op| {
        op.progress_pct == Some(5.0)
    })
    .await;
    client.cancel(long.id).await.unwrap();
    h.wait_for(long.id, "cancellation", status_is(Status::Cancelled))
        .await;
    assert!(saw_cancel.load(Ordering::SeqCst));

    worker.shutdown().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_survives_an_unreachable_server_and_resumes_when_it_is_back() {
    let h = Harness::new().await;
    // Reserve a port, then leave it closed while the worker starts.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = longrun_client::Client::new(&format!("http://{addr}")).unwrap();
    let registry = Registry::new().handler("later", |_ctx, _input| async { Ok("served") });
    let worker = RunningWorker::start(Arc::new(HttpBackend::new(client)), registry, options());
    let op = h.submit("later", json!({}), 0).await;
    sleep(Duration::from_millis(700)).await;
    assert_eq!(
        h.store.get(op.id).await.unwrap().unwrap().status,
        Status::Pending
    );

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let server = RemoteServer::on(listener, &h, longrun_server::ServerConfig::default());
    let done = h
        .wait_for(
            op.id,
            "success once the server is up",
            status_is(Status::Succeeded),
        )
        .await;
    assert_eq!(done.result, Some(json!("served")));

    worker.shutdown().await;
    server.stop().await;
}

/// Reports sent together are answered each on its own, and those the server refuses as a
/// request (here: one result nested too deep for a batch, and more bytes together than the
/// server takes in one body) still reach it one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_the_server_refuses_together_go_one_by_one() {
    let h = Harness::new().await;
    let config = longrun_server::ServerConfig {
        body_limit_bytes: 300 * 1024,
        ..Default::default()
    };
    let server = RemoteServer::start(&h, config).await;
    let backend = HttpBackend::new(longrun_client::Client::new(&server.url).unwrap());
    let mut deep = json!("bottom");
    for _ in 0..29 {
        deep = json!([deep]);
    }
    let big = json!("x".repeat(200 * 1024));
    let results = [json!("small"), deep, big.clone(), big, json!("stale")];
    let mut ops = vec![];
    for _ in &results {
        ops.push(h.submit("report", json!({}), 0).await);
    }
    let claim = ClaimRequest {
        worker: "w".into(),
        names: vec!["report".into()],
        queues: vec![],
        max: 10,
        lease_secs: 60,
        wait_secs: 0,
    };
    let leases = backend.claim(&claim).await.unwrap();
    assert_eq!(leases.len(), results.len());
    let reports = leases.iter().zip(&results).map(|(lease, result)| {
        let stale = result == &json!("stale");
        let request = CompleteRequest {
            lease_id: if stale {
                Uuid::now_v7()
            } else {
                lease.lease_id
            },
            result: Some(result.clone()),
            ..Default::default()
        };
        let (backend, id) = (&backend, lease.operation.id);
        async move { (id, backend.complete(id, &request).await) }
    });
    for ((id, reported), result) in futures::future::join_all(reports)
        .await
        .into_iter()
        .zip(&results)
    {
        let stored = h.store.get(id).await.unwrap().unwrap();
        if result == &json!("stale") {
            assert!(
                matches!(reported, Err(BackendError::LeaseLost(_))),
                "{reported:?}"
            );
            assert_eq!(stored.status, Status::Running);
        } else {
            assert_eq!(reported, Ok(()));
            assert_eq!(stored.status, Status::Succeeded);
            assert_eq!(stored.result.as_ref(), Some(result));
        }
    }
    server.stop().await;
}
