//! The store conformance suite: the behaviour every [`Store`] engine must show, written once
//! against the trait (in the manner of River's driver test suite).
//!
//! An engine implements [`StoreFactory`] and expands [`conformance_tests!`](crate::conformance_tests)
//! in a test file, which yields one `#[tokio::test]` per case, named after it. Each case gets a
//! fresh, empty store that reads time from a [`ManualClock`]: leases expire and retries come due
//! by moving the clock, never by sleeping. Only the waiting helpers of [`crate::waiting`] are
//! timed against real time, with generous bounds.
//!
//! The cases are private functions listed once in [`CASES`], so a case that is written but not
//! listed is dead code the compiler reports.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use serde_json::json;
use time::{Duration, OffsetDateTime};
use tokio::sync::broadcast;
use tokio::time::Instant;
use uuid::Uuid;

use crate::traceparent::TraceIds;
use crate::waiting::{claim_or_wait, wait_for_change};
use crate::{
    CancelOutcome, Change, ClaimFilter, ClaimQuery, Clock, Completion, Failure, Idempotency, Lease,
    ListQuery, ManualClock, Meta, NewOperation, Operation, OperationError, Owner, Progress,
    Resource, RetryPolicy, Status, Store, StoreError, TransitionError,
};

/// Builds the fresh, empty stores the cases run against.
pub trait StoreFactory {
    /// A new store holding no operations, reading time only from `clock`. The factory owns
    /// whatever the store lives in (a temporary directory, a database schema) and outlives it.
    fn fresh(&self, clock: Arc<dyn Clock>) -> impl Future<Output = Arc<dyn Store>>;
}

/// One case: drives a store and the clock it reads, panicking at the first deviation.
pub type Case = fn(Arc<dyn Store>, Arc<ManualClock>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs the case called `name` against a fresh store from `factory`.
///
/// # Panics
/// When the store misbehaves, or when no case has that name.
pub async fn run_case(factory: &impl StoreFactory, name: &str) {
    let (_, case) = CASES
        .iter()
        .find(|(case, _)| *case == name)
        .unwrap_or_else(|| panic!("no conformance case named `{name}`"));
    let clock = Arc::new(ManualClock::new(start_time()));
    let store = factory.fresh(clock.clone()).await;
    case(store, clock).await;
}

/// Lists the cases once: in [`CASES`] and in the test-generating macro.
macro_rules! suite {
    ($d:tt $($case:ident),+ $(,)?) => {
        /// Every case of the suite, by name.
        pub const CASES: &[(&str, Case)] = &[$((stringify!($case), |store, clock| Box::pin($case(store, clock)))),+];

        /// Expands to one `#[tokio::test]` per conformance case, each running
        /// [`run_case`](crate::conformance::run_case) with the given
        /// [`StoreFactory`](crate::conformance::StoreFactory) expression (evaluated once per case).
        /// The calling crate needs `tokio` with the multi-threaded runtime and the `macros` feature.
        ///
        /// ```ignore
        /// longrun_core::conformance_tests!(MyStoreFactory::new());
        /// ```
        #[macro_export]
        macro_rules! conformance_tests {
            ($d factory:expr) => {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $case() {
                        $d crate::conformance::run_case(&$d factory, stringify!($case)).await;
                    }
                )+
            };
        }
    };
}

suite!($
    submit_assigns_identity_and_defaults,
    concurrent_submits_get_unique_increasing_seqs,
    child_inherits_the_root_of_its_chain,
    submit_with_unknown_parent_is_refused,
    get_unknown_is_none,
    concurrent_reads_each_get_their_operation,
    idempotent_resubmit_returns_the_same_operation,
    idempotency_key_with_another_body_is_refused,
    idempotency_keys_are_scoped_per_customer,
    concurrent_idempotent_submits_create_one_operation,
    list_is_newest_first_and_filters,
    list_pages_cover_every_row_once,
    claim_takes_only_ready_operations,
    claim_orders_by_priority_then_age,
    claim_respects_max_and_filters,
    claim_records_the_lease,
    concurrent_claims_hand_each_operation_out_once,
    cancels_racing_claims_never_cancel_a_handed_out_operation,
    next_run_at_is_the_earliest_pending_run_at,
    heartbeat_extends_the_lease_and_records_progress,
    concurrent_changes_of_one_operation_are_each_answered_as_they_left_it,
    complete_records_the_outcome,
    retryable_failure_backs_off_until_retries_run_out,
    fatal_failure_fails_at_once,
    stale_lease_is_fenced,
    expire_leases_ends_only_expired_leases,
    cancel_pending_cancels_at_once,
    cancel_running_is_a_request_the_worker_honours,
    cancel_terminal_changes_nothing,
    delete_forgets_only_terminal_operations,
    release_returns_the_operation_without_a_retry,
    prune_deletes_only_old_terminal_operations,
    subscribe_sees_every_change,
    ping_answers,
    every_field_survives_storage,
    claim_or_wait_wakes_on_submit_and_release,
    a_waiting_claimer_is_handed_a_new_operation_in_its_submit,
    wait_for_change_returns_on_change,
    keys_are_stored_without_their_secret_and_found_by_id,
    revoking_a_key_takes_effect_once,
    a_waiter_learns_at_once_that_its_operation_was_deleted,
);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The lease length of ordinary claims.
const LEASE: Duration = Duration::seconds(30);

/// How long a timed assertion waits for something that should happen at once.
const PROMPT: StdDuration = StdDuration::from_secs(5);

/// Where the clock starts: the wall clock's now, to the millisecond, so that every instant
/// a case produces is representable by any reasonable engine (PostgreSQL keeps microseconds).
fn start_time() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_millisecond(now.millisecond())
        .expect("a valid millisecond")
}

/// Asserts that a store call failed with an error matching the pattern.
macro_rules! assert_err {
    ($result:expr, $pattern:pat $(if $guard:expr)?) => {
        match $result {
            Err($pattern) $(if $guard)? => {}
            other => panic!("expected Err({}), got {other:?}", stringify!($pattern $(if $guard)?)),
        }
    };
}

async fn submit(store: &dyn Store, new: NewOperation) -> Operation {
    let submitted = store.submit(new).await.expect("submit");
    assert!(submitted.created, "a new submission creates an operation");
    submitted.operation
}

async fn submit_named(store: &dyn Store, name: &str) -> Operation {
    submit(store, NewOperation::named(name)).await
}

fn with_policy(name: &str, max_retries: u32, base: f64, cap: f64) -> NewOperation {
    NewOperation {
        retry_policy: RetryPolicy {
            max_retries,
            backoff_base_secs: base,
            backoff_cap_secs: cap,
        },
        ..NewOperation::named(name)
    }
}

fn keyed(name: &str, key: &str, fingerprint: &str) -> NewOperation {
    NewOperation {
        idempotency: Some(Idempotency {
            key: key.into(),
            fingerprint: fingerprint.into(),
        }),
        ..NewOperation::named(name)
    }
}

fn child_of(parent: &Operation, name: &str) -> NewOperation {
    NewOperation {
        parent_id: Some(parent.id),
        ..NewOperation::named(name)
    }
}

async fn get(store: &dyn Store, id: Uuid) -> Operation {
    store
        .get(id)
        .await
        .expect("get")
        .unwrap_or_else(|| panic!("operation {id} is gone"))
}

/// Cases on two handles of one store (two processes on one SQLite file, two nodes on one
/// PostgreSQL database), which an engine's own tests open and pass in.
pub mod shared {
    use super::*;

    /// A store changes an operation from what its claim left it only while nothing else
    /// changed it: a cancel requested through `second` after `first` claimed is honoured when
    /// the attempt then fails (the operation is cancelled, not retried).
    pub async fn a_change_made_elsewhere_after_a_claim_is_not_lost(
        first: &dyn Store,
        second: &dyn Store,
    ) {
        let op = submit(first, NewOperation::named("a")).await;
        let lease = claim_one(first).await;
        let (_, requested) = second.cancel(op.id).await.expect("cancel");
        assert!(requested.cancel_requested);
        let failed = first
            .fail(op.id, lease.lease_id, failure("boom", true))
            .await
            .expect("fail");
        assert_eq!(failed.status, Status::Cancelled, "not retried: {failed:?}");
        assert_eq!(failed.version, requested.version + 1);
    }

    /// A lease that ran out, its operation claimed again through `second`, is refused by
    /// `first`, which claimed it first; the new lease completes it.
    pub async fn a_lease_claimed_again_elsewhere_is_refused(
        first: &dyn Store,
        second: &dyn Store,
        clock: &ManualClock,
    ) {
        let op = submit(first, NewOperation::named("a")).await;
        let lease = claim_one(first).await;
        clock.advance(LEASE);
        assert_eq!(second.expire_leases().await.expect("expire"), 1);
        let pending = get(second, op.id).await;
        clock.advance(pending.run_at - clock.now());
        let again = claim_one(second).await;
        let stale = first
            .complete(op.id, lease.lease_id, Completion::default())
            .await;
        assert!(
            matches!(
                stale,
                Err(StoreError::Transition(TransitionError::StaleLease { .. }))
            ),
            "{stale:?}"
        );
        let done = second
            .complete(op.id, again.lease_id, Completion::default())
            .await
            .expect("complete");
        assert_eq!(done.status, Status::Succeeded);
    }

