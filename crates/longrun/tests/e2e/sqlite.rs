//! The default deployment: one server on an SQLite file, workers over HTTP, the CLI.

use serde_json::{Value, json};
use std::time::Duration;

use std::path::Path;

use crate::support::*;

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("ops.db").display())
}

#[test]
fn a_worker_killed_mid_task_is_retried_and_the_operation_completes_once() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let completions = dir.path().join("completions");
    // Each run records its start; the first run hangs long enough to be killed.
    let task = script(
        dir.path(),
        "task.sh",
        &format!(
            "echo start >> {starts}\n\
             if [ \"$(wc -l < {starts})\" -eq 1 ]; then echo 'progress: 10 first try' >&2; sleep 20; fi\n\
             echo done >> {completions}\n\
             echo '{{\"rendered\": true}}'",
            starts = starts.display(),
            completions = completions.display()
        ),
    );
    let server = start_server(
        &sqlite_url(dir.path()),
        free_port(),
        &dir.path().join("server.log"),
        &[],
    );
    let handler = format!("render={}", task.display());
    let mut first = start_worker(
        &server.url,
        &handler,
        &["--lease-secs", "2"],
        &dir.path().join("w1.log"),
    );

    let op = submit(
        &server.url,
        json!({"name": "render", "maxRetries": 3, "backoffBaseSecs": 0.2}),
    );
    let id = op["id"].as_str().unwrap().to_owned();
    wait_until(Duration::from_secs(20), || {
        get(&server.url, &id)["progressPct"] == json!(10.0)
    });
    assert_eq!(get(&server.url, &id)["status"], "running");

    first.kill(); // SIGKILL: no release, no failure report; only the lease can tell.
    let _second = start_worker(
        &server.url,
        &handler,
        &["--lease-secs", "2"],
        &dir.path().join("w2.log"),
    );

    wait_until(Duration::from_secs(30), || {
        get(&server.url, &id)["status"] == "succeeded"
    });
    let done = get(&server.url, &id);
    assert_eq!(
        done["retries"], 1,
        "the lost attempt counts as one retry: {done}"
    );
    assert_eq!(done["result"], json!({"rendered": true}));
    assert_eq!(lines(&starts), 2, "the handler ran twice");
    // The first run's script outlives its SIGKILLed worker but only sleeps after its start line;
    // the completion count shows the operation finished exactly once.
    assert_eq!(lines(&completions), 1, "the handler completed once");
}

