//! Many nodes on one PostgreSQL database: servers and workers die, connections drop, and no
//! operation is lost or succeeds twice.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::support::*;

/// A handler that records `<operation id> <execution id>` for every run and returns its
/// execution id, so the accepted result shows which attempt it came from.
fn recording_handler(dir: &Path) -> String {
    let runs = dir.join("runs");
    let task = script(
        dir,
        "record.sh",
        &format!(
            "echo \"$LONGRUN_OPERATION_ID $LONGRUN_EXECUTION_ID\" >> {runs}\ncat > /dev/null\necho \"{{\\\"execution\\\": \\\"$LONGRUN_EXECUTION_ID\\\"}}\"",
            runs = runs.display()
        ),
    );
    format!("count={}", task.display())
}

/// Runs per operation id, from the handler's record.
fn runs(dir: &Path) -> HashMap<String, Vec<String>> {
    let mut runs: HashMap<String, Vec<String>> = HashMap::new();
    for line in std::fs::read_to_string(dir.join("runs"))
        .unwrap_or_default()
        .lines()
    {
        let (op, execution) = line.split_once(' ').unwrap();
        runs.entry(op.to_owned())
            .or_default()
            .push(execution.to_owned());
    }
    runs
}

/// Submits operations number `range` from 8 threads, spread over `servers`, each with an
/// `Idempotency-Key`; a submit that fails (its server died) is repeated on the next server, so
/// an operation the dead server had already accepted is not created twice. Returns their ids.
fn submit_many(servers: &[String], range: std::ops::Range<usize>) -> Vec<String> {
    let per_thread = range.len().div_ceil(8);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                scope.spawn(move || {
                    let client = http();
                    (range.start + t * per_thread
                        ..(range.start + (t + 1) * per_thread).min(range.end))
                        .map(|i| submit_with_failover(&client, servers, i))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

fn submit_with_failover(
    client: &reqwest::blocking::Client,
    servers: &[String],
    i: usize,
) -> String {
    let body = json!({"name": "count", "kwargs": {"i": i}, "maxRetries": 20, "backoffBaseSecs": 0.1, "backoffCapSecs": 1.0});
    for attempt in 0..20 {
        let server = &servers[(i + attempt) % servers.len()];
        let sent = client
            .post(format!("{server}/v1/operations"))
            .header("Idempotency-Key", format!("op-{i}"))
            .json(&body)
            .send();
        match sent {
            Ok(response) if response.status() == 202 => {
                return response.json::<Value>().unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
            }
            Ok(response) => panic!(
                "submit {i}: {} {}",
                response.status(),
                response.text().unwrap()
            ),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    panic!("submit {i} failed on every server");
}

/// Every operation succeeded once, from its current attempt, and every re-run is a retry.
fn assert_each_succeeded_once(server: &str, ids: &[String], dir: &Path) {
    let succeeded: HashMap<String, Value> = list_all(server, "succeeded")
        .into_iter()
        .map(|op| (op["id"].as_str().unwrap().to_owned(), op))
        .collect();
    let runs = runs(dir);
    for id in ids {
        let op = succeeded
            .get(id)
            .unwrap_or_else(|| panic!("{id} did not succeed: {}", get(server, id)));
        let execution = op["executionId"].as_str().unwrap();
        assert_eq!(
            op["result"]["execution"], execution,
            "{id}: the accepted result is not from the current attempt"
        );
        let attempts = &runs[id];
        assert!(
            attempts.iter().any(|e| e == execution),
            "{id}: the successful attempt never ran"
        );
        let retries = op["retries"].as_u64().unwrap() as usize;
        assert!(
            attempts.len() - 1 <= retries,
            "{id}: ran {} times but counts {retries} retries",
            attempts.len()
        );
    }
    assert_eq!(
        succeeded.len(),
        ids.len(),
        "operations that were never submitted succeeded"
    );
}

#[test]
fn two_servers_three_workers_lose_nothing_when_a_server_and_a_worker_are_killed() {
    let dir = tempfile::tempdir().unwrap();
    let db = PgDatabase::create();
    let mut a = start_server(&db.url, free_port(), &dir.path().join("a.log"), &[]);
    let b = start_server(&db.url, free_port(), &dir.path().join("b.log"), &[]);
    let handler = recording_handler(dir.path());
    let worker = |server: &str, n: usize| {
        start_worker(
            server,
            &handler,
            &["--lease-secs", "3", "--concurrency", "8"],
            &dir.path().join(format!("w{n}.log")),
        )
    };
    let _w1 = worker(&a.url, 1);
    let _w2 = worker(&b.url, 2);
    let mut w3 = worker(&b.url, 3);

    // Kill server A and worker 3 while operations are still being submitted and run.
    let started = Instant::now();
    let servers = [a.url.clone(), b.url.clone()];
    let submitting = std::thread::spawn(move || submit_many(&servers, 0..5000));
    wait_until(Duration::from_secs(120), || {
        lines(&dir.path().join("runs")) >= 1500
    });
    a.proc.kill();
    w3.kill();
    eprintln!("killed server A and worker 3 after {:?}", started.elapsed());
    let ids = submitting.join().unwrap();
    eprintln!("submitted 5000 in {:?}", started.elapsed());

    // Worker 1 has lost its server; worker 2 on server B finishes everything, including what the
    // killed ones held (their leases expire and count as retries).
    wait_until(Duration::from_secs(240), || {
        list_all(&b.url, "succeeded").len() == 5000
    });
    eprintln!("all succeeded after {:?}", started.elapsed());
    assert_each_succeeded_once(&b.url, &ids, dir.path());
    assert!(list_all(&b.url, "failed").is_empty());
}

#[test]
fn a_submit_on_one_server_wakes_a_claim_and_a_long_poll_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let db = PgDatabase::create();
    let a = start_server(&db.url, free_port(), &dir.path().join("a.log"), &[]);
    let b = start_server(&db.url, free_port(), &dir.path().join("b.log"), &[]);

    // A worker long-polls server A for up to 20 s.
    let claim = {
        let url = a.url.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let leases: Value = http()
                .post(format!("{url}/v1/workers/claim"))
                .json(&json!({"worker": "w", "names": ["wake"], "waitSecs": 20}))
                .send()
                .unwrap()
                .json()
                .unwrap();
            (leases, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let op = submit(&b.url, json!({"name": "wake"}));
    let (leases, waited) = claim.join().unwrap();
    assert_eq!(leases["leases"][0]["operation"]["id"], op["id"]);
    eprintln!("claim on A woken by a submit on B after {waited:?} (0.5 s of it before the submit)");
    assert!(
        waited < Duration::from_secs(5),
        "woken by polling, not by the notification: {waited:?}"
    );

    // A client long-polls the operation on server B while the worker completes it on server A.
    let id = op["id"].as_str().unwrap().to_owned();
    let version = get(&b.url, &id)["version"].as_i64().unwrap();
    let poll = {
        let (url, id) = (b.url.clone(), id.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let op: Value = http()
                .get(format!("{url}/v1/operations/{id}"))
                .header("Prefer", "wait=20")
                .header("If-None-Match", format!("\"{version}\""))
                .send()
                .unwrap()
                .json()
                .unwrap();
            (op, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let lease = leases["leases"][0]["leaseId"].as_str().unwrap();
    let done = http()
        .post(format!("{}/v1/operations/{id}/complete", a.url))
        .json(&json!({"leaseId": lease, "result": 1}))
        .send()
        .unwrap();
    assert_eq!(done.status(), 200);
    let (seen, waited) = poll.join().unwrap();
    assert_eq!(seen["status"], "succeeded");
    eprintln!(
        "long-poll on B saw the completion on A after {waited:?} (0.5 s of it before the change)"
    );
    assert!(
        waited < Duration::from_secs(5),
        "long-poll missed the notification: {waited:?}"
    );
}

#[test]
fn servers_and_workers_recover_when_database_connections_are_killed() {
    let dir = tempfile::tempdir().unwrap();
    let db = PgDatabase::create();
    let server = start_server(&db.url, free_port(), &dir.path().join("server.log"), &[]);
    let handler = recording_handler(dir.path());
    let _worker = start_worker(
        &server.url,
        &handler,
        &["--lease-secs", "3"],
        &dir.path().join("worker.log"),
    );

    let ids = submit_many(std::slice::from_ref(&server.url), 0..1000);
    wait_until(Duration::from_secs(60), || {
        lines(&dir.path().join("runs")) >= 200
    });
    let killed = db.terminate_connections();
    assert!(killed > 0, "the server held connections");
    eprintln!("terminated {killed} connections");
    wait_until(Duration::from_secs(60), || {
        lines(&dir.path().join("runs")) >= 600
    });
    db.terminate_connections();

    // Submits keep working after the connections come back.
    let later = submit_many(std::slice::from_ref(&server.url), 1000..1100);
    wait_until(Duration::from_secs(120), || {
        list_all(&server.url, "succeeded").len() == 1100
    });
    let all: Vec<String> = ids.into_iter().chain(later).collect();
    assert_each_succeeded_once(&server.url, &all, dir.path());
    assert_eq!(
        http()
            .get(format!("{}/readyz", server.url))
            .send()
            .unwrap()
            .status(),
        200
    );
}
