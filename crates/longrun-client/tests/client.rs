//! Every client method against the real server (`longrun_server::serve` on 127.0.0.1, SQLite
//! in a temporary directory).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use longrun_client::{Client, ClientError, ListParams, ResultState};
use longrun_core::views::View;
use longrun_core::wire::{
    ClaimRequest, CompleteRequest, FailRequest, HeartbeatRequest, LeaseGrant, ReportedError,
    SubmitRequest,
};
use longrun_core::{Operation, Status};
use longrun_sqlite::SqliteStore;
use serde_json::json;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

struct Server {
    client: Client,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
    _dir: TempDir,
}

impl Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("longrun.db").display());
        let store = Arc::new(SqliteStore::open_default(&url).await.unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = Client::new(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let state = longrun_server::AppState {
            store,
            config: Arc::new(longrun_server::ServerConfig::default()),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(longrun_server::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Self {
            client,
            stop,
            task,
            _dir: dir,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }

    async fn submit(&self, name: &str) -> Operation {
        self.client.submit(&request(name), None).await.unwrap()
    }

    /// Claims the one ready operation named `name`.
    async fn claim(&self, name: &str) -> LeaseGrant {
        let claim = ClaimRequest {
            worker: "test-worker".into(),
            names: vec![name.into()],
            queues: vec![],
            max: 1,
            lease_secs: 30,
            wait_secs: 5,
        };
        let mut leases = self.client.claim(&claim).await.unwrap().leases;
        assert_eq!(leases.len(), 1);
        leases.pop().unwrap()
    }
}

fn request(name: &str) -> SubmitRequest {
    SubmitRequest {
        name: name.into(),
        kwargs: Some(json!({"pages": 3})),
        max_retries: Some(0),
        ..Default::default()
    }
}

fn problem_status(result: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Problem { status, problem }) => {
            assert_eq!(problem.status, Some(status), "the body repeats the status");
            (status, problem.problem_type)
        }
        other => panic!("expected a problem, got {other:?}"),
    }
}

#[tokio::test]
async fn submit_get_and_views() {
    let server = Server::start().await;
    let op = server.submit("reports.render").await;
    assert_eq!(
        (op.status, op.kwargs.clone()),
        (Status::Pending, json!({"pages": 3}))
    );

    let fetched = server.client.get(op.id).await.unwrap();
    assert_eq!((fetched.id, fetched.version), (op.id, op.version));
    let task = server
        .client
        .get_view(op.id, View::AsyncTask)
        .await
        .unwrap();
    assert_eq!(task["id"], json!(op.seq));
    assert_eq!(task["status"], "PENDING");
    let postman = server
        .client
        .get_view(op.id, View::TaskStatus)
        .await
        .unwrap();
    assert_eq!(postman["status"], "pending");

    let unknown = server.client.get(uuid::Uuid::now_v7()).await;
    assert_eq!(problem_status(unknown).0, 404);
    let invalid = server
        .client
        .submit(
            &SubmitRequest {
                name: String::new(),
                ..Default::default()
            },
            None,
        )
        .await;
    assert_eq!(problem_status(invalid).0, 422);
    server.stop().await;
}

#[tokio::test]
async fn idempotency_keys_return_the_same_operation_and_refuse_another_body() {
    let server = Server::start().await;
    let first = server
        .client
        .submit(&request("a"), Some("key-1"))
        .await
        .unwrap();
    let again = server
        .client
        .submit(&request("a"), Some("key-1"))
        .await
        .unwrap();
    assert_eq!(first.id, again.id);
    let other = server.client.submit(&request("b"), Some("key-1")).await;
    let (status, problem_type) = problem_status(other);
    assert_eq!(status, 422);
    assert!(
        problem_type.ends_with("idempotency-key-reused"),
        "{problem_type}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_batch_comes_back_in_order_and_once_under_its_key() {
    let server = Server::start().await;
    let requests: Vec<SubmitRequest> = (0..5).map(|i| request(&format!("batch{i}"))).collect();
    let first = server
        .client
        .submit_batch(&requests, Some("nightly"))
        .await
        .unwrap();
    let names: Vec<&str> = first.iter().map(|op| op.name.as_str()).collect();
    assert_eq!(names, ["batch0", "batch1", "batch2", "batch3", "batch4"]);
    let again = server
        .client
        .submit_batch(&requests, Some("nightly"))
        .await
        .unwrap();
    let ids = |ops: &[Operation]| ops.iter().map(|op| op.id).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&first));
    // Only the ids, the same ones under the same key.
    let only_ids = server
        .client
        .submit_batch_ids(&requests, Some("nightly"))
        .await
        .unwrap();
    assert_eq!(only_ids, ids(&first));
    let empty = server.client.submit_batch(&[], None).await;
    assert_eq!(problem_status(empty).0, 422);
    server.stop().await;
}