    /// An operation whose row the engine's own test wrote back as an earlier version stored
    /// it reads as it was submitted, and is claimed and changed like any other; returns it as
    /// its first change (a heartbeat) left it, so the test can look at the row again.
    pub async fn a_row_an_earlier_version_wrote_reads_and_changes(
        store: &dyn Store,
        submitted: &Operation,
    ) -> Operation {
        assert_eq!(&get(store, submitted.id).await, submitted);
        let lease = claim_one(store).await;
        assert_eq!(lease.operation.args, submitted.args);
        store
            .heartbeat(submitted.id, lease.lease_id, LEASE, Progress::default())
            .await
            .expect("heartbeat");
        let now = get(store, submitted.id).await;
        assert_eq!(
            (now.status, now.version),
            (Status::Running, lease.operation.version + 1)
        );
        now
    }
}

fn query(max: u32) -> ClaimQuery {
    ClaimQuery {
        worker: "worker-1".into(),
        filter: ClaimFilter::default(),
        max,
        lease: LEASE,
    }
}

fn filtered(names: &[&str], queues: &[&str], max: u32) -> ClaimQuery {
    ClaimQuery {
        filter: ClaimFilter {
            names: names.iter().map(|n| n.to_string()).collect(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
        },
        ..query(max)
    }
}

async fn claim(store: &dyn Store, query: &ClaimQuery) -> Vec<Uuid> {
    let leases = store.claim(query).await.expect("claim");
    leases.iter().map(|lease| lease.operation.id).collect()
}

async fn claim_one(store: &dyn Store) -> Lease {
    claim_single(store, &query(1)).await
}

async fn claim_named(store: &dyn Store, name: &str) -> Lease {
    claim_single(store, &filtered(&[name], &[], 1)).await
}

async fn claim_single(store: &dyn Store, query: &ClaimQuery) -> Lease {
    let mut leases = store.claim(query).await.expect("claim");
    assert_eq!(leases.len(), 1, "one ready operation to claim");
    leases.pop().expect("one lease")
}

fn ids(ops: &[Operation]) -> Vec<Uuid> {
    ops.iter().map(|op| op.id).collect()
}

fn all() -> ListQuery {
    ListQuery {
        limit: 1000,
        ..ListQuery::default()
    }
}

async fn list(store: &dyn Store, query: ListQuery) -> Vec<Uuid> {
    let page = store.list(&query).await.expect("list");
    assert_eq!(page.next_before_seq, None, "everything fits on one page");
    ids(&page.operations)
}

fn error(code: &str) -> OperationError {
    OperationError {
        code: code.into(),
        error_type: "ValueError".into(),
        message: format!("{code}: it broke"),
    }
}

fn failure(code: &str, retryable: bool) -> Failure {
    Failure {
        error: error(code),
        retryable,
    }
}

async fn no_progress(
    store: &dyn Store,
    id: Uuid,
    lease: Uuid,
) -> Result<crate::Heartbeat, StoreError> {
    store.heartbeat(id, lease, LEASE, Progress::default()).await
}

/// Drives an operation to `succeeded`, `failed` (fatal) or `cancelled` (while pending).
async fn finish(store: &dyn Store, name: &str, status: Status) -> Operation {
    let op = submit_named(store, name).await;
    match status {
        Status::Cancelled => store.cancel(op.id).await.expect("cancel").1,
        Status::Succeeded | Status::Failed => {
            let lease = claim_named(store, name).await;
            if status == Status::Succeeded {
                store
                    .complete(op.id, lease.lease_id, Completion::default())
                    .await
                    .expect("complete")
            } else {
                store
                    .fail(op.id, lease.lease_id, failure("fatal", false))
                    .await
                    .expect("fail")
            }
        }
        other => panic!("not a terminal status: {other}"),
    }
}

/// Asserts that `got` is `expected` to the millisecond (a backoff delay has nanoseconds).
fn assert_close(got: OffsetDateTime, expected: OffsetDateTime, what: &str) {
    assert!(
        (got - expected).abs() <= Duration::milliseconds(1),
        "{what}: expected {expected}, got {got}"
    );
}

async fn next_change(changes: &mut broadcast::Receiver<Change>) -> Change {
    tokio::time::timeout(PROMPT, changes.recv())
        .await
        .expect("a change notification within 5 s")
        .expect("the change stream is open")
}

// ---------------------------------------------------------------------------------------------
// Submit and get
// ---------------------------------------------------------------------------------------------

async fn submit_assigns_identity_and_defaults(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    let now = clock.now();
    let submitted = store
        .submit(NewOperation::named("reports.render"))
        .await
        .expect("submit");
    assert!(submitted.created);
    let op = submitted.operation;
    assert_eq!(op.id.get_version_num(), 7, "ids are UUIDv7");
    assert!(op.seq > 0, "seq is a positive integer, got {}", op.seq);
    assert_eq!(op.name, "reports.render");
    assert_eq!((op.status, op.version, op.retries), (Status::Pending, 1, 0));
    assert_eq!(
        (op.root_id, op.parent_id),
        (op.id, None),
        "a root is its own root"
    );
    assert_eq!(
        (op.run_at, op.created_at, op.updated_at),
        (now, now, now),
        "runAt defaults to now"
    );
    assert_eq!(
        (op.started_at, op.completed_at, op.lease_expires_at),
        (None, None, None)
    );
    assert_eq!(
        (op.execution_id, op.worker.as_deref(), op.cancel_requested),
        (None, None, false)
    );
    assert_eq!(
        (&op.result, &op.error, op.progress_pct),
        (&None, &None, None)
    );
    assert_eq!(
        store.get(op.id).await.expect("get"),
        Some(op.clone()),
        "get answers what submit returned"
    );

    let mut previous = op;
    for _ in 0..5 {
        clock.advance(Duration::milliseconds(1));
        let next = submit_named(&*store, "reports.render").await;
        assert_ne!(next.id, previous.id);
        assert!(
            next.seq > previous.seq,
            "seq increases: {} after {}",
            next.seq,
            previous.seq
        );
        previous = next;
    }
}

async fn concurrent_submits_get_unique_increasing_seqs(
    store: Arc<dyn Store>,
    _clock: Arc<ManualClock>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut seqs = Vec::new();
            for _ in 0..25 {
                seqs.push(submit_named(&*store, &format!("task-{task}")).await.seq);
            }
            seqs
        });
    }
    let mut seqs = HashSet::new();
    while let Some(task_seqs) = tasks.join_next().await {
        let task_seqs = task_seqs.expect("submitter task");
        assert!(
            task_seqs.windows(2).all(|w| w[0] < w[1]),
            "one submitter's seqs increase: {task_seqs:?}"
        );
        for seq in task_seqs {
            assert!(seqs.insert(seq), "seq {seq} was given twice");
        }
    }
    assert_eq!(seqs.len(), 200);
    let page = store.list(&all()).await.expect("list");
    assert_eq!(
        page.operations.len(),
        200,
        "every submit stored one operation"
    );
}

async fn child_inherits_the_root_of_its_chain(store: Arc<dyn Store>, _clock: Arc<ManualClock>) {
    let root = submit_named(&*store, "root").await;
    let other_root = submit_named(&*store, "root").await;
    let child = submit(&*store, child_of(&root, "child")).await;
    let grandchild = submit(&*store, child_of(&child, "grandchild")).await;
    assert_eq!((child.parent_id, child.root_id), (Some(root.id), root.id));
    assert_eq!(
        (grandchild.parent_id, grandchild.root_id),
        (Some(child.id), root.id)
    );
    assert_eq!(get(&*store, grandchild.id).await, grandchild);
    assert_eq!(get(&*store, other_root.id).await.root_id, other_root.id);
}

async fn submit_with_unknown_parent_is_refused(store: Arc<dyn Store>, _clock: Arc<ManualClock>) {
    let missing = Uuid::now_v7();
    let new = NewOperation {
        parent_id: Some(missing),
        ..NewOperation::named("orphan")
    };
    assert_err!(store.submit(new).await, StoreError::ParentNotFound(id) if id == missing);
    assert_eq!(
        list(&*store, all()).await,
        Vec::<Uuid>::new(),
        "nothing was stored"
    );
}

async fn get_unknown_is_none(store: Arc<dyn Store>, _clock: Arc<ManualClock>) {
    submit_named(&*store, "present").await;
    assert_eq!(store.get(Uuid::now_v7()).await.expect("get"), None);
}

