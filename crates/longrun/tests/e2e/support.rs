//! Starting the real binary, talking to it over HTTP, and throwaway databases.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_longrun");

/// A process killed (SIGKILL) when dropped, so a failed test leaves nothing running.
pub struct Proc(Child);

impl Proc {
    /// Spawns `command` with stdout discarded and stderr to `log`.
    pub fn spawn(command: &mut Command, log: &Path) -> Self {
        Self(
            command
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .unwrap(),
        )
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `longrun serve`.
pub struct Server {
    /// The process.
    pub proc: Proc,
    /// Its base URL.
    pub url: String,
}

/// Starts `longrun serve` on `database` and waits until it is ready; its log goes to `log`.
pub fn start_server(database: &str, port: u16, log: &Path, extra: &[&str]) -> Server {
    let child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            database,
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let server = Server {
        proc: Proc(child),
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_until(Duration::from_secs(30), || {
        reqwest::blocking::get(format!("{}/readyz", server.url)).is_ok_and(|r| r.status() == 200)
    });
    server
}

/// Starts `longrun worker` against `server` with one `NAME=COMMAND` handler.
pub fn start_worker(server: &str, handler: &str, extra: &[&str], log: &Path) -> Proc {
    Proc::spawn(
        Command::new(BIN)
            .args(["worker", "--server", server, "--handler", handler])
            .args(extra),
        log,
    )
}

/// Polls `done` every 50 ms; fails the test after `limit`.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "condition not reached within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An HTTP client with a timeout above the longest long-poll.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(70))
        .build()
        .unwrap()
}

/// Submits and expects `202`.
pub fn submit(server: &str, body: Value) -> Value {
    let response = http()
        .post(format!("{server}/v1/operations"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json().unwrap()
}

/// Gets an operation and expects `200`.
pub fn get(server: &str, id: &str) -> Value {
    let response = http()
        .get(format!("{server}/v1/operations/{id}"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "GET {id}");
    response.json().unwrap()
}

/// Every operation with `status`, following the cursor.
pub fn list_all(server: &str, status: &str) -> Vec<Value> {
    let mut all = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{server}/v1/operations?limit=1000&status={status}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = http().get(url).send().unwrap().json().unwrap();
        all.extend(page["operations"].as_array().unwrap().iter().cloned());
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return all,
        }
    }
}

/// Writes an executable `#!/bin/sh` script.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// How many lines a file has (0 when it does not exist).
pub fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Runs a CLI command against `server`; its exit code and stdout.
pub fn cli(server: &str, args: &[&str]) -> (i32, String) {
    let output = Command::new(BIN)
        .args(args)
        .env("LONGRUN_SERVER", server)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// A PostgreSQL database of its own, created on the machine's server
/// (`LONGRUN_TEST_DATABASE_URL`, default `postgres://root@127.0.0.1:5432/test`) and dropped
/// (with its connections) when this is dropped.
pub struct PgDatabase {
    admin: String,
    name: String,
    /// The URL of the new database.
    pub url: String,
}

impl PgDatabase {
    /// Creates it.
    pub fn create() -> Self {
        let admin = std::env::var("LONGRUN_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
        let name = format!("longrun_e2e_{}", uuid::Uuid::new_v4().simple());
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        let db = Self {
            url: format!("{base}/{name}"),
            admin,
            name,
        };
        db.psql(&format!("CREATE DATABASE {}", db.name));
        db
    }

    /// Runs SQL as the admin connection; its output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                self.admin.as_str(),
                "-Atq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Ends every connection to this database; returns how many.
    pub fn terminate_connections(&self) -> usize {
        self.psql(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{}'",
            self.name
        ))
        .trim()
        .parse()
        .unwrap()
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                self.admin.as_str(),
                "-q",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}