#[tokio::test]
async fn a_batch_answered_with_ids_names_each_new_operation_in_order() {
    let server = Server::start().await;
    let requests: Vec<SubmitRequest> = (0..4).map(|i| request(&format!("bulk{i}"))).collect();
    let ids = server
        .client
        .submit_batch_ids(&requests, None)
        .await
        .unwrap();
    assert_eq!(ids.len(), 4);
    for (i, id) in ids.iter().enumerate() {
        let op = server.client.get(*id).await.unwrap();
        assert_eq!(op.name, format!("bulk{i}"));
    }
    let empty = server.client.submit_batch_ids(&[], None).await;
    assert_eq!(problem_status(empty).0, 422);
    server.stop().await;
}

#[tokio::test]
async fn a_submit_answered_with_its_id_names_the_new_operation() {
    let server = Server::start().await;
    let id = server
        .client
        .submit_id(&request("minimal"), Some("minimal-1"))
        .await
        .unwrap();
    let op = server.client.get(id).await.unwrap();
    assert_eq!(
        (op.name.as_str(), op.kwargs["pages"].as_i64()),
        ("minimal", Some(3))
    );
    // The same key answers the same id; an invalid request is refused as by `submit`.
    let again = server
        .client
        .submit_id(&request("minimal"), Some("minimal-1"))
        .await;
    assert_eq!(again.unwrap(), id);
    let invalid = server.client.submit_id(&request("no spaces"), None).await;
    assert_eq!(problem_status(invalid).0, 422);
    server.stop().await;
}

#[tokio::test]
async fn wait_returns_none_when_nothing_changed_and_the_operation_when_it_did() {
    let server = Server::start().await;
    let op = server.submit("slow").await;

    let started = Instant::now();
    assert_eq!(
        server.client.wait(op.id, op.version, 1).await.unwrap(),
        None
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "it long-polled"
    );

    let canceller = server.client.clone();
    let id = op.id;
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        canceller.cancel(id).await.unwrap();
    });
    let changed = server
        .client
        .wait(op.id, op.version, 30)
        .await
        .unwrap()
        .expect("a change");
    assert_eq!(changed.status, Status::Cancelled);
    assert!(changed.version > op.version);
    // Waiting on an outdated version answers at once.
    let started = Instant::now();
    assert!(
        server
            .client
            .wait(op.id, op.version, 30)
            .await
            .unwrap()
            .is_some()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    server.stop().await;
}