/// Many reads at once, several of the same operation (which a store may answer together).
async fn concurrent_reads_each_get_their_operation(
    store: Arc<dyn Store>,
    _clock: Arc<ManualClock>,
) {
    let a = submit_named(&*store, "a").await;
    let b = submit_named(&*store, "b").await;
    let wanted = [Some(a.clone()), Some(b), None, Some(a)];
    let ids: Vec<Uuid> = wanted
        .iter()
        .map(|op| op.as_ref().map_or_else(Uuid::now_v7, |op| op.id))
        .collect();
    let mut readers = tokio::task::JoinSet::new();
    for reader in 0..64 {
        let (store, slot) = (store.clone(), reader % ids.len());
        let id = ids[slot];
        readers.spawn(async move {
            let mut read = Vec::new();
            for _ in 0..10 {
                read.push(store.get(id).await.expect("get"));
            }
            (slot, read)
        });
    }
    while let Some(done) = readers.join_next().await {
        let (slot, read) = done.expect("reader task");
        for op in read {
            assert_eq!(op, wanted[slot], "read of {}", ids[slot]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------------------------

async fn idempotent_resubmit_returns_the_same_operation(
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
) {
    let first = submit(&*store, keyed("mail.send", "key-1", "body-a")).await;
    clock.advance(Duration::seconds(1));
    let again = store
        .submit(keyed("mail.send", "key-1", "body-a"))
        .await
        .expect("resubmit");
    assert!(!again.created, "the second submit created nothing");
    assert_eq!(again.operation, first);

    let lease = claim_one(&*store).await;
    let again = store
        .submit(keyed("mail.send", "key-1", "body-a"))
        .await
        .expect("resubmit");
    assert!(!again.created);
    assert_eq!(
        again.operation, lease.operation,
        "a resubmit answers the operation as it is now"
    );
    assert_eq!(list(&*store, all()).await, vec![first.id], "no second row");
}

async fn idempotency_key_with_another_body_is_refused(
    store: Arc<dyn Store>,
    _clock: Arc<ManualClock>,
) {
    let first = submit(&*store, keyed("mail.send", "key-1", "body-a")).await;
    assert_err!(
        store.submit(keyed("mail.send", "key-1", "body-b")).await,
        StoreError::IdempotencyMismatch(key) if key == "key-1"
    );
    assert_eq!(list(&*store, all()).await, vec![first.id]);
    assert_eq!(
        get(&*store, first.id).await,
        first,
        "the first operation is untouched"
    );
    let other_key = submit(&*store, keyed("mail.send", "key-2", "body-a")).await;
    assert_ne!(
        other_key.id, first.id,
        "another key with the same body is another operation"
    );
}

async fn idempotency_keys_are_scoped_per_customer(store: Arc<dyn Store>, _clock: Arc<ManualClock>) {
    let first = submit(&*store, keyed("mail.send", "key-1", "body-a")).await;
    let tenant = |fingerprint: &str| NewOperation {
        owner: Owner {
            customer: 2,
            user: 5,
            user_name: "other".into(),
        },
        ..keyed("mail.send", "key-1", fingerprint)
    };
    let second = submit(&*store, tenant("body-b")).await;
    assert_ne!(second.id, first.id);
    assert_eq!(second.customer, 2);
    let again = store.submit(tenant("body-b")).await.expect("resubmit");
    assert_eq!((again.created, again.operation.id), (false, second.id));
    let again = store
        .submit(keyed("mail.send", "key-1", "body-a"))
        .await
        .expect("resubmit");
    assert_eq!((again.created, again.operation.id), (false, first.id));
    assert_eq!(list(&*store, all()).await, vec![second.id, first.id]);
}

async fn concurrent_idempotent_submits_create_one_operation(
    store: Arc<dyn Store>,
    _clock: Arc<ManualClock>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .submit(keyed("mail.send", "racy", "body"))
                .await
                .expect("submit")
        });
    }
    let mut created = 0;
    let mut seen = HashSet::new();
    while let Some(submitted) = tasks.join_next().await {
        let submitted = submitted.expect("submitter task");
        created += usize::from(submitted.created);
        seen.insert(submitted.operation.id);
    }
    assert_eq!(
        created, 1,
        "exactly one of the racing submits created the operation"
    );
    assert_eq!(
        seen.len(),
        1,
        "all racing submits answer the same operation"
    );
    assert_eq!(list(&*store, all()).await.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------------------------

async fn list_is_newest_first_and_filters(store: Arc<dyn Store>, _clock: Arc<ManualClock>) {
    let s = &*store;
    let r1 = submit_named(s, "alpha").await;
    let c1 = submit(s, child_of(&r1, "beta")).await;
    let g1 = submit(s, child_of(&c1, "beta")).await;
    let r2 = submit(
        s,
        NewOperation {
            owner: Owner {
                customer: 2,
                user: 2,
                user_name: "two".into(),
            },
            ..NewOperation::named("alpha")
        },
    )
    .await;
    let r3 = submit_named(s, "gamma").await;
    let running = claim_named(s, "gamma").await;
    let r4 = submit_named(s, "alpha").await;
    store.cancel(r4.id).await.expect("cancel");

    let page = store.list(&all()).await.expect("list");
    assert_eq!(
        ids(&page.operations),
        vec![r4.id, r3.id, r2.id, g1.id, c1.id, r1.id],
        "newest first"
    );
    assert_eq!(page.next_before_seq, None);
    assert_eq!(
        page.operations[1], running.operation,
        "listed operations are current"
    );

    let by_status = |status| ListQuery {
        status: Some(status),
        ..all()
    };
    assert_eq!(
        list(s, by_status(Status::Pending)).await,
        vec![r2.id, g1.id, c1.id, r1.id]
    );
    assert_eq!(list(s, by_status(Status::Running)).await, vec![r3.id]);
    assert_eq!(list(s, by_status(Status::Cancelled)).await, vec![r4.id]);
    assert_eq!(
        list(s, by_status(Status::Succeeded)).await,
        Vec::<Uuid>::new()
    );

    let by_name = |name: &str| ListQuery {
        name: Some(name.into()),
        ..all()
    };
    assert_eq!(list(s, by_name("alpha")).await, vec![r4.id, r2.id, r1.id]);
    assert_eq!(list(s, by_name("beta")).await, vec![g1.id, c1.id]);
    assert_eq!(list(s, by_name("nothing")).await, Vec::<Uuid>::new());

    assert_eq!(
        list(
            s,
            ListQuery {
                parent_id: Some(r1.id),
                ..all()
            }
        )
        .await,
        vec![c1.id]
    );
    assert_eq!(
        list(
            s,
            ListQuery {
                parent_id: Some(c1.id),
                ..all()
            }
        )
        .await,
        vec![g1.id]
    );
    assert_eq!(
        list(
            s,
            ListQuery {
                root_id: Some(r1.id),
                ..all()
            }
        )
        .await,
        vec![g1.id, c1.id, r1.id]
    );
    assert_eq!(
        list(
            s,
            ListQuery {
                root_id: Some(r2.id),
                ..all()
            }
        )
        .await,
        vec![r2.id]
    );
    assert_eq!(
        list(
            s,
            ListQuery {
                customer: Some(2),
                ..all()
            }
        )
        .await,
        vec![r2.id]
    );
    assert_eq!(
        list(
            s,
            ListQuery {
                customer: Some(1),
                ..all()
            }
        )
        .await,
        vec![r4.id, r3.id, g1.id, c1.id, r1.id]
    );
    assert_eq!(
        list(
            s,
            ListQuery {
                customer: Some(3),
                ..all()
            }
        )
        .await,
        Vec::<Uuid>::new()
    );

    let combined = ListQuery {
        name: Some("alpha".into()),
        customer: Some(1),
        ..all()
    };
    assert_eq!(list(s, combined).await, vec![r4.id, r1.id]);
    let combined = ListQuery {
        status: Some(Status::Pending),
        root_id: Some(r1.id),
        name: Some("beta".into()),
        ..all()
    };
    assert_eq!(list(s, combined).await, vec![g1.id, c1.id]);
    assert_eq!(
        list(
            s,
            ListQuery {
                before_seq: Some(r2.seq),
                ..all()
            }
        )
        .await,
        vec![g1.id, c1.id, r1.id]
    );
}

/// Follows `next_before_seq` from the first page to the last.
async fn every_page(store: &dyn Store, query: ListQuery) -> Vec<Vec<Operation>> {
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list(&ListQuery {
                before_seq: cursor,
                ..query.clone()
            })
            .await
            .expect("list");
        assert!(
            page.operations.len() <= query.limit as usize,
            "a page holds at most `limit`"
        );
        pages.push(page.operations);
        match page.next_before_seq {
            None => return pages,
            Some(next) => cursor = Some(next),
        }
        assert!(pages.len() <= 100, "pagination does not end");
    }
}

async fn list_pages_cover_every_row_once(store: Arc<dyn Store>, _clock: Arc<ManualClock>) {
    let mut submitted = Vec::new();
    for i in 0..23 {
        let name = if i % 3 == 0 { "third" } else { "other" };
        submitted.push(submit_named(&*store, name).await);
    }
    let newest_first: Vec<Uuid> = submitted.iter().rev().map(|op| op.id).collect();

    let pages = every_page(
        &*store,
        ListQuery {
            limit: 5,
            ..ListQuery::default()
        },
    )
    .await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        vec![5, 5, 5, 5, 3],
        "full pages then the rest; no cursor after the last"
    );
    assert_eq!(
        pages.concat().iter().map(|op| op.id).collect::<Vec<_>>(),
        newest_first
    );

    // A limit that divides the total: a cursor after the last full page may lead to an empty page.
    let pages = every_page(
        &*store,
        ListQuery {
            limit: 23,
            ..ListQuery::default()
        },
    )
    .await;
    assert_eq!(
        pages.concat().iter().map(|op| op.id).collect::<Vec<_>>(),
        newest_first
    );
    assert!(
        pages.len() <= 2 && pages.get(1).is_none_or(Vec::is_empty),
        "one page of 23: {:?}",
        pages.len()
    );

    let thirds: Vec<Uuid> = submitted
        .iter()
        .rev()
        .filter(|op| op.name == "third")
        .map(|op| op.id)
        .collect();
    let pages = every_page(
        &*store,
        ListQuery {
            name: Some("third".into()),
            limit: 3,
            ..ListQuery::default()
        },
    )
    .await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        vec![3, 3, 2],
        "filtered pages of {} operations",
        thirds.len()
    );
    assert_eq!(
        pages.concat().iter().map(|op| op.id).collect::<Vec<_>>(),
        thirds
    );
}

// ---------------------------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------------------------

async fn claim_takes_only_ready_operations(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    let now = clock.now();
    let later = submit(
        &*store,
        NewOperation {
            run_at: Some(now + Duration::seconds(60)),
            ..NewOperation::named("t")
        },
    )
    .await;
    assert_eq!(later.run_at, now + Duration::seconds(60));
    let ready = submit_named(&*store, "t").await;
    let overdue = submit(
        &*store,
        NewOperation {
            run_at: Some(now - Duration::seconds(60)),
            ..NewOperation::named("t")
        },
    )
    .await;

    let claimed: HashSet<Uuid> = claim(&*store, &query(10)).await.into_iter().collect();
    assert_eq!(
        claimed,
        HashSet::from([ready.id, overdue.id]),
        "only operations whose runAt has come"
    );
    assert_eq!(
        claim(&*store, &query(10)).await,
        Vec::<Uuid>::new(),
        "running operations are not claimed again"
    );
    clock.advance(Duration::seconds(59));
    assert_eq!(
        claim(&*store, &query(10)).await,
        Vec::<Uuid>::new(),
        "runAt is still a second away"
    );
    clock.advance(Duration::seconds(1));
    assert_eq!(
        claim(&*store, &query(10)).await,
        vec![later.id],
        "ready when runAt = now"
    );
}