#[test]
fn every_accepted_operation_survives_a_server_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let port = free_port();
    let mut server = start_server(&db, port, &dir.path().join("first.log"), &[]);
    let accepted: Vec<Value> = (0..200)
        .map(|i| {
            submit(
                &server.url,
                json!({"name": "survive", "kwargs": {"i": i}, "content": {"n": i}}),
            )
        })
        .collect();
    server.proc.kill();

    let server = start_server(&db, port, &dir.path().join("second.log"), &[]);
    for op in &accepted {
        let stored = get(&server.url, op["id"].as_str().unwrap());
        assert_eq!(stored["kwargs"], op["kwargs"]);
        assert_eq!(stored["content"], op["content"]);
        assert_eq!(stored["seq"], op["seq"]);
        assert_eq!(stored["status"], "pending");
    }
    let page: Value = http()
        .get(format!("{}/v1/operations?limit=1000", server.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(page["operations"].as_array().unwrap().len(), 200);
}

#[test]
fn cli_submits_waits_and_reports_exit_status_with_in_process_handlers() {
    let dir = tempfile::tempdir().unwrap();
    let ok = script(
        dir.path(),
        "ok.sh",
        "echo 'progress: 50 halfway' >&2\ncat > /dev/null\necho '{\"ok\": 1}'",
    );
    let fatal = script(dir.path(), "fatal.sh", "echo 'bad input' >&2\nexit 100");
    let server = start_server(
        &sqlite_url(dir.path()),
        free_port(),
        &dir.path().join("server.log"),
        &[
            "--handler",
            &format!("ok={}", ok.display()),
            "--handler",
            &format!("fatal={}", fatal.display()),
        ],
    );

    let (code, out) = cli(
        &server.url,
        &[
            "submit",
            "ok",
            "--kwargs",
            r#"{"x": 1}"#,
            "--wait",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let op: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(op["status"], "succeeded");
    assert_eq!(op["result"], json!({"ok": 1}));
    assert_eq!(op["kwargs"], json!({"x": 1}));

    let id = op["id"].as_str().unwrap();
    let (code, out) = cli(&server.url, &["get", id, "--view", "async-task"]);
    assert_eq!(code, 0);
    let task: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(task["status"], "COMPLETED");
    assert_eq!(task["task_kwargs"], json!({"x": 1}));

    let (code, out) = cli(
        &server.url,
        &["submit", "fatal", "--max-retries", "5", "--wait", "--json"],
    );
    assert_eq!(code, 1, "a failed operation exits 1: {out}");
    let failed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["retries"], 0, "exit 100 is not retried");

    let (code, out) = cli(&server.url, &["list", "--status", "failed"]);
    assert_eq!(code, 0);
    assert!(out.contains(failed["id"].as_str().unwrap()), "{out}");

    let (code, _) = cli(
        &server.url,
        &["get", "00000000-0000-0000-0000-000000000000"],
    );
    assert_eq!(code, 1, "an unknown id is an error");
}

/// Makes a key with `longrun keys create --database DB ...` (the flag after the subcommand;
/// `revoke` below has it before).
fn create_key(db: &str, customer: &str, role: &str) -> String {
    let out = std::process::Command::new(BIN)
        .args([
            "keys",
            "create",
            "--database",
            db,
            "--customer",
            customer,
            "--customer-name",
            "c",
        ])
        .args(["--user", "7", "--user-name", "ada", "--role", role])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn cli_as(server: &str, key: &str, args: &[&str]) -> (i32, String) {
    let output = std::process::Command::new(BIN)
        .args(args)
        .env("LONGRUN_SERVER", server)
        .env("LONGRUN_API_KEY", key)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn with_keys_the_cli_and_a_worker_authenticate_and_tenants_stay_apart() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let acme = create_key(&db, "10", "submitter");
    let globex = create_key(&db, "20", "submitter");
    let worker_key = create_key(&db, "1", "worker");
    // Keys are read on every request, so a revocation is seen at once.
    let server = start_server(
        &db,
        free_port(),
        &dir.path().join("server.log"),
        &["--key-cache-secs", "0"],
    );
    let task = script(
        dir.path(),
        "ok.sh",
        "cat > /dev/null\necho '{\"ok\": true}'",
    );
    let _worker = Proc::spawn(
        std::process::Command::new(BIN)
            .args([
                "worker",
                "--server",
                &server.url,
                "--handler",
                &format!("ok={}", task.display()),
            ])
            .env("LONGRUN_API_KEY", &worker_key),
        &dir.path().join("worker.log"),
    );

    let (code, out) = cli_as(&server.url, &acme, &["submit", "ok", "--wait", "--json"]);
    assert_eq!(code, 0, "{out}");
    let op: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            op["status"].as_str(),
            op["customer"].as_i64(),
            op["createdByName"].as_str()
        ),
        (Some("succeeded"), Some(10), Some("ada"))
    );
    let id = op["id"].as_str().unwrap();

    let (code, _) = cli(&server.url, &["get", id]);
    assert_eq!(code, 1, "no key: 401");
    let (code, _) = cli_as(&server.url, &globex, &["get", id]);
    assert_eq!(code, 1, "another tenant: 404");
    let (code, out) = cli_as(&server.url, &globex, &["list", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["operations"],
        json!([])
    );

    let revoke = std::process::Command::new(BIN)
        .args(["keys", "--database", &db, "revoke", &acme])
        .output()
        .unwrap();
    assert!(revoke.status.success());
    let (code, _) = cli_as(&server.url, &acme, &["get", id]);
    assert_eq!(code, 1, "a revoked key stops working at once");
}
