//! The store conformance suite against SQLite (one fresh database file per case), plus what
//! only a file-backed store can show: data outlives the process that wrote it, and two stores
//! on one file share its operations safely.

use std::collections::HashSet;
use std::sync::Arc;

use longrun_core::conformance::StoreFactory;
use longrun_core::conformance::shared;
use longrun_core::{
    ClaimFilter, ClaimQuery, Clock, Completion, Idempotency, Lease, ListQuery, ManualClock,
    NewOperation, Operation, Progress, Status, Store,
};
use longrun_sqlite::SqliteStore;
use tempfile::TempDir;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// Fresh SQLite files in a temporary directory that lives as long as the factory.
struct Sqlite(TempDir);

impl Sqlite {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("temporary directory"))
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.0.path().join("longrun.db").display())
    }
}

impl StoreFactory for Sqlite {
    async fn fresh(&self, clock: Arc<dyn Clock>) -> Arc<dyn Store> {
        Arc::new(
            SqliteStore::open(&self.url(), clock)
                .await
                .expect("open SQLite store"),
        )
    }
}

longrun_core::conformance_tests!(Sqlite::new());

fn clock() -> Arc<ManualClock> {
    let now = OffsetDateTime::now_utc();
    Arc::new(ManualClock::new(
        now.replace_millisecond(now.millisecond())
            .expect("millisecond"),
    ))
}

fn claim_query(max: u32) -> ClaimQuery {
    ClaimQuery {
        worker: "w".into(),
        filter: ClaimFilter::default(),
        max,
        lease: Duration::seconds(30),
    }
}