async fn claim_orders_by_priority_then_age(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    let by = |priority| {
        clock.advance(Duration::milliseconds(1));
        NewOperation {
            priority,
            ..NewOperation::named("t")
        }
    };
    let low1 = submit(&*store, by(0)).await;
    let high1 = submit(&*store, by(5)).await;
    let negative = submit(&*store, by(-3)).await;
    let low2 = submit(&*store, by(0)).await;
    let high2 = submit(&*store, by(5)).await;
    let mid = submit(&*store, by(2)).await;
    assert_eq!(claim(&*store, &query(2)).await, vec![high1.id, high2.id]);
    assert_eq!(claim(&*store, &query(1)).await, vec![mid.id]);
    assert_eq!(
        claim(&*store, &query(10)).await,
        vec![low1.id, low2.id, negative.id]
    );
}

async fn claim_respects_max_and_filters(store: Arc<dyn Store>, _clock: Arc<ManualClock>) {
    let on = |name: &str, queue: &str| NewOperation {
        queue: queue.into(),
        ..NewOperation::named(name)
    };
    let mail_default = submit(&*store, on("mail.send", "default")).await;
    let report_reports = submit(&*store, on("reports.render", "reports")).await;
    let mail_reports = submit(&*store, on("mail.send", "reports")).await;
    let report_default = submit(&*store, on("reports.render", "default")).await;

    assert_eq!(
        claim(&*store, &query(0)).await,
        Vec::<Uuid>::new(),
        "max 0 takes nothing"
    );
    assert_eq!(
        claim(&*store, &filtered(&["nothing"], &[], 10)).await,
        Vec::<Uuid>::new()
    );
    assert_eq!(
        claim(&*store, &filtered(&[], &["nowhere"], 10)).await,
        Vec::<Uuid>::new()
    );
    assert_eq!(
        claim(&*store, &filtered(&["mail.send"], &["reports"], 10)).await,
        vec![mail_reports.id]
    );
    assert_eq!(
        claim(&*store, &filtered(&["mail.send", "other"], &[], 10)).await,
        vec![mail_default.id]
    );
    assert_eq!(
        claim(&*store, &filtered(&[], &["reports", "other"], 10)).await,
        vec![report_reports.id]
    );
    assert_eq!(claim(&*store, &query(10)).await, vec![report_default.id]);

    let mut more = Vec::new();
    for _ in 0..5 {
        more.push(submit_named(&*store, "t").await.id);
    }
    assert_eq!(claim(&*store, &query(3)).await, more[..3]);
    assert_eq!(claim(&*store, &query(3)).await, more[3..]);
    assert_eq!(claim(&*store, &query(3)).await, Vec::<Uuid>::new());
}

async fn claim_records_the_lease(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    let op = submit_named(&*store, "t").await;
    clock.advance(Duration::seconds(5));
    let now = clock.now();
    let query = ClaimQuery {
        worker: "host-7/pid-42".into(),
        lease: Duration::seconds(45),
        ..query(1)
    };
    let lease = store
        .claim(&query)
        .await
        .expect("claim")
        .pop()
        .expect("a lease");
    let running = &lease.operation;
    assert_eq!(running.id, op.id);
    assert_eq!(
        (running.status, running.version, running.retries),
        (Status::Running, 2, 0)
    );
    assert_eq!(
        running.execution_id,
        Some(lease.lease_id),
        "executionId is the lease id"
    );
    assert_eq!(running.worker.as_deref(), Some("host-7/pid-42"));
    assert_eq!((running.started_at, running.updated_at), (Some(now), now));
    assert_eq!(lease.expires_at, now + Duration::seconds(45));
    assert_eq!(running.lease_expires_at, Some(lease.expires_at));
    let mut expected = op.clone();
    expected
        .start(lease.lease_id, "host-7/pid-42", Duration::seconds(45), now)
        .expect("start");
    assert_eq!(
        running, &expected,
        "the claim is exactly the lifecycle's start"
    );
    assert_eq!(&get(&*store, op.id).await, running);

    submit_named(&*store, "t").await;
    let second = claim_one(&*store).await;
    assert_ne!(
        second.lease_id, lease.lease_id,
        "every lease has its own id"
    );
}

/// `workers` concurrent claimers, each claiming `max` at a time until a claim finds nothing;
/// each returns the leases it was handed.
fn claimers(store: &Arc<dyn Store>, workers: usize, max: u32) -> tokio::task::JoinSet<Vec<Lease>> {
    let mut claimers = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let store = store.clone();
        claimers.spawn(async move {
            let query = ClaimQuery {
                worker: format!("worker-{worker}"),
                ..query(max)
            };
            let mut leases = Vec::new();
            loop {
                let batch = store.claim(&query).await.expect("claim");
                if batch.is_empty() {
                    return leases;
                }
                leases.extend(batch);
            }
        });
    }
    claimers
}

async fn concurrent_claims_hand_each_operation_out_once(
    store: Arc<dyn Store>,
    _clock: Arc<ManualClock>,
) {
    let mut submitted = HashSet::new();
    for _ in 0..200 {
        submitted.insert(submit_named(&*store, "t").await.id);
    }
    let mut claimers = claimers(&store, 8, 7);
    let mut leases = Vec::new();
    while let Some(batch) = claimers.join_next().await {
        leases.extend(batch.expect("claimer task"));
    }
    let claimed: HashSet<Uuid> = leases.iter().map(|lease| lease.operation.id).collect();
    assert_eq!(
        leases.len(),
        200,
        "200 operations, 200 leases (no operation handed out twice)"
    );
    assert_eq!(claimed, submitted, "every operation was handed out");
    for lease in &leases {
        let op = get(&*store, lease.operation.id).await;
        assert_eq!(op.status, Status::Running);
        assert_eq!(
            op.execution_id,
            Some(lease.lease_id),
            "the stored lease is the one handed out"
        );
    }
}

/// Cancels racing claims: an operation a claim handed out runs under that lease (its cancel
/// only a request); every other one is cancelled; each cancel says which it did.
async fn cancels_racing_claims_never_cancel_a_handed_out_operation(
    store: Arc<dyn Store>,
    _clock: Arc<ManualClock>,
) {
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(submit_named(&*store, "t").await.id);
    }
    let mut claimers = claimers(&store, 4, 5);
    let mut cancellers = tokio::task::JoinSet::new();
    for chunk in ids.chunks(25) {
        let (store, chunk) = (store.clone(), chunk.to_vec());
        cancellers.spawn(async move {
            let mut outcomes = Vec::new();
            for id in chunk {
                outcomes.push((id, store.cancel(id).await.expect("cancel").0));
            }
            outcomes
        });
    }
    let mut leased = HashMap::new();
    while let Some(leases) = claimers.join_next().await {
        for lease in leases.expect("claimer task") {
            let previous = leased.insert(lease.operation.id, lease.lease_id);
            assert_eq!(previous, None, "an operation handed out twice");
        }
    }
    let mut outcomes = Vec::new();
    while let Some(done) = cancellers.join_next().await {
        outcomes.extend(done.expect("canceller task"));
    }
    assert_eq!(outcomes.len(), 200);
    for (id, outcome) in outcomes {
        let op = get(&*store, id).await;
        match leased.get(&id) {
            Some(&lease) => {
                assert_eq!(op.status, Status::Running, "{id} was handed out");
                assert_eq!(op.execution_id, Some(lease));
                assert!(op.cancel_requested, "{id}: its cancel is recorded");
                assert_eq!(outcome, CancelOutcome::Requested);
            }
            None => {
                assert_eq!(op.status, Status::Cancelled, "{id} was not handed out");
                assert_eq!(outcome, CancelOutcome::Cancelled);
            }
        }
    }
}

async fn next_run_at_is_the_earliest_pending_run_at(
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
) {
    let now = clock.now();
    let any = ClaimFilter::default();
    let only = |names: &[&str], queues: &[&str]| filtered(names, queues, 1).filter;
    assert_eq!(
        store.next_run_at(&any).await.expect("next_run_at"),
        None,
        "no operations"
    );

    let at = |name: &str, queue: &str, secs| NewOperation {
        queue: queue.into(),
        run_at: Some(now + Duration::seconds(secs)),
        ..NewOperation::named(name)
    };
    let x = submit(&*store, at("x", "default", 30)).await;
    submit(&*store, at("y", "q2", 10)).await;
    assert_eq!(
        store.next_run_at(&any).await.expect("next_run_at"),
        Some(now + Duration::seconds(10))
    );
    assert_eq!(
        store
            .next_run_at(&only(&["x"], &[]))
            .await
            .expect("next_run_at"),
        Some(now + Duration::seconds(30))
    );
    assert_eq!(
        store
            .next_run_at(&only(&[], &["q2"]))
            .await
            .expect("next_run_at"),
        Some(now + Duration::seconds(10))
    );
    assert_eq!(
        store
            .next_run_at(&only(&["z"], &[]))
            .await
            .expect("next_run_at"),
        None
    );

    submit(&*store, at("x", "default", 0)).await;
    assert_eq!(
        store
            .next_run_at(&only(&["x"], &[]))
            .await
            .expect("next_run_at"),
        Some(now),
        "a ready one counts"
    );
    claim(&*store, &filtered(&["x"], &[], 1)).await;
    assert_eq!(
        store
            .next_run_at(&only(&["x"], &[]))
            .await
            .expect("next_run_at"),
        Some(now + Duration::seconds(30)),
        "a running operation does not count"
    );
    store.cancel(x.id).await.expect("cancel");
    assert_eq!(
        store
            .next_run_at(&only(&["x"], &[]))
            .await
            .expect("next_run_at"),
        None,
        "a cancelled one does not count"
    );
}

