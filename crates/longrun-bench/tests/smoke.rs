//! Small runs of every workload and configuration through the real binary (real SQLite files,
//! real PostgreSQL, real HTTP on loopback): each prints one well-formed JSON line whose
//! figures are consistent with what was asked.

use std::process::Command;

use serde_json::Value;

/// The server and the admin database the PostgreSQL cases use (as the other crates' tests).
fn pg_server() -> (String, String) {
    let url = std::env::var("LONGRUN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
    let (server, db) = url.rsplit_once('/').expect("a database URL");
    (server.to_owned(), db.to_owned())
}

/// Runs `longrun-bench ARGS`; returns its stdout's JSON line (stdout must hold nothing else).
fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_longrun-bench"))
        .args(args)
        .output()
        .expect("running longrun-bench");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    assert!(
        out.status.success(),
        "longrun-bench {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().count(),
        1,
        "one line on stdout, got {stdout:?}"
    );
    serde_json::from_str(&stdout).expect("a JSON line")
}

/// The PostgreSQL flags of a run that uses its own database, dropped afterwards.
struct PgDb {
    flags: Vec<String>,
    name: String,
}

impl PgDb {
    fn new(test: &str) -> Self {
        let (server, admin) = pg_server();
        let name = format!("longrun_bench_test_{test}_{}", std::process::id());
        let flags = vec![
            "--pg-url".into(),
            server,
            "--pg-admin-db".into(),
            admin,
            "--pg-db".into(),
            name.clone(),
        ];
        Self { flags, name }
    }

    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        args.iter()
            .copied()
            .chain(self.flags.iter().map(String::as_str))
            .collect()
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (server, admin) = pg_server();
        let _ = Command::new("psql")
            .args(["-X", "-q", "-d", &format!("{server}/{admin}"), "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .status();
    }
}

fn f(line: &Value, key: &str) -> f64 {
    line[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is a number in {line}"))
}

fn assert_throughput(line: &Value, system: &str, n: u64) {
    assert_eq!(line["system"], system);
    assert_eq!(line["workload"], "throughput");
    assert_eq!(line["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(line["n"], n);
    let (enqueue, drain, wall) = (
        f(line, "enqueue_jobs_per_s"),
        f(line, "drain_jobs_per_s"),
        f(line, "wall_s"),
    );
    assert!(enqueue > 0.0 && drain > 0.0, "{line}");
    // wall = enqueue time + drain time (+ the start command).
    let parts = n as f64 / enqueue + n as f64 / drain;
    assert!((wall - parts).abs() < 0.05 + wall * 0.02, "{line}");
    for p in ["p50_ms", "p95_ms", "p99_ms"] {
        assert!(line[p].is_null(), "{line}");
    }
}

fn assert_latency(line: &Value, system: &str, m: u64, every_ms: f64) {
    assert_eq!(line["system"], system);
    assert_eq!(line["workload"], "latency");
    assert_eq!(line["n"], m);
    let (p50, p95, p99) = (f(line, "p50_ms"), f(line, "p95_ms"), f(line, "p99_ms"));
    assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{line}");
    // The producer keeps a fixed schedule: M jobs take at least (M - 1) · every.
    assert!(
        f(line, "wall_s") >= (m - 1) as f64 * every_ms / 1e3,
        "{line}"
    );
    assert!(line["enqueue_jobs_per_s"].is_null() && line["drain_jobs_per_s"].is_null());
}

#[test]
fn sqlite_in_process_throughput_and_latency() {
    let line = bench(&[
        "throughput",
        "--store",
        "sqlite",
        "--worker",
        "in-process",
        "--n",
        "300",
        "--batch",
        "100",
    ]);
    assert_throughput(&line, "longrun-sqlite", 300);
    assert_eq!(line["worker"], "in-process");
    assert!(line.get("analyzed_before_drain").is_none());

    // The diagnostic ANALYZE is left out of every figure: wall = enqueue + drain still holds.
    let line = bench(&[
        "throughput",
        "--store",
        "sqlite",
        "--worker",
        "in-process",
        "--n",
        "300",
        "--batch",
        "100",
        "--analyze",
    ]);
    assert_throughput(&line, "longrun-sqlite", 300);
    assert_eq!(line["analyzed_before_drain"], true);

    let line = bench(&[
        "latency",
        "--store",
        "sqlite",
        "--worker",
        "in-process",
        "--m",
        "100",
        "--every-ms",
        "3",
        "--idle-ms",
        "200",
    ]);
    assert_latency(&line, "longrun-sqlite", 100, 3.0);
}

#[test]
fn postgres_in_process_and_http_throughput_and_latency() {
    let db = PgDb::new("jobs");
    for (worker, system) in [
        ("in-process", "longrun-postgres"),
        ("http", "longrun-postgres-http"),
    ] {
        let line = bench(&db.args(&[
            "throughput",
            "--store",
            "postgres",
            "--worker",
            worker,
            "--n",
            "300",
            "--batch",
            "100",
        ]));
        assert_throughput(&line, system, 300);
        let line = bench(&db.args(&[
            "latency",
            "--store",
            "postgres",
            "--worker",
            worker,
            "--m",
            "100",
            "--every-ms",
            "3",
            "--idle-ms",
            "200",
        ]));
        assert_latency(&line, system, 100, 3.0);
    }
}

#[test]
fn submit_counts_every_accepted_operation() {
    let line = bench(&[
        "submit",
        "--store",
        "sqlite",
        "--n",
        "400",
        "--clients",
        "8",
    ]);
    assert_eq!(line["system"], "longrun-sqlite");
    assert_eq!(line["workload"], "submit");
    assert_eq!(line["n"], 400);
    assert_eq!(line["clients"], 8);
    let rate = f(&line, "enqueue_jobs_per_s");
    assert!(
        (rate - 400.0 / f(&line, "wall_s")).abs() <= rate * 0.01 + 0.1,
        "{line}"
    );
}

#[test]
fn status_serves_filled_stores_of_both_engines_open_and_with_a_key() {
    let db = PgDb::new("status");
    for (store, system, auth) in [
        ("sqlite", "longrun-sqlite", "open"),
        ("postgres", "longrun-postgres", "open"),
        ("sqlite", "longrun-sqlite", "key"),
        ("postgres", "longrun-postgres", "key"),
    ] {
        let mut args = vec![
            "status",
            "--store",
            store,
            "--stored",
            "2500",
            "--fill-batch",
            "400",
            "--clients",
            "4",
            "--duration-secs",
            "1",
            "--warmup-secs",
            "0.2",
        ];
        if auth == "key" {
            args.push("--api-key");
        }
        let line = bench(&db.args(&args));
        assert_eq!(line["system"], system);
        assert_eq!(line["workload"], "status");
        assert_eq!(line["auth"], auth);
        assert_eq!(line["n_stored"], 2500);
        let requests = line["n"].as_u64().expect("n");
        assert!(requests > 0, "{line}");
        assert_eq!(f(&line, "requests_per_s"), requests as f64);
        let (p50, p99) = (f(&line, "p50_ms"), f(&line, "p99_ms"));
        assert!(0.0 < p50 && p50 <= p99, "{line}");
    }
}

#[test]
fn bad_flags_fail_with_a_message_and_no_result_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_longrun-bench"))
        .args([
            "throughput",
            "--store",
            "sqlite",
            "--worker",
            "in-process",
            "--n",
            "0",
        ])
        .output()
        .expect("running longrun-bench");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--n and --batch must be positive"));
}
