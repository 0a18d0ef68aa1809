//! [`CommandHandler`]: runs a shell command per operation, so handlers can be written in any
//! language.
//!
//! The protocol, seen from the command:
//! - it runs as `sh -c COMMAND` in its own process group, with the canonical operation JSON
//!   on stdin and `LONGRUN_OPERATION_ID`, `LONGRUN_OPERATION_NAME`, `LONGRUN_EXECUTION_ID`
//!   and `LONGRUN_RETRIES` in its environment;
//! - stdout is the result: JSON as is, empty for no result, and any other text as a JSON
//!   string (so `echo done` works);
//! - a stderr line `progress: 40 rendering page 3` reports 40 % with the text
//!   "rendering page 3"; other stderr lines are logged, and the last few are the error
//!   message when the command fails;
//! - exit status 0 succeeds, [`FATAL_EXIT_CODE`] (100) fails without retry, any other status
//!   or a signal fails retryably;
//! - on cancellation the process group gets SIGTERM, then SIGKILL after a grace period.
//!   Processes it leaves behind are killed when it ends.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinError;
use tokio::time::timeout;
use tokio_util::task::AbortOnDropHandle;
use tracing::info;

use crate::{Handler, TaskContext, TaskError, TaskInput, TaskOutput};

/// The exit status with which a command says "failed, do not retry".
pub const FATAL_EXIT_CODE: i32 = 100;

/// How many trailing stderr lines make the error message.
const STDERR_TAIL: usize = 5;

/// How long stdout and stderr may stay open after the command exits (held by a background
/// process it started) before the rest of its process group is killed.
const PIPE_DRAIN: Duration = Duration::from_secs(2);

/// A [`Handler`] that runs a shell command (see the module docs for the protocol).
#[derive(Debug, Clone)]
pub struct CommandHandler {
    command: String,
    kill_grace: Duration,
}

impl CommandHandler {
    /// Runs `command` with `sh -c`.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            kill_grace: Duration::from_secs(3),
        }
    }

    /// How long a cancelled command has between SIGTERM and SIGKILL (default 3 s).
    pub fn with_kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    fn spawn(&self, ctx: &TaskContext) -> Result<Child, TaskError> {
        Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .env("LONGRUN_OPERATION_ID", ctx.id().to_string())
            .env("LONGRUN_OPERATION_NAME", ctx.name())
            .env("LONGRUN_EXECUTION_ID", ctx.execution_id().to_string())
            .env("LONGRUN_RETRIES", ctx.retries().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                TaskError::retryable(
                    "SpawnError",
                    format!("could not start `sh -c {}`: {e}", self.command),
                )
            })
    }
}

#[async_trait]
impl Handler for CommandHandler {
    async fn run(&self, ctx: TaskContext, _input: TaskInput) -> Result<TaskOutput, TaskError> {
        let mut child = self.spawn(&ctx)?;
        let group = ProcessGroup(
            child
                .id()
                .and_then(|pid| i32::try_from(pid).ok())
                .map(Pid::from_raw),
        );
        let input = serde_json::to_vec(ctx.operation())?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        // Helper tasks, aborted on drop: none may outlive the command's pipes. The command need
        // not read its input: a closed stdin is not an error.
        let feeding = AbortOnDropHandle::new(tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        }));
        let reading_out = AbortOnDropHandle::new(tokio::spawn(async move {
            let mut out = Vec::new();
            stdout.read_to_end(&mut out).await.map(|_| out)
        }));
        let reading_err = AbortOnDropHandle::new(tokio::spawn(read_stderr(stderr, ctx.clone())));
        let mut readers = std::pin::pin!(async move { (reading_out.await, reading_err.await) });

        let (status, cancelled) = tokio::select! {
            status = child.wait() => (status?, false),
            () = ctx.cancelled() => (self.terminate(&mut child, &group).await?, true),
        };
        drop(feeding);
        // Background processes may hold the pipes open: give them a moment, then kill them.
        let (out, tail) = match timeout(PIPE_DRAIN, &mut readers).await {
            Ok(read) => read,
            Err(_) => {
                group.signal(Signal::SIGKILL);
                timeout(PIPE_DRAIN, &mut readers).await.map_err(|_| {
                    TaskError::retryable(
                        "CommandFailed",
                        "a process outside the command's process group kept its output open",
                    )
                })?
            }
        };
        let (out, tail) = (joined(out)?, joined(tail)?);

        if cancelled {
            return Err(TaskError::cancelled());
        }
        outcome(status, &out, tail)
    }
}