// ---------------------------------------------------------------------------------------------
// Worker reports
// ---------------------------------------------------------------------------------------------

/// Changes of one operation that arrive together (and so may share a transaction) are applied
/// in turn, and each is answered with the operation as that change left it, not as a later one
/// in the same transaction did.
async fn concurrent_changes_of_one_operation_are_each_answered_as_they_left_it(
    store: Arc<dyn Store>,
    _clock: Arc<ManualClock>,
) {
    let op = submit_named(&*store, "t").await;
    let lease = claim_one(&*store).await;
    let mut beats = tokio::task::JoinSet::new();
    for k in 0..40 {
        let store = store.clone();
        beats.spawn(async move {
            let progress = Progress {
                pct: Some(f64::from(k)),
                detail: Some(format!("beat {k}")),
            };
            let answer = store
                .edit(
                    op.id,
                    crate::write::heartbeat(lease.lease_id, LEASE, progress),
                )
                .await
                .expect("heartbeat");
            (k, answer)
        });
    }
    let mut versions = HashMap::new();
    while let Some(beat) = beats.join_next().await {
        let (k, answer) = beat.expect("heartbeat task");
        assert_eq!(
            (answer.progress_pct, answer.status_detail.as_deref()),
            (Some(f64::from(k)), Some(format!("beat {k}").as_str())),
            "heartbeat {k} is answered with its own change"
        );
        assert!(
            versions.insert(answer.version, k).is_none(),
            "version {} answered twice",
            answer.version
        );
    }
    let now = get(&*store, op.id).await;
    let last = versions[&now.version];
    assert_eq!(now.version, 2 + 40, "every heartbeat counted once");
    assert_eq!(now.progress_pct, Some(f64::from(last)));
}

async fn heartbeat_extends_the_lease_and_records_progress(
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
) {
    let op = submit_named(&*store, "t").await;
    let lease = claim_one(&*store).await;
    clock.advance(Duration::seconds(20));
    let progress = Progress {
        pct: Some(40.0),
        detail: Some("page 3 of 7".into()),
    };
    let beat = store
        .heartbeat(op.id, lease.lease_id, LEASE, progress)
        .await
        .expect("heartbeat");
    assert!(!beat.cancel_requested);
    assert_eq!(beat.lease_expires_at, clock.now() + LEASE);
    let now = get(&*store, op.id).await;
    assert_eq!((now.status, now.version), (Status::Running, 3));
    assert_eq!(
        (now.progress_pct, now.status_detail.as_deref()),
        (Some(40.0), Some("page 3 of 7"))
    );
    assert_eq!(
        (now.lease_expires_at, now.updated_at),
        (Some(beat.lease_expires_at), clock.now())
    );

    clock.advance(Duration::seconds(20));
    assert_eq!(
        store.expire_leases().await.expect("expire"),
        0,
        "the heartbeat moved the expiry"
    );
    let pct_only = Progress {
        pct: Some(55.5),
        detail: None,
    };
    store
        .heartbeat(op.id, lease.lease_id, LEASE, pct_only)
        .await
        .expect("heartbeat");
    let now = get(&*store, op.id).await;
    assert_eq!((now.status, now.version), (Status::Running, 4));
    assert_eq!(
        (now.progress_pct, now.status_detail.as_deref()),
        (Some(55.5), Some("page 3 of 7")),
        "detail kept"
    );

    assert_eq!(
        store.cancel(op.id).await.expect("cancel").0,
        CancelOutcome::Requested
    );
    let beat = no_progress(&*store, op.id, lease.lease_id)
        .await
        .expect("heartbeat");
    assert!(
        beat.cancel_requested,
        "the heartbeat tells the worker to stop"
    );
}

async fn complete_records_the_outcome(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    let op = submit_named(&*store, "t").await;
    let lease = claim_one(&*store).await;
    clock.advance(Duration::seconds(3));
    let completion = Completion {
        result: Some(json!({"pages": 7, "ok": true})),
        result_url: Some("https://files.example.com/report.pdf".into()),
        resources: vec![Resource {
            id: "report-7".into(),
            url: "https://api.example.com/reports/7".into(),
        }],
    };
    let done = store
        .complete(op.id, lease.lease_id, completion.clone())
        .await
        .expect("complete");
    assert_eq!(
        (done.status, done.version),
        (Status::Succeeded, lease.operation.version + 1)
    );
    assert_eq!(done.result, completion.result);
    assert_eq!(done.result_url, completion.result_url);
    assert_eq!(done.resources, completion.resources);
    assert_eq!(
        (done.completed_at, done.updated_at),
        (Some(clock.now()), clock.now())
    );
    assert_eq!(
        (done.lease_expires_at, done.progress_pct, &done.error),
        (None, Some(100.0), &None)
    );
    assert_eq!(
        (done.started_at, done.execution_id),
        (lease.operation.started_at, Some(lease.lease_id))
    );
    assert_eq!(get(&*store, op.id).await, done);

    assert_err!(
        store
            .complete(op.id, lease.lease_id, Completion::default())
            .await,
        StoreError::Transition(TransitionError::Illegal {
            from: Status::Succeeded,
            ..
        })
    );
    assert_err!(
        no_progress(&*store, op.id, lease.lease_id).await,
        StoreError::Transition(TransitionError::Illegal {
            from: Status::Succeeded,
            ..
        })
    );
    assert_eq!(
        get(&*store, op.id).await,
        done,
        "a repeated report changes nothing"
    );
    assert_eq!(
        claim(&*store, &query(1)).await,
        Vec::<Uuid>::new(),
        "a finished operation is not claimed"
    );
}

async fn retryable_failure_backs_off_until_retries_run_out(
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
) {
    let policy = RetryPolicy {
        max_retries: 2,
        backoff_base_secs: 10.0,
        backoff_cap_secs: 15.0,
    };
    let op = submit(&*store, with_policy("t", 2, 10.0, 15.0)).await;
    assert_eq!(op.retry_policy, policy);

    // (retry number, the backoff before jitter: min(cap, base·2ⁿ))
    for (retry, full) in [(0u32, 10.0), (1, 15.0)] {
        let lease = claim_one(&*store).await;
        clock.advance(Duration::seconds(1));
        let now = clock.now();
        let retried = store
            .fail(op.id, lease.lease_id, failure("timeout", true))
            .await
            .expect("fail");
        assert_eq!(
            (retried.status, retried.retries),
            (Status::Pending, retry + 1)
        );
        assert_eq!(
            retried.error,
            Some(error("timeout")),
            "the attempt's error is kept"
        );
        assert_eq!(
            (retried.lease_expires_at, retried.completed_at),
            (None, None)
        );
        assert_eq!(
            retried.execution_id,
            Some(lease.lease_id),
            "executionId names the last attempt"
        );
        assert_eq!(retried.version, lease.operation.version + 1);
        let delay = retried.run_at - now;
        assert!(
            delay >= Duration::seconds_f64(full / 2.0) - Duration::milliseconds(1)
                && delay <= Duration::seconds_f64(full) + Duration::milliseconds(1),
            "retry {retry}: backoff {delay} outside [{}, {full}] s",
            full / 2.0
        );
        assert_close(
            retried.run_at,
            now + policy.delay(op.id, retry),
            "runAt follows the policy",
        );
        assert_eq!(get(&*store, op.id).await, retried);

        clock.advance(delay - Duration::milliseconds(2));
        assert_eq!(
            claim(&*store, &query(1)).await,
            Vec::<Uuid>::new(),
            "not ready before the backoff ends"
        );
        clock.advance(Duration::milliseconds(2));
    }

    let lease = claim_one(&*store).await;
    assert_eq!(lease.operation.retries, 2);
    let failed = store
        .fail(op.id, lease.lease_id, failure("timeout", true))
        .await
        .expect("fail");
    assert_eq!(
        (failed.status, failed.retries),
        (Status::Failed, 2),
        "retries are used up"
    );
    assert_eq!(
        (failed.completed_at, &failed.error),
        (Some(clock.now()), &Some(error("timeout")))
    );
    assert_eq!(get(&*store, op.id).await, failed);
    assert_eq!(claim(&*store, &query(1)).await, Vec::<Uuid>::new());
}

async fn fatal_failure_fails_at_once(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    let op = submit(&*store, with_policy("t", 5, 1.0, 10.0)).await;
    let lease = claim_one(&*store).await;
    clock.advance(Duration::seconds(2));
    let failed = store
        .fail(op.id, lease.lease_id, failure("bad_input", false))
        .await
        .expect("fail");
    assert_eq!(
        (failed.status, failed.retries, failed.version),
        (Status::Failed, 0, 3)
    );
    assert_eq!(
        (failed.completed_at, failed.lease_expires_at),
        (Some(clock.now()), None)
    );
    assert_eq!(failed.error, Some(error("bad_input")));
    assert_eq!(get(&*store, op.id).await, failed);
    assert_eq!(claim(&*store, &query(1)).await, Vec::<Uuid>::new());
}

