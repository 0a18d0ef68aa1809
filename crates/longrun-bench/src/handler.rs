//! The benchmark's one task, `bench`, and its two handlers.

use clap::{Args, ValueEnum};
use longrun_worker::{Registry, TaskError, WorkerOptions};
use serde_json::json;

use crate::clock::now_ms;

/// The task name every benchmark operation has.
pub const TASK: &str = "bench";

/// What the handler does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HandlerKind {
    /// Nothing (throughput).
    Noop,
    /// Reads `CLOCK_MONOTONIC` first thing and returns it as the result `{"start": ms}`
    /// (latency).
    Clock,
}

impl HandlerKind {
    /// The registry with this handler for [`TASK`].
    pub fn registry(self) -> Registry {
        match self {
            Self::Noop => {
                Registry::new().handler(TASK, |_ctx, _input| async { Ok::<(), TaskError>(()) })
            }
            Self::Clock => Registry::new().handler(TASK, |_ctx, _input| async {
                let start = now_ms();
                Ok::<_, TaskError>(json!({ "start": start }))
            }),
        }
    }
}

/// How the benchmark's worker runs; everything not here is longrun's default.
#[derive(Debug, Clone, Copy, Args)]
pub struct WorkerArgs {
    /// Handlers executing at once in the worker process.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Operations claimed ahead beyond the concurrency (`WorkerOptions::prefetch`; 0: a claim
    /// asks for at most the free slots, nothing is fetched beyond the concurrency).
    #[arg(long, default_value_t = 0)]
    pub prefetch: usize,
}

impl WorkerArgs {
    /// The worker's options.
    pub fn options(&self) -> WorkerOptions {
        WorkerOptions {
            name: format!("bench-worker-{}", std::process::id()),
            concurrency: self.concurrency,
            prefetch: self.prefetch,
            ..WorkerOptions::default()
        }
    }

    /// The same settings as command-line flags, for a child process.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--concurrency".into(),
            self.concurrency.to_string(),
            "--prefetch".into(),
            self.prefetch.to_string(),
        ]
    }
}