impl CommandHandler {
    /// SIGTERM to the group, SIGKILL after the grace; returns how the command ended.
    async fn terminate(
        &self,
        child: &mut Child,
        group: &ProcessGroup,
    ) -> std::io::Result<ExitStatus> {
        info!("cancelled; terminating the command");
        group.signal(Signal::SIGTERM);
        match timeout(self.kill_grace, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                group.signal(Signal::SIGKILL);
                child.wait().await
            }
        }
    }
}

/// The command's process group; whatever is left of it is killed on drop.
struct ProcessGroup(Option<Pid>);

impl ProcessGroup {
    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.0 {
            // ESRCH (nothing left to signal) is fine.
            let _ = killpg(pid, signal);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// A reader task's output (its panic is a bug, reported as a retryable error).
fn joined<T>(read: Result<std::io::Result<T>, JoinError>) -> Result<T, TaskError> {
    match read {
        Ok(read) => Ok(read?),
        Err(e) => Err(TaskError::retryable(
            "IoError",
            format!("reading the command's output: {e}"),
        )),
    }
}

/// Reads stderr: progress lines become progress, the others are logged; returns the last few.
async fn read_stderr(
    stderr: tokio::process::ChildStderr,
    ctx: TaskContext,
) -> std::io::Result<VecDeque<String>> {
    let mut lines = BufReader::new(stderr).lines();
    let mut tail = VecDeque::with_capacity(STDERR_TAIL);
    while let Some(line) = lines.next_line().await? {
        if let Some((pct, detail)) = parse_progress(&line) {
            ctx.progress(pct, detail);
            continue;
        }
        info!(target: "longrun_worker::command", "{line}");
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    Ok(tail)
}

/// `progress: 40 rendering page 3` → `(40.0, "rendering page 3")` (a `%` after the number is
/// allowed).
fn parse_progress(line: &str) -> Option<(f64, &str)> {
    let rest = line.strip_prefix("progress:")?.trim_start();
    let (number, detail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let pct = number
        .strip_suffix('%')
        .unwrap_or(number)
        .parse::<f64>()
        .ok()?;
    pct.is_finite().then_some((pct, detail.trim()))
}

/// Success, or the error an exit status means.
fn outcome(
    status: ExitStatus,
    stdout: &[u8],
    tail: VecDeque<String>,
) -> Result<TaskOutput, TaskError> {
    let tail = Vec::from(tail).join("\n");
    let message = |what: String| if tail.is_empty() { what } else { tail.clone() };
    match status.code() {
        Some(0) => Ok(parse_result(stdout).into()),
        Some(FATAL_EXIT_CODE) => Err(TaskError::fatal(
            "CommandFailed",
            message(format!("command exited with status {FATAL_EXIT_CODE}")),
        )
        .with_code(format!("exit_{FATAL_EXIT_CODE}"))),
        Some(code) => Err(TaskError::retryable(
            "CommandFailed",
            message(format!("command exited with status {code}")),
        )
        .with_code(format!("exit_{code}"))),
        None => {
            let signal = status.signal().unwrap_or_default();
            Err(TaskError::retryable(
                "CommandKilled",
                message(format!("command killed by signal {signal}")),
            )
            .with_code("signal"))
        }
    }
}

/// Stdout as the result: JSON, nothing (`null`), or else the text as a JSON string.
fn parse_result(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(trimmed)
        .unwrap_or_else(|_| Value::String(text.trim_end_matches(['\r', '\n']).to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines() {
        assert_eq!(
            parse_progress("progress: 40 rendering page 3"),
            Some((40.0, "rendering page 3"))
        );
        assert_eq!(parse_progress("progress:12.5%"), Some((12.5, "")));
        assert_eq!(parse_progress("progress: lots"), None);
        assert_eq!(parse_progress("warning: progress: 40"), None);
    }

    #[test]
    fn stdout_as_result() {
        assert_eq!(parse_result(b" \n"), Value::Null);
        assert_eq!(parse_result(b"{\"a\": 1}\n"), serde_json::json!({"a": 1}));
        assert_eq!(parse_result(b"done\n"), Value::String("done".into()));
    }
}