async fn stale_lease_is_fenced(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    let op = submit(&*store, with_policy("t", 3, 1.0, 1.0)).await;
    let old = claim_one(&*store).await.lease_id;
    clock.advance(LEASE + Duration::seconds(1));
    assert_eq!(store.expire_leases().await.expect("expire"), 1);

    // Every report with a lease that is not the current one is refused and changes nothing.
    let id = op.id;
    let refused = |store: Arc<dyn Store>, lease: Uuid| async move {
        let before = get(&*store, id).await;
        let stale = |e: &StoreError| matches!(e, StoreError::Transition(TransitionError::StaleLease { lease: l }) if *l == lease);
        let complete = store
            .complete(
                id,
                lease,
                Completion {
                    result: Some(json!("late")),
                    ..Completion::default()
                },
            )
            .await;
        assert!(
            complete.as_ref().is_err_and(stale),
            "complete with a stale lease: {complete:?}"
        );
        for retryable in [true, false] {
            let fail = store.fail(id, lease, failure("late", retryable)).await;
            assert!(
                fail.as_ref().is_err_and(stale),
                "fail with a stale lease: {fail:?}"
            );
        }
        let progress = Progress {
            pct: Some(99.0),
            detail: Some("late".into()),
        };
        let beat = store.heartbeat(id, lease, LEASE, progress).await;
        assert!(
            beat.as_ref().is_err_and(stale),
            "heartbeat with a stale lease: {beat:?}"
        );
        let release = store.release(id, lease).await;
        assert!(
            release.as_ref().is_err_and(stale),
            "release with a stale lease: {release:?}"
        );
        assert_eq!(
            get(&*store, id).await,
            before,
            "refused reports change nothing"
        );
    };

    refused(store.clone(), old).await; // pending, waiting to retry
    clock.advance(Duration::seconds(1));
    let new = claim_one(&*store).await;
    assert_ne!(new.lease_id, old);
    refused(store.clone(), old).await; // running under the new lease
    refused(store.clone(), Uuid::now_v7()).await; // a lease never handed out

    let done = store
        .complete(op.id, new.lease_id, Completion::default())
        .await
        .expect("the current lease completes");
    assert_eq!(done.status, Status::Succeeded);
    refused(store.clone(), old).await; // finished by another attempt

    let unknown = Uuid::now_v7();
    assert_err!(store.complete(unknown, old, Completion::default()).await, StoreError::NotFound(id) if id == unknown);
    assert_err!(store.fail(unknown, old, failure("x", true)).await, StoreError::NotFound(id) if id == unknown);
    assert_err!(no_progress(&*store, unknown, old).await, StoreError::NotFound(id) if id == unknown);
    assert_err!(store.release(unknown, old).await, StoreError::NotFound(id) if id == unknown);
}

async fn expire_leases_ends_only_expired_leases(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    let retried = submit(&*store, with_policy("t", 3, 1.0, 1.0)).await;
    let exhausted = submit(&*store, with_policy("t", 0, 1.0, 1.0)).await;
    let cancelled = submit(&*store, with_policy("t", 3, 1.0, 1.0)).await;
    let short = ClaimQuery {
        lease: Duration::seconds(10),
        ..query(3)
    };
    assert_eq!(
        claim(&*store, &short).await,
        vec![retried.id, exhausted.id, cancelled.id]
    );
    let healthy = submit_named(&*store, "t").await;
    let long = ClaimQuery {
        lease: Duration::seconds(60),
        ..query(1)
    };
    assert_eq!(claim(&*store, &long).await, vec![healthy.id]);
    store.cancel(cancelled.id).await.expect("cancel");
    let pending = submit_named(&*store, "t").await;

    clock.advance(Duration::seconds(9));
    assert_eq!(
        store.expire_leases().await.expect("expire"),
        0,
        "no lease has run out yet"
    );
    clock.advance(Duration::seconds(2));
    let healthy_before = get(&*store, healthy.id).await;
    let pending_before = get(&*store, pending.id).await;
    assert_eq!(store.expire_leases().await.expect("expire"), 3);
    let now = clock.now();

    let op = get(&*store, retried.id).await;
    assert_eq!(
        (op.status, op.retries, op.lease_expires_at),
        (Status::Pending, 1, None),
        "a retry"
    );
    assert_eq!(
        op.error.as_ref().map(|e| e.code.as_str()),
        Some("lease_expired")
    );
    assert_close(
        op.run_at,
        now + op.retry_policy.delay(op.id, 0),
        "runAt after the backoff",
    );
    let op = get(&*store, exhausted.id).await;
    assert_eq!(
        (op.status, op.retries, op.completed_at),
        (Status::Failed, 0, Some(now)),
        "no retries left"
    );
    assert_eq!(
        op.error.as_ref().map(|e| e.code.as_str()),
        Some("lease_expired")
    );
    let op = get(&*store, cancelled.id).await;
    assert_eq!(
        (op.status, op.completed_at),
        (Status::Cancelled, Some(now)),
        "cancellation was requested"
    );
    assert_eq!(
        get(&*store, healthy.id).await,
        healthy_before,
        "an unexpired lease is untouched"
    );
    assert_eq!(
        get(&*store, pending.id).await,
        pending_before,
        "a pending operation is untouched"
    );

    let after_first: Vec<Operation> = current_states(
        &*store,
        &[retried.id, exhausted.id, cancelled.id, healthy.id],
    )
    .await;
    assert_eq!(
        store.expire_leases().await.expect("expire"),
        0,
        "nothing expires twice"
    );
    assert_eq!(
        current_states(
            &*store,
            &[retried.id, exhausted.id, cancelled.id, healthy.id]
        )
        .await,
        after_first
    );
}

/// The current state of several operations.
async fn current_states(store: &dyn Store, ids: &[Uuid]) -> Vec<Operation> {
    let mut ops = Vec::new();
    for id in ids {
        ops.push(get(store, *id).await);
    }
    ops
}

// ---------------------------------------------------------------------------------------------
// Cancel, delete, release, prune
// ---------------------------------------------------------------------------------------------

async fn cancel_pending_cancels_at_once(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    let op = submit_named(&*store, "t").await;
    clock.advance(Duration::seconds(1));
    let (outcome, cancelled) = store.cancel(op.id).await.expect("cancel");
    assert_eq!(outcome, CancelOutcome::Cancelled);
    assert_eq!(
        (cancelled.status, cancelled.version),
        (Status::Cancelled, 2)
    );
    assert_eq!(cancelled.completed_at, Some(clock.now()));
    assert_eq!(
        cancelled.error.as_ref().map(|e| e.code.as_str()),
        Some("cancelled")
    );
    assert_eq!(get(&*store, op.id).await, cancelled);
    assert_eq!(
        claim(&*store, &query(1)).await,
        Vec::<Uuid>::new(),
        "a cancelled operation is never claimed"
    );
    let unknown = Uuid::now_v7();
    assert_err!(store.cancel(unknown).await, StoreError::NotFound(id) if id == unknown);
}

async fn cancel_running_is_a_request_the_worker_honours(
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
) {
    // Requested, then the worker stops with a (retryable) failure: cancelled, not retried.
    let op = submit(&*store, with_policy("stops", 3, 1.0, 1.0)).await;
    let lease = claim_one(&*store).await;
    let (outcome, requested) = store.cancel(op.id).await.expect("cancel");
    assert_eq!(outcome, CancelOutcome::Requested);
    assert_eq!(
        (
            requested.status,
            requested.cancel_requested,
            requested.version
        ),
        (Status::Running, true, 3)
    );
    assert_eq!(get(&*store, op.id).await, requested);
    let (outcome, again) = store.cancel(op.id).await.expect("cancel again");
    assert_eq!(
        (outcome, again.version),
        (CancelOutcome::Requested, 3),
        "a repeated request changes nothing"
    );
    assert!(
        no_progress(&*store, op.id, lease.lease_id)
            .await
            .expect("heartbeat")
            .cancel_requested
    );
    clock.advance(Duration::seconds(1));
    let ended = store
        .fail(op.id, lease.lease_id, failure("stopped", true))
        .await
        .expect("fail");
    assert_eq!(
        (ended.status, ended.retries, ended.completed_at),
        (Status::Cancelled, 0, Some(clock.now()))
    );
    assert_eq!(get(&*store, op.id).await, ended);

    // Requested, but the worker finishes first: finished work is not undone.
    let op = submit_named(&*store, "finishes").await;
    let lease = claim_one(&*store).await;
    store.cancel(op.id).await.expect("cancel");
    let done = store
        .complete(op.id, lease.lease_id, Completion::default())
        .await
        .expect("complete");
    assert_eq!(done.status, Status::Succeeded);

    // Requested, then the worker gives it back: cancelled rather than requeued.
    let op = submit_named(&*store, "released").await;
    let lease = claim_one(&*store).await;
    store.cancel(op.id).await.expect("cancel");
    let released = store.release(op.id, lease.lease_id).await.expect("release");
    assert_eq!(released.status, Status::Cancelled);
    assert_eq!(claim(&*store, &query(1)).await, Vec::<Uuid>::new());
}

async fn cancel_terminal_changes_nothing(store: Arc<dyn Store>, _clock: Arc<ManualClock>) {
    for status in [Status::Succeeded, Status::Failed, Status::Cancelled] {
        let op = finish(&*store, status.as_str(), status).await;
        assert_eq!(op.status, status);
        assert_err!(
            store.cancel(op.id).await,
            StoreError::Transition(TransitionError::Illegal { from, .. }) if from == status
        );
        assert_eq!(
            get(&*store, op.id).await,
            op,
            "cancel of a {status} operation changes nothing"
        );
    }
}

