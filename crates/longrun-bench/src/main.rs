//! `longrun-bench`: longrun on the job-queue yardstick of `../shared/bench/WORKLOADS.md`
//! (`throughput`, `latency`) and on two workloads of its own (`status`, `submit`), in the
//! configurations the peers are compared with:
//!
//! - `--store sqlite --worker in-process`: server and Rust handlers in one process;
//! - `--store postgres --worker in-process`: the same on PostgreSQL;
//! - `--store postgres --worker http`: server and worker in separate processes, the worker
//!   speaking the HTTP worker protocol.
//!
//! The driver (this process) starts the others by re-invoking this executable with hidden
//! subcommands (`node`, `http-worker`). Exactly one JSON line goes to stdout; logs go to
//! stderr.

mod child;
mod clock;
mod cluster;
mod fill;
mod handler;
mod http1;
mod jobs;
mod line;
mod node;
mod status;
mod store;
mod submit;

/// mimalloc: a server allocates and frees small buffers on every request from every thread;
/// glibc's allocator spent about a tenth of the CPU of a status read and contended on its
/// arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

pub use line::Line;

/// A log line on stderr, stamped with the process id.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        eprintln!("[longrun-bench {}] {}", std::process::id(), format!($($arg)*))
    };
}

#[derive(Debug, Parser)]
#[command(
    version,
    about = "longrun on the job-queue yardstick; one JSON line on stdout"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enqueue N no-op jobs with the worker paused, then time the drain at concurrency 32.
    Throughput(jobs::ThroughputArgs),
    /// One job every 5 ms to a running worker: enqueue→start p50/p95/p99.
    Latency(jobs::LatencyArgs),
    /// C concurrent clients submitting one operation per request: accepted operations/s.
    Submit(submit::SubmitArgs),
    /// N stored operations, C clients polling random ones: requests/s and p50/p99.
    Status(status::StatusArgs),
    /// (internal) A server, with or without an in-process worker.
    #[command(hide = true)]
    Node(node::NodeArgs),
    /// (internal) A worker in its own process, over HTTP.
    #[command(hide = true)]
    HttpWorker(node::HttpWorkerArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // On a worker thread of the runtime, as a user's tasks run: from `main`'s own thread, every
    // request would first wake a worker thread to write it (the connections' tasks run there),
    // a hop that timed the driver, not longrun.
    let result = tokio::spawn(run(Cli::parse().command))
        .await
        .unwrap_or_else(|panicked| Err(panicked.into()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log!("FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one subcommand.
async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Throughput(args) => jobs::throughput(args).await.map(|l| l.print()),
        Command::Latency(args) => jobs::latency(args).await.map(|l| l.print()),
        Command::Submit(args) => submit::submit(args).await.map(|l| l.print()),
        Command::Status(args) => status::status(args).await.map(|l| l.print()),
        Command::Node(args) => node::node(args).await,
        Command::HttpWorker(args) => node::http_worker(args).await,
    }
}