fn keyed(name: &str) -> NewOperation {
    NewOperation {
        idempotency: Some(Idempotency {
            key: format!("key-{name}"),
            fingerprint: "fp".into(),
        }),
        ..NewOperation::named(name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_closing_and_reopening_the_file() {
    let dir = Sqlite::new();
    let clock = clock();
    let bare_path = dir.0.path().join("longrun.db").display().to_string();
    let store = SqliteStore::open(&bare_path, clock.clone())
        .await
        .expect("open by bare path");

    let waiting = store
        .submit(keyed("waiting"))
        .await
        .expect("submit")
        .operation;
    let running = store
        .submit(keyed("running"))
        .await
        .expect("submit")
        .operation;
    let done = store.submit(keyed("done")).await.expect("submit").operation;
    let mut leases = store.claim(&claim_query(3)).await.expect("claim");
    assert_eq!(leases.len(), 3);
    let done_lease = leases.pop().expect("lease");
    let running_lease = leases.pop().expect("lease");
    assert_eq!(
        (running_lease.operation.id, done_lease.operation.id),
        (running.id, done.id)
    );
    let completion = Completion {
        result: Some(serde_json::json!({"ok": true})),
        ..Completion::default()
    };
    store
        .complete(done.id, done_lease.lease_id, completion)
        .await
        .expect("complete");
    store
        .release(waiting.id, leases[0].lease_id)
        .await
        .expect("release");
    let child = store
        .submit(NewOperation {
            parent_id: Some(waiting.id),
            ..keyed("child")
        })
        .await
        .expect("submit")
        .operation;

    let everything = ListQuery {
        limit: 100,
        ..ListQuery::default()
    };
    let before = store.list(&everything).await.expect("list").operations;
    assert_eq!(before.len(), 4);
    store.close().await;
    drop(store);

    let store = SqliteStore::open(&dir.url(), clock.clone())
        .await
        .expect("reopen by URL");
    let after = store.list(&everything).await.expect("list").operations;
    assert_eq!(after, before, "every operation, every field, as it was");
    assert_eq!(
        store.get(child.id).await.expect("get").map(|op| op.root_id),
        Some(waiting.id)
    );

    let again = store.submit(keyed("done")).await.expect("resubmit");
    assert_eq!(
        (again.created, again.operation.id),
        (false, done.id),
        "idempotency keys are remembered"
    );
    let newer = store
        .submit(NewOperation::named("newer"))
        .await
        .expect("submit")
        .operation;
    assert!(
        newer.seq > before[0].seq,
        "seq keeps increasing after a reopen"
    );

    let finished = store
        .complete(running.id, running_lease.lease_id, Completion::default())
        .await
        .expect("a lease taken before the reopen is still current");
    assert_eq!(finished.status, Status::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_hand_each_operation_out_once() {
    let dir = Sqlite::new();
    let (first, second) = two_stores(&dir, clock()).await;
    let mut submitted = HashSet::new();
    for i in 0..100 {
        let store = if i % 2 == 0 { &first } else { &second };
        submitted.insert(
            store
                .submit(NewOperation::named("t"))
                .await
                .expect("submit")
                .operation
                .id,
        );
    }

    let mut claimers = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        claimers.spawn(async move {
            let mut claimed = Vec::new();
            loop {
                let batch = store.claim(&claim_query(3)).await.expect("claim");
                if batch.is_empty() {
                    return claimed;
                }
                claimed.extend(batch.into_iter().map(|lease| lease.operation.id));
            }
        });
    }
    let mut claimed = Vec::new();
    while let Some(batch) = claimers.join_next().await {
        claimed.extend(batch.expect("claimer task"));
    }
    assert_eq!(
        claimed.len(),
        100,
        "no operation handed out twice across stores"
    );
    assert_eq!(claimed.into_iter().collect::<HashSet<_>>(), submitted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_opening_one_fresh_file_at_once_migrate_it_once() {
    let dir = Sqlite::new();
    let clock = clock();
    let opening: Vec<_> = (0..4)
        .map(|_| {
            let (url, clock) = (dir.url(), clock.clone());
            tokio::spawn(async move { SqliteStore::open(&url, clock).await })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opening {
        stores.push(open.await.expect("open task").expect("open"));
    }
    let first = stores[0]
        .submit(NewOperation::named("t"))
        .await
        .expect("submit")
        .operation;
    for store in &stores {
        assert_eq!(
            store.get(first.id).await.expect("get"),
            Some(first.clone()),
            "every store has the one schema and sees the others' rows"
        );
    }
}

/// Commits land in the WAL; the store's checkpoint thread moves them into the database file
/// soon after, though no commit ever checkpoints (and fewer pages were written than SQLite's
/// own automatic checkpoint waits for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_checkpointed_in_the_background() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("longrun.db");
    let store = SqliteStore::open_default(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let file_size = || std::fs::metadata(&path).unwrap().len();
    let before = file_size();
    let submits = (0..2000).map(|i| {
        let mut new = NewOperation::named("fill");
        new.kwargs = serde_json::json!({ "i": i, "pad": "x".repeat(200) });
        store.submit(new)
    });
    for submitted in futures::future::join_all(submits).await {
        submitted.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while file_size() < before + 1_000_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {} bytes",
            file_size()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    store.close().await;
}

/// Under writes that never pause, with a reader polling alongside, the WAL is still written
/// again from its start now and then, so its file stays small instead of growing with every
/// commit (it passed 1 GB in a 12 s benchmark before the writer restarted it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_small_under_writes_that_never_pause() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("longrun.db");
    let wal = dir.path().join("longrun.db-wal");
    let store = Arc::new(
        SqliteStore::open_default(&format!("sqlite://{}", path.display()))
            .await
            .unwrap(),
    );
    let polled = store.submit(NewOperation::named("polled")).await.unwrap();
    let (stop, written) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                store.get(polled.operation.id).await.unwrap().unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    // Two writers, so one always has a batch queued while the other's is written.
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop, written) = (store.clone(), stop.clone(), written.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let submits = (0..100).map(|i| {
                        let mut new = NewOperation::named("fill");
                        new.kwargs = serde_json::json!({ "i": i, "pad": "x".repeat(1000) });
                        store.submit(new)
                    });
                    for submitted in futures::future::join_all(submits).await {
                        submitted.unwrap();
                    }
                    written.fetch_add(100, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Each operation is over 1 KB: without restarts the WAL would be at least that long. With
    // them it holds what was written since the last restart: past the restart threshold
    // (16 MB), by what a fast writer adds between the checkpoint thread's measurements and a
    // restart that had to wait for a reader (45 MB was seen once on a loaded machine).
    const APPENDED: usize = 128 << 20;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while written.load(Ordering::Relaxed) * 1024 < APPENDED {
        assert!(std::time::Instant::now() < deadline, "too slow to write");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in writers.into_iter().chain([reader]) {
        task.await.unwrap();
    }
    let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert!(
        size < (APPENDED / 2) as u64,
        "the WAL file grew to {size} bytes while {APPENDED} were written"
    );
    store.close().await;
}

/// What the file holds for the one operation: its row's status and version, and whether a
/// claim not yet written into the row holds it.
fn stored(factory: &Sqlite) -> (String, i64, bool) {
    let conn = rusqlite::Connection::open(factory.0.path().join("longrun.db")).expect("open");
    conn.query_row(
        "SELECT status, version, EXISTS (SELECT 1 FROM claims) FROM operations",
        [],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )
    .expect("the row")
}

/// Submits an operation and claims it.
async fn submitted_and_claimed(store: &dyn Store) -> (Operation, Lease) {
    let submitted = store
        .submit(NewOperation::named("a"))
        .await
        .expect("submit")
        .operation;
    let lease = store
        .claim(&claim_query(1))
        .await
        .expect("claim")
        .pop()
        .expect("a lease");
    (submitted, lease)
}

/// A row an earlier version wrote, its body as JSON text, reads as before, and its next change
/// writes the body in the stored form of now.
#[tokio::test]
async fn a_body_stored_as_json_is_read_and_rewritten_at_the_next_change() {
    let factory = Sqlite::new();
    let store = factory.fresh(clock()).await;
    let submitted = store
        .submit(NewOperation::named("a"))
        .await
        .expect("submit")
        .operation;
    let conn = rusqlite::Connection::open(factory.0.path().join("longrun.db")).expect("open");
    let body_type = || -> String {
        conn.query_row("SELECT typeof(body) FROM operations", [], |row| row.get(0))
            .expect("the row")
    };
    assert_eq!(body_type(), "blob");
    conn.execute(
        "UPDATE operations SET body = ?1",
        [serde_json::to_string(&submitted).expect("JSON")],
    )
    .expect("write the body as JSON");
    assert_eq!(body_type(), "text");
    shared::a_row_an_earlier_version_wrote_reads_and_changes(&*store, &submitted).await;
    assert_eq!(body_type(), "blob");
}

/// A file whose ids were written as text, before migration 0005 stored them as their 16 bytes,
/// keeps every operation through it: they read by id, list by parent and by root, take
/// children, and a new operation's seq comes after every seq handed out before (a deleted
/// operation's too).
#[tokio::test]
async fn ids_written_as_text_read_as_before_after_the_migration() {
    let factory = Sqlite::new();
    let clock = clock();
    let now = clock.now();
    let parent = NewOperation::named("parent").into_operation(Uuid::now_v7(), None, now);
    let child = NewOperation {
        parent_id: Some(parent.id),
        ..NewOperation::named("child")
    }
    .into_operation(Uuid::now_v7(), Some(parent.id), now);
    let deleted = NewOperation::named("deleted").into_operation(Uuid::now_v7(), None, now);
    {
        let conn = rusqlite::Connection::open(factory.0.path().join("longrun.db")).expect("open");
        conn.execute_batch(concat!(
            include_str!("../migrations/0001_operations.sql"),
            include_str!("../migrations/0002_api_keys.sql"),
            include_str!("../migrations/0003_claim_indexes.sql"),
            include_str!("../migrations/0004_claims.sql"),
            "PRAGMA user_version = 4;"
        ))
        .expect("the schema before 0005");
        for op in [&parent, &child, &deleted] {
            conn.execute(
                "INSERT INTO operations (id, name, queue, priority, status, run_at, parent_id,
                     root_id, customer, created_by, version, body)
                 VALUES (?1, ?2, 'default', 0, 'pending', 0, ?3, ?4, 0, 0, ?5, ?6)",
                rusqlite::params![
                    op.id.to_string(),
                    op.name,
                    op.parent_id.map(|id| id.to_string()),
                    op.root_id.to_string(),
                    op.version,
                    serde_json::to_string(op).expect("JSON"),
                ],
            )
            .expect("a row as the earlier version wrote it");
        }
        conn.execute("DELETE FROM operations WHERE name = 'deleted'", [])
            .expect("delete the last");
    }

    let store = factory.fresh(clock).await;
    let read = |id| {
        let store = store.clone();
        async move { store.get(id).await.expect("get").expect("found") }
    };
    assert_eq!(read(parent.id).await.name, "parent");
    let read_child = read(child.id).await;
    assert_eq!(
        (read_child.parent_id, read_child.root_id),
        (Some(parent.id), parent.id)
    );
    assert_eq!(store.get(deleted.id).await.expect("get"), None);
    let listed = |query: ListQuery| {
        let store = store.clone();
        async move {
            let page = store
                .list(&ListQuery { limit: 10, ..query })
                .await
                .expect("list");
            page.operations
                .into_iter()
                .map(|op| op.id)
                .collect::<Vec<_>>()
        }
    };
    let by_parent = ListQuery {
        parent_id: Some(parent.id),
        ..ListQuery::default()
    };
    assert_eq!(listed(by_parent).await, [child.id]);
    let by_root = ListQuery {
        root_id: Some(parent.id),
        ..ListQuery::default()
    };
    assert_eq!(listed(by_root).await, [child.id, parent.id]);

    let grandchild = store
        .submit(NewOperation {
            parent_id: Some(child.id),
            ..NewOperation::named("grandchild")
        })
        .await
        .expect("a child of a migrated operation")
        .operation;
    assert_eq!(
        grandchild.root_id, parent.id,
        "the root read from the parent's row"
    );
    assert_eq!(grandchild.seq, 4, "after the three seqs handed out before");
}

/// A claim writes a narrow `claims` row, not the operation's row; reads show the operation
/// running all the same, and its next change writes the row out.
#[tokio::test]
async fn a_claim_leaves_the_row_of_its_operation_as_it_was() {
    let factory = Sqlite::new();
    let clock = clock();
    let store = factory.fresh(clock.clone()).await;
    let (submitted, lease) = submitted_and_claimed(&*store).await;
    assert_eq!(
        stored(&factory),
        ("pending".into(), submitted.version, true)
    );
    let read = store.get(submitted.id).await.expect("get").expect("found");
    assert_eq!(read, lease.operation, "read as the claim handed it out");
    assert_eq!(read.status, Status::Running);
    let listed = |status| {
        let store = store.clone();
        async move {
            let query = ListQuery {
                status: Some(status),
                limit: 10,
                ..ListQuery::default()
            };
            store.list(&query).await.expect("list").operations
        }
    };
    assert_eq!(listed(Status::Running).await, vec![read.clone()]);
    assert_eq!(listed(Status::Pending).await, vec![]);
    assert!(
        store
            .claim(&claim_query(1))
            .await
            .expect("claim")
            .is_empty()
    );
    let any = ClaimFilter::default();
    assert_eq!(store.next_run_at(&any).await.expect("next_run_at"), None);

    clock.advance(Duration::seconds(1));
    store
        .heartbeat(
            submitted.id,
            lease.lease_id,
            Duration::minutes(5),
            Progress::default(),
        )
        .await
        .expect("heartbeat");
    let now = store.get(submitted.id).await.expect("get").expect("found");
    assert_eq!(now.version, lease.operation.version + 1);
    assert_eq!(now.execution_id, Some(lease.lease_id));
    assert_eq!(stored(&factory), ("running".into(), now.version, false));
}

/// A lease that runs out while only its claim holds the operation is expired like any other,
/// and the operation's row is written out.
#[tokio::test]
async fn an_expired_claim_is_written_out() {
    let factory = Sqlite::new();
    let clock = clock();
    let store = factory.fresh(clock.clone()).await;
    let (submitted, lease) = submitted_and_claimed(&*store).await;
    clock.advance(Duration::seconds(29));
    assert_eq!(store.expire_leases().await.expect("expire"), 0);
    clock.advance(Duration::seconds(1));
    assert_eq!(store.expire_leases().await.expect("expire"), 1);
    let now = store.get(submitted.id).await.expect("get").expect("found");
    assert_eq!(now.status, Status::Pending, "to be retried");
    assert_eq!(now.version, lease.operation.version + 1);
    assert_eq!(stored(&factory), ("pending".into(), now.version, false));
    clock.advance(now.run_at - clock.now());
    let again = store.claim(&claim_query(1)).await.expect("claim");
    assert_eq!(again.len(), 1, "claimed again once due");
}

/// A claim held for more than a second is written into its operation's row by the maintenance
/// pass, so that later claims no longer walk past it; the operation reads as before and its
/// lease still holds.
#[tokio::test]
async fn a_claim_held_for_long_is_written_out_by_maintenance() {
    let factory = Sqlite::new();
    let clock = clock();
    let store = factory.fresh(clock.clone()).await;
    let (submitted, lease) = submitted_and_claimed(&*store).await;
    assert_eq!(store.expire_leases().await.expect("maintenance"), 0);
    assert_eq!(
        stored(&factory),
        ("pending".into(), submitted.version, true),
        "a fresh claim stays a claims row"
    );
    clock.advance(Duration::seconds(2));
    assert_eq!(store.expire_leases().await.expect("maintenance"), 0);
    assert_eq!(
        stored(&factory),
        ("running".into(), lease.operation.version, false)
    );
    let read = store.get(submitted.id).await.expect("get").expect("found");
    assert_eq!(read, lease.operation, "read as the claim handed it out");
    assert!(
        store
            .claim(&claim_query(1))
            .await
            .expect("claim")
            .is_empty(),
        "not claimed again"
    );
    let done = store
        .complete(submitted.id, lease.lease_id, Completion::default())
        .await
        .expect("completed under its lease");
    assert_eq!(done.status, Status::Succeeded);
    assert_eq!(done.version, lease.operation.version + 1);
}

/// Two stores on one file, with the same clock.
async fn two_stores(dir: &Sqlite, clock: Arc<ManualClock>) -> (Arc<dyn Store>, Arc<dyn Store>) {
    let open = || async {
        Arc::new(
            SqliteStore::open(&dir.url(), clock.clone())
                .await
                .expect("open"),
        ) as Arc<dyn Store>
    };
    (open().await, open().await)
}

#[tokio::test]
async fn a_change_made_elsewhere_after_a_claim_is_not_lost() {
    let dir = Sqlite::new();
    let (first, second) = two_stores(&dir, clock()).await;
    shared::a_change_made_elsewhere_after_a_claim_is_not_lost(&*first, &*second).await;
}

#[tokio::test]
async fn a_lease_claimed_again_elsewhere_is_refused() {
    let dir = Sqlite::new();
    let clock = clock();
    let (first, second) = two_stores(&dir, clock.clone()).await;
    shared::a_lease_claimed_again_elsewhere_is_refused(&*first, &*second, &clock).await;
}