async fn delete_forgets_only_terminal_operations(store: Arc<dyn Store>, _clock: Arc<ManualClock>) {
    for status in [Status::Succeeded, Status::Failed, Status::Cancelled] {
        let op = finish(&*store, status.as_str(), status).await;
        store
            .delete(op.id)
            .await
            .expect("delete a terminal operation");
        assert_eq!(
            store.get(op.id).await.expect("get"),
            None,
            "a deleted {status} operation is gone"
        );
        assert_err!(store.delete(op.id).await, StoreError::NotFound(id) if id == op.id);
    }
    assert_eq!(
        list(&*store, all()).await,
        Vec::<Uuid>::new(),
        "deleted operations are not listed"
    );

    let pending = submit_named(&*store, "pending").await;
    assert_err!(
        store.delete(pending.id).await,
        StoreError::NotTerminal { id, status: Status::Pending } if id == pending.id
    );
    claim_one(&*store).await;
    let running = get(&*store, pending.id).await;
    assert_err!(
        store.delete(running.id).await,
        StoreError::NotTerminal { id, status: Status::Running } if id == running.id
    );
    assert_eq!(get(&*store, running.id).await, running);
    let unknown = Uuid::now_v7();
    assert_err!(store.delete(unknown).await, StoreError::NotFound(id) if id == unknown);
}

async fn release_returns_the_operation_without_a_retry(
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
) {
    let op = submit(&*store, with_policy("t", 3, 1.0, 1.0)).await;
    let first = claim_one(&*store).await;
    store
        .fail(op.id, first.lease_id, failure("flaky", true))
        .await
        .expect("fail");
    clock.advance(Duration::seconds(1));
    let lease = claim_one(&*store).await;
    clock.advance(Duration::seconds(5));

    let released = store.release(op.id, lease.lease_id).await.expect("release");
    assert_eq!(
        (released.status, released.retries),
        (Status::Pending, 1),
        "a release is not a retry"
    );
    assert_eq!(
        (released.run_at, released.lease_expires_at),
        (clock.now(), None),
        "ready at once"
    );
    assert_eq!(released.version, lease.operation.version + 1);
    assert_eq!(get(&*store, op.id).await, released);

    let again = claim_one(&*store).await;
    assert_eq!(again.operation.id, op.id, "claimable again at once");
    let stale = lease.lease_id;
    assert_err!(
        store.release(op.id, stale).await,
        StoreError::Transition(TransitionError::StaleLease { lease }) if lease == stale
    );
}

async fn prune_deletes_only_old_terminal_operations(
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
) {
    let t0 = clock.now();
    let old: Vec<Operation> = vec![
        finish(&*store, "s", Status::Succeeded).await,
        finish(&*store, "f", Status::Failed).await,
        finish(&*store, "c", Status::Cancelled).await,
    ];
    let pending = submit_named(&*store, "pending").await;
    let running_query = ClaimQuery {
        lease: Duration::hours(3),
        ..filtered(&["running"], &[], 1)
    };
    submit_named(&*store, "running").await;
    let running = store
        .claim(&running_query)
        .await
        .expect("claim")
        .pop()
        .expect("lease")
        .operation;
    clock.advance(Duration::hours(1));
    let t1 = clock.now();
    let recent = finish(&*store, "recent", Status::Succeeded).await;

    assert_eq!(
        store
            .prune(t0 + Duration::minutes(30))
            .await
            .expect("prune"),
        3
    );
    for op in &old {
        assert_eq!(
            store.get(op.id).await.expect("get"),
            None,
            "old {} pruned",
            op.status
        );
    }
    assert_eq!(
        get(&*store, pending.id).await,
        pending,
        "pending kept, however old"
    );
    assert_eq!(
        get(&*store, running.id).await,
        running,
        "running kept, however old"
    );
    assert_eq!(get(&*store, recent.id).await, recent);
    assert_eq!(
        store.prune(t1).await.expect("prune"),
        0,
        "completed at the cutoff is not before it"
    );
    assert_eq!(
        store.prune(t1 + Duration::seconds(1)).await.expect("prune"),
        1
    );
    assert_eq!(list(&*store, all()).await, vec![running.id, pending.id]);
}

// ---------------------------------------------------------------------------------------------
// Notifications, health, storage fidelity
// ---------------------------------------------------------------------------------------------

async fn subscribe_sees_every_change(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    let mut changes = store.subscribe();
    let change = |op: &Operation, version, status| Change {
        id: op.id,
        version,
        status,
    };

    let op = submit(&*store, with_policy("t", 3, 1.0, 1.0)).await;
    assert_eq!(
        next_change(&mut changes).await,
        change(&op, 1, Status::Pending),
        "submit"
    );
    let lease = claim_one(&*store).await;
    assert_eq!(
        next_change(&mut changes).await,
        change(&op, 2, Status::Running),
        "claim"
    );
    no_progress(&*store, op.id, lease.lease_id)
        .await
        .expect("heartbeat");
    assert_eq!(
        next_change(&mut changes).await,
        change(&op, 3, Status::Running),
        "heartbeat"
    );
    store
        .fail(op.id, lease.lease_id, failure("flaky", true))
        .await
        .expect("fail");
    assert_eq!(
        next_change(&mut changes).await,
        change(&op, 4, Status::Pending),
        "retry"
    );
    clock.advance(Duration::seconds(1));
    let lease = claim_one(&*store).await;
    assert_eq!(
        next_change(&mut changes).await,
        change(&op, 5, Status::Running),
        "claim"
    );
    store.release(op.id, lease.lease_id).await.expect("release");
    assert_eq!(
        next_change(&mut changes).await,
        change(&op, 6, Status::Pending),
        "release"
    );
    claim_one(&*store).await;
    assert_eq!(
        next_change(&mut changes).await,
        change(&op, 7, Status::Running),
        "claim"
    );
    clock.advance(LEASE + Duration::seconds(1));
    store.expire_leases().await.expect("expire");
    assert_eq!(
        next_change(&mut changes).await,
        change(&op, 8, Status::Pending),
        "lease expiry"
    );
    clock.advance(Duration::seconds(1));
    let lease = claim_one(&*store).await;
    assert_eq!(
        next_change(&mut changes).await,
        change(&op, 9, Status::Running),
        "claim"
    );
    store.cancel(op.id).await.expect("cancel");
    assert_eq!(
        next_change(&mut changes).await,
        change(&op, 10, Status::Running),
        "cancel request"
    );
    store
        .complete(op.id, lease.lease_id, Completion::default())
        .await
        .expect("complete");
    assert_eq!(
        next_change(&mut changes).await,
        change(&op, 11, Status::Succeeded),
        "complete"
    );

    let other = submit_named(&*store, "t").await;
    assert_eq!(
        next_change(&mut changes).await,
        change(&other, 1, Status::Pending),
        "submit"
    );
    store.cancel(other.id).await.expect("cancel");
    assert_eq!(
        next_change(&mut changes).await,
        change(&other, 2, Status::Cancelled),
        "cancel"
    );

    let _ = store.cancel(other.id).await;
    let _ = store
        .complete(op.id, lease.lease_id, Completion::default())
        .await;
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    assert_eq!(
        changes.try_recv(),
        Err(broadcast::error::TryRecvError::Empty),
        "one notification per change, none for refused changes"
    );
}

async fn a_waiter_learns_at_once_that_its_operation_was_deleted(
    store: Arc<dyn Store>,
    _clock: Arc<ManualClock>,
) {
    let op = finish(&*store, "gone", Status::Succeeded).await;
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            wait_for_change(&*store, op.id, op.version, StdDuration::from_secs(30)).await
        })
    };
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    let started = Instant::now();
    store.delete(op.id).await.expect("delete");
    let seen = tokio::time::timeout(PROMPT, waiter)
        .await
        .expect("the waiter returns promptly")
        .expect("join");
    assert_eq!(
        seen.expect("wait"),
        None,
        "the waiter sees the operation gone"
    );
    assert!(started.elapsed() < PROMPT);
}

fn new_key(customer: i64, role: crate::Role) -> crate::NewKey {
    crate::NewKey {
        customer,
        customer_name: format!("customer {customer}"),
        user: 7,
        user_name: "ada".into(),
        role,
        names: vec!["reports.render".into()],
        queues: vec![],
    }
}

async fn keys_are_stored_without_their_secret_and_found_by_id(
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
) {
    assert!(
        !store.has_active_keys().await.expect("has keys"),
        "a fresh store has no keys"
    );
    let token = crate::Token::generate();
    let key = store
        .create_key(new_key(3, crate::Role::Worker), &token)
        .await
        .expect("create key");
    assert_eq!(key.id, token.id);
    assert_eq!(key.created_at, clock.now());
    assert_eq!(
        (key.customer, key.role, key.revoked_at),
        (3, crate::Role::Worker, None)
    );
    assert_eq!(key.names, vec!["reports.render".to_owned()]);

    let (found, hash) = store
        .find_key(token.id)
        .await
        .expect("find key")
        .expect("the key exists");
    assert_eq!(found, key);
    assert!(token.matches(&hash), "the stored hash verifies the token");
    assert!(
        !hash.contains(&token.secret),
        "the secret itself is not stored"
    );
    assert!(
        store
            .find_key(crate::Token::generate().id)
            .await
            .expect("find")
            .is_none()
    );

    clock.advance(Duration::seconds(1));
    let second = store
        .create_key(new_key(4, crate::Role::Admin), &crate::Token::generate())
        .await
        .expect("create");
    let listed = store.list_keys().await.expect("list keys");
    assert_eq!(listed, vec![key, second], "oldest first");
    assert!(store.has_active_keys().await.expect("has keys"));
}