#[tokio::test]
async fn list_filters_and_pages() {
    let server = Server::start().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(server.submit("listed").await.id);
    }
    server.submit("other").await;
    server.client.cancel(ids[0]).await.unwrap();

    let mut params = ListParams {
        name: Some("listed".into()),
        limit: Some(2),
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = server.client.list(&params).await.unwrap();
        assert!(page.operations.len() <= 2);
        seen.extend(page.operations.iter().map(|op| op.id));
        match page.next_cursor {
            Some(cursor) => params.cursor = Some(cursor),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, every page");

    let cancelled = ListParams {
        status: Some(Status::Cancelled),
        ..Default::default()
    };
    let page = server.client.list(&cancelled).await.unwrap();
    assert_eq!(
        page.operations.iter().map(|op| op.id).collect::<Vec<_>>(),
        [*ids.last().unwrap()]
    );
    let rendered = server
        .client
        .list_view(&cancelled, View::AsyncTask)
        .await
        .unwrap();
    assert_eq!(rendered.operations[0]["status"], "FAILED");
    server.stop().await;
}

#[tokio::test]
async fn cancel_delete_and_result_of_a_cancelled_operation() {
    let server = Server::start().await;
    let op = server.submit("doomed").await;
    assert_eq!(
        server.client.result(op.id).await.unwrap(),
        ResultState::NotReady {
            retry_after_secs: Some(1)
        }
    );
    assert_eq!(
        problem_status(server.client.delete(op.id).await).0,
        409,
        "not finished yet"
    );

    assert_eq!(
        server.client.cancel(op.id).await.unwrap().status,
        Status::Cancelled
    );
    assert_eq!(
        problem_status(server.client.cancel(op.id).await).0,
        409,
        "already finished"
    );
    match server.client.result(op.id).await.unwrap() {
        ResultState::Failed(problem) => {
            assert!(problem.problem_type.ends_with("operation-cancelled"))
        }
        other => panic!("expected the cancellation problem, got {other:?}"),
    }

    server.client.delete(op.id).await.unwrap();
    assert_eq!(problem_status(server.client.get(op.id).await).0, 404);
    assert_eq!(problem_status(server.client.result(op.id).await).0, 404);
    server.stop().await;
}

#[tokio::test]
async fn the_worker_protocol_from_claim_to_result() {
    let server = Server::start().await;
    let empty = ClaimRequest {
        worker: "w".into(),
        names: vec!["nothing".into()],
        queues: vec![],
        max: 1,
        lease_secs: 30,
        wait_secs: 0,
    };
    assert!(server.client.claim(&empty).await.unwrap().leases.is_empty());

    let op = server.submit("work").await;
    let lease = server.claim("work").await;
    assert_eq!(
        (lease.operation.id, lease.operation.status),
        (op.id, Status::Running)
    );

    let beat = HeartbeatRequest {
        lease_id: lease.lease_id,
        progress_pct: Some(40.0),
        status_detail: Some("page 2 of 5".into()),
        lease_secs: Some(60),
    };
    let response = server.client.heartbeat(op.id, &beat).await.unwrap();
    assert!(!response.cancel_requested);
    assert!(response.lease_expires_at > lease.lease_expires_at);
    let running = server.client.get(op.id).await.unwrap();
    assert_eq!(
        (running.progress_pct, running.status_detail.as_deref()),
        (Some(40.0), Some("page 2 of 5"))
    );

    let stale = HeartbeatRequest {
        lease_id: uuid::Uuid::now_v7(),
        ..beat.clone()
    };
    assert_eq!(
        problem_status(server.client.heartbeat(op.id, &stale).await).0,
        409
    );

    let done = CompleteRequest {
        lease_id: lease.lease_id,
        result: Some(json!({"pages": 5})),
        ..Default::default()
    };
    assert_eq!(
        server.client.complete(op.id, &done).await.unwrap().status,
        Status::Succeeded
    );
    assert_eq!(
        problem_status(server.client.complete(op.id, &done).await).0,
        409,
        "reported twice"
    );
    assert_eq!(
        server.client.result(op.id).await.unwrap(),
        ResultState::Ready(json!({"pages": 5}))
    );
    server.stop().await;
}

#[tokio::test]
async fn fail_and_release() {
    let server = Server::start().await;
    let op = server.submit("fragile").await;
    let lease = server.claim("fragile").await;
    let released = server.client.release(op.id, lease.lease_id).await.unwrap();
    assert_eq!((released.status, released.retries), (Status::Pending, 0));
    assert_eq!(
        problem_status(server.client.release(op.id, lease.lease_id).await).0,
        409
    );

    let lease = server.claim("fragile").await;
    let fail = FailRequest {
        lease_id: lease.lease_id,
        error: ReportedError {
            error_type: "ValueError".into(),
            message: "bad page".into(),
            code: Some("bad_page".into()),
        },
        retryable: false,
    };
    let failed = server.client.fail(op.id, &fail).await.unwrap();
    assert_eq!(failed.status, Status::Failed);
    match server.client.result(op.id).await.unwrap() {
        ResultState::Failed(problem) => {
            assert!(problem.problem_type.ends_with("operation-failed"));
            assert_eq!(problem.extensions["error"]["code"], "bad_page");
        }
        other => panic!("expected the failure problem, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn events_stream_every_change_and_end_after_the_terminal_one() {
    let server = Server::start().await;
    let op = server.submit("watched").await;
    let mut events = server.client.events(op.id, None).await.unwrap();
    let first = events.next().await.unwrap().unwrap();
    assert_eq!((first.id, first.status), (op.id, Status::Pending));

    let lease = server.claim("watched").await;
    let done = CompleteRequest {
        lease_id: lease.lease_id,
        result: Some(json!(1)),
        ..Default::default()
    };
    server.client.complete(op.id, &done).await.unwrap();

    let mut statuses = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("stream ends")
    {
        statuses.push(event.unwrap().status);
    }
    assert_eq!(statuses.last(), Some(&Status::Succeeded));

    // Resuming after the terminal event's version: nothing more to say.
    let finished = server.client.get(op.id).await.unwrap();
    let mut resumed = server
        .client
        .events(op.id, Some(finished.version))
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(10), resumed.next())
            .await
            .unwrap()
            .is_none()
    );
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_transient_transport_error() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Client::new(&format!("http://{addr}")).unwrap();
    let err = client.get(uuid::Uuid::now_v7()).await.unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
    assert!(err.is_transient());
}

#[test]
fn a_base_url_must_be_http() {
    for bad in ["localhost:8080", "ftp://example.com", "not a url"] {
        assert!(
            matches!(Client::new(bad), Err(ClientError::InvalidUrl { .. })),
            "{bad}"
        );
    }
    let client = Client::new("https://jobs.example.com/longrun").unwrap();
    assert_eq!(
        client.base_url().as_str(),
        "https://jobs.example.com/longrun/"
    );
}