async fn revoking_a_key_takes_effect_once(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    let token = crate::Token::generate();
    store
        .create_key(new_key(1, crate::Role::Submitter), &token)
        .await
        .expect("create");
    clock.advance(Duration::seconds(5));
    let revoked = store.revoke_key(token.id).await.expect("revoke");
    assert_eq!(revoked.revoked_at, Some(clock.now()));
    assert_eq!(
        store
            .find_key(token.id)
            .await
            .expect("find")
            .expect("kept")
            .0,
        revoked
    );
    assert!(
        !store.has_active_keys().await.expect("has keys"),
        "the only key is revoked"
    );

    clock.advance(Duration::seconds(5));
    let again = store.revoke_key(token.id).await.expect("revoke again");
    assert_eq!(
        again, revoked,
        "revoking twice keeps the first revocation time"
    );
    assert_err!(
        store.revoke_key(crate::Token::generate().id).await,
        StoreError::KeyNotFound(_)
    );
}

async fn ping_answers(store: Arc<dyn Store>, _clock: Arc<ManualClock>) {
    store.ping().await.expect("ping");
}

async fn every_field_survives_storage(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    let parent = submit_named(&*store, "parent").await;
    clock.advance(Duration::seconds(1));
    let now = clock.now();
    let new = NewOperation {
        name: "reports.render".into(),
        queue: "reports".into(),
        priority: -7,
        args: json!([1, "two", {"three": 3.5}, null, [true, false], -9_007_199_254_740_993i64]),
        kwargs: json!({"format": "pdf", "nested": {"émoji ✓": "\"quoted\"\n\ttabbed", "empty": {}}}),
        content: Some(json!({"body": "0123456789".repeat(100), "list": []})),
        meta: Meta {
            url: Some("https://api.example.com/v1/collections/7?x=1&y=2".into()),
            model: Some("collection".into()),
            action: Some("create".into()),
        },
        parent_id: Some(parent.id),
        run_at: Some(now - Duration::minutes(5)),
        retry_policy: RetryPolicy {
            max_retries: 7,
            backoff_base_secs: 0.25,
            backoff_cap_secs: 90.5,
        },
        trace: TraceIds::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("traceparent"),
        owner: Owner {
            customer: 9_007_199_254_740_993,
            user: 9001,
            user_name: "Ada Lovelace ✓".into(),
        },
        idempotency: Some(Idempotency {
            key: "round-trip".into(),
            fingerprint: "sha256:abc".into(),
        }),
    };
    let submitted = submit(&*store, new.clone()).await;
    let mut expected = new.into_operation(submitted.id, Some(parent.id), now);
    expected.seq = submitted.seq;
    assert_eq!(submitted, expected, "submit stores exactly what was asked");
    assert_eq!(get(&*store, submitted.id).await, submitted);

    let lease = claim_named(&*store, "reports.render").await;
    assert_eq!(get(&*store, submitted.id).await, lease.operation);
    clock.advance(Duration::seconds(2));
    let progress = Progress {
        pct: Some(33.3),
        detail: Some("page 3 of 7 — «ok»".into()),
    };
    store
        .heartbeat(submitted.id, lease.lease_id, LEASE, progress)
        .await
        .expect("heartbeat");
    let beaten = get(&*store, submitted.id).await;
    assert_eq!(
        (beaten.progress_pct, beaten.status_detail.as_deref()),
        (Some(33.3), Some("page 3 of 7 — «ok»"))
    );

    clock.advance(Duration::seconds(2));
    let completion = Completion {
        result: Some(
            json!({"rows": [[1, 2.5], ["a", null]], "big": 18_446_744_073_709_551_615u64}),
        ),
        result_url: Some("https://files.example.com/r/7.pdf".into()),
        resources: vec![
            Resource {
                id: "a".into(),
                url: "https://api.example.com/a".into(),
            },
            Resource {
                id: "b".into(),
                url: "https://api.example.com/b".into(),
            },
        ],
    };
    let done = store
        .complete(submitted.id, lease.lease_id, completion.clone())
        .await
        .expect("complete");
    let mut expected = beaten;
    expected
        .succeed(
            lease.lease_id,
            completion.result,
            completion.result_url,
            completion.resources,
            clock.now(),
        )
        .expect("succeed");
    assert_eq!(
        done, expected,
        "complete stores exactly the lifecycle's outcome"
    );
    let stored = get(&*store, submitted.id).await;
    assert_eq!(stored, done);
    assert_eq!(
        serde_json::to_value(&stored).expect("json"),
        serde_json::to_value(&done).expect("json"),
        "the canonical JSON is the same"
    );

    // A failure's error, with its type and message, survives as well.
    let failing = submit_named(&*store, "fails").await;
    let lease = claim_named(&*store, "fails").await;
    let error = OperationError {
        code: "E_QUOTA".into(),
        error_type: "QuotaExceeded".into(),
        message: "quota of 10 GiB exceeded — try later\nline 2".into(),
    };
    let failed = store
        .fail(
            failing.id,
            lease.lease_id,
            Failure {
                error: error.clone(),
                retryable: false,
            },
        )
        .await
        .expect("fail");
    assert_eq!(failed.error, Some(error));
    assert_eq!(get(&*store, failing.id).await, failed);
}

// ---------------------------------------------------------------------------------------------
// Waiting (real time, generous bounds)
// ---------------------------------------------------------------------------------------------

async fn claim_or_wait_wakes_on_submit_and_release(
    store: Arc<dyn Store>,
    _clock: Arc<ManualClock>,
) {
    let started = Instant::now();
    let leases = claim_or_wait(&*store, &query(1), StdDuration::from_millis(300))
        .await
        .expect("claim_or_wait");
    assert!(leases.is_empty());
    assert!(
        started.elapsed() >= StdDuration::from_millis(300),
        "waited the full wait when nothing came"
    );

    let waiting = |store: Arc<dyn Store>| {
        tokio::spawn(
            async move { claim_or_wait(&*store, &query(1), StdDuration::from_secs(30)).await },
        )
    };
    let waiter = waiting(store.clone());
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    let started = Instant::now();
    let op = submit_named(&*store, "t").await;
    let leases = tokio::time::timeout(PROMPT, waiter)
        .await
        .expect("a submit wakes a waiting claim within 5 s")
        .expect("waiter task")
        .expect("claim_or_wait");
    assert_eq!(
        leases.iter().map(|l| l.operation.id).collect::<Vec<_>>(),
        vec![op.id]
    );
    assert!(started.elapsed() < PROMPT);

    let waiter = waiting(store.clone());
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    store
        .release(op.id, leases[0].lease_id)
        .await
        .expect("release");
    let leases = tokio::time::timeout(PROMPT, waiter)
        .await
        .expect("a release wakes a waiting claim within 5 s")
        .expect("waiter task")
        .expect("claim_or_wait");
    assert_eq!(
        leases.iter().map(|l| l.operation.id).collect::<Vec<_>>(),
        vec![op.id]
    );
}

/// A claimer of this process that waits for work is handed an operation it accepts in the
/// transaction that stores it: the submit already answers it running under that claimer's
/// lease; an operation it does not accept stays pending.
async fn a_waiting_claimer_is_handed_a_new_operation_in_its_submit(
    store: Arc<dyn Store>,
    _clock: Arc<ManualClock>,
) {
    let query = ClaimQuery {
        worker: "waiting".into(),
        filter: ClaimFilter {
            names: vec!["handed".into()],
            queues: vec![],
        },
        max: 4,
        lease: LEASE,
    };
    let other = submit_named(&*store, "other").await;
    let claimer = {
        let store = store.clone();
        tokio::spawn(
            async move { claim_or_wait(&*store, &query, StdDuration::from_secs(30)).await },
        )
    };
    let handoffs = store
        .handoffs()
        .expect("the store hands operations over")
        .clone();
    let deadline = Instant::now() + PROMPT;
    while handoffs.waiting_claimers() == 0 {
        assert!(Instant::now() < deadline, "the claimer waits");
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    let handed = submit_named(&*store, "handed").await;
    let leases = tokio::time::timeout(PROMPT, claimer)
        .await
        .expect("the claimer is answered within 5 s")
        .expect("claimer task")
        .expect("claim_or_wait");
    assert_eq!(leases.len(), 1);
    let lease = &leases[0];
    assert_eq!(lease.operation, handed);
    assert_eq!(handed.status, Status::Running);
    assert_eq!(handed.worker.as_deref(), Some("waiting"));
    assert_eq!(handed.execution_id, Some(lease.lease_id));
    assert_eq!(get(&*store, handed.id).await, handed, "stored as answered");
    assert_eq!(get(&*store, other.id).await, other, "not for this claimer");
    store
        .complete(handed.id, lease.lease_id, Completion::default())
        .await
        .expect("the lease handed over is current");
}

async fn wait_for_change_returns_on_change(store: Arc<dyn Store>, _clock: Arc<ManualClock>) {
    let op = submit_named(&*store, "t").await;
    let started = Instant::now();
    let seen_older = wait_for_change(&*store, op.id, 0, StdDuration::from_secs(30))
        .await
        .expect("wait");
    assert_eq!(
        seen_older,
        Some(op.clone()),
        "a version other than the one seen answers at once"
    );
    assert!(started.elapsed() < PROMPT);

    let started = Instant::now();
    let unchanged = wait_for_change(&*store, op.id, 1, StdDuration::from_millis(300))
        .await
        .expect("wait");
    assert_eq!(
        unchanged,
        Some(op.clone()),
        "no change: the operation as it is after the wait"
    );
    assert!(started.elapsed() >= StdDuration::from_millis(300));

    let waiter = {
        let store = store.clone();
        tokio::spawn(
            async move { wait_for_change(&*store, op.id, 1, StdDuration::from_secs(30)).await },
        )
    };
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    let (_, cancelled) = store.cancel(op.id).await.expect("cancel");
    let changed = tokio::time::timeout(PROMPT, waiter)
        .await
        .expect("a change wakes the waiter within 5 s")
        .expect("waiter task")
        .expect("wait");
    assert_eq!(changed, Some(cancelled));
}
